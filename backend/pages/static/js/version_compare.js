// Model page: each version's hyperparameters, and two versions side by side
// (GET /models/{name}/compare), rows that differ marked.

import { api } from "./api.js";
import { $, h, show } from "./dom.js";
import { number, shortSha } from "./format.js";

let chosen = null; // [a, b] the reader picked; null until then (defaults follow the model)
let shownKey = "";
let switching = false; // the served version is still being switched to (model.js isSwitching)
// Picking A then B quickly sends two requests whose answers can arrive in either order: only the
// answer to the latest pick is shown, or the table could show a pair the pickers no longer say.
let latestLoad = 0;

/** A version's hyperparameters as a disclosure: "N parameters", then name = value. */
export function paramsView(version) {
  const entries = Object.entries(version.params || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return null;
  const given = version.given_parameters || {};
  return h(
    "details",
    { class: "version-params" },
    h("summary", { class: "small", text: `${entries.length} parameter${entries.length === 1 ? "" : "s"}` }),
    h(
      "dl",
      { class: "param-list mono small" },
      entries.flatMap(([name, value]) => [
        h("dt", { text: name }),
        h("dd", {}, value, name in given ? h("span", { class: "muted", text: " (given)", title: "set by the trigger's parameters" }) : null),
      ]),
    ),
  );
}

function defaults(model) {
  const numbers = model.versions.map((v) => v.version);
  const newest = numbers[numbers.length - 1];
  const a = model.served && model.served !== newest ? model.served : numbers[numbers.length - 2];
  return [a ?? newest, newest];
}

function select(id, label, numbers, value) {
  return h(
    "label",
    { class: "inline-select" },
    h("span", { class: "small", text: `${label} ` }),
    h("select", { id, "aria-label": `${label} version` }, numbers.map((n) => h("option", { value: n, text: `v${n}`, selected: n === value }))),
  );
}

function cellText(value, fallback = "–") {
  return value === null || value === undefined || value === "" ? fallback : value;
}

function row(name, a, b, { changed, note = null, cls = "" }) {
  return h(
    "tr",
    { class: changed ? `changed ${cls}` : cls, dataset: { name, changed: String(changed) } },
    h("th", { scope: "row", class: "mono" }, name, note),
    h("td", { class: "mono", dataset: { side: "a" } }, a),
    h("td", { class: "mono", dataset: { side: "b" } }, b),
  );
}

function section(title, rows) {
  if (!rows.length) return [];
  return [h("tr", { class: "compare-section" }, h("th", { colspan: 3, scope: "colgroup", text: title })), ...rows];
}

function metricDelta(m) {
  if (typeof m.delta !== "number" || m.delta === 0) return null;
  const sign = m.delta > 0 ? "+" : "−";
  const word = m.better === "b" ? " better" : m.better === "a" ? " worse" : "";
  return h("span", { class: `delta${m.better ? ` delta-${m.better === "b" ? "better" : "worse"}` : ""}`, text: ` (${sign}${number(Math.abs(m.delta))}${word})` });
}

function renderComparison(body) {
  const given = (side) => (p) => (p.given.includes(side) ? h("span", { class: "muted", text: " (given)" }) : null);
  const params = body.params.map((p) => row(p.name, [cellText(p.a, "not set"), given("a")(p)], [cellText(p.b, "not set"), given("b")(p)], { changed: p.changed }));
  const metrics = body.metrics.map((m) =>
    row(m.name, cellText(m.a === null ? null : number(m.a), "not logged"), [cellText(m.b === null ? null : number(m.b), "not logged"), metricDelta(m)], {
      changed: m.changed,
      note: m.gate ? h("span", { class: "muted small", text: " (gate)" }) : null,
    }),
  );
  const run = body.run.map((r) => row(r.name, cellText(r.name === "commit" ? shortSha(r.a) : r.a), cellText(r.name === "commit" ? shortSha(r.b) : r.b), { changed: r.changed }));
  $("#compare-body").replaceChildren(...section("Parameters", params), ...section("Metrics", metrics), ...section("Run", run));
  const servedWord = switching ? " (switching)" : " (serving)";
  $("#compare-head-a").textContent = `v${body.a.version}${body.a.served ? servedWord : ""}`;
  $("#compare-head-b").textContent = `v${body.b.version}${body.b.served ? servedWord : ""}`;
  $("#compare-summary").textContent = body.changed ? `${body.changed} difference${body.changed === 1 ? "" : "s"} marked` : "No difference";
  show($("#compare-table"), true);
}

async function load(base) {
  const [a, b] = chosen;
  const mine = ++latestLoad;
  try {
    const body = await api(`${base}/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    if (mine !== latestLoad) return;
    renderComparison(body);
    show($("#compare-error"), false);
  } catch (err) {
    if (mine !== latestLoad) return;
    $("#compare-error").textContent = `Could not compare v${a} and v${b}: ${err.message}`;
    show($("#compare-error"), true);
  }
}

/** Fill the comparison card (#compare) for the model; called on every refresh of the page.
 * `switchingNow`: replicas still report another version than the registry serves (model.js),
 * so the served version is labelled "switching", as the page header says. */
export function renderCompare(model, base, switchingNow = false) {
  switching = switchingNow;
  const card = $("#compare");
  const numbers = model.versions.map((v) => v.version);
  show(card, numbers.length >= 2);
  if (numbers.length < 2) return;
  if (!chosen || !chosen.every((n) => numbers.includes(n))) chosen = defaults(model);
  // Rebuild only when what it shows changed (a refresh every few seconds keeps the reader's place).
  const key = JSON.stringify([numbers, model.served, chosen, switching]);
  if (key === shownKey) return;
  shownKey = key;
  const pick = () => {
    chosen = [$("#compare-a").value, $("#compare-b").value];
    shownKey = JSON.stringify([numbers, model.served, chosen, switching]);
    load(base);
  };
  $("#compare-pickers").replaceChildren(select("compare-a", "A", numbers, chosen[0]), " ", select("compare-b", "B", numbers, chosen[1]));
  $("#compare-a").addEventListener("change", pick);
  $("#compare-b").addEventListener("change", pick);
  load(base);
}
