// The model page's canary panel (GET/POST /models/{name}/canary): start a challenger beside the
// served version with a weight and a mode, compare both versions live since it started, and
// promote or abort it, each after a confirmation.

import { api } from "./api.js";
import { $, confirmDialog, h, show, toast } from "./dom.js";
import { absoluteTime, number, since } from "./format.js";

const OUTCOME_WORDS = { ok: "no worse", worse: "worse", unknown: "not known yet" };
const VERDICT_WORDS = { promote: "would promote", abort: "would abort", wait: "waits" };
let formKey = "";

function percent(value) {
  return typeof value === "number" ? `${number(value * 100)}%` : "–";
}

function ms(value) {
  return typeof value === "number" ? `${number(value)} ms` : "–";
}

function quality(v) {
  return typeof v.quality === "number" ? `${v.quality_metric} ${number(v.quality)} (${v.quality_rows} labels)` : "no feedback yet";
}

function checkCell(check) {
  if (!check) return h("td", {}, "");
  return h(
    "td",
    { class: "canary-check", dataset: { outcome: check.outcome }, title: check.detail },
    h("span", { class: "badge", dataset: { status: check.outcome === "ok" ? "success" : check.outcome === "worse" ? "failed" : "cancelled" }, text: OUTCOME_WORDS[check.outcome] || check.outcome }),
    h("span", { class: "muted small", text: ` ${check.detail}` }),
  );
}

function comparisonRows(status) {
  const [champion, challenger] = status.versions;
  const checks = Object.fromEntries((status.policy?.checks || []).map((c) => [c.name, c]));
  const shadow = status.mode === "shadow";
  const row = (label, a, b, check, key) => h("tr", { dataset: { figure: key } }, h("th", { scope: "row", text: label }), h("td", { class: "num", text: a }), h("td", { class: "num", text: b }), checkCell(check));
  const rows = [
    row(shadow ? "Requests (challenger: copies)" : "Requests", String(champion.requests), String(challenger.requests), null, "requests"),
    row("Error rate", percent(champion.error_rate), percent(challenger.error_rate), checks.error_rate, "error_rate"),
    row("p50 latency", ms(champion.p50_ms), ms(challenger.p50_ms), null, "p50"),
    row("p95 latency", ms(champion.p95_ms), ms(challenger.p95_ms), checks.p95_latency, "p95"),
    row("Live quality", quality(champion), quality(challenger), checks.live_quality, "live_quality"),
    row("Drifted features", percent(champion.drift_share), percent(challenger.drift_share), checks.drift, "drift"),
  ];
  if (shadow) {
    const agreement = status.compared ? `${percent(status.agreement)} of ${status.compared} rows` : "nothing compared yet";
    rows.push(h("tr", { dataset: { figure: "agreement" } }, h("th", { scope: "row", text: "Same answer" }), h("td", { class: "num", colspan: 2, text: agreement }), h("td", {}, "")));
  }
  return rows;
}

function describe(status) {
  const share = `${number(status.weight)}% of requests`;
  const what = status.mode === "shadow" ? `gets a copy of ${share} (v${status.champion} answers them all)` : `answers ${share}`;
  const sticky = status.sticky_key ? `, one version per ${status.sticky_key}` : "";
  return `v${status.challenger} ${what} beside v${status.champion}${sticky}; started ${since(status.started_at)} by ${status.started_by}.`;
}

function fillForm(model, status) {
  const candidates = model.versions.filter((v) => v.version !== model.served).map((v) => v.version).reverse();
  const key = JSON.stringify([candidates, status.active, status.challenger, status.weight, status.mode, status.sticky_key]);
  if (key === formKey) return; // keep what the reader is typing
  formKey = key;
  const select = $("#canary-version");
  const chosen = status.active ? status.challenger : candidates[0];
  select.replaceChildren(...candidates.map((v) => h("option", { value: v, text: `v${v}`, selected: v === chosen })));
  if (status.active) {
    $("#canary-weight").value = String(status.weight);
    $("#canary-mode").value = status.mode;
    $("#canary-sticky").value = status.sticky_key || "";
  }
  $("#canary-start").textContent = status.active ? "Change canary" : "Start canary";
  $("#canary-start").disabled = !candidates.length || model.served === null;
}

/** Draw the panel for `model` (as model_data.js normalizes it). */
export async function renderCanary(base, model) {
  const status = await api(`${base}/canary`);
  fillForm(model, status);
  $("#canary").dataset.active = String(status.active);
  if (!status.active) {
    $("#canary-summary").textContent = model.served === null ? "Nothing is served: deploy a version first." : "No challenger runs beside the served version.";
    show($("#canary-running"), false);
    return;
  }
  $("#canary-summary").textContent = describe(status);
  $("#canary-summary").title = absoluteTime(status.started_at);
  $("#canary-champion-head").textContent = `Served v${status.champion}`;
  $("#canary-challenger-head").textContent = `Challenger v${status.challenger}`;
  $("#canary-body").replaceChildren(...comparisonRows(status));
  const policy = status.policy;
  $("#canary-policy").replaceChildren(h("strong", { text: `The promotion policy ${VERDICT_WORDS[policy.verdict] || policy.verdict}: ` }), policy.reason);
  $("#canary-policy").dataset.verdict = policy.verdict;
  $("#canary-promote").textContent = `Promote v${status.challenger}`;
  $("#canary-promote").dataset.version = status.challenger;
  $("#canary-abort").dataset.version = status.challenger;
  show($("#canary-running"), true);
}

function formError(message) {
  $("#canary-error").textContent = message;
  show($("#canary-error"), Boolean(message));
}

/** Wire the form and the buttons; `after` redraws the page once a change is made. */
export function wireCanary(base, name, getModel, after) {
  $("#canary-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    formError("");
    const weight = Number($("#canary-weight").value);
    if (!(weight > 0 && weight <= 100)) {
      formError("The share of requests is a percentage above 0, at most 100.");
      return;
    }
    const sticky = $("#canary-sticky").value.trim();
    const body = { version: $("#canary-version").value, weight, mode: $("#canary-mode").value, sticky_key: sticky || null };
    try {
      await api(`${base}/canary`, { method: "POST", body });
      toast(`v${body.version} of ${name} runs as the challenger (${number(weight)}%, ${body.mode}).`);
    } catch (err) {
      formError(err.message);
      return;
    }
    formKey = "";
    await after();
  });

  for (const [id, action] of [["#canary-promote", "promote"], ["#canary-abort", "abort"]]) {
    $(id).addEventListener("click", async () => {
      const version = $(id).dataset.version;
      const served = getModel()?.served;
      const promote = action === "promote";
      const ok = await confirmDialog({
        title: promote ? `Promote v${version} of ${name}?` : `Abort the canary of v${version}?`,
        message: promote
          ? `v${version} answers every request from now on, on every model server; v${served} stops. The comparison so far is kept in the deployment history.`
          : `v${served} answers every request again and model servers unload v${version}. The comparison so far is kept in the deployment history.`,
        confirmLabel: promote ? `Promote v${version}` : "Abort canary",
        cancelLabel: "Keep it running",
        danger: !promote,
      });
      if (!ok) return;
      try {
        const outcome = await api(`${base}/canary/${action}`, { method: "POST" });
        toast(promote ? `${name} now serves v${outcome.served_version}.` : `Canary of v${outcome.challenger} aborted; v${outcome.served_version} serves.`);
      } catch (err) {
        toast(`${promote ? "Promote" : "Abort"} failed: ${err.message}`, "error");
      }
      formKey = "";
      await after();
    });
  }
}
