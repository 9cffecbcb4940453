"""The static int8 graph: OpenVINO over the shipped int8 weights with the activation scales export observed. It
answers like the dynamic graph on real photos, a photo's answer does not depend on its batch-mates, and export
keeps the scales only where the graph agrees with its reference."""

import json
import shutil

import numpy as np
import pytest

from parkclf import export
from parkclf.classifier import Classifier
from parkclf.engine import OnnxEngine, OpenVinoEngine
from parkclf.processing import open_images
from parkclf.static_int8 import (
    RANGES_FILE,
    _drop_zero_adds,
    class_token_only_in_last_layer,
    load_ranges,
    static_graph,
    transpose_keys_in_matmul,
)

from conftest import EMBEDDED, ROOT

PHOTOS = sorted((ROOT / "examples").glob("*.jpg"))
pytestmark = pytest.mark.skipif(not (EMBEDDED / "onnx" / RANGES_FILE).exists(),
                                reason="the embedded model has no static int8 scales")


@pytest.fixture(scope="module")
def pixels():
    """The ONNX Runtime classifier (dynamic int8) and the example photos' pixels."""
    clf = Classifier.from_pretrained(str(EMBEDDED), engine="onnx")
    return clf, clf.pixel_values(open_images([str(p) for p in PHOTOS], clf.preprocessor))


def test_the_static_graph_answers_like_the_dynamic_one_and_batches_without_changing_answers(pixels):
    clf, pv = pixels
    static = OpenVinoEngine(EMBEDDED, patch_size=14)
    dynamic = clf.engine.logits(pv)
    alone = np.concatenate([static.logits(x[None]) for x in pv])
    assert np.array_equal(alone.argmax(1), dynamic.argmax(1))
    assert np.abs(alone - dynamic).max() < 0.5  # logits; the export's check on 259 photos gave 0.37 against fp32
    # 17 photos: one batch of 16 on the graph compiled for 16, then one on the graph compiled for 1; the same bits
    many = np.concatenate([pv] * (OpenVinoEngine.BATCH // len(pv) + 1))[:OpenVinoEngine.BATCH + 1]
    together = static.logits(many)
    assert sorted(static._requests) == [1, OpenVinoEngine.BATCH]
    np.testing.assert_array_equal(together, np.concatenate([alone] * (len(many) // len(pv) + 1))[:len(many)])
    assert [p.label for p in clf.predictions(alone)] == [p.label for p in clf.predictions(dynamic)]


def test_the_app_serves_the_static_graph_and_explains_on_onnx_runtime(pixels):
    clf = Classifier.from_pretrained(str(EMBEDDED), engine="openvino")
    assert clf.engine.name == "openvino-int8-static"
    _, pred, heat = clf.explain(str(PHOTOS[0]))
    _, same, ort_heat = pixels[0].explain(str(PHOTOS[0]))  # the relevance graph on ONNX Runtime in both
    np.testing.assert_array_equal(heat, ort_heat)
    assert pred == same


def test_scales_that_do_not_match_the_graph_are_refused(tmp_path):
    ranges = load_ranges(EMBEDDED / "onnx")
    ranges.pop(next(iter(ranges)))
    with pytest.raises(ValueError, match="does not match model_quantized.onnx"):
        static_graph(EMBEDDED / "onnx" / "model_quantized.onnx", ranges)


def test_export_keeps_the_scales_only_where_the_static_graph_agrees(pixels, tmp_path):
    clf, pv = pixels
    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    shutil.copy(EMBEDDED / "onnx" / "model_quantized.onnx", folder / "onnx")
    config = json.loads((EMBEDDED / "config.json").read_text())
    # the in-scope examples (on the three others the closest of the real parks is a near tie), and the dynamic
    # graph standing in for torch fp32
    pv = pv[[i for i, p in enumerate(PHOTOS) if p.name.startswith(("seki", "yell"))]]
    reference = OnnxEngine(EMBEDDED, patch_size=14).logits(pv)
    row, notes = export._static_int8(folder / "onnx", pv, pv, reference, config, 14)
    assert row["top1_agreement"] == 1.0 and row["calibration_photos"] == len(pv) and not notes
    assert (folder / "onnx" / RANGES_FILE).exists()
    wrong = reference[:, ::-1].copy()  # a reference that disagrees on every photo
    row, notes = export._static_int8(folder / "onnx", pv, pv, wrong, config, 14)
    assert row["kept"] is False and row["top1_agreement"] < 1 and not (folder / "onnx" / RANGES_FILE).exists()
    assert "was not kept: top1_agreement" in notes[0]


def _masked_add(mask_shape, x_shape):
    """A graph computing x + Where(Expand(all true), 0, -inf): the additive attention mask of a ViT that masks
    nothing, as torch.onnx writes it."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Expand", ["ge", "shape"], ["expanded"]),
             helper.make_node("Where", ["expanded", "zero", "low"], ["mask"]),
             helper.make_node("Add", ["x", "mask"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((1, 1, 4, 1), bool), "ge"),
             numpy_helper.from_array(np.array(mask_shape, np.int64), "shape"),
             numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array(-3.4e38, np.float32), "low")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_an_add_of_a_mask_that_is_zero_everywhere_is_dropped_only_where_the_shape_stays():
    model = _masked_add([1, 1, 4, 4], [1, 2, 4, 4])
    _drop_zero_adds(model)
    assert [n.op_type for n in model.graph.node][-1] == "Identity"
    wider = _masked_add([3, 1, 4, 4], [1, 2, 4, 4])  # the mask would broadcast x to 3 rows: the Add stays
    _drop_zero_adds(wider)
    assert [n.op_type for n in wider.graph.node][-1] == "Add"
    rewritten = [n.op_type for n in _static_model().graph.node]
    assert rewritten.count("Identity") == 12 and "Where" not in rewritten  # one mask per attention layer


def _static_model():
    import onnx

    return onnx.load_from_string(static_graph(EMBEDDED / "onnx" / "model_quantized.onnx",
                                              load_ranges(EMBEDDED / "onnx")))


def test_attention_scores_over_transposed_keys_keep_their_values():
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    q = ops.parameter([1, 6, 5, 8], np.float32)  # (batch, heads, tokens, head size)
    k = ops.parameter([1, 5, 6, 8], np.float32)  # (batch, tokens, heads, head size), before the heads split off
    scores = ops.matmul(q, ops.transpose(k, ops.constant(np.array([0, 2, 3, 1], np.int64))), False, False)
    model = ov.Model([scores], [q, k])
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in ((1, 6, 5, 8), (1, 5, 6, 8))]
    before = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    assert transpose_keys_in_matmul(model) == 1
    after = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after, inputs[0] @ inputs[1].transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    assert transpose_keys_in_matmul(model) == 0  # nothing left to rewrite


def test_the_class_token_alone_through_the_last_layer_gives_the_same_bits(pixels):
    import io

    import openvino as ov

    _, pv = pixels
    served = OpenVinoEngine(EMBEDDED, patch_size=14)
    served.logits(pv)  # reads and rewrites the served graph
    full = ov.Core().read_model(io.BytesIO(static_graph(EMBEDDED / "onnx" / "model_quantized.onnx",
                                                        load_ranges(EMBEDDED / "onnx"))))
    transpose_keys_in_matmul(full)

    def slices(model):
        return sum(op.get_type_name() == "Slice" for op in model.get_ordered_ops())

    assert slices(served._model) == slices(full) + 2  # the query's rows and the residual's: the class token's

    def one_at_a_time(model):
        # f32 on both: on a CPU with native bf16 OpenVINO runs the float ops in bf16 by default, where the two
        # graphs round differently; the rewrite itself is exact
        model.reshape({0: [1, *model.input(0).get_partial_shape()[1:]]})
        request = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": served._threads,
                                                         "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        return np.concatenate([request.infer({0: x[None]})[0] for x in pv])

    rewritten = one_at_a_time(served._model.clone())
    np.testing.assert_array_equal(rewritten, one_at_a_time(full))


def _vit_block(head: str = "class token", score_bias: bool = False, gate: bool = False):
    """A one-layer ViT in OpenVINO ops, 5 tokens of 8 values, 2 heads: layer norm, attention, residual, MLP,
    residual, final norm; then the head reads the class token (or the mean of every token, or two tokens)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(1)

    def c(a):
        return ops.constant(np.asarray(a))

    def w(*shape):
        return c(rng.standard_normal(shape).astype(np.float32) / 3)

    def norm(t):
        return ops.mvn(t, c(np.array([-1], np.int64)), True, 1e-6, "inside_sqrt")

    def heads(t):
        t = ops.reshape(ops.add(ops.matmul(t, w(8, 8), False, False), w(8)), c(np.array([-1, 5, 2, 4])), False)
        return ops.transpose(t, c(np.array([0, 2, 1, 3])))

    pixels = ops.parameter([1, 5, 8], np.float32)
    h = norm(pixels)
    scores = ops.multiply(ops.matmul(heads(h), heads(h), False, True), c(np.float32(0.5)))
    if score_bias:  # a relative position bias (BEiT): each query row gets its own
        scores = ops.add(scores, w(1, 2, 5, 5))
    attended = ops.matmul(ops.softmax(scores, -1), heads(h), False, False)
    if gate:  # each token's attention output scaled by a value of its own, from outside the attention
        attended = ops.multiply(attended, heads(h))
    attended = ops.transpose(attended, c(np.array([0, 2, 1, 3])))
    attended = ops.reshape(attended, c(np.array([-1, 5, 8])), False)
    x = ops.add(ops.add(ops.matmul(attended, w(8, 8), False, False), w(8)), pixels)
    mlp = ops.gelu(ops.matmul(norm(x), w(8, 16), False, False), "erf")
    x = norm(ops.add(ops.matmul(mlp, w(16, 8), False, False), x))

    def token(i):
        return ops.gather(x, c(np.int64(i)), c(np.int64(1)))

    pooled = {"class token": lambda: token(0), "mean": lambda: ops.reduce_mean(x, c(np.array([1])), False),
              "two tokens": lambda: ops.add(token(0), token(1))}[head]()
    return ov.Model([ops.matmul(pooled, w(8, 3), False, False)], [pixels])


def _run(model, x):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


def test_only_the_class_token_is_computed_in_the_last_layer_where_nothing_else_is_read():
    x = np.random.default_rng(2).standard_normal((1, 5, 8)).astype(np.float32)
    model = _vit_block()
    before = _run(model, x)
    assert class_token_only_in_last_layer(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-6)
    shapes = {op.get_type_name(): list(op.get_output_partial_shape(0)) for op in model.get_ordered_ops()}
    assert shapes["Softmax"] == [1, 2, 1, 5] and shapes["Gelu"] == [1, 1, 16]  # one query row, one token's MLP
    for other in (_vit_block("mean"), _vit_block("two tokens"), _vit_block(score_bias=True), _vit_block(gate=True)):
        ops_before = len(other.get_ordered_ops())
        out = _run(other, x)
        assert not class_token_only_in_last_layer(other)  # the head reads other tokens, or the scores differ by row
        assert len(other.get_ordered_ops()) == ops_before
        np.testing.assert_array_equal(_run(other, x), out)
