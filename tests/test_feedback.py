"""The corrections folder that strangers write into: what it keeps, what it refuses, how it reaches the Hub (up to
the huggingface_hub call, through a recording stand-in), and that `parkclf train --extra-dataset` reads it.
The same refusals through the page and through raw HTTP are in test_app_live.py and test_browser.py."""

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from parkclf.app.feedback import FeedbackError, FeedbackLimits, FeedbackStore, digest, on_hub, read_rows
from parkclf.errors import UsageError

from conftest import COLOURS, make_imagefolder, make_photo
from hostile import bomb_png, cases
from hub_standin import RecordingHfApi, calls

LABELS = ["blue", "red"]
ANSWER = {"label": "blue", "confidences": {"red": 0.25, "blue": 0.7}, "abstained": False}


def upload(tmp_path, name="upload.jpg", size=(300, 200), seed=1):
    path = tmp_path / name
    make_photo(COLOURS["red"], size=size, seed=seed).save(path, quality=92)
    return str(path)


def classified(store, path, session="s1"):
    store.remember(session, digest(path), ANSWER)
    return path


def test_a_classified_photo_is_saved_as_a_fresh_jpeg_in_its_class_folder(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    big = classified(store, upload(tmp_path, size=(3000, 1800)))
    dest = store.save(big, "red", session="s1")
    assert dest.parent == store.run / "red" and store.run.parent == tmp_path / "fb" and dest.suffix == ".jpg"
    saved = Image.open(dest)
    assert saved.format == "JPEG" and max(saved.size) == 1024  # re-encoded and shrunk, never the bytes sent
    assert dest.read_bytes() != Path(big).read_bytes()
    [row] = read_rows(tmp_path / "fb")
    assert row["file_name"] == f"red/{dest.name}" and row["label"] == "red" and row["sha256"] == digest(big)
    # the model's answer is the one this session was given for this photo, most confident first
    assert row["predicted"] == "blue" and row["abstained"] is False
    assert row["confidences"] == [{"label": "blue", "score": 0.7}, {"label": "red", "score": 0.25}]
    assert time.time() - time.mktime(time.strptime(row["time"], "%Y-%m-%dT%H:%M:%SZ")) + time.timezone < 60


def test_the_runs_load_together_as_one_imagefolder_with_the_corrected_labels(tmp_path):
    """Two app runs write two folders with a metadata file each; datasets reads them as one imagefolder."""
    import datasets

    for seed, label in ((1, "red"), (2, "blue")):
        store = FeedbackStore(tmp_path / "fb", LABELS)
        store.save(classified(store, upload(tmp_path, f"{seed}.jpg", seed=seed)), label, session="s1")
    assert len(list((tmp_path / "fb").glob("*/metadata.jsonl"))) == 2
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "fb"), split="train")
    assert sorted(ds["label"]) == ["blue", "red"] and set(ds["predicted"]) == {"blue"}
    assert ds[0]["image"].size == (300, 200) and len(ds[0]["sha256"]) == 64


def test_a_photo_this_session_never_classified_is_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    path = upload(tmp_path)
    with pytest.raises(FeedbackError, match="Classify this photo first"):
        store.save(path, "red", session="s1")
    store.remember("someone-else", digest(path), ANSWER)
    with pytest.raises(FeedbackError, match="Classify this photo first"):
        store.save(path, "red", session="s1")
    assert not (tmp_path / "fb").exists()


@pytest.mark.parametrize("name", ["text_as_jpg", "svg", "html", "truncated_jpeg", "zero_bytes"])
def test_what_the_loader_refuses_is_refused(tmp_path, name):
    _, data, filename, _ = {c[0]: c for c in cases()}[name]
    path = tmp_path / filename
    path.write_bytes(data)
    store = FeedbackStore(tmp_path / "fb", LABELS)
    classified(store, str(path))
    with pytest.raises(FeedbackError, match="was not saved"):
        store.save(str(path), "red", session="s1")
    assert not list((tmp_path / "fb").rglob("*.jpg"))


def test_an_oversized_photo_is_refused_before_it_is_decoded(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(9000, 9000))  # 81 MP: over the 40 MP a correction may have
    store = FeedbackStore(tmp_path / "fb", LABELS)
    classified(store, str(path))
    with pytest.raises(FeedbackError, match="limit is 40 megapixels"):
        store.save(str(path), "red", session="s1")


def test_the_same_photo_twice_is_kept_once_even_after_a_restart(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    path = classified(store, upload(tmp_path))
    store.save(path, "red", session="s1")
    with pytest.raises(FeedbackError, match="already have a correction"):
        store.save(path, "blue", session="s1")
    again = FeedbackStore(tmp_path / "fb", LABELS)  # a new process reads the metadata back
    classified(again, path, "s2")
    with pytest.raises(FeedbackError, match="already have a correction"):
        again.save(path, "red", session="s2")
    assert len(list((tmp_path / "fb").rglob("*.jpg"))) == 1


def test_the_folder_caps_hold_and_say_so(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(max_files=2))
    for seed in range(2):
        store.save(classified(store, upload(tmp_path, f"{seed}.jpg", seed=seed), f"s{seed}"), "red",
                   session=f"s{seed}")
    with pytest.raises(FeedbackError, match="folder is full"):
        store.save(classified(store, upload(tmp_path, "x.jpg", seed=9), "s9"), "red", session="s9")
    tiny = FeedbackStore(tmp_path / "fb2", LABELS, FeedbackLimits(max_bytes=1000))
    with pytest.raises(FeedbackError, match="folder is full"):
        tiny.save(classified(tiny, upload(tmp_path, "y.jpg", seed=3)), "red", session="s1")
    assert len(list((tmp_path / "fb").rglob("*.jpg"))) == 2 and not list((tmp_path / "fb2").rglob("*.jpg"))
    reopened = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(max_files=2))
    assert reopened.files == 2  # the cap counts what is already on disk


def test_each_session_and_everyone_together_are_rate_limited(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS, FeedbackLimits(per_session=2, overall=3))
    for seed in range(2):
        store.save(classified(store, upload(tmp_path, f"{seed}.jpg", seed=seed)), "red", session="s1")
    with pytest.raises(FeedbackError, match="the most we take"):
        store.save(classified(store, upload(tmp_path, "a.jpg", seed=5)), "red", session="s1")
    store.save(classified(store, upload(tmp_path, "b.jpg", seed=6), "s2"), "red", session="s2")
    with pytest.raises(FeedbackError, match="many corrections right now"):
        store.save(classified(store, upload(tmp_path, "c.jpg", seed=7), "s3"), "red", session="s3")


def test_an_unknown_class_is_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb", LABELS)
    with pytest.raises(FeedbackError, match="Choose one of blue, red"):
        store.save(classified(store, upload(tmp_path)), "purple", session="s1")


def wait_for(condition, timeout=20.0):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    return condition()


def test_corrections_go_to_a_private_dataset_repo_on_schedule_and_at_shutdown(tmp_path):
    api = RecordingHfApi(tmp_path / "hub")
    store = on_hub("me/corrections", tmp_path / "fb", LABELS, every=0.005, api=api)  # every 0.3 s
    first = store.save(classified(store, upload(tmp_path, "1.jpg", seed=1)), "red", session="s1")
    # the scheduler's own thread uploads the photo and its metadata row together, with nothing else
    assert wait_for(lambda: calls(api.folder, "create_commit")), "no scheduled upload within 20 s"
    [commit] = calls(api.folder, "create_commit")
    run = store.run.name
    assert commit["repo_id"] == "me/corrections" and commit["repo_type"] == "dataset"
    assert sorted(a["path"] for a in commit["added"]) == [f"{run}/metadata.jsonl", f"{run}/red/{first.name}"]
    [created] = calls(api.folder, "create_repo")
    assert created["repo_type"] == "dataset" and created["private"] is True and created["exist_ok"] is True
    second = store.save(classified(store, upload(tmp_path, "2.jpg", seed=2)), "blue", session="s1")
    (store.run / "blue" / "stray.part").write_bytes(b"half a photo")  # never uploaded: not a photo of the layout
    store.close()  # what the app does at shutdown
    sent = {a["path"] for c in calls(api.folder, "create_commit") for a in c["added"]}
    assert f"{run}/blue/{second.name}" in sent and not any(p.endswith(".part") for p in sent)
    # what the Hub would hold loads as an imagefolder, with the corrected labels
    import datasets

    ds = datasets.load_dataset("imagefolder", data_dir=str(api.repo("me/corrections")), split="train")
    assert sorted(ds["label"]) == ["blue", "red"]


def test_a_restart_on_an_empty_disk_refuses_a_photo_the_hub_already_has(tmp_path):
    api = RecordingHfApi(tmp_path / "hub")
    store = on_hub("me/corrections", tmp_path / "disk-1", LABELS, api=api)
    path = classified(store, upload(tmp_path))
    store.save(path, "red", session="s1")
    store.close()
    restarted = on_hub("me/corrections", tmp_path / "disk-2", LABELS, FeedbackLimits(max_files=2), api=api)
    assert calls(api.folder, "snapshot_download")[-1]["allow_patterns"] == "*/metadata.jsonl"  # rows, not photos
    assert restarted.files == 1  # the cap counts what the Hub holds
    classified(restarted, path, "s2")
    with pytest.raises(FeedbackError, match="already have a correction"):
        restarted.save(path, "red", session="s2")
    restarted.close()
    assert not list((tmp_path / "disk-2").rglob("*.jpg"))


def test_a_dataset_repo_that_cannot_be_opened_names_the_setting_to_fix(tmp_path):
    class NoToken(RecordingHfApi):
        def create_repo(self, repo_id, **kw):
            raise OSError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")

    with pytest.raises(UsageError, match="FEEDBACK_DATASET=me/corrections.*401 Client Error.*HF_TOKEN"):
        on_hub("me/corrections", tmp_path / "fb", LABELS, api=NoToken(tmp_path / "hub"))


def train_on(data, extra, model, out):
    from parkclf.training import main as train_main

    train_main(["--data-dir", str(data), "--extra-dataset", str(extra), "--model-name-or-path", str(model),
                "--output-dir", str(out), "--freeze-backbone", "--bf16", "false",
                "--no-export-onnx"])
    return json.loads((out / "data_report.json").read_text())


def test_saved_corrections_train_with_one_flag_in_the_training_split_alone(tiny_vit, tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=12)
    store = FeedbackStore(tmp_path / "fb", LABELS)
    store.save(classified(store, upload(tmp_path)), "red", session="s1")
    report = train_on(data, tmp_path / "fb", tiny_vit, tmp_path / "out")
    assert report["extra"] == {"photos": 1, "source": str(tmp_path / "fb")}
    counts = {split: sum(c.values()) for split, c in report["counts"].items()}
    assert counts == {"train": 20 + 1, "validation": 2, "test": 2}  # 24 photos split 20/2/2, plus the correction
    card = " ".join((tmp_path / "out" / "README.md").read_text().split())
    assert f"the app's corrections): 1 photo from `{tmp_path / 'fb'}`; validation and test were drawn" in card


def test_training_refuses_corrections_whose_label_is_not_a_class(tiny_vit, tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class=12)
    store = FeedbackStore(tmp_path / "fb", [*LABELS, "purple"])
    store.save(classified(store, upload(tmp_path)), "purple", session="s1")
    with pytest.raises(UsageError, match=r"labelled \['purple'\], which the model does not have as classes"):
        train_on(data, tmp_path / "fb", tiny_vit, tmp_path / "out")
