// The one way pages talk to the backend: JSON in and out, Bearer token when one is stored,
// and a prompt for the token when the API answers 401 (reads too, when API_READ_TOKEN is set).
// One token is stored: the admin token opens everything, a read token the pages' data.

import { $ } from "./dom.js";

const TOKEN_KEY = "notebook-mlops.apiToken";
const KEPT_LOCALLY = "It is kept in this browser only and sent as a Bearer token.";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** The stored token, or "" (the log WebSocket sends it as a subprotocol). */
export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
  updateTokenButton();
}

function updateTokenButton() {
  const button = $("#token-button");
  if (!button) return;
  const stored = Boolean(getToken());
  button.textContent = stored ? "API token ✓" : "API token";
  button.setAttribute("aria-label", stored ? "API token (saved)" : "API token (not set)");
  if (stored || document.body.dataset.authRequired === "true") button.hidden = false;
}

let pendingPrompt = null;
// Set when the reader dismisses the prompt: reads that poll in the background then stop asking
// (a click on the token button, or an action, still asks) until a token is saved.
let declined = false;

/** Open the token dialog; resolves true when a token was saved, false when dismissed. */
function askForToken(reason) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  if (reason) $("#token-dialog-reason").textContent = reason;
  input.value = getToken();
  pendingPrompt = new Promise((resolve) => {
    const form = $("#token-form");
    const finish = (saved) => {
      form.removeEventListener("submit", onSubmit);
      $("#token-cancel").removeEventListener("click", onCancel);
      $("#token-clear").removeEventListener("click", onClear);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      pendingPrompt = null;
      declined = !saved;
      resolve(saved);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        input.focus();
        return;
      }
      setToken(value);
      finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    const onClear = () => {
      setToken("");
      input.value = "";
      finish(false);
    };
    form.addEventListener("submit", onSubmit);
    $("#token-cancel").addEventListener("click", onCancel);
    $("#token-clear").addEventListener("click", onClear);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
  return pendingPrompt;
}

/**
 * Ask for a token after a read was refused (`reason` is the server's answer); resolves false at
 * once when the reader has already declined.
 */
export function askForReadToken(reason) {
  if (declined) return Promise.resolve(false);
  return askForToken(`${reason}. ${KEPT_LOCALLY}`);
}

/** A readable message from an error body: FastAPI's `detail` (string or list), or the text. */
function messageFrom(body, status) {
  const detail = body && typeof body === "object" ? (body.detail ?? body.message ?? body.error) : body;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => (item && item.msg) || JSON.stringify(item)).join("; ");
  }
  if (detail && typeof detail === "object") return detail.message || JSON.stringify(detail);
  return `Request failed (HTTP ${status})`;
}

async function readBody(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Call the API. `body` is sent as JSON. Resolves to the parsed body; rejects with ApiError
 * carrying the status and body. A 401 asks for the token and retries.
 */
export async function api(path, { method = "GET", body, signal, allowStatus = [] } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const data = await readBody(response);
    if (response.status === 401 && attempt < 3) {
      // The answer names the token needed ("missing read token: send ...").
      const reason = messageFrom(data, response.status);
      const saved = method === "GET" ? await askForReadToken(reason) : await askForToken(`${reason}. ${KEPT_LOCALLY}`);
      if (saved) continue;
    }
    if (!response.ok && !allowStatus.includes(response.status)) {
      throw new ApiError(response.status, messageFrom(data, response.status), data);
    }
    return data;
  }
}

/** Wire the header's token button (every page). */
export function initTokenButton() {
  const button = $("#token-button");
  if (!button) return;
  updateTokenButton();
  button.addEventListener("click", () => askForToken());
}

/**
 * Save the file at `path` as `filename`. Fetched rather than linked: a plain link cannot send the
 * Bearer token a read-protected backend asks for. Rejects with ApiError like `api`.
 */
export async function download(path, filename) {
  for (let attempt = 0; ; attempt++) {
    const token = getToken();
    const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (!response.ok) {
      const data = await readBody(response);
      if (response.status === 401 && attempt < 3 && (await askForReadToken(messageFrom(data, 401)))) continue;
      throw new ApiError(response.status, messageFrom(data, response.status), data);
    }
    const url = URL.createObjectURL(await response.blob());
    const link = Object.assign(document.createElement("a"), { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return;
  }
}
