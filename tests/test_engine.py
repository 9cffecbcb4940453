"""The engine is chosen from the checkpoint: ONNX Runtime where it has onnx/, else torch; serving an export imports
no torch, and a checkpoint without one, where torch is missing, gets a message naming the fix."""

import subprocess
import sys

import pytest

from parkclf.engine import load_engine
from parkclf.errors import UsageError

from conftest import EMBEDDED, ROOT

EXAMPLES = ROOT / "examples"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (EMBEDDED / "onnx").exists(), reason="the embedded model has no ONNX export")
def test_serving_an_export_imports_no_torch():
    """Start-up, /predict, /predict_batch, /explain and the Many photos tab, in a process where torch is installed:
    none of them imports it (nor transformers, which would import torch whenever it is installed)."""
    code = f"""
import sys
from parkclf.app.serve import load, create_demo
from parkclf.app import many
clf = load({str(EMBEDDED)!r})
demo = create_demo(clf, {str(EMBEDDED)!r})
from parkclf.app.api import Endpoints
api = Endpoints(clf)
photo = {str(EXAMPLES / "seki-giant-sequoia-tree.jpg")!r}
assert api.predict(photo)["label"] == "sequoia"
assert len(api.predict_batch([photo, {str(EXAMPLES / "arch-delicate-arch.jpg")!r}])) == 2
overlay, pred = api.explain(photo)
items = many.expand([photo], ["a.jpg"], many.ManyLimits())
assert [p.label for _, _, p in many.classify(items, clf, many.ManyLimits())] == ["sequoia"]
print(clf.engine.name, "torch" in sys.modules, "transformers" in sys.modules)
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["openvino-int8-static", "False", "False"], r.stdout


def test_auto_picks_onnx_where_the_checkpoint_has_it_and_torch_else(tiny_vit, tmp_path):
    assert load_engine(tiny_vit, patch_size=8).name.startswith("torch")
    with pytest.raises(UsageError, match="no model_quantized.onnx; run `parkclf export`"):
        load_engine(tiny_vit, engine="onnx-int8", patch_size=8)
    with pytest.raises(UsageError, match="engine='gpu'"):
        load_engine(tiny_vit, engine="gpu", patch_size=8)


def test_a_checkpoint_without_onnx_where_torch_is_missing_names_the_fix(tiny_vit):
    code = f"""
import sys
sys.modules["torch"] = None  # as on a Space that installed requirements.txt only
sys.modules["transformers"] = None
from parkclf.classifier import Classifier
from parkclf.errors import UsageError
try:
    Classifier.from_pretrained({str(tiny_vit)!r})
except UsageError as e:
    print(e)
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "has no onnx/ export and torch is not installed" in r.stdout
    assert f"parkclf export {tiny_vit}" in r.stdout and "requirements-train.txt" in r.stdout
