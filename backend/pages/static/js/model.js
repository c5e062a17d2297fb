// One model: served version, versions with Deploy / Roll back, metric chart, prediction form,
// deployment history and monitoring (model_monitoring.js).

import { api, ApiError } from "./api.js";
import { itemsOf } from "./common.js";
import { metricChart } from "./chart.js";
import { metricList, pipelineLink } from "./components.js";
import { $, confirmWithReason, h, poll, show, toast } from "./dom.js";
import { absoluteTime, number, shortSha, since } from "./format.js";
import { belowGate, confirmBelowGate, servedDifference, verdictView } from "./gate_verdict.js";
import { renderCanary, wireCanary } from "./model_canary.js";
import { chartPoints, metricNames, normalizeModel } from "./model_data.js";
import { renderMonitoring } from "./model_monitoring.js";
import { paramsView, renderCompare } from "./version_compare.js";

const root = $("#model-root");
const name = root.dataset.modelName;
const base = `/models/${encodeURIComponent(name)}`;
const mlflowUi = document.body.dataset.mlflowUi;
let model = null;
let chosenMetric = null;
let featureKey = "";
let busy = false;
let switchTimer = 0;

// ---- versions -----------------------------------------------------------------------------

function actionFor(version) {
  if (version.version === model.served) {
    // Not "Serving" yet while a replica still answers with the version before it.
    const switching = isSwitching();
    return h("span", { class: "badge", dataset: { status: switching ? "running" : "success" }, text: switching ? "Switching" : "Serving" });
  }
  // A version below its gate is never "rolled back" to: deploying it asks for a reason.
  const older = !belowGate(version) && model.served !== null && Number(version.version) < Number(model.served);
  const label = older ? "Roll back" : "Deploy";
  return h("button", {
    type: "button",
    class: older ? "btn btn-small" : "btn btn-small btn-primary",
    dataset: { action: older ? "rollback" : "deploy", version: version.version },
    "aria-label": `${label} to version ${version.version}`,
    text: label,
    onclick: () => changeServed(older ? "rollback" : "deploy", version.version),
  });
}

function versionRow(v) {
  return h(
    "tr",
    { dataset: { version: v.version, served: String(v.version === model.served) } },
    h("th", { scope: "row" }, h("span", { class: "mono", text: `v${v.version}` }), v.notebook_version ? h("span", { class: "muted small", text: ` (${v.notebook_version})` }) : null, paramsView(v)),
    h("td", {}, metricList(v.metrics)),
    h("td", { class: "mono hide-sm", title: v.commit || "" }, shortSha(v.commit)),
    h("td", { class: "hide-sm" }, pipelineLink(v.pipeline_id)),
    h("td", { class: "hide-sm", title: absoluteTime(v.created_at), text: since(v.created_at) }),
    h("td", { class: "num served-diff" }, servedDifference(v, model)),
    h("td", { class: "verdict-cell" }, verdictView(v.verdict)),
    h("td", { class: "actions-cell" }, actionFor(v)),
  );
}

function renderChart() {
  const names = metricNames(model);
  const select = $("#chart-metric");
  if (!chosenMetric || !names.includes(chosenMetric)) chosenMetric = names[0] || null;
  select.replaceChildren(...names.map((n) => h("option", { value: n, text: n, selected: n === chosenMetric })));
  select.disabled = names.length < 2;
  if (!chosenMetric) {
    $("#chart").replaceChildren(h("p", { class: "muted", text: "No version has logged a metric yet." }));
    return;
  }
  // The gate line is the served (else newest) version's own gate, as its run logged it.
  const gate = model.gate && model.gate.metric === chosenMetric ? model.gate : null;
  const threshold = gate ? Number(gate.threshold) : null;
  const box = $("#chart");
  box.replaceChildren(
    metricChart(chartPoints(model, chosenMetric), { metric: chosenMetric, served: model.served, threshold, direction: gate?.direction ?? null, width: box.clientWidth }),
  );
}

function render() {
  $("#served-version").textContent = model.served ? `v${model.served}` : "nothing (not served)";
  $("#served-version").dataset.version = model.served || "";
  $("#versions-body").replaceChildren(...[...model.versions].reverse().map(versionRow));
  show($("#undeploy-button"), model.served !== null);
  renderReplicas();
  $("#mlflow-model-link").href = `${mlflowUi}/#/models/${encodeURIComponent(name)}`;
  renderChart();
  renderPredictFields();
  renderCompare(model, base, isSwitching());
}

/** [replica, loaded version] of each live model-server replica (null: the backend could not tell). */
function replicaEntries() {
  const replicas = model.replicas;
  return replicas && typeof replicas === "object" ? Object.entries(replicas) : null;
}

/** After a deploy or rollback the registry moves first: until every replica reports the new
 * version the page says "switching" rather than two versions that contradict each other. */
function isSwitching() {
  return (replicaEntries() || []).some(([, version]) => String(version) !== String(model.served ?? ""));
}

/** Which version each live model-server replica has loaded. */
function renderReplicas() {
  const box = $("#replicas");
  const entries = replicaEntries();
  if (!entries) {
    show(box, false);
    return;
  }
  const switching = isSwitching();
  if (switching) $("#served-version").textContent += " (switching)";
  $("#served-version").dataset.switching = String(switching);
  clearTimeout(switchTimer);
  if (switching) switchTimer = setTimeout(refresh, 1500);
  box.textContent = !entries.length
    ? "No model server has reported loading it."
    : !switching
      ? `${entries.length} model server${entries.length === 1 ? "" : "s"} on ${model.served ? `v${model.served}` : "nothing"}.`
      : `Switching to ${model.served ? `v${model.served}` : "nothing"}: ${entries.map(([id, version]) => `${id} on ${version ? `v${version}` : "nothing"}`).join(", ")}.`;
  show(box, true);
}

// ---- history ------------------------------------------------------------------------------

// One label per DeploymentAction value (mlops_core/model_events.py); a test holds them equal.
const ACTION_WORDS = { deploy: "Deployed", auto: "Auto-deployed", rollback: "Rolled back to", delete: "Stopped serving", restore: "Restored", canary: "Canary started for", promote: "Promoted", abort: "Aborted the canary of" };
// A challenger ran beside the served version: its row's previous version is that one.
const BESIDE = new Set(["canary", "abort"]);

async function refreshHistory() {
  let items;
  try {
    items = itemsOf(await api(`${base}/history`));
  } catch {
    return;
  }
  $("#history").replaceChildren(
    ...items.map((item) =>
      h(
        "li",
        {},
        h("span", { class: "history-when muted small", title: absoluteTime(item.created_at), text: since(item.created_at) }),
        " ",
        h("strong", { text: ACTION_WORDS[item.action] || item.action }),
        item.version ? ` v${item.version}` : "",
        item.previous_version ? h("span", { class: "muted", text: ` (${BESIDE.has(item.action) ? "beside" : "was"} v${item.previous_version})` }) : "",
        item.pipeline_id ? [" · pipeline ", pipelineLink(item.pipeline_id)] : "",
        item.actor ? h("span", { class: "muted small", text: ` · by ${item.actor}` }) : "",
        item.action === "canary" && item.evidence ? h("span", { class: "muted small", text: ` · ${number(item.evidence.weight)}% ${item.evidence.mode}${item.evidence.sticky_key ? `, sticky ${item.evidence.sticky_key}` : ""}` }) : "",
        item.reason ? h("div", { class: "history-reason muted small", text: item.reason }) : "",
      ),
    ),
  );
  show($("#history-empty"), items.length === 0);
}

// ---- load ---------------------------------------------------------------------------------

async function refresh() {
  if (busy) return;
  try {
    model = normalizeModel(await api(base));
    show($("#model-error"), false);
  } catch (err) {
    $("#model-error").textContent = err.status === 404 ? `There is no registered model “${name}”.` : `Could not load the model: ${err.message}`;
    show($("#model-error"), true);
    show($("#model-body"), Boolean(model));
    return;
  }
  show($("#model-body"), true);
  render();
  await refreshHistory();
  try {
    await renderMonitoring(base, model.versions);
  } catch (err) {
    $("#drift-summary").textContent = `monitoring unavailable: ${err.message}`;
  }
  try {
    await renderCanary(base, model);
  } catch (err) {
    $("#canary-summary").textContent = `canary unavailable: ${err.message}`;
  }
}

// ---- deploy / roll back / stop --------------------------------------------------------------

async function changeServed(action, version) {
  const rollback = action === "rollback";
  const target = model.versions.find((v) => v.version === version);
  let body = { version };
  if (!rollback && belowGate(target)) {
    const reason = await confirmBelowGate({ name, version, served: model.served, verdict: target.verdict });
    if (reason === null) return;
    body = { version, force: true, reason };
  } else {
    const reason = await confirmWithReason({
      title: rollback ? `Roll back ${name} to v${version}?` : `Deploy v${version} of ${name}?`,
      message: `Every model server switches from ${model.served ? `v${model.served}` : "nothing"} to v${version}. Requests keep being answered during the swap.`,
      confirmLabel: rollback ? `Roll back to v${version}` : `Deploy v${version}`,
    });
    if (reason === null) return;
    if (reason) body.reason = reason;
  }
  busy = true;
  try {
    await api(`${base}/${action}`, { method: "POST", body });
    // The registry has moved; the model servers follow within a heartbeat or two.
    toast(rollback ? `Rolled back ${name} to v${version}; the model servers are switching.` : `Deployed v${version} of ${name}; the model servers are switching.`);
  } catch (err) {
    toast(`${rollback ? "Roll back" : "Deploy"} failed: ${err.message}`, "error");
  } finally {
    busy = false;
  }
  await refresh();
  // Model servers report the swap within a heartbeat or two: look again shortly.
  setTimeout(refresh, 2000);
}

$("#undeploy-button").addEventListener("click", async () => {
  const reason = await confirmWithReason({
    title: `Stop serving ${name}?`,
    message: "Model servers unload it and predictions answer 404 until a version is deployed again. Its versions stay registered.",
    confirmLabel: "Stop serving",
    danger: true,
  });
  if (reason === null) return;
  busy = true;
  try {
    await api(base, { method: "DELETE", body: reason ? { reason } : undefined });
    toast(`Stopped serving ${name}; the model servers are unloading it.`);
  } catch (err) {
    toast(`Could not stop serving: ${err.message}`, "error");
  } finally {
    busy = false;
  }
  await refresh();
  // Model servers report the swap within a heartbeat or two: look again shortly.
  setTimeout(refresh, 2000);
});

let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => model && renderChart(), 150);
});

$("#chart-metric").addEventListener("change", (event) => {
  chosenMetric = event.target.value;
  renderChart();
});

// ---- prediction ---------------------------------------------------------------------------

function renderPredictFields() {
  const key = model.features ? model.features.join("\u0000") : `free:${model.featureCount ?? ""}`;
  if (key === featureKey) return; // keep what the reader typed
  featureKey = key;
  const box = $("#predict-fields");
  if (model.features) {
    box.replaceChildren(
      h("p", { class: "hint", text: "One row: a value for each feature." }),
      h(
        "div",
        { class: "feature-grid" },
        model.features.map((feature, i) =>
          h("div", { class: "field" }, h("label", { for: `feature-${i}`, text: feature }), h("input", { id: `feature-${i}`, name: feature, type: "text", inputmode: "decimal", autocomplete: "off", required: true, dataset: { feature: i } })),
        ),
      ),
    );
  } else {
    const hint = model.featureCount ? `${model.featureCount} values, comma-separated.` : "Comma-separated values in the model's feature order.";
    box.replaceChildren(
      h(
        "div",
        { class: "field" },
        h("label", { for: "feature-row", text: "Features" }),
        h("input", { id: "feature-row", name: "features", type: "text", inputmode: "decimal", autocomplete: "off", spellcheck: "false", placeholder: "5.1, 3.5, 1.4, 0.2", "aria-describedby": "feature-row-hint predict-error" }),
        h("p", { class: "hint", id: "feature-row-hint", text: hint }),
      ),
    );
  }
}

function parseValue(text) {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

function readRow() {
  if (model.features) {
    return [...document.querySelectorAll("[data-feature]")].map((input) => parseValue(input.value));
  }
  const text = $("#feature-row").value.trim();
  if (!text) return [];
  const parts = /[,;]/.test(text) ? text.split(/[,;]/) : text.split(/\s+/);
  return parts.map(parseValue);
}

function predictError(message) {
  const box = $("#predict-error");
  box.textContent = message;
  show(box, Boolean(message));
}

function renderResult(result) {
  const prediction = (result.predictions || [])[0];
  const probabilities = (result.probabilities || [])[0];
  const classes = result.classes || model.classes;
  const children = [
    h("p", { class: "prediction" }, h("span", { class: "muted small", text: "Prediction" }), h("strong", { class: "prediction-value", id: "prediction-value", text: typeof prediction === "number" ? number(prediction) : String(prediction) })),
    h("p", { class: "muted small", text: `by v${result.model_version ?? "?"}${typeof result.processing_time_ms === "number" ? ` in ${number(result.processing_time_ms)} ms` : ""}` }),
  ];
  if (Array.isArray(probabilities)) {
    const best = Math.max(...probabilities);
    children.push(
      h(
        "ul",
        { class: "proba", "aria-label": "Probabilities" },
        probabilities.map((p, i) => {
          const bar = h("span", { class: "proba-bar" });
          bar.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
          return h(
            "li",
            { class: p === best ? "best" : "" },
            h("span", { class: "proba-label", text: classes ? String(classes[i]) : `class ${i}` }),
            h("span", { class: "proba-track" }, bar),
            h("span", { class: "proba-value num", text: `${(p * 100).toFixed(1)}%` }),
          );
        }),
      ),
    );
  }
  $("#predict-result").replaceChildren(...children);
  show($("#predict-result"), true);
}

$("#predict-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  predictError("");
  const row = readRow();
  if (!row.length || row.some((value) => value === null)) {
    predictError(model.features ? "Fill in every feature." : "Enter the feature values, separated by commas.");
    return;
  }
  const button = $("#predict-submit");
  button.disabled = true;
  try {
    renderResult(await api(`${base}/predict`, { method: "POST", body: { data: [row] } }));
  } catch (err) {
    predictError(err instanceof ApiError ? err.message : `Could not reach the backend: ${err.message}`);
    show($("#predict-result"), false);
  } finally {
    button.disabled = false;
  }
});

wireCanary(base, name, () => model, async () => {
  await refresh();
  // Model servers load or drop the challenger within a heartbeat or two: look again shortly.
  setTimeout(refresh, 2000);
});

poll(refresh, 10000);
