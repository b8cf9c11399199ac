"""GET /tool.json: the search as a function definition for function-calling chat APIs."""

from __future__ import annotations

from fastapi import APIRouter

from indexer.api import Takes
from indexer.models import author_label
from indexer.query_limits import MAX_K, MAX_QUERY_CHARS, PROMPT_K
from search_api.dependencies import TakesDep

router = APIRouter(tags=["tools"])

USAGE = (
    "Write `q` as a plain natural-language question. Returns the best takes first, each with its text, "
    "author, handle, date, thread_id, position in the thread and a relevance score; call GET /search with "
    "these parameters (add format=context for a numbered, cited text block to paste into a prompt)."
)
# Authors named in the description; the rest are counted.
AUTHORS_NAMED = 3


def describe_corpus(served: Takes) -> str:
    """One sentence on what this index holds: counts, the main authors, the date range."""
    authors = served.authors()
    threads = served.threads()
    takes = sum(author.takes for author in authors)
    if not takes:
        return "The index is empty: it holds no takes yet."
    names = [author_label(author.author, author.handle) for author in authors[:AUTHORS_NAMED] if author.author or author.handle]
    if len(authors) > AUTHORS_NAMED:
        names.append(f"{len(authors) - AUTHORS_NAMED} more")
    by = ""
    if names:
        by = " by " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
    dates = sorted(thread.date[:10] for thread in threads if thread.date)
    when = ""
    if dates:
        when = f", dated {dates[0]}" if dates[0] == dates[-1] else f", dated {dates[0]} to {dates[-1]}"
    return (
        f"{takes} take{'s' if takes != 1 else ''} in {len(threads)} thread{'s' if len(threads) != 1 else ''}{by}{when}"
    )


def search_tool(corpus: str | None = None) -> dict:
    """A JSON Schema function definition in the shape OpenAI-style tool calling accepts.

    ``corpus`` (from ``describe_corpus``) says what the index holds, so a
    model knows when the tool can help.
    """
    held = f" The index holds {corpus}." if corpus else ""
    description = f"Search AI-policy takes (short posts in threads) by meaning.{held} {USAGE}"
    date = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    return {
        "type": "function",
        "function": {
            "name": "search_takes",
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "q": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_QUERY_CHARS,
                        "description": "The question or topic, in plain natural language.",
                    },
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": PROMPT_K,
                          "description": f"How many takes to return (1 to {MAX_K})."},
                    "author": {"type": "string", "description": "Only takes by this author name or handle."},
                    "since": {**date, "description": "Only takes dated on or after this ISO date (YYYY-MM-DD)."},
                    "until": {**date, "description": "Only takes dated on or before this ISO date (YYYY-MM-DD)."},
                },
                "required": ["q"],
                "additionalProperties": False,
            },
        },
    }


@router.get("/tool.json", summary="The search as a function-calling tool definition")
def tool_definition(served: TakesDep) -> dict:
    # Counting scans every take: once per generation, not per request.
    key = (str(served.index_dir), served.generation)
    if key not in _described:
        _described.clear()
        _described[key] = describe_corpus(served)
    return search_tool(_described[key])


_described: dict[tuple[str, int], str] = {}
