// A version's gate verdict, as the deploy phase kept it (mlops_core/deploy_gate.py): the model
// page marks each version with it, the pipeline page shows its pipeline's, and deploying a
// version below its gate asks for a reason first (the API wants `force` and `reason`).

import { $, h } from "./dom.js";
import { headlineMetric, number } from "./format.js";

// Metrics where lower is better when the gate does not say (as mlops_core/notebook_contract.py).
const LOWER_IS_BETTER = /(rmse|mse|mae|mape|loss|error|deviance)/i;

export function belowGate(version) {
  return Boolean(version?.verdict && version.verdict.passed === false);
}

/** "Passed" or "Below gate" with the sentence naming the rule and both numbers; "–" when none was kept. */
export function verdictView(verdict) {
  if (!verdict) return h("span", { class: "muted", text: "–" });
  return h(
    "span",
    { class: "verdict", dataset: { passed: String(verdict.passed), rule: verdict.failed_rule || "" } },
    h("span", { class: "badge", dataset: { status: verdict.passed ? "success" : "failed" }, text: verdict.passed ? "Passed" : "Below gate" }),
    h("span", { class: "verdict-reason muted small", text: verdict.reason }),
  );
}

/** Ask whether to serve a version below its gate, with the verdict shown; resolves to the
 * reason given, or null when cancelled. */
export function confirmBelowGate({ name, version, served, verdict }) {
  const dialog = $("#force-dialog");
  $("#force-title").textContent = `Deploy v${version} of ${name} below its gate?`;
  $("#force-verdict").textContent = verdict.reason;
  $("#force-message").textContent = `Every model server switches from ${served ? `v${served}` : "nothing"} to v${version}. Your reason is kept in the deployment history.`;
  $("#force-ok").textContent = `Deploy v${version} anyway`;
  const reason = $("#force-reason");
  reason.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? reason.value.trim() || null : null), { once: true });
    dialog.showModal();
    $("#force-cancel").focus();
  });
}

/** A version's gate metric against the served version's: "accuracy −0.033" (worse) or
 * "+0.012" (better); "served" on the served row, "–" when either did not log the metric. */
export function servedDifference(version, model) {
  const served = model.versions.find((v) => v.version === model.served);
  if (!served) return h("span", { class: "muted", text: "–" });
  if (version.version === served.version) return h("span", { class: "muted small", text: "served" });
  const metric = model.gate?.metric || headlineMetric(served.metrics)?.name;
  const mine = version.metrics?.[metric];
  const theirs = served.metrics?.[metric];
  if (typeof mine !== "number" || typeof theirs !== "number") return h("span", { class: "muted", text: "–" });
  const delta = mine - theirs;
  if (delta === 0) return h("span", { class: "muted small", title: `${metric} as served v${served.version}`, text: `${metric} ±0` });
  const lower = model.gate?.metric === metric ? model.gate.direction === "min" : LOWER_IS_BETTER.test(metric);
  const better = lower ? delta < 0 : delta > 0;
  return h("span", {
    class: better ? "delta-better" : "delta-worse",
    title: `${metric} ${number(mine)} against served v${served.version}'s ${number(theirs)} (${better ? "better" : "worse"})`,
    text: `${metric} ${delta > 0 ? "+" : "−"}${number(Math.abs(delta))}`,
  });
}
