// Small pieces several pages render the same way.

import { h } from "./dom.js";
import { headlineMetric, number } from "./format.js";

const STATUS_LABELS = {
  queued: "Queued",
  running: "Running",
  success: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  pending: "Pending",
  skipped: "Skipped",
};

export function statusBadge(status) {
  return h("span", {
    class: "badge",
    dataset: { status: status || "unknown" },
    text: STATUS_LABELS[status] || status || "Unknown",
  });
}

/** "owner/repo" from any GitHub-style or local URL, for compact display. */
export function repoLabel(url) {
  if (!url) return "–";
  const clean = String(url).replace(/\.git$/, "").replace(/\/+$/, "");
  const parts = clean.split(/[/:]/).filter(Boolean);
  return parts.slice(-2).join("/") || clean;
}

export function metricList(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return h("span", { class: "muted", text: "–" });
  return h(
    "ul",
    { class: "metric-list" },
    entries
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, value]) => h("li", {}, h("span", { class: "metric-name", text: name }), " ", h("span", { class: "metric-value", text: number(value) }))),
  );
}

export function pipelineLink(id) {
  if (id === null || id === undefined) return h("span", { class: "muted", text: "–" });
  return h("a", { href: `/ui/pipelines/${encodeURIComponent(id)}`, text: `#${id}` });
}

/** The parts of a repository URL that can name it, scheme and `.git` left out. */
function urlSegments(url) {
  const clean = String(url).replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").replace(/\.git$/, "").replace(/\/+$/, "");
  return clean.split(/[/:]/).filter(Boolean);
}

/**
 * Labels for every registered repo at once: `owner/name`, widened (with the host, then more of
 * the path) only where two repos would otherwise read the same, so each label names one repo.
 */
export function repoLabels(urls) {
  const segments = new Map(urls.map((url) => [url, urlSegments(url)]));
  const labels = new Map();
  for (const [url, own] of segments) {
    let size = Math.min(2, own.length);
    const clash = (n) => [...segments].some(([other, parts]) => other !== url && parts.slice(-n).join("/") === own.slice(-n).join("/"));
    while (size < own.length && clash(size)) size += 1;
    labels.set(url, own.slice(-size).join("/") || String(url));
  }
  return labels;
}

/** What a run without metrics says instead: where it stopped, or that it logged none. */
export function noMetricsText(p) {
  if (p.status === "failed") return p.failed_phase ? `no metrics (failed at ${p.failed_phase})` : "no metrics (failed)";
  if (p.status === "cancelled") return "no metrics (cancelled)";
  if (p.status === "success") return "no metrics logged";
  return "no metrics yet";
}

/** A pipeline's headline metric for a table cell, or why it has none. */
export function metricCell(p) {
  const metric = headlineMetric(p.metrics);
  if (!metric) return h("span", { class: "muted small no-metrics", text: noMetricsText(p) });
  return h("span", { title: metric.name }, h("span", { class: "muted small", text: `${metric.name} ` }), number(metric.value));
}
