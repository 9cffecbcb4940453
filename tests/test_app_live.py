"""Live tier: the real app.py on loopback, called through gradio_client as users do."""

import threading
import time
import uuid

import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import EMBEDDED, ROOT, make_photo
from hostile import big_flat_png, bomb_png, cases
from hub_standin import RecordingHfApi, calls
from live import AppServer, RawHTTP

pytestmark = pytest.mark.live

EXAMPLES = ROOT / "examples"
PARKS = {"sequoia", "yellowstone", "yosemite"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not EMBEDDED.exists():
        pytest.skip(f"the embedded model {EMBEDDED} is missing")
    srv = AppServer(env={"FEEDBACK_DIR": str(tmp_path_factory.mktemp("feedback"))})
    srv.wait()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def check_prediction(d):
    assert set(d) == {"label", "confidences", "abstained"}
    assert d["label"] in PARKS and set(d["confidences"]) == PARKS
    # calibrated probabilities of the parks; the embedded model's `other` class holds the rest of 1
    assert all(0.0 <= p <= 1.0 for p in d["confidences"].values()) and sum(d["confidences"].values()) <= 1.0 + 1e-6
    assert d["confidences"][d["label"]] == max(d["confidences"].values())
    assert isinstance(d["abstained"], bool)


def test_predict_on_public_domain_examples(client):
    for name, park in [("seki-giant-sequoia-tree.jpg", "sequoia"), ("yell-wolf-in-gardiner-basin.jpg", "yellowstone")]:
        d = client.predict(handle_file(str(EXAMPLES / name)), api_name="/predict")
        check_prediction(d)
        assert d["label"] == park, d


def test_predict_batch(client):
    files = [handle_file(str(p)) for p in sorted(EXAMPLES.glob("*.jpg"))]
    out = client.predict(files, api_name="/predict_batch")
    assert len(out) == len(files)
    for d in out:
        check_prediction(d)


def test_explain_returns_an_image_and_the_prediction(client):
    image, d = client.predict(handle_file(str(EXAMPLES / "seki-giant-sequoia-tree.jpg")), api_name="/explain")
    from PIL import Image

    assert Image.open(image).size[0] > 100
    check_prediction(d)


def test_endpoints_are_on_the_api_page(client):
    api = client.view_api(print_info=False, return_format="dict")
    names = set(api["named_endpoints"])
    assert {"/predict", "/predict_batch", "/explain"} <= names, names


def test_hostile_inputs_get_a_label_or_a_clean_refusal(client, server, tmp_path):
    rss = psutil.Process(server.proc.pid)
    before = rss.memory_info().rss
    for name, data, filename, expected in cases():
        path = tmp_path / filename
        path.write_bytes(data)
        if expected == "ok":
            check_prediction(client.predict(handle_file(str(path)), api_name="/predict"))
        else:
            with pytest.raises(AppError) as e:
                client.predict(handle_file(str(path)), api_name="/predict")
            msg = str(e.value)
            assert "Traceback" not in msg and "/tmp" not in msg and str(tmp_path) not in msg, (name, msg)
            assert len(msg) > 15, (name, msg)
    check_prediction(client.predict(handle_file(str(EXAMPLES / "seki-giant-sequoia-tree.jpg")), api_name="/predict"))
    growth = (rss.memory_info().rss - before) / 2**20
    assert growth < 300, f"server RSS grew {growth:.0f} MB over the hostile suite"
    assert "Traceback" not in server.output()


def test_concurrent_clients_get_no_errors(server):
    n_clients, n_requests = 8, 5  # reduced mode for CI; benchmarks/serving.py runs 8 x 50
    errors, done = [], []
    photo = str(EXAMPLES / "yell-wolf-in-gardiner-basin.jpg")

    def user():
        c = Client(server.url, verbose=False)
        for _ in range(n_requests):
            try:
                check_prediction(c.predict(handle_file(photo), api_name="/predict"))
                done.append(1)
            except Exception as e:  # noqa: BLE001 - any failure counts
                errors.append(repr(e))

    threads = [threading.Thread(target=user) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(done) == n_clients * n_requests


def test_oversized_upload_is_refused_and_the_server_keeps_answering(client, tmp_path):
    from parkclf.images import MAX_BYTES

    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.write(b"\xff\xd8\xff")
        f.truncate(MAX_BYTES + 1024)
    with pytest.raises((AppError, ValueError), match="maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    check_prediction(client.predict(handle_file(str(EXAMPLES / "seki-giant-sequoia-tree.jpg")), api_name="/predict"))


class PeakRSS:
    """Samples a process's RSS every 20 ms in a thread: the peak, not just the level after."""

    def __init__(self, pid: int):
        self.proc, self.peak, self.running = psutil.Process(pid), 0, True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def test_the_worst_allowed_request_keeps_memory_bounded(client, server, tmp_path):
    """A 10000x9999 PNG (312 KB sent, 300 MB decoded) alone, two at once, and 16 of them in one /predict_batch:
    each gets a label or a clean refusal, and the server's RSS stays within 1.5 GB of idle throughout."""
    big = tmp_path / "big.png"
    big.write_bytes(big_flat_png())
    client.predict(handle_file(str(EXAMPLES / "seki-giant-sequoia-tree.jpg")), api_name="/predict")
    idle = psutil.Process(server.proc.pid).memory_info().rss
    with PeakRSS(server.proc.pid) as rss:
        check_prediction(client.predict(handle_file(str(big)), api_name="/predict"))
        with pytest.raises(AppError, match="megapixels; one request may hold at most"):
            client.predict([handle_file(str(big))] * 16, api_name="/predict_batch")
        results = []
        pair = [threading.Thread(target=lambda: results.append(
            Client(server.url, verbose=False).predict(handle_file(str(big)), api_name="/predict"))) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join(300)
        assert len(results) == 2
        for d in results:
            check_prediction(d)
    growth = (rss.peak - idle) / 2**20
    print(f"\nidle RSS {idle / 2**20:.0f} MB, peak {rss.peak / 2**20:.0f} MB: +{growth:.0f} MB over the worst requests")
    assert growth < 1536, f"server RSS peaked {growth:.0f} MB above idle"


def test_an_unknown_endpoint_gets_a_404_and_one_log_line(server):
    import httpx

    before = server.output().count("\n")
    for _ in range(3):
        r = httpx.post(server.url + "gradio_api/queue/join", json={"fn_index": 999, "session_hash": "x", "data": []})
        assert r.status_code == 404
        r = httpx.post(server.url + "gradio_api/call/no_such_api", json={"data": []})
        assert r.status_code == 404
    time.sleep(0.5)
    new = server.output().split("\n")[before:]
    assert "Traceback" not in "\n".join(new)
    assert sum("unknown endpoint" in line for line in new) == 6 and len([ln for ln in new if ln.strip()]) <= 8, new


def test_served_files_carry_nosniff(server):
    import httpx

    raw = RawHTTP(server.url)
    photo = raw.upload(EXAMPLES / "seki-giant-sequoia-tree.jpg")
    r = httpx.get(server.url + "gradio_api/file=" + photo["path"])
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url).headers["x-content-type-options"] == "nosniff"


def test_the_upload_cache_expires(tmp_path):
    """30 distinct files sent to /gradio_api/upload and never used by any event are deleted once they are older
    than the cache's age (CACHE_EXPIRY=frequency,age in seconds; a Space keeps the default, 10 and 30 minutes)."""
    cache = tmp_path / "cache"
    srv = AppServer(env={"GRADIO_TEMP_DIR": str(cache), "CACHE_EXPIRY": "2,4"})
    try:
        srv.wait()
        raw = RawHTTP(srv.url)
        for i in range(30):
            make_photo((40, 120, 200), seed=i).save(tmp_path / f"{i}.png")
            raw.upload(tmp_path / f"{i}.png")
        uploaded = [p for p in cache.rglob("*.png")]
        assert len(uploaded) >= 30
        time.sleep(9)
        left = [p for p in uploaded if p.exists()]
        assert not left, f"{len(left)} uploads still cached"
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def feedback_server(tmp_path_factory):
    if not EMBEDDED.exists():
        pytest.skip(f"the embedded model {EMBEDDED} is missing")
    folder = tmp_path_factory.mktemp("feedback-raw")
    srv = AppServer(env={"FEEDBACK_DIR": str(folder), "FEEDBACK_MAX_FILES": "2"})
    srv.wait()
    yield srv, folder
    srv.stop()


def classify_then_correct(raw: RawHTTP, path, session: str, right="yosemite", classify=True):
    photo = raw.upload(path)
    if classify:
        raw.call("classify", [photo, False], session)
    return raw.call("save", [photo, right], session)


def test_feedback_refusals_over_raw_http(feedback_server, tmp_path):
    """A private event is no access control: the correction event called straight through /gradio_api/queue/join
    refuses every bad submission with a message, and the folder cap holds."""
    srv, folder = feedback_server
    raw = RawHTTP(srv.url)
    by_name = {c[0]: c for c in cases()}
    for name in ("text_as_jpg", "svg_script", "html_as_svg", "truncated_jpeg"):
        _, data, filename, _ = by_name[name]
        (tmp_path / filename).write_bytes(data)
        ok, message = classify_then_correct(raw, tmp_path / filename, uuid.uuid4().hex)
        assert not ok and message, (name, message)
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    ok, message = classify_then_correct(raw, tmp_path / "bomb.png", uuid.uuid4().hex)
    assert not ok and "megapixels" in message  # oversized: refused from its header
    photo = tmp_path / "p.jpg"
    make_photo((60, 120, 60), size=(400, 300), seed=1).save(photo)
    ok, message = classify_then_correct(raw, photo, uuid.uuid4().hex, classify=False)
    assert not ok and "Classify this photo first" in message  # never classified by this session
    session = uuid.uuid4().hex
    assert classify_then_correct(raw, photo, session)[0]
    ok, message = classify_then_correct(raw, photo, session)
    assert not ok and "already have a correction" in message  # duplicate
    second = tmp_path / "q.jpg"
    make_photo((60, 120, 60), size=(400, 300), seed=2).save(second)
    assert classify_then_correct(raw, second, session)[0]
    third = tmp_path / "r.jpg"
    make_photo((60, 120, 60), size=(400, 300), seed=3).save(third)
    ok, message = classify_then_correct(raw, third, session)
    assert not ok and "folder is full" in message  # FEEDBACK_MAX_FILES=2
    saved = list(folder.rglob("*.jpg"))
    assert len(saved) == 2 and all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in saved)  # re-encoded JPEGs only
    assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix not in {".jpg", ".jsonl"}]


def test_a_correction_through_the_page_reaches_the_hub_and_a_restart_does_not_take_it_again(tmp_path):
    """FEEDBACK_DATASET set: a correction sent through the page's own events goes up in a CommitScheduler commit
    (here when the app stops, by SIGTERM as a Space's restart does), and the app restarted on an empty disk reads the
    dataset's metadata back and refuses the same photo. The Hub is a recording stand-in (tests/hub_standin.py)."""
    from parkclf.app.feedback import digest, read_rows

    hub = tmp_path / "hub"
    photo = tmp_path / "p.jpg"
    make_photo((60, 120, 60), size=(400, 300), seed=11).save(photo)

    def correct_once_in_a_fresh_app():
        # no FEEDBACK_DIR: each app keeps its corrections in a new temporary folder, the empty disk of a restart
        srv = AppServer(env={"FEEDBACK_DATASET": "me/corrections", "TMPDIR": str(tmp_path)},
                        argv=["tests/hub_app.py", str(hub)])
        try:
            srv.wait()
            return classify_then_correct(RawHTTP(srv.url), photo, uuid.uuid4().hex)
        finally:
            srv.stop()
            assert srv.proc.returncode == 0 and "Traceback" not in srv.output(), srv.output()[-3000:]

    ok, message = correct_once_in_a_fresh_app()
    assert ok, message
    sent = [a["path"] for c in calls(hub, "create_commit") for a in c["added"]]
    assert len(sent) == 2 and sum(p.endswith("/metadata.jsonl") for p in sent) == 1, sent
    assert sum(p.split("/")[1:2] == ["yosemite"] and p.endswith(".jpg") for p in sent) == 1, sent
    [row] = read_rows(RecordingHfApi(hub).repo("me/corrections"))
    assert row["label"] == "yosemite" and row["sha256"] == digest(photo) and row["predicted"] in PARKS

    ok, message = correct_once_in_a_fresh_app()
    assert not ok and "already have a correction" in message, message
    assert len(calls(hub, "create_commit")) == 1  # the restarted app had nothing new to send
