"""Signed int8 weights: the same model, bit for bit, on CPUs whose u8 x s8 kernel is exact; the file kept as it is anywhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from embeddings import DEFAULT_MODEL, int8_kernels  # noqa: E402
from embeddings.onnx import OnnxEmbedder, shipped_model_dir  # noqa: E402

SEED_CORPUS = Path(__file__).resolve().parents[2] / "indexer" / "corpus" / "jackclark_ai_policy.txt"
QUERIES = ["what about compute governance", "should models be open sourced", "export controls on chips", "x", "?" * 300]


def _shipped_model_path():
    return next((shipped_model_dir(DEFAULT_MODEL) / "onnx").glob("*.onnx"))


def _shipped_model() -> bytes:
    return _shipped_model_path().read_bytes()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = SEED_CORPUS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()] + QUERIES


def test_signed_weights_give_the_same_vectors_bit_for_bit(texts):
    if not int8_kernels.signed_products_exact(onnxruntime):
        pytest.skip("this CPU's u8 x s8 products are not exact: takes keeps the weights unsigned here")
    signed = OnnxEmbedder(DEFAULT_MODEL)
    stored = OnnxEmbedder(DEFAULT_MODEL, signed_weights=False)
    assert signed.signed_weights and not stored.signed_weights
    vectors, tokens = signed.encode_with_token_vectors(texts)
    expected, expected_tokens = stored.encode_with_token_vectors(texts)
    assert len(texts) > 150
    assert np.array_equal(vectors, expected)
    assert all(np.array_equal(mine, theirs) for mine, theirs in zip(tokens, expected_tokens, strict=True))


def test_an_embedder_runs_signed_exactly_where_the_kernel_is_exact():
    assert OnnxEmbedder(DEFAULT_MODEL).signed_weights == int8_kernels.signed_products_exact(onnxruntime)


def test_the_rewrite_signs_the_weights_and_their_zero_points_and_nothing_else():
    onnx = pytest.importorskip("onnx", reason="checking the rewritten file needs the onnx package (the torch extra)")
    from onnx import numpy_helper

    original = _shipped_model()
    before = onnx.load_from_string(original)
    after = onnx.load_from_string(int8_kernels.signed_weights(original))
    onnx.checker.check_model(after)
    assert [(node.op_type, list(node.input), list(node.output)) for node in after.graph.node] == [
        (node.op_type, list(node.input), list(node.output)) for node in before.graph.node
    ]
    weights = {name for node in before.graph.node if node.op_type == "MatMulInteger" for name in (node.input[1], node.input[3])}
    changed = 0
    new = {tensor.name: numpy_helper.to_array(tensor) for tensor in after.graph.initializer}
    for tensor in before.graph.initializer:
        old = numpy_helper.to_array(tensor)
        if tensor.name in weights and old.dtype == np.uint8:
            assert new[tensor.name].dtype == np.int8
            assert np.array_equal(new[tensor.name].astype(np.int16), old.astype(np.int16) - 128)
            changed += 1
        else:
            assert new[tensor.name].dtype == old.dtype and np.array_equal(new[tensor.name], old)
    assert changed == 72  # 36 weight products: each weight and its zero point
    # Read from the file into the buffer it is changed in, as the embedder opens it: the same bytes.
    assert int8_kernels.signed_weights_of_file(_shipped_model_path()) == int8_kernels.signed_weights(original)


def test_a_file_with_nothing_to_sign_or_not_understood_is_left_as_it_is():
    onnx = pytest.importorskip("onnx", reason="building test models needs the onnx package (the torch extra)")
    from onnx import TensorProto, helper, numpy_helper

    # Already signed: the rewrite's own output, and the kernel probe.
    assert int8_kernels.signed_weights(int8_kernels.signed_weights(_shipped_model())) is None
    assert int8_kernels.signed_weights(int8_kernels._probe_model()) is None
    # Cut short, or not a model at all.
    assert int8_kernels.signed_weights(_shipped_model()[:5_000_000]) is None
    assert int8_kernels.signed_weights(b"\xff" * 64) is None
    # A weight that another node reads as uint8 too: signing it would break that node.
    weights = numpy_helper.from_array(np.full((4, 2), 200, dtype=np.uint8), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMulInteger", ["A", "W"], ["Y"]),
            helper.make_node("DequantizeLinear", ["W", "scale"], ["Z"]),
        ],
        "shared",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 2]), helper.make_tensor_value_info("Z", TensorProto.FLOAT, [4, 2])],
        [weights, numpy_helper.from_array(np.array(0.5, dtype=np.float32), "scale")],
    )
    shared = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    assert int8_kernels.signed_weights(shared) is None


def test_the_probe_catches_a_kernel_that_saturates_in_int16():
    """What AVX2's VPMADDUBSW kernel computes (adjacent u8 x s8 products summed in int16, saturating) differs from
    the exact sums for every probe shape, so such a kernel can never pass the probe."""
    weights = int8_kernels._probe_weights().astype(np.int64)
    activations = np.full((1, weights.shape[0]), 255, dtype=np.int64)
    pairs = activations[:, 0::2, None] * weights[None, 0::2, :] + activations[:, 1::2, None] * weights[None, 1::2, :]
    saturated = np.clip(pairs, -32768, 32767).sum(axis=1)
    assert not np.array_equal(saturated, activations @ weights)
