"""Fit and cross-validate the relevance scale of indexer/ranking.py.

Run: ``.venv/bin/python -m bench.ranking_fit [--backend onnx|torch] [--index-dir DIR]``.

Builds (or reuses) an index of the bundled seed, asks the product's own
Searcher for each judged query's hybrid candidates and their evidence, then:

1. scores the ranking methods by 5-fold cross-validation over the judged
   queries (dev set and our own paraphrase queries; four repeats with
   different folds): parameters are fitted on four folds and scored on the
   fifth, so no figure is of a query its parameters saw;
2. checks the strong/weak signal the same way: off-topic queries with a
   strong result, and answers (grade 2) in a dev top 10 that are not strong;
3. fits the final constants on every query and prints them for
   ``CALIBRATIONS`` in indexer/ranking.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.evaluation import Judged, fold, load_judgments, score_ranking
from indexer.ranking import STRONG, Calibration, Candidate
from indexer.serving import Searcher
from indexer.storage import Filters

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
FOLDS, REPEATS = 5, 4


@dataclass
class Judgment:
    judged: Judged
    kind: str  # dev | own | offtopic
    features: np.ndarray  # (candidates, 3): cosine, lexical, cosine with the corpus's mean direction
    grades: np.ndarray
    texts: list[str]


def judged_queries() -> list[tuple[str, Judged]]:
    queries = [("dev", j) for j in load_judgments(DATA / "dev_queries.json")]
    queries += [("own", j) for j in load_judgments(DATA / "paraphrase_queries.json")]
    offtopic = json.loads((DATA / "offtopic_queries.json").read_text(encoding="utf-8"))["queries"]
    return queries + [("offtopic", Judged(query, {})) for query in offtopic]


def collect(searcher: Searcher, late: bool = False) -> list[Judgment]:
    """Each judged query's candidates and evidence; with ``late``, a fourth column: MaxSim with the query."""
    from indexer.ranking import maxsim

    snapshot = searcher.snapshot
    collected = []
    token_cache: dict[str, np.ndarray] = {}
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
        if late:
            query_tokens = searcher.embedder.token_vectors([judged.query])[0]
            for text in texts:
                if text not in token_cache:
                    token_cache[text] = searcher.embedder.token_vectors([text])[0]
            late_column = np.array([maxsim(query_tokens, token_cache[text]) for text in texts])
            features = np.column_stack([features, late_column])
        collected.append(Judgment(judged, kind, features, grades, texts))
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


def fit_calibration(train: list[Judgment], columns: list[int]) -> Calibration:
    """Direction from the pairwise fit, scale from a Platt fit, centre at the strong threshold.

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
    # (columns: 0 dense, 1 lexical, 2 late interaction, in the centred judgments)
    labels = np.concatenate([j.grades >= 1 for j in train]).astype(int)
    platt = LogisticRegression(C=100.0, max_iter=5000).fit(np.concatenate(scores)[:, None], labels)
    scale = float(platt.coef_[0][0])
    offtopic = max(s.max() for s, j in zip(scores, train) if j.kind == "offtopic" and len(s))
    answers = [
        s[i] for s, j in zip(scores, train) if j.kind == "dev" for i in np.argsort(-s)[:10] if j.grades[i] == 2
    ]
    # Answers below every off-topic take cannot be told from noise: they stay weak.
    centre = (offtopic + min((a for a in answers if a > offtopic), default=offtopic)) / 2
    weights = dict(zip(columns, direction * scale))
    return Calibration(
        bias=-centre * scale,
        cosine_weight=float(weights.get(0, 0.0)),
        lexical_weight=float(weights.get(1, 0.0)),
        late_weight=float(weights.get(2, 0.0)),
    )


def fit_centring(train: list[Judgment]) -> float:
    """How much of the hub direction to take off the cosine: the pairwise fit's ratio of the two weights."""
    weights = fit_direction(train, [0, 1, 2])
    return float(-weights[2] / weights[0])


def centred(judgments: list[Judgment], centring: float) -> list[Judgment]:
    """The judgments with the product's features: centred cosine, lexical (and MaxSim when collected)."""
    return [
        Judgment(
            j.judged,
            j.kind,
            np.column_stack([j.features[:, 0] - centring * j.features[:, 2], j.features[:, 1], *j.features[:, 3:].T]),
            j.grades,
            j.texts,
        )
        for j in judgments
    ]


def fit_product(train: list[Judgment]) -> tuple[float, Calibration]:
    centring = fit_centring(train)
    return centring, fit_calibration(centred(train, centring), [0, 1])


def calibrated(calibration: Calibration, judgment: Judgment) -> np.ndarray:
    weights = [calibration.cosine_weight, calibration.lexical_weight, calibration.late_weight][: judgment.features.shape[1]]
    logits = calibration.bias + judgment.features[:, : len(weights)] @ np.array(weights)
    return 1 / (1 + np.exp(-logits))


def late_method(train: list[Judgment]):
    """The opt-in second stage: the first stage's top RERANK_DEPTH re-scored with MaxSim as a third feature."""
    from indexer.search import RERANK_DEPTH

    centring, first = fit_product([_without_late(j) for j in train])
    late = fit_calibration(centred(train, centring), [0, 1, 2])

    def score(judgment: Judgment) -> np.ndarray:
        product = centred([judgment], centring)[0]
        first_scores = calibrated(first, Judgment(product.judged, product.kind, product.features[:, :2], product.grades, product.texts))
        head = np.argsort(-first_scores, kind="stable")[:RERANK_DEPTH]
        scores = first_scores - 2.0  # the rest stay below every re-scored take
        scores[head] = calibrated(late, product)[head]
        return scores

    return score


def _without_late(judgment: Judgment) -> Judgment:
    return Judgment(judgment.judged, judgment.kind, judgment.features[:, :3], judgment.grades, judgment.texts)


def product_method(train: list[Judgment]):
    centring, calibration = fit_product(train)
    return lambda j: calibrated(calibration, centred([j], centring)[0])


def strong_report(calibration: Calibration, judgments: list[Judgment], threshold: float = STRONG) -> tuple[int, int, int]:
    """(off-topic queries with a strong result, dev answers in a top 10, of those not strong)."""
    offtopic_strong = answers = weak_answers = 0
    for judgment in judgments:
        scores = calibrated(calibration, judgment)
        top = np.argsort(-scores, kind="stable")[:10]
        if judgment.kind == "offtopic":
            offtopic_strong += bool((scores[top] >= threshold).any())
        elif judgment.kind == "dev":
            for index in top:
                if judgment.grades[index] == 2:
                    answers += 1
                    weak_answers += scores[index] < threshold
    return offtopic_strong, answers, weak_answers


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--index-dir", type=Path, default=None, help="An index of the seed (default: build one)")
    parser.add_argument("--late-interaction", action="store_true", help="also fit the opt-in MaxSim second stage")
    args = parser.parse_args()
    index_dir = args.index_dir
    if index_dir is None:
        from embeddings import DEFAULT_MODEL, load_embedder
        from indexer import SEED_CORPUS
        from indexer.sources import read_takes
        from indexer.index.writer import IndexWriter

        index_dir = Path(tempfile.mkdtemp(prefix="takes-fit-"))
        with IndexWriter(index_dir) as writer:
            writer.replace_all(read_takes(SEED_CORPUS), load_embedder(DEFAULT_MODEL, args.backend), model=DEFAULT_MODEL)
    judgments = collect(Searcher(index_dir), late=args.late_interaction)
    kinds = {j.judged.query: j.kind for j in judgments}

    methods = {
        "dense (cosine)": lambda train: lambda j: j.features[:, 0],
        "lexical (BM25)": lambda train: lambda j: j.features[:, 1] + 1e-6 * j.features[:, 0],
        "before: 0.9 cosine + 0.1 BM25/best": lambda train: before,
        "calibrated: cosine + BM25/idf mass": lambda train: (lambda c: lambda j: calibrated(c, j))(fit_calibration(train, [0, 1])),
        "calibrated, hubs centred (kept)": lambda train: product_method([_without_late(j) for j in train]),
    }
    if args.late_interaction:
        methods["+ late interaction over the top 30 (opt-in)"] = late_method
    results = {name: cross_validate(judgments, method) for name, method in methods.items()}
    baseline = results["before: 0.9 cosine + 0.1 BM25/best"]
    print(f"Cross-validated nDCG@10 ({FOLDS} folds x {REPEATS} repeats; backend {args.backend})\n")
    print("| method | dev (19) | own (26) | all | worst dev query vs before |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, scores in results.items():
        mean = {kind: np.mean([v for q, v in scores.items() if kinds[q] == kind]) for kind in ("dev", "own")}
        worst = min((scores[q] - baseline[q], q) for q in scores if kinds[q] == "dev")
        print(f"| {name} | {mean['dev']:.3f} | {mean['own']:.3f} | {np.mean(list(scores.values())):.3f} | {worst[0]:+.3f} {worst[1]} |")

    # The strong/weak signal under cross-validation: fit on the other folds.
    judged = [j for j in judgments if j.kind != "offtopic"]
    offtopic = [j for j in judgments if j.kind == "offtopic"]
    totals = np.zeros(3, int)
    for number in range(FOLDS):
        train = [j for i, j in enumerate(judged) if i % FOLDS != number] + offtopic[number % 2 :: 2]
        test = [j for i, j in enumerate(judged) if i % FOLDS == number] + offtopic[1 - number % 2 :: 2]
        centring, calibration = fit_product(train)
        totals += strong_report(calibration, centred(test, centring))
    print(f"\nCross-validated signal (threshold {STRONG}): off-topic query-folds with a strong result {totals[0]}; "
          f"dev answers in a top 10: {totals[1]}, of them weak: {totals[2]}")

    print("\nFitted on every query (paste into indexer/ranking.py):")
    if args.late_interaction:
        centring = fit_centring([_without_late(j) for j in judgments])
        late = fit_calibration(centred(judgments, centring), [0, 1, 2])
        print(f'    late interaction: Calibration(bias={late.bias:.3f}, cosine_weight={late.cosine_weight:.3f}, '
              f"lexical_weight={late.lexical_weight:.3f}, late_weight={late.late_weight:.3f})")
        judgments = [_without_late(j) for j in judgments]
    centring = fit_centring(judgments)
    judgments = centred(judgments, centring)
    offtopic = [j for j in judgments if j.kind == "offtopic"]
    print(f"CENTRING = {centring:.3f}")
    final = {
        "hybrid": fit_calibration(judgments, [0, 1]),
        "dense": fit_calibration(judgments, [0]),
        "lexical": fit_calibration(judgments, [1]),
    }
    for mode, calibration in final.items():
        print(f'    "{mode}": Calibration(bias={calibration.bias:.3f}, cosine_weight={calibration.cosine_weight:.3f}, '
              f"lexical_weight={calibration.lexical_weight:.3f}),")
    offtopic_strong, answers, weak = strong_report(final["hybrid"], judgments)
    print(f"On every query: off-topic queries with a strong result {offtopic_strong}; dev answers in a top 10 {answers}, weak {weak}")
    top_offtopic = max(calibrated(final["hybrid"], j).max() for j in offtopic)
    answer_scores = [
        calibrated(final["hybrid"], j)[i] for j in judgments if j.kind == "dev"
        for i in np.argsort(-calibrated(final["hybrid"], j))[:10] if j.grades[i] == 2
    ]
    print(f"Highest off-topic score {top_offtopic:.3f}; lowest dev answer in a top 10 {min(answer_scores):.3f}")


if __name__ == "__main__":
    main()
