import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification

from parkclf.classifier import Classifier
from parkclf.images import ImageError
from parkclf.processing import Preprocessor, open_images
from parkclf.training.augment import dataset_transform

from conftest import COLOURS, EMBEDDED, PARKS, make_photo, needs_shared


@pytest.fixture
def tiny_classifier(tiny_vit):
    model = AutoModelForImageClassification.from_pretrained(tiny_vit)
    model.config.id2label = {0: "blue", 1: "other"}
    model.config.label2id = {"blue": 0, "other": 1}
    model.config.out_of_scope_label = "other"
    model.config.calibration_temperature = 1.5
    model.config.abstain_threshold = 0.6
    return Classifier.from_model(model, Preprocessor.from_pretrained(tiny_vit), dtype=torch.float32)


def test_training_eval_and_serving_see_identical_tensors(tiny_vit, tmp_path):
    path = tmp_path / "p.jpg"
    make_photo(COLOURS["red"], size=(900, 600), seed=3).save(path, quality=90)
    batch = {"image": [{"path": str(path), "bytes": None}], "label": [0]}
    train_eval = dataset_transform(Preprocessor.from_pretrained(tiny_vit))(batch)
    clf = Classifier.from_pretrained(str(tiny_vit))
    served = clf.pixel_values(open_images([str(path)], clf.preprocessor))
    assert torch.equal(train_eval["pixel_values"], torch.from_numpy(served))


def test_prediction_schema_and_out_of_scope_class_is_hidden(tiny_classifier):
    pred = tiny_classifier.predict(make_photo(COLOURS["blue"]))
    d = pred.to_dict()
    assert set(d) == {"label", "confidences", "abstained"}
    assert list(d["confidences"]) == ["blue"] and d["label"] == "blue"
    # the reported confidence is the thresholded score: what a client sees is what the abstain rule uses
    assert 0.0 <= d["confidences"]["blue"] <= 1.0 and math.isclose(d["confidences"]["blue"], pred.score, rel_tol=1e-6)
    assert d["abstained"] == (pred.score < tiny_classifier.threshold)


def test_abstains_below_the_stored_threshold(tiny_classifier):
    tiny_classifier.threshold = 1.01
    assert tiny_classifier.predict(make_photo(COLOURS["blue"])).abstained
    tiny_classifier.threshold = 0.0
    assert not tiny_classifier.predict(make_photo(COLOURS["blue"])).abstained


def test_batch_matches_single(tiny_classifier):
    photos = [make_photo(COLOURS["blue"], seed=s) for s in range(3)]
    batch = tiny_classifier.predict_batch(photos)
    for p, b in zip(photos, batch, strict=True):
        assert tiny_classifier.predict(p).confidences == pytest.approx(b.confidences, abs=1e-4)


def test_unreadable_input_raises_image_error(tiny_classifier):
    with pytest.raises(ImageError):
        tiny_classifier.predict(b"not an image")


def test_explain_returns_overlay_and_map(tiny_classifier):
    overlay, pred, heat = tiny_classifier.explain(make_photo(COLOURS["blue"], size=(200, 100)))
    # the photo as decoded for the model (a big one is reduced right after decoding), aspect kept
    assert overlay.size == (100, 50) and overlay.mode == "RGB"
    assert heat.shape == (4, 4) and heat.min() >= 0 and heat.max() <= 1
    assert pred.label == "blue"


@needs_shared
@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_fast_path_agrees_with_the_plain_fp32_pipeline_on_real_photos():
    """Guard for the serving speed-ups (draft JPEG decoding, bf16 weights): same top-1 as the reference."""
    from PIL import Image
    from transformers import pipeline

    ref = pipeline("image-classification", model=str(EMBEDDED), dtype=torch.float32)
    fast = Classifier.from_pretrained(str(EMBEDDED), engine="torch")
    files = [f for park in ("yosemite", "yellowstone", "sequoia") for f in sorted((PARKS / park).iterdir())[:4]]
    for f in files:
        r = ref(Image.open(f).convert("RGB"), top_k=None)
        expected = max(r, key=lambda d: d["score"])["label"]
        logits = fast.logits(open_images([str(f)], fast.preprocessor))[0]
        assert fast.all_labels[int(logits.argmax())] == expected, f


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_embedded_model_abstains_on_everyday_images():
    """Real everyday and scientific photos that ship inside scikit-image (astronaut, cat, coffee, rocket,
    motorcycles, coins, text...): none of them is a park. The embedded model's threshold (0.15) is set low so
    that park photos by new photographers are answered; measured here with the soup of three and fifteen
    hard-negative repeats: 24 of 26 abstained, and one or two answered with 50% or more, where the page's
    low-confidence wording stops (the Hubble deep field, as Sequoia at 55-56%; the gravel texture sits on the line:
    0.492 in fp32, 0.500 on ONNX Runtime int8, 0.488 on OpenVINO with a dynamic batch, 0.518 on the served
    fixed-shape graph, which is as close to fp32 as the dynamic one over 241 out-of-scope photos, see
    docs/results.md; five repeats: 22 of 26 and none; the earlier single model: 18 of 26, and the cat at 90%)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    assert len(files) >= 20, "scikit-image ships fewer sample photos than expected"
    preds = Classifier.from_pretrained(str(EMBEDDED)).predict_batch(files)
    scores = {Path(f).name: round(p.score, 3) for f, p in zip(files, preds, strict=True)}
    assert sum(p.abstained for p in preds) / len(files) >= 0.65, scores
    assert sum(p.score >= 0.5 for p in preds) <= 2, scores


def test_a_hub_model_whose_explanation_graph_stayed_float_downloads_that_graph_and_no_other_fp32(monkeypatch, tmp_path):
    import huggingface_hub

    from parkclf.classifier import resolve

    repo = ["config.json", "onnx/model_quantized.onnx", "onnx/model.onnx", "onnx/explain.onnx", "model.safetensors"]
    asked = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda name: list(repo))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, allow_patterns: asked.append(allow_patterns) or str(tmp_path))
    resolve("me/model")
    assert "onnx/explain.onnx" in asked[-1] and not {"onnx/model.onnx", "model.safetensors"} & set(asked[-1])
    repo.append("onnx/explain_quantized.onnx")  # both explanation graphs: the int8 one alone
    resolve("me/model")
    assert "onnx/explain_quantized.onnx" in asked[-1] and "onnx/explain.onnx" not in asked[-1]
