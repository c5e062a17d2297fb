// A pipeline's live log over the WebSocket, resuming after a dropped connection with
// ?after=<last seq seen> so the reader gets every line once, in order.
//
// A browser cannot set headers on a WebSocket: the stored token goes as the subprotocols
// ["bearer", <token>] (the server answers "bearer" alone). A token with characters a
// subprotocol may not hold goes as ?token= instead, which the server keeps out of its logs.

import { askForReadToken, getToken } from "./api.js";

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const NOT_FOUND = 4404;
const UNAUTHORIZED = 4401;
const BEARER = "bearer";
// RFC 7230 token characters: what a subprotocol name may be made of.
const SUBPROTOCOL_SAFE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export class LogStream {
  /**
   * @param {number|string} pipelineId
   * @param {{onEvents: Function, onFinal: Function, onState: Function, onNotFound: Function, onDenied: Function}} handlers
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

  url(token) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const base = `${scheme}://${location.host}/ws/pipelines/${encodeURIComponent(this.pipelineId)}/logs`;
    const query = new URLSearchParams();
    if (this.lastSeq > 0) query.set("after", String(this.lastSeq));
    if (token && !SUBPROTOCOL_SAFE.test(token)) query.set("token", token);
    const text = query.toString();
    return text ? `${base}?${text}` : base;
  }

  start() {
    if (this.stopped || this.finished) return;
    this.handlers.onState(this.attempt ? "reconnecting" : "connecting");
    const token = getToken();
    const protocols = token && SUBPROTOCOL_SAFE.test(token) ? [BEARER, token] : [];
    const socket = new WebSocket(this.url(token), protocols);
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
    if (event.code === UNAUTHORIZED) {
      const reason = event.reason || "The log needs the backend's read token";
      askForReadToken(reason).then((saved) => {
        if (saved) this.start();
        else {
          this.stopped = true;
          this.handlers.onDenied(reason);
        }
      });
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
