"""Training configuration: three dataclasses read by ``HfArgumentParser`` (so ``--help`` documents every field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import UsageError

DEFAULT_BASE_MODEL = "google/vit-base-patch16-224-in21k"


@dataclass
class DataArguments:
    data_dir: str | None = field(default=None, metadata={
        "help": "An imagefolder: DIR/<class>/*.jpg, or DIR/{train,validation,test}/<class>/*.jpg."})
    dataset: str | None = field(default=None, metadata={"help": "A Hub dataset id, instead of --data-dir."})
    classes: list[str] = field(default_factory=list, metadata={
        "help": "Use only these class folders (e.g. --classes yosemite yellowstone sequoia); default: all."})
    extra_dataset: str | None = field(default=None, metadata={
        "help": "Photos added to the training split alone, never to validation or test: the app's corrections, as "
                "their Hub dataset (user/name, the app's FEEDBACK_DATASET) or a local folder (its FEEDBACK_DIR), or "
                "any imagefolder. Each photo's label must be one of the classes; others are refused."})
    negatives_dir: list[str] = field(default_factory=list, metadata={
        "help": "Folders of photos that are none of the classes (any layout inside). They train an "
                "out-of-scope class, so the app can say 'not one of mine' instead of guessing."})
    hard_negatives_dir: list[str] = field(default_factory=list, metadata={
        "help": "Negatives that look like the classes, e.g. other national parks for a parks classifier. They join "
                "the out-of-scope class as --negatives-dir does, and each training epoch sees every one of them "
                "--hard-negatives-repeat times, so a few of them are not drowned out by many easy negatives."})
    other_classes_as_hard_negatives: bool = field(default=False, metadata={
        "help": "With --classes: every other class folder of --data-dir joins --hard-negatives-dir, read from the "
                "folder (e.g. the other national parks of a parks folder), so a new folder needs no new flag."})
    hard_negatives_repeat: int = field(default=5, metadata={
        "help": "How many times each training epoch sees each --hard-negatives-dir photo (1: as often as any other)."})
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column of --dataset."})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "Held out for model selection when no validation split is given."})
    test_fraction: float = field(default=0.1, metadata={
        "help": "Held out for the final metrics when no test split is given."})
    group_by_source: str | None = field(default=None, metadata={
        "help": "A TSV with columns 'file' (a photo's file name) and 'repo' (its photographer or source): split so "
                "each source lands in a single split, which is how unseen photographers will test the model."})

    def __post_init__(self):
        if self.other_classes_as_hard_negatives and not (self.classes and self.data_dir):
            raise UsageError("--other-classes-as-hard-negatives needs --data-dir and --classes: the classes to "
                             "learn, with every other class folder of --data-dir as a hard negative.")
        if self.hard_negatives_repeat < 1:
            raise UsageError(f"--hard-negatives-repeat {self.hard_negatives_repeat}: give how many times an epoch "
                             "sees each hard negative, 1 or more (1: no oversampling).")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default=DEFAULT_BASE_MODEL, metadata={
        "help": "Any AutoModelForImageClassification checkpoint: a Hub id or a local folder."})
    image_size: int | None = field(default=None, metadata={
        "help": "Input side in pixels, e.g. 308 (default: the checkpoint's). ViT-style learned position embeddings are "
                "interpolated once (bicubic, as DINOv2 does) and the saved processor resizes to it. DINOv2 backbones "
                "see more detail at higher resolution; compute grows about with (size/224)^2."})
    center_crop: float | None = field(default=None, metadata={
        "help": "Show the model the middle share of each side of a photo at evaluation and in the app, e.g. 0.8 "
                "(default: the checkpoint processor's own choice; ViT's sees the whole photo). Random training "
                "crops make scenes look larger than a whole photo does; a centre crop evens that out. Saved in "
                "the processor (as DeiT's resize-then-crop). With --calibrate-only it changes a trained model's "
                "processor and recalibrates, leaving the weights as they are."})
    freeze_backbone: bool = field(default=False, metadata={
        "help": "Train only the classification head, on cached backbone features (seconds on a CPU)."})


@dataclass
class TrainArguments:
    output_dir: str = field(default="out/model", metadata={
        "help": "Where the save_pretrained folder, metrics and card go."})
    replace_model: bool = field(default=False, metadata={
        "help": "Replace a model with another label set that --output-dir already holds (else that is refused)."})
    num_train_epochs: float = field(default=4, metadata={"help": "Full fine-tuning epochs (after the head is fitted)."})
    learning_rate: float = field(default=5e-5, metadata={
        "help": "Peak learning rate of the top layer; lower layers get less (layer decay)."})
    layer_decay: float = field(default=0.75, metadata={
        "help": "Learning-rate factor per layer going down the backbone."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing of the fine-tuning loss."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "Processes that decode and augment photos beside the training loop (0: the loop does it). On a GPU, "
                "decoding is the bottleneck: give it the spare cores."})
    early_stopping_patience: int = field(default=2, metadata={
        "help": "Stop after this many epochs without improvement in validation accuracy (with --checkpoint-steps, "
                "as many evaluations as span those epochs)."})
    seed: int = field(default=42, metadata={"help": "Seed for splits, augmentation and initialisation."})
    bf16: Literal["auto", "true", "false"] = field(default="auto", metadata={
        "help": "bf16 mixed precision: auto (where the CPU or GPU has native bf16), true or false."})
    checkpoint_steps: int = field(default=0, metadata={
        "help": "Evaluate and checkpoint every N optimiser steps, so a kill loses little work (0: at each epoch end)."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "Upload the output folder to the Hub (token from HF_TOKEN or `hf auth login`)."})
    hub_model_id: str | None = field(default=None, metadata={
        "help": "user/name of the Hub model repo for --push-to-hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo private."})
    export_onnx: bool = field(default=True, metadata={
        "help": "Write onnx/ (fp32, int8 where it agrees with torch, and the explanation graphs) for serving without "
                "torch and for transformers.js in the browser. --no-export-onnx skips it."})
    save_fp16: bool = field(default=False, metadata={
        "help": "Store the weights as fp16 (half the size); config.json keeps float32, so loading computes in fp32."})
    title: str | None = field(default=None, metadata={"help": "Title the app shows (stored in config.json)."})
    base_model_id: str | None = field(default=None, metadata={
        "help": "Hub id named as base_model in the card when --model-name-or-path is a local copy of it."})
    card_notes: str | None = field(default=None, metadata={
        "help": "A markdown file added to the model card's training-data section (provenance, licences)."})
    license: str = field(default="apache-2.0", metadata={"help": "License written into the model card."})
    abstain_keep_rate: float = field(default=0.98, metadata={
        "help": "Pick the abstain threshold so this share of in-scope validation photos is still answered. "
                "High on purpose: validation shares photographers with train, new photographers score lower."})
    abstain_threshold: float | None = field(default=None, metadata={
        "help": "Set the abstain threshold (0-1, on the calibrated best-class probability) instead of deriving it "
                "from --abstain-keep-rate, e.g. from a leave-out run on photographers the model never saw."})
    soup: int = field(default=1, metadata={
        "help": "Fine-tune this many models with seeds --seed, --seed+1, ..., each on its own validation split and all "
                "with one test split, and save the mean of their weights (a uniform model soup): N times the "
                "training time, the same cost to serve. Members are kept in OUTPUT_DIR/soup/ and reused on a rerun."})
    calibrate_only: bool = field(default=False, metadata={
        "help": "Skip training: --model-name-or-path is a model this script trained on the same data; refit its "
                "temperature and abstain threshold on the same validation split, redo the test metrics and card."})

    def __post_init__(self):
        if self.bf16 not in ("auto", "true", "false"):  # a JSON args file skips argparse's choices
            raise UsageError(f"--bf16 {self.bf16!r}: use auto, true or false.")
        if self.soup < 1:
            raise UsageError(f"--soup {self.soup}: give the number of models to average, 1 or more (1: no soup).")
        if self.abstain_threshold is not None and not 0.0 <= self.abstain_threshold < 1.0:
            raise UsageError(f"--abstain-threshold {self.abstain_threshold} is not a probability; "
                             "use a value in [0, 1), e.g. 0.15.")
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("--push-to-hub needs --hub-model-id user/name.")
        if self.checkpoint_steps < 0:
            raise UsageError(f"--checkpoint-steps {self.checkpoint_steps}: give a number of steps, or 0 for each "
                             "epoch.")
