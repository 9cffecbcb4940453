"""The "Teach it" tab in-process: its handlers as the page calls them, on the embedded model's backbone and generated
photos. A taught model belongs to the session that taught it, bad input gets one sentence, and a push uses the
signed-in visitor's token for that one upload and keeps it nowhere. (Through the real server and a browser:
test_app_live.py and test_browser.py.)"""

import io
import logging
import os
import pickle
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from parkclf.app import teach as tab_module
from parkclf.app.teach import Model, TaughtModels, TeachOptions, TeachTab, photos_from_rows
from parkclf.app.teach_photos import READ_BATCH
from parkclf.classifier import Classifier
from parkclf.teach import Taught, TeachLimits

from conftest import COLOURS, EMBEDDED, ROOT, SCENES, make_photo, needs_shared
from hub_standin import RecordingHfApi, calls, fingerprint

# the base whose backbone teaching reuses: the embedded model (PARKCLF_TEACH_BASE: another checkpoint with onnx/)
BASE = Path(os.environ.get("PARKCLF_TEACH_BASE", EMBEDDED))
pytestmark = pytest.mark.skipif(not (BASE / "onnx").exists(), reason=f"{BASE} has no ONNX export to teach from")
TOKEN = "hf_oauthVisitorTokenThatMustNeverLeaveTheUpload0123"


def photo_files(folder, colour: str, n: int, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{colour}_{seed + i}.jpg"
        make_photo(COLOURS[colour], size=(96, 72), seed=seed + i).save(path, quality=90)
        paths.append(str(path))
    return paths


def upload(path) -> dict:
    """What the page sends for an uploaded file (preprocess=False): Gradio's FileData as a dict."""
    return {"path": str(path), "orig_name": str(path).rsplit("/", 1)[-1], "meta": {"_type": "gradio.FileData"}}


def rows(tmp_path, per_class=8, classes=("red", "green", "blue")) -> tuple[list, list]:
    names = [*classes, *[""] * (10 - len(classes))]
    files = [[upload(p) for p in photo_files(tmp_path / c, c, per_class, seed=100 * i)] for i, c in enumerate(classes)]
    return names, files + [None] * (10 - len(classes))


def teach_all(tab: TeachTab, session: str, *, zip_payload=None, names=(), files=()) -> tuple:
    """What the page shows once Teach has run: (summary, per-class rows, confusion, after section, download)."""
    return list(tab.run(zip_payload, list(names) or [""] * 10, list(files) or [None] * 10, session))[-1]


@pytest.fixture(scope="module")
def served():
    return Classifier.from_pretrained(str(BASE))


@pytest.fixture
def tab(served, tmp_path):
    return TeachTab(served, TeachOptions(hub_api=RecordingHfApi(tmp_path / "hub"), login=True))


def test_class_rows_teach_a_model_that_this_session_tries_and_downloads(tab, tmp_path):
    names, files = rows(tmp_path)
    shown = list(tab.run(None, names, files, "alice"))
    assert [s[0] for s in shown[:-1]] == [f"Reading your photos: {n} of 24…" for n in range(READ_BATCH, 24, READ_BATCH)]
    summary, per_class, confusion, after, download = shown[-1]
    assert "Taught 3 classes from 24 photos" in summary and "Held-out accuracy" in summary, summary
    assert [r[0] for r in per_class] == ["Red", "Green", "Blue"] and [r[1] for r in per_class] == [8, 8, 8]
    assert confusion.endswith(".png") and after["visible"] is True and download["visible"] is False
    zipped = tab.download("alice")  # after Teach has answered, in an event of its own
    assert zipped["visible"] is True and tab.download("alice")["value"] == zipped["value"]  # made once

    with zipfile.ZipFile(zipped["value"]) as zf:  # one top folder: the checkpoint, served as it is unzipped
        names_in_zip = zf.namelist()
    (top,) = {n.split("/")[0] for n in names_in_zip}
    assert {f"{top}/{n}" for n in ("config.json", "model.safetensors", "onnx/model_quantized.onnx")} <= set(
        names_in_zip), names_in_zip

    red = photo_files(tmp_path / "new", "red", 1, seed=999)[0]
    label, verdict, overlay = tab.try_photo(upload(red), False, "alice")
    assert label["label"] == "Red" and verdict.startswith("**Red**"), (label, verdict)
    label, verdict, overlay = tab.try_photo(upload(red), True, "alice")  # the relevance graph, head swapped too
    assert verdict.startswith("**Red**") and overlay["visible"] and overlay["value"].size == (96, 72)
    with pytest.raises(gr.Error, match="no taught model in this session"):
        tab.try_photo(upload(red), False, "bob")  # nothing of alice's reaches bob


def test_a_zip_of_class_folders_teaches_like_the_rows(tab, tmp_path):
    path = tmp_path / "my photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c in ("red", "blue"):
            for p in photo_files(tmp_path / c, c, 4):
                zf.write(p, f"my photos/{c}/{p.rsplit('/', 1)[-1]}")  # zipping a folder puts its name first
        zf.writestr("my photos/red/notes.txt", "not a photo")
        zf.write(tmp_path / "red" / "red_0.jpg", "my photos/blue/copy.jpg")
    summary, per_class, *_ = teach_all(tab, "carol", zip_payload=upload(path))
    assert sorted((r[0], r[1]) for r in per_class) == [("Blue", 4), ("Red", 4)]
    assert "Left out (2):** my photos/red/notes.txt: Not an image file" in summary, summary
    assert "blue/copy.jpg is the same photo as red/red_0.jpg" in summary, summary  # named by its entry


def test_photos_are_read_as_they_are_dropped_and_teach_then_only_fits(tab, tmp_path, monkeypatch):
    """Each class row's photos go through the backbone when dropped; Teach reuses those features for the session
    that dropped them (the same model as from scratch), and another session reads its own."""
    names, files = rows(tmp_path)
    real, computed = tab.base.engine.features, []
    monkeypatch.setattr(tab.base.engine, "features", lambda pv: computed.append(len(pv)) or real(pv))
    assert [tab.read(f, "alice") for f in files[:3]] == ["8 photos read"] * 3 and sum(computed) == 24
    assert tab.read(files[0] + [files[1][0]], "alice") == "9 photos read" and sum(computed) == 24  # none again
    assert tab.read(files[0][:1], "alice") == "1 photo read"  # singular
    alice = teach_all(tab, "alice", names=names, files=files)
    assert sum(computed) == 24, computed  # Teach computed no features
    bob = teach_all(tab, "bob", names=names, files=files)  # the same photos, nothing read for bob yet
    assert sum(computed) == 48, computed
    assert alice[1] == bob[1] and "Taught 3 classes from 24 photos" in alice[0]  # the same held-out figures

    capped = TeachTab(tab.base, TeachOptions(limits=TeachLimits(max_total=5)))
    assert capped.read(files[0], "carol") == "5 of 8 photos read"  # a session's features stop at the total cap
    assert capped.read(files[1], "carol") == "0 of 8 photos read" and sum(computed) == 53
    assert capped.read(upload(tmp_path / "missing.jpg"), "carol") == ""  # nothing refused while reading


def test_a_dropped_zip_is_read_too_and_a_bad_one_is_left_to_teach(tab, tmp_path):
    entries = {f"{c}/{i}.jpg": jpeg(c, i) for c in ("red", "blue") for i in range(3)}
    assert tab.read(zip_of(tmp_path / "ok.zip", entries), "dora") == "6 photos read"
    assert tab.read(zip_of(tmp_path / "climb.zip", {"../a.jpg": jpeg()}), "dora") == ""


def test_session_features_are_dropped_past_the_count_and_after_their_time():
    store = tab_module.SessionFeatures(sessions=2, max_age_s=1.0)
    store.get("a")["x"] = 1
    store.get("b")["y"] = 2
    assert store.get("a") == {"x": 1}  # used again: b is now the least recently used
    store.get("c")
    assert len(store) == 2 and store.get("b") == {} and "x" not in store.get("c")
    time.sleep(1.2)
    assert store.get("a") == {}


def zip_of(path, entries: dict) -> dict:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return upload(path)


def jpeg(colour="red", seed=0) -> bytes:
    buf = io.BytesIO()
    make_photo(COLOURS[colour], seed=seed).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_input_gets_one_sentence_and_leaves_nothing_behind(tab, tmp_path):
    names, files = rows(tmp_path, per_class=3)
    bad = {
        "Two classes are both called 'red'": dict(names=["red", "red", *names[2:]], files=files),
        "Use either the class rows or one zip": dict(names=names, files=files,
                                                      zip_payload=zip_of(tmp_path / "a.zip", {"x/a.jpg": jpeg()})),
        "outside its folders \\(\\.\\./red/a.jpg\\)": dict(zip_payload=zip_of(
            tmp_path / "climb.zip", {"red/b.jpg": jpeg(), "../red/a.jpg": jpeg()})),
        "photos outside class folders \\(a.jpg\\)": dict(zip_payload=zip_of(
            tmp_path / "loose.zip", {"a.jpg": jpeg(), "red/b.jpg": jpeg()})),
        "cannot be read as a zip of class folders \\(it is not a zip file\\)": dict(
            zip_payload=upload(photo_files(tmp_path / "solo", "red", 1)[0])),
    }
    for sentence, inputs in bad.items():  # said in the results area, where it stays until the next Teach
        summary, *rest = teach_all(tab, "dave", **inputs)
        assert re.search(f"^\\*\\*Not taught.\\*\\* .*{sentence}", summary), summary
        assert all(r == gr.skip() for r in rest)  # the rest of the page is left as it was: no error badges
    assert len(tab.store) == 0 and not any(tab.store.root.iterdir())


def test_a_zip_bomb_is_refused_with_a_sentence(served, tmp_path):
    small = TeachTab(served, TeachOptions(zip_limits=tab_module.many.ManyLimits(zip_bytes=8 * 2**20)))
    bomb = zip_of(tmp_path / "bomb.zip", {"red/a.jpg": jpeg(), "red/b.jpg": b"\0" * (32 * 2**20)})
    assert "more than 8 MB of photos; send fewer" in teach_all(small, "erin", zip_payload=bomb)[0]


def test_the_library_refusals_reach_the_page_as_its_sentence(served, tab, tmp_path):
    names, files = rows(tmp_path, per_class=3, classes=("red", "blue"))
    capped = TeachTab(served, TeachOptions(limits=TeachLimits(max_per_class=2)))
    for page, inputs, sentence in [
        (tab, dict(names=["red", *[""] * 9], files=files[:1] + [None] * 9), "at least 2 classes; this has 1"),
        (tab, dict(names=["red", "sea/sky", *names[2:]], files=files), "'sea/sky' cannot be a folder name"),
        (tab, dict(names=names, files=[files[0][:1], *files[1:]]), "'red' has 1 readable photo"),
        (capped, dict(names=names, files=files), "'red' has 3 photos; at most 2 per class"),
    ]:
        message = teach_all(page, "frank", **inputs)[0]
        assert sentence in message and str(tmp_path) not in message, message


def test_unreadable_photos_and_copies_are_left_out_and_listed(tab, tmp_path):
    names, files = rows(tmp_path, per_class=3, classes=("red", "blue"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    files[0].append(upload(broken))
    files[1].append(files[0][0])  # red's first photo sent as blue too
    summary, per_class, *_ = teach_all(tab, "gina", names=names, files=files)
    assert "Left out (2)" in summary and "red/broken.jpg" in summary, summary
    assert "blue/red_0.jpg is the same photo as red/red_0.jpg" in summary, summary
    assert [r[1] for r in per_class] == [3, 3] and str(tmp_path) not in summary


def test_rows_left_empty_are_left_out_and_a_nameless_class_goes_to_the_library():
    assert photos_from_rows(["a", "", "  "], [[upload("/x.jpg")], None, []]) == {"a": ["/x.jpg"]}
    assert photos_from_rows(["", "b"], [[upload("/x.jpg")], None]) == {"": ["/x.jpg"], "b": []}


def stored(store: TaughtModels, classifier: Classifier, session: str) -> Model:
    from parkclf.app.api import Endpoints

    home = store.home()
    (home / "model").mkdir()
    (home / "model" / "config.json").write_text("{}")
    model = Model(Taught(home / "model", classifier.labels, {}, {}), classifier, Endpoints(classifier), home)
    store.put(session, model)
    return model


@needs_shared
def test_try_it_answers_as_the_checkpoint_loaded_on_its_own_does(tab, tmp_path):
    """Try it runs the taught classifier in NumPy on the served model's features (no second engine to hold); its
    answers are the downloaded checkpoint's, served alone, up to float rounding: on real photos of the taught
    scenes and of one it never saw, and with an out-of-scope class in the config, which both read the same way."""
    import json
    import shutil

    from parkclf.classifier import load

    scenes = ("buildings", "forest", "sea")
    names = [*scenes, *[""] * 7]
    files = [[upload(p) for p in sorted((SCENES / "train" / c).glob("*.jpg"))[:8]] for c in scenes] + [None] * 7
    assert "Taught 3 classes" in teach_all(tab, "alice", names=names, files=files)[0]
    model = tab.store.get("alice")
    tried = [str(p) for c in (*scenes, "glacier") for p in sorted((SCENES / "test" / c).glob("*.jpg"))[:4]]
    with_other = tmp_path / "with-other"
    shutil.copytree(model.taught.folder, with_other)
    config = json.loads((with_other / "config.json").read_text())
    (with_other / "config.json").write_text(json.dumps({**config, "out_of_scope_label": "sea"}))
    # served alone on the base's own engine: "auto" times the engines at start, and two int8 engines agree only up
    # to close calls, not to 2e-3
    engine = {"openvino-int8-static": "openvino", "onnxruntime-int8": "onnx-int8"}.get(tab.base.engine.name, "auto")
    for served_here, alone in [(model.classifier, load(str(model.taught.folder), engine=engine)),
                               (Classifier.over(tab.base, str(with_other)), load(str(with_other), engine=engine))]:
        assert served_here.labels == alone.labels and served_here.out_of_scope_label == alone.out_of_scope_label
        for here, there in zip(served_here.predict_batch(tried), alone.predict_batch(tried), strict=True):
            assert (here.label, here.abstained) == (there.label, there.abstained), (here, there)
            assert here.confidences.keys() == there.confidences.keys()
            assert all(abs(here.confidences[k] - there.confidences[k]) < 2e-3 for k in here.confidences), (here, there)
            assert abs(here.score - there.score) < 2e-3
    assert "sea" not in Classifier.over(tab.base, str(with_other)).predict(tried[0]).confidences
    assert model.classifier.engine.base is tab.base.engine  # the served engine, not one of its own


def test_reading_waits_for_teaching_and_trying_and_readers_take_turns():
    """Turns: a batch of reading starts only while nothing interactive runs, interactive work waits only for the batch
    in progress, and readers go in the order they asked."""
    import threading

    from parkclf.app.teach_photos import Turns

    turns, log = Turns(), []

    def read(name: str, batches: int):
        for i in range(batches):
            with turns.reading():
                log.append(f"{name}{i}")
                time.sleep(0.05)

    with turns.interactive():  # a fit: no reading starts meanwhile
        readers = [threading.Thread(target=read, args=(n, 3)) for n in "ab"]
        for t in readers:
            t.start()
            time.sleep(0.02)
        time.sleep(0.2)
        assert log == []
    time.sleep(0.12)  # a batch or two: then a tried photo comes
    started = time.monotonic()
    with turns.interactive():
        waited, seen = time.monotonic() - started, list(log)
        time.sleep(0.1)
        assert log == seen  # nothing read while it runs
    for t in readers:
        t.join(5)
    assert waited < 0.09, waited  # at most the batch in progress (0.05 s)
    assert log == ["a0", "b0", "a1", "b1", "a2", "b2"], log  # in turns, not one reader's photos all first


def test_one_fit_at_a_time_while_visitors_read_at_once(tab, tmp_path, monkeypatch):
    import threading

    running, overlaps, real = [], [], tab_module.teach

    def teach(*args, **kw):
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.3)
        try:
            return real(*args, **kw)
        finally:
            running.pop()

    monkeypatch.setattr(tab_module, "teach", teach)
    results = {}
    names, files = rows(tmp_path, per_class=3)
    threads = [threading.Thread(target=lambda s=s: results.setdefault(s, teach_all(tab, s, names=names,
                                                                                   files=files))) for s in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all("Taught 3 classes" in results[s][0] for s in "abc") and overlaps == [1, 1, 1], overlaps


def test_a_refusal_after_a_model_says_that_the_earlier_one_is_still_there(tab, tmp_path):
    names, files = rows(tmp_path, per_class=3, classes=("red", "blue"))
    teach_all(tab, "hana", names=names, files=files)
    summary = teach_all(tab, "hana", names=["red", *[""] * 9], files=files[:1] + [None] * 9)[0]
    assert summary.startswith("**Not taught.** Teaching needs at least 2 classes") and "(Red, Blue)" in summary
    assert tab.try_photo(files[1][0], False, "hana")[0]["label"] == "Blue"


def test_models_are_dropped_past_the_count_oldest_first_and_after_their_time_with_their_files(served, tmp_path):
    store = TaughtModels(tmp_path / "store", models=2, max_age_s=1.0)
    a, b = stored(store, served, "a"), stored(store, served, "b")
    again = stored(store, served, "a")  # a session's new model replaces its old one
    assert not a.home.exists() and store.get("a") is again
    c = stored(store, served, "c")  # a third model: the least recently taught (b) goes
    assert store.get("b") is None and not b.home.exists() and store.get("c") is c and len(store) == 2
    time.sleep(1.2)
    assert store.get("a") is None and store.get("c") is None
    assert not again.home.exists() and not c.home.exists() and len(store) == 0


def profile(username: str) -> gr.OAuthProfile:
    return gr.OAuthProfile({"name": username.title(), "preferred_username": username,
                            "profile": f"https://huggingface.co/{username}", "picture": ""})


def test_push_uses_the_visitors_token_for_that_upload_alone_and_keeps_it_nowhere(served, tmp_path, caplog, capsys):
    hub = RecordingHfApi(tmp_path / "hub")
    tab = TeachTab(served, TeachOptions(hub_api=hub, login=True))
    names, files = rows(tmp_path)
    caplog.set_level(logging.DEBUG)
    teach_all(tab, "alice", names=names, files=files)
    folder = tab.store.get("alice").taught.folder
    card = (folder / "README.md").read_text()  # as downloaded: the folder the zip unpacks to, no server path
    assert f'model="{folder.name}"' in card and str(tab.store.root) not in card
    token = gr.OAuthToken(token=TOKEN, scope="openid profile write-repos", expires_at=int(time.time()) + 3600)
    shown = tab.push("colours", False, "alice", profile("alice"), token)
    pushed = (hub.repo("alice/colours") / "README.md").read_text()
    assert 'model="alice/colours"' in pushed and str(tab.store.root) not in pushed
    assert "Pushed to [alice/colours]" in shown and "MODEL_ID=alice/colours python app.py" in shown
    made = calls(hub.folder)
    assert [(c["call"], c.get("token")) for c in made] == [("create_repo", fingerprint(TOKEN)),
                                                          ("upload_folder", fingerprint(TOKEN))]
    assert hub.token is False and TOKEN not in repr(vars(hub))  # passed per call, never set on the shared api
    sent = made[1]
    assert sent["repo_id"] == "alice/colours" and sent["repo_type"] == "model" and "config.json" in sent["files"]

    # kept nowhere: not in what the page shows, the logs, the model's files, the store, or the recorded calls
    out = capsys.readouterr()
    assert TOKEN not in shown + out.out + out.err + caplog.text
    assert TOKEN.encode() not in pickle.dumps({s: vars(m.taught) for s, m in tab.store._by_session.items()})
    for f in [*tab.store.root.rglob("*"), *hub.folder.rglob("*")]:
        assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f

    # another visitor, signed out or without a model, gets a sentence; nothing of alice's
    with pytest.raises(gr.Error, match="Sign in with Hugging Face first"):
        tab.push("colours", False, "bob", None, None)
    with pytest.raises(gr.Error, match="no taught model in this session"):
        tab.push("colours", False, "bob", profile("bob"), gr.OAuthToken("hf_bob", "write-repos", 0))
    with pytest.raises(gr.Error, match="'bad name!' cannot be a repo name"):
        tab.push("bad name!", False, "alice", profile("alice"), token)
    assert len(calls(hub.folder)) == 2


def test_a_refused_push_says_so_without_the_token(served, tmp_path):
    class Refusing(RecordingHfApi):
        def upload_folder(self, *, token=None, **kw):
            raise PermissionError(f"403 Forbidden: token {token} may not write to {kw['repo_id']}")

    tab = TeachTab(served, TeachOptions(hub_api=Refusing(tmp_path / "hub"), login=True))
    names, files = rows(tmp_path, per_class=3)
    teach_all(tab, "alice", names=names, files=files)
    with pytest.raises(gr.Error) as e:
        tab.push("colours", False, "alice", profile("alice"), gr.OAuthToken(TOKEN, "write-repos", 0))
    assert "did not take the upload to alice/colours (403 Forbidden" in e.value.message
    assert TOKEN not in e.value.message


def test_sign_in_shows_only_on_a_space_with_oauth_and_the_tab_adds_no_api(served, monkeypatch):
    """Outside a Space a LoginButton makes Gradio demand a local HF login to mock it: the page then says how to
    upload instead. On a Space with hf_oauth: true (its variables set here), the button and its routes are there."""
    pytest.importorskip("authlib", reason="Sign in needs gradio[oauth] (authlib), as requirements.txt installs it")
    import gradio.oauth

    from parkclf.app.serve import hub_login
    from parkclf.app.ui import AppOptions, build_demo

    assert not hub_login()
    demo = build_demo(served, AppOptions(teaching=TeachOptions(login=hub_login())))
    assert not demo.expects_oauth
    space = {"SYSTEM": "spaces", "SPACE_ID": "me/app", "OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": "secret",
             "OAUTH_SCOPES": "openid profile write-repos", "OPENID_PROVIDER_URL": "https://huggingface.co"}
    for key, value in space.items():
        monkeypatch.setenv(key, value)
        monkeypatch.setattr(gradio.oauth, key, value, raising=False)  # Gradio reads them once, at import
    assert hub_login()
    demo = build_demo(served, AppOptions(teaching=TeachOptions(login=hub_login())))
    assert demo.expects_oauth and "/login/huggingface" in {getattr(r, "path", "") for r in demo.app.routes}
    public = {d.api_name for d in demo.fns.values() if d.api_visibility == "public"}
    # the tab's events stay off the API page; the button's own page-load check is Gradio's
    assert public == {"predict", "predict_batch", "explain", "_check_login_status"}


def test_the_tab_teaches_and_tries_without_importing_torch(tmp_path):
    """In a process where torch is installed: building the page, teaching through the tab and trying the model
    import neither torch nor transformers."""
    code = f"""
import sys
from parkclf.app.serve import load, create_demo
from parkclf.app.teach import TeachTab
from test_teach_tab import rows, teach_all, upload, photo_files
from pathlib import Path
clf = load({str(BASE)!r})
create_demo(clf, {str(BASE)!r})
tab = TeachTab(clf)
names, files = rows(Path({str(tmp_path)!r}))
teach_all(tab, "s", names=names, files=files)
label, verdict, _ = tab.try_photo(upload(photo_files(Path({str(tmp_path)!r}) / "new", "blue", 1, 7)[0]), False, "s")
print(verdict.split("**")[1], "torch" in sys.modules, "transformers" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-3:] == ["Blue", "False", "False"], r.stdout
