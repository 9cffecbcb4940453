"""Benchmarks are scripts, not timed tests: CI only checks the serving benchmark runs in smoke mode."""

import json
import subprocess
import sys

import pytest

from conftest import EMBEDDED, ROOT


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_serving_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/serving.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| path | naive | ours | speed-up |" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "serving-smoke.json").read_text())
    assert result["client"]["ours"]["eight_clients"]["errors"] == 0
    assert result["cold_start_s"] > 0
