"""Publishing: push a trained folder as a model repo, or deploy the app as a Gradio Space.

One huggingface_hub call per job. The token comes from ``HF_TOKEN`` or the login cache
(``hf auth login``) through huggingface_hub itself; this module never reads or prints it.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

# What a Space needs to run app.py: nothing else from the repository is uploaded.
SPACE_FILES = ["app.py", "requirements.txt", "README.md", "src/**", "models/**", "examples/**"]
SPACE_IGNORE = ["**/__pycache__/**", "**/*.pyc", "**/checkpoints/**"]
MODEL_IGNORE = ["checkpoints/**", "head/**", "**/.write_test*"]


def push_model(folder: str | Path, repo_id: str, *, private: bool = False, api: HfApi | None = None) -> str:
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             ignore_patterns=MODEL_IGNORE, commit_message="Upload model trained with parkclf train.py")
    return str(info)


def deploy_space(space_id: str, *, model_id: str | None = None, root: str | Path = ".", private: bool = False,
                 api: HfApi | None = None) -> str:
    """Create or update a Gradio Space running this app; point it at ``model_id`` via the MODEL_ID variable."""
    api = api or HfApi()
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    if model_id:
        api.add_space_variable(space_id, "MODEL_ID", model_id)
    info = api.upload_folder(folder_path=str(root), repo_id=space_id, repo_type="space",
                             allow_patterns=SPACE_FILES, ignore_patterns=SPACE_IGNORE,
                             commit_message="Deploy parkclf app")
    return str(info)
