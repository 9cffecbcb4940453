"""Live tier for the "Teach it" tab: the real app.py on loopback, its events called over Gradio's HTTP protocol as
the page (or a stranger) calls them. Visitors teaching at once queue and each gets their own model; bad zips get a
sentence and the server stays up; and the server that taught and tried never loaded torch."""

import io
import os
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from parkclf.app.teach_photos import READ_BATCH
from parkclf.app.words import NONE_OF_THESE as NONE  # a model taught from the embedded one has that bar

from conftest import COLOURS, EMBEDDED, make_photo
from live import AppServer, RawHTTP

pytestmark = pytest.mark.live
BASE = Path(os.environ.get("PARKCLF_TEACH_BASE", EMBEDDED))


@pytest.fixture(scope="module")
def server():
    if not (BASE / "onnx").exists():
        pytest.skip(f"{BASE} has no ONNX export to teach from")
    srv = AppServer(env={"MODEL_ID": str(BASE)})
    srv.wait()
    yield srv
    srv.stop()


class Timed(list):
    """The event stream's messages, each with the moment it arrived."""

    def append(self, msg: dict) -> None:
        super().append({**msg, "arrived": time.monotonic()})

    def at(self, kind: str) -> float:
        return next(m["arrived"] for m in self if m.get("msg") == kind)


class Page:
    """One visitor's session: the tab's events by the elem_id of their inputs, as the page sends them."""

    def __init__(self, url: str):
        self.raw, self.session = RawHTTP(url), uuid.uuid4().hex[:11]
        self.elem = {c["id"]: c.get("props", {}).get("elem_id") for c in self.raw.config["components"]}
        self.messages = Timed()

    def call(self, fn_name: str, values: dict) -> tuple[bool, object]:
        inputs = next(d["inputs"] for d in self.raw.config["dependencies"] if d.get("api_name") == fn_name)
        data = [values.get(self.elem[i]) for i in inputs]
        return self.raw.call(fn_name, data, self.session, messages=self.messages)

    def submit(self, fn_name: str, values: dict) -> str:
        """Join the queue without waiting: the event's id."""
        dep = next(d for d in self.raw.config["dependencies"] if d.get("api_name") == fn_name)
        body = {"data": [values.get(self.elem[i]) for i in dep["inputs"]], "fn_index": dep["id"],
                "session_hash": self.session, "event_data": None, "trigger_id": None}
        return self.raw.http.post("/gradio_api/queue/join", json=body).json()["event_id"]

    def outcomes(self, events: set[str]) -> dict[str, tuple[bool, object]]:
        """{event id: (success, output data or error)} once each of ``events`` has completed."""
        import json

        done = {}
        with self.raw.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed" and msg.get("event_id") in events:
                    out = msg.get("output") or {}
                    done[msg["event_id"]] = bool(msg.get("success")), out.get("data", out.get("error"))
                    if set(done) == events:
                        return done
        raise RuntimeError(f"the event stream ended with {len(done)} of {len(events)} events completed")

    def teach(self, classes: dict[str, list[bytes]] | None = None, zip_bytes: bytes | None = None, tmp=None):
        values = {}
        for i, (name, photos) in enumerate((classes or {}).items()):
            values[f"teach_name_{i}"] = name
            values[f"teach_photos_{i}"] = [self.raw.upload(write(tmp / f"{name}_{k}.jpg", p))
                                           for k, p in enumerate(photos)]
        if zip_bytes is not None:
            values["teach_zip"] = self.raw.upload(write(tmp / f"{self.session}.zip", zip_bytes))
        return self.call("teach_photos", values)

    def try_photo(self, photo: bytes, tmp) -> tuple[bool, object]:
        return self.call("try_taught", {"teach_try_photo": self.raw.upload(write(tmp / "try.jpg", photo))})


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def jpeg(colour: str, seed: int) -> bytes:
    buf = io.BytesIO()
    make_photo(COLOURS[colour], size=(96, 72), seed=seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def photos(colour: str, n: int = 6, seed: int = 0) -> list[bytes]:
    return [jpeg(colour, seed + i) for i in range(n)]


def headline(label_output: dict) -> str:
    return label_output["label"]


def test_visitors_teaching_at_once_each_get_their_own_model(server, tmp_path):
    alice, bob, carol = Page(server.url), Page(server.url), Page(server.url)
    results = {}

    def teach(page, classes, folder):
        folder.mkdir()
        results[page.session] = page.teach(classes, tmp=folder)

    threads = [threading.Thread(target=teach, args=(alice, {"poppy": photos("red"), "sea": photos("blue")},
                                                    tmp_path / "a")),
               threading.Thread(target=teach, args=(bob, {"moss": photos("green", seed=50),
                                                          "lake": photos("blue", seed=50)}, tmp_path / "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for page in (alice, bob):
        ok, out = results[page.session]
        assert ok, out
        assert "Taught 2 classes from 12 photos" in out[0], out[0]
    # each session tries its own model; one who taught nothing has none
    ok, out = alice.try_photo(jpeg("red", 99), tmp_path)
    assert ok and headline(out[0]) == "Poppy" and {c["label"] for c in out[0]["confidences"]} == {"Poppy", "Sea", NONE}
    ok, out = bob.try_photo(jpeg("green", 99), tmp_path)
    assert ok and headline(out[0]) == "Moss" and {c["label"] for c in out[0]["confidences"]} == {"Moss", "Lake", NONE}
    ok, message = carol.try_photo(jpeg("red", 99), tmp_path)
    assert not ok and "no taught model in this session" in message, message
    # the summary said how far the reading had got, batch by batch, before the results
    said = [m["output"]["data"][0] for m in alice.messages if m.get("msg") == "process_generating"]
    assert said[0] == f"Reading your photos: {READ_BATCH} of 12…", said  # later messages are diffs of it


def test_a_second_teach_while_one_is_pending_teaches_again_and_try_it_uses_the_new_model(server, tmp_path):
    """Issue 32: a press of Teach while the visitor's run was still pending did nothing. Over HTTP, as the page
    sends it when the first run ends: both runs answer, and Try it answers with the second run's classes."""
    page = Page(server.url)
    reds, blues = photos("red", 20, seed=300), photos("blue", 20, seed=300)
    first = {"poppy": reds, "sea": blues}
    values = {}
    for i, (name, shots) in enumerate(first.items()):
        values[f"teach_name_{i}"] = name
        values[f"teach_photos_{i}"] = [page.raw.upload(write(tmp_path / f"{name}_{k}.jpg", p))
                                       for k, p in enumerate(shots)]
    pending = page.submit("teach_photos", values)  # 40 photos not read yet: seconds of reading first
    renamed = page.submit("teach_photos", {**values, "teach_name_0": "rose"})  # pressed again, a class renamed
    done = page.outcomes({pending, renamed})
    # the first says so: two runs of one session at once (over HTTP; the page runs them one after the other) keep
    # the later press's model, whichever ends first
    assert done[pending][0] and done[pending][1][0].startswith("**Replaced** by your newer press"), done[pending]
    assert done[renamed][0] and "Taught 2 classes from 40 photos" in done[renamed][1][0], done[renamed]
    ok, out = page.try_photo(jpeg("red", 999), tmp_path)
    assert ok and headline(out[0]) == "Rose", out
    assert {c["label"] for c in out[0]["confidences"]} == {"Rose", "Sea", NONE}, out


def zip_bytes(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


ZEROS = b"\0" * (50 * 2**20)  # 50 MB that deflate to 50 KB: seven of them are a zip bomb past the 300 MB cap


@pytest.mark.parametrize("entries,sentence", [
    ({"red/a.jpg": b"x", **{f"red/bomb{i}.jpg": ZEROS for i in range(7)}}, "more than 300 MB of photos; send fewer"),
    ({"red/a.jpg": b"x", "../../etc/cron.d/evil.jpg": b"x"}, "holds an entry outside its folders"),
    ({"/tmp/evil/a.jpg": b"x", "red/a.jpg": b"x"}, "holds an entry outside its folders"),
    ({"red/a.jpg": jpeg("red", 1), "red/b.jpg": jpeg("red", 2)}, "needs at least 2 classes; this has 1 (red)"),
    ({"red/a.jpg": b"not a photo", "red/b.jpg": jpeg("red", 1), "sea/a.jpg": jpeg("blue", 1),
      "sea/b.jpg": jpeg("blue", 2)}, "'red' has 1 readable photo (1 could not be read); each class needs at least 2"),
])
def test_bad_zips_get_a_sentence_and_the_server_stays_up(server, tmp_path, entries, sentence):
    page = Page(server.url)
    ok, out = page.teach(zip_bytes=zip_bytes(entries), tmp=tmp_path)
    message = out[0]  # said in the results area, where it stays; no error
    assert ok and message.startswith("**Not taught.**") and sentence in message, message
    assert "Traceback" not in message and str(tmp_path) not in message
    ok, out = page.raw.call("predict", [page.raw.upload(write(tmp_path / "p.jpg", jpeg("red", 1)))], page.session)
    assert ok and out[0]["label"], out  # still serving
    assert server.proc.poll() is None


def test_the_server_that_taught_and_tried_never_loaded_torch(server, tmp_path):
    page = Page(server.url)
    ok, out = page.teach({"poppy": photos("red", 4), "sea": photos("blue", 4)}, tmp=tmp_path)
    assert ok, out
    assert page.try_photo(jpeg("blue", 77), tmp_path)[0]
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps, [m for m in maps.splitlines() if "torch" in m][:3]


TOKEN = "hf_oauthVisitorTokenThatMustNeverLeaveTheUpload0123"
SPACE = {"SYSTEM": "spaces", "SPACE_ID": "me/teach-app", "OAUTH_CLIENT_ID": "client-id",
         "OAUTH_CLIENT_SECRET": "client-secret", "OAUTH_SCOPES": "openid profile write-repos",
         "OPENID_PROVIDER_URL": "https://huggingface.co"}


def signed_in(secret: str, username: str, token: str) -> str:
    """The session cookie Gradio's OAuth callback would set after "Sign in with Hugging Face" (Starlette's signed
    session, with the secret Gradio derives from OAUTH_CLIENT_SECRET): the one step here that needs huggingface.co."""
    import base64
    import hashlib
    import json
    import time

    import itsdangerous

    info = {"access_token": token, "token_type": "bearer", "scope": SPACE["OAUTH_SCOPES"],
            "expires_at": int(time.time()) + 3600,
            "userinfo": {"name": username.title(), "preferred_username": username, "picture": "",
                         "profile": f"https://huggingface.co/{username}"}}
    signer = itsdangerous.TimestampSigner(hashlib.sha256((secret + "-v4").encode()).hexdigest())
    return signer.sign(base64.b64encode(json.dumps({"oauth_info": info}).encode())).decode()


def test_on_a_space_a_signed_in_push_uploads_with_the_visitors_token_and_nothing_shows_it(tmp_path):
    """As a Space with hf_oauth: true runs it (its variables set, Sign in mocked at the session cookie), the push
    reaches a recording stand-in for the Hub with the visitor's token for its two calls, to the visitor's account;
    the token is in no log, and a visitor who is not signed in is told to sign in."""
    pytest.importorskip("authlib", reason="Sign in needs gradio[oauth] (authlib), as requirements.txt installs it")
    from hub_standin import calls, fingerprint

    if not (BASE / "onnx").exists():
        pytest.skip(f"{BASE} has no ONNX export to teach from")
    hub = tmp_path / "hub"
    srv = AppServer(env={"MODEL_ID": str(BASE), **SPACE}, argv=["tests/hub_app.py", str(hub)])
    try:
        srv.wait()
        alice, bob = Page(srv.url), Page(srv.url)
        alice.raw.http.cookies.set("session", signed_in(SPACE["OAUTH_CLIENT_SECRET"], "alice", TOKEN))
        assert "Sign in with Hugging Face" in [c["props"].get("value") for c in alice.raw.config["components"]]
        ok, out = alice.teach({"poppy": photos("red", 4), "sea": photos("blue", 4)}, tmp=tmp_path)
        assert ok, out
        ok, shown = alice.call("push_taught", {"teach_repo": "poppies"})
        assert ok and "Pushed to [alice/poppies]" in shown[0], shown
        ok, message = bob.call("push_taught", {"teach_repo": "poppies"})
        assert not ok and "Sign in with Hugging Face first" in message, message
        bob.teach({"moss": photos("green", 4), "lake": photos("blue", 4)}, tmp=tmp_path)
        ok, message = bob.call("push_taught", {"teach_repo": "poppies"})
        assert not ok and "Sign in with Hugging Face first" in message, message  # alice's sign-in is hers alone
    finally:
        srv.stop()
    made = calls(hub)
    assert [(c["call"], c["repo_id"], c.get("token")) for c in made] == [
        ("create_repo", "alice/poppies", fingerprint(TOKEN)), ("upload_folder", "alice/poppies", fingerprint(TOKEN))]
    assert "config.json" in made[1]["files"] and (hub / "repos" / "alice/poppies" / "onnx").is_dir()
    assert TOKEN not in srv.output() and TOKEN not in str(bob.messages + alice.messages)
    for f in hub.rglob("*"):
        assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f
