// A pipeline's live log over the WebSocket, resuming after a dropped connection with
// ?after=<last seq seen> so the reader gets every line once, in order.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const NOT_FOUND = 4404;

export class LogStream {
  /**
   * @param {number|string} pipelineId
   * @param {{onEvents: Function, onFinal: Function, onState: Function, onNotFound: Function}} handlers
   */
  constructor(pipelineId, handlers) {
    this.pipelineId = pipelineId;
    this.handlers = handlers;
    this.lastSeq = 0;
    this.finished = false;
    this.stopped = false;
    this.attempt = 0;
    this.socket = null;
    this.retryTimer = 0;
    window.addEventListener("online", () => this.reconnectNow());
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const base = `${scheme}://${location.host}/ws/pipelines/${encodeURIComponent(this.pipelineId)}/logs`;
    return this.lastSeq > 0 ? `${base}?after=${this.lastSeq}` : base;
  }

  start() {
    if (this.stopped || this.finished) return;
    this.handlers.onState(this.attempt ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.handlers.onState("live");
    });
    socket.addEventListener("message", (message) => this.receive(message.data));
    socket.addEventListener("close", (event) => this.closed(event));
  }

  receive(data) {
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    const events = Array.isArray(parsed) ? parsed : [parsed];
    const fresh = [];
    for (const event of events) {
      if (!event || typeof event !== "object") continue;
      if (event.stream === "status") {
        this.finished = true;
        if (fresh.length) this.handlers.onEvents(fresh.splice(0));
        this.handlers.onFinal(event);
        continue;
      }
      if (typeof event.seq !== "number" || typeof event.text !== "string") continue;
      if (event.seq <= this.lastSeq) continue; // already shown before a reconnect
      this.lastSeq = event.seq;
      fresh.push(event);
    }
    if (fresh.length) this.handlers.onEvents(fresh);
  }

  closed(event) {
    this.socket = null;
    if (this.stopped) return;
    if (event.code === NOT_FOUND) {
      this.stopped = true;
      this.handlers.onNotFound(event.reason || "Unknown pipeline");
      return;
    }
    if (this.finished) {
      this.handlers.onState("finished");
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.handlers.onState("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  reconnectNow() {
    if (this.socket || this.stopped || this.finished) return;
    clearTimeout(this.retryTimer);
    this.start();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000);
  }
}
