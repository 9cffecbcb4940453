"""Training: ``parkclf train`` (and ``python train.py``). :func:`main` takes the command line, :func:`run` the
parsed dataclasses. Needs the training stack (requirements-train.txt)."""

from .run import main, run

__all__ = ["main", "run"]
