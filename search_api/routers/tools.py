"""GET /tool.json: the search as a function definition for function-calling chat APIs."""

from __future__ import annotations

from fastapi import APIRouter

from indexer.search import MAX_K, MAX_QUERY_CHARS

router = APIRouter(tags=["tools"])

DESCRIPTION = (
    "Search AI-policy takes (short posts in threads, mostly Jack Clark's @jackclarkSF threads from "
    "2022-2023 on compute, evaluations, open models, regulation) by meaning. Write `q` as a plain "
    "natural-language question. Returns the best takes first, each with its text, author, handle, "
    "date, thread_id, position in the thread and a relevance score; call GET /search with these "
    "parameters (add format=context for a numbered, cited text block to paste into a prompt)."
)


def search_tool() -> dict:
    """A JSON Schema function definition in the shape OpenAI-style tool calling accepts."""
    date = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    return {
        "type": "function",
        "function": {
            "name": "search_takes",
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "q": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_QUERY_CHARS,
                        "description": "The question or topic, in plain natural language.",
                    },
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 8,
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
def tool_definition() -> dict:
    return search_tool()
