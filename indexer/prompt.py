"""Takes rendered for a model: the API's fields with a citation, and the numbered, cited prompt block."""

from __future__ import annotations

from collections.abc import Sequence

from indexer.models import SearchResult, Take, citation

__all__ = ["cited", "prompt_block"]


def cited(item: SearchResult | Take) -> dict:
    """The API's fields of a result (or take) plus its ``citation``: what tools hand to a model."""
    take = item.take if isinstance(item, SearchResult) else item
    return {**item.to_dict(), "citation": citation(take)}


def prompt_block(results: Sequence[SearchResult | Take], query: str | None = None, *, title: str | None = None) -> str:
    """A numbered, cited plain-text block of takes, ready to paste into a prompt."""
    lines = [title or (f"Takes retrieved for: {query}" if query else "Takes:"), ""]
    if not results:
        lines.append("No takes match.")
    elif all(isinstance(item, SearchResult) and item.match == "weak" for item in results):
        # Said first, so a model reading the block does not take the closest for an answer.
        lines += ["No strong matches; the closest takes are:", ""]
    for number, item in enumerate(results, start=1):
        take = item.take if isinstance(item, SearchResult) else item
        weak = " (weak match)" if isinstance(item, SearchResult) and item.match == "weak" else ""
        lines.append(f"[{number}] {citation(take)}{weak}")
        lines.extend(f"    {line}" for line in take.text.splitlines() or [""])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
