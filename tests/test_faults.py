"""The faults a Space really meets (issue 33): a kill in the middle of an upload, a full disk, a Hub that is down or
never answers, a client that goes away mid-request, and a URL that points inside the server's network. Each test
makes the fault happen and checks what the visitor (or the dataset) is left with."""

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parkclf.app.feedback import digest, read_rows

from conftest import COLOURS, ROOT, make_photo
from hub_standin import RecordingHfApi, calls


def wait_for(condition, timeout=20.0, what="the condition"):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} did not happen within {timeout:.0f}s"
        time.sleep(0.05)


class FeedbackProcess:
    """tests/feedback_proc.py: the app's corrections store in a process of its own, driven over stdin."""

    def __init__(self, hub: Path, folder: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "feedback_proc.py"), str(hub), str(folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.run = self.proc.stdout.readline().split()[1]

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def correct(self, photo: Path, label: str) -> str:
        return self.ask(f"correct {photo} {label}")


def photos(tmp_path, n):
    out = []
    for i in range(n):
        out.append(tmp_path / f"p{i}.jpg")
        make_photo(COLOURS["red"], size=(120, 90), seed=40 + i).save(out[-1])
    return out


@pytest.mark.parametrize("disk", ["kept", "empty"])
def test_a_kill_during_a_scheduled_upload_loses_no_correction_and_sends_none_twice(tmp_path, disk):
    """SIGKILL while the CommitScheduler's commit is in flight (the stand-in holds it), then a restart. With the disk
    kept (FEEDBACK_DIR), every accepted correction reaches the dataset exactly once: the restart's first commit
    uploads the killed run's folder whole, at the same paths, so a commit that did land is overwritten with the same
    rows, never added to. With an empty disk, what was committed before the kill is there exactly once and refused
    if sent again; what was not is gone from the server, and the same photo is taken again when it is resent."""
    hub, first_disk = tmp_path / "hub", tmp_path / "disk-1"
    a, b, c = photos(tmp_path, 3)
    first = FeedbackProcess(hub, first_disk)
    assert first.correct(a, "red").startswith("saved")
    wait_for(lambda: digest(a) in {r["sha256"] for r in read_rows(RecordingHfApi(hub).repo("me/corrections"))},
             what="the scheduled upload of the first correction")
    (hub / "hold").touch()  # the next commit is slow: it is in flight when the kill comes
    assert first.correct(b, "blue").startswith("saved") and first.correct(c, "red").startswith("saved")
    wait_for(lambda: calls(hub, "create_commit_held"), what="a scheduled commit with the later corrections")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    (hub / "hold").unlink()
    rows = read_rows(RecordingHfApi(hub).repo("me/corrections"))
    assert [r["sha256"] for r in rows] == [digest(a)]  # the commit in flight never landed

    second = FeedbackProcess(hub, first_disk if disk == "kept" else tmp_path / "disk-2")
    answers = {p: second.correct(p, "red") for p in (a, b, c)}
    assert second.ask("close") == "closed"
    second.proc.stdin.close()
    second.proc.wait(20)
    rows = read_rows(RecordingHfApi(hub).repo("me/corrections"))
    sent = sorted(r["sha256"] for r in rows)
    assert sent == sorted(digest(p) for p in (a, b, c)), rows  # each exactly once
    assert answers[a].startswith("refused") and "already have a correction" in answers[a]
    if disk == "kept":  # the killed run's own rows went up, under its own folder; nothing was taken twice
        assert all(v.startswith("refused") for v in answers.values()), answers
        assert {r["file_name"].split("/")[0] for r in rows} <= {"red", "blue"}
        assert len(list((RecordingHfApi(hub).repo("me/corrections") / first.run).rglob("*.jpg"))) == 3
    else:  # b and c were lost with the disk, and were taken again when resent
        assert answers[b].startswith("saved") and answers[c].startswith("saved"), answers


def test_the_last_upload_at_shutdown_is_bounded_when_the_hub_is_down_or_never_answers(tmp_path, caplog):
    """At shutdown the store uploads what is left. A Hub that refuses the connection costs one log line (the
    exception used to escape close(), a traceback at every Space restart), and one that never answers costs the
    timeout, not a shutdown that hangs until the platform kills it; what was not sent stays on the disk."""
    from parkclf.app.feedback import on_hub

    for fault in ("down", "hold"):
        hub = tmp_path / fault
        store = on_hub("me/corrections", tmp_path / f"fb-{fault}", ["blue", "red"], api=RecordingHfApi(hub))
        [photo] = photos(tmp_path, 1)
        store.remember("s1", digest(photo), {"label": "blue", "confidences": {"blue": 0.7, "red": 0.3},
                                             "abstained": False})
        store.save(photo, "red", session="s1")
        (hub / fault).touch()
        if fault == "down":
            store.close()  # raised the Hub's ConnectionError
        else:
            done, error = finishes(functools.partial(store.close, timeout=1.0), timeout=10)  # waited for ever
            assert done and error is None, error
        assert "the last corrections were not uploaded to me/corrections" in caplog.text
        (hub / fault).unlink()
        assert not read_rows(RecordingHfApi(hub).repo("me/corrections"))
        assert [r["sha256"] for r in read_rows(tmp_path / f"fb-{fault}")] == [digest(photo)]  # kept for a restart


def test_a_scheduled_upload_while_the_hub_is_down_is_retried_at_the_next_one(tmp_path):
    from parkclf.app.feedback import on_hub

    hub = tmp_path / "hub"
    store = on_hub("me/corrections", tmp_path / "fb", ["blue", "red"], every=0.005, api=RecordingHfApi(hub))
    (hub / "down").touch()
    [photo] = photos(tmp_path, 1)
    store.remember("s1", digest(photo), {"label": "blue", "confidences": {"blue": 0.7, "red": 0.3},
                                         "abstained": False})
    t = time.perf_counter()
    store.save(photo, "red", session="s1")  # the visitor never waits for the Hub
    assert time.perf_counter() - t < 2
    time.sleep(1.0)  # three scheduled uploads fail
    assert not read_rows(RecordingHfApi(hub).repo("me/corrections"))
    (hub / "down").unlink()
    wait_for(lambda: read_rows(RecordingHfApi(hub).repo("me/corrections")), what="the upload once the Hub is back")
    store.close()
    assert [r["sha256"] for r in read_rows(RecordingHfApi(hub).repo("me/corrections"))] == [digest(photo)]


class Silent:
    """A listener that takes connections and never answers: a Hub that is down behind a load balancer."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        for c in [*self.conns, self.sock]:  # a request still hanging (today's code) ends with the connection
            c.close()


@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    """huggingface_hub pointed at a Silent listener, with 0.5 s time limits and its retries' sleeps skipped (the
    retries themselves still happen), so a bounded wait takes seconds here."""
    import types

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = Silent()
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.5)
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda s: None, time=time.time,
                                                             monotonic=time.monotonic))
    _http.close_session()
    yield hub
    hub.close()
    _http.close_session()


def finishes(call, timeout):
    """(finished in time, what it raised): ``call`` runs in a thread, so a hang fails the test instead of the run."""
    import threading

    out = {}

    def run():
        try:
            call()
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), out.get("error")


def test_a_model_id_the_hub_never_answers_for_fails_the_start_with_a_sentence(silent_hub):
    """MODEL_ID=user/name while the Hub takes the connection and never answers: huggingface_hub's client has no time
    limit, so the Space's start used to hang for ever; now each request gives up after HF_HUB_DOWNLOAD_TIMEOUT and
    the start ends with the sentence that names the fix."""
    from parkclf.classifier import resolve
    from parkclf.errors import UsageError

    done, error = finishes(lambda: resolve("me/parks"), timeout=30)
    assert done, "resolve('me/parks') still waiting on a Hub that never answers after 30 s"
    assert isinstance(error, UsageError) and "Could not load 'me/parks'" in str(error), error
    assert "HF_HUB_OFFLINE=1" in str(error) and silent_hub.conns  # it did try the Hub


def test_a_push_to_a_hub_that_never_answers_fails_in_bounded_time(silent_hub, tmp_path):
    """push_model (the Teach tab's push, which turns the error into a sentence, and --push-to-hub)."""
    from huggingface_hub import HfApi

    from parkclf.publish import hub

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    done, error = finishes(lambda: hub.push_model(tmp_path / "model", "me/parks", api=HfApi(endpoint=silent_hub.url,
                                                                                    token="hf_x")), timeout=30)
    assert done, "push_model still waiting on a Hub that never answers after 30 s"
    assert error is not None and silent_hub.conns


@pytest.mark.parametrize("where", ["photo", "metadata row"])
def test_a_full_disk_under_the_feedback_folder_refuses_with_a_sentence_and_recovers(tmp_path, monkeypatch, where):
    """ENOSPC while a correction is written: the visitor is told why (not a bare "Error"), nothing half-written is
    left (a torn row would glue itself to the next one, and that correction would be lost too), and the same photo
    is taken once space returns."""
    import errno
    import pathlib

    from parkclf.app.feedback import FeedbackError, FeedbackStore

    store = FeedbackStore(tmp_path / "fb", ["blue", "red"])
    first, photo = photos(tmp_path, 2)
    for p in (first, photo):
        store.remember("s1", digest(p), {"label": "blue", "confidences": {"blue": 0.7, "red": 0.3},
                                         "abstained": False})
    store.save(first, "red", session="s1")
    full = True
    write_bytes, open_ = pathlib.Path.write_bytes, pathlib.Path.open

    def write_photo(self, data):
        if full and where == "photo":
            write_bytes(self, data[:100])  # part of it, as a filling disk does
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    class TornRow:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:20])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_row(self, mode="r", *a, **kw):
        f = open_(self, mode, *a, **kw)
        return TornRow(f) if full and where == "metadata row" and mode == "a" else f

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_photo)
    monkeypatch.setattr(pathlib.Path, "open", open_row)
    with pytest.raises(FeedbackError, match="not saved: the server's disk is full. Please try again later"):
        store.save(photo, "blue", session="s1")
    assert sorted(p.name for p in (tmp_path / "fb").rglob("*") if p.is_file()) == sorted(
        [next((tmp_path / "fb").rglob("*.jpg")).name, "metadata.jsonl"])  # only the first correction
    full = False
    store.save(photo, "blue", session="s1")
    rows = read_rows(tmp_path / "fb")
    assert [r["sha256"] for r in rows] == [digest(first), digest(photo)]
    assert len(list((tmp_path / "fb").rglob("*.jpg"))) == 2


# Live: the real app (tests/faulty_app.py: app.py with a disk that fills while a file exists), one server for these.

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from conftest import EMBEDDED
    from live import AppServer

    if not EMBEDDED.exists():
        pytest.skip(f"the embedded model {EMBEDDED} is missing")
    root = tmp_path_factory.mktemp("faulty")
    folders = {name: root / name for name in ("uploads", "tmp", "feedback")}
    for f in folders.values():
        f.mkdir()
    srv = AppServer(env={"GRADIO_TEMP_DIR": str(folders["uploads"]), "TMPDIR": str(folders["tmp"]),
                         "FEEDBACK_DIR": str(folders["feedback"])},
                    log=root / "app.log", argv=["tests/faulty_app.py", str(root / "FULL")])
    srv.wait()
    srv.full, srv.folders = root / "FULL", folders
    yield srv
    srv.stop()


def files_under(*folders) -> set:
    return {p for f in folders for p in Path(f).rglob("*")}


def new_log(srv, since: int) -> str:
    return srv.output()[since:]


@pytest.mark.live
def test_a_full_upload_folder_answers_with_a_sentence_and_recovers(app, tmp_path):
    """ENOSPC while Gradio writes an upload into its temporary folder: a 507 with a sentence (was: a 500 and a
    70-line traceback), one log line, no partial file left; the server goes on, and takes the photo once space
    returns."""
    from live import RawHTTP

    [photo] = photos(tmp_path, 1)
    raw, mark = RawHTTP(app.url), len(app.output())
    before = files_under(app.folders["uploads"])
    app.full.touch()
    try:
        with open(photo, "rb") as f:
            r = raw.http.post("/gradio_api/upload", files={"files": ("p.jpg", f)})
    finally:
        app.full.unlink()
    assert r.status_code == 507 and "disk is full" in r.json()["detail"], (r.status_code, r.text)
    assert files_under(app.folders["uploads"]) == before  # no partial upload left
    wait_for(lambda: "the disk is full" in new_log(app, mark), what="the log line")
    assert "Traceback" not in new_log(app, mark), new_log(app, mark)
    ok, answer = raw.call("predict", [raw.upload(photo)], "s-full")
    assert ok and answer[0]["label"], answer


@pytest.mark.live
def test_a_correction_on_a_full_disk_is_refused_with_a_sentence_and_taken_when_space_returns(app, tmp_path):
    from live import RawHTTP

    [photo] = photos(tmp_path, 1)
    raw, session = RawHTTP(app.url), "s-full-feedback"
    sent = raw.upload(photo)
    assert raw.call("classify", [sent, False], session)[0]
    app.full.touch()
    try:
        ok, message = raw.call("save", [sent, "yosemite"], session)
    finally:
        app.full.unlink()
    assert not ok and message == ("This correction was not saved: the server's disk is full. Please try again "
                                  "later."), message
    assert not [p for p in app.folders["feedback"].rglob("*") if p.is_file()]
    ok, message = raw.call("save", [sent, "yosemite"], session)
    assert ok and "Saved" in message[0], message
    assert [r["sha256"] for r in read_rows(app.folders["feedback"])] == [digest(photo)]


def partial_upload(url: str, body_bytes: int) -> None:
    """A multipart upload that announces a 5 MB photo, sends ``body_bytes`` of it and hangs up."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    head = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"p.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n")
    request = (b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               + f"Content-Length: {len(head) + 5_000_000}\r\n\r\n".encode() + head)
    with socket.create_connection((u.hostname, u.port)) as s:
        s.sendall(request + b"\xff\xd8" * (body_bytes // 2))
        time.sleep(0.5)  # the server has written what came


@pytest.mark.live
def test_a_client_that_hangs_up_mid_upload_leaves_no_file(app):
    """Gradio deletes its temporary upload file when a form is malformed, but not when the client goes away: each
    aborted upload used to leave its partial file in the upload folder."""
    before = files_under(app.folders["uploads"], app.folders["tmp"])
    mark = len(app.output())
    for _ in range(3):
        partial_upload(app.url, 200_000)
    wait_for(lambda: files_under(app.folders["uploads"], app.folders["tmp"]) == before, timeout=10,
             what="the partial uploads' removal")
    assert "Traceback" not in new_log(app, mark), new_log(app, mark)


@pytest.mark.live
def test_a_client_that_hangs_up_mid_stream_leaves_no_worker_busy(app, tmp_path):
    """The many-photos table streams a row per photo, one run at a time (concurrency_limit=1). Three clients join,
    read the first rows and hang up; a fourth run then completes, and no file is left besides the uploads."""
    import httpx

    from live import RawHTTP

    raw = RawHTTP(app.url)
    sent = [raw.upload(p) for p in photos(tmp_path, 12)]
    before = files_under(app.folders["uploads"], app.folders["tmp"])
    for i in range(3):
        session = f"gone-{i}"
        body = {"data": [sent], "fn_index": raw.fn_index("run"), "session_hash": session, "event_data": None,
                "trigger_id": None}
        raw.http.post("/gradio_api/queue/join", json=body).raise_for_status()
        with httpx.Client(base_url=raw.url, timeout=60) as http, http.stream(
                "GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if '"process_generating"' in line:
                    break  # the first rows came: hang up
    t = time.perf_counter()
    ok, out = raw.call("run", [sent], "stays")
    assert ok and len(out[0]["data"]) == 12, out[0].get("data", out)[:1]
    assert time.perf_counter() - t < 60
    left = files_under(app.folders["uploads"], app.folders["tmp"]) - before
    assert all(p.suffix == ".csv" or p.is_dir() for p in left), left  # the finished run's CSV download only


class Listener:
    """A local HTTP server that records every request it gets (it should get none)."""

    def __init__(self):
        import http.server
        import threading

        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                self.wfile.write((ROOT / "examples" / "seki-giant-sequoia-tree.jpg").read_bytes())

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.server.shutdown()


URL_REFUSED = "That address cannot be fetched; send the image itself or a public URL."


@pytest.mark.live
def test_a_url_to_a_loopback_or_private_address_is_not_fetched_and_gets_a_sentence(app, listener):
    """Through the raw API (/gradio_api/call/predict) as a FileData path, and with a url field: Gradio's safehttpx
    refuses the address, and the caller now reads why (was: `event: error` with null, and a traceback in the log)."""
    import json

    import httpx

    http, mark = httpx.Client(base_url=app.url.rstrip("/"), timeout=60), len(app.output())
    before = files_under(app.folders["uploads"])
    meta = {"_type": "gradio.FileData"}
    cases = {f"http://127.0.0.1:{listener.port}/x.jpg": URL_REFUSED, f"http://localhost:{listener.port}/x.jpg":
             URL_REFUSED, "http://10.0.0.1/x.jpg": URL_REFUSED, "http://169.254.169.254/latest/meta-data": URL_REFUSED}
    payloads = [({"path": url, "meta": meta}, said) for url, said in cases.items()]
    payloads.append(({"url": f"http://127.0.0.1:{listener.port}/x.jpg", "meta": meta},
                     "The image could not be received; send the file itself or a public http(s) URL."))
    for payload, said in payloads:
        event = http.post("/gradio_api/call/predict", json={"data": [payload]}).json()["event_id"]
        answer = http.get(f"/gradio_api/call/predict/{event}").text
        assert "event: error" in answer, answer
        data = json.loads(answer.split("data:", 1)[1].strip().splitlines()[0])
        assert data["error"] == said, (payload, answer)
    assert listener.requests == []
    log = new_log(app, mark)
    assert "Traceback" not in log and log.count("an input URL was not fetched") == len(cases), log
    assert files_under(app.folders["uploads"]) == before  # not even the empty folder Gradio makes for a download


@pytest.mark.live
def test_an_mcp_caller_is_told_why_a_loopback_url_is_not_fetched(app, listener):
    import asyncio

    from test_api_clients import mcp_session

    async def work(session):
        return await session.call_tool("predict", {"image": f"http://127.0.0.1:{listener.port}/x.jpg"})

    result = asyncio.run(mcp_session(app.url, work))
    assert result.isError and URL_REFUSED in result.content[0].text, result
    assert listener.requests == []


def test_the_cache_sweep_survives_uploads_arriving_while_it_runs(tmp_path):
    """Gradio sweeps its upload cache in a worker thread while uploads add to the same set: its own sweep then
    raises "Set changed size during iteration", which ends the periodic task for good (the soak kept every upload).
    The app's sweep deletes what is old, keeps what arrives meanwhile, and does not raise."""
    from gradio import route_utils

    from parkclf.app.hardening import GRADIO_SWEEP, app_kwargs, sweep_cache

    class Busy(set):
        """A set of cached files that gets an upload while someone walks it (as the event loop does)."""

        def __iter__(self):
            for i, name in enumerate(super().__iter__()):
                if i == 1:
                    fresh = tmp_path / f"new{len(self)}.jpg"
                    fresh.write_bytes(b"x")
                    self.add(str(fresh))
                yield name

    class Cache:  # what a sweep reads of a Blocks
        def __init__(self):
            self.blocks, self.temp_file_sets = {}, [Busy()]
            for i in range(5):
                old = tmp_path / f"old{id(self)}-{i}.jpg"
                old.write_bytes(b"x")
                self.temp_file_sets[0].add(str(old))

    with pytest.raises(RuntimeError, match="changed size during iteration"):
        GRADIO_SWEEP(Cache(), 0)
    cache = Cache()
    time.sleep(0.05)
    sweep_cache(cache, 0.01)
    left = {Path(f).name for f in cache.temp_file_sets[0]}
    assert not any(name.startswith(f"old{id(cache)}") for name in left)
    assert not list(tmp_path.glob(f"old{id(cache)}-*"))
    app_kwargs()
    assert route_utils.delete_files_created_by_app is sweep_cache  # what Gradio's periodic task calls
