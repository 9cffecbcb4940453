import evaluate

from parkclf.metrics import CLASSIFICATION, load_classification


def test_metric_module_loads_offline_by_path_and_computes():
    m = load_classification()
    r = m.compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 2], num_labels=4)
    assert r["accuracy"] == 0.75
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert r["recall"][0] == 0.5 and r["precision"][1] == 0.5 and r["support"] == [2, 1, 1, 0]
    assert abs(r["macro_f1"] - (2 / 3 + 2 / 3 + 1 + 0) / 4) < 1e-9


def test_same_module_through_evaluate_load():
    assert evaluate.load(CLASSIFICATION).compute(predictions=[1], references=[1])["accuracy"] == 1.0
