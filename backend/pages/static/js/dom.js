// DOM helpers that only ever create text nodes from data: no innerHTML anywhere, so text
// coming from the API (log lines, commit messages, error details) can never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Create an HTML element: h("a", {href, class}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element (attributes set verbatim). */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function show(el, visible = true) {
  el.hidden = !visible;
}

/** A short, polite status message at the bottom of the screen. */
export function toast(message, kind = "info") {
  const box = $("#toasts");
  const item = h("div", { class: `toast toast-${kind}`, text: message });
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * Ask for confirmation in a modal <dialog>; resolves true only on the confirm button. Both
 * buttons say what they do ("Cancel pipeline" / "Keep it running"), never a bare "Cancel" that
 * could mean either.
 */
export function confirmDialog({ title, message, confirmLabel = "Confirm", cancelLabel = "Change nothing", danger = false }) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-message").textContent = message;
  $("#confirm-cancel").textContent = cancelLabel;
  const ok = $("#confirm-ok");
  ok.textContent = confirmLabel;
  ok.classList.toggle("btn-danger", danger);
  ok.classList.toggle("btn-primary", !danger);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

/** confirmDialog with an optional reason field: resolves to the reason ("" when none was
 * given), or null when cancelled. Enter in the field confirms: a form's implicit submission would
 * press its first button, which is the cancel one. */
export async function confirmWithReason(options) {
  const field = $("#confirm-reason-field");
  const input = $("#confirm-reason");
  input.value = "";
  input.onkeydown = (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    $("#confirm-ok").click();
  };
  field.hidden = false;
  try {
    return (await confirmDialog(options)) ? input.value.trim() : null;
  } finally {
    field.hidden = true;
  }
}

/** Copy text; falls back to selecting the input where the Clipboard API is unavailable (plain http). */
export async function copyFrom(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

/** Wire every [data-copy=inputId] button under `root`. */
export function wireCopyButtons(root = document) {
  for (const button of root.querySelectorAll("[data-copy]")) {
    if (button.dataset.wired) continue;
    button.dataset.wired = "1";
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      const ok = await copyFrom(input);
      const label = button.textContent;
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(() => (button.textContent = label), 1500);
    });
  }
}

/** Run `fn` now and every `ms` while the tab is visible; returns a function that runs it at once. */
export function poll(fn, ms) {
  let timer = 0;
  let running = false;
  const run = async () => {
    clearTimeout(timer);
    if (!running) {
      running = true;
      try {
        await fn();
      } catch (err) {
        console.error(err);
      } finally {
        running = false;
      }
    }
    timer = setTimeout(tick, ms);
  };
  const tick = () => {
    if (document.hidden) timer = setTimeout(tick, ms);
    else run();
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) run();
  });
  run();
  return run;
}
