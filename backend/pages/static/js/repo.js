// A repository's page: its notebooks, its runs, whether its webhook reaches the platform (the
// latest deliveries, accepted or ignored and why) and what its latest run told GitHub.
// Notebooks and details show every field the repos API returns, so fields added to it later
// (schedules, say) appear without a change here.

import { api } from "./api.js";
import { itemsOf } from "./common.js";
import { pipelineLink, statusBadge } from "./components.js";
import { $, h, poll, show, toast, wireCopyButtons } from "./dom.js";
import { absoluteTime, since } from "./format.js";
import { loadRepos, pipelineRow } from "./pipeline_table.js";

const repoId = $("#repo-root").dataset.repoId;
const RUNS_SHOWN = 15;
// Fields with a place of their own on the page; every other field goes to "Details".
const SHOWN_ELSEWHERE = new Set(["id", "github_url", "webhook_url", "webhook_id", "has_token", "notebooks", "last_pipeline"]);
// The single-notebook form repeats the first notebook's fields: shown with the notebooks.
const FIRST_NOTEBOOK_FIELDS = new Set(["notebook_path", "watch_paths", "schedule", "next_run_at"]);
let repo = null;
let lastRepoKey = "";

function humanize(name) {
  const text = name.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Any API value as text: times readable, lists joined, nothing as "–". */
function valueView(name, value) {
  if (value === null || value === undefined || value === "") return h("span", { class: "muted", text: "–" });
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (name.endsWith("_at") && typeof value === "string") return h("span", { title: value, text: absoluteTime(value) });
  if (Array.isArray(value)) return h("span", { class: "mono", text: value.map((item) => (typeof item === "object" ? JSON.stringify(item) : String(item))).join(", ") || "–" });
  if (typeof value === "object") return h("span", { class: "mono", text: JSON.stringify(value) });
  return h("span", { class: typeof value === "number" ? "num" : "", text: String(value) });
}

function kvList(entries) {
  return entries.flatMap(([name, value]) => [h("dt", { text: humanize(name) }), h("dd", {}, valueView(name, value))]);
}

function notebooksOf(r) {
  if (Array.isArray(r.notebooks) && r.notebooks.length) return r.notebooks;
  return [Object.fromEntries([...FIRST_NOTEBOOK_FIELDS].map((name) => [name, r[name]]))];
}

function renderRepo(r, label) {
  $("#repo-name").textContent = label;
  $("#repo-name").title = r.github_url;
  document.title = `${label} · notebook-mlops`;
  $("#repo-subtitle").replaceChildren(h("span", { class: "mono", text: r.github_url }), " · branch ", h("span", { class: "mono", text: r.branch }));
  $("#repo-run").disabled = false;
  $("#repo-notebooks").replaceChildren(
    ...notebooksOf(r).map((notebook) =>
      h(
        "li",
        { class: "repo-page-notebook", dataset: { notebookPath: notebook.notebook_path } },
        h("h3", { class: "mono", text: notebook.notebook_path }),
        h("dl", { class: "kv small" }, ...kvList(Object.entries(notebook).filter(([name]) => !["id", "notebook_path"].includes(name)))),
      ),
    ),
  );
  const hasNotebooks = Array.isArray(r.notebooks) && r.notebooks.length > 0;
  $("#repo-details").replaceChildren(
    ...kvList(Object.entries(r).filter(([name]) => !SHOWN_ELSEWHERE.has(name) && !(hasNotebooks && FIRST_NOTEBOOK_FIELDS.has(name)))),
  );
  const inputId = "repo-webhook-url";
  $("#repo-webhook").replaceChildren(
    h("dt", { text: "Payload URL" }),
    h("dd", {}, h("div", { class: "copy-row" }, h("input", { id: inputId, class: "mono", type: "text", readonly: true, value: r.webhook_url || "", "aria-label": "Payload URL" }), h("button", { type: "button", class: "btn btn-small", dataset: { copy: inputId }, text: "Copy" }))),
    h("dt", { text: "On GitHub" }),
    h("dd", { text: r.webhook_id ? `created by the platform (hook ${r.webhook_id})` : "not created by the platform: add it in the repository's Settings → Webhooks" }),
    h("dt", { text: "Token" }),
    h("dd", { text: r.has_token ? "stored (private fetches, the webhook, commit statuses)" : "none (the operator's GITHUB_TOKEN applies, if any)" }),
  );
  wireCopyButtons($("#repo-webhook"));
}

function deliveryItem(d) {
  const what = d.outcome === "accepted" ? h("span", {}, "started ", pipelineLink(d.pipeline_id)) : h("span", { class: "muted", text: `ignored: ${d.reason || "no reason kept"}` });
  return h(
    "li",
    { dataset: { outcome: d.outcome } },
    h("span", { title: absoluteTime(d.received_at), text: since(d.received_at) }),
    ` · ${d.event} · `,
    what,
  );
}

async function renderDeliveries() {
  const deliveries = itemsOf(await api(`/repos/${encodeURIComponent(repoId)}/deliveries?limit=10`));
  $("#repo-deliveries").replaceChildren(...deliveries.map(deliveryItem));
  show($("#repo-deliveries-empty"), deliveries.length === 0);
}

async function renderStatus(last) {
  const box = $("#repo-status");
  if (!last) {
    box.replaceChildren(h("dt", { text: "Latest run" }), h("dd", { class: "muted", text: "none yet" }));
    return;
  }
  const detail = await api(`/pipelines/${encodeURIComponent(last.id)}`);
  const latest = (detail.commit_statuses || []).at(-1);
  box.replaceChildren(
    h("dt", { text: "Latest run" }),
    h("dd", {}, pipelineLink(detail.id), " ", statusBadge(detail.status)),
    h("dt", { text: "Reported" }),
    latest
      ? h("dd", {}, h("span", { class: "mono", text: latest.state }), ` “${latest.description}”`)
      : h("dd", { class: "muted", text: "nothing: statuses go to repositories on GitHub that a token reaches" }),
    ...(latest ? [h("dt", { text: "Delivery" }), h("dd", { text: latest.last_error ? `${latest.delivery}: ${latest.last_error}` : latest.delivery })] : []),
  );
}

async function renderRuns(repos) {
  const body = await api(`/pipelines?repo_id=${encodeURIComponent(repoId)}&page=1&size=${RUNS_SHOWN}`);
  const items = itemsOf(body);
  $("#runs-body").replaceChildren(...items.map((p) => pipelineRow(p, repos, { showRepo: false })));
  show($("#runs-empty"), items.length === 0);
  return items[0] || null;
}

async function refresh() {
  let repos;
  try {
    repos = await loadRepos();
    const known = repos.get(Number(repoId));
    if (!known) throw new Error(`repository #${repoId} is no longer registered`);
    const { label, ...fields } = known; // the API's fields only, and the label given to them
    repo = fields;
    const key = JSON.stringify(known);
    if (key !== lastRepoKey) renderRepo(repo, label); // unchanged: keep focus and selection
    lastRepoKey = key;
    const last = await renderRuns(repos);
    await Promise.all([renderDeliveries(), renderStatus(last)]);
    show($("#repo-error"), false);
  } catch (err) {
    $("#repo-error").textContent = `Could not load the repository: ${err.message}`;
    show($("#repo-error"), true);
  }
}

$("#repo-run").addEventListener("click", async () => {
  if (!repo) return;
  try {
    const result = await api(`/repos/${encodeURIComponent(repo.id)}/trigger`, { method: "POST" });
    location.assign(`/ui/pipelines/${encodeURIComponent(result.pipeline_id)}`);
  } catch (err) {
    toast(`Could not start a run: ${err.message}`, "error");
  }
});

poll(refresh, 5000);
