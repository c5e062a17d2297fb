// The model page's monitoring section, drawn from the platform's own data (no Prometheus):
// traffic, latency and error rate per version (prediction log), live quality next to the
// offline metric it was deployed with, drift per feature with reference-vs-current
// histograms, and the latest logged predictions.

import { api } from "./api.js";
import { $, h, show, svg } from "./dom.js";
import { absoluteTime, number, since } from "./format.js";

const MAX_INPUT_TEXT = 80;

function text(value) {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  return s.length > MAX_INPUT_TEXT ? `${s.slice(0, MAX_INPUT_TEXT - 1)}…` : s;
}

/** Two rows of bars (reference above, current below) on shared bins, as a small inline SVG. */
function histogramSvg(histogram) {
  const width = 160;
  const height = 36;
  const n = histogram.bins.length || 1;
  const barWidth = width / n;
  const top = Math.max(...histogram.reference, ...histogram.current, 0.0001);
  const bars = (values, y0, cls) =>
    values.map((share, i) => {
      const barHeight = (share / top) * (height / 2 - 2);
      return svg("rect", {
        x: i * barWidth + 1,
        y: y0 + (height / 2 - 2 - barHeight),
        width: Math.max(barWidth - 2, 1),
        height: barHeight,
        class: cls,
      }, svg("title", {}, `${histogram.bins[i]}: ${(share * 100).toFixed(1)}%`));
    });
  return svg(
    "svg",
    { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "reference (top) and current (bottom) distribution" },
    ...bars(histogram.reference, 0, "hist-reference"),
    ...bars(histogram.current, height / 2, "hist-current"),
  );
}

/** "2.5% (3)": the share of failed requests, with their count and reasons on hover. */
function errorRate(t) {
  if (!t.errors) return h("td", { class: "num", text: "0%" });
  const reasons = Object.entries(t.error_reasons).map(([reason, n]) => `${reason}: ${n}`).join(", ");
  return h("td", { class: "num", title: reasons, text: `${number(t.error_rate * 100)}% (${t.errors})` });
}

function trafficRows(traffic, quality, versions) {
  const live = {};
  for (const q of quality.versions || []) live[q.version] = `${q.metric} ${number(q.value)} (${q.rows} rows)`;
  const offline = {};
  for (const v of versions) {
    const [metric, value] = Object.entries(v.metrics || {})[0] || [];
    if (metric !== undefined) offline[v.version] = `${metric} ${number(value)}`;
  }
  return Object.entries(traffic.versions).map(([version, t]) =>
    h(
      "tr",
      { dataset: { version } },
      h("th", { scope: "row", class: "mono", text: `v${version}` }),
      h("td", { class: "num", text: String(t.requests) }),
      h("td", { class: "num", text: number(t.p50_ms) }),
      h("td", { class: "num", text: number(t.p95_ms) }),
      errorRate(t),
      h("td", { class: "num", text: live[version] || "no feedback" }),
      h("td", { class: "num", text: offline[version] || "" }),
    ),
  );
}

/** Requests per bucket, one polyline per version. */
function trafficChart(traffic) {
  const width = 480;
  const height = 90;
  const count = Math.max(1, Math.round((Date.now() - Date.parse(traffic.since)) / 1000 / traffic.bucket_seconds));
  const byVersion = {};
  for (const b of traffic.buckets) {
    const index = Math.floor((Date.parse(b.start) - Date.parse(traffic.since)) / 1000 / traffic.bucket_seconds);
    (byVersion[b.version] ||= new Array(count).fill(0))[index] = b.requests;
  }
  const top = Math.max(1, ...traffic.buckets.map((b) => b.requests));
  const lines = Object.entries(byVersion).map(([version, values], k) =>
    svg(
      "polyline",
      {
        points: values.map((v, i) => `${(i / Math.max(count - 1, 1)) * width},${height - (v / top) * (height - 6) - 3}`).join(" "),
        class: `spark-line spark-${k % 4}`,
        fill: "none",
      },
      svg("title", {}, `v${version}`),
    ),
  );
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", width: "100%", height, role: "img", "aria-label": "requests over time per version" }, ...lines);
}

function driftRows(drift) {
  return Object.entries(drift.features || {}).map(([name, f]) =>
    h(
      "tr",
      { dataset: { feature: name, drifted: String(f.drifted) } },
      h("th", { scope: "row" }, name, f.drifted ? h("span", { class: "badge", dataset: { status: "failed" }, text: "drift" }) : null),
      h("td", { text: f.method }),
      h("td", { class: "num", text: number(f.p_value ?? f.distance) }),
      h("td", {}, f.histogram ? histogramSvg(f.histogram) : null),
    ),
  );
}

function latestRows(page) {
  return (page.items || []).map((item) =>
    h(
      "tr",
      { dataset: { requestId: item.request_id } },
      h("td", { title: absoluteTime(item.at), text: since(item.at) }),
      h("td", { class: "mono", text: `v${item.version}` }),
      h("td", { class: "mono small", text: item.request_id }),
      h("td", { class: "mono small", text: text(item.inputs.length === 1 ? item.inputs[0] : item.inputs) }),
      h("td", { class: "mono", text: text(item.predictions.length === 1 ? item.predictions[0] : item.predictions) }),
      h("td", { class: "num", text: number(item.latency_ms) }),
    ),
  );
}

/** Fetch and draw the section; `versions` are the page's versions (for the offline metric). */
export async function renderMonitoring(base, versions) {
  const [traffic, quality, latest, drift] = await Promise.all([
    api(`${base}/traffic?hours=24&buckets=48`),
    api(`${base}/quality`),
    api(`${base}/predictions?size=10`),
    api(`${base}/drift`, { allowStatus: [404] }),
  ]);
  const empty = !latest.items || latest.items.length === 0;
  show($("#monitoring-empty"), empty);
  $("#traffic-body").replaceChildren(...trafficRows(traffic, quality, versions));
  $("#traffic-chart").replaceChildren(traffic.buckets.length ? trafficChart(traffic) : "");
  $("#latest-body").replaceChildren(...latestRows(latest));
  if (drift && drift.version) {
    const summary = drift.drift_detected === null
      ? drift.detail
      : drift.drift_detected
        ? `v${drift.version}: drift in ${drift.drifted_features.join(", ")} (reference: ${drift.reference.source.replace("_", " ")}, ${drift.reference.rows} rows)`
        : `v${drift.version}: no drift (reference: ${drift.reference.source.replace("_", " ")}, ${drift.reference.rows} rows)`;
    $("#drift-summary").textContent = summary;
    $("#drift-body").replaceChildren(...driftRows(drift));
  } else {
    $("#drift-summary").textContent = "no logged prediction yet";
    $("#drift-body").replaceChildren();
  }
}
