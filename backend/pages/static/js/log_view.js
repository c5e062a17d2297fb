// The log panel: appends lines in animation-frame batches and follows the tail unless the
// reader has scrolled up, in which case it waits and offers a button to catch up. Each phase
// starts under a heading the reader can jump to; cells are numbered from 1, as the pipeline's
// messages ("cell 3 raised ...") number them (events carry the 0-based index).

import { h } from "./dom.js";
import { clockTime } from "./format.js";

// Terminal colour codes that kernels put in tracebacks; shown as plain text.
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;
const SLACK_PX = 24;

export class LogView {
  constructor(container, followButton) {
    this.container = container;
    this.followButton = followButton;
    this.following = true;
    this.pending = [];
    this.unseen = 0;
    this.frame = 0;
    this.lastPhase = undefined;
    this.onPhase = () => {};
    container.addEventListener("scroll", () => this.onScroll(), { passive: true });
    followButton.addEventListener("click", () => {
      this.following = true;
      this.scrollToEnd();
      this.updateButton();
      container.focus();
    });
  }

  atBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight <= SLACK_PX;
  }

  onScroll() {
    this.following = this.atBottom();
    if (this.following) this.unseen = 0;
    this.updateButton();
  }

  updateButton() {
    this.followButton.hidden = this.following;
    this.followButton.textContent = this.unseen ? `Follow new lines ↓ (${this.unseen} new)` : "Follow new lines ↓";
  }

  append(events) {
    this.pending.push(...events);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Append a note that is not part of the pipeline's log (connection state and the like). */
  note(text) {
    this.append([{ note: true, text }]);
  }

  flush() {
    this.frame = 0;
    const batch = this.pending.splice(0);
    const fragment = document.createDocumentFragment();
    for (const event of batch) {
      if (!event.note && event.phase && event.phase !== this.lastPhase) {
        this.lastPhase = event.phase;
        const selector = `.log-phase[data-phase="${CSS.escape(event.phase)}"]`;
        const first = !this.container.querySelector(selector) && !fragment.querySelector(selector);
        fragment.append(h("div", { class: "log-phase", dataset: { phase: event.phase }, tabindex: "-1", text: event.phase }));
        if (first) this.onPhase(event.phase);
      }
      fragment.append(this.line(event));
    }
    this.container.append(fragment);
    if (this.following) this.scrollToEnd();
    else {
      this.unseen += batch.length;
      this.updateButton();
    }
  }

  line(event) {
    if (event.note) return h("div", { class: "log-line log-note", text: event.text });
    const text = event.text.replace(ANSI, "").replace(/\n$/, "");
    return h(
      "div",
      { class: "log-line", dataset: { stream: event.stream || "system", seq: event.seq } },
      h("span", { class: "log-time", "aria-hidden": "true", text: clockTime(event.ts) }),
      event.cell !== null && event.cell !== undefined ? h("span", { class: "log-cell", title: `cell ${event.cell + 1}`, text: `[${event.cell + 1}]` }) : null,
      h("span", { class: "log-text", text }),
    );
  }

  /** Scroll the log to the first line of `phase` (its heading) and stop following the tail. */
  jumpTo(phase) {
    const heading = this.container.querySelector(`.log-phase[data-phase="${CSS.escape(phase)}"]`);
    if (!heading) return false;
    this.following = false;
    this.container.scrollTop = heading.offsetTop - 4; // .log is the headings' offsetParent
    this.updateButton();
    heading.focus({ preventScroll: true });
    return true;
  }

  scrollToEnd() {
    this.container.scrollTop = this.container.scrollHeight;
    this.unseen = 0;
  }
}
