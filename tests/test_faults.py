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
