// Overview: the version each run produced, whether it serves now, and its metric against the
// version before it (from GET /models, read at most every MODELS_EVERY_MS).

import { api } from "./api.js";
import { h } from "./dom.js";
import { headlineMetric, number } from "./format.js";
import { normalizeModel } from "./model_data.js";

const MODELS_EVERY_MS = 15000;
let models = new Map();
let loadedAt = 0;

/** The registered models by name; reread when `force` or when the last read is old. */
export async function loadModels(force = false) {
  if (!force && Date.now() - loadedAt < MODELS_EVERY_MS) return models;
  try {
    const list = await api("/models");
    models = new Map((Array.isArray(list) ? list : []).map((raw) => [raw.name, normalizeModel(raw)]));
    loadedAt = Date.now();
  } catch {
    // Keep what was shown: the pipelines table matters more than this column.
  }
  return models;
}

/** A key that changes whenever a version cell would. */
export function modelsKey() {
  return JSON.stringify([...models].map(([name, m]) => [name, m.served, m.versions.length]));
}

function change(model, version) {
  const index = model.versions.findIndex((v) => v.version === version.version);
  const previous = model.versions.slice(0, index).reverse().find((v) => Object.keys(v.metrics).length);
  const gateMetric = version.gate?.metric;
  const metric = gateMetric && typeof version.metrics[gateMetric] === "number" ? { name: gateMetric, value: version.metrics[gateMetric] } : headlineMetric(version.metrics);
  if (!metric || !previous || typeof previous.metrics[metric.name] !== "number") return null;
  const delta = metric.value - previous.metrics[metric.name];
  const direction = version.gate?.metric === metric.name ? version.gate.direction : "max";
  const better = delta === 0 ? null : (delta > 0) === (direction !== "min");
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  return h("span", {
    class: `delta small${better === null ? "" : better ? " delta-better" : " delta-worse"}`,
    title: `${metric.name} of v${version.version} against v${previous.version}`,
    text: ` ${metric.name} ${sign}${number(Math.abs(delta))} vs v${previous.version}`,
  });
}

/** The overview's Version cell of pipeline `p`. */
export function versionCell(p) {
  if (!p.model_name || !p.model_version) return h("span", { class: "muted", text: "–" });
  const model = models.get(p.model_name);
  const version = model?.versions.find((v) => v.version === String(p.model_version));
  const link = h("a", { href: `/ui/models/${encodeURIComponent(p.model_name)}`, class: "mono", text: `v${p.model_version}`, title: p.model_name });
  if (!model || !version) return h("span", { class: "run-version" }, link);
  const serving = model.served === version.version;
  return h(
    "span",
    { class: "run-version", dataset: { serving: String(serving) } },
    link,
    " ",
    h("span", { class: "badge", dataset: { status: serving ? "success" : "skipped" }, text: serving ? "serving" : "not served" }),
    change(model, version),
  );
}
