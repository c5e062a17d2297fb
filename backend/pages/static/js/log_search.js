// Search in the pipeline log: every match highlighted, one at a time brought into view with
// next/previous (Enter, Shift+Enter), lines arriving while a search is open searched as well.
// Matches are <mark> elements around text nodes: the log's text never becomes markup.

import { h } from "./dom.js";

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export class LogSearch {
  /**
   * @param {HTMLElement} container the log panel (`.log`), holding `.log-line > .log-text`
   * @param {{input: HTMLInputElement, count: HTMLElement, prev: HTMLButtonElement, next: HTMLButtonElement}} controls
   */
  constructor(container, { input, count, prev, next }) {
    this.container = container;
    this.count = count;
    this.pattern = null;
    this.matches = [];
    this.current = -1;
    input.addEventListener("input", () => this.search(input.value));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.step(event.shiftKey ? -1 : 1);
      } else if (event.key === "Escape" && input.value) {
        event.preventDefault();
        input.value = "";
        this.search("");
      }
    });
    prev.addEventListener("click", () => this.step(-1));
    next.addEventListener("click", () => this.step(1));
    new MutationObserver((records) => this.added(records)).observe(container, { childList: true });
    this.updateCount();
  }

  /** Highlight every match of `query` (case-insensitive) and bring the first into view. */
  search(query) {
    for (const text of this.container.querySelectorAll(".log-text mark")) {
      const span = text.parentElement;
      span.textContent = span.textContent; // back to one text node
    }
    this.pattern = query.trim() ? new RegExp(escapeRegExp(query), "gi") : null;
    this.matches = [];
    if (this.pattern) {
      for (const span of this.container.querySelectorAll(".log-text")) this.mark(span);
    }
    this.current = this.matches.length ? 0 : -1;
    this.reveal();
  }

  mark(span) {
    const text = span.textContent;
    const found = [...text.matchAll(this.pattern)];
    if (!found.length) return;
    const parts = [];
    let at = 0;
    for (const match of found) {
      if (match.index > at) parts.push(text.slice(at, match.index));
      const mark = h("mark", { class: "log-match", text: match[0] });
      parts.push(mark);
      this.matches.push(mark);
      at = match.index + match[0].length;
    }
    if (at < text.length) parts.push(text.slice(at));
    span.replaceChildren(...parts);
  }

  /** New lines are searched as they arrive; the current match stays where it is. */
  added(records) {
    if (!this.pattern) return;
    const before = this.matches.length;
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        const span = node.querySelector?.(".log-text");
        if (span) this.mark(span);
      }
    }
    if (this.matches.length === before) return;
    if (this.current < 0) {
      this.current = 0;
      this.reveal();
    } else this.updateCount();
  }

  step(direction) {
    if (!this.matches.length) return;
    this.current = (this.current + direction + this.matches.length) % this.matches.length;
    this.reveal();
  }

  reveal() {
    for (const mark of this.container.querySelectorAll("mark.current")) mark.classList.remove("current");
    const mark = this.matches[this.current];
    if (mark) {
      mark.classList.add("current");
      const line = mark.closest(".log-line");
      // Centre the line in the log panel only (the page itself does not move).
      this.container.scrollTop = line.offsetTop - this.container.clientHeight / 2;
    }
    this.updateCount();
  }

  updateCount() {
    if (!this.pattern) this.count.textContent = "";
    else if (!this.matches.length) this.count.textContent = "no match";
    else this.count.textContent = `${this.current + 1} of ${this.matches.length}`;
  }
}
