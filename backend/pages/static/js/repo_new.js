// Add repository: errors beside their field (from the API's 422/409 body), then the webhook
// URL and secret, shown once.

import { api, ApiError } from "./api.js";
import "./common.js";
import { $, show, toast } from "./dom.js";

const FIELDS = ["github_url", "branch", "notebook_path", "github_token", "webhook_secret"];
const form = $("#repo-form");
const submit = $("#repo-submit");
let created = null;

function clearErrors() {
  for (const name of FIELDS) {
    const input = document.getElementById(name);
    const error = document.getElementById(`${name}-error`);
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    show(error, false);
  }
  show($("#form-error"), false);
}

function fieldError(name, message) {
  const input = document.getElementById(name);
  const error = document.getElementById(`${name}-error`);
  input.setAttribute("aria-invalid", "true");
  error.textContent = message;
  show(error, true);
  if (input.closest("details")) input.closest("details").open = true;
}

/** Which field an error is about: FastAPI's loc, else a field named in the message. */
function fieldOf(item, text) {
  const loc = Array.isArray(item?.loc) ? item.loc : [];
  const fromLoc = loc.find((part) => FIELDS.includes(part));
  if (fromLoc) return fromLoc;
  if (item?.field && FIELDS.includes(item.field)) return item.field;
  return FIELDS.find((name) => text.includes(name)) || null;
}

function cleanMessage(message) {
  return String(message).replace(/^Value error, /, "");
}

/** A field's name as the form shows it ("Notebook path"), not as the API spells it. */
function labelOf(name) {
  const label = document.querySelector(`label[for="${name}"]`);
  const own = label ? [...label.childNodes].filter((node) => node.nodeType === Node.TEXT_NODE) : [];
  return own.map((node) => node.textContent).join("").trim() || name;
}

/**
 * The API's message with fields named by their labels ("notebook_path: ..." → "Notebook path:
 * ..."): a name that starts the message, and identifiers (`github_url`) wherever they are; a
 * plain word like "branch" inside a sentence stays a word.
 */
function withLabels(message) {
  return FIELDS.reduce((text, name) => {
    const where = name.includes("_") ? new RegExp(`\\b${name}\\b`, "g") : new RegExp(`^${name}\\b`);
    return text.replace(where, labelOf(name));
  }, message);
}

function showApiErrors(err) {
  const detail = err.body && typeof err.body === "object" ? err.body.detail : null;
  const items = Array.isArray(detail) ? detail : [detail ?? err.message];
  const general = [];
  for (const item of items) {
    const text = cleanMessage(typeof item === "string" ? item : item?.msg || item?.message || JSON.stringify(item));
    let field = fieldOf(typeof item === "object" ? item : null, text);
    if (!field && err.status === 409) field = "github_url";
    if (field) {
      // Beside its field, an error still names it the way the form does.
      const shown = withLabels(text);
      fieldError(field, shown.startsWith(labelOf(field)) ? shown : `${labelOf(field)}: ${shown}`);
    }
    else general.push(withLabels(text));
  }
  if (general.length) {
    $("#form-error").textContent = general.join(" ");
    show($("#form-error"), true);
  }
  const firstInvalid = form.querySelector("[aria-invalid=true]");
  (firstInvalid || $("#form-error")).focus?.();
}

function payload() {
  const data = new FormData(form);
  const body = {};
  for (const name of FIELDS) {
    const value = String(data.get(name) ?? "").trim();
    if (value) body[name] = value;
  }
  return body;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const body = payload();
  if (!body.github_url) {
    fieldError("github_url", "Enter the repository's URL.");
    $("#github_url").focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = "Adding…";
  try {
    created = await api("/repos", { method: "POST", body });
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) showApiErrors(err);
    else {
      $("#form-error").textContent = err.status === 401 ? "An API token is needed to add a repository." : `Could not reach the backend: ${err.message}`;
      show($("#form-error"), true);
    }
    return;
  } finally {
    submit.disabled = false;
    submit.textContent = "Add repository";
  }
  form.reset();
  $("#created-repo").textContent = created.github_url;
  $("#created-webhook-url").value = created.webhook_url || "";
  // The shared GITHUB_WEBHOOK_SECRET is never sent back (webhook_secret is null): say it applies.
  const shared = created.webhook_secret == null;
  $("#created-secret").value = created.webhook_secret || "";
  show($("#created-secret-row"), !shared);
  show($("#created-secret-once"), !shared);
  show($("#created-secret-shared"), shared);
  show($("#repo-form-card"), false);
  show($("#repo-created"), true);
  $("#repo-created").focus();
});

$("#repo-trigger").addEventListener("click", async () => {
  if (!created) return;
  try {
    const result = await api(`/repos/${encodeURIComponent(created.id)}/trigger`, { method: "POST" });
    location.assign(`/ui/pipelines/${encodeURIComponent(result.pipeline_id)}`);
  } catch (err) {
    toast(`Could not start a run: ${err.message}`, "error");
  }
});
