// Small pieces several pages render the same way.

import { h } from "./dom.js";
import { number } from "./format.js";

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
