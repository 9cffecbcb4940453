"""The fuzz tier (benchmarks/fuzz.py): every committed corpus input, the inputs that once crashed a target among them,
is read or refused with the documented error; and a short coverage-guided run of each target finds nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("atheris")
FUZZ = ROOT / "benchmarks" / "fuzz.py"
CORPUS = ROOT / "tests" / "fuzz_corpus"
_spec = importlib.util.spec_from_file_location("fuzz", FUZZ)
_fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fuzz)
TARGETS = _fuzz.TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_every_corpus_input_is_read_or_refused(target):
    """libFuzzer's reproduction mode: each file given runs once through the target; any other exception, a hang
    past 10 s or an RSS past 2 GB fails it (exit status not 0)."""
    files = sorted(str(f) for f in (CORPUS / target).iterdir())
    assert files, f"no seed corpus for {target}: python benchmarks/fuzz.py seeds"
    r = subprocess.run([sys.executable, str(FUZZ), "run", target, "-timeout=10", "-rss_limit_mb=2048", *files],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("Running: ") == len(files)


def test_a_short_fuzz_run_of_every_target_finds_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(FUZZ), "--runs", "300", "--artifacts", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "| target | seconds | inputs | cov | ft | corpus | crashes | restarts |" in r.stdout and "cores" in r.stdout
    rows = json.loads((ROOT / "benchmarks" / "results" / "fuzz-smoke.json").read_text())["targets"]
    assert [row["target"] for row in rows] == list(TARGETS)
    assert all(row["inputs"] >= 300 and row["cov"] > 0 and not row["crashes"] for row in rows), rows
