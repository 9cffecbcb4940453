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
from parkclf.static_int8 import RANGES_FILE, load_ranges, static_graph

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
    together = static.logits(pv)
    assert np.array_equal(alone.argmax(1), dynamic.argmax(1))
    assert np.abs(alone - dynamic).max() < 0.5  # logits; the export's check on 259 photos gave 0.32 against fp32
    np.testing.assert_allclose(together, alone, atol=1e-4)
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
