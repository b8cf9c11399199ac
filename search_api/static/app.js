// The search page: plain DOM, no build step, and no request to any host but this server.
// Untrusted text (takes, queries, server messages) only ever reaches the page as
// text nodes (textContent / createTextNode), never as HTML.
"use strict";

(function () {
  const DEBOUNCE_MS = 300;
  const CONTEXT = 2; // neighbours shown before and after an opened take
  const K = 10;
  // Words not worth highlighting, from the server: the search's function-word list
  // (indexer/search.py STOPWORDS) and the words common to most takes of this index.
  const STOPWORDS = new Set((document.body.dataset.stopwords || "").split(" ").filter(Boolean));
  const dateFormat = new Intl.DateTimeFormat("en-US", { timeZone: "UTC", year: "numeric", month: "short", day: "numeric" });

  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const box = $("q");
  const filters = { author: $("author"), since: $("since"), until: $("until") };
  const statusLine = $("status");
  const errorBox = $("error");
  const intro = $("intro");
  const resultList = $("results");
  const threadView = $("thread-view");
  const clearFilters = $("clear-filters");
  const clearQuery = $("clear-query");
  const weakNote = $("weak-note");
  // The first results of a shared /?q= link, rendered by the server: shown without searching again.
  let initial = null;
  try {
    initial = JSON.parse($("initial-results").textContent || "null");
  } catch (error) {
    initial = null;
  }

  const threads = new Map(); // thread_id -> Promise of its takes, fetched once
  let pending = null; // AbortController of the search in flight
  let timer = 0;
  let lastSearched = null; // the URL query string of the results on screen

  // ---- small DOM helpers -------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatDate(iso) {
    const match = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso || "");
    if (!match) return iso || "";
    return dateFormat.format(new Date(Date.UTC(+match[1], +match[2] - 1, +match[3])));
  }

  function formatMs(ms) {
    if (ms < 1) return "under 1 ms";
    return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + " ms";
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  // Only web links become anchors: a "javascript:" URL in the data is shown as nothing.
  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.origin);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  // ---- highlighting --------------------------------------------------------

  function queryTerms(query) {
    const words = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter(
      (word) => word.length > 1 && !STOPWORDS.has(word)
    );
    return [...new Set(words.map(stem))].sort((a, b) => b.length - a.length);
  }

  // A crude stem, so "governance" also marks "governments" and "compute" marks "computers".
  function stem(word) {
    for (const suffix of ["ations", "ation", "ances", "ance", "ences", "ence", "ments", "ment", "ings", "ing", "ies", "ers", "er", "ed", "es", "s", "e", "y"]) {
      if (word.endsWith(suffix) && word.length - suffix.length >= 4) return word.slice(0, -suffix.length);
    }
    return word;
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  // The text as text nodes, with each word that starts with a query term wrapped in <mark>.
  function highlighted(text, terms) {
    const fragment = document.createDocumentFragment();
    if (!terms.length) {
      fragment.append(text);
      return fragment;
    }
    const pattern = new RegExp("(?<![\\p{L}\\p{N}])(?:" + terms.map(escapeRegExp).join("|") + ")[\\p{L}\\p{N}]*", "giu");
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) fragment.append(text.slice(last, match.index));
      fragment.append(el("mark", {}, match[0]));
      last = match.index + match[0].length;
    }
    if (last < text.length) fragment.append(text.slice(last));
    return fragment;
  }

  // ---- talking to the server ---------------------------------------------

  class ServerError extends Error {}

  async function getJSON(path, signal) {
    let response;
    try {
      response = await fetch(path, { signal, headers: { Accept: "application/json" } });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ServerError("Can't reach the server. Is `takes serve` still running? (" + window.location.origin + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : null;
      throw new ServerError(detail ? "The server refused: " + detail : "The server answered " + response.status + " " + response.statusText + ".");
    }
    return body;
  }

  function thread(threadId) {
    if (!threads.has(threadId)) {
      const request = getJSON("/threads/" + encodeURIComponent(threadId)).then((body) => body.takes);
      request.catch(() => threads.delete(threadId)); // let a later click retry
      threads.set(threadId, request);
    }
    return threads.get(threadId);
  }

  // ---- state in the URL ----------------------------------------------------

  function currentParams() {
    const params = new URLSearchParams();
    const query = box.value.trim();
    if (query) params.set("q", query);
    for (const [name, input] of Object.entries(filters)) {
      if (input.value.trim()) params.set(name, input.value.trim());
    }
    return params;
  }

  function writeUrl(params, push) {
    const search = params.toString();
    const url = search ? "/?" + search : "/";
    if (url === window.location.pathname + window.location.search) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }

  function readUrl() {
    const params = new URLSearchParams(window.location.search);
    box.value = params.get("q") || "";
    for (const [name, input] of Object.entries(filters)) input.value = params.get(name) || "";
    return params;
  }

  // ---- the search view -----------------------------------------------------

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function updateFilterButton() {
    clearFilters.hidden = !Object.values(filters).some((input) => input.value);
    clearQuery.hidden = !box.value;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => search(false), DEBOUNCE_MS);
  }

  async function search(push) {
    clearTimeout(timer);
    updateFilterButton();
    const params = currentParams();
    writeUrl(params, push);
    const query = params.get("q");
    if (pending) pending.abort();
    pending = null;
    if (!query) {
      lastSearched = null;
      resultList.replaceChildren();
      weakNote.hidden = true;
      statusLine.textContent = "";
      clearError();
      intro.hidden = false;
      document.title = "takes: search AI-policy takes";
      return;
    }
    const key = params.toString();
    if (key === lastSearched) return;
    intro.hidden = true;
    const controller = new AbortController();
    pending = controller;
    params.set("k", String(K));
    document.body.classList.add("busy");
    try {
      const body = await getJSON("/search?" + params.toString(), controller.signal);
      if (controller.signal.aborted) return;
      lastSearched = key;
      clearError();
      renderResults(body, query);
      document.title = query + " - takes";
    } catch (error) {
      if (error.name === "AbortError") return;
      lastSearched = null;
      resultList.replaceChildren();
      weakNote.hidden = true;
      statusLine.textContent = "";
      showError(error.message);
    } finally {
      if (pending === controller) {
        pending = null;
        document.body.classList.remove("busy");
      }
    }
  }

  function renderResults(body, query) {
    const terms = queryTerms(query);
    const results = body.results;
    statusLine.textContent = results.length
      ? plural(results.length, "take") + " in " + formatMs(body.took_ms)
      : "No takes match \u201c" + query + "\u201d" + (Object.values(filters).some((i) => i.value) ? " with these filters." : ".");
    statusLine.classList.toggle("empty", !results.length);
    // The ranking marks each result strong or weak; a result without `match` counts as strong.
    const anyStrong = results.some((result) => (result.match || "strong") === "strong");
    weakNote.hidden = anyStrong || !results.length;
    const best = Math.max(...results.map((result) => result.score), 0);
    resultList.replaceChildren(...results.map((result, index) => renderResult(result, index, terms, best, !anyStrong)));
  }

  function meta(take) {
    const line = el("p", { className: "meta" });
    if (take.author) line.append(el("span", { className: "author", text: take.author }));
    if (take.handle) line.append(el("span", { className: "handle", text: take.handle }));
    if (take.date) line.append(el("time", { datetime: take.date, text: formatDate(take.date) }));
    line.append(
      el("span", {
        className: "position",
        title: "Position in its thread",
        "aria-label": "take " + take.position + (take.thread_size ? " of " + take.thread_size : "") + " in its thread",
        text: take.position + (take.thread_size ? "/" + take.thread_size : ""),
      })
    );
    return line;
  }

  function threadHref(take) {
    const params = new URLSearchParams({ thread: take.thread_id });
    const query = box.value.trim();
    if (query) params.set("q", query);
    return "/?" + params.toString() + "#take-" + encodeURIComponent(take.id);
  }

  function renderResult(result, index, terms, best, noneStrong) {
    const contextId = "context-" + index;
    const open = el(
      "button",
      { type: "button", className: "take-text", "aria-expanded": "false", "aria-controls": contextId, title: "Show it in its thread" },
      highlighted(result.text, terms)
    );
    // Scores are cosine-like (about 0 to 1); a bar longer than the best result's would mislead.
    const fraction = Math.max(0, Math.min(1, result.score, best > 1 ? result.score / best : 1));
    const fill = el("span", { className: "relevance-fill" });
    fill.style.width = (fraction * 100).toFixed(1) + "%";
    const relevance = el(
      "span",
      { className: "relevance", title: "Relevance score (higher is better)" },
      el("span", { className: "relevance-bar", "aria-hidden": "true" }, fill),
      el("span", { className: "relevance-score", "aria-label": "relevance " + result.score.toFixed(2) }, result.score.toFixed(2))
    );
    const links = el("span", { className: "links" });
    if (result.source) links.append(el("span", { className: "source", title: "Where the take was read from", text: result.source }));
    const original = result.url ? safeUrl(result.url) : null;
    if (original) links.append(el("a", { href: original, target: "_blank", rel: "noopener noreferrer", text: "Original post \u2197" }));
    links.append(el("a", { href: threadHref(result), className: "thread-link", text: "Whole thread" }));
    const context = el("div", { id: contextId, className: "context", hidden: true });
    const item = el(
      "li",
      { className: "result" + (noneStrong && result.match !== "strong" ? " weak" : ""), "data-id": result.id, "data-thread": result.thread_id, "data-date": result.date || "" },
      meta(result),
      open,
      el("div", { className: "result-foot" }, relevance, links),
      context
    );
    open.addEventListener("click", () => toggleContext(result, open, context, terms));
    return item;
  }

  async function toggleContext(result, button, context, terms) {
    const opening = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(opening));
    button.closest(".result").classList.toggle("open", opening);
    if (!opening) {
      context.hidden = true;
      return;
    }
    context.hidden = false;
    if (context.dataset.loaded) return;
    context.replaceChildren(el("p", { className: "context-note", text: "Loading the thread\u2026" }));
    try {
      const takes = await thread(result.thread_id);
      const at = takes.findIndex((take) => take.id === result.id);
      const before = takes.slice(Math.max(0, at - CONTEXT), at);
      const after = takes.slice(at + 1, at + 1 + CONTEXT);
      const list = el("ol", { className: "context-takes", "aria-label": "The take in its thread" });
      for (const take of before) list.append(contextItem(take, "before", terms));
      list.append(contextItem(result, "current", terms));
      for (const take of after) list.append(contextItem(take, "after", terms));
      const shown = before.length + 1 + after.length;
      context.replaceChildren(
        list,
        el("p", { className: "context-note" },
          "Showing " + shown + " of " + plural(takes.length, "take") + " in this thread. ",
          el("a", { href: threadHref(result), text: "Read the whole thread \u2192" }))
      );
      context.dataset.loaded = "1";
    } catch (error) {
      context.replaceChildren(el("p", { className: "error", role: "alert", text: error.message }));
    }
  }

  function contextItem(take, where, terms) {
    return el(
      "li",
      { className: "context-take " + where, "data-id": take.id, "data-position": String(take.position), "aria-current": where === "current" ? "true" : null },
      el("span", { className: "context-position", text: String(take.position) }),
      el("span", { className: "context-text" }, where === "current" ? highlighted(take.text, terms) : take.text)
    );
  }

  // ---- the thread view -----------------------------------------------------

  async function showThread(threadId, query) {
    form.hidden = true;
    intro.hidden = true;
    resultList.hidden = true;
    threadView.hidden = false;
    const back = $("thread-back");
    back.href = query ? "/?" + new URLSearchParams({ q: query }).toString() : "/";
    back.textContent = query ? "\u2190 Back to results for \u201c" + query + "\u201d" : "\u2190 Back to search";
    statusLine.textContent = "Loading the thread\u2026";
    try {
      const takes = await thread(threadId);
      const first = takes[0] || {};
      $("thread-title").textContent = "Thread by " + (first.author || first.handle || "unknown author") + (first.date ? ", " + formatDate(first.date) : "");
      $("thread-meta").textContent = plural(takes.length, "take") + " in order" + (first.handle ? " \u00b7 " + first.handle : "");
      document.title = $("thread-title").textContent + " - takes";
      const terms = query ? queryTerms(query) : [];
      $("thread-takes").replaceChildren(
        ...takes.map((take) => {
          const original = take.url ? safeUrl(take.url) : null;
          return el(
            "li",
            { id: "take-" + take.id, className: "thread-take", tabindex: "-1", "data-id": take.id, "data-position": String(take.position) },
            el("span", { className: "context-position", text: String(take.position) }),
            el("div", {},
              el("p", { className: "thread-text" }, highlighted(take.text, terms)),
              original ? el("a", { href: original, target: "_blank", rel: "noopener noreferrer", text: "Original post \u2197" }) : null)
          );
        })
      );
      statusLine.textContent = "";
      const target = window.location.hash ? document.getElementById(decodeURIComponent(window.location.hash.slice(1))) : null;
      if (target) {
        target.classList.add("target");
        target.focus({ preventScroll: true });
        target.scrollIntoView({ block: "center" });
      } else {
        $("thread-title").focus({ preventScroll: true });
      }
    } catch (error) {
      statusLine.textContent = "";
      showError(error.message);
    }
  }

  // ---- wiring ----------------------------------------------------------------

  function route() {
    const params = readUrl();
    if (params.get("thread")) {
      showThread(params.get("thread"), params.get("q"));
      return;
    }
    form.hidden = false;
    resultList.hidden = false;
    threadView.hidden = true;
    lastSearched = null;
    const shown = initial;
    initial = null; // only the page's first view comes from the server
    if (shown && shown.body && new URLSearchParams(shown.params).toString() === currentParams().toString()) {
      updateFilterButton();
      intro.hidden = true;
      lastSearched = currentParams().toString();
      renderResults(shown.body, shown.params.q);
      document.title = shown.params.q + " - takes";
      return;
    }
    search(false);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    lastSearched = null; // Enter always searches again, even for the same words
    search(true);
  });
  box.addEventListener("input", () => {
    clearQuery.hidden = !box.value;
    schedule();
  });
  clearQuery.addEventListener("click", () => {
    box.value = "";
    search(false);
    box.focus();
  });
  for (const input of Object.values(filters)) input.addEventListener("change", () => search(false));
  filters.author.addEventListener("input", schedule);
  clearFilters.addEventListener("click", () => {
    for (const input of Object.values(filters)) input.value = "";
    search(false);
    box.focus();
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && box.value) {
      box.value = "";
      search(false);
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || (target && target.isContentEditable)) return;
    if (form.hidden) return;
    event.preventDefault();
    box.focus();
    box.select();
  });
  window.addEventListener("popstate", route);

  getJSON("/stats")
    .then((stats) => {
      $("stats").textContent = plural(stats.takes, "take") + " in " + plural(stats.threads, "thread") + " \u00b7 " + stats.model;
    })
    .catch(() => {});

  route();
  if (!form.hidden) box.focus();
})();
