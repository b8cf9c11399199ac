"""Fit and cross-validate the relevance scale of indexer/ranking.py.

Run: ``.venv/bin/python -m bench.ranking_fit [--backend onnx|torch] [--index-dir DIR]``.

Builds (or reuses) an index of the bundled seed, asks the product's own
Searcher for each judged query's hybrid candidates and their evidence, then:

1. scores the ranking methods by 5-fold cross-validation over the judged
   queries (dev set and our own paraphrase queries; four repeats with
   different folds): parameters are fitted on four folds and scored on the
   fifth, so no figure is of a query its parameters saw;
   the rows "the same, ... contextual tokens" are late chunking, tried and
   not kept (docs/QUALITY.md, "Contextual token vectors"), and the ranks of
   the answers to "what about compute governance" are printed for them;
   the rows "the same, ... thread mates" are thread-aware scoring by the
   take's length and its +-1 thread mates, tried and not kept
   (docs/QUALITY.md, "Thread-aware scoring"), ranks printed the same way;
2. checks the strong/weak signal the same way: off-topic queries with a
   strong result, and answers (grade 2) in a dev top 10 that are not strong;
3. fits the final constants on every query and prints them for
   ``CALIBRATIONS`` (and ``MATE_DISCOUNT``, the weight of a query word's
   match in a take's +-1 thread mates, chosen among MATE_DISCOUNTS by the
   same in-sample nDCG as on each training fold) in indexer/ranking.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from indexer.evaluation import Judged, fold, load_judgments, score_ranking
from indexer.ranking import MATE_DISCOUNT, STRONG, TOKEN_CENTRING, Calibration, Candidate
from indexer.serving import Searcher
from indexer.storage import Filters

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
# The token centrings of late interaction that the fit chooses among (indexer/ranking.py, TOKEN_CENTRING).
TOKEN_CENTRINGS = (0.0, 0.25, 0.5, 0.75)
# How much a query word's match in a +-1 thread mate counts in a take's MaxSim (indexer/ranking.py,
# MATE_DISCOUNT): chosen among these on the training queries, like the other parameters. 0: the take alone.
MATE_DISCOUNTS = (0.0, 0.5, 0.7, 0.85, 1.0)
# Contextual ("late chunking") token vectors, tried and not kept (docs/QUALITY.md): the thread
# neighbours each side of a take in its window (None: as much of the thread as fits), and the
# most tokens a window holds, its markers included (all-MiniLM-L6-v2's sequence limit).
CONTEXT_RADII = (1, 2, None)
CONTEXT_TOKENS = 256
FOLDS, REPEATS = 5, 4


@dataclass
class Judgment:
    judged: Judged
    kind: str  # dev | own | offtopic
    # (candidates, 4 + len(TOKEN_CENTRINGS) + len(CONTEXT_RADII)): cosine, lexical, cosine with
    # the corpus's mean direction, MaxSim over the query's word tokens for each token centring,
    # MaxSim over all its tokens uncentred (the markers too: the opt-in stage before), MaxSim over
    # the query's word tokens and the takes' contextual token vectors for each context radius, then
    # the product's MaxSim with the +-1 thread mates among the candidates for each token centring
    # and each mate discount (WINDOWS_RAW)
    features: np.ndarray
    grades: np.ndarray
    texts: list[str]
    threads: list[str] | None = None
    # Per candidate: its token count (markers left out), its +-1 thread mates among the candidates
    # (ranking.thread_mates), and the best cosine of each of the query's word tokens with its tokens
    # (MaxSim before the mean): the thread-aware variants tried (THREAD_VARIANTS).
    lengths: np.ndarray | None = None
    mates: list[list[int]] | None = None
    per_token: np.ndarray | None = None


def judged_queries() -> list[tuple[str, Judged]]:
    queries = [("dev", j) for j in load_judgments(DATA / "dev_queries.json")]
    queries += [("own", j) for j in load_judgments(DATA / "paraphrase_queries.json")]
    offtopic = json.loads((DATA / "offtopic_queries.json").read_text(encoding="utf-8"))["queries"]
    return queries + [("offtopic", Judged(query, {})) for query in offtopic]


def context_window(counts: list[int], index: int, radius: int | None) -> list[int]:
    """Positions of the takes in take ``index``'s window: up to ``radius`` each side, nearest first, the one before first, within CONTEXT_TOKENS.

    A neighbour too long for what is left is passed over; one farther out may still fit.
    """
    budget = CONTEXT_TOKENS - 2 - counts[index]  # the window's [CLS] and [SEP]
    if budget < 0:
        return [index]
    chosen = [index]
    for step in range(1, (len(counts) if radius is None else radius) + 1):
        for neighbour in (index - step, index + step):
            if 0 <= neighbour < len(counts) and counts[neighbour] <= budget:
                chosen.append(neighbour)
                budget -= counts[neighbour]
    return sorted(chosen)


def contextual_tokens(embedder, snapshot, radius: int | None) -> dict[str, np.ndarray]:
    """Each take's contextual token vectors, by text: one pass over its window of the thread, the take's span kept.

    Late chunking (Günther et al. 2024): the window depends on the take's
    thread and position only. A WordPiece tokenizer splits texts joined by
    white space into their own tokens, concatenated, so the take's span
    starts after its predecessors' counts; when the total says otherwise,
    the take's own vectors stand in.
    """
    result = {}
    for summary in snapshot.threads(Filters()):
        thread = [take.text for take in snapshot.thread(summary.thread_id)]
        own = embedder.token_vectors(thread)
        counts = [len(tokens) - 2 for tokens in own]
        for index, text in enumerate(thread):
            chosen = context_window(counts, index, radius)
            result[text] = own[index]
            if len(chosen) > 1:
                tokens = embedder.token_vectors(["\n".join(thread[j] for j in chosen)])[0]
                start = 1 + sum(counts[j] for j in chosen if j < index)
                if len(tokens) == 2 + sum(counts[j] for j in chosen):
                    result[text] = tokens[start : start + counts[index]]
    return result


def collect(searcher: Searcher) -> list[Judgment]:
    """Each judged query's candidates and their evidence (the columns of ``Judgment.features``)."""
    from indexer.ranking import late_evidence, maxsim, thread_mates, word_matches, word_tokens

    snapshot = searcher.snapshot
    collected = []
    token_cache: dict[str, np.ndarray] = {}
    in_context = {radius: contextual_tokens(searcher.embedder, snapshot, radius) for radius in CONTEXT_RADII}
    for kind, judged in judged_queries():
        # Raw cosines (no centring): the fit chooses how much of the hub direction to take off.
        candidates: list[Candidate] = searcher.ranker.candidates(judged.query, "hybrid", 50, Filters(), snapshot, centring=0.0)
        takes = snapshot.takes([c.row_id for c in candidates])
        texts = [takes[c.row_id].text for c in candidates]
        grades = np.array(
            [max((g for key, g in judged.relevant.items() if key in fold(text)), default=0) for text in texts], float
        )
        hub = snapshot.inner_products(snapshot.mean_direction(), [c.row_id for c in candidates])
        features = np.array([[c.cosine, c.lexical, hub[c.row_id]] for c in candidates], float)
        query_tokens = searcher.embedder.token_vectors([judged.query])[0]
        for text in texts:
            if text not in token_cache:
                token_cache[text] = searcher.embedder.token_vectors([text])[0]
        takes_tokens = [token_cache[text] for text in texts]
        centroid = snapshot.mean_direction()
        words = [late_evidence(query_tokens, takes_tokens, centroid, centring) for centring in TOKEN_CENTRINGS]
        every_token = np.array([maxsim(query_tokens, tokens) for tokens in takes_tokens])
        contextual = [
            late_evidence(query_tokens, [in_context[radius][text] for text in texts], centroid, TOKEN_CENTRING)
            for radius in CONTEXT_RADII
        ]
        threads = [takes[c.row_id].thread_id for c in candidates]
        mates = thread_mates([(takes[c.row_id].thread_id, takes[c.row_id].position) for c in candidates])
        windows = [
            late_evidence(query_tokens, takes_tokens, centroid, centring, mates=mates, discount=discount)
            for centring in TOKEN_CENTRINGS for discount in MATE_DISCOUNTS
        ]
        features = np.column_stack([features, *words, every_token, *contextual, *windows])
        lengths = np.array([len(tokens) - 2 for tokens in takes_tokens])
        query_words = word_tokens(query_tokens)
        per_token = np.array([word_matches(query_words, tokens) for tokens in takes_tokens])
        collected.append(Judgment(judged, kind, features, grades, texts, threads, lengths, mates, per_token))
    return collected


def ndcg(judgment: Judgment, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")[:10]
    return score_ranking(judgment.judged, [judgment.texts[i] for i in order]).ndcg


def before(judgment: Judgment) -> np.ndarray:
    """The fusion this replaces: 0.9 x cosine + 0.1 x BM25 / the query's best BM25."""
    lexical = judgment.features[:, 1]
    best = lexical.max() if lexical.max() > 0 else 1.0
    return 0.9 * judgment.features[:, 0] + 0.1 * lexical / best


def fit_direction(train: list[Judgment], columns: list[int], regularization: float = 1.0) -> np.ndarray:
    """Weights that order the judged takes of each query: logistic regression on pairwise differences."""
    from sklearn.linear_model import LogisticRegression

    rows, labels = [], []
    for judgment in train:
        x, grades = judgment.features[:, columns], judgment.grades
        for better in np.flatnonzero(grades > 0):
            for worse in np.flatnonzero(grades < grades[better]):
                rows += [x[better] - x[worse], x[worse] - x[better]]
                labels += [1, 0]
    model = LogisticRegression(C=regularization, fit_intercept=False, max_iter=5000).fit(np.array(rows), labels)
    return model.coef_[0]


# Columns of the centred judgments (the product's evidence): what each Calibration weight multiplies.
COSINE, LEXICAL, LATE, THREAD, LATE_EVERY_TOKEN = range(5)
_WEIGHT_OF = {COSINE: "cosine_weight", LEXICAL: "lexical_weight", LATE: "late_weight", THREAD: "thread_weight", LATE_EVERY_TOKEN: "late_weight"}


def fit_calibration(train: list[Judgment], columns: list[int]) -> Calibration:
    """``fit_logistic`` over ``columns`` of the centred judgments, as the product's Calibration."""
    bias, weights = fit_logistic(train, columns)
    named = {_WEIGHT_OF[column]: float(weight) for column, weight in zip(columns, weights)}
    return Calibration(bias=bias, **{"cosine_weight": 0.0, "lexical_weight": 0.0, **named})


def fit_logistic(train: list[Judgment], columns: list[int]) -> tuple[float, np.ndarray]:
    """(bias, weights of ``columns``): direction from the pairwise fit, scale from a Platt fit, centre at the strong threshold.

    The Platt fit of P(grade >= 1) gives the slope: how fast relevance grows
    with the evidence. The centre (score 0.5) is put halfway, in logits,
    between the best-scoring off-topic take and the worst-scoring answer
    (grade 2) above it that a dev query ranks in its top 10 (our own
    paraphrase answers score lower and would pull the line into the
    off-topic takes), so that
    0.5 is the line between a strong match and a weak one.
    """
    from sklearn.linear_model import LogisticRegression

    direction = fit_direction(train, columns) if len(columns) > 1 else np.ones(1)
    scores = [j.features[:, columns] @ direction for j in train]
    labels = np.concatenate([j.grades >= 1 for j in train]).astype(int)
    platt = LogisticRegression(C=100.0, max_iter=5000).fit(np.concatenate(scores)[:, None], labels)
    scale = float(platt.coef_[0][0])
    offtopic = max(s.max() for s, j in zip(scores, train) if j.kind == "offtopic" and len(s))
    answers = [
        s[i] for s, j in zip(scores, train) if j.kind == "dev" for i in np.argsort(-s)[:10] if j.grades[i] == 2
    ]
    # Answers below every off-topic take cannot be told from noise: they stay weak.
    centre = (offtopic + min((a for a in answers if a > offtopic), default=offtopic)) / 2
    return -centre * scale, direction * scale


def fit_centring(train: list[Judgment]) -> float:
    """How much of the hub direction to take off the cosine: the pairwise fit's ratio of the two weights."""
    weights = fit_direction(train, [0, 1, 2])
    return float(-weights[2] / weights[0])


# Raw columns of Judgment.features past the centred MaxSims.
EVERY_TOKEN_RAW = 3 + len(TOKEN_CENTRINGS)
WINDOWS_RAW = EVERY_TOKEN_RAW + 1 + len(CONTEXT_RADII)


def window_column(token_centring: float, discount: float) -> int:
    """The raw column of the MaxSim with thread mates at ``token_centring`` and ``discount``."""
    return WINDOWS_RAW + TOKEN_CENTRINGS.index(token_centring) * len(MATE_DISCOUNTS) + MATE_DISCOUNTS.index(discount)

# Which token vectors of the takes a MaxSim reads: their own (the product's), their contextual
# ones only, or the better of the two MaxSims.
OWN, CONTEXTUAL, BETTER = "own", "contextual", "better"


def centred(
    judgments: list[Judgment], centring: float, token_centring: float = TOKEN_CENTRING, tokens: str = OWN, radius: int | None = 1,
    discount: float = MATE_DISCOUNT,
) -> list[Judgment]:
    """The judgments with the product's evidence, in the columns named above (``tokens``, ``radius``: late evidence tried)."""
    from indexer.ranking import thread_evidence

    result = []
    for j in judgments:
        cosine = j.features[:, 0] - centring * j.features[:, 2]
        evidence = thread_evidence(dict(enumerate(cosine.tolist())), dict(enumerate(j.threads)))
        thread = np.array([evidence[i] for i in range(len(cosine))])
        late = j.features[:, window_column(token_centring, discount)]
        if tokens != OWN:  # measured at TOKEN_CENTRING only
            contextual = j.features[:, EVERY_TOKEN_RAW + 1 + CONTEXT_RADII.index(radius)]
            late = contextual if tokens == CONTEXTUAL else np.maximum(late, contextual)
        features = np.column_stack([cosine, j.features[:, 1], late, thread, j.features[:, EVERY_TOKEN_RAW]])
        result.append(replace(j, features=features))
    return result


def calibrated(calibration: Calibration, judgment: Judgment, late_column: int = LATE) -> np.ndarray:
    """Scores of the centred ``judgment``'s candidates (MaxSim read from ``late_column``)."""
    x = judgment.features
    logits = (
        calibration.bias
        + calibration.cosine_weight * x[:, COSINE]
        + calibration.lexical_weight * x[:, LEXICAL]
        + calibration.late_weight * x[:, late_column]
        + calibration.thread_weight * x[:, THREAD]
    )
    return 1 / (1 + np.exp(-logits))


def calibrated_method(
    columns: list[int], late_column: int = LATE, token_centring: float | None = 0.0, tokens: str = OWN, radius: int | None = 1,
    discount: float | None = MATE_DISCOUNT,
):
    """Fit the centring and a calibration over ``columns`` on the training queries; score every candidate.

    ``token_centring`` or ``discount`` None: chosen among TOKEN_CENTRINGS
    (MATE_DISCOUNTS) on the training queries (their mean nDCG@10 in-sample),
    like every other parameter. ``method.chosen`` lists the choices.
    """

    def fitted(train: list[Judgment], centring: float, token: float, mate: float):
        calibration = fit_calibration(centred(train, centring, token, tokens, radius, mate), columns)
        return lambda j: calibrated(calibration, centred([j], centring, token, tokens, radius, mate)[0], late_column)

    def method(train: list[Judgment]):
        centring = fit_centring(train)
        judged = [j for j in train if j.kind != "offtopic"]
        choices = [
            (token, mate)
            for token in (TOKEN_CENTRINGS if token_centring is None else (token_centring,))
            for mate in (MATE_DISCOUNTS if discount is None else (discount,))
        ]
        scorers = {choice: fitted(train, centring, *choice) for choice in choices}
        best = max(choices, key=lambda choice: np.mean([ndcg(j, scorers[choice](j)) for j in judged])) if len(choices) > 1 else choices[0]
        method.chosen.append(best)
        return scorers[best]

    method.chosen = []
    return method


def two_stage_method(train: list[Judgment]):
    """The opt-in stage before: the first stage's top 30 re-scored with MaxSim over every query token."""
    centring = fit_centring(train)
    product = centred(train, centring)
    first = fit_calibration(product, [COSINE, LEXICAL])
    late = fit_calibration(product, [COSINE, LEXICAL, LATE_EVERY_TOKEN])

    def score(judgment: Judgment) -> np.ndarray:
        features = centred([judgment], centring)[0]
        first_scores = calibrated(first, features)
        head = np.argsort(-first_scores, kind="stable")[:30]
        scores = first_scores - 2.0  # the rest stay below every re-scored take
        scores[head] = calibrated(late, features, LATE_EVERY_TOKEN)[head]
        return scores

    return score


# Thread-aware scoring by length, tried and not kept, on the default before the thread mates
# joined the MaxSim (docs/QUALITY.md, "Thread-aware scoring"):
# short takes lean on the ones around them, so the evidence of a take's thread mates counts more
# the shorter it is. Its shortness is 1 - min(tokens / the corpus's median token count, 1): 0 for
# a take of typical length or longer. Each variant's extra evidence gets its own fitted weight.
def window_maxsim(judgment: Judgment) -> np.ndarray:
    """MaxSim over the take's tokens and its +-1 thread mates' (own token vectors): each query word's best match in the window."""
    per_token = judgment.per_token
    return np.array([per_token[[i, *mates]].max(axis=0).mean() for i, mates in enumerate(judgment.mates)])


def shortness(judgment: Judgment, typical: float) -> np.ndarray:
    return 1 - np.minimum(judgment.lengths / typical, 1.0)


def _thread_times_shortness(j: Judgment, typical: float) -> np.ndarray:
    return np.column_stack([j.features[:, :4], j.features[:, THREAD] * shortness(j, typical)])


def _late_blended_with_mates(j: Judgment, typical: float) -> np.ndarray:
    late, short = j.features[:, LATE], shortness(j, typical)
    mates = np.array([max([late[k] for k in m], default=late[i]) for i, m in enumerate(j.mates)])
    features = j.features[:, :4].copy()
    features[:, LATE] = (1 - short) * late + short * np.maximum(late, mates)
    return features


def _window_maxsim(j: Judgment, typical: float) -> np.ndarray:
    return np.column_stack([j.features[:, :4], window_maxsim(j)])


THREAD_VARIANTS = {
    "thread evidence x the take's shortness, its own weight": _thread_times_shortness,
    "MaxSim blended with the better of its +-1 thread mates' by shortness": _late_blended_with_mates,
    "window MaxSim (the take's and its +-1 thread mates' tokens), its own weight": _window_maxsim,
}


def typical_length(judgments: list[Judgment]) -> float:
    """The median token count of the takes the judgments' candidates hold (on the seed: every take)."""
    lengths = {text: n for j in judgments for text, n in zip(j.texts, j.lengths)}
    return float(np.median(list(lengths.values())))


def thread_variant_method(variant):
    """Like ``calibrated_method`` over the default's evidence, with ``variant``'s (THREAD_VARIANTS) in its columns."""

    def method(train: list[Judgment]):
        centring, typical = fit_centring(train), typical_length(train)

        def features(judgments: list[Judgment]) -> list[Judgment]:
            return [replace(j, features=variant(j, typical)) for j in centred(judgments, centring, discount=0.0)]

        product = features(train)
        bias, weights = fit_logistic(product, list(range(product[0].features.shape[1])))
        return lambda j: 1 / (1 + np.exp(-(bias + features([j])[0].features @ weights)))

    return method


def strong_report(calibration: Calibration, judgments: list[Judgment], threshold: float = STRONG) -> tuple[int, int, int]:
    """(off-topic queries with a strong result, dev answers in a top 10, of those not strong)."""
    return signal_report(lambda j: calibrated(calibration, j), judgments, threshold)


def signal_report(scorer, judgments: list[Judgment], threshold: float = STRONG) -> tuple[int, int, int]:
    """``strong_report`` for any ``scorer`` (a judgment's scores)."""
    offtopic_strong = answers = weak_answers = 0
    for judgment in judgments:
        scores = scorer(judgment)
        top = np.argsort(-scores, kind="stable")[:10]
        if judgment.kind == "offtopic":
            offtopic_strong += bool((scores[top] >= threshold).any())
        elif judgment.kind == "dev":
            for index in top:
                if judgment.grades[index] == 2:
                    answers += 1
                    weak_answers += scores[index] < threshold
    return offtopic_strong, answers, weak_answers


def cross_validated_signal(judgments: list[Judgment], method) -> np.ndarray:
    """``signal_report`` summed over five folds, each scored by ``method`` fitted on the other four (half the off-topic queries each side)."""
    judged = [j for j in judgments if j.kind != "offtopic"]
    offtopic = [j for j in judgments if j.kind == "offtopic"]
    totals = np.zeros(3, int)
    for number in range(FOLDS):
        train = [j for i, j in enumerate(judged) if i % FOLDS != number] + offtopic[number % 2 :: 2]
        test = [j for i, j in enumerate(judged) if i % FOLDS == number] + offtopic[1 - number % 2 :: 2]
        totals += signal_report(method(train), test)
    return totals


def cross_validate(judgments: list[Judgment], method) -> dict[str, float]:
    judged = [j for j in judgments if j.kind != "offtopic"]
    offtopic = [j for j in judgments if j.kind == "offtopic"]
    scores: dict[str, list[float]] = {}
    for repeat in range(REPEATS):
        order = np.random.default_rng(repeat).permutation(len(judged))
        for number in range(FOLDS):
            held_out = set(order[number::FOLDS].tolist())
            train = [j for i, j in enumerate(judged) if i not in held_out] + offtopic
            scorer = method(train)
            for index in held_out:
                judgment = judged[index]
                scores.setdefault(judgment.judged.query, []).append(ndcg(judgment, scorer(judgment)))
    return {query: float(np.mean(values)) for query, values in scores.items()}


def build_seed_index(backend: str) -> Path:
    from embeddings import DEFAULT_MODEL, load_embedder
    from indexer import SEED_CORPUS
    from indexer.sources import read_takes
    from indexer.index.writer import IndexWriter

    index_dir = Path(tempfile.mkdtemp(prefix="takes-fit-"))
    with IndexWriter(index_dir) as writer:
        writer.replace_all(read_takes(SEED_CORPUS), load_embedder(DEFAULT_MODEL, backend), model=DEFAULT_MODEL, backend=backend)
    return index_dir


BEFORE_MATES = "+ late interaction (word tokens) + thread evidence (the default of 2026-12-02)"
KEPT = "  the same, with the +-1 thread mates' token matches at a discount chosen on the training folds (kept: the default)"
# Late evidence from contextual token vectors (tried, not kept): (tokens, radius, row label).
CONTEXT_VARIANTS = [
    (kind, radius, f"{label} contextual tokens ({'the thread' if radius is None else f'+-{radius}'})")
    for kind, label in ((CONTEXTUAL, "MaxSim over"), (BETTER, "the better MaxSim of own and"))
    for radius in CONTEXT_RADII
]
# The query whose two answers the contextual tokens were tried for: their ranks are printed.
RANKS_OF = "what about compute governance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--index-dir", type=Path, default=None, help="An index of the seed (default: build one)")
    args = parser.parse_args()
    from embeddings import load_embedder

    index_dir = args.index_dir or build_seed_index(args.backend)
    searcher = Searcher(index_dir, embedder=load_embedder("all-MiniLM-L6-v2", args.backend))
    judgments = collect(searcher)
    kinds = {j.judged.query: j.kind for j in judgments}

    thread_methods = {f"  the same, {label}": thread_variant_method(variant) for label, variant in THREAD_VARIANTS.items()}
    methods = {
        "dense (cosine)": lambda train: lambda j: j.features[:, 0],
        "lexical (BM25)": lambda train: lambda j: j.features[:, 1] + 1e-6 * j.features[:, 0],
        "before: 0.9 cosine + 0.1 BM25/best": lambda train: before,
        "calibrated, hubs centred (the default before)": calibrated_method([COSINE, LEXICAL]),
        "+ late interaction, every query token, top 30 (the opt-in before)": two_stage_method,
        "+ late interaction over the query's word tokens": calibrated_method([COSINE, LEXICAL, LATE], discount=0.0),
        "+ thread evidence, no late interaction": calibrated_method([COSINE, LEXICAL, THREAD]),
        BEFORE_MATES: calibrated_method([COSINE, LEXICAL, LATE, THREAD], discount=0.0),
        **{
            f"  the same, {label}": calibrated_method([COSINE, LEXICAL, LATE, THREAD], tokens=tokens, radius=radius, discount=0.0)
            for tokens, radius, label in CONTEXT_VARIANTS
        },
        **thread_methods,
        **{
            f"  the same, thread mates' matches at {discount}": calibrated_method([COSINE, LEXICAL, LATE, THREAD], discount=discount)
            for discount in MATE_DISCOUNTS if discount
        },
        KEPT: (kept_method := calibrated_method([COSINE, LEXICAL, LATE, THREAD], discount=None)),
        **{
            f"    and token centring {token}": calibrated_method([COSINE, LEXICAL, LATE, THREAD], token_centring=token, discount=None)
            for token in TOKEN_CENTRINGS if token != TOKEN_CENTRING
        },
        "    and token centring chosen on the training folds": (
            chooser := calibrated_method([COSINE, LEXICAL, LATE, THREAD], token_centring=None, discount=None)
        ),
    }
    results = {name: cross_validate(judgments, method) for name, method in methods.items()}
    baseline = results["before: 0.9 cosine + 0.1 BM25/best"]
    print(f"Cross-validated nDCG@10 ({FOLDS} folds x {REPEATS} repeats; backend {args.backend})\n")
    print("| method | dev (19) | own (26) | all | worst dev query vs before |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, scores in results.items():
        mean = {kind: np.mean([v for q, v in scores.items() if kinds[q] == kind]) for kind in ("dev", "own")}
        worst = min((scores[q] - baseline[q], q) for q in scores if kinds[q] == "dev")
        print(f"| {name} | {mean['dev']:.3f} | {mean['own']:.3f} | {np.mean(list(scores.values())):.3f} | {worst[0]:+.3f} {worst[1]} |")
    print(f"\nMate discount chosen per training fold (kept): {sorted(collections.Counter(d for _, d in kept_method.chosen).items())}")
    print(f"(token centring, mate discount) chosen per training fold: {sorted(collections.Counter(chooser.chosen).items())}")
    print("\nPer dev query, kept against before:")
    kept = results[KEPT]
    for query in sorted((q for q in kept if kinds[q] == "dev"), key=lambda q: kept[q] - baseline[q]):
        print(f"  {kept[query] - baseline[query]:+.3f}  {baseline[query]:.3f} -> {kept[query]:.3f}  {query}")

    # The strong/weak signal under cross-validation: fit on the other folds.
    signals = {name: methods[name] for name in (BEFORE_MATES, KEPT, *thread_methods)}
    print(f"\nCross-validated signal (threshold {STRONG}):")
    for name, method in signals.items():
        totals = cross_validated_signal(judgments, method)
        print(f"  off-topic query-folds with a strong result {totals[0]}; dev answers in a top 10: {totals[1]}, "
              f"of them weak: {totals[2]}  ({name.strip()})")

    print("\nFitted on every query (paste into indexer/ranking.py):")
    everything = judgments
    centring = fit_centring(judgments)
    judged = [j for j in judgments if j.kind != "offtopic"]

    def in_sample(**choice) -> float:
        scorer = calibrated_method([COSINE, LEXICAL, LATE, THREAD], **choice)(judgments)
        return float(np.mean([ndcg(j, scorer(j)) for j in judged]))

    token_scores = {token: in_sample(token_centring=token, discount=MATE_DISCOUNT) for token in TOKEN_CENTRINGS}
    mate_scores = {discount: in_sample(discount=discount) for discount in MATE_DISCOUNTS}
    discount = max(MATE_DISCOUNTS, key=lambda d: mate_scores[d])
    # TOKEN_CENTRING is a choice, not a fit: larger centrings lift our paraphrases but take a dev
    # query to the issue's -0.05 limit and weaken the strong/weak line (docs/QUALITY.md).
    judgments = centred(judgments, centring, TOKEN_CENTRING, discount=discount)
    print(f"CENTRING = {centring:.3f}")
    print(f"MATE_DISCOUNT = {discount} (mean nDCG@10 in-sample by discount: "
          + ", ".join(f"{d}: {score:.3f}" for d, score in mate_scores.items()) + ")")
    print(f"TOKEN_CENTRING = {TOKEN_CENTRING} as set (mean nDCG@10 in-sample by token centring: "
          + ", ".join(f"{token}: {score:.3f}" for token, score in token_scores.items()) + ")")
    fits = {
        "CALIBRATIONS": {
            "hybrid": [COSINE, LEXICAL, LATE, THREAD],
            "dense": [COSINE, LATE, THREAD],
            "lexical": [LEXICAL],
        },
        "FIRST_STAGE": {"hybrid": [COSINE, LEXICAL], "dense": [COSINE]},
    }
    for constant, modes in fits.items():
        print(f"{constant} = {{")
        for mode, columns in modes.items():
            c = fit_calibration(judgments, columns)
            print(f'    "{mode}": Calibration(bias={c.bias:.3f}, cosine_weight={c.cosine_weight:.3f}, '
                  f"lexical_weight={c.lexical_weight:.3f}, late_weight={c.late_weight:.3f}, thread_weight={c.thread_weight:.3f}),")
        print("}")
    final = fit_calibration(judgments, [COSINE, LEXICAL, LATE, THREAD])
    offtopic_strong, answers, weak = strong_report(final, judgments)
    print(f"On every query: off-topic queries with a strong result {offtopic_strong}; dev answers in a top 10 {answers}, weak {weak}")
    top_offtopic = max(calibrated(final, j).max() for j in judgments if j.kind == "offtopic")
    answer_scores = [
        calibrated(final, j)[i] for j in judgments if j.kind == "dev"
        for i in np.argsort(-calibrated(final, j))[:10] if j.grades[i] == 2
    ]
    print(f"Highest off-topic score {top_offtopic:.3f}; lowest dev answer in a top 10 {min(answer_scores):.3f}")
    print(f"\nRanks of the answers (grade 2) to {RANKS_OF!r}, each method fitted on every query:")
    raw = [j for j in everything if j.judged.query == RANKS_OF]
    ranked = [BEFORE_MATES, *(f"  the same, {label}" for _, _, label in CONTEXT_VARIANTS), *thread_methods, KEPT]
    for name in ranked:
        method = methods[name]
        judgment = raw[0]
        scores = method(everything)(judgment)
        order = list(np.argsort(-scores, kind="stable"))
        ranks = sorted(1 + order.index(i) for i in np.flatnonzero(judgment.grades == 2))
        print(f"  {ranks}  {name.strip()}")


if __name__ == "__main__":
    main()
