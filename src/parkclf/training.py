"""Fine-tune any AutoModelForImageClassification checkpoint on an imagefolder, with the Trainer.

The recipe is linear-probe-then-fine-tune (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
Features"): the head is first fitted on cached backbone features (the whole of ``--freeze-backbone``),
then the full model is fine-tuned with layer-wise learning-rate decay, so the first gradient steps
do not tear up pretrained features with a random head. Measured numbers are in the README.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from torch import nn
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification, EarlyStoppingCallback,
                          HfArgumentParser, Trainer, TrainingArguments, set_seed)
from transformers.trainer_utils import get_last_checkpoint

from . import calibration, card, data, hub
from .hardware import bf16_supported
from .config import DataArguments, ModelArguments, TrainArguments
from .metrics import load_classification
from .transforms import dataset_transform, draft_size, image_size, resize_size, resizes_to_fixed_size

logger = logging.getLogger("parkclf.train")
OUT_OF_SCOPE = "other"


def check_output_dir(output_dir: str, labels: list[str], overwrite: bool) -> None:
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"Cannot write to --output-dir {out} ({e.strerror or e}); "
                         "choose a writable folder with free space.") from None
    cfg = out / "config.json"
    if cfg.exists() and not overwrite:
        old = json.loads(cfg.read_text()).get("id2label", {})
        old_labels = [old[k] for k in sorted(old, key=int)]
        if old_labels and old_labels != labels:
            raise SystemExit(f"{out} already holds a model for labels {old_labels}, but this data has {labels}. "
                             "Use another --output-dir, or pass --overwrite-output-dir to replace it.")


def load_model(model_args: ModelArguments, labels: list[str]):
    id2label = dict(enumerate(labels))
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, num_labels=len(labels), id2label=id2label,
                                        label2id={v: k for k, v in id2label.items()}, trust_remote_code=False)
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True, use_safetensors=True,
        trust_remote_code=False)
    processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path)
    if model_args.image_size:
        set_image_size(model, processor, model_args.image_size)
    if model_args.center_crop is not None:
        processor = set_center_crop(processor, model_args.center_crop)
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        raise SystemExit(f"{model_args.model_name_or_path}: expected a linear `classifier` head "
                         f"(ViT, DeiT, DINOv2, BEiT, Swin, ConvNeXt...), found {type(getattr(model, 'classifier', None)).__name__}.")
    return model, processor


def set_image_size(model, processor, size: int) -> None:
    """Resize a ViT-style model's input: interpolate its learned position embeddings to the new patch grid and
    make the processor (saved with the checkpoint) resize photos to ``size``, so pipelines and the app follow."""
    emb = getattr(getattr(model, model.base_model_prefix, model), "embeddings", None)
    pos, patch = getattr(emb, "position_embeddings", None), getattr(model.config, "patch_size", None)
    if not isinstance(pos, nn.Parameter) or not hasattr(emb, "interpolate_pos_encoding") or not patch:
        raise SystemExit(f"--image-size needs a ViT-style model with learned position embeddings; "
                         f"{type(model).__name__} has none. Leave --image-size out.")
    if size % patch:
        raise SystemExit(f"--image-size {size} is not a multiple of the patch size {patch}; "
                         f"use {max(1, round(size / patch)) * patch}.")
    if not resizes_to_fixed_size(processor):
        raise SystemExit(f"--image-size supports processors that resize to height x width; this one has "
                         f"size={processor.size}. Leave --image-size out.")
    (h, _), (rh, _) = image_size(processor), resize_size(processor)
    tokens = (size // patch) ** 2 + 1
    if pos.shape[1] != tokens:
        with torch.no_grad():
            new = emb.interpolate_pos_encoding(torch.zeros(1, tokens, pos.shape[-1]), size, size)
        emb.position_embeddings = nn.Parameter(new.detach().clone())
    for part in (emb, getattr(emb, "patch_embeddings", None)):
        if hasattr(part, "image_size"):
            part.image_size = (size, size)
    if hasattr(getattr(emb, "patch_embeddings", None), "num_patches"):
        emb.patch_embeddings.num_patches = tokens - 1
    model.config.image_size = size
    if rh != h:  # a centre-cropping processor: keep the share of the photo it crops
        processor.crop_size = {"height": size, "width": size}
        size = round(size * rh / h)
    processor.size = {"height": size, "width": size}


def set_center_crop(processor, fraction: float):
    """A processor that shows the model the middle ``fraction`` of each side of a photo: it resizes to
    input/fraction and centre-crops the model's input size (transformers' DeiTImageProcessor, so plain pipelines
    load it). Training crops are unaffected; at evaluation the scene appears at about the scale the random
    training crops showed it (Touvron et al. 2019, "Fixing the train-test resolution discrepancy")."""
    from transformers import DeiTImageProcessor

    if not 0.5 <= fraction <= 1:
        raise SystemExit(f"--center-crop {fraction}: give the share of each side to keep, between 0.5 and 1 (e.g. 0.8).")
    if not resizes_to_fixed_size(processor):
        raise SystemExit(f"--center-crop supports processors that resize to height x width (ViT, DeiT); this one "
                         f"has size={processor.size} and its own crop. Leave --center-crop out.")
    h, w = image_size(processor)
    return DeiTImageProcessor(
        do_resize=True, size={"height": round(h / fraction), "width": round(w / fraction)},
        resample=processor.resample, do_center_crop=fraction < 1, crop_size={"height": h, "width": w},
        do_rescale=processor.do_rescale, rescale_factor=processor.rescale_factor,
        do_normalize=processor.do_normalize, image_mean=processor.image_mean, image_std=processor.image_std)


def check_trained_labels(name_or_path: str, labels: list[str]) -> None:
    """--calibrate-only reuses a trained head as it is: its classes must be this data's, in the same order."""
    config = AutoConfig.from_pretrained(name_or_path)
    trained = [config.id2label[i] for i in range(config.num_labels)]
    if getattr(config, "calibration_temperature", None) is None or trained != labels:
        raise SystemExit(f"--calibrate-only needs a model that train.py trained on this data's labels {labels}; "
                         f"{name_or_path} has {trained}. Pass the same --data-dir/--classes/--negatives-dir as its "
                         "training run, or train it first.")


def earlier_run(name_or_path: str, args: TrainArguments) -> dict:
    """With --calibrate-only, what the training run recorded (base model, frozen or not) stays in the metrics."""
    path = Path(name_or_path) / "metrics.json"
    return json.loads(path.read_text()) if args.calibrate_only and path.exists() else {}


def compute_device() -> torch.device:
    """This process's device: its GPU under torchrun/accelerate or on a GPU machine, else the CPU."""
    from accelerate import PartialState

    return PartialState().device


def head_features(model, dataset, processor, batch_size: int = 64) -> torch.Tensor:
    """Inputs of ``model.classifier`` for every example: the frozen backbone runs once per image."""
    captured: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float()))
    model.eval()
    dataset = dataset.with_transform(dataset_transform(processor))
    try:
        with torch.inference_mode(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16_supported()):
            for i in range(0, len(dataset), batch_size):
                model(pixel_values=dataset[i:i + batch_size]["pixel_values"].to(model.device))
    finally:
        hook.remove()
    return torch.cat(captured).cpu()


class HeadOnFeatures(nn.Module):
    """Wraps the model's own ``classifier`` so the Trainer fits it on cached features."""

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self.classifier = classifier

    def forward(self, features, labels=None):
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def _trainer_args(args: TrainArguments, output_dir: str, **kw) -> TrainingArguments:
    # remove_unused_columns=False: the model's forward has no "image" argument, and the Trainer would
    # otherwise drop the column our transform needs.
    defaults = dict(output_dir=output_dir, seed=args.seed, report_to="none", remove_unused_columns=False,
                    bf16=(args.bf16 == "yes") or (args.bf16 == "auto" and bf16_supported()),
                    use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, logging_steps=10)
    return TrainingArguments(**{**defaults, **kw})


def fit_head(model, train_feats, train_labels, val_feats, val_labels, args: TrainArguments, workdir: str):
    from datasets import Dataset

    def as_ds(x, y):
        return Dataset.from_dict({"features": x.numpy(), "labels": y}).with_format("torch")

    head = HeadOnFeatures(model.classifier)
    trainer = Trainer(model=head, args=_trainer_args(
        args, workdir, num_train_epochs=args.head_epochs, learning_rate=args.head_learning_rate,
        per_device_train_batch_size=128, weight_decay=args.weight_decay, lr_scheduler_type="cosine",
        save_strategy="no", eval_strategy="no", logging_steps=50, bf16=False),
        train_dataset=as_ds(train_feats, train_labels))
    trainer.train()
    with torch.no_grad():  # the head stays where the Trainer put it, beside the backbone; features are on the CPU
        acc = (head.classifier(val_feats.to(head.classifier.weight.device)).argmax(-1).cpu().numpy()
               == np.asarray(val_labels)).mean()
    logger.info("head fitted on cached features: validation accuracy %.3f", acc)
    return acc


def layer_decay_groups(model, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: the head gets ``lr``, encoder layer i gets lr*decay**(L-i), embeddings the least."""
    n_layers = getattr(model.config, "num_hidden_layers", 12)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("classifier"):
            depth = n_layers + 1
        elif m := re.search(r"\.(?:layer|layers|blocks)\.(\d+)\.", name):
            depth = int(m.group(1)) + 1
        elif "embeddings" in name:
            depth = 0
        else:  # final norms
            depth = n_layers
        no_wd = p.ndim == 1 or name.endswith(".bias")
        g = groups.setdefault((depth, no_wd), {"params": [], "lr": lr * decay ** (n_layers + 1 - depth),
                                                "weight_decay": 0.0 if no_wd else weight_decay})
        g["params"].append(p)
    return list(groups.values())


class SmoothedTrainer(Trainer):
    """Trainer with label smoothing in the loss (TrainingArguments' own smoother needs the labels popped)."""

    def __init__(self, *a, label_smoothing: float = 0.0, **kw):
        super().__init__(*a, **kw)
        self.smoothing = label_smoothing

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = nn.functional.cross_entropy(outputs.logits.float(), labels, label_smoothing=self.smoothing)
        return (loss, outputs) if return_outputs else loss


def compute_metrics_fn(num_labels: int):
    metric = load_classification()

    def compute(eval_pred):
        preds = np.argmax(eval_pred.predictions, axis=-1)
        return metric.compute(predictions=preds, references=eval_pred.label_ids, num_labels=num_labels)

    return compute


def predict_logits(model, dataset, processor, batch_size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    model.eval()
    ds = dataset.with_transform(dataset_transform(processor))
    out = []
    with torch.inference_mode(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16_supported()):
        for i in range(0, len(ds), batch_size):
            out.append(model(pixel_values=ds[i:i + batch_size]["pixel_values"].to(model.device)).logits.float().cpu())
    return torch.cat(out), np.asarray(dataset["label"])


def last_complete_checkpoint(ckpt_dir: str) -> str | None:
    """The newest checkpoint that was written to the end. A SIGKILL during a save leaves a folder without
    trainer_state.json, or with a truncated one, which transformers' get_last_checkpoint would still pick (and
    the Trainer then fails to parse on resume); such folders are removed."""
    if not os.path.isdir(ckpt_dir):
        return None
    dirs = sorted((p for p in Path(ckpt_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                  key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for d in dirs:
        if _complete_json(d / "trainer_state.json") and (d / "model.safetensors").exists():
            return str(d)
        logger.warning("Removing incomplete checkpoint %s (interrupted while saving)", d)
        shutil.rmtree(d, ignore_errors=True)
    return None


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def store_fp16(folder: Path) -> None:
    """Rewrite model.safetensors with fp16 tensors; from_pretrained upcasts to the config's float32."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def train_member(model, splits, processor, labels, model_args: ModelArguments, args: TrainArguments,
                 ckpt_dir: str, seed: int, head_dir: str):
    """Linear probe, then (unless --freeze-backbone) full fine-tuning; returns the best-validation model.
    Resumes from the newest complete checkpoint in ``ckpt_dir``."""
    set_seed(seed)
    last = last_complete_checkpoint(ckpt_dir)
    if last is None:
        model.to(compute_device())  # cache the backbone's features on the GPU, if any, not on its host CPU
        feats = {s: head_features(model, splits[s], processor) for s in ("train", "validation")}
        fit_head(model, feats["train"], splits["train"]["label"], feats["validation"], splits["validation"]["label"],
                 args, head_dir)
    else:
        # The Trainer restores optimizer, scheduler and step, but its raw state-dict load does not map
        # transformers 5's renamed ViT keys and silently keeps the fresh weights: load them here.
        logger.info("Resuming from %s", last)
        model = AutoModelForImageClassification.from_pretrained(last, use_safetensors=True)
    if model_args.freeze_backbone:
        return model
    steps_per_epoch = math.ceil(len(splits["train"]) / args.per_device_train_batch_size)
    # Evaluate and save together (best-checkpoint selection needs both on the same schedule):
    # every epoch, or every --save-steps steps so a kill loses little work.
    schedule = ({"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": args.save_steps,
                 "save_steps": args.save_steps} if args.save_steps else
                {"eval_strategy": "epoch", "save_strategy": "epoch"})
    targs = _trainer_args(
        args, ckpt_dir, seed=seed, num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=64, lr_scheduler_type="cosine", warmup_steps=max(1, steps_per_epoch // 4),
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy",
        greater_is_better=True, **schedule)
    optimizer = torch.optim.AdamW(layer_decay_groups(model, args.learning_rate, args.layer_decay, args.weight_decay))
    trainer = SmoothedTrainer(
        model=model, args=targs, label_smoothing=args.label_smoothing, optimizers=(optimizer, None),
        train_dataset=splits["train"].with_transform(dataset_transform(processor, augment=True)),
        eval_dataset=splits["validation"].with_transform(dataset_transform(processor)),
        compute_metrics=compute_metrics_fn(len(labels)),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience)])
    trainer.train(resume_from_checkpoint=last)
    # Reload the best checkpoint through from_pretrained: the Trainer's own load_best_model_at_end
    # loads raw state-dict keys and, with transformers 5's renamed ViT modules, silently loads nothing.
    best = trainer.state.best_model_checkpoint or get_last_checkpoint(ckpt_dir)
    logger.info("best checkpoint: %s (accuracy %s)", best, trainer.state.best_metric)
    return AutoModelForImageClassification.from_pretrained(best, use_safetensors=True).to(model.device)


def average_weights(models: list) -> nn.Module:
    """A copy of the first model holding the element-wise mean of all the models' weights (a uniform soup)."""
    states = [m.state_dict() for m in models]
    mean = {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(mean)
    return soup


def run(data_args: DataArguments, model_args: ModelArguments, args: TrainArguments) -> dict:
    from accelerate import PartialState

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU, nccl on GPU);
    # every rank prepares the same seeded splits, and only the main process writes files.
    state = PartialState()
    set_seed(args.seed)
    source = data_args.data_dir or data_args.dataset
    raw = data.load_source(data_args.data_dir, data_args.dataset,
                           image_column=data_args.image_column, label_column=data_args.label_column)
    if data_args.classes:
        raw = data.select_classes(raw, data_args.classes)
    if data_args.extra_data_dir:
        raw = data.merge_extra(raw, data_args.extra_data_dir)
    if data_args.negatives_dir or data_args.hard_negatives_dir:
        data.check_hard_negatives(data_args.negatives_dir, data_args.hard_negatives_dir)
        # hard ones first: listing the same folders under --negatives-dir alone, in the same order, draws the same splits
        raw = data.add_negatives(raw, data_args.hard_negatives_dir + data_args.negatives_dir, OUT_OF_SCOPE)
    labels = raw["train"].features["label"].names
    check_output_dir(args.output_dir, labels, args.overwrite_output_dir)
    if args.calibrate_only:
        check_trained_labels(model_args.model_name_or_path, labels)

    model, processor = load_model(model_args, labels)
    groups = data.load_groups(data_args.group_by_source) if data_args.group_by_source else None

    def oversampled(splits: DatasetDict) -> tuple[DatasetDict, int]:
        """Hard negatives repeated in train only; validation and test keep each photo once."""
        if not data_args.hard_negatives_dir:
            return splits, 0
        splits = DatasetDict(splits)
        splits["train"], n = data.repeat_hard_negatives(splits["train"], data_args.hard_negatives_dir,
                                                        data_args.hard_negatives_repeat)
        return splits, n

    splits, report = data.prepare(raw, draft_size=draft_size(processor), seed=args.seed, source=source,
                                  validation_fraction=data_args.validation_fraction,
                                  test_fraction=data_args.test_fraction, groups=groups)
    splits, n_hard = oversampled(splits)
    if data_args.hard_negatives_dir:
        report.hard_negatives = {"photos_in_train": n_hard, "repeat": data_args.hard_negatives_repeat}
    report.hidden_skipped = data.list_hidden(data_args.data_dir)
    out = Path(args.output_dir)
    if state.is_main_process:
        (out / "data_report.json").write_text(json.dumps(report.to_dict(), indent=2))

    def splits_for(validation_seed: int):
        """The splits of soup member with this seed: its own validation split, the shared test split."""
        return splits if validation_seed == args.seed else oversampled(data.prepare(
            raw, draft_size=draft_size(processor), seed=args.seed, source=source, groups=groups,
            validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction,
            validation_seed=validation_seed)[0])[0]

    if args.calibrate_only:
        logger.info("--calibrate-only: no training; refitting calibration of %s", model_args.model_name_or_path)
        model.to(state.device)
        members = [(model, splits)]
        seeds = earlier_run(model_args.model_name_or_path, args).get("soup_seeds", [args.seed])
        if len(seeds) > 1:  # a soup: recalibrate on its members' out-of-fold logits, as training did
            folders = [Path(model_args.model_name_or_path) / "soup" / f"member-{i}" for i in range(len(seeds))]
            if seeds[0] != args.seed or not all((f / "model.safetensors").exists() for f in folders):
                raise SystemExit(f"{model_args.model_name_or_path} is a soup of {len(seeds)} models (seeds {seeds}); "
                                 f"--calibrate-only needs --seed {seeds[0]} and its members in "
                                 f"{Path(model_args.model_name_or_path) / 'soup'}/member-*, which train.py keeps "
                                 "in its --output-dir. Rerun the training command there instead.")
            members = [(AutoModelForImageClassification.from_pretrained(f, use_safetensors=True).to(state.device),
                        splits_for(seed)) for f, seed in zip(folders, seeds)]
    elif args.soup == 1:
        model = train_member(model, splits, processor, labels, model_args, args, str(out / "checkpoints"), args.seed,
                             str(out / "head"))
        members = [(model, splits)]
    else:
        # A uniform model soup (Wortsman et al. 2022). Member i trains with seed --seed+i and, unless the data
        # brings its own validation split, on its own validation split drawn with that seed; all members share the
        # test split, drawn with --seed alone, so no member ever trains on a test photo.
        members = []
        for i in range(args.soup):
            member_splits = splits_for(args.seed + i)
            folder = out / "soup" / f"member-{i}"
            if (folder / "model.safetensors").exists():
                logger.info("soup member %d: reusing %s", i, folder)
                member = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True).to(state.device)
            else:
                set_seed(args.seed + i)
                base = model if i == 0 else load_model(model_args, labels)[0]
                member = train_member(base, member_splits, processor, labels, model_args, args,
                                      str(out / "checkpoints" / f"member-{i}"), args.seed + i, str(out / "head"))
                if state.is_main_process:
                    member.save_pretrained(folder)
            members.append((member, member_splits))
        model = average_weights([m for m, _ in members])

    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    # Calibrate on validation photos the scoring model never trained on. Through its other members, a soup has
    # trained on most of each member's validation photos, so it is calibrated on out-of-fold logits instead: each
    # member on its own validation split.
    oof = [predict_logits(m, member_splits["validation"], processor) for m, member_splits in members] \
        if len(members) > 1 else [predict_logits(model, splits["validation"], processor)]
    val_logits, val_labels = torch.cat([lg for lg, _ in oof]), np.concatenate([y for _, y in oof])
    calib = calibration.fit(val_logits, val_labels, labels, OUT_OF_SCOPE if OUT_OF_SCOPE in labels else None,
                            keep_rate=args.abstain_keep_rate, threshold=args.abstain_threshold)
    model.config.update(calib)
    model.config.title = args.title or f"Image classifier: {', '.join(n for n in labels if n != OUT_OF_SCOPE)}"
    test_logits, test_labels = predict_logits(model, splits["test"], processor)
    earlier = earlier_run(model_args.model_name_or_path, args)
    metric = load_classification()
    metrics = {"test": metric.compute(predictions=test_logits.argmax(-1).numpy(), references=test_labels,
                                      num_labels=len(labels)),
               "validation": metric.compute(predictions=val_logits.argmax(-1).numpy(), references=val_labels,
                                            num_labels=len(labels)),
               "calibration": calib,
               "abstain": calibration.evaluate(test_logits, test_labels, labels, model.config),
               "labels": labels, "base_model": args.base_model_id or earlier.get("base_model", model_args.model_name_or_path),
               "freeze_backbone": earlier.get("freeze_backbone", model_args.freeze_backbone), "source": source,
               "soup_seeds": earlier.get("soup_seeds", [args.seed + i for i in range(args.soup)])}
    logger.info("test accuracy %.4f, macro-F1 %.4f", metrics["test"]["accuracy"], metrics["test"]["macro_f1"])

    try:
        model.save_pretrained(out)
        processor.save_pretrained(out)
        if args.save_fp16:
            store_fp16(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        card.write(out, metrics=metrics, report=report.to_dict(),
                   base_model=metrics["base_model"], title=model.config.title,
                   dataset=data_args.dataset, license=args.license, hub_model_id=args.hub_model_id,
                   provenance=Path(args.card_notes).read_text() if args.card_notes else "")
    except OSError as e:  # disk full or folder removed mid-run: say so; the checkpoints stay for a rerun
        raise SystemExit(f"Could not write the model to {out} ({e.strerror or e}); free some space or choose "
                         "another --output-dir, then rerun the same command (it resumes).") from None
    shutil.rmtree(out / "head", ignore_errors=True)
    if args.push_to_hub:
        hub.push_model(out, args.hub_model_id, private=args.hub_private)
    state.wait_for_everyone()
    return metrics


def parse(argv: list[str] | None = None):
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, args = parse(argv)
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("--push-to-hub needs --hub-model-id user/name.")
    if args.soup > 1 and (model_args.freeze_backbone or args.calibrate_only):
        raise SystemExit("--soup averages fully fine-tuned models; leave it out with --freeze-backbone or --calibrate-only.")
    return run(data_args, model_args, args)
