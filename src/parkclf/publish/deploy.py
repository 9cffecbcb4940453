"""From trained model to live Space in one command.

    parkclf deploy --space user/parks-app --model-id user/parks-model

Creates (or updates) a Gradio Space running this app, uploads only what a Space needs, and sets the
Space variable MODEL_ID so it serves that model. Needs a token with write access (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import hub


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="parkclf deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="user/name of the Space to create or update")
    p.add_argument("--model-id", help="Hub model repo the Space serves (MODEL_ID); omit to serve the embedded model")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2]), help="project folder to upload")
    p.add_argument("--private", action="store_true", help="create the Space private")
    a = p.parse_args(argv)
    url = hub.deploy_space(a.space, model_id=a.model_id, root=a.root, private=a.private)
    print(f"Space updated: https://huggingface.co/spaces/{a.space}")
    return url
