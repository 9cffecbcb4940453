"""From trained model to live Space in one command.

    parkclf deploy --space user/parks-app --model-id user/parks-model      # the Gradio app
    parkclf deploy --static-space user/parks-web --model-dir models/parks-vit-small   # the in-browser page

The Gradio Space gets only what it needs to run app.py on the serving stack, and the Space variable MODEL_ID so it
serves that model (and WEB_URL, with both flags, so its page links to the static one). The static Space gets the
page, its transformers.js and onnxruntime-web files from web/node_modules (run `cd web && npm ci` first) and the
model's int8 export. Needs a token with write access (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from . import hub, web


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog="parkclf deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="user/name of the Gradio Space to create or update")
    p.add_argument("--model-id", help="Hub model repo the Space serves (MODEL_ID); omit to serve the embedded model")
    p.add_argument("--static-space", help="user/name of a static Space for the in-browser page")
    p.add_argument("--model-dir", default=str(web.ROOT / "models" / "parks-vit-small"),
                   help="the checkpoint folder the static page runs (needs onnx/model_quantized.onnx)")
    p.add_argument("--web-dir", default=str(web.WEB_DIR), help="the in-browser page, with its node_modules")
    p.add_argument("--root", default=str(web.ROOT), help="project folder to upload")
    p.add_argument("--private", action="store_true", help="create the Spaces private")
    a = p.parse_args(argv)
    if not (a.space or a.static_space):
        raise UsageError("Give --space user/name (the Gradio app), --static-space user/name (the in-browser page), "
                         "or both.")
    done = []
    web_url = None
    if a.static_space:
        title = json.loads((Path(a.model_dir) / "config.json").read_text()).get("title", "")
        done.append(hub.deploy_static(a.static_space, a.model_dir, web_dir=a.web_dir, title=title, private=a.private))
        web_url = f"https://huggingface.co/spaces/{a.static_space}"
        print(f"Static Space updated: https://huggingface.co/spaces/{a.static_space}")
    if a.space:
        done.append(hub.deploy_space(a.space, model_id=a.model_id, root=a.root, private=a.private, web_url=web_url))
        print(f"Space updated: https://huggingface.co/spaces/{a.space}")
    return done
