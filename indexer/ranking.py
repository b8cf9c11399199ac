"""Fusion and calibration: every mode's results on one relevance scale from 0 to 1.

A candidate carries two pieces of evidence, both on scales that mean the same
thing from one query to the next:

- ``cosine``: the query's cosine with the take (unit vectors, so at most 1);
- ``lexical``: the take's BM25 divided by the query's *idf mass*, the sum of
  the inverse document frequencies of the query's content words, whether or
  not the corpus has them. A take that holds every rare word of the query
  scores about 1; one that shares only common words, or a query made of words
  the corpus has never seen ("zzqqxx"), scores near 0. Dividing by the
  query's own best BM25 instead (the fusion before this one) made the best
  lexical match worth 1 on every query, so a take that matched only "change"
  in "how do I change a tire" looked as good as an exact name.

The score is a calibrated estimate of relevance,
``P(relevant) = sigmoid(bias + cosine_weight * cosine + lexical_weight * lexical)``,
fitted on graded judgments (tests/data: the dev set, our own paraphrase
queries and off-topic queries) by ``python -m bench.ranking_fit``, which also
prints the cross-validated table in docs/QUALITY.md. The weights come from a
pairwise ranking fit (they order takes within a query); the bias and scale
from a Platt fit of those scores to the judged labels (they say how likely a
take at that score is to be relevant). Each mode has its own fit over the
evidence it has, so a score means the same in hybrid, dense and lexical
mode, with or without filters. A result is a *strong* match when its score
reaches ``STRONG``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class Candidate:
    """One take's evidence for one query."""

    row_id: int
    cosine: float
    lexical: float  # BM25 / the query's idf mass; 0 when no query word matched
    late: float = 0.0  # late interaction (MaxSim), when that second stage is on


@dataclass(frozen=True, slots=True)
class Calibration:
    """``P(relevant) = sigmoid(bias + cosine * cosine_weight + lexical * lexical_weight)``."""

    bias: float
    cosine_weight: float
    lexical_weight: float
    late_weight: float = 0.0

    def score(self, candidate: Candidate) -> float:
        logit = (
            self.bias
            + self.cosine_weight * candidate.cosine
            + self.lexical_weight * candidate.lexical
            + self.late_weight * candidate.late
        )
        # Written so that neither branch overflows for a large |logit|.
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        odds = math.exp(logit)
        return odds / (1.0 + odds)


# Fitted by `python -m bench.ranking_fit` on the int8 ONNX all-MiniLM-L6-v2
# index of the seed (its output, pasted). Other models place cosines
# differently; their scores still rank correctly but are calibrated for this
# one (docs/QUALITY.md, "Scores").
CALIBRATIONS = {
    "hybrid": Calibration(bias=-3.028, cosine_weight=11.700, lexical_weight=2.428),
    "dense": Calibration(bias=-2.965, cosine_weight=11.459, lexical_weight=0.000),
    "lexical": Calibration(bias=-3.338, cosine_weight=0.000, lexical_weight=8.131),
}
# The opt-in second stage (Searcher(late_interaction=True)): the fused top
# RERANK_DEPTH re-scored with MaxSim as a third piece of evidence. Fitted the
# same way (`python -m bench.ranking_fit --late-interaction`): cross-validated
# nDCG@10 0.938 dev, 0.743 own paraphrases (first stage alone 0.924, 0.696).
LATE_INTERACTION = Calibration(bias=-5.870, cosine_weight=6.063, lexical_weight=0.528, late_weight=10.137)
# How much of a take's cosine with the corpus's mean direction is taken off
# its cosine with the query. Takes close to that direction ("Most technical
# people think policy can't matter for AI") are hubs: near every question
# about the field and the answer to none; the correction (CSLS-like hubness
# reduction, as mean-centring embeddings does) lifted our own paraphrase
# queries by 0.04 nDCG@10 without moving the dev set. Fitted with the weights.
CENTRING = 0.118
# Scores at or above this are strong matches: no off-topic query reaches it,
# every answer to a dev query ranked in the top 10 does (docs/QUALITY.md).
STRONG = 0.5


def maxsim(query_tokens: np.ndarray, take_tokens: np.ndarray) -> float:
    """Late interaction: each query token's best cosine with a token of the take, averaged (ColBERT's MaxSim)."""
    if not len(query_tokens) or not len(take_tokens):
        return 0.0
    return float((query_tokens @ take_tokens.T).max(axis=1).mean())


def match_label(score: float) -> str:
    """``strong`` or ``weak``: what a person or a chatbot should make of a score."""
    return "strong" if score >= STRONG else "weak"


def idf(total: int, containing: int) -> float:
    """BM25's inverse document frequency, as SQLite FTS5 computes it (floored just above 0)."""
    return max(math.log((total - containing + 0.5) / (containing + 0.5)), 1e-6)


def idf_mass(total: int, document_counts: Iterable[int]) -> float:
    """The sum of the idf of the query's content words: BM25's scale for this query."""
    return sum(idf(total, count) for count in document_counts)


def fuse(candidates: Sequence[Candidate], mode: str) -> list[tuple[int, float]]:
    """(row id, calibrated score) best first, for ``mode``'s calibration."""
    calibration = CALIBRATIONS[mode]
    scored = [(candidate.row_id, calibration.score(candidate)) for candidate in candidates]
    # Ties (a take scored the same twice over) keep retrieval order: stable sort.
    scored.sort(key=lambda item: item[1], reverse=True)
    return scored


__all__ = ["CALIBRATIONS", "Calibration", "Candidate", "STRONG", "fuse", "idf", "idf_mass", "match_label"]
