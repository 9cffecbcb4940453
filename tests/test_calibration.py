import numpy as np
import torch

from parkclf.calibration import evaluate, fit, fit_temperature, in_scope_scores


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    logits = torch.tensor(rng.normal(0, 1, (600, 3)), dtype=torch.float32)
    logits[np.arange(600), y] += 1.0
    t = fit_temperature(logits * 5, y)  # the same evidence, five times too confident
    assert 3.5 < t < 7


def test_threshold_keeps_the_requested_share_and_other_class_is_excluded():
    rng = np.random.default_rng(1)
    labels = ["a", "b", "other"]
    y = rng.integers(0, 3, 900)
    logits = torch.tensor(rng.normal(0, 1, (900, 3)), dtype=torch.float32)
    logits[np.arange(900), y] += 3.0
    calib = fit(logits, y, labels, "other", keep_rate=0.9)
    probs, score = in_scope_scores(logits, labels, calib["calibration_temperature"], "other")
    assert probs.shape == (900, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert abs((score[y != 2] >= calib["abstain_threshold"]).mean() - 0.9) < 0.02

    class Cfg:
        pass

    cfg = Cfg()
    cfg.__dict__.update(calib)
    r = evaluate(logits, y, labels, cfg)
    assert r["auroc"] > 0.8 and r["out_of_scope_abstain_rate"] > 0.5 and r["in_scope_accuracy"] > 0.8
