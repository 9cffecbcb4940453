"""Fine-tune any AutoModelForImageClassification checkpoint on an imagefolder, with the Trainer.

    parkclf train --data-dir ../shared/data/intel-scenes/train \\
        --model-name-or-path ../shared/models/vit-small-dinov2 --output-dir out/scenes

A run is a short list of steps, each a function of its own: assemble the data, split it once, load the model,
train one model or a soup of several (LP-FT: :mod:`.head`, then :mod:`.finetune`), calibrate on validation photos
the scoring model never trained on, evaluate on the test split, and write the folder (:mod:`.outputs`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
from datasets import DatasetDict
from transformers import HfArgumentParser, set_seed

from .. import calibration, data
from ..errors import UsageError
from ..metrics import load_classification
from ..processing import draft_size
from . import outputs, soup
from .config import DataArguments, ModelArguments, TrainArguments
from .features import predict_logits
from .surgery import check_trained_labels, load_model, preprocessor

logger = logging.getLogger("parkclf.train")
OUT_OF_SCOPE = "other"


def resolve_hard_negatives(data_args: DataArguments) -> DataArguments:
    """--other-classes-as-hard-negatives: the folders --classes leaves out, added to --hard-negatives-dir."""
    if not data_args.other_classes_as_hard_negatives:
        return data_args
    rest = [d for d in data.other_class_folders(data_args.data_dir, data_args.classes)
            if d not in data_args.hard_negatives_dir]
    return dataclasses.replace(data_args, hard_negatives_dir=data_args.hard_negatives_dir + rest,
                               other_classes_as_hard_negatives=False)


def assemble(data_args: DataArguments) -> DatasetDict:
    """The photos and their labels: the source, picked classes and the out-of-scope class."""
    raw = data.load_source(data_args.data_dir, data_args.dataset,
                           image_column=data_args.image_column, label_column=data_args.label_column)
    if data_args.classes:
        raw = data.select_classes(raw, data_args.classes)
    if data_args.negatives_dir or data_args.hard_negatives_dir:
        data.check_hard_negatives(data_args.negatives_dir, data_args.hard_negatives_dir)
        # hard ones first: listing the same folders under --negatives-dir alone, in the same order, draws the same
        # splits
        raw = data.add_negatives(raw, data_args.hard_negatives_dir + data_args.negatives_dir, OUT_OF_SCOPE)
    return raw


def split(raw: DatasetDict, data_args: DataArguments, seed: int, seeds: list[int], pre) -> tuple[list, dict]:
    """One set of splits per model to train (all with the same test split), and the data report."""
    groups = data.load_groups(data_args.group_by_source) if data_args.group_by_source else None
    # extra photos (e.g. the app's corrections) for train alone: the splits are drawn without them
    extra = data.load_extra(data_args.extra_dataset, raw["train"].features) if data_args.extra_dataset else None
    members, report = data.prepare(raw, draft_size=draft_size(pre), seed=seed, validation_seeds=seeds,
                                   source=data_args.data_dir or data_args.dataset, groups=groups,
                                   validation_fraction=data_args.validation_fraction,
                                   test_fraction=data_args.test_fraction, extra=extra)
    if extra is not None:
        report.extra["source"] = data_args.extra_dataset
    if data_args.hard_negatives_dir:  # repeated in train only; validation and test keep each photo once
        for m in members:
            m["train"], n = data.repeat_hard_negatives(m["train"], data_args.hard_negatives_dir,
                                                       data_args.hard_negatives_repeat)
        report.hard_negatives = {"photos_in_train": n, "repeat": data_args.hard_negatives_repeat}
    report.hidden_skipped = data.list_hidden(data_args.data_dir)
    return members, report.to_dict()


def calibrate(model, members: list, pre, labels: list[str],
              args: TrainArguments) -> tuple[dict, np.ndarray, np.ndarray]:
    """Temperature and abstain threshold on validation photos the scoring model never trained on. Through its
    other members a soup has trained on most of each member's validation photos, so it is calibrated on out-of-fold
    logits instead: each member on its own validation split."""
    scored = members if len(members) > 1 else [(model, members[0][1])]
    oof = [predict_logits(m, s["validation"], pre) for m, s in scored]
    val_logits, val_labels = np.concatenate([lg for lg, _ in oof]), np.concatenate([y for _, y in oof])
    calib = calibration.fit(val_logits, val_labels, labels, OUT_OF_SCOPE if OUT_OF_SCOPE in labels else None,
                            keep_rate=args.abstain_keep_rate, threshold=args.abstain_threshold)
    return calib, val_logits, val_labels


def evaluate(model, splits, pre, labels, calib, val, model_args: ModelArguments, args: TrainArguments,
             source: str) -> dict:
    test_logits, test_labels = predict_logits(model, splits["test"], pre)
    earlier = soup.earlier_run(model_args.model_name_or_path) if args.calibrate_only else {}
    metric = load_classification()
    return {"test": metric.compute(predictions=test_logits.argmax(-1), references=test_labels, num_labels=len(labels)),
            "validation": metric.compute(predictions=val[0].argmax(-1), references=val[1], num_labels=len(labels)),
            "calibration": calib, "abstain": calibration.evaluate(test_logits, test_labels, labels, model.config),
            "labels": labels,
            "base_model": args.base_model_id or earlier.get("base_model", model_args.model_name_or_path),
            "freeze_backbone": earlier.get("freeze_backbone", model_args.freeze_backbone), "source": source,
            "soup_seeds": soup.member_seeds(model_args, args)}


def run(data_args: DataArguments, model_args: ModelArguments, args: TrainArguments) -> dict:
    from accelerate import PartialState

    # Under torchrun / accelerate launch this joins the process group (gloo on CPU, nccl on GPU);
    # every rank prepares the same seeded splits, and only the main process writes files.
    state = PartialState()
    set_seed(args.seed)
    data_args = resolve_hard_negatives(data_args)
    raw = assemble(data_args)
    labels = raw["train"].features["label"].names
    outputs.check_output_dir(args.output_dir, labels, args.replace_model)
    if args.calibrate_only:
        check_trained_labels(model_args.model_name_or_path, labels)
    model, processor = load_model(model_args, labels)
    pre = preprocessor(processor)
    seeds = soup.member_seeds(model_args, args)
    members_splits, report = split(raw, data_args, args.seed, seeds, pre)
    out = Path(args.output_dir)
    if state.is_main_process:
        (out / "data_report.json").write_text(json.dumps(report, indent=2))

    if args.calibrate_only:
        logger.info("--calibrate-only: no training; refitting calibration of %s", model_args.model_name_or_path)
        members = soup.recalibration_members(model, members_splits, seeds, model_args, args)
    else:
        members = soup.trained_members(model, members_splits, seeds, pre, labels, model_args, args, out,
                                       state.is_main_process)
    model = members[0][0] if len(members) == 1 else soup.average_weights([m for m, _ in members])
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}

    calib, *val = calibrate(model, members, pre, labels, args)
    model.config.update(calib)
    model.config.title = args.title or f"Image classifier: {', '.join(n for n in labels if n != OUT_OF_SCOPE)}"
    splits = members_splits[0]
    source = data_args.data_dir or data_args.dataset
    metrics = evaluate(model, splits, pre, labels, calib, val, model_args, args, source)
    # the export is checked on photos the model never trained on: the test and validation splits
    photos = [im.get("path") or im.get("bytes") for s in ("test", "validation") for im in splits[s]["image"]]
    truth = [labels[y] for s in ("test", "validation") for y in splits[s]["label"]]
    exported = outputs.save(out, model, processor, metrics, report, data_args, args, photos, truth)
    logger.info("%s", outputs.summary(out, metrics, exported, args))
    state.wait_for_everyone()
    return metrics


def parse(argv: list[str] | None = None):
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments), prog="parkclf train",
                              description=__doc__.split("\n\n")[0])
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def quiet_progress() -> None:
    """No progress bars for the steps that take a blink (loading the folder, writing shards): in a log file each
    is a line of noise. The Trainer's own bar stays."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_progress()
    data_args, model_args, args = parse(argv)
    if args.soup > 1 and (model_args.freeze_backbone or args.calibrate_only):
        raise UsageError("--soup averages fully fine-tuned models; leave it out with --freeze-backbone or "
                         "--calibrate-only.")
    return run(data_args, model_args, args)
