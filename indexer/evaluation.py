"""Graded-relevance evaluation: nDCG@10, recall@10 and MRR over judged queries.

Judgments name each relevant take by the start of its text (see the format in
``dev_queries.json``): both sides are lowercased and stripped to letters and
digits, and a take matches a key when the key's first 50 such characters occur
in it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from indexer.errors import ParseError

CUTOFF = 10
KEY_CHARS = 50


def fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass(frozen=True)
class Judged:
    query: str
    relevant: dict[str, int]  # folded key prefix -> grade


@dataclass(frozen=True)
class QueryScore:
    query: str
    ndcg: float
    recall: float
    reciprocal_rank: float


def load_judgments(path: Path | str) -> list[Judged]:
    """Read a judgments file; ParseError names the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ParseError(path, None, f"cannot read judgments: {error.strerror or error}") from error
    except json.JSONDecodeError as error:
        raise ParseError(path, error.lineno, f"not valid JSON: {error.msg}") from error
    queries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(queries, list):
        raise ParseError(path, None, 'expected an object with a "queries" list')
    judged = []
    for number, entry in enumerate(queries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) or not isinstance(entry.get("relevant"), dict):
            raise ParseError(path, None, f'query #{number}: expected {{"query": str, "relevant": {{text start: grade}}}}')
        relevant = {fold(key)[:KEY_CHARS]: int(grade) for key, grade in entry["relevant"].items()}
        judged.append(Judged(entry["query"], relevant))
    return judged


def score_ranking(judged: Judged, ranked_texts: Sequence[str], cutoff: int = CUTOFF) -> QueryScore:
    """Score one ranking. Each judged take earns its gain once, at its best rank."""
    found_rank: dict[str, int] = {}
    for rank, text in enumerate(ranked_texts[:cutoff], start=1):
        folded = fold(text)
        for key in judged.relevant:
            if key not in found_rank and key in folded:
                found_rank[key] = rank
    dcg = sum((2 ** judged.relevant[key] - 1) / math.log2(rank + 1) for key, rank in found_rank.items())
    ideal_grades = sorted(judged.relevant.values(), reverse=True)[:cutoff]
    ideal = sum((2**grade - 1) / math.log2(rank + 1) for rank, grade in enumerate(ideal_grades, start=1))
    relevant_keys = [key for key, grade in judged.relevant.items() if grade > 0]
    recall = sum(1 for key in relevant_keys if key in found_rank) / len(relevant_keys) if relevant_keys else 0.0
    top_ranks = [rank for key, rank in found_rank.items() if judged.relevant[key] == 2]
    reciprocal_rank = 1 / min(top_ranks) if top_ranks else 0.0
    return QueryScore(judged.query, dcg / ideal if ideal else 0.0, recall, reciprocal_rank)


def evaluate(judgments: Sequence[Judged], search: Callable[[str, int], Sequence[str]], cutoff: int = CUTOFF) -> list[QueryScore]:
    """Run every judged query through ``search(query, k) -> ranked texts`` and score it."""
    return [score_ranking(judged, search(judged.query, cutoff), cutoff) for judged in judgments]


METRICS = {"ndcg@10": "ndcg", "recall@10": "recall", "mrr": "reciprocal_rank"}


def mean(scores: Sequence[QueryScore]) -> dict[str, float]:
    count = len(scores) or 1
    return {metric: sum(getattr(s, field) for s in scores) / count for metric, field in METRICS.items()}


def bootstrap_interval(values: Sequence[float], *, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean, resampling queries (fixed seed: reruns agree)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (0.0, 0.0)
    means = values[np.random.default_rng(seed).integers(0, len(values), (samples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summary(scores: Sequence[QueryScore]) -> dict[str, dict[str, float]]:
    """Each metric's mean and its 95% bootstrap interval over the queries."""
    result = {}
    for metric, field in METRICS.items():
        values = [getattr(s, field) for s in scores]
        low, high = bootstrap_interval(values)
        result[metric] = {"mean": sum(values) / (len(values) or 1), "low": low, "high": high}
    return result


def paired_difference(first: Sequence[QueryScore], second: Sequence[QueryScore], metric: str = "ndcg@10") -> dict[str, float]:
    """Mean of ``second - first`` per query with its 95% bootstrap interval (same queries, same order)."""
    field = METRICS[metric]
    differences = [getattr(b, field) - getattr(a, field) for a, b in zip(first, second)]
    low, high = bootstrap_interval(differences)
    return {"mean": sum(differences) / (len(differences) or 1), "low": low, "high": high}
