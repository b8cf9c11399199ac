"""Fusion and calibration: every mode's results on one relevance scale from 0 to 1.

A candidate (a take in the dense or the lexical top 50) carries four pieces
of evidence, each on a scale that means the same from one query to the next:

- ``cosine``: the query's cosine with the take (unit vectors, so at most 1),
  less ``CENTRING`` times the take's cosine with the corpus's mean direction;
- ``lexical``: the take's BM25 divided by the query's *idf mass*, the sum of
  the inverse document frequencies of the query's content words, whether or
  not the corpus has them. A take that holds every rare word of the query
  scores about 1; one that shares only common words, or a query made of words
  the corpus has never seen ("zzqqxx"), scores near 0;
- ``late``: late interaction, MaxSim of the query's word tokens with the
  take's token vectors from the same model (``late_evidence``): a take that
  says each thing the query asks somewhere in it scores high even when its
  pooled vector is a blur of other things. Each query word may also find its
  match in the take's +-1 thread mates, at ``MATE_DISCOUNT`` of its cosine: a
  take is read with the ones around it;
- ``thread``: the best cosine of another candidate in the take's thread
  (``thread_evidence``): whether the thread around the take is about the
  query too.

The score is a calibrated estimate of relevance, ``P(relevant) =
sigmoid(bias + the weights times the evidence)``, fitted on graded judgments
(tests/data: the dev set, our own paraphrase queries and off-topic queries) by
``python -m bench.ranking_fit``, which also prints the cross-validated table in
docs/QUALITY.md. The weights come from a pairwise ranking fit (they order
takes within a query); the bias and scale from a Platt fit of those scores to
the judged labels (they say how likely a take at that score is to be
relevant). Each mode has its own fit over the evidence it has, so a score
means the same in hybrid, dense and lexical mode, with or without filters. A
result is a *strong* match when its score reaches ``STRONG``.
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
    late: float = 0.0  # late interaction (MaxSim over the query's word tokens)
    thread: float = 0.0  # the best cosine of another candidate in the take's thread (thread_evidence)


@dataclass(frozen=True, slots=True)
class Calibration:
    """``P(relevant) = sigmoid(bias + cosine * cosine_weight + lexical * lexical_weight)``."""

    bias: float
    cosine_weight: float
    lexical_weight: float
    late_weight: float = 0.0
    thread_weight: float = 0.0

    def score(self, candidate: Candidate) -> float:
        logit = (
            self.bias
            + self.cosine_weight * candidate.cosine
            + self.lexical_weight * candidate.lexical
            + self.late_weight * candidate.late
            + self.thread_weight * candidate.thread
        )
        # Written so that neither branch overflows for a large |logit|.
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        odds = math.exp(logit)
        return odds / (1.0 + odds)


# Fitted by `python -m bench.ranking_fit` on the int8 ONNX all-MiniLM-L6-v2
# index of the seed (its output, pasted). Other models place cosines
# differently; their scores still rank correctly but are calibrated for this
# one (docs/QUALITY.md, "Scores"). Cross-validated nDCG@10 of the hybrid fit:
# 0.943 dev, 0.770 our paraphrases (the first stage alone 0.924, 0.696).
# With late interaction and the thread in, BM25 adds little to the score
# (its weight fits near 0): MaxSim already sees a rare name's tokens. It
# still brings candidates the meaning misses.
CALIBRATIONS = {
    "hybrid": Calibration(bias=-5.436, cosine_weight=5.500, lexical_weight=0.271, late_weight=10.489, thread_weight=0.385),
    "dense": Calibration(bias=-5.484, cosine_weight=5.564, lexical_weight=0.000, late_weight=10.576, thread_weight=0.380),
    "lexical": Calibration(bias=-3.339, cosine_weight=0.000, lexical_weight=8.134),
}
# Without token vectors (Searcher(late_interaction=False), or an embedder that
# gives none): the pooled cosine and BM25 alone, fitted the same way.
FIRST_STAGE = {
    "hybrid": Calibration(bias=-3.030, cosine_weight=11.691, lexical_weight=2.400),
    "dense": Calibration(bias=-2.965, cosine_weight=11.440, lexical_weight=0.000),
    "lexical": CALIBRATIONS["lexical"],
}
# How much of a take's cosine with the corpus's mean direction is taken off
# its cosine with the query. Takes close to that direction ("Most technical
# people think policy can't matter for AI") are hubs: near every question
# about the field and the answer to none; the correction (CSLS-like hubness
# reduction, as mean-centring embeddings does) lifted our own paraphrase
# queries by 0.04 nDCG@10 without moving the dev set. Fitted with the weights.
CENTRING = 0.118
# How much of a take token's cosine with the corpus's mean direction is taken
# off its MaxSim similarities (late_evidence). 0: none. Cross-validated, 0.5
# lifts our paraphrase queries by 0.04 nDCG@10 but costs the dev set 0.008,
# takes one dev query to 0.05 below the blend before (the limit) and
# lets an off-topic query reach "strong"; the fit would choose it, we do not
# (bench.ranking_fit prints both; docs/QUALITY.md).
TOKEN_CENTRING = 0.0
# How much a query word's match in one of the take's +-1 thread mates counts
# against a match in the take itself (late_evidence): 0, the take alone; 1,
# the mates' words as the take's own. A take in a thread is read with the
# ones around it: "depriving people of the means of production (H100s)"
# answers "what about compute governance" with its mate's "compute" beside its
# own "policy" (6th-7th alone, 3rd with its mates). Fitted with the weights
# (bench.ranking_fit chooses it among 0, 0.5, 0.7, 0.85 and 1; docs/QUALITY.md).
MATE_DISCOUNT = 0.85
# Scores at or above this are strong matches: no off-topic query reaches it,
# every answer to a dev query ranked in the top 10 does (docs/QUALITY.md).
STRONG = 0.5


def maxsim(query_tokens: np.ndarray, take_tokens: np.ndarray) -> float:
    """Late interaction: each query token's best cosine with a token of the take, averaged (ColBERT's MaxSim)."""
    if not len(query_tokens) or not len(take_tokens):
        return 0.0
    # sum / count, not .mean(): the same value, and np.mean's overhead on an
    # array this small was 40% of a served search's MaxSim (docs/PERFORMANCE.md).
    best = word_matches(query_tokens, take_tokens)
    return float(best.sum()) / len(best)


def word_tokens(query_tokens: np.ndarray) -> np.ndarray:
    """The query's token vectors without the tokenizer's first and last markers ([CLS], [SEP]).

    Every text has the same two markers and their vectors carry the whole
    sentence, so in MaxSim they match every take's markers at about 0.75 and
    made up a third of a short query's evidence whatever its words; without
    them "GPU clusters for academic research" stopped losing its answer
    (cross-validated dev nDCG@10 +0.005, paraphrases +0.013; docs/QUALITY.md).
    """
    return query_tokens[1:-1] if len(query_tokens) > 2 else query_tokens


def late_evidence(
    query_tokens: np.ndarray,
    takes_tokens: Sequence[np.ndarray],
    centroid: np.ndarray | None = None,
    centring: float | None = None,
    mates: Sequence[Sequence[int]] | None = None,
    discount: float = MATE_DISCOUNT,
) -> np.ndarray:
    """MaxSim of the query's word tokens with each take's tokens (and, with ``mates``, its thread mates').

    With ``centroid`` (the corpus's mean direction), each similarity is less
    ``centring`` (default ``TOKEN_CENTRING``) times the take token's cosine
    with it: the hub correction of the dense evidence, at the token level.
    Tokens near that direction (punctuation, "the", "policy" in a corpus about
    policy) match every query word a little and every take has them; the
    correction is a shift of the query's tokens, so it costs nothing. A model
    that projects its pooled vectors (a Dense layer: 128 dimensions from
    384-dimensional tokens) has no mean direction in token space: no
    correction then.

    ``mates``: for each take, the positions in ``takes_tokens`` of its thread
    mates (``thread_mates``). Each query word's match is then the better of
    its best in the take and ``discount`` times its best in a mate: a window
    of the thread, the take's own words first.
    """
    query = word_tokens(query_tokens)
    shift = TOKEN_CENTRING if centring is None else centring
    if centroid is not None and shift and centroid.shape[-1] == query.shape[-1]:
        query = query - shift * centroid
    if not len(takes_tokens) or not len(query):
        return np.zeros(len(takes_tokens))
    # One small product a take: each query token's best match in the take.
    # Stacking every take's tokens into one product made it large enough for
    # OpenBLAS to split over its threads, which on a busy 2-core machine cost
    # 13-17 ms a search in process, not 0.5 (docs/PERFORMANCE.md, "Late
    # interaction at 100k").
    best = np.array([word_matches(query, tokens) for tokens in takes_tokens])  # (takes, query words)
    width = max(map(len, mates), default=0) if mates is not None and discount else 0
    if width:
        # Each take's mates' rows, padded with a row that matches nothing.
        nothing = len(best)
        around = np.array([list(near) + [nothing] * (width - len(near)) for near in mates])
        padded = np.vstack([best, np.full((1, best.shape[1]), -np.inf, dtype=best.dtype)])
        best = np.maximum(best, discount * padded[around].max(axis=1))
    return best.sum(axis=1) / best.shape[1]


def word_matches(query: np.ndarray, take_tokens: np.ndarray) -> np.ndarray:
    """Each query token's best cosine with a token of the take (0 for a take without tokens)."""
    if not len(take_tokens):
        return np.zeros(len(query), dtype=np.float32)
    return (query @ take_tokens.T).max(axis=1)


def thread_mates(places: Sequence[tuple[str, int]]) -> list[list[int]]:
    """For each (thread id, position), the indices of the others at position +-1 in the same thread."""
    at = {place: index for index, place in enumerate(places)}
    return [
        [at[(thread, position + step)] for step in (-1, 1) if (thread, position + step) in at]
        for thread, position in places
    ]


def thread_evidence(cosines: dict[int, float], threads: dict[int, str]) -> dict[int, float]:
    """For each candidate, the best cosine of another candidate in its thread; else the lowest cosine seen.

    A take in a thread that is otherwise about something else (a rare query
    word in a side remark) is less likely to answer than one whose thread
    mates also match: the thread is evidence about the take. Takes outside
    the candidates were not retrieved, so their cosine is at most the lowest
    one retrieved, which stands in for them (and for takes alone in a thread).
    """
    if not cosines:
        return {}
    floor = min(cosines.values())
    keys = {row_id: threads[row_id] if row_id in threads else f"row-{row_id}" for row_id in cosines}
    first: dict[str, float] = {}  # the best cosine per thread
    second: dict[str, float] = {}  # and the next best
    for row_id, cosine in cosines.items():
        key = keys[row_id]
        top = first.get(key)
        if top is None:
            first[key] = cosine
        elif cosine > top:
            first[key], second[key] = cosine, top
        elif cosine > second.get(key, -math.inf):
            second[key] = cosine
    evidence = {}
    for row_id, cosine in cosines.items():
        key = keys[row_id]
        top = first[key]
        # The best other one: the second best when this take is the best.
        other = second.get(key, floor) if top == cosine else top
        evidence[row_id] = max(other, floor)
    return evidence


def match_label(score: float) -> str:
    """``strong`` or ``weak``: what a person or a chatbot should make of a score."""
    return "strong" if score >= STRONG else "weak"


def idf(total: int, containing: int) -> float:
    """BM25's inverse document frequency, as SQLite FTS5 computes it (floored just above 0)."""
    return max(math.log((total - containing + 0.5) / (containing + 0.5)), 1e-6)


def idf_mass(total: int, document_counts: Iterable[int]) -> float:
    """The sum of the idf of the query's content words: BM25's scale for this query."""
    return sum(idf(total, count) for count in document_counts)


def fuse(candidates: Sequence[Candidate], mode: str, *, late: bool = True) -> list[tuple[int, float]]:
    """(row id, calibrated score) best first, for ``mode``'s calibration (``late``: the candidates carry late and thread evidence)."""
    calibration = (CALIBRATIONS if late else FIRST_STAGE)[mode]
    scored = [(candidate.row_id, calibration.score(candidate)) for candidate in candidates]
    # Ties (a take scored the same twice over) keep retrieval order: stable sort.
    scored.sort(key=lambda item: item[1], reverse=True)
    return scored


__all__ = [
    "CALIBRATIONS", "FIRST_STAGE", "MATE_DISCOUNT", "Calibration", "Candidate", "STRONG", "fuse", "idf", "idf_mass",
    "late_evidence", "match_label", "maxsim", "thread_evidence", "thread_mates", "word_matches", "word_tokens",
]
