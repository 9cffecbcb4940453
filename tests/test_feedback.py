"""The corrections folder that strangers write into: what it keeps, what it refuses, and that train.py reads it.
The same refusals through the page and through raw HTTP are in test_app_live.py and test_browser.py."""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from parkclf.app.feedback import FeedbackError, FeedbackLimits, FeedbackStore, digest

from conftest import COLOURS, make_imagefolder, make_photo
from hostile import bomb_png, cases

LABELS = ["blue", "red"]


def upload(tmp_path, name="upload.jpg", size=(300, 200), seed=1):
    path = tmp_path / name
    make_photo(COLOURS["red"], size=size, seed=seed).save(path, quality=92)
    return str(path)


def classified(store, path, session="s1"):
    store.remember(session, digest(path))
    return path


def test_a_classified_photo_is_saved_as_a_fresh_jpeg_in_its_class_folder(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    big = classified(store, upload(tmp_path, size=(3000, 1800)))
    dest = store.save(big, "red", "blue", session="s1")
    assert dest.parent == tmp_path / "fb" / "red" and dest.suffix == ".jpg"
    saved = Image.open(dest)
    assert saved.format == "JPEG" and max(saved.size) == 1024  # re-encoded and shrunk, never the bytes sent
    assert dest.read_bytes() != Path(big).read_bytes()
    rows = list(csv.DictReader((tmp_path / "fb" / "feedback.csv").read_text().splitlines()))
    assert rows[0]["label"] == "red" and rows[0]["predicted"] == "blue" and rows[0]["digest"] == digest(big)


def test_a_photo_this_session_never_classified_is_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    path = upload(tmp_path)
    with pytest.raises(FeedbackError, match="Classify this photo first"):
        store.save(path, "red", None, session="s1")
    store.remember("someone-else", digest(path))
    with pytest.raises(FeedbackError, match="Classify this photo first"):
        store.save(path, "red", None, session="s1")
    assert not (tmp_path / "fb").exists()


@pytest.mark.parametrize("name", ["text_as_jpg", "svg", "html", "truncated_jpeg", "zero_bytes"])
def test_what_the_loader_refuses_is_refused(tmp_path, name):
    _, data, filename, _ = {c[0]: c for c in cases()}[name]
    path = tmp_path / filename
    path.write_bytes(data)
    store = FeedbackStore(tmp_path / "fb", LABELS)
    classified(store, str(path))
    with pytest.raises(FeedbackError, match="was not saved"):
        store.save(str(path), "red", None, session="s1")
    assert not list((tmp_path / "fb").rglob("*.jpg"))


def test_an_oversized_photo_is_refused_before_it_is_decoded(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(9000, 9000))  # 81 MP: over the 40 MP a correction may have
    store = FeedbackStore(tmp_path / "fb", LABELS)
    classified(store, str(path))
    with pytest.raises(FeedbackError, match="limit is 40 megapixels"):
        store.save(str(path), "red", None, session="s1")


def test_the_same_photo_twice_is_kept_once_even_after_a_restart(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    path = classified(store, upload(tmp_path))
    store.save(path, "red", None, session="s1")
    with pytest.raises(FeedbackError, match="already have a correction"):
        store.save(path, "blue", None, session="s1")
    again = FeedbackStore(tmp_path / "fb", LABELS)  # a new process reads the log
    classified(again, path, "s2")
    with pytest.raises(FeedbackError, match="already have a correction"):
        again.save(path, "red", None, session="s2")
    assert len(list((tmp_path / "fb").rglob("*.jpg"))) == 1


def test_the_folder_caps_hold_and_say_so(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(max_files=2))
    for seed in range(2):
        store.save(classified(store, upload(tmp_path, f"{seed}.jpg", seed=seed), f"s{seed}"), "red", None,
                   session=f"s{seed}")
    with pytest.raises(FeedbackError, match="folder is full"):
        store.save(classified(store, upload(tmp_path, "x.jpg", seed=9), "s9"), "red", None, session="s9")
    tiny = FeedbackStore(tmp_path / "fb2", LABELS, FeedbackLimits(max_bytes=1000))
    with pytest.raises(FeedbackError, match="folder is full"):
        tiny.save(classified(tiny, upload(tmp_path, "y.jpg", seed=3)), "red", None, session="s1")
    assert len(list((tmp_path / "fb").rglob("*.jpg"))) == 2 and not list((tmp_path / "fb2").rglob("*.jpg"))
    reopened = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(max_files=2))
    assert reopened.files == 2  # the cap counts what is already on disk


def test_each_session_and_everyone_together_are_rate_limited(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(per_session=2, overall=3))
    for seed in range(2):
        store.save(classified(store, upload(tmp_path, f"{seed}.jpg", seed=seed)), "red", None, session="s1")
    with pytest.raises(FeedbackError, match="the most we take"):
        store.save(classified(store, upload(tmp_path, "a.jpg", seed=5)), "red", None, session="s1")
    store.save(classified(store, upload(tmp_path, "b.jpg", seed=6), "s2"), "red", None, session="s2")
    with pytest.raises(FeedbackError, match="many corrections right now"):
        store.save(classified(store, upload(tmp_path, "c.jpg", seed=7), "s3"), "red", None, session="s3")


def test_an_unknown_class_is_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    with pytest.raises(FeedbackError, match="Choose one of blue, red"):
        store.save(classified(store, upload(tmp_path)), "purple", None, session="s1")


def test_saved_corrections_are_extra_training_data(tiny_vit, tmp_path):
    from parkclf.training import main as train_main

    data = make_imagefolder(tmp_path / "data", per_class=12)
    store = FeedbackStore(tmp_path / "fb", LABELS)
    store.save(classified(store, upload(tmp_path)), "red", "blue", session="s1")
    out = tmp_path / "out"
    train_main(["--data-dir", str(data), "--extra-data-dir", str(tmp_path / "fb"), "--model-name-or-path",
                str(tiny_vit), "--output-dir", str(out), "--freeze-backbone", "--head-epochs", "2", "--bf16", "false",
                "--no-export-onnx"])
    counts = json.loads((out / "data_report.json").read_text())["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 25  # 24 photos + the correction
