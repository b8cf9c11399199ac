"""The search page for people: `/` and its static files.

`/?q=...` is rendered on the server with its first results, so a shared link
shows them without JavaScript and in link previews; the script then takes
over from the same response (embedded as JSON) without searching again.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import ValidationError

from indexer.errors import ProjectError
from indexer.api import Takes
from indexer.search import STOPWORDS
from search_api.dependencies import SearchLimiterDep, TakesDep
from search_api.routers.search import search_body
from search_api.schemas import SearchParams

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_K = 10

# An explicit list instead of a directory mount: nothing else under the
# package can be reached, and no path from the URL ever touches the disk.
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# The page talks to this server only: the browser itself refuses any script,
# style, font, image or request from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidate instead of caching stale code.
    "Cache-Control": "no-cache",
}

# A word in more than this share of the takes says nothing about why one of
# them matched ("AI" in an AI-policy corpus): it is not highlighted.
COMMON_WORD_SHARE = 0.25
# Below this many takes, shares are too noisy to call a word common.
COMMON_WORD_MIN_TAKES = 20
# Enough takes to estimate the shares of a large index quickly.
COMMON_WORD_SAMPLE = 5000

_common_words: dict[tuple[str, int], frozenset[str]] = {}


def common_words(served: Takes) -> frozenset[str]:
    """Words found in more than COMMON_WORD_SHARE of the takes; computed once per generation."""
    key = (str(served.index_dir), served.generation)
    if key not in _common_words:
        texts = served.common_texts(COMMON_WORD_SAMPLE)
        counts: dict[str, int] = {}
        for text in texts:
            for word in set(re.findall(r"\w+", text.casefold())):
                counts[word] = counts.get(word, 0) + 1
        common = frozenset()
        if len(texts) >= COMMON_WORD_MIN_TAKES:
            common = frozenset(word for word, count in counts.items() if count > COMMON_WORD_SHARE * len(texts))
        _common_words.clear()
        _common_words[key] = common
    return _common_words[key]


# ---- highlighting: the same rule as app.js's queryTerms/stem/highlighted -----------------

_SUFFIXES = ("ations", "ation", "ances", "ance", "ences", "ence", "ments", "ment", "ings", "ing", "ies", "ers", "er", "ed", "es", "s", "e", "y")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def query_terms(query: str, skipped: frozenset[str]) -> list[str]:
    """The query's content words (stemmed), longest first: what the page marks in each take."""
    words = [word for word in re.findall(r"[^\W_]+", query.casefold()) if len(word) > 1 and word not in skipped]
    return sorted({_stem(word) for word in words}, key=len, reverse=True)


def highlighted(text: str, terms: list[str]) -> str:
    """``text`` as escaped HTML, each word starting with a term wrapped in <mark>."""
    if not terms:
        return html.escape(text)
    pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(map(re.escape, terms)) + r")[^\W_]*", re.IGNORECASE)
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(html.escape(text[last : match.start()]))
        parts.append(f"<mark>{html.escape(match.group())}</mark>")
        last = match.end()
    parts.append(html.escape(text[last:]))
    return "".join(parts)


# ---- rendering -------------------------------------------------------------------------------


def _display_date(iso: str | None) -> str:
    try:
        day = date.fromisoformat((iso or "")[:10])
    except ValueError:
        return iso or ""
    return f"{day:%b} {day.day}, {day.year}"


def _web_url(url: str | None) -> str | None:
    """Only http(s) links become anchors, as in app.js."""
    return url if url and urlsplit(url).scheme in ("http", "https") else None


def _result_html(result: dict, terms: list[str], query: str, any_strong: bool) -> str:
    escape = html.escape
    position = f"{result['position']}/{result['thread_size']}" if result.get("thread_size") else str(result["position"])
    meta = [f'<span class="author">{escape(result["author"])}</span>' if result.get("author") else "",
            f'<span class="handle">{escape(result["handle"])}</span>' if result.get("handle") else "",
            f'<time datetime="{escape(result["date"])}">{escape(_display_date(result["date"]))}</time>' if result.get("date") else "",
            f'<span class="position" title="Position in its thread">{escape(position)}</span>']
    thread = "/?" + urlencode({"thread": result["thread_id"], "q": query}) + "#take-" + result["id"]
    original = _web_url(result.get("url"))
    source = f'<span class="source" title="Where the take was read from">{escape(result["source"])}</span>' if result.get("source") else ""
    links = source + (f'<a href="{escape(original)}" target="_blank" rel="noopener noreferrer">Original post \u2197</a>' if original else "") + (
        f'<a href="{escape(thread)}" class="thread-link">Whole thread</a>'
    )
    weak = " weak" if any_strong is False and result.get("match", "strong") != "strong" else ""
    return (
        f'<li class="result{weak}" data-id="{escape(result["id"])}" data-thread="{escape(result["thread_id"])}" '
        f'data-date="{escape(result.get("date") or "")}">'
        f'<p class="meta">{"".join(meta)}</p>'
        f'<p class="take-text">{highlighted(result["text"], terms)}</p>'
        f'<div class="result-foot"><span class="relevance-score">{result["score"]:.2f}</span><span class="links">{links}</span></div>'
        "</li>"
    )


def render_page(served: Takes, query: str, filters: dict[str, str]) -> str:
    """index.html with the query's first results, the author suggestions and the highlighting rule filled in."""
    escape = html.escape
    skipped = STOPWORDS | common_words(served)
    body = None
    if query.strip():
        try:
            body = search_body(served, SearchParams(q=query, k=PAGE_K, **filters))
        except (ProjectError, ValidationError):
            body = None  # the script asks again and shows the server's message
    title = "takes: search AI-policy takes"
    description = "Semantic search over AI-policy takes."
    status = results = initial = ""
    weak_hidden = " hidden"
    if body is not None:
        title = f"{query.strip()} - takes"
        found = body["results"]
        terms = query_terms(query, skipped)
        # Results without `match` (an index served before the ranking had it) count as strong.
        any_strong = any(result.get("match", "strong") == "strong" for result in found)
        if found and not any_strong:
            weak_hidden = ""
        if found:
            status = f"{len(found)} take{'s' if len(found) != 1 else ''}"
            first = found[0]
            description = f"{first.get('author') or first.get('handle') or 'unknown author'}: {first['text'][:200]}"
        else:
            status = f"No takes match \u201c{query.strip()}\u201d."
        results = "".join(_result_html(result, terms, query.strip(), any_strong) for result in found)
        # The script renders from this instead of searching again; "<" escaped so no text ends the element.
        initial = json.dumps({"params": {"q": query.strip(), **filters}, "body": body}, ensure_ascii=False).replace("<", "\\u003c")
    authors = []
    for author in served.authors():
        for value in dict.fromkeys(v for v in (author.author, author.handle) if v):
            authors.append(f'<option value="{escape(value)}"></option>')
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    fills = {
        "{{title}}": escape(title),
        "{{description}}": escape(description),
        "{{q}}": escape(query),
        "{{author}}": escape(filters.get("author", "")),
        "{{since}}": escape(filters.get("since", "")),
        "{{until}}": escape(filters.get("until", "")),
        "{{stopwords}}": escape(" ".join(sorted(skipped))),
        "{{author_options}}": "".join(authors),
        "{{status}}": escape(status),
        "{{results}}": results,
        "{{intro_hidden}}": " hidden" if query.strip() else "",
        "{{initial}}": initial,
        "{{weak_hidden}}": weak_hidden,
    }
    return re.sub(r"\{\{\w+\}\}", lambda match: fills[match.group()], page)


@router.get("/", response_class=HTMLResponse)
async def page(request: Request, served: TakesDep, limiter: SearchLimiterDep) -> HTMLResponse:
    params = request.query_params
    filters = {name: params[name].strip() for name in ("author", "since", "until") if params.get(name, "").strip()}
    query = "" if params.get("thread") else params.get("q", "")
    # A search, when there is a query: a slot of the same limiter as /search.
    html_page = await anyio.to_thread.run_sync(render_page, served, query, filters, limiter=limiter)
    return HTMLResponse(html_page, headers=SECURITY_HEADERS)


@router.get("/static/{name}", response_class=FileResponse)
def static_file(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404, detail=f"no static file named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)
