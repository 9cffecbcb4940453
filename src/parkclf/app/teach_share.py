"""Taking a taught model away: the checkpoint as a zip, or pushed to the visitor's Hugging Face account.

The zip is made after Teach has answered, in an event of its own (:meth:`parkclf.app.teach.TeachTab.download`), so
it never holds up the visitor's next Teach or anyone else's. The push uses the signed-in visitor's token for that
one upload, and keeps it nowhere.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from .api import refuse
from .teach_models import Model

logger = logging.getLogger(__name__)

# Weights and graphs deflate by about a tenth, for 3-4 s of CPU (the parks checkpoint: 90 MB stored in 0.6 s, 81 MB
# deflated in 3.6 s), on cores other visitors are teaching on; the text files deflate well and cost nothing.
STORED = {".safetensors", ".onnx"}


def make_zip(model: Model) -> Path:
    """The checkpoint folder as a zip whose one top folder is the checkpoint (unzip, then MODEL_ID=that folder);
    made once per model."""
    with model.zipping:
        if model.zip_path is None:
            folder = model.taught.folder
            path = model.home / f"{folder.name}.zip"
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                for f in sorted(folder.rglob("*")):
                    if f.is_file():
                        zf.write(f, (Path(folder.name) / f.relative_to(folder)).as_posix(),
                                 compress_type=zipfile.ZIP_STORED if f.suffix in STORED else zipfile.ZIP_DEFLATED)
            model.zip_path = path
        return model.zip_path


def push(model: Model, repo_name: str | None, private: bool, profile, oauth_token, hub_api) -> str:
    """Push ``model`` to the signed-in visitor's account with their token, for this one upload; the sentence the
    page shows."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from ..checkpoint import name_in_card
    from ..publish.hub import push_model

    name = (repo_name or "").strip() or model.taught.folder.name
    repo_id = name if "/" in name else f"{profile.username}/{name}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise refuse(f"'{name}' cannot be a repo name; use letters, digits, '-', '_' and '.', "
                     "e.g. my-classifier.") from None
    try:
        name_in_card(model.taught.folder, repo_id)
        push_model(model.taught.folder, repo_id, private=bool(private), api=hub_api, token=oauth_token.token,
                   commit_message="Upload a model taught in the parkclf app")
    except Exception as e:  # the Hub's reason, never the token (its messages do not carry it; made sure)
        reason = str(e).strip().splitlines()[0][:160].replace(oauth_token.token, "…") if str(e).strip() else ""
        logger.warning("push to %s failed: %s", repo_id, type(e).__name__)
        raise refuse(f"The Hub did not take the upload to {repo_id} ({reason or type(e).__name__}); check that "
                     "you may write there, or pick another name.") from None
    logger.info("pushed a taught model to %s", repo_id)
    return (f"Pushed to [{repo_id}](https://huggingface.co/{repo_id}). Serve it with this app: "
            f"`MODEL_ID={repo_id} python app.py`, or load it with `transformers.pipeline`.")
