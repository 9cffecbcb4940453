"""Which models a run produces: one, a uniform soup of several (Wortsman et al. 2022), or the ones it recalibrates.

Member i trains with seed --seed+i on its own validation split; all members share the test split, so no member
ever trains on a test photo. Finished members are kept in OUTPUT_DIR/soup/member-i and reused on a rerun.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from torch import nn
from transformers import AutoModelForImageClassification, set_seed

from ..errors import UsageError
from ..processing import Preprocessor
from .config import ModelArguments, TrainArguments
from .features import compute_device
from .finetune import train_member
from .surgery import load_model

logger = logging.getLogger("parkclf.train")


def earlier_run(name_or_path: str) -> dict:
    """What the run that trained ``name_or_path`` recorded in its metrics.json (base model, soup seeds...)."""
    path = Path(name_or_path) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def member_seeds(model_args: ModelArguments, args: TrainArguments) -> list[int]:
    """The seeds of the models this run trains (or, with --calibrate-only, the ones the earlier run trained)."""
    if args.calibrate_only:
        return earlier_run(model_args.model_name_or_path).get("soup_seeds", [args.seed])
    return [args.seed + i for i in range(args.soup)]


def average_weights(models: list) -> nn.Module:
    """A copy of the first model holding the element-wise mean of all the models' weights (a uniform soup)."""
    states = [m.state_dict() for m in models]
    mean = {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(mean)
    return soup


def _load(folder: Path):
    return AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True).to(compute_device())


def recalibration_members(model, members_splits: list, seeds: list[int], model_args: ModelArguments,
                          args: TrainArguments) -> list[tuple]:
    """--calibrate-only: the trained model itself, or a soup's members, each with the splits it was trained on."""
    if len(seeds) == 1:
        return [(model.to(compute_device()), members_splits[0])]
    soup_dir = Path(model_args.model_name_or_path) / "soup"
    folders = [soup_dir / f"member-{i}" for i in range(len(seeds))]
    if seeds[0] != args.seed or not all((f / "model.safetensors").exists() for f in folders):
        raise UsageError(f"{model_args.model_name_or_path} is a soup of {len(seeds)} models (seeds {seeds}); "
                         f"--calibrate-only needs --seed {seeds[0]} and its members in {soup_dir}/member-*, which "
                         "train.py keeps in its --output-dir. Rerun the training command there instead.")
    return [(_load(f), s) for f, s in zip(folders, members_splits, strict=True)]


def trained_members(model, members_splits: list, seeds: list[int], pre: Preprocessor, labels: list[str],
                    model_args: ModelArguments, args: TrainArguments, out: Path, is_main: bool) -> list[tuple]:
    """Train (or reuse) each member; a single model is a soup of one, kept outside soup/."""
    if len(seeds) == 1:
        return [(train_member(model, members_splits[0], pre, labels, model_args, args, str(out / "checkpoints"),
                              seeds[0]), members_splits[0])]
    members = []
    for i, (seed, splits) in enumerate(zip(seeds, members_splits, strict=True)):
        folder = out / "soup" / f"member-{i}"
        if (folder / "model.safetensors").exists():
            logger.info("soup member %d: reusing %s", i, folder)
            members.append((_load(folder), splits))
            continue
        set_seed(seed)
        base = model if i == 0 else load_model(model_args, labels)[0]
        member = train_member(base, splits, pre, labels, model_args, args, str(out / "checkpoints" / f"member-{i}"),
                              seed)
        if is_main:
            member.save_pretrained(folder)
        members.append((member, splits))
    return members
