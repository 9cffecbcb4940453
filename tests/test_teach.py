"""``parkclf teach``: a new classifier from photos per class, through the serving engine, with no torch.

Fast tier: a tiny random ViT exported as `parkclf export` writes it, and generated photos. Real tier: the embedded
model taught on scene photos, its labels compared in the app's engine, ``transformers.pipeline`` and (browser tier)
the in-browser page.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parkclf import head
from parkclf.errors import UsageError
from parkclf.teach import TeachError, TeachLimits, photos_from_folder, teach

from conftest import EMBEDDED, ROOT, SCENES, make_imagefolder, make_photo, needs_shared, save_tiny_vit

CLASSES = ("red", "green", "blue")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny ViT with three labels and its onnx/ export (the graphs `parkclf export` writes)."""
    from parkclf.export import export
    from parkclf.images import image_files

    root = tmp_path_factory.mktemp("teach-base")
    folder = save_tiny_vit(root / "base", num_labels=3)
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label=dict(enumerate(("cat", "dog", "other"))), label2id={"cat": 0, "dog": 1, "other": 2},
                  out_of_scope_label="other", calibration_temperature=1.0, abstain_threshold=0.4)
    (folder / "config.json").write_text(json.dumps(config))
    photos = make_imagefolder(root / "export-photos", per_class=4, classes=CLASSES, size=(40, 40), seed=99)
    export(folder, photos=image_files(photos))
    return folder


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "photos", per_class=8, classes=CLASSES, size=(48, 40))


def test_the_head_fit_is_scikit_learns_multinomial_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    x = rng.normal(0, 1, (4, 20))[y] + rng.normal(0, 2, (120, 20))
    for C in (0.01, 1.0):
        theta = head.fit_logistic(x, y, 4, C)
        ours = np.exp(x @ theta[:-1] + theta[-1])
        ours /= ours.sum(1, keepdims=True)
        theirs = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(x, y).predict_proba(x)
        assert np.abs(ours - theirs).max() < 1e-4, C


def test_cross_validation_scores_each_photo_without_it_and_folds_keep_classes_even():
    y = np.repeat(np.arange(3), [2, 7, 11])
    fold = head.stratified_folds(y, 2)
    assert all(set(fold[y == c]) == {0, 1} for c in range(3))
    x = np.random.default_rng(1).normal(0, 1, (20, 8)) + 3 * np.eye(3)[y] @ np.ones((3, 8)) * np.arange(8)
    fit = head.fit_head(x, y, 3)
    assert fit.folds == 2 and fit.C in head.C_GRID and fit.heldout_logits.shape == (20, 3)
    # the held-out logits are not the final model's own (it saw every photo)
    assert not np.allclose(fit.heldout_logits, x @ fit.weight.T + fit.bias, atol=1e-3)
    assert fit.weight.flags["C_CONTIGUOUS"]


def test_a_background_bank_is_taught_as_none_of_these_and_kept_out_of_the_metrics():
    """Three clusters taught, a fourth the bank: the bank's rows become the out-of-scope class, the metrics count only
    the taught photos, and a photo from the bank's region is abstained on while the taught ones are answered."""
    from parkclf.calibration import in_scope_scores
    from parkclf.teach import KEEP_RATE_WITH_BACKGROUND, NONE_OF_THESE, Background, fit_classes

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (4, 16))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (20, 16)) for c in range(3)]).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    bank = Background((centres[3] + rng.normal(0, 1, (30, 16))).astype(np.float32), "a test cluster")
    fit, calib, metrics = fit_classes(x, y, ["a", "b", "c"], bank)
    assert fit.weight.shape == (4, 16) and calib["out_of_scope_label"] == NONE_OF_THESE
    assert metrics["n_photos"] == 60 and sum(map(sum, metrics["confusion"])) == 60
    assert list(metrics["per_class"]) == ["a", "b", "c"]
    assert metrics["keep_rate"] >= KEEP_RATE_WITH_BACKGROUND - 0.05  # all, where the scores tie at 1
    assert metrics["background"] == {"rows": 30, "about": "a test cluster", "abstained": pytest.approx(1.0, abs=0.05)}
    new = np.concatenate([centres[:3] + rng.normal(0, 1, (3, 16)), centres[3:] + rng.normal(0, 1, (1, 16))])
    _, score = in_scope_scores(new @ fit.weight.T + fit.bias, ["a", "b", "c", NONE_OF_THESE],
                               calib["calibration_temperature"], NONE_OF_THESE)
    assert (score[:3] >= calib["abstain_threshold"]).all() and score[3] < calib["abstain_threshold"]
    # without a bank: the taught classes only, and the high keep rate of before
    fit, calib, metrics = fit_classes(x, y, ["a", "b", "c"], None)
    assert fit.weight.shape == (3, 16) and calib["out_of_scope_label"] is None and "background" not in metrics


def test_the_report_counts_what_a_person_reads():
    r = head.report(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"])
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["per_class"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8),
                                   "support": 2}
    assert r["per_class"]["c"]["f1"] == 0.0


def test_a_taught_checkpoint_loads_everywhere_and_answers_with_the_new_classifier(base, photos, tmp_path):
    import torch
    from safetensors.numpy import load_file
    from transformers import pipeline

    from parkclf.classifier import Classifier
    from parkclf.explain import relevance_map
    from parkclf.images import image_files

    seen = []
    taught = teach(photos_from_folder(photos), tmp_path / "out", base=str(base),
                   progress=lambda done, total: seen.append((done, total)))
    assert taught.labels == sorted(CLASSES)  # the class folders, in name order
    assert seen[-1] == (24, 24) and taught.counts == dict.fromkeys(CLASSES, 8)
    assert taught.metrics["method"] == "5-fold" and sum(map(sum, taught.metrics["confusion"])) == 24
    config = json.loads((taught.folder / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"} and "out_of_scope_label" not in config
    assert config["abstain_threshold"] == taught.metrics["abstain_threshold"] > 0
    card = (taught.folder / "README.md").read_text()
    assert "5-fold cross-validation" in card and "blue 8, green 8, red 8" in card and "base" in card
    exported = json.loads((taught.folder / "onnx" / "export.json").read_text())
    assert set(exported["files"]) == {p.name for p in (taught.folder / "onnx").iterdir()} - {"export.json"}
    # every graph of the base is swapped, the int8 explanation graph too (its backward head is stored fp16)
    assert set(exported["files"]) >= {"model_quantized.onnx", "explain_quantized.onnx"}, exported["notes"]

    # the graphs the app serves compute the new classifier on the engine's own features
    files = image_files(photos)
    served = Classifier.from_pretrained(str(taught.folder), engine="onnx")
    pv = served.pixel_values([Image.open(f) for f in files])
    tensors = load_file(taught.folder / "model.safetensors")
    w, b = tensors["classifier.weight"].astype(np.float32), tensors["classifier.bias"].astype(np.float32)
    assert np.allclose(served.engine.logits(pv), served.engine.features(pv) @ w.T + b, atol=1e-4)
    # ... and transformers (torch, from model.safetensors) gives the same labels
    pipe = pipeline("image-classification", model=str(taught.folder))
    predicted = [p.label for p in served.predict_batch(files)]
    assert [pipe(f, top_k=1)[0]["label"] for f in files] == predicted
    # the explanation graph explains the new classifier's best class, as captum does on the torch model
    if "explain.onnx" in exported["files"]:
        heat, _ = served.engine.relevance(pv[:1], served.real_ids)
        ref, _ = relevance_map(pipe.model.float().eval(), torch.from_numpy(pv[:1]), served.real_ids)
        assert np.corrcoef(heat.ravel(), ref.ravel())[0, 1] > 0.95


def test_teaching_runs_on_the_serving_stack_without_torch(base, photos, tmp_path):
    code = ("import sys; from parkclf.cli import main; rc = main(sys.argv[1:]); "
            "print('RESULT', rc, 'torch' in sys.modules, 'transformers' in sys.modules, 'sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, "teach", str(photos), "--output-dir", str(tmp_path / "out"),
                        "--base", str(base)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("RESULT")[-1].split() == ["0", "False", "False", "False"], r.stdout[-2000:]
    assert "Held-out accuracy" in r.stdout and f"Model saved to {tmp_path / 'out'}" in r.stdout
    assert (tmp_path / "out" / "onnx" / "model.onnx").exists()


def test_the_command_turns_a_mistake_into_one_line_and_exit_code_2(photos, tmp_path, capsys):
    from parkclf.cli import main

    shutil.rmtree(photos / "green")
    shutil.rmtree(photos / "blue")
    assert main(["teach", str(photos), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "at least 2 classes" in err and "(red)" in err and "Traceback" not in err


def _jpeg(seed: int, colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    make_photo(colour, size=(40, 32), seed=seed).save(buf, "JPEG")
    return buf.getvalue()


def _classes(n_classes: int = 2, per_class: int = 3) -> dict[str, list[bytes]]:
    colours = [(200, 40, 40), (40, 170, 60), (40, 60, 200)]
    return {f"class{c}": [_jpeg(100 * c + i, colours[c % 3]) for i in range(per_class)] for c in range(n_classes)}


@pytest.mark.parametrize(("names", "message"), [
    (["only"], "at least 2 classes"),
    (["a", "  "], "Class 2 has no name"),
    (["Beach", "beach"], "Two classes are called 'Beach' and 'beach'"),
    (["a/b", "c"], "cannot be a folder name"),
    ([".hidden", "c"], "cannot be a folder name"),
    (["CON", "c"], "cannot be a folder name"),
    (["x" * 65, "c"], "at most 64"),
    ([f"c{i}" for i in range(11)], "At most 10 classes"),
    (["None of these", "c"], "what the model answers for a photo unlike all"),
])
def test_class_names_and_counts_that_cannot_be_taught_get_a_sentence(names, message, tmp_path):
    photos = {n: [_jpeg(i), _jpeg(i + 50)] for i, n in enumerate(names)}
    with pytest.raises(TeachError, match=message):
        teach(photos, tmp_path / "out", base=str(EMBEDDED))
    assert not (tmp_path / "out").exists()


def test_caps_on_photos_and_pixels_refuse_the_run_before_any_decoding(base, tmp_path):
    photos = _classes(per_class=4)
    with pytest.raises(TeachError, match="'class0' has 4 photos; at most 3 per class"):
        teach(photos, tmp_path / "a", base=str(base), limits=TeachLimits(max_per_class=3))
    with pytest.raises(TeachError, match="hold 8 photos; at most 7 in all"):
        teach(photos, tmp_path / "b", base=str(base), limits=TeachLimits(max_total=7))
    with pytest.raises(TeachError, match="would decode to .* megapixels; a teaching run may hold at most 0"):
        teach(photos, tmp_path / "c", base=str(base), limits=TeachLimits(max_pixels=8 * 40 * 32 - 1))


def test_unreadable_photos_are_skipped_and_listed_and_a_class_left_with_one_is_refused(base, tmp_path):
    photos = _classes(per_class=3)
    photos["class0"] += [("torn.jpg", _jpeg(7)[:300]), ("notes.jpg", b"not an image")]
    taught = teach(photos, tmp_path / "ok", base=str(base))
    assert taught.counts == {"class0": 3, "class1": 3}
    assert [name for name, _ in taught.skipped] == ["class0/torn.jpg", "class0/notes.jpg"]
    assert all(why.endswith(".") and "/" not in why for _, why in taught.skipped)
    photos["class1"] = photos["class1"][:1] + [("empty.png", b"")]
    with pytest.raises(TeachError, match=r"'class1' has 1 readable photo \(1 could not be read\); each class needs "
                                         "at least 2"):
        teach(photos, tmp_path / "refused", base=str(base))



def test_a_class_whose_photos_are_all_in_another_class_is_refused_naming_the_copies(base, tmp_path):
    photos = _classes(per_class=3)
    photos["class1"] = list(photos["class0"])  # the same three photos dropped in both rows
    with pytest.raises(TeachError, match=r"'class1' has 0 readable photos \(3 are photos already in another class\)"):
        teach(photos, tmp_path / "refused", base=str(base))


def test_a_photo_sent_in_two_classes_is_said_and_its_copy_left_out(base, tmp_path):
    photos = _classes(per_class=3)
    photos["class1"].append(("copy.jpg", photos["class0"][1]))
    taught = teach(photos, tmp_path / "out", base=str(base))
    assert taught.counts == {"class0": 3, "class1": 3}
    assert taught.duplicates == ["class1/copy.jpg is the same photo as class0/photo 2; the copy in 'class1' was left "
                                 "out."]


def test_a_folder_that_holds_other_files_is_never_replaced(base, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(UsageError, match="already holds files that are not a model"):
        teach(_classes(), out, base=str(base))
    assert (out / "thesis.tex").read_text() == "keep me"
    first = teach(_classes(), tmp_path / "model", base=str(base))
    again = teach(_classes(), first.folder, base=str(base))  # an earlier model is replaced
    assert again.folder == first.folder and (again.folder / "config.json").exists()


def test_photos_from_folder_reads_class_folders_and_says_what_it_expected(tmp_path):
    root = make_imagefolder(tmp_path / "p", per_class=2, classes=("b", "a"))
    (root / ".cache").mkdir()
    assert {k: len(v) for k, v in photos_from_folder(root).items()} == {"a": 2, "b": 2}
    with pytest.raises(TeachError, match=r"expected .*/<class>/\*\.jpg"):
        photos_from_folder(tmp_path / "p" / "a")


# ---------------------------------------------------------------- real tier: the embedded model on scene photos

BASE = Path(os.environ.get("PARKCLF_TEACH_BASE", EMBEDDED))  # another checkpoint with onnx/ to teach from
SCENE_CLASSES = ("forest", "sea", "street")
UNSEEN_CLASS = "mountain"  # never taught: the model should say "none of these" to many of them
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 20


@pytest.fixture(scope="module")
def scenes_taught(tmp_path_factory):
    from parkclf.images import image_files

    if not (SCENES.exists() and (BASE / "onnx").exists()):
        pytest.skip(f"real tier: the scene photos or {BASE}/onnx/ are missing")
    photos = {c: image_files(SCENES / "train" / c)[:TRAIN_PER_CLASS] for c in SCENE_CLASSES}
    taught = teach(photos, tmp_path_factory.mktemp("scenes") / "model", base=str(BASE))
    test = [Path(f) for c in SCENE_CLASSES for f in image_files(SCENES / "test" / c)[:TEST_PER_CLASS]]
    unseen = [Path(f) for f in image_files(SCENES / "test" / UNSEEN_CLASS)[:TEST_PER_CLASS]]
    return taught, test, unseen


def pipeline_answers(pipe, files: list[Path], config: dict) -> list[tuple[str, bool]]:
    """(closest real class, abstained) from transformers' own logits, by the rule config.json states: the calibrated
    probability of the best real class against the threshold, with "none of these" keeping the rest of 1."""
    from parkclf.calibration import in_scope_scores

    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    ood = config.get("out_of_scope_label")
    real = [n for n in labels if n != ood]
    out = []
    for f in files:
        raw = {r["label"]: r["score"] for r in pipe(str(f), top_k=None, function_to_apply="none")}
        probs, score = in_scope_scores(np.asarray([[raw[n] for n in labels]]), labels,
                                       config["calibration_temperature"], ood)
        out.append((real[int(probs[0].argmax())], bool(score[0] < config["abstain_threshold"])))
    return out


@needs_shared
def test_the_taught_embedded_model_gives_the_same_answers_in_the_app_and_in_transformers(scenes_taught):
    """The app's engine (OpenVINO static int8 on the base export's activation ranges, where it has them) against
    transformers' pipeline (torch fp32 from model.safetensors) and ONNX Runtime's dynamic int8 (what the page runs):
    the same closest class and the same abstain decision. The embedded model ships a background bank, so the taught
    model has a "none of these" class (out_of_scope_label); a photo of a class it was not taught (mountain) is
    abstained on. Three well-separated scene classes."""
    from transformers import pipeline

    from parkclf.classifier import Classifier
    from parkclf.engine import has_static_int8

    taught, test, unseen = scenes_taught
    config = json.loads((taught.folder / "config.json").read_text())
    assert config["out_of_scope_label"] == "none of these" and taught.metrics["background"]["rows"] > 0
    app = Classifier.from_pretrained(str(taught.folder))
    dynamic = Classifier.from_pretrained(str(taught.folder), engine="onnx-int8")
    pipe = pipeline("image-classification", model=str(taught.folder))
    ours = [(p.label, p.abstained) for p in app.predict_batch([str(f) for f in test + unseen])]
    theirs = pipeline_answers(pipe, test + unseen, config)
    page_graph = [(p.label, p.abstained) for p in dynamic.predict_batch([str(f) for f in test + unseen])]
    agree = np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
    same_graph = np.mean([a == b for a, b in zip(ours, page_graph, strict=True)])
    correct = np.mean([a == f.parent.name for (a, _), f in zip(ours[:len(test)], test, strict=True)])
    abstained_unseen = np.mean([abstained for _, abstained in ours[len(test):]])
    print(f"\n{len(test) + len(unseen)} scene photos: app vs pipeline {agree:.3f}, app vs dynamic int8 "
          f"{same_graph:.3f}, app accuracy {correct:.3f} (held-out estimate {taught.metrics['accuracy']:.3f}), "
          f"mountain photos abstained {abstained_unseen:.2f}")
    assert app.engine.name in (("openvino-int8-static", "onnxruntime-int8") if has_static_int8(BASE)
                               else ("onnxruntime-int8",))  # auto: whichever was faster here
    assert len(test) >= 30 and agree >= 0.95  # int8 against fp32: an abstain decision at the threshold may flip
    assert same_graph >= 0.95  # static scales against dynamic ones (the page itself is tested below)
    assert correct >= 0.8
    assert abstained_unseen >= 0.3  # before the background bank: none of these scene models ever abstained


@needs_shared
@pytest.mark.browser
def test_the_page_gives_the_taught_models_labels(scenes_taught, browser):
    from parkclf.classifier import Classifier

    pytest.importorskip("playwright")
    if not (ROOT / "web" / "node_modules" / "@huggingface" / "transformers").exists():
        pytest.skip("web/node_modules is missing: cd web && npm ci")
    from test_web import OfflinePage, page_url, serve_offline

    taught, test, unseen = scenes_taught
    test = test + unseen  # the page abstains where the app does, on a class never taught too
    app = Classifier.from_pretrained(str(taught.folder))
    with serve_offline(taught.folder, photos_dir=SCENES / "test") as server:
        page = OfflinePage(browser, page_url(server))
        try:
            got = [page.page.evaluate("u => window.classify(u)", f"{server}photos/{f.parent.name}/{f.name}")
                   for f in test]
        finally:
            page.close()
    want = app.predict_batch([str(f) for f in test])
    same = [g["label"] == w.label and g["abstained"] == w.abstained for g, w in zip(got, want, strict=True)]
    print(f"\npage vs app on {len(test)} scene photos: {sum(same)}/{len(same)} agree")
    assert np.mean(same) >= 0.98 and not page.blocked and not page.errors, (page.blocked, page.errors)


def test_requirements_hold_what_teaching_imports():
    """Teaching runs with requirements.txt alone: what it imports is listed there (not only in -train)."""
    serving = (ROOT / "requirements.txt").read_text()
    for package in ("safetensors", "threadpoolctl", "onnx", "openvino", "onnxruntime", "huggingface_hub"):
        assert f"\n{package}==" in serving, package
    assert "\nscikit-learn==" not in serving and "\ntorch==" not in serving
