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
from parkclf.static_int8 import RANGES_FILE, _drop_zero_adds, load_ranges, static_graph, transpose_keys_in_matmul

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
    clf = Classifier.from_pretrained(str(EMBEDDED))
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
    assert row is None and not (folder / "onnx" / RANGES_FILE).exists()
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
