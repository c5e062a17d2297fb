// A small inline SVG line chart of one metric across model versions (no chart library).

import { h, svg } from "./dom.js";
import { number } from "./format.js";

const PAD = { top: 16, right: 20, bottom: 34, left: 56 };

/** A round tick step (1, 2, 2.5 or 5 × 10^n) giving about `count` intervals over `span`. */
function niceStep(span, count) {
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / magnitude;
  const nice = scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 2.5 ? 2.5 : scaled <= 5 ? 5 : 10;
  return nice * magnitude;
}

/** Axis bounds on round ticks that include every value (and the gate threshold). */
function niceAxis(values, threshold) {
  const all = threshold === null || threshold === undefined ? values : [...values, threshold];
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (lo === hi) {
    const span = Math.abs(lo) * 0.05 || 0.05;
    lo -= span;
    hi += span;
  }
  const step = niceStep(hi - lo, 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toFixed(10)));
  return { lo, hi, ticks };
}

/**
 * @param {{version: string, value: number}[]} points  ascending by version
 * @param {{metric: string, served?: string|null, threshold?: number|null, direction?: "max"|"min"|null, compact?: boolean}} options
 */
export function metricChart(points, { metric, served = null, threshold = null, direction = null, compact = false, width = 640 }) {
  // Drawn at the width it is shown at, so that its text stays legible on a phone.
  const W = Math.max(280, Math.round(width) || 640);
  const H = compact ? 150 : Math.round(Math.min(260, Math.max(180, W * 0.42)));
  if (!points.length) {
    return h("p", { class: "muted chart-empty", text: `No version has logged “${metric}”.` });
  }
  const { lo, hi, ticks } = niceAxis(points.map((p) => p.value), threshold);
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length === 1 ? innerW / 2 : (i * innerW) / (points.length - 1));
  const y = (v) => PAD.top + innerH - ((v - lo) / (hi - lo)) * innerH;
  const summary = points.map((p) => `v${p.version} ${number(p.value)}`).join(", ");
  const root = svg("svg", {
    class: compact ? "chart-svg compact" : "chart-svg",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": `${metric} across versions: ${summary}${served ? `; serving v${served}` : ""}`,
    preserveAspectRatio: "xMidYMid meet",
  });

  for (const value of ticks) {
    const gy = y(value);
    root.append(
      svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy }),
      svg("text", { class: "axis", x: PAD.left - 8, y: gy + 4, "text-anchor": "end" }, number(value)),
    );
  }
  if (threshold !== null && threshold !== undefined && Number.isFinite(threshold)) {
    const ty = y(threshold);
    const op = direction === "max" ? "≥ " : direction === "min" ? "≤ " : "";
    root.append(
      svg("line", { class: "threshold", x1: PAD.left, x2: W - PAD.right, y1: ty, y2: ty }),
      svg("text", { class: "axis threshold-label", x: W - PAD.right, y: ty - 6, "text-anchor": "end" }, `gate ${op}${number(threshold)}`),
    );
  }
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  root.append(svg("path", { class: "line", d: path }));

  // Label only as many versions on the x axis as fit without overlapping.
  const step = Math.max(1, Math.ceil(points.length / Math.max(2, Math.floor(innerW / 44))));
  points.forEach((p, i) => {
    const isServed = served !== null && String(p.version) === String(served);
    const cx = x(i);
    const cy = y(p.value);
    root.append(
      svg(
        "circle",
        { class: isServed ? "point served" : "point", cx, cy, r: isServed ? 7 : 4.5 },
        svg("title", {}, `v${p.version}: ${metric} ${number(p.value)}${isServed ? " (serving)" : ""}`),
      ),
    );
    if (i % step === 0 || isServed || i === points.length - 1) {
      root.append(svg("text", { class: isServed ? "axis served-label" : "axis", x: cx, y: H - PAD.bottom + 20, "text-anchor": "middle" }, `v${p.version}`));
    }
  });
  return root;
}
