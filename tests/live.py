"""Start the real app (python app.py) on a free loopback port, for the live and browser tiers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags chromium keeps trying hosts this closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``argv``: the script and its flags (default: app.py)."""

    def __init__(self, env: dict | None = None, log: Path | None = None, argv: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"app-{self.port}.log"
        full_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the server writes it until stop()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, *(argv or ["app.py"])], cwd=ROOT, env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 180) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"app.py did not answer on {self.url} in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


class RawHTTP:
    """Gradio's HTTP protocol spoken directly, as a script (or an attacker) would: upload, join the queue with an
    event's fn_index, read the event stream. No gradio_client."""

    def __init__(self, url: str):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.config = self.http.get("/config").json()

    def fn_index(self, fn_name: str) -> int:
        """The event whose Python function is ``fn_name`` (the page's private events have no public api_name)."""
        for i, d in enumerate(self.config["dependencies"]):
            if d.get("api_name") == fn_name:
                return d.get("id", i)
        raise KeyError(f"no event {fn_name!r} in /config")

    def upload(self, path) -> dict:
        with open(path, "rb") as f:
            server_path = self.http.post("/gradio_api/upload", files={"files": (os.path.basename(path), f)}).json()[0]
        return {"path": server_path, "orig_name": os.path.basename(path), "meta": {"_type": "gradio.FileData"}}

    def call(self, fn_name: str, data: list, session: str, messages: list | None = None) -> tuple[bool, object]:
        """(success, output data or the error message shown to the user); ``messages`` collects the stream's."""
        import json

        body = {"data": data, "fn_index": self.fn_index(fn_name), "session_hash": session, "event_data": None,
                "trigger_id": None}
        event = self.http.post("/gradio_api/queue/join", json=body)
        event.raise_for_status()
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if messages is not None:
                        messages.append(msg)
                    if msg.get("msg") == "process_completed":
                        out = msg.get("output") or {}
                        return bool(msg.get("success")), out.get("data") if msg.get("success") else out.get("error")
        raise RuntimeError("the event stream ended without process_completed")
