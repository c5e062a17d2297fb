// One reading of the models API's JSON, so both model pages agree on field names.

import { headlineMetric } from "./format.js";

function asVersion(value) {
  return value === null || value === undefined || value === "" ? null : String(value);
}

function byVersion(a, b) {
  return Number(a.version) - Number(b.version) || String(a.version).localeCompare(String(b.version));
}

export function normalizeModel(raw) {
  const versions = (raw.versions || [])
    .map((v) => ({
      ...v,
      version: String(v.version),
      metrics: v.metrics || {},
      commit: v.commit ?? v.commit_sha ?? null,
      pipeline_id: v.pipeline_id ?? null,
      created_at: v.created_at ?? v.creation_timestamp ?? null,
    }))
    .sort(byVersion);
  const gate = raw.gate || (raw.gate_metric ? { metric: raw.gate_metric, threshold: raw.gate_threshold, direction: raw.gate_direction } : null);
  const features = raw.feature_names || raw.features?.names || raw.input_features || null;
  return {
    name: raw.name,
    served: asVersion(raw.served_version ?? raw.serving_version ?? raw.served?.version ?? null),
    versions,
    gate,
    features: Array.isArray(features) && features.length ? features.map(String) : null,
    featureCount: raw.n_features ?? raw.feature_count ?? raw.features?.count ?? null,
    classes: raw.classes ?? null,
    replicas: raw.replicas ?? null,
  };
}

/** Metric names seen across versions, the gate's (or a familiar) one first. */
export function metricNames(model) {
  const names = new Set();
  for (const v of model.versions) for (const name of Object.keys(v.metrics)) names.add(name);
  const sorted = [...names].sort();
  const first = model.gate?.metric && names.has(model.gate.metric) ? model.gate.metric : headlineMetric(Object.fromEntries(sorted.map((n) => [n, 0])))?.name;
  return first ? [first, ...sorted.filter((n) => n !== first)] : sorted;
}

export function chartPoints(model, metric) {
  return model.versions
    .filter((v) => typeof v.metrics[metric] === "number")
    .map((v) => ({ version: v.version, value: v.metrics[metric] }));
}
