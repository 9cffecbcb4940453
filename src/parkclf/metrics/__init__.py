"""evaluate metric modules shipped with the package, loadable offline by path."""

from pathlib import Path

CLASSIFICATION = str(Path(__file__).parent / "classification")


def load_classification():
    import evaluate

    return evaluate.load(CLASSIFICATION)
