"""``parkclf predict``: the table, the sorted folders, hostile files, a kill and a rerun, two processes, no torch."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from parkclf import batch, processing, tables
from parkclf.classifier import Classifier, Prediction
from parkclf.errors import UsageError
from parkclf.images import image_files
from parkclf.processing import Preprocessor

from conftest import COLOURS, EMBEDDED, PARKS, make_imagefolder, make_photo, needs_shared
from hostile import cases
from live import free_port

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
LABELS = ["red", "blue"]
COLUMNS = ["path", "label", "confidence_red", "confidence_blue", "abstained", "error"]


def relabel(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(id2label={"0": "red", "1": "blue"}, label2id={"red": 0, "blue": 1}, **config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="session")
def model(tiny_vit, tmp_path_factory) -> Path:
    """The tiny ViT with class names, abstaining on about half of the generated photos (its median score)."""
    base = relabel(tiny_vit, tmp_path_factory.mktemp("m") / "plain")
    photos = [make_photo(COLOURS[c], seed=s) for c in ("red", "blue") for s in range(8)]
    scores = sorted(p.score for p in Classifier.from_pretrained(str(base)).predict_batch(photos))
    return relabel(base, tmp_path_factory.mktemp("m") / "tiny", abstain_threshold=scores[len(scores) // 2])


def read_rows(path: Path) -> list[dict]:
    """The table as the file holds it, read without parkclf: CSV values stay strings."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def predict(*argv) -> dict:
    return batch.main([str(a) for a in argv])


def test_prediction_row_has_the_columns_in_order_and_empties_an_unreadable_one():
    pred = Prediction(label="blue", confidences={"red": 0.25, "blue": 0.75}, abstained=True, score=0.75)
    row = tables.prediction_row("a.jpg", pred, None, LABELS)
    assert list(row) == COLUMNS
    assert row == {"path": "a.jpg", "label": "blue", "confidence_red": 0.25, "confidence_blue": 0.75,
                   "abstained": True, "error": ""}
    bad = tables.prediction_row("b.jpg", None, "The file is empty", LABELS)
    assert bad == {"path": "b.jpg", "label": "", "confidence_red": None, "confidence_blue": None,
                   "abstained": False, "error": "The file is empty"}


def test_csv_jsonl_and_parquet_hold_the_same_rows_with_the_same_columns(model, tmp_path):
    photos = make_imagefolder(tmp_path / "photos", per_class=3)
    (photos / "red" / "empty.jpg").write_bytes(b"")
    tables = {}
    for ext in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"out.{ext}"
        predict(photos, "--model", model, "--output", out)
        tables[ext] = read_rows(out)
        assert list(tables[ext][0]) == COLUMNS, ext
    assert not list(tmp_path.glob("*.journal.jsonl")) and not list(tmp_path.glob("*.parts"))
    jsonl, parquet, text = tables["jsonl"], tables["parquet"], tables["csv"]
    assert [r["path"] for r in jsonl] == [r["path"] for r in text] == image_files(photos)
    assert jsonl == parquet
    for j, c in zip(jsonl, text, strict=True):
        assert c["label"] == j["label"] and c["abstained"] == str(j["abstained"]) and c["error"] == j["error"]
        for n in LABELS:
            assert (float(c[f"confidence_{n}"]) if c[f"confidence_{n}"] else None) == j[f"confidence_{n}"]
    bad = [r for r in jsonl if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["empty.jpg"] and "empty" in bad[0]["error"]
    assert bad[0]["label"] == "" and bad[0]["confidence_red"] is None
    for r in jsonl:
        if not r["error"]:
            assert r["label"] in LABELS and abs(r["confidence_red"] + r["confidence_blue"] - 1) < 1e-5


def test_summary_counts_each_label_the_unsure_and_the_unreadable(model, tmp_path, capsys):
    photos = make_imagefolder(tmp_path / "photos", per_class=8)
    (photos / "blue" / "notes.jpg").write_text("not a photo")
    summary = predict(photos, "--model", model, "--output", tmp_path / "out.jsonl")
    rows = read_rows(tmp_path / "out.jsonl")
    ok = [r for r in rows if not r["error"]]
    assert summary["rows"] == summary["new"] == 17 and summary["unreadable"] == 1
    assert 0 < summary["unsure"] < 16, "the fixture's threshold should make some photos abstain, not all"
    assert summary["unsure"] == sum(r["abstained"] for r in ok)
    assert summary["labels"] == {n: sum(r["label"] == n and not r["abstained"] for r in ok) for n in LABELS}
    out = capsys.readouterr().out
    assert "17 photos (17 predicted now, 0 already there)" in out and "images/s" in out
    assert f"unsure (abstained)  {summary['unsure']:>7}" in out


def test_every_hostile_file_gets_one_row_refused_ones_with_the_reason(model, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    suite = cases()
    for _, data, filename, _ in suite:
        (folder / filename).write_bytes(data)
    # the folder gives its image files, the glob every file (.html, .svg, .pdf too); each one once
    predict(folder, f"{folder}/*", "--model", model, "--output", tmp_path / "out.csv", "--batch-size", 4)
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out.csv")}
    assert len(read_rows(tmp_path / "out.csv")) == len(rows) == len(suite)
    for name, _, filename, expected in suite:
        row = rows[filename]
        if expected == "refuse":
            assert row["error"] and row["label"] == "", name
        else:
            assert not row["error"] and row["label"] in LABELS, (name, row["error"])


def test_a_vanished_file_or_a_folder_is_a_row_with_its_reason_not_a_crash(model, tmp_path):
    pre = Classifier.from_pretrained(str(model)).preprocessor
    pixels, error = processing.decode(str(tmp_path / "gone.jpg"), pre, 48)
    assert pixels is None and "gone" in error
    (tmp_path / "x.jpg").mkdir()
    pixels, error = processing.decode(str(tmp_path / "x.jpg"), pre, 48)
    assert pixels is None and error
    torn_tiff = [data for name, data, _, _ in cases() if name == "multipage_tiff"][0][:2000]
    pixels, error = processing.decode(torn_tiff, pre, 48)  # load_image itself raises TypeError on this one
    assert pixels is None and "could not be decoded" in error
    # a folder named like a photo, inside the library, is searched rather than read
    make_photo(COLOURS["red"]).save(tmp_path / "x.jpg" / "inside.jpg")
    predict(tmp_path / "x.jpg", "--model", model, "--output", tmp_path / "out.csv")
    assert [Path(r["path"]).name for r in read_rows(tmp_path / "out.csv")] == ["inside.jpg"]


def test_sort_into_places_each_photo_under_its_label_unsure_or_unreadable(model, tmp_path):
    photos = make_imagefolder(tmp_path / "photos", per_class=6)
    (photos / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")  # one name, two files, one folder
    (photos / "blue" / "broken.jpg").write_bytes(b"GIF89a, nothing more")
    out, sorted_dir = tmp_path / "out.csv", tmp_path / "sorted"
    predict(photos, "--model", model, "--output", out, "--sort-into", sorted_dir)
    rows = read_rows(out)
    placed = sorted(sorted_dir.rglob("*"))
    files = [p for p in placed if not p.is_dir()]
    assert len(files) == len(rows) == 14 and all(p.is_symlink() for p in files)
    targets = sorted(os.readlink(p) for p in files)
    assert targets == sorted(os.path.abspath(r["path"]) for r in rows)
    for p in files:
        row = next(r for r in rows if os.path.abspath(r["path"]) == os.readlink(p))
        want = "unreadable" if row["error"] else "unsure" if row["abstained"] == "True" else row["label"]
        assert p.parent.name == want, (p, row)
    assert sorted(p.name for p in (sorted_dir / "unreadable").iterdir()) == ["broken-1.jpg", "broken.jpg"]
    # --copy: real files, the bytes of the photos
    predict(photos, "--model", model, "--output", tmp_path / "copied.csv", "--sort-into", tmp_path / "c", "--copy")
    copies = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert len(copies) == 14 and not any(p.is_symlink() for p in copies)
    assert sorted(p.read_bytes() for p in copies) == sorted(Path(r["path"]).read_bytes() for r in rows)


def test_sorting_again_after_a_kill_does_not_place_a_photo_twice(model, tmp_path):
    photos = make_imagefolder(tmp_path / "photos", per_class=3)
    out, sorted_dir = tmp_path / "out.jsonl", tmp_path / "sorted"
    predict(photos, "--model", model, "--output", out, "--sort-into", sorted_dir)
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))  # as if killed before the other rows
    predict(photos, "--model", model, "--output", out, "--sort-into", sorted_dir)
    assert len([p for p in sorted_dir.rglob("*") if not p.is_dir()]) == 6
    assert len(read_rows(out)) == 6


def test_a_rerun_predicts_only_the_photos_the_table_lacks(model, tmp_path):
    photos = make_imagefolder(tmp_path / "photos", per_class=4)
    out = tmp_path / "out.parquet"
    assert predict(photos, "--model", model, "--output", out)["new"] == 8
    first = read_rows(out)
    make_imagefolder(photos, per_class=2, classes=("green",))
    again = predict(photos, "--model", model, "--output", out)
    assert again["new"] == 2 and again["rows"] == 10
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == image_files(photos)
    assert rows[:8] == first
    assert predict(photos, "--model", model, "--output", out)["new"] == 0
    assert not out.with_name("out.parquet.journal.jsonl").exists()


@pytest.mark.parametrize(("ext", "cut"), [("csv", 12), ("csv", "newline"), ("jsonl", 12), ("jsonl", 1)])
def test_a_torn_last_row_is_dropped_and_predicted_again(model, tmp_path, ext, cut):
    photos = make_imagefolder(tmp_path / "photos", per_class=3)
    odd = photos / "red" / 'zz line\nbreak, "quoted".jpg'  # the last row; CSV quotes it across two lines
    make_photo(COLOURS["red"], seed=7).save(odd, format="JPEG")
    out = tmp_path / f"out.{ext}"
    predict(photos, "--model", model, "--output", out)
    whole = read_rows(out)
    text = out.read_bytes()
    end = text.rindex(b"zz line\n") + len(b"zz line\n") if cut == "newline" else len(text) - cut
    out.write_bytes(text[:end])  # the last row cut short, as a kill during its write leaves it
    again = predict(photos, "--model", model, "--output", out)
    assert again["new"] == 1 and read_rows(out) == whole


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_sigkill_mid_run_then_rerun_gives_each_photo_exactly_once(model, tmp_path, ext):
    photos = make_imagefolder(tmp_path / "photos", per_class=200)
    out = tmp_path / f"out.{ext}"
    written = out.with_name(out.name + ".journal.jsonl") if ext == "parquet" else out
    cmd = [sys.executable, "-m", "parkclf", "predict", str(photos), "--model", str(model), "--output", str(out),
           "--batch-size", "2"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=log)
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            if written.exists() and written.read_bytes().count(b"\n") >= 3:  # the first batch (and a header) is in
                break
            time.sleep(0.01)
        assert first.poll() is None, "the run finished before it could be killed; give it more photos"
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    kept = written.read_bytes().count(b"\n") - (ext == "csv")
    assert 2 <= kept < 400
    assert ext == "csv" or not out.exists(), "the Parquet is written once, at the end"
    with written.open("ab") as f:  # and a torn row, as a kill in the middle of a write leaves
        f.write(b'{"path": "' if ext == "parquet" else str(photos).encode() + b"/red/red_1")
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"400 photos ({400 - kept} predicted now, {kept} already there)" in rerun.stdout
    paths = [r["path"] for r in read_rows(out)]
    assert sorted(paths) == image_files(photos) and len(set(paths)) == 400
    assert not out.with_name(out.name + ".journal.jsonl").exists()


def launch_two(args: list, port: int) -> subprocess.CompletedProcess:
    # --multi_gpu is what starts N processes in accelerate launch, also on a CPU-only machine (--cpu starts one)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "parkclf", "predict", *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if not k.startswith("confidence_")} == \
            {k: v for k, v in w.items() if not k.startswith("confidence_")}
        for n in LABELS:
            c = f"confidence_{n}"
            assert (g[c] is None) == (w[c] is None) and (g[c] is None or abs(g[c] - w[c]) <= 1e-6), g["path"]


def test_two_accelerate_processes_give_the_rows_of_one_and_resume_alike(model, tmp_path):
    photos = make_imagefolder(tmp_path / "photos", per_class=11)
    (photos / "red" / "zero.jpg").write_bytes(b"")
    args = [photos, "--model", model, "--batch-size", 4]
    one = subprocess.run([sys.executable, "-m", "parkclf", "predict", *map(str, args), "--output",
                          str(tmp_path / "one.jsonl"), "--sort-into", str(tmp_path / "sorted-one")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    want = read_rows(tmp_path / "one.jsonl")
    two = launch_two([*args, "--output", tmp_path / "two.jsonl", "--sort-into", tmp_path / "sorted-two"], free_port())
    assert two.returncode == 0, two.stderr[-4000:]
    assert "23 photos (23 predicted now" in two.stdout and two.stdout.count("predicted now") == 1
    assert_same_rows(read_rows(tmp_path / "two.jsonl"), want)  # in input order, not only the same set
    assert not (tmp_path / "two.jsonl.parts").exists()
    trees = [sorted(str(p.relative_to(d)) for p in d.rglob("*.jpg")) for d in (tmp_path / "sorted-one",
                                                                               tmp_path / "sorted-two")]
    assert len(trees[0]) == 23 and trees[0] == trees[1]

    # as if both processes were killed: 5 rows in the output, 3 more in a shard, one of them torn
    lines = (tmp_path / "two.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "two.jsonl").write_text("".join(lines[:5]))
    (tmp_path / "two.jsonl.parts").mkdir()
    (tmp_path / "two.jsonl.parts" / "process-1.jsonl").write_text("".join(lines[12:15]) + lines[15][:30])
    again = launch_two([*args, "--output", tmp_path / "two.jsonl"], free_port())
    assert again.returncode == 0, again.stderr[-4000:]
    assert "23 photos (15 predicted now, 8 already there)" in again.stdout
    assert sorted(r["path"] for r in read_rows(tmp_path / "two.jsonl")) == sorted(r["path"] for r in want)
    got = sorted(read_rows(tmp_path / "two.jsonl"), key=lambda r: r["path"])
    assert_same_rows(got, sorted(want, key=lambda r: r["path"]))


def test_a_dataset_split_is_read_as_bytes_and_sorted_by_writing_them(model, tmp_path):
    datasets = pytest.importorskip("datasets")
    import io

    def jpeg(colour, seed):
        b = io.BytesIO()
        make_photo(COLOURS[colour], seed=seed).save(b, "JPEG")
        return b.getvalue()

    images = [{"bytes": jpeg("red", 1), "path": None}, {"bytes": b"not an image", "path": "bad.jpg"},
              {"bytes": jpeg("blue", 2), "path": "blue.jpg"}]
    features = datasets.Features({"picture": datasets.Image(), "n": datasets.Value("int32")})
    ds = datasets.Dataset.from_dict({"picture": images, "n": [0, 1, 2]}, features=features)
    (tmp_path / "ds").mkdir()
    ds.to_parquet(str(tmp_path / "ds" / "train.parquet"))
    with pytest.raises(UsageError, match="no column 'image'.*picture.*--image-column"):
        predict("--dataset", tmp_path / "ds", "--model", model, "--output", tmp_path / "x.csv")
    out, sorted_dir = tmp_path / "out.csv", tmp_path / "sorted"
    predict("--dataset", tmp_path / "ds", "--image-column", "picture", "--model", model, "--output", out,
            "--sort-into", sorted_dir)
    rows = read_rows(out)
    assert [r["path"] for r in rows] == [f"{tmp_path / 'ds'}:train:{i}" for i in range(3)]
    assert [bool(r["error"]) for r in rows] == [False, True, False]
    assert (sorted_dir / "unreadable" / "bad.jpg").read_bytes() == b"not an image"
    placed = {p.name: p.read_bytes() for p in sorted_dir.rglob("*") if p.is_file()}
    assert placed["row-0.jpg"] == images[0]["bytes"] and placed["blue.jpg"] == images[2]["bytes"]


def test_mistakes_are_usage_errors_that_name_the_fix(model, tmp_path, monkeypatch):
    photos = make_imagefolder(tmp_path / "photos", per_class=1)
    with pytest.raises(UsageError, match=r"\.csv, \.jsonl or \.parquet"):
        predict(photos, "--model", model, "--output", tmp_path / "out.xlsx")
    with pytest.raises(UsageError, match="No such file or folder: .*nowhere"):
        predict(tmp_path / "nowhere", "--model", model, "--output", tmp_path / "out.csv")
    with pytest.raises(UsageError, match="No files match"):
        predict(f"{tmp_path}/*.nothing", "--model", model, "--output", tmp_path / "out.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="No photos in .*empty"):
        predict(tmp_path / "empty", "--model", model, "--output", tmp_path / "out.csv")
    with pytest.raises(UsageError, match="Nothing to predict"):
        predict("--model", model, "--output", tmp_path / "out.csv")
    (tmp_path / "other.csv").write_text("path,label,confidence_cat,abstained,error\n")
    with pytest.raises(UsageError, match="another model's predictions"):
        predict(photos, "--model", model, "--output", tmp_path / "other.csv")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UsageError, match="pip install datasets"):
        predict("--dataset", "user/photos", "--model", model, "--output", tmp_path / "out.csv")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(UsageError, match="pip install accelerate"):
        predict(photos, "--model", model, "--output", tmp_path / "out.csv")


def test_an_onnx_checkpoint_is_served_without_torch(model, tmp_path):
    import torch

    from parkclf.export import _export_forward, _fp32_model

    onnx_model = tmp_path / "onnx-model"
    shutil.copytree(model, onnx_model)
    (onnx_model / "onnx").mkdir()
    _export_forward(_fp32_model(onnx_model), torch.zeros(2, 3, 32, 32), onnx_model / "onnx" / "model.onnx")
    photos = make_imagefolder(tmp_path / "photos", per_class=3)
    blocked = ("import sys; sys.modules.update(torch=None, transformers=None, accelerate=None); "
               "from parkclf.cli import main; raise SystemExit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", blocked, "predict", str(photos), "--model", str(onnx_model),
                        "--output", str(tmp_path / "out.csv")], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on onnxruntime-fp32" in r.stdout
    rows = read_rows(tmp_path / "out.csv")
    # the reference: the same checkpoint in torch fp32 (the torch engine would pick bf16 on this CPU)
    ref = Classifier.from_model(_fp32_model(model), Preprocessor.from_pretrained(model), dtype=torch.float32)
    for row, want in zip(rows, ref.predict_batch([r["path"] for r in rows]), strict=True):
        assert row["label"] == want.label
        assert abs(float(row["confidence_red"]) - want.confidences["red"]) < 1e-4


@needs_shared
def test_real_photos_get_the_labels_of_one_at_a_time_prediction(tmp_path):
    files = [f for park in ("sequoia", "yellowstone", "yosemite") for f in image_files(PARKS / park)[:4]]
    predict(*files, "--output", tmp_path / "out.jsonl", "--batch-size", 8)  # the embedded model by default
    rows = read_rows(tmp_path / "out.jsonl")
    clf = Classifier.from_pretrained(str(EMBEDDED))
    assert [r["path"] for r in rows] == files
    for row, f in zip(rows, files, strict=True):
        one = clf.predict(f)
        assert row["label"] == one.label, f
        assert np.allclose([row[f"confidence_{n}"] for n in clf.labels], [one.confidences[n] for n in clf.labels],
                           atol=0.02), f
