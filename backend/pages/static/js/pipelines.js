// Pipelines: every run, newest first, filtered by status, repository and trigger. The filters
// live in the address (?status=failed&repo_id=2&trigger=push), so a filtered list can be shared
// and survives a reload; the list refreshes itself while the page is open.

import { api } from "./api.js";
import { itemsOf } from "./common.js";
import { $, h, poll, show } from "./dom.js";
import { loadRepos, pipelineRow } from "./pipeline_table.js";

const PAGE_SIZE = 25;
const FILTERS = { status: "#filter-status", repo_id: "#filter-repo", trigger: "#filter-trigger" };
let page = 1;
let repos = new Map();
let lastKey = "";
// Each load's number: an answer that comes back after a newer load started is dropped, so a
// slow refresh cannot put an older filter's rows back.
let generation = 0;

function filters() {
  const chosen = {};
  for (const [name, selector] of Object.entries(FILTERS)) {
    const value = $(selector).value;
    if (value) chosen[name] = value;
  }
  return chosen;
}

/** Put the filters in the address bar (no new history entry per change). */
function remember() {
  const query = new URLSearchParams(filters());
  if (page > 1) query.set("page", String(page));
  const text = query.toString();
  history.replaceState(null, "", text ? `?${text}` : location.pathname);
}

async function fillRepoFilter() {
  repos = await loadRepos();
  const select = $(FILTERS.repo_id);
  const sorted = [...repos.values()].sort((a, b) => a.label.localeCompare(b.label));
  select.append(...sorted.map((repo) => h("option", { value: String(repo.id), title: repo.github_url, text: repo.label })));
}

async function refresh() {
  const query = new URLSearchParams({ ...filters(), page: String(page), size: String(PAGE_SIZE) });
  const mine = ++generation;
  let body;
  try {
    body = await api(`/pipelines?${query}`);
    if (mine !== generation) return;
    show($("#pipelines-error"), false);
  } catch (err) {
    if (mine !== generation) return;
    $("#pipelines-error").textContent = `Could not load pipelines: ${err.message}`;
    show($("#pipelines-error"), true);
    return;
  }
  const items = itemsOf(body);
  const key = JSON.stringify([query.toString(), items]);
  if (key !== lastKey || items.some((p) => p.status === "running")) {
    lastKey = key;
    $("#pipelines-body").replaceChildren(...items.map((p) => pipelineRow(p, repos)));
  }
  show($("#pipelines-empty"), items.length === 0);
  const pages = Math.max(1, Math.ceil((body.total ?? items.length) / PAGE_SIZE));
  show($("#pipelines-pager"), pages > 1);
  $("#pipelines-page").textContent = `Page ${page} of ${pages}`;
  $("#pipelines-prev").disabled = page <= 1;
  $("#pipelines-next").disabled = page >= pages;
}

// ---- wiring -------------------------------------------------------------------------------

const given = new URLSearchParams(location.search);
page = Math.max(1, Number.parseInt(given.get("page") || "1", 10) || 1);
try {
  await fillRepoFilter();
} catch (err) {
  // The list still works without the names; the error shows with it.
  $("#pipelines-error").textContent = `Could not load repositories: ${err.message}`;
  show($("#pipelines-error"), true);
}
for (const [name, selector] of Object.entries(FILTERS)) {
  const value = given.get(name);
  if (value && [...$(selector).options].some((option) => option.value === value)) $(selector).value = value;
}

poll(refresh, 5000);

$("#filters").addEventListener("change", () => {
  page = 1;
  remember();
  refresh();
});
$("#filters").addEventListener("reset", () => {
  // After the form has put every select back to its first option ("Any ...").
  setTimeout(() => {
    page = 1;
    remember();
    refresh();
  });
});
$("#filters").addEventListener("submit", (event) => event.preventDefault());
$("#pipelines-prev").addEventListener("click", () => {
  page = Math.max(1, page - 1);
  remember();
  refresh();
});
$("#pipelines-next").addEventListener("click", () => {
  page += 1;
  remember();
  refresh();
});
