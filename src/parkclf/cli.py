"""``parkclf``: one entry point for the package's commands. The one place where a UsageError becomes a message.

    parkclf train --data-dir photos/ --output-dir out/my-model     # fine-tune, calibrate, export, card
    parkclf predict photos/ --output predictions.csv               # sort a photo library
    parkclf teach photos/ --output-dir out/mine                    # a new classifier in seconds, no torch
    parkclf evaluate --model out/my-model --data-dir test-photos/  # accuracy on a folder it never saw
    parkclf abstain-eval --model out/my-model --in-scope ... --out-of-scope name=dir ...
    parkclf export out/my-model --photos test-photos/              # onnx/ for serving without torch
    parkclf serve --model out/my-model                             # the Gradio app (same as python app.py)
    parkclf deploy --space user/app --model-id user/model          # publish a Space
    parkclf card out/my-model --card-notes notes.md                # re-render a model card

``parkclf COMMAND --help`` documents each one.
"""

from __future__ import annotations

import importlib
import logging
import sys

from .errors import UsageError

# command -> module whose main(argv) runs it; imported only when called (training needs torch, serving must not)
COMMANDS = {
    "train": "parkclf.training",
    "predict": "parkclf.batch",
    "teach": "parkclf.teach",
    "evaluate": "parkclf.evaluation",
    "abstain-eval": "parkclf.evaluation",
    "export": "parkclf.export",
    "serve": "parkclf.app.serve",
    "deploy": "parkclf.publish.deploy",
    "card": "parkclf.publish.card",
}
ENTRY = {"evaluate": "evaluate_main", "abstain-eval": "abstain_main"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"parkclf: unknown command {name!r}; choose one of {', '.join(COMMANDS)} (parkclf --help).",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        command = getattr(importlib.import_module(COMMANDS[name]), ENTRY.get(name, "main"))
        command(rest)
    except UsageError as e:
        print(f"parkclf {name}: error: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The console script."""
    raise SystemExit(main())


if __name__ == "__main__":  # python -m parkclf.cli (python -m parkclf works too)
    run()
