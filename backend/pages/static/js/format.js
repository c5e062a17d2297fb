// Formatting shared by the pages: times, durations, numbers, metrics.

/** Parse an API timestamp; naive ones are UTC (that is how the platform stores them). */
function parseTime(value) {
  if (!value) return null;
  if (typeof value === "number") return new Date(value * 1000);
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const date = new Date(text.replace(" ", "T"));
  return Number.isNaN(date.getTime()) ? null : date;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.max(0, Math.round(seconds * 1000))} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = Math.floor(seconds % 60);
  if (minutes < 60) return `${minutes}m ${String(rest).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}

/** Seconds between two API timestamps; a missing end means "still running" (now). */
export function elapsed(start, end) {
  const from = parseTime(start);
  if (!from) return null;
  const to = parseTime(end) || new Date();
  return (to.getTime() - from.getTime()) / 1000;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function since(value) {
  const date = parseTime(value);
  if (!date) return "–";
  const seconds = (date.getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

export function absoluteTime(value) {
  const date = parseTime(value);
  return date ? date.toLocaleString() : "";
}

export function clockTime(value) {
  const date = parseTime(value);
  return date ? date.toLocaleTimeString(undefined, { hour12: false }) : "";
}

export function shortSha(sha) {
  return sha ? String(sha).slice(0, 7) : "–";
}

export function number(value) {
  if (typeof value !== "number") return String(value ?? "–");
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 0.001 || abs >= 1e6)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

// Metrics people look at first when a run has several.
const HEADLINE = ["accuracy", "f1", "f1_score", "roc_auc", "r2", "rmse", "mae", "mse", "loss"];

/** The metric to show in one column: the gate metric when known, else a familiar one. */
export function headlineMetric(metrics, preferred) {
  if (!metrics) return null;
  const names = Object.keys(metrics);
  if (!names.length) return null;
  const pick =
    (preferred && preferred in metrics && preferred) ||
    HEADLINE.find((name) => name in metrics) ||
    names.sort()[0];
  return { name: pick, value: metrics[pick] };
}

export const FINISHED = new Set(["success", "failed", "cancelled"]);
