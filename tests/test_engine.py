"""The engine is chosen from the checkpoint: ONNX Runtime where it has onnx/, else torch; serving an export imports
no torch, and a checkpoint without one, where torch is missing, gets a message naming the fix."""

import subprocess
import sys

import numpy as np
import pytest

from parkclf.engine import has_static_int8, load_engine
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
    engine, *imported = r.stdout.split()
    assert engine in ("openvino-int8-static", "onnxruntime-int8") and imported == ["False", "False"], r.stdout


class Timed:
    """An engine that takes ``seconds`` a forward."""

    def __init__(self, name: str, seconds: float):
        self.name, self.seconds, self.calls = name, seconds, 0

    def logits(self, pixel_values):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return np.zeros((len(pixel_values), 2), np.float32)


@pytest.mark.parametrize("order", [(0.002, 0.06), (0.06, 0.002)])
def test_auto_serves_with_the_engine_that_was_faster_on_the_probe_and_says_so(order, caplog):
    from parkclf.engine import TIMED_RUNS, fastest

    engines = [Timed("first", order[0]), Timed("second", order[1])]
    with caplog.at_level("INFO", logger="parkclf.engine"):
        chosen = fastest([lambda e=e: e for e in engines], np.zeros((1, 3, 8, 8), np.float32))
    assert chosen is engines[int(np.argmin(order))]
    assert [e.calls for e in engines] == [1 + TIMED_RUNS] * 2  # a warm-up, then the timed runs
    line = caplog.records[-1].getMessage()
    assert line.startswith("engine auto: first ") and ", second " in line and f"a photo -> {chosen.name} (" in line
    assert "cores" in line  # the CPU beside the figures


def test_auto_times_both_int8_engines_on_the_embedded_model(caplog):
    """Both engines that can run the export are built and timed; the log line names both and the one kept."""
    from parkclf.classifier import Classifier

    if not has_static_int8(EMBEDDED):
        pytest.skip("the embedded model has no static int8 ranges, or openvino is not installed")
    with caplog.at_level("INFO", logger="parkclf.engine"):
        clf = Classifier.from_pretrained(str(EMBEDDED))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto:"))
    assert "openvino-int8-static" in line and "onnxruntime-int8" in line and line.endswith(")")
    assert f"-> {clf.engine.name} (" in line
    assert clf.engine.name in ("openvino-int8-static", "onnxruntime-int8")
    pinned = Classifier.from_pretrained(str(EMBEDDED), engine="onnx")
    assert pinned.engine.name == "onnxruntime-int8"  # ENGINE pins it, as before


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
