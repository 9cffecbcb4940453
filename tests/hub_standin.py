"""A stand-in for the Hugging Face Hub at the network boundary: an ``HfApi`` whose calls that would reach the Hub
write into a local folder instead, so tests (and an app process they start) can read what would have been sent.

    <folder>/calls.jsonl         one line per call: create_repo, create_commit (the paths it adds), upload_folder (the
                                 files it sends), snapshot_download; where a call carried its own token, a fingerprint
                                 of it (sha256, 16 hex digits), never the token
    <folder>/repos/<repo_id>/    the repo's files as the commits left them; downloads are served from here
    <folder>/hold                while this file exists, create_commit waits before it writes anything (recorded as
                                 create_commit_held), as a slow Hub would: the Hub applies a commit whole or not at
                                 all, so a process killed meanwhile has committed nothing
    <folder>/down                while this file exists, every call raises a connection error, as an unreachable Hub

Everything else (``run_as_future``, which CommitScheduler uses for its background pushes) is huggingface_hub's own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl
from huggingface_hub.utils import filter_repo_objects


class RecordingHfApi(HfApi):
    def __init__(self, folder: str | Path):
        super().__init__(token=False)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _record(self, call: str, token=None, **what) -> None:
        if isinstance(token, str):
            what["token"] = fingerprint(token)
        with (self.folder / "calls.jsonl").open("a") as f:
            f.write(json.dumps({"call": call, **what}) + "\n")

    def repo(self, repo_id: str) -> Path:
        return self.folder / "repos" / repo_id

    def create_repo(self, repo_id: str, *, repo_type=None, private=None, exist_ok=False, **kw) -> RepoUrl:
        self._reach()
        self._record("create_repo", kw.get("token"), repo_id=repo_id, repo_type=repo_type, private=private,
                     exist_ok=exist_ok)
        self.repo(repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_type + 's/' if repo_type else ''}{repo_id}")

    def _reach(self) -> None:
        if (self.folder / "down").exists():
            raise ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused")

    def create_commit(self, repo_id: str, operations, *, commit_message: str, repo_type=None, **kw) -> str:
        self._reach()
        if (self.folder / "hold").exists():
            self._record("create_commit_held", repo_id=repo_id)
            while (self.folder / "hold").exists():
                time.sleep(0.05)
        added = []
        for op in operations:
            with op.as_file() as f:
                data = f.read()
            dest = self.repo(repo_id) / op.path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            added.append({"path": op.path_in_repo, "bytes": len(data)})
        self._record("create_commit", repo_id=repo_id, repo_type=repo_type, message=commit_message, added=added)
        return f"https://huggingface.co/{repo_id}/commit/recorded"

    def upload_folder(self, *, folder_path, repo_id: str, repo_type=None, commit_message=None, allow_patterns=None,
                      ignore_patterns=None, **kw) -> str:
        self._reach()
        root = Path(folder_path)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        sent = list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        for rel in sent:
            (self.repo(repo_id) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / rel, self.repo(repo_id) / rel)
        self._record("upload_folder", kw.get("token"), repo_id=repo_id, repo_type=repo_type, message=commit_message,
                     files=sent)
        return f"https://huggingface.co/{repo_id}/commit/recorded"

    def snapshot_download(self, repo_id: str, *, repo_type=None, allow_patterns=None, **kw) -> str:
        self._reach()
        self._record("snapshot_download", repo_id=repo_id, repo_type=repo_type, allow_patterns=allow_patterns)
        out, root = Path(tempfile.mkdtemp(prefix="snapshot-")), self.repo(repo_id)
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        for rel in filter_repo_objects(files, allow_patterns=allow_patterns):  # the Hub's own pattern matching
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / rel, out / rel)
        return str(out)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def calls(folder: str | Path, kind: str | None = None) -> list[dict]:
    """What a RecordingHfApi over ``folder`` recorded, in order (only calls of ``kind`` when given)."""
    path = Path(folder) / "calls.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if kind is None or r["call"] == kind]
