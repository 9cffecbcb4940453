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
    assert probs.shape == (900, 2)
    # not renormalised: the parks' probabilities plus the out-of-scope class's make 1, and the score is the best park's
    p_other = torch.softmax(logits / calib["calibration_temperature"], -1)[:, 2].numpy()
    assert np.allclose(probs.sum(1) + p_other, 1, atol=1e-5) and np.allclose(score, probs.max(1))
    assert abs((score[y != 2] >= calib["abstain_threshold"]).mean() - 0.9) < 0.02

    class Cfg:
        pass

    cfg = Cfg()
    cfg.__dict__.update(calib)
    r = evaluate(logits, y, labels, cfg)
    assert r["auroc"] > 0.8 and r["out_of_scope_abstain_rate"] > 0.5 and r["in_scope_accuracy"] > 0.8


def test_without_an_out_of_scope_class_the_probabilities_sum_to_one():
    logits = torch.tensor(np.random.default_rng(2).normal(0, 2, (50, 3)), dtype=torch.float32)
    probs, score = in_scope_scores(logits, ["a", "b", "c"], 0.7, None)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.allclose(score, probs.max(1))


def test_a_given_threshold_is_kept_and_the_temperature_still_fitted():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    logits = torch.tensor(rng.normal(0, 1, (300, 3)), dtype=torch.float32)
    logits[np.arange(300), y] += 2.0
    calib = fit(logits * 4, y, ["a", "b", "other"], "other", threshold=0.15)
    assert calib["abstain_threshold"] == 0.15 and calib["calibration_temperature"] > 2
