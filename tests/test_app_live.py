"""Live tier: the real app.py on loopback, called through gradio_client as users do."""

import threading

import psutil
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import EMBEDDED, ROOT
from hostile import cases
from live import AppServer

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
