import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from parkclf.errors import UsageError
from parkclf.export import STATIC_ROW
from parkclf.training import main

# --no-export-onnx: the export (half a minute even for the tiny ViT) is tested once, below, and in test_export.py
FAST = ["--num-train-epochs", "2", "--per-device-train-batch-size", "8", "--bf16", "false",
        "--no-export-onnx"]


def test_full_finetune_writes_a_loadable_checkpoint_and_its_onnx_export(tiny_vit, imagefolder, tmp_path):
    from parkclf.classifier import Classifier

    out = tmp_path / "out"
    metrics = main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
                    *FAST[:-1]])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "blue", "1": "red"}
    assert cfg["calibration_temperature"] > 0 and 0 <= cfg["abstain_threshold"] <= 1
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert (out / "preprocessor_config.json").exists()
    assert metrics["test"]["accuracy"] >= 0.5
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["confusion_matrix"] and len(saved["test"]["f1"]) == 2
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert "model-index" in (out / "README.md").read_text()
    assert load_file(out / "model.safetensors")["classifier.weight"].shape == (2, 32)
    exported = json.loads((out / "onnx" / "export.json").read_text())
    counts = json.loads((out / "data_report.json").read_text())["counts"]
    assert {"model.onnx", "explain.onnx"} <= set(exported["files"])
    assert exported["n_photos"] == sum(counts["test"].values()) + sum(counts["validation"].values())
    assert "## ONNX export" in (out / "README.md").read_text()
    photo = str(next((imagefolder / "red").iterdir()))
    onnx, torch_ = Classifier.from_pretrained(str(out)), Classifier.from_pretrained(str(out), engine="torch")
    static = "activation_ranges.json" in exported["files"]  # kept only where the static int8 graph agrees
    assert static == (STATIC_ROW in exported["graphs"])
    assert onnx.engine.name.startswith(("openvino", "onnxruntime") if static else "onnxruntime")  # auto: the faster
    assert torch_.engine.name.startswith("torch")
    assert onnx.predict(photo).confidences == pytest.approx(torch_.predict(photo).confidences, abs=0.02)
    check_attention_outputs_stay_float(out / "onnx", cfg["num_hidden_layers"], tmp_path)


def check_attention_outputs_stay_float(onnx_dir, layers: int, tmp_path):
    """In both int8 graphs each attention output projection stays a float MatMul, with fp16 weights cast up; in
    the explanation graph the backward linears (fed by gradients) stay float too."""
    import onnx as onnx_lib
    from onnx import TensorProto

    from parkclf.export import _attention_outputs, _backward, _quantize

    for name in ("model.onnx", "explain.onnx"):
        graph = onnx_lib.load(str(onnx_dir / name)).graph
        backward = set(_backward(graph))
        assert bool(backward) == (name == "explain.onnx"), (name, backward)
        forward = [n for n in _attention_outputs(graph) if n not in backward]
        assert len(forward) == layers, (name, forward)
        _quantize(onnx_dir / name, tmp_path / name)
        q = onnx_lib.load(str(tmp_path / name)).graph
        ops = {n.name: n.op_type for n in q.node}
        assert all(ops[n] == "MatMul" for n in [*forward, *backward]), name
        halves = {i.name for i in q.initializer if i.data_type == TensorProto.FLOAT16}
        casts = [n for n in q.node if n.op_type == "Cast" and n.input[0] in halves]
        assert len(casts) >= layers, name
        users = [n.op_type for n in q.node for c in casts if c.output[0] in n.input]
        assert users and set(users) == {"MatMul"}, (name, users)
        assert sum(n.op_type == "MatMulInteger" for n in q.node) > 0  # the rest is int8


def test_freeze_backbone_changes_only_the_head(tiny_vit, imagefolder, tmp_path):
    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--freeze-backbone", *FAST])
    before, after = load_file(tiny_vit / "model.safetensors"), load_file(out / "model.safetensors")
    assert (before["vit.encoder.layer.0.attention.attention.query.weight"]
            == after["vit.encoder.layer.0.attention.attention.query.weight"]).all()
    assert not (out / "checkpoints").exists()


def test_soup_saves_the_mean_of_members_trained_with_successive_seeds(tiny_vit, imagefolder, tmp_path):
    out = tmp_path / "out"
    metrics = main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
                    "--soup", "2", "--seed", "7", *FAST])
    a, b = (load_file(out / "soup" / f"member-{i}" / "model.safetensors") for i in (0, 1))
    soup = load_file(out / "model.safetensors")
    key = "vit.encoder.layer.0.attention.attention.query.weight"
    assert not torch.equal(a[key], b[key])  # the seeds really gave two different models
    for k in soup:
        torch.testing.assert_close(soup[k], (a[k] + b[k]) / 2)
    assert metrics["soup_seeds"] == [7, 8]
    # calibrated on out-of-fold logits: each member on its own validation split, so twice the photos
    n_val = sum(json.loads((out / "data_report.json").read_text())["counts"]["validation"].values())
    assert sum(metrics["validation"]["support"]) == 2 * n_val
    assert "mean of the weights of 2" in (out / "README.md").read_text()
    # A rerun reuses finished members instead of training them again.
    before = (out / "soup" / "member-1" / "model.safetensors").stat().st_mtime_ns
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--soup", "2", "--seed", "7", *FAST])
    assert (out / "soup" / "member-1" / "model.safetensors").stat().st_mtime_ns == before
    # --calibrate-only on a soup recalibrates on the members' out-of-fold logits again, weights untouched ...
    weights = (out / "model.safetensors").read_bytes()
    recal = ["--data-dir", str(imagefolder), "--model-name-or-path", str(out), "--output-dir", str(out),
             "--calibrate-only", "--seed", "7", "--bf16", "false", "--no-export-onnx"]
    again = main(recal)
    assert (out / "model.safetensors").read_bytes() == weights
    assert sum(again["validation"]["support"]) == 2 * n_val and again["soup_seeds"] == [7, 8]
    # ... and, without its members, says what it needs instead of calibrating on photos the soup trained on.
    shutil.rmtree(out / "soup")
    with pytest.raises(UsageError, match="needs --seed 7 and its members"):
        main(recal)


def test_soup_with_a_frozen_backbone_or_below_one_names_the_fix(tiny_vit, imagefolder, tmp_path):
    args = ["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(UsageError, match="leave it out with --freeze-backbone"):
        main([*args, "--soup", "2", "--freeze-backbone", *FAST])
    with pytest.raises(ValueError, match="1 or more"):
        main([*args, "--soup", "0", *FAST])


def test_label_set_mismatch_is_refused_without_overwrite(tiny_vit, imagefolder, tmp_path):
    out = tmp_path / "out"
    args = ["--model-name-or-path", str(tiny_vit), "--output-dir", str(out), "--freeze-backbone", *FAST]
    main(["--data-dir", str(imagefolder), *args])
    (imagefolder / "red").rename(imagefolder / "green")
    with pytest.raises(UsageError, match="--replace-model"):
        main(["--data-dir", str(imagefolder), *args])
    main(["--data-dir", str(imagefolder), *args, "--replace-model"])
    assert json.loads((out / "config.json").read_text())["id2label"]["1"] == "green"


def test_hard_negatives_join_the_out_of_scope_class_repeated_and_are_reported(tiny_vit, imagefolder, tmp_path):
    from conftest import make_imagefolder

    easy = make_imagefolder(tmp_path / "easy", per_class=8, classes=("green",), seed=77)
    hard = make_imagefolder(tmp_path / "hard", per_class=8, classes=("green",), seed=500)
    out = tmp_path / "out"
    args = ["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
            "--freeze-backbone", "--negatives-dir", str(easy), *FAST]
    main([*args, "--hard-negatives-dir", str(hard), "--hard-negatives-repeat", "3"])
    report = json.loads((out / "data_report.json").read_text())
    in_train = report["hard_negatives"]["photos_in_train"]
    assert report["hard_negatives"]["repeat"] == 3 and 0 < in_train <= 8  # the rest went to validation/test
    assert json.loads((out / "config.json").read_text())["id2label"]["2"] == "other"
    card = (out / "README.md").read_text()
    assert f"{in_train} are hard negatives (`--hard-negatives-dir`), each seen\n  3 times" in card
    with pytest.raises(ValueError, match="give each negatives folder once"):
        main([*args, "--hard-negatives-dir", str(easy), "--replace-model"])
    with pytest.raises(ValueError, match="--hard-negatives-repeat 0: give how many times"):
        main([*args, "--hard-negatives-dir", str(hard), "--hard-negatives-repeat", "0"])


def test_other_class_folders_become_hard_negatives_read_from_the_data_folder(tiny_vit, tmp_path):
    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "data", per_class=8, classes=("red", "blue", "green", "grey"), seed=3)
    out = tmp_path / "out"
    args = ["--data-dir", str(data), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
            "--freeze-backbone", *FAST]
    main([*args, "--classes", "red", "blue", "--other-classes-as-hard-negatives", "--hard-negatives-repeat", "2",
          "--dataloader-num-workers", "1"])  # decoding in a worker process, as on a GPU
    labels = json.loads((out / "config.json").read_text())["id2label"]
    assert sorted(labels.values()) == ["blue", "other", "red"]
    report = json.loads((out / "data_report.json").read_text())
    assert report["hard_negatives"]["repeat"] == 2 and 8 < report["hard_negatives"]["photos_in_train"] <= 16
    with pytest.raises(ValueError, match="needs --data-dir and --classes"):
        main([*args, "--other-classes-as-hard-negatives", "--replace-model"])


def trained_then_recalibrated(tiny_vit, imagefolder, out, *calibrate_args):
    """A frozen-backbone model, then --calibrate-only on it: (first metrics, its weights' bytes, second metrics)."""
    data = ["--data-dir", str(imagefolder), *FAST]
    first = main([*data, "--model-name-or-path", str(tiny_vit), "--output-dir", str(out), "--freeze-backbone"])
    weights = (out / "model.safetensors").read_bytes()
    again = main([*data, "--model-name-or-path", str(out), "--output-dir", str(out), "--calibrate-only",
                  *calibrate_args])
    return first, weights, again


def test_calibrate_only_resets_the_threshold_and_keeps_the_weights(tiny_vit, imagefolder, tmp_path):
    out = tmp_path / "out"
    first, weights, again = trained_then_recalibrated(tiny_vit, imagefolder, out, "--abstain-threshold", "0.3")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["abstain_threshold"] == 0.3 and again["calibration"]["abstain_threshold"] == 0.3
    assert (out / "model.safetensors").read_bytes() == weights
    assert again["test"] == first["test"]  # the same split and the same model: only the abstain rule moved
    assert again["base_model"] == str(tiny_vit) and again["freeze_backbone"] is True
    assert not (out / "checkpoints").exists()


def test_calibrate_only_refuses_an_untrained_model_other_labels_or_a_bad_threshold(tiny_vit, imagefolder, tmp_path):
    with pytest.raises(UsageError, match="--calibrate-only needs a model that train.py trained"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir",
              str(tmp_path / "o"), "--calibrate-only", *FAST])
    trained = tmp_path / "trained"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(trained),
          "--freeze-backbone", *FAST])
    (imagefolder / "red").rename(imagefolder / "green")  # the trained head's classes no longer match the data
    with pytest.raises(UsageError, match=r"labels \['blue', 'green'\]; .* has \['blue', 'red'\]"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(trained), "--output-dir",
              str(tmp_path / "o2"), "--calibrate-only", *FAST])
    with pytest.raises(ValueError, match="not a probability; use a value in"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir",
              str(tmp_path / "o"), "--abstain-threshold", "15", *FAST])


def test_image_size_interpolates_position_embeddings_and_the_processor_follows(tiny_vit, imagefolder, tmp_path):
    import torch
    from transformers import pipeline

    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--image-size", "48", "--freeze-backbone", *FAST])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["image_size"] == 48
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 48, "width": 48}
    before = load_file(tiny_vit / "model.safetensors")["vit.embeddings.position_embeddings"]  # 1 + 4x4 patches
    after = load_file(out / "model.safetensors")["vit.embeddings.position_embeddings"]  # 1 + 6x6 patches
    grid = before[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    assert after.shape == (1, 37, 32) and torch.equal(after[:, :1], before[:, :1])
    assert torch.allclose(after[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, -1), atol=1e-6)
    answer = pipeline("image-classification", model=str(out))(str(next((imagefolder / "red").iterdir())))
    assert answer[0]["label"] in {"red", "blue"}


def test_center_crop_is_saved_in_the_processor_and_calibrate_only_adds_it_without_touching_the_weights(
        tiny_vit, imagefolder, tmp_path):
    from transformers import AutoImageProcessor, pipeline

    from parkclf.classifier import Classifier

    out = tmp_path / "out"
    first, weights, again = trained_then_recalibrated(tiny_vit, imagefolder, out, "--center-crop", "0.8")
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "DeiTImageProcessor" and saved["do_center_crop"] is True
    assert saved["crop_size"] == {"height": 32, "width": 32} and saved["size"] == {"height": 40, "width": 40}
    assert (out / "model.safetensors").read_bytes() == weights
    assert again["test"]["accuracy"] >= 0.5 and first["test"]["accuracy"] >= 0.5
    assert type(AutoImageProcessor.from_pretrained(out)).__name__ == "DeiTImageProcessor"
    photo = str(next((imagefolder / "red").iterdir()))
    assert pipeline("image-classification", model=str(out))(photo)[0]["label"] in {"red", "blue"}
    assert Classifier.from_pretrained(str(out)).predict(photo).label in {"red", "blue"}
    # with --image-size the crop keeps its share: the model reads 48 px, the photo is resized to 64 first
    sized = tmp_path / "sized"
    main(["--data-dir", str(imagefolder), *FAST, "--model-name-or-path", str(tiny_vit), "--output-dir", str(sized),
          "--freeze-backbone", "--image-size", "48", "--center-crop", "0.75"])
    saved = json.loads((sized / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == {"height": 48, "width": 48} and saved["size"] == {"height": 64, "width": 64}
    assert json.loads((sized / "config.json").read_text())["image_size"] == 48


def test_image_size_that_is_not_a_multiple_of_the_patch_names_the_fix(tiny_vit, imagefolder, tmp_path):
    with pytest.raises(UsageError, match="not a multiple of the patch size 8; use 48"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir",
              str(tmp_path / "o"), "--image-size", "50", "--freeze-backbone", *FAST])


def test_missing_data_dir_names_the_fix(tiny_vit, tmp_path):
    with pytest.raises(UsageError, match="expected .*<class>"):
        main(["--data-dir", str(tmp_path / "nope"), "--model-name-or-path", str(tiny_vit),
              "--output-dir", str(tmp_path / "o")])


def test_unwritable_output_dir_names_the_problem(tiny_vit, imagefolder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="Cannot write to --output-dir .*writable folder"):
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit),
              "--output-dir", str(blocker / "out"), "--freeze-backbone"])


def test_layer_decay_gives_lower_layers_smaller_learning_rates(tiny_vit):
    from transformers import AutoModelForImageClassification

    from parkclf.training.finetune import layer_decay_groups

    model = AutoModelForImageClassification.from_pretrained(tiny_vit)
    groups = layer_decay_groups(model, 1e-3, 0.5, 0.05)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    head = lr_of[id(named["classifier.weight"])]
    emb = lr_of[id(named["vit.embeddings.patch_embeddings.projection.weight"])]
    layer = [n for n in named if ".0." in n and "q_proj.weight" in n][0]
    assert head == 1e-3 and emb < lr_of[id(named[layer])] < head


def test_a_checkpoint_cut_off_mid_save_is_skipped(tmp_path):
    from parkclf.training.finetune import last_complete_checkpoint

    done, cut, torn = tmp_path / "checkpoint-3", tmp_path / "checkpoint-6", tmp_path / "checkpoint-9"
    for d in (done, cut, torn):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
    (done / "trainer_state.json").write_text("{}")
    (torn / "trainer_state.json").write_text("")  # killed while the Trainer was writing it (seen in CI)
    assert last_complete_checkpoint(str(tmp_path)) == str(done)
    assert not cut.exists() and not torn.exists()
    assert last_complete_checkpoint(str(tmp_path / "none")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")
def test_cuda_bf16_training_gives_a_checkpoint_that_serves_on_cpu(tiny_vit, imagefolder, tmp_path):
    """Trained on the GPU in bf16 mixed precision (--bf16 auto picks it there), served on the CPU in fp32:
    the saved weights are fp32 and the CPU reload gives the same answers as the GPU model."""
    import torch
    from transformers import AutoModelForImageClassification, TrainerCallback

    from parkclf.training import finetune, head

    seen = {}

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen.update(device=str(next(model.parameters()).device), bf16=args.bf16)

    real_trainer, real_features = finetune.SmoothedTrainer, head.head_features

    def spying(*a, callbacks=(), **kw):
        return real_trainer(*a, callbacks=[*callbacks, Spy()], **kw)

    def features_spy(model, *a, **kw):  # the head's features are cached by the GPU, not the host's CPU
        seen.setdefault("features_on", set()).add(str(model.device))
        return real_features(model, *a, **kw)

    finetune.SmoothedTrainer, head.head_features = spying, features_spy
    try:
        out = tmp_path / "out"
        main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
              "--num-train-epochs", "2", "--per-device-train-batch-size", "8"])
    finally:
        finetune.SmoothedTrainer, head.head_features = real_trainer, real_features
    assert seen == {"device": "cuda:0", "bf16": True, "features_on": {"cuda:0"}}
    assert all(t.dtype == torch.float32 for t in load_file(out / "model.safetensors").values())
    x = torch.rand(8, 3, 32, 32)
    cpu = AutoModelForImageClassification.from_pretrained(out).eval()
    gpu = AutoModelForImageClassification.from_pretrained(out).eval().cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        g = gpu(pixel_values=x.cuda()).logits.float().cpu()
    with torch.no_grad():
        c = cpu(pixel_values=x).logits
    assert (g.argmax(-1) == c.argmax(-1)).float().mean() >= 0.75
    assert torch.allclose(g, c, atol=0.1)


def test_a_rerendered_card_keeps_its_base_model_licence_and_notes(tiny_vit, imagefolder, tmp_path):
    """`parkclf card` and `parkclf export` re-render the card: what training wrote into it stays."""
    from parkclf.publish import card

    notes = tmp_path / "notes.md"
    notes.write_text("- Photos: my own, CC-BY.")
    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--freeze-backbone", "--base-model-id", "org/base", "--license", "mit", "--card-notes", str(notes), *FAST])
    card.rerender(out)
    text = (out / "README.md").read_text()
    assert "base_model: org/base" in text and "license: mit" in text and "my own, CC-BY" in text
    assert card.rerender(tmp_path) is None  # not a train.py folder: nothing to re-render


def test_figures_on_unseen_photographers_lead_the_card_and_the_about_box(tiny_vit, imagefolder, tmp_path):
    """`parkclf card --unseen-sources`: a visitor reads the first figures as how often the app is right, so the
    leave-sources-out ones come first, and the random split's follow, labelled as such."""
    from parkclf.app.ui import about_markdown
    from parkclf.classifier import Classifier
    from parkclf.publish import card

    out = tmp_path / "out"
    main(["--data-dir", str(imagefolder), "--model-name-or-path", str(tiny_vit), "--output-dir", str(out),
          "--freeze-backbone", *FAST])
    figures = tmp_path / "unseen.json"
    figures.write_text(json.dumps({"what": "four fold models", "photos": 50, "sources": 9, "accuracy": 0.61,
                                   "accuracy_ci": [0.47, 0.73], "auroc": 0.8, "auroc_ci": [0.7, 0.9],
                                   "answered": 0.9, "answered_ci": [0.79, 0.96], "out_of_scope_photos": 20}))
    with pytest.raises(UsageError, match="lacks auroc"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({k: v for k, v in json.loads(figures.read_text()).items() if k != "auroc"}))
        card.main([str(out), "--unseen-sources", str(bad)])
    card.main([str(out), "--unseen-sources", str(figures)])
    text = (out / "README.md").read_text()
    unseen, random_split = text.index("## Results on photographers it never saw"), text.index(
        "## Results (random held-out test split")
    assert unseen < random_split and "| 0.610 [0.47, 0.73] |" in text[unseen:random_split]
    card.rerender(out)  # kept in metrics.json: a later re-render keeps them
    assert "0.610 [0.47, 0.73]" in (out / "README.md").read_text()
    about = about_markdown(str(out), Classifier.from_pretrained(out), "me/model")
    assert about.index("On photographers it never saw") < about.index("Random test split")
    assert "accuracy 0.610 [0.470, 0.730]" in about


def test_early_stopping_patience_spans_the_same_epochs_whatever_the_checkpoint_steps():
    from parkclf.training.config import TrainArguments
    from parkclf.training.finetune import patience_evaluations

    def evaluations(**kw):
        return patience_evaluations(TrainArguments(output_dir="out", **kw), steps_per_epoch=41)

    assert evaluations() == 2  # evaluated at each epoch end: two epochs are two evaluations
    assert evaluations(checkpoint_steps=41) == 2
    assert evaluations(checkpoint_steps=10) == 10  # every 10 steps: five evaluations an epoch
    assert evaluations(checkpoint_steps=10, early_stopping_patience=1) == 5
