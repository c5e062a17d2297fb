// Models list: each registered model with its served version and a sparkline of its metric.

import { api } from "./api.js";
import { itemsOf } from "./common.js";
import { metricChart } from "./chart.js";
import { $, h, poll, show } from "./dom.js";
import { absoluteTime, number, since } from "./format.js";
import { chartPoints, metricNames, normalizeModel } from "./model_data.js";

function card(model) {
  const latest = model.versions[model.versions.length - 1];
  const metric = metricNames(model)[0];
  const servedInfo = model.versions.find((v) => v.version === model.served);
  const href = `/ui/models/${encodeURIComponent(model.name)}`;
  return h(
    "article",
    { class: "card model-card", dataset: { model: model.name } },
    h("div", { class: "card-head" }, h("h2", {}, h("a", { class: "mono", href, text: model.name })), model.served ? h("span", { class: "badge", dataset: { status: "success" }, text: `Serving v${model.served}` }) : h("span", { class: "badge", dataset: { status: "pending" }, text: "Not served" })),
    h(
      "p",
      { class: "muted small" },
      `${model.versions.length} version${model.versions.length === 1 ? "" : "s"}`,
      latest ? ` · latest v${latest.version} ` : "",
      latest ? h("span", { title: absoluteTime(latest.created_at), text: since(latest.created_at) }) : "",
      servedInfo && metric && metric in servedInfo.metrics ? ` · serving ${metric} ${number(servedInfo.metrics[metric])}` : "",
    ),
    h("div", { class: "chart-slot" }),
    h("a", { class: "btn btn-small", href, text: "Versions, deploy and predict →" }),
  );
}

poll(async () => {
  let body;
  try {
    body = await api("/models");
    show($("#models-error"), false);
  } catch (err) {
    $("#models-error").textContent = `Could not load models: ${err.message}`;
    show($("#models-error"), true);
    return;
  }
  const models = itemsOf(body).map(normalizeModel).sort((a, b) => a.name.localeCompare(b.name));
  const cards = models.map(card);
  $("#models-list").replaceChildren(...cards);
  // Charts are drawn once their card is laid out, at the card's own width.
  models.forEach((model, i) => {
    const metric = metricNames(model)[0];
    const slot = cards[i].querySelector(".chart-slot");
    if (metric) slot.replaceChildren(metricChart(chartPoints(model, metric), { metric, served: model.served, compact: true, width: slot.clientWidth }));
  });
  show($("#models-empty"), models.length === 0);
}, 10000);
