// A table of pipelines, as the pipelines page and a repository's page list them: each run with
// its repository, commit (sha and subject), trigger, duration and headline metric (or why it
// has none).

import { api } from "./api.js";
import { itemsOf } from "./common.js";
import { metricCell, pipelineLink, repoLabel, repoLabels, statusBadge } from "./components.js";
import { h } from "./dom.js";
import { FINISHED, absoluteTime, duration, elapsed, shortSha, since } from "./format.js";

/** Every registered repo by id, with a label that names it alone (`owner/name`, widened on a clash). */
export async function loadRepos() {
  const repos = itemsOf(await api("/repos"));
  const labels = repoLabels(repos.map((repo) => repo.github_url));
  return new Map(repos.map((repo) => [repo.id, { ...repo, label: labels.get(repo.github_url) }]));
}

function repoCell(p, repos) {
  const repo = repos.get(p.repo_id);
  if (!repo) return h("span", { class: "mono", title: p.repo_url, text: repoLabel(p.repo_url) }); // deleted since
  return h("a", { class: "mono", href: `/ui/repos/${encodeURIComponent(repo.id)}`, title: repo.github_url, text: repo.label });
}

function commitCell(p) {
  const subject = (p.commit_message || "").split("\n")[0];
  return h(
    "span",
    { class: "commit-cell" },
    h("span", { class: "mono", title: p.commit_sha || "", text: shortSha(p.commit_sha) }),
    subject ? h("span", { class: "muted small ellipsis commit-subject-cell", title: subject, text: ` ${subject}` }) : null,
  );
}

export function pipelineRow(p, repos, { showRepo = true } = {}) {
  const seconds = p.started_at ? elapsed(p.started_at, FINISHED.has(p.status) ? p.finished_at : null) : null;
  return h(
    "tr",
    { dataset: { pipelineId: p.id, status: p.status, trigger: p.trigger } },
    h("td", {}, pipelineLink(p.id)),
    h("td", {}, statusBadge(p.status)),
    showRepo ? h("td", { class: "hide-xs" }, repoCell(p, repos)) : null,
    h("td", { class: "mono small hide-sm", text: p.notebook_path }),
    h("td", { class: "hide-sm" }, commitCell(p)),
    h("td", { class: "hide-sm", title: p.trigger_detail || "", text: p.trigger || "–" }),
    h("td", { class: "num", text: seconds === null ? "–" : duration(seconds) }),
    h("td", { class: "num metric-cell" }, metricCell(p)),
    h("td", { class: "hide-sm", title: absoluteTime(p.created_at), text: since(p.created_at) }),
  );
}
