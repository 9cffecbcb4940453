"""Full fine-tuning with the Trainer: layer-wise learning-rate decay, label smoothing, early stopping, and resume
from the newest complete checkpoint after a crash or SIGKILL."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForImageClassification, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from ..hardware import bf16_supported
from ..metrics import load_classification
from ..processing import Preprocessor
from .augment import dataset_transform
from .config import ModelArguments, TrainArguments
from .head import fit_head

logger = logging.getLogger("parkclf.train")


def trainer_args(args: TrainArguments, output_dir: str, **kw) -> TrainingArguments:
    # remove_unused_columns=False: the model's forward has no "image" argument, and the Trainer would
    # otherwise drop the column our transform needs.
    defaults = dict(output_dir=output_dir, seed=args.seed, report_to="none", remove_unused_columns=False,
                    bf16=args.bf16 == "true" or (args.bf16 == "auto" and bf16_supported()),
                    use_cpu=not torch.cuda.is_available(), dataloader_num_workers=args.dataloader_num_workers,
                    logging_steps=10)
    return TrainingArguments(**{**defaults, **kw})


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

    def _load_best_model(self):
        # The Trainer's own best-model load reads raw state-dict keys; with transformers 5's renamed ViT modules it
        # loads nothing and warns about every key. fine_tune reloads the best checkpoint with from_pretrained.
        pass

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Resuming: the same raw load, the same warnings. train_member has already loaded the checkpoint's weights
        # with from_pretrained; the Trainer still restores the optimizer, scheduler, RNG and step itself.
        pass


def compute_metrics_fn(num_labels: int):
    metric = load_classification()

    def compute(eval_pred):
        preds = np.argmax(eval_pred.predictions, axis=-1)
        full = metric.compute(predictions=preds, references=eval_pred.label_ids, num_labels=num_labels)
        # what picks the best checkpoint, and what the log shows per evaluation; per-class lists come at the end
        return {"accuracy": full["accuracy"], "macro_f1": full["macro_f1"]}

    return compute


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


def _schedule(args: TrainArguments) -> dict:
    # Evaluate and save together (best-checkpoint selection needs both on the same schedule):
    # every epoch, or every --checkpoint-steps steps so a kill loses little work.
    if args.checkpoint_steps:
        return {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": args.checkpoint_steps,
                "save_steps": args.checkpoint_steps}
    return {"eval_strategy": "epoch", "save_strategy": "epoch"}


def patience_evaluations(args: TrainArguments, steps_per_epoch: int) -> int:
    """--early-stopping-patience counts epochs; with --checkpoint-steps the Trainer evaluates more often, so the same
    span is more evaluations. Counted in evaluations, checkpointing every 10 steps for safety stopped the parks
    recipe after 30 of 164 steps (best at step 10), where per-epoch evaluation trains on."""
    if not args.checkpoint_steps:
        return args.early_stopping_patience
    return args.early_stopping_patience * math.ceil(steps_per_epoch / args.checkpoint_steps)


def fine_tune(model, splits, pre: Preprocessor, labels: list[str], args: TrainArguments, ckpt_dir: str, seed: int,
              resume: str | None):
    """Fine-tune the whole model; returns the best-validation model, reloaded with from_pretrained."""
    steps_per_epoch = math.ceil(len(splits["train"]) / args.per_device_train_batch_size)
    targs = trainer_args(
        args, ckpt_dir, seed=seed, num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=64, lr_scheduler_type="cosine", warmup_steps=max(1, steps_per_epoch // 4),
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy",
        greater_is_better=True, **_schedule(args))
    optimizer = torch.optim.AdamW(layer_decay_groups(model, args.learning_rate, args.layer_decay, args.weight_decay))
    trainer = SmoothedTrainer(
        model=model, args=targs, label_smoothing=args.label_smoothing, optimizers=(optimizer, None),
        train_dataset=splits["train"].with_transform(dataset_transform(pre, augment=True)),
        eval_dataset=splits["validation"].with_transform(dataset_transform(pre)),
        compute_metrics=compute_metrics_fn(len(labels)),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience_evaluations(args, steps_per_epoch))])
    trainer.train(resume_from_checkpoint=resume)
    best = trainer.state.best_model_checkpoint or last_complete_checkpoint(ckpt_dir)
    logger.info("best checkpoint: %s (validation accuracy %s)", best, trainer.state.best_metric)
    return AutoModelForImageClassification.from_pretrained(best, use_safetensors=True).to(model.device)


def train_member(model, splits, pre: Preprocessor, labels: list[str], model_args: ModelArguments,
                 args: TrainArguments, ckpt_dir: str, seed: int):
    """Linear probe, then (unless --freeze-backbone) full fine-tuning; returns the best-validation model.
    Resumes from the newest complete checkpoint in ``ckpt_dir``."""
    set_seed(seed)
    last = last_complete_checkpoint(ckpt_dir)
    if last is None:
        fit_head(model, splits, pre)
    else:
        # The Trainer restores optimizer, scheduler and step, but its raw state-dict load does not map
        # transformers 5's renamed ViT keys and silently keeps the fresh weights: load them here.
        logger.info("Resuming from %s", last)
        model = AutoModelForImageClassification.from_pretrained(last, use_safetensors=True)
    if model_args.freeze_backbone:
        return model
    return fine_tune(model, splits, pre, labels, args, ckpt_dir, seed, last)
