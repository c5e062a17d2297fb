// The pipeline page's panels that explain a run outside its log: the commit (message, author,
// link), where a failed notebook raised (the user's own line in its cell's source), and what the
// metrics card says when a run has none.

import { noMetricsText, repoLabel } from "./components.js";
import { $, h, show } from "./dom.js";
import { shortSha } from "./format.js";

/** "View on GitHub" for github.com, else the host's name: the link says where it goes. */
function commitLinkText(url) {
  try {
    const host = new URL(url).hostname;
    return host === "github.com" || host.endsWith(".github.com") ? "View on GitHub ↗" : `View on ${host} ↗`;
  } catch {
    return "View commit ↗";
  }
}

export function renderCommit(p) {
  const card = $("#commit-card");
  show(card, Boolean(p.commit_sha || p.commit_message));
  const [subject, ...rest] = (p.commit_message || "").split("\n");
  const body = rest.join("\n").trim();
  $("#commit-subject").textContent = subject || (p.commit_sha ? "(no commit message known yet)" : "");
  const bodyBox = $("#commit-body");
  bodyBox.textContent = body;
  show(bodyBox, Boolean(body));
  const repo = p.repo_id !== null && p.repo_id !== undefined
    ? h("a", { href: `/ui/repos/${encodeURIComponent(p.repo_id)}`, class: "mono", title: p.repo_url, text: repoLabel(p.repo_url) })
    : h("span", { class: "mono", title: p.repo_url, text: repoLabel(p.repo_url) });
  $("#commit-meta").replaceChildren(
    ...(p.commit_author ? [h("span", { class: "commit-author", text: p.commit_author }), " · "] : []),
    h("span", { class: "mono", title: p.commit_sha || "", text: shortSha(p.commit_sha) }),
    " on ",
    h("span", { class: "mono", text: p.branch }),
    " in ",
    repo,
  );
  const link = $("#commit-link");
  if (p.commit_url) {
    link.href = p.commit_url;
    link.textContent = commitLinkText(p.commit_url);
  }
  show(link, Boolean(p.commit_url));
}

function sourceView(frame) {
  return h(
    "pre",
    { class: "failure-source", "aria-label": `cell ${frame.cell}, lines ${frame.source[0]?.number}–${frame.source.at(-1)?.number}` },
    ...frame.source.map((line) =>
      h(
        "span",
        { class: line.number === frame.line ? "source-line raised" : "source-line", dataset: { line: line.number } },
        h("span", { class: "source-number", "aria-hidden": "true", text: String(line.number).padStart(3) }),
        h("span", { class: "source-text", text: line.text || " " }),
      ),
    ),
  );
}

/** The user's frames (outermost first), each with its cell's source, then the library frames. */
export function renderFailure(p) {
  const failure = p.failure;
  show($("#failure-card"), Boolean(failure));
  if (!failure) return;
  $("#failure-exception").textContent = failure.exception;
  $("#failure-frames").replaceChildren(
    ...failure.frames.map((frame) =>
      h(
        "div",
        { class: "failure-frame", dataset: { cell: frame.cell, line: frame.line } },
        h(
          "p",
          { class: "failure-where" },
          h("strong", { text: `Cell ${frame.cell}, line ${frame.line}` }),
          frame.tag ? h("span", { class: "muted", text: ` (${frame.tag})` }) : null,
          frame.function ? h("span", { class: "muted", text: ` in ${frame.function}()` }) : null,
        ),
        frame.source.length ? sourceView(frame) : null,
      ),
    ),
  );
  const library = $("#failure-library");
  show(library, failure.library_frames.length > 0);
  $("#failure-library-count").textContent = failure.frames.length ? "Then, in libraries it called" : "In libraries";
  $("#failure-library-list").replaceChildren(...failure.library_frames.map((frame) => h("li", { class: "mono", text: frame })));
}

/** The metrics card's note when a run has none: where it stopped, not an empty card. */
export function renderMetricsNote(p) {
  const note = $("#metrics-empty");
  const text = noMetricsText(p);
  note.textContent = text.charAt(0).toUpperCase() + text.slice(1) + ".";
}
