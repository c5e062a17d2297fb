// Overview: health, recent pipelines (live) and repositories.

import { api } from "./api.js";
import { itemsOf } from "./common.js";
import { metricCell, pipelineLink, repoLabel, repoLabels, statusBadge } from "./components.js";
import { $, confirmDialog, h, poll, show, toast, wireCopyButtons } from "./dom.js";
import { FINISHED, absoluteTime, duration, elapsed, shortSha, since } from "./format.js";
import { loadModels, modelsKey, versionCell } from "./run_versions.js";

const PAGE_SIZE = 15;
let page = 1;
let reposById = new Map();
// Each repo's label, unique among them (`owner/name`, widened where two would read the same).
let labels = new Map();
let lastPipelinesKey = "";
let lastItemsKey = "";
let lastReposKey = "";

// ---- health -------------------------------------------------------------------------------

const COMPONENT_LABELS = {
  database: "Database",
  db: "Database",
  redis: "Redis",
  mlflow: "MLflow",
  worker: "Worker",
  workers: "Workers",
  model_server: "Model servers",
  model_servers: "Model servers",
  sandbox: "Kernel sandbox",
};

/** {name: ok|{ok, detail}|"error text"} from whatever shape /ready answers in. */
function healthChecks(body) {
  const source =
    (body && (body.checks || body.components || (body.detail && (body.detail.checks || body.detail)))) || body;
  if (!source || typeof source !== "object") return [];
  return Object.entries(source)
    .filter(([name]) => !["status", "ok", "ready", "message", "down"].includes(name))
    .map(([name, value]) => {
      let ok;
      let detail = "";
      if (typeof value === "boolean") ok = value;
      else if (typeof value === "string") {
        ok = ["ok", "up", "ready", "healthy"].includes(value.toLowerCase());
        detail = ok ? "" : value;
      } else if (value && typeof value === "object") {
        ok = value.ok ?? ["ok", "up", "ready", "healthy"].includes(String(value.status).toLowerCase());
        detail = value.detail || value.error || value.message || "";
        if (!detail && value.count !== undefined) detail = `${value.count} up`;
        if (!detail && Array.isArray(value.workers)) detail = `${value.workers.length} up`;
      } else ok = false;
      return { name, ok: Boolean(ok), detail: String(detail || "") };
    });
}

async function refreshHealth() {
  const list = $("#health-list");
  let body;
  try {
    body = await api("/ready", { allowStatus: [503] });
  } catch (err) {
    list.replaceChildren(h("li", { class: "health-item down" }, h("span", { class: "dot" }), `Backend unreachable: ${err.message}`));
    return;
  }
  const checks = healthChecks(body);
  // /ready counts the workers on the pipelines queue beside its "worker" check.
  const workers = body && body.workers;
  const worker = checks.find((check) => check.name === "worker");
  if (worker && worker.ok && workers && typeof workers.count === "number") {
    worker.detail = `${workers.count} on ${workers.queue || "pipelines"}`;
  }
  list.replaceChildren(
    ...checks.map((check) =>
      h(
        "li",
        { class: `health-item ${check.ok ? "up" : "down"}` },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "health-name", text: COMPONENT_LABELS[check.name] || check.name }),
        h("span", { class: "visually-hidden", text: check.ok ? " up" : " down" }),
        check.detail ? h("span", { class: "health-detail muted small", text: check.detail }) : null,
      ),
    ),
  );
  if (!checks.length) list.replaceChildren(h("li", { class: "muted", text: "No health details reported." }));
  $("#health-updated").textContent = `checked ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
}

// ---- pipelines ----------------------------------------------------------------------------

function pipelineRow(p) {
  const repo = reposById.get(p.repo_id);
  const repoUrl = repo ? repo.github_url : p.repo_url;
  const seconds = p.started_at ? elapsed(p.started_at, FINISHED.has(p.status) ? p.finished_at : null) : null;
  return h(
    "tr",
    { dataset: { pipelineId: p.id, status: p.status } },
    h("td", {}, pipelineLink(p.id)),
    h("td", {}, statusBadge(p.status)),
    h("td", { class: "mono ellipsis hide-xs", title: repoUrl || "" }, labels.get(repoUrl) || repoLabel(repoUrl)),
    h("td", { class: "mono hide-sm", title: p.commit_sha || "" }, shortSha(p.commit_sha)),
    h("td", { class: "hide-sm", text: p.trigger || "–" }),
    h("td", { class: "num", text: seconds === null ? "–" : duration(seconds) }),
    h("td", { class: "num" }, metricCell(p)),
    h("td", { class: "version-cell" }, versionCell(p)),
    h("td", { class: "hide-sm", title: absoluteTime(p.created_at), text: since(p.created_at) }),
  );
}

async function refreshPipelines() {
  const body = await api(`/pipelines?page=${page}&size=${PAGE_SIZE}`);
  const items = itemsOf(body);
  const total = body && typeof body.total === "number" ? body.total : items.length;
  // Rebuild only when something changed (or something is running, whose duration ticks),
  // and give focus back to the link the reader was on.
  // A run that changed may have produced or served a version: read the models again then.
  const itemsKey = JSON.stringify(items);
  await loadModels(itemsKey !== lastItemsKey);
  lastItemsKey = itemsKey;
  const key = itemsKey + modelsKey();
  const ticking = items.some((p) => !FINISHED.has(p.status));
  if (key !== lastPipelinesKey || ticking) {
    lastPipelinesKey = key;
    const focusedId = document.activeElement?.closest?.("tr")?.dataset.pipelineId;
    const body = $("#pipelines-body");
    body.replaceChildren(...items.map(pipelineRow));
    if (focusedId) body.querySelector(`tr[data-pipeline-id="${CSS.escape(focusedId)}"] a`)?.focus();
  }
  show($("#pipelines-empty"), items.length === 0 && page === 1);
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  show($("#pipelines-pager"), pages > 1);
  $("#pipelines-page").textContent = `Page ${page} of ${pages}`;
  $("#pipelines-prev").disabled = page <= 1;
  $("#pipelines-next").disabled = page >= pages;
  return items;
}

// ---- repos --------------------------------------------------------------------------------

async function lastPipelineOf(repo) {
  if (repo.last_pipeline) return repo.last_pipeline;
  const body = await api(`/pipelines?repo_id=${encodeURIComponent(repo.id)}&page=1&size=1`);
  return itemsOf(body)[0] || null;
}

function notebooksOf(repo) {
  // Backends from before notebooks were listed give only the one notebook_path.
  if (repo.notebooks && repo.notebooks.length) return repo.notebooks;
  return [{ notebook_path: repo.notebook_path, schedule: repo.schedule, next_run_at: repo.next_run_at }];
}

function notebookItem(notebook) {
  const schedule = notebook.schedule
    ? h(
        "span",
        { class: "notebook-schedule", title: notebook.next_run_at ? `next run ${absoluteTime(notebook.next_run_at)}` : "" },
        " · schedule ",
        h("span", { class: "mono", text: notebook.schedule }),
        " UTC",
        notebook.next_run_at ? `, next ${absoluteTime(notebook.next_run_at)}` : "",
      )
    : null;
  return h("li", { class: "repo-notebook" }, h("span", { class: "mono", text: notebook.notebook_path }), schedule);
}

function repoItem(repo, last) {
  const inputId = `webhook-${repo.id}`;
  return h(
    "li",
    { class: "repo", dataset: { repoId: repo.id } },
    h(
      "div",
      { class: "repo-main" },
      h("h3", { class: "repo-name mono", title: repo.github_url }, h("a", { href: `/ui/repos/${encodeURIComponent(repo.id)}`, text: labels.get(repo.github_url) })),
      h("p", { class: "muted small" }, h("span", { class: "mono", text: repo.branch })),
      h("ul", { class: "repo-notebooks muted small" }, ...notebooksOf(repo).map(notebookItem)),
      h(
        "div",
        { class: "copy-row" },
        h("label", { class: "visually-hidden", for: inputId, text: `Webhook URL for ${repoLabel(repo.github_url)}` }),
        h("input", { id: inputId, class: "mono", type: "text", readonly: true, value: repo.webhook_url || "" }),
        h("button", { type: "button", class: "btn btn-small", dataset: { copy: inputId }, text: "Copy" }),
      ),
    ),
    h(
      "div",
      { class: "repo-side" },
      last
        ? h("p", { class: "repo-last" }, "Last: ", pipelineLink(last.id), " ", statusBadge(last.status), " ", h("span", { class: "muted small", title: absoluteTime(last.created_at), text: since(last.created_at) }))
        : h("p", { class: "muted small", text: "No pipeline yet" }),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn btn-small", text: "Run now", onclick: () => trigger(repo) }),
        h("button", { type: "button", class: "btn btn-small btn-ghost-danger", text: "Remove", "aria-label": `Remove ${repo.github_url}`, onclick: () => removeRepo(repo) }),
      ),
    ),
  );
}

async function refreshRepos() {
  const repos = itemsOf(await api("/repos"));
  reposById = new Map(repos.map((repo) => [repo.id, repo]));
  labels = repoLabels(repos.map((repo) => repo.github_url));
  const lasts = await Promise.all(repos.map((repo) => lastPipelineOf(repo).catch(() => null)));
  const key = JSON.stringify([repos, lasts]);
  if (key === lastReposKey) return;
  lastReposKey = key;
  const focused = document.activeElement;
  const focusKey = focused && $("#repos-list").contains(focused) ? [focused.closest("li")?.dataset.repoId, focused.textContent, focused.id] : null;
  $("#repos-list").replaceChildren(...repos.map((repo, i) => repoItem(repo, lasts[i])));
  if (focusKey) {
    // Give the keyboard user their place back after the list was rebuilt.
    const item = $(`#repos-list li[data-repo-id="${CSS.escape(focusKey[0] || "")}"]`);
    const again = item && [...item.querySelectorAll("button, input, a")].find((el) => (focusKey[2] && el.id === focusKey[2]) || (!focusKey[2] && el.textContent === focusKey[1]));
    again?.focus();
  }
  wireCopyButtons($("#repos-list"));
  show($("#repos-empty"), repos.length === 0);
}

async function trigger(repo) {
  try {
    const result = await api(`/repos/${encodeURIComponent(repo.id)}/trigger`, { method: "POST" });
    location.assign(`/ui/pipelines/${encodeURIComponent(result.pipeline_id)}`);
  } catch (err) {
    toast(`Could not start a run: ${err.message}`, "error");
  }
}

async function removeRepo(repo) {
  const ok = await confirmDialog({
    title: "Remove repository?",
    message: `Pushes to ${repo.github_url} will no longer run. Past pipelines and models are kept.`,
    confirmLabel: "Remove repository",
    cancelLabel: "Keep it",
    danger: true,
  });
  if (!ok) return;
  try {
    await api(`/repos/${encodeURIComponent(repo.id)}`, { method: "DELETE" });
    toast("Repository removed.");
    await guarded("#repos-error", "repositories", refreshRepos);
  } catch (err) {
    toast(`Could not remove it: ${err.message}`, "error");
  }
}

// ---- wiring -------------------------------------------------------------------------------

$("#pipelines-prev").addEventListener("click", () => {
  page = Math.max(1, page - 1);
  refreshNow();
});
$("#pipelines-next").addEventListener("click", () => {
  page += 1;
  refreshNow();
});

/** Run one section's refresh; a failure shows beside that section instead of stopping the rest. */
async function guarded(noteId, what, fn) {
  const note = $(noteId);
  try {
    const result = await fn();
    show(note, false);
    return result;
  } catch (err) {
    note.textContent = `Could not load ${what}: ${err.message}`;
    show(note, true);
    return null;
  }
}

let knownState = null;
const refreshNow = poll(async () => {
  if (knownState === null) await guarded("#repos-error", "repositories", refreshRepos);
  const items = (await guarded("#pipelines-error", "pipelines", refreshPipelines)) || [];
  // A new or finished pipeline changes a repo's "last pipeline": refresh the repos then.
  const state = items.map((p) => `${p.id}:${p.status}`).join(",");
  if (knownState !== null && state !== knownState) await guarded("#repos-error", "repositories", refreshRepos);
  knownState = state;
}, 3000);
poll(refreshHealth, 10000);
