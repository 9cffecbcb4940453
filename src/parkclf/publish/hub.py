"""Publishing: push a trained folder as a model repo, deploy the app as a Gradio Space, or the in-browser page as a
static Space; keep the app's corrections in a dataset repo.

One huggingface_hub call per upload. The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``)
through huggingface_hub itself; this module never reads or prints it.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitScheduler, HfApi

from ..hub_timeouts import bound
from . import web

# What a Space needs to run app.py on the serving stack (no torch): the weights are left out where an ONNX export
# is there to serve, and the in-browser page's runtime files come along so the app can serve it at /web/.
SPACE_FILES = ["app.py", "requirements.txt", "README.md", "src/**", "models/**", "examples/**",
               *(f"web/{name}" for name in web.PAGE + web.RUNTIME)]
SPACE_IGNORE = ["**/__pycache__/**", "**/*.pyc", "**/checkpoints/**", "**/soup/**", "models/*/model.safetensors"]
MODEL_IGNORE = ["checkpoints/**", "head/**", "**/.write_test*"]

STATIC_CARD = """---
title: {title}
emoji: 🏞️
colorFrom: green
colorTo: blue
sdk: static
app_file: index.html
---

{title}, in the visitor's browser: transformers.js runs the model's ONNX export on the device, and the photo is never
uploaded. Built with parkclf (`parkclf deploy --static-space`).
"""


def push_model(folder: str | Path, repo_id: str, *, private: bool = False, api: HfApi | None = None,
               token: str | None = None, commit_message: str = "Upload model trained with parkclf train.py") -> str:
    """``token``: for these two calls alone (the app passes a signed-in visitor's); None: huggingface_hub's own."""
    bound()  # a Hub that never answers fails the push (a sentence in the app), never hangs it
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True, token=token)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             ignore_patterns=MODEL_IGNORE, commit_message=commit_message, token=token)
    return str(info)


def deploy_space(space_id: str, *, model_id: str | None = None, root: str | Path = ".", private: bool = False,
                 web_url: str | None = None, api: HfApi | None = None) -> str:
    """Create or update a Gradio Space running this app; point it at ``model_id`` via the MODEL_ID variable (and
    at a static Space of the in-browser page via WEB_URL)."""
    api = api or HfApi()
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    if model_id:
        api.add_space_variable(space_id, "MODEL_ID", model_id)
    if web_url:
        api.add_space_variable(space_id, "WEB_URL", web_url)
    info = api.upload_folder(folder_path=str(root), repo_id=space_id, repo_type="space",
                             allow_patterns=SPACE_FILES, ignore_patterns=SPACE_IGNORE,
                             commit_message="Deploy parkclf app")
    return str(info)


def deploy_static(space_id: str, model_dir: str | Path, *, web_dir: str | Path = web.WEB_DIR, title: str = "",
                  private: bool = False, api: HfApi | None = None) -> str:
    """Publish the in-browser page with its runtime and ``model_dir``'s int8 export as a static Space."""
    files = web.site_files(model_dir, web_dir)  # refuses early, naming what is missing (npm ci, the export)
    api = api or HfApi()
    api.create_repo(space_id, repo_type="space", space_sdk="static", private=private, exist_ok=True)
    card = STATIC_CARD.format(title=title or "Image classifier").encode()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    info = api.create_commit(repo_id=space_id, repo_type="space", operations=operations,
                             commit_message="Deploy the in-browser page (parkclf)")
    return str(info)


def schedule_uploads(folder: str | Path, repo_id: str, *, every: float, allow_patterns: list[str],
                     api: HfApi | None = None) -> CommitScheduler:
    """Upload what ``folder`` gains to the dataset repo ``repo_id`` every ``every`` minutes, in a background thread
    (huggingface_hub's CommitScheduler). The repo is created private: corrections are strangers' photos."""
    bound()
    return CommitScheduler(repo_id=repo_id, repo_type="dataset", folder_path=folder, every=every, private=True,
                           allow_patterns=allow_patterns, hf_api=api or HfApi())


def download(api: HfApi, repo_id: str, pattern: str) -> Path:
    """The dataset repo's files that match ``pattern``, downloaded; the folder that holds them."""
    return Path(api.snapshot_download(repo_id, repo_type="dataset", allow_patterns=pattern))
