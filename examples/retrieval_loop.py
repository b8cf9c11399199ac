"""Retrieval for a chatbot, end to end and offline: question -> search tool -> cited prompt.

    python examples/retrieval_loop.py "what about compute governance"
    python examples/retrieval_loop.py --url http://127.0.0.1:8000 "open models"   # against `takes serve`

A real bot would hand the tool definition (GET /tool.json) to its LLM, let the
model choose the arguments, run the call, and put the result into the next
prompt. Here the "model" always calls the tool with the question as is, and
the assembled prompt is printed instead of being sent anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_QUESTION = "what about compute governance"
DEFAULT_INDEX = Path(__file__).resolve().parent.parent / "data" / "index"

PROMPT = """Answer the question using only the takes below. Cite the takes you rely on by their
number and citation, e.g. [2]. If they do not answer it, say so.

{context}
Question: {question}
Answer:"""


def search_in_process(index_dir: Path):
    """The search tool through the Python API: the model and index load once."""
    from indexer.api import Takes, prompt_block

    takes = Takes(index_dir)

    def search_takes(q: str, k: int = 5, **filters) -> str:
        return prompt_block(takes.search(q, k, **filters), q)

    return search_takes


def search_over_http(base_url: str):
    """The same tool over HTTP: GET /search with format=context returns the cited block."""

    def search_takes(q: str, k: int = 5, **filters) -> str:
        query = urllib.parse.urlencode({"q": q, "k": k, "format": "context", **filters})
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/search?{query}", timeout=60) as response:
            return response.read().decode("utf-8")

    return search_takes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=DEFAULT_QUESTION)
    parser.add_argument("-k", type=int, default=5, help="how many takes to retrieve")
    parser.add_argument("--url", help="search a running `takes serve` instead of loading the index here")
    parser.add_argument("--index-dir", type=Path, default=Path(os.environ.get("TAKES_INDEX_DIR", DEFAULT_INDEX)),
                        help="index to load in-process (env TAKES_INDEX_DIR)")
    args = parser.parse_args(argv)

    tools = {"search_takes": search_over_http(args.url) if args.url else search_in_process(args.index_dir)}
    # The call an LLM would emit after reading the tool definition.
    call = {"name": "search_takes", "arguments": json.dumps({"q": args.question, "k": args.k})}
    context = tools[call["name"]](**json.loads(call["arguments"]))
    print(PROMPT.format(context=context, question=args.question))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
