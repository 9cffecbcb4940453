"""Shared fixtures: a tiny random ViT and generated photos (fast tier), ../shared material (real tier)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PARKCLF_SHARED", ROOT.parent / "shared"))
BACKBONE = SHARED / "models" / "vit-small-dinov2"
PARKS = SHARED / "data" / "parks"
SCENES = SHARED / "data" / "intel-scenes"
EMBEDDED = ROOT / "models" / "parks-vit-small"

_shared_missing = pytest.mark.skipif(not (BACKBONE.exists() and PARKS.exists() and SCENES.exists()),
                                     reason=f"real tier: {SHARED} (real backbone and photos) is not present")


def needs_shared(test):
    """The real tier: marked `real`, and skipped with the reason where ../shared is absent."""
    return pytest.mark.real(_shared_missing(test))


TIERS = {"real", "live", "browser", "gpu"}


def pytest_collection_modifyitems(items):
    for item in items:  # everything outside the other tiers is the fast tier: `pytest -m fast`
        if not TIERS & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.fast)

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_photo(colour, size=(64, 48), seed=0) -> Image.Image:
    """A flat class colour plus a random low-frequency pattern (so no two photos are near-duplicates)."""
    rng = np.random.default_rng(seed)
    pattern = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), "RGB").resize(size, Image.BICUBIC)
    arr = 0.6 * np.array(colour, dtype=np.float32) + 0.4 * np.asarray(pattern, dtype=np.float32)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_imagefolder(root: Path, per_class: int = 12, classes=("red", "blue"), size=(64, 48), seed: int = 0) -> Path:
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = COLOURS.get(c) or list(COLOURS.values())[ci % len(COLOURS)]
            make_photo(colour, size=size, seed=seed + 1000 * ci + i).save(d / f"{c}_{i}.jpg", quality=90)
    return root


def save_tiny_vit(path: Path, num_labels: int = 2) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=num_labels)
    ViTForImageClassification(cfg).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="module")
def server():
    """The real app (python app.py) on a loopback port, for a module's live or browser tests."""
    from live import AppServer

    if not EMBEDDED.exists():
        pytest.skip(f"the embedded model {EMBEDDED} is missing")
    srv = AppServer()
    srv.wait()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (which cannot download browsers here)."""
    from live import CHROMIUM, CHROMIUM_FLAGS

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (the README's test command does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "data")

# Nothing here may reach the Hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
