"""Which MatMuls to quantize: agreement with torch fp32 and speed, per recipe.

    .venv/bin/python -m bench.quantization

Builds the int8 model two ways through sentence-transformers' own export
(every MatMul, as its presets do; weight MatMuls only, what takes ships),
and a third way with static quantization (ONNX Runtime's ``quantize_static``,
activation ranges calibrated on the seed takes: batch-invariant, since no
scale depends on the input), and reports, on the seed takes: cosine to the torch fp32 vectors (mean and
lowest), takes/s one text per run on one thread (median of interleaved
rounds), and dense nDCG@10 on the dev judgments for orientation. Scratch
files go to the bench directory.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from bench.fixtures import DEV_JUDGMENTS, bench_dir, seed_takes

ROUNDS = 3


def build(kind: str, fp32_dir, config: str):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    from embeddings.onnx import activation_matmuls

    exclude = activation_matmuls(fp32_dir / "onnx" / "model.onnx") if kind == "weights" else []
    quantization = getattr(AutoQuantizationConfig, config)(is_static=False, per_channel=True, nodes_to_exclude=exclude)
    suffix = f"{kind}_{config}"
    if not (fp32_dir / "onnx" / f"model_{suffix}.onnx").exists():
        export_dynamic_quantized_onnx_model(build.model, quantization, str(fp32_dir), file_suffix=suffix)
    return f"onnx/model_{suffix}.onnx"


def build_static(fp32_dir, texts: list[str]) -> str:
    """Static int8 (QDQ, per-channel weights, MinMax ranges from one pass over ``texts``)."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from tokenizers import Tokenizer

    target = fp32_dir / "onnx" / "model_static.onnx"
    if target.exists():
        return "onnx/model_static.onnx"
    source = fp32_dir / "onnx" / "model.onnx"
    tokenizer = Tokenizer.from_file(str(fp32_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    names = {item.name for item in onnxruntime.InferenceSession(str(source)).get_inputs()}

    class Seed(CalibrationDataReader):
        def __init__(self):
            self.items = iter(texts)

        def get_next(self):
            text = next(self.items, None)
            if text is None:
                return None
            encoding = tokenizer.encode(text)
            feeds = {"input_ids": [encoding.ids], "attention_mask": [encoding.attention_mask], "token_type_ids": [encoding.type_ids]}
            return {name: np.asarray(value, dtype=np.int64) for name, value in feeds.items() if name in names}

    quantize_static(
        str(source), str(target), Seed(), quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=["MatMul"],
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True},
    )
    return "onnx/model_static.onnx"


def runtime(model_dir, file_name):
    import onnxruntime

    from embeddings.onnx import _LeanRuntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return _LeanRuntime.open(model_dir, {"file_name": file_name}, options, onnxruntime)


def dense_ndcg(vectors: np.ndarray, texts: list[str], encode) -> float:
    from indexer.evaluation import evaluate, load_judgments, mean

    def search(query: str, k: int) -> list[str]:
        scores = vectors @ encode(query)
        return [texts[index] for index in np.argsort(-scores)[:k]]

    return mean(evaluate(load_judgments(DEV_JUDGMENTS), search))["ndcg@10"]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embeddings import DEFAULT_MODEL, load_embedder
    from embeddings.onnx import _load_sentence_transformer, _quiet_export, pick_quantization_config

    texts = [take.text for take in seed_takes()]
    reference = load_embedder(DEFAULT_MODEL, "torch").encode(texts)
    config = pick_quantization_config()
    fp32_dir = bench_dir() / "quantization"
    with _quiet_export():
        build.model = _load_sentence_transformer(DEFAULT_MODEL, backend="onnx", model_kwargs={"export": True})
        build.model.save(str(fp32_dir))
        recipes = {
            "every MatMul (preset)": build("all", fp32_dir, config),
            "weight MatMuls only (shipped)": build("weights", fp32_dir, config),
            "static, calibrated on the seed takes": build_static(fp32_dir, texts),
        }
    runtimes = {name: runtime(fp32_dir, file_name) for name, file_name in recipes.items()}
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(ROUNDS):
        for name, model in runtimes.items():
            started = time.perf_counter()
            model.encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    print(f"seed takes: {len(texts)}, quantization preset {config}, one text per run, one thread, median of {ROUNDS} rounds\n")
    print("| recipe | cosine to torch, mean | lowest | takes/s | dense nDCG@10 (dev) |")
    print("| --- | --- | --- | --- | --- |")
    for name, model in runtimes.items():
        vectors = model.encode(texts)
        cosines = (vectors * reference).sum(axis=1)
        ndcg = dense_ndcg(vectors, texts, lambda query: model.encode([query])[0])
        print(f"| {name} | {cosines.mean():.4f} | {cosines.min():.4f} | {statistics.median(rates[name]):.0f} | {ndcg:.3f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
