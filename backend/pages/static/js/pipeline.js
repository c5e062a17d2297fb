// Pipeline page: phases as a progress bar, details, metrics, live log, Cancel and Run again.

import { api, download } from "./api.js";
import { itemsOf } from "./common.js";
import { repoLabel, statusBadge } from "./components.js";
import { $, confirmDialog, h, show, toast } from "./dom.js";
import { FINISHED, absoluteTime, duration, elapsed, number, shortSha } from "./format.js";
import { verdictView } from "./gate_verdict.js";
import { LogSearch } from "./log_search.js";
import { LogStream } from "./log_stream.js";
import { LogView } from "./log_view.js";
import { renderCommit, renderFailure, renderMetricsNote } from "./pipeline_panels.js";

const pipelineId = $("#pipeline-root").dataset.pipelineId;
const mlflowUi = document.body.dataset.mlflowUi;
const view = new LogView($("#log"), $("#log-follow"));
let pipeline = null;
let refreshTimer = 0;
let stream = null;

// ---- rendering ----------------------------------------------------------------------------

function phaseItem(phase) {
  const running = phase.status === "running";
  let seconds = null;
  if (running && phase.started_at) seconds = elapsed(phase.started_at, null);
  else if (typeof phase.duration_seconds === "number") seconds = phase.duration_seconds;
  else if (phase.started_at && phase.finished_at) seconds = elapsed(phase.started_at, phase.finished_at);
  return h(
    "li",
    { class: "phase", dataset: { status: phase.status || "pending", phase: phase.name } },
    h("span", { class: "phase-bar", "aria-hidden": "true" }),
    h("span", { class: "phase-name", text: phase.name }),
    h("span", { class: "phase-meta" }, h("span", { class: "phase-status", text: phase.status || "pending" }), seconds === null ? null : h("span", { class: "phase-duration", text: ` · ${duration(seconds)}` })),
  );
}

function renderPhases(p) {
  // The API lists every phase in order (pending ones too), so the names live in one place.
  const finished = FINISHED.has(p.status);
  const phases = (p.phases || []).map((phase) =>
    // A phase still marked running on a finished pipeline was cut short: do not animate it.
    finished && phase.status === "running" ? { ...phase, status: "interrupted" } : phase,
  );
  const done = phases.filter((phase) => ["success", "skipped"].includes(phase.status)).length;
  const list = $("#phases");
  list.replaceChildren(...phases.map(phaseItem));
  list.setAttribute("aria-valuemax", String(phases.length));
  list.setAttribute("aria-valuenow", String(done));
  const current = phases.find((phase) => phase.status === "running");
  list.setAttribute("aria-valuetext", `${done} of ${phases.length} phases done${current ? `, running ${current.name}` : ""}`);
  const total = p.started_at ? elapsed(p.started_at, finished ? p.finished_at : null) : null;
  $("#pipeline-duration").textContent = total === null ? "" : `${finished ? "took" : "running for"} ${duration(total)}`;
}

function detail(label, value) {
  return [h("dt", { text: label }), h("dd", {}, value ?? "–")];
}

function renderDetails(p) {
  const model = p.model_name
    ? h("a", { href: `/ui/models/${encodeURIComponent(p.model_name)}` }, h("span", { class: "mono", text: p.model_name }), p.model_version ? ` v${p.model_version}` : "")
    : null;
  $("#details").replaceChildren(
    ...detail("Repository", p.repo_url ? h("span", { class: "mono", title: p.repo_url, text: repoLabel(p.repo_url) }) : null),
    ...detail("Branch", p.branch ? h("span", { class: "mono", text: p.branch }) : null),
    ...detail("Commit", p.commit_sha ? h("span", { class: "mono", title: p.commit_sha, text: shortSha(p.commit_sha) }) : null),
    ...detail("Notebook", p.notebook_path ? h("span", { class: "mono", text: p.notebook_path }) : null),
    ...detail("Trigger", p.trigger_detail ? `${p.trigger}: ${p.trigger_detail}` : p.trigger),
    ...(Object.keys(p.parameters || {}).length
      ? detail("Parameters", h("span", { class: "mono", text: Object.entries(p.parameters).map(([name, value]) => `${name}=${JSON.stringify(value)}`).join(", ") }))
      : []),
    ...detail("Created", absoluteTime(p.created_at) || null),
    ...detail("Finished", absoluteTime(p.finished_at) || null),
    ...detail("Model", model),
    // The deploy phase's gate verdict: the rule that passed or refused, with both numbers.
    ...(p.params?.gate_verdict ? detail("Gate", verdictView(p.params.gate_verdict)) : []),
    ...(p.attempts > 1 ? detail("Attempts", String(p.attempts)) : []),
  );
  const metrics = p.metrics || {};
  $("#metrics").replaceChildren(...Object.entries(metrics).sort(([a], [b]) => a.localeCompare(b)).flatMap(([name, value]) => detail(name, h("span", { class: "num", text: number(value) }))));
  show($("#metrics-empty"), Object.keys(metrics).length === 0);
  renderCommitStatuses(p.commit_statuses || []);
}

/** One line per status: its state and description, then how its delivery to GitHub went. */
function renderCommitStatuses(statuses) {
  show($("#statuses-card"), statuses.length > 0);
  $("#commit-statuses").replaceChildren(
    ...statuses.flatMap((s) => {
      const delivery = s.delivery === "posted"
        ? `posted ${absoluteTime(s.posted_at)}`
        : s.delivery === "waiting" && s.attempts
          ? `retrying (${s.attempts} attempt${s.attempts > 1 ? "s" : ""}): ${s.last_error}`
          : s.last_error ? `${s.delivery}: ${s.last_error}` : s.delivery;
      return detail(s.state, h("span", {}, h("a", { href: s.target_url, text: s.description }), h("span", { class: "muted small", text: ` · ${delivery}` })));
    }),
  );
}

function render(p) {
  pipeline = p;
  const badge = $("#pipeline-status");
  badge.replaceWith(Object.assign(statusBadge(p.status), { id: "pipeline-status" }));
  const parts = [p.trigger ? `${p.trigger} run` : "run"];
  if (p.commit_sha) parts.push(`of ${shortSha(p.commit_sha)}`);
  if (p.repo_url) parts.push(`in ${repoLabel(p.repo_url)}`);
  $("#pipeline-subtitle").textContent = parts.join(" ");
  renderPhases(p);
  renderDetails(p);
  renderMetricsNote(p);
  renderCommit(p);
  renderFailure(p);
  const error = $("#pipeline-error");
  error.textContent = p.error || "";
  show(error, Boolean(p.error));
  const link = $("#mlflow-link");
  if (p.mlflow_run_id && mlflowUi) {
    link.href = `${mlflowUi}/#/runs/${encodeURIComponent(p.mlflow_run_id)}`;
    show(link, true);
  }
  const cancel = $("#cancel-button");
  show(cancel, !FINISHED.has(p.status));
  cancel.disabled = Boolean(p.cancel_requested);
  cancel.textContent = p.cancel_requested ? "Cancelling…" : "Cancel";
  show($("#rerun-button"), FINISHED.has(p.status) && p.repo_id !== null && p.repo_id !== undefined);
  document.title = `#${p.id} ${p.status} · notebook-mlops`;
}

// ---- data ---------------------------------------------------------------------------------

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    render(await api(`/pipelines/${encodeURIComponent(pipelineId)}`));
  } catch (err) {
    // While polling, a blip (the backend restarting) only delays the next refresh.
    if (!pipeline) toast(`Could not load the pipeline: ${err.message}`, "error");
  }
  // Durations tick every second while running; the row itself is re-read every 2 s.
  // A finished pipeline is re-read while a commit status still waits to reach GitHub.
  const waiting = (pipeline?.commit_statuses || []).some((s) => s.delivery === "waiting");
  if (!pipeline || !FINISHED.has(pipeline.status) || waiting) refreshTimer = setTimeout(refresh, 2000);
}

/** The stored log of a finished pipeline, page by page (Redis may no longer hold it). */
async function loadStoredLog() {
  setState("loading stored log…");
  let after = 0;
  for (;;) {
    const body = await api(`/pipelines/${encodeURIComponent(pipelineId)}/logs?after=${after}`);
    const events = itemsOf(body).filter((event) => event.stream !== "status");
    if (!events.length) break;
    view.append(events);
    after = body.next_after ?? events[events.length - 1].seq;
  }
  return after;
}

function setState(text, kind = "") {
  const state = $("#log-state");
  state.textContent = text;
  state.dataset.kind = kind;
}

function startStream() {
  stream = new LogStream(pipelineId, {
    onEvents: (events) => view.append(events),
    onFinal: (event) => {
      setState(`finished: ${event.status || "done"}`, event.status || "");
      view.note(`— pipeline ${event.status || "finished"} —`);
      refresh();
    },
    onState: (state, delay) => {
      if (state === "live") setState("live", "live");
      else if (state === "reconnecting" && delay) setState(`reconnecting in ${Math.round(delay / 1000) || 1}s…`, "warn");
      else if (state === "finished") return;
      else setState(`${state}…`);
    },
    onNotFound: (reason) => setState(reason, "error"),
    onDenied: (reason) => setState(reason, "error"),
  });
  stream.start();
}

// ---- actions ------------------------------------------------------------------------------

$("#cancel-button").addEventListener("click", async () => {
  const ok = await confirmDialog({
    title: `Cancel pipeline #${pipelineId}?`,
    message: "The running cell is interrupted and the pipeline ends as cancelled. Nothing is deployed.",
    confirmLabel: "Cancel pipeline",
    cancelLabel: "Keep it running",
    danger: true,
  });
  if (!ok) return;
  try {
    await api(`/pipelines/${encodeURIComponent(pipelineId)}/cancel`, { method: "POST" });
    toast("Cancellation requested.");
  } catch (err) {
    toast(`Could not cancel: ${err.message}`, "error");
  }
  refresh();
});

$("#rerun-button").addEventListener("click", async () => {
  if (!pipeline) return;
  const button = $("#rerun-button");
  button.disabled = true;
  try {
    // "Run again" means this pipeline's commit again (not whatever the branch points at now).
    const result = await api(`/pipelines/${encodeURIComponent(pipelineId)}/retry`, { method: "POST" });
    location.assign(`/ui/pipelines/${encodeURIComponent(result.pipeline_id)}`);
  } catch (err) {
    toast(`Could not start a new run: ${err.message}`, "error");
    button.disabled = false;
  }
});

$("#log-wrap").addEventListener("change", (event) => {
  $("#log").classList.toggle("nowrap", !event.target.checked);
});

// ---- log tools: jump to a phase, search, download -------------------------------------------

/** One button per phase as its first line arrives, in the order the phases ran. */
function addJumpButton(phase) {
  $("#log-jump").append(
    h("button", {
      type: "button",
      class: "btn btn-small phase-jump",
      dataset: { phase },
      text: phase,
      "aria-label": `Jump to the ${phase} phase's lines`,
      onclick: () => view.jumpTo(phase),
    }),
  );
}
view.onPhase = addJumpButton;

new LogSearch($("#log"), {
  input: $("#log-search-input"),
  count: $("#log-search-count"),
  prev: $("#log-search-prev"),
  next: $("#log-search-next"),
});

$("#log-download").addEventListener("click", async () => {
  try {
    await download(`/pipelines/${encodeURIComponent(pipelineId)}/logs.txt`, `pipeline-${pipelineId}.log`);
  } catch (err) {
    toast(`Could not download the log: ${err.message}`, "error");
  }
});

// ---- start --------------------------------------------------------------------------------

// Keep the running phase's duration moving between refreshes.
setInterval(() => {
  if (pipeline && !FINISHED.has(pipeline.status)) renderPhases(pipeline);
}, 1000);

await refresh();
if (pipeline && FINISHED.has(pipeline.status)) {
  try {
    const last = await loadStoredLog();
    setState(`finished: ${pipeline.status}`, pipeline.status);
    if (!last) view.note("No log lines were stored for this pipeline.");
  } catch {
    // No stored log (yet): the WebSocket replays what Redis still holds.
    startStream();
  }
} else {
  startStream();
}
