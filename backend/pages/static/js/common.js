// Set-up every page shares.

import { initTokenButton } from "./api.js";
import { wireCopyButtons } from "./dom.js";

/** Items from a list endpoint that answers either a bare list or a page {items, ...}. */
export function itemsOf(body) {
  if (Array.isArray(body)) return body;
  if (body && typeof body === "object") {
    for (const key of ["items", "models", "repos", "events", "lines", "logs"]) {
      if (Array.isArray(body[key])) return body[key];
    }
  }
  return [];
}

initTokenButton();
wireCopyButtons();
