"""train.py as users run it: killed and resumed, and under torchrun with 2 CPU processes (gloo)."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, make_imagefolder
from live import free_port

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def train_cmd(data, model, out, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--model-name-or-path", str(model),
            "--output-dir", str(out), "--per-device-train-batch-size", "4", "--bf16", "false",
            "--early-stopping-patience", "100", "--no-export-onnx", *extra]


def test_sigkill_mid_training_then_rerun_resumes_and_matches(tiny_vit, tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=20)
    args = ("--num-train-epochs", "6", "--checkpoint-steps", "3")
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - the killed process writes it until the end of the test
    first = subprocess.Popen(train_cmd(data, tiny_vit, tmp_path / "out", *args), env=ENV, stdout=log, stderr=log)
    ckpts = tmp_path / "out" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        done = [p for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        if done:
            time.sleep(0.3)  # now somewhere in the middle of the next steps
            break
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "out" / "config.json").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*"))

    rerun = subprocess.run(train_cmd(data, tiny_vit, tmp_path / "out", *args), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming from" in rerun.stderr
    assert "missing keys" not in rerun.stderr.lower() and "unexpected keys" not in rerun.stderr.lower()
    state = json.loads(max(ckpts.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
                       .joinpath("trainer_state.json").read_text())
    assert state["global_step"] > killed_at

    straight = subprocess.run(train_cmd(data, tiny_vit, tmp_path / "straight", *args), env=ENV, capture_output=True,
                              text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed_m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    straight_m = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert abs(resumed_m["validation"]["accuracy"] - straight_m["validation"]["accuracy"]) <= 0.25
    assert abs(resumed_m["test"]["accuracy"] - straight_m["test"]["accuracy"]) <= 0.25


def test_torchrun_two_cpu_processes(tiny_vit, tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=12)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           *train_cmd(data, tiny_vit, tmp_path / "out", "--num-train-epochs", "2")[1:]]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "blue", "1": "red"}
    assert "[rank1]" in r.stderr or r.stderr.count("head fitted on cached features") == 2
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.5


def test_the_training_log_reads_as_a_report_not_a_warning_list(tiny_vit, tmp_path):
    """A full fine-tune with its export: no key lists, no newly-initialised-head notice, no exporter chatter, and
    the last lines say where the model went and what it scored."""
    data = make_imagefolder(tmp_path / "data", per_class=12)
    cmd = [a for a in train_cmd(data, tiny_vit, tmp_path / "out", "--num-train-epochs", "2") if a != "--no-export-onnx"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    for noise in ("missing keys", "unexpected keys", "newly initialized", "Some weights of", "onnx_ir",
                  "Quantization parameters", "pre-processing before quantization", "training mode"):
        assert noise.lower() not in log.lower(), noise
    assert len(log.splitlines()) < 60, log
    tail = r.stderr.strip().splitlines()[-4:]
    assert f"Model saved to {tmp_path / 'out'}" in tail[0] and "test split" in tail[1] and "onnx/" in tail[-1], tail


def test_without_the_hub_the_default_model_gives_one_line_and_exit_code_2(tmp_path):
    """`python train.py --data-dir DIR --output-dir OUT` asks the Hub for the default base model: offline, or with
    the Hub unreachable (a refused port stands in for no network), the run ends with one line naming the fix."""
    data = make_imagefolder(tmp_path / "data", per_class=6)
    cmd = [sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--output-dir", str(tmp_path / "out")]
    offline = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    unreachable = {**{k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": "http://127.0.0.1:9",
                   "HF_HOME": str(tmp_path / "hf")}
    for env in (offline, unreachable):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
        assert lines[0].startswith("parkclf train: error: Could not load 'google/vit-base-patch16-224-in21k'")
        assert "Pass a local folder with --model-name-or-path" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
