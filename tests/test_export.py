"""The int8 gate: a graph is judged by what a visitor loses against fp32, on small fabricated logits."""

from __future__ import annotations

import json

import numpy as np

from parkclf import export

# three real classes and an out-of-scope one; answers below 0.15 abstain
CONFIG = {"id2label": {"0": "a", "1": "b", "2": "c", "3": "other"}, "out_of_scope_label": "other",
          "calibration_temperature": 1.0, "abstain_threshold": 0.15}
SURE = np.log([0.80, 0.08, 0.07, 0.05])  # fp32 sure of class a: its two best 0.72 apart
NEAR_TIE = np.log([0.44, 0.40, 0.11, 0.05])  # a and b 0.04 apart
NEAR_TIE_FLIPPED = np.log([0.40, 0.44, 0.11, 0.05])
SURE_FLIPPED = np.log([0.08, 0.80, 0.07, 0.05])


def _logits(*rows, n_sure: int = 0) -> np.ndarray:
    return np.array([*rows, *[SURE] * n_sure], dtype=np.float32)


def test_a_flip_on_a_near_tie_passes_and_is_reported_with_its_margin():
    ref, got = _logits(NEAR_TIE, n_sure=99), _logits(NEAR_TIE_FLIPPED, n_sure=99)
    row = export._agreement(ref, got, CONFIG, truth=np.zeros(100, int), names=[f"p{i}.jpg" for i in range(100)])
    assert row["top1_agreement"] == 0.99 and row["close_call_flips"] == 1 and row["confident_flips"] == 0
    assert row["flips"] == [{"photo": "p0.jpg", "fp32": "a", "int8": "b", "fp32_margin": 0.04}]
    assert (row["fp32_accuracy"], row["accuracy"]) == (1.0, 0.99)
    # one photo in 100 is a point of accuracy: too much; one in 200 is within half a point
    assert export.shortfalls(row) and "accuracy" in export.shortfalls(row)[0]
    ref, got = _logits(NEAR_TIE, n_sure=199), _logits(NEAR_TIE_FLIPPED, n_sure=199)
    assert export.shortfalls(export._agreement(ref, got, CONFIG, truth=np.zeros(200, int))) == []


def test_a_confident_flip_fails_even_where_accuracy_is_unchanged():
    ref, got = _logits(SURE, n_sure=999), _logits(SURE_FLIPPED, n_sure=999)
    truth = np.zeros(1000, int)
    truth[0] = 1  # fp32 was wrong on it and int8 right: no accuracy lost, but the graph is not the model
    row = export._agreement(ref, got, CONFIG, truth=truth)
    assert row["accuracy"] > row["fp32_accuracy"] and row["confident_flips"] == 1
    assert export.shortfalls(row) == ["1 top-1 flip(s) where fp32's two best classes were more than 0.1 apart"]


def test_an_accuracy_drop_of_more_than_half_a_point_fails():
    # abstaining where fp32 answered: no top-1 flip, but 6 of 1000 in-scope answers lost
    lost = np.log([0.10, 0.06, 0.04, 0.80])
    ref, got = _logits(n_sure=1000), _logits(*[lost] * 6, n_sure=994)
    row = export._agreement(ref, got, CONFIG, truth=np.zeros(1000, int))
    assert row["confident_flips"] == 0 and row["fp32_accuracy"] == 1.0 and row["accuracy"] == 0.994
    assert any("accuracy 0.9940 is more than 0.5% below" in s for s in export.shortfalls(row))
    # 5 of 1000 is within the tolerance, and abstain agreement 0.995 still holds
    got = _logits(*[lost] * 5, n_sure=995)
    assert export.shortfalls(export._agreement(ref, got, CONFIG, truth=np.zeros(1000, int))) == []


def test_an_out_of_scope_photo_is_right_when_abstained():
    other = np.log([0.05, 0.05, 0.05, 0.85])
    row = export._agreement(_logits(other, SURE), _logits(other, SURE), CONFIG, truth=np.array([-1, 0]))
    assert row["accuracy"] == row["fp32_accuracy"] == 1.0


def test_without_labels_close_call_flips_are_not_counted_but_confident_ones_are():
    ref = _logits(NEAR_TIE, NEAR_TIE, n_sure=98)
    row = export._agreement(ref, _logits(NEAR_TIE_FLIPPED, NEAR_TIE_FLIPPED, n_sure=98), CONFIG)
    assert row["top1_agreement"] == 0.98 and "accuracy" not in row and export.shortfalls(row) == []
    row = export._agreement(_logits(SURE, n_sure=99), _logits(SURE_FLIPPED, n_sure=99), CONFIG)
    assert export.shortfalls(row) == ["top1_agreement 0.9900 (close-call flips not counted) < 0.995"]


def test_an_explanation_graph_needs_its_median_and_its_lowest_correlation():
    row = export._agreement(_logits(n_sure=10), _logits(n_sure=10), CONFIG)
    assert export.shortfalls({**row, "relevance_median": 0.97, "relevance_lowest": 0.81}) == []
    assert export.shortfalls({**row, "relevance_median": 0.94, "relevance_lowest": 0.90}) == [
        "relevance_median 0.9400 < 0.95"]
    assert export.shortfalls({**row, "relevance_median": 0.99, "relevance_lowest": 0.79}) == [
        "relevance_lowest 0.7900 < 0.8"]


def test_an_explanation_graph_that_fails_in_int8_stays_float_with_fp16_weights(tiny_vit, imagefolder, tmp_path,
                                                                                 monkeypatch):
    """--int8-only keeps a float explanation graph where the int8 one misses the relevance bar: its block weights
    stored fp16 and cast up, the classifier left as it was, so that `parkclf teach` can still swap it."""
    import shutil

    import onnx

    from parkclf import graphs
    from parkclf.engine import OnnxEngine
    from parkclf.images import image_files

    folder = tmp_path / "model"
    shutil.copytree(tiny_vit, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "id2label": {"0": "red", "1": "blue"},
                                                    "label2id": {"red": 0, "blue": 1}}))
    monkeypatch.setattr(export, "MIN_RELEVANCE_MEDIAN", 1.5)  # no int8 graph can reach it
    report = export.export(folder, photos=image_files(imagefolder), int8_only=True)
    assert "explain_quantized.onnx" not in report["files"] and "explain.onnx" in report["files"]
    row = report["graphs"]["explain.onnx"]
    assert row["weights"] == "fp16" and row["relevance_photos"] == 24 and row["relevance_median"] > 0.99
    assert any("was not kept: relevance_median" in n for n in report["notes"])
    graph = onnx.load(str(folder / "onnx" / "explain.onnx"))
    halves = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) >= 12  # 2 blocks x (q, k, v, out, 2 MLP), forward and backward
    heat, logits = OnnxEngine(folder, precision="int8", patch_size=8).relevance(
        np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32), [0, 1])
    assert heat.shape == (4, 4) and logits.shape == (1, 2)
    assert graphs.swap_explain(graph.graph, np.ones((3, 32), np.float32), np.zeros(3, np.float32))
