"""Browser tier: Debian's chromium, driven by Playwright, uploads a photo and reads the answer."""

import os
from pathlib import Path

import pytest

from conftest import ROOT, make_photo
from hostile import bomb_png, cases
from live import AppServer

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("PARKCLF_ARTIFACTS", ROOT / "artifacts"))


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield page
    page.close()


PHOTO_INPUT = "#photo input[type=file]"


def open_page(page, url):
    page.goto(url, wait_until="domcontentloaded")
    page.locator(PHOTO_INPUT).wait_for(state="attached", timeout=60_000)


def upload_and_read(page, url, photo: Path, shot: str) -> str:
    open_page(page, url)
    page.locator(PHOTO_INPUT).set_input_files(str(photo))
    verdict = page.locator("#verdict")
    verdict.get_by_text("%").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # let the output settle out of its "pending" look
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    return verdict.inner_text()


def test_upload_a_photo_and_read_the_label(server, page):
    text = upload_and_read(page, server.url, ROOT / "examples" / "seki-giant-sequoia-tree.jpg", "browser-sequoia.png")
    assert text.strip().lower().startswith("sequoia") and "doesn't look like" not in text, text
    label = [line.strip() for line in page.locator("#prediction").inner_text().splitlines() if line.strip()]
    assert label[label.index("Prediction") + 1] == "Sequoia", label  # the widget's headline: its top class


def test_out_of_scope_photo_is_answered_honestly(server, page):
    text = upload_and_read(page, server.url, ROOT / "examples" / "arch-delicate-arch.jpg", "browser-arches.png")
    assert "doesn't look like" in text, text
    label = [line.strip() for line in page.locator("#prediction").inner_text().splitlines() if line.strip()]
    assert label[label.index("Prediction") + 1] == "None of these", label  # the headline agrees with the verdict


def test_explanation_toggle_shows_the_overlay(server, page):
    open_page(page, server.url)
    page.get_by_label("Show which pixels decided (explanation overlay)").check()
    page.locator(PHOTO_INPUT).set_input_files(str(ROOT / "examples" / "yell-wolf-in-gardiner-basin.jpg"))
    page.locator("#verdict").get_by_text("%").wait_for(timeout=60_000)
    overlay = page.locator("#explanation img")
    overlay.first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-explain.png"), full_page=True)
    assert overlay.count() >= 1


def shows(page, sentence: str, timeout=60_000) -> str:
    """Wait for a toast (or any text) containing ``sentence``; returns its text."""
    found = page.get_by_text(sentence).first
    found.wait_for(timeout=timeout)
    return found.inner_text()


@pytest.mark.parametrize("name,sentence", [("text_as_jpg", "not an image we can read"),
                                           ("decompression_bomb", "too large to process")])
def test_a_bad_file_shows_our_sentence_in_the_page(server, page, tmp_path, name, sentence):
    """Gradio's own decoding would show a bare "Error": the upload reaches our loader, and the page says why."""
    _, data, filename, _ = {c[0]: c for c in cases()}[name]
    bad = tmp_path / filename
    bad.write_bytes(data)
    open_page(page, server.url)
    page.locator(PHOTO_INPUT).set_input_files(str(bad))
    text = shows(page, sentence)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-refused-{name}.png"), full_page=True)
    assert "Traceback" not in text and str(tmp_path) not in text, text


def correct(page, photo: Path, right: str = "yosemite"):
    """Upload a photo (the page classifies it), then send a correction through the accordion."""
    page.locator(PHOTO_INPUT).set_input_files(str(photo))
    page.wait_for_timeout(3000)  # the classify event (or its refusal) first
    if not page.get_by_label("The right class").is_visible():
        page.get_by_text("Wrong? Tell us the right answer").click()
    page.get_by_label("The right class").click()
    page.get_by_role("option", name=right).click()
    page.get_by_role("button", name="Save correction").click()


def close_toasts(page):
    for button in page.locator('[data-testid="toast-close"]').all():
        if button.is_visible():
            button.click()
    page.locator(".toast-message-text").first.wait_for(state="detached", timeout=30_000)


def refused(page, photo: Path, sentence: str):
    """Send a correction and wait for the page's message containing ``sentence``."""
    close_toasts(page)
    correct(page, photo)
    page.locator(".toast-message-text", has_text=sentence).first.wait_for(timeout=60_000)


def saved(page, photo: Path, folder: Path, n: int):
    """Send a correction and wait until the folder holds ``n`` photos."""
    import time

    correct(page, photo)
    deadline = time.time() + 60
    while len(list(folder.rglob("*.jpg"))) < n and time.time() < deadline:
        time.sleep(0.2)
    assert len(list(folder.rglob("*.jpg"))) == n
    shows(page, "Saved as")


def test_corrections_through_the_page_are_checked_capped_and_become_training_data(page, tmp_path, tiny_vit):
    """The feedback loop end to end in the browser: a correction is saved once as a fresh JPEG; a non-image, a torn
    file, an oversized PNG and a duplicate are refused with a message; the folder cap holds; the saved corrections go
    up to the dataset repo (FEEDBACK_DATASET, a recording stand-in for the Hub); and training reads the folder.
    (A photo the page never classified can only be sent by raw HTTP: test_app_live.py has that case.)"""
    import json

    from parkclf.app.feedback import read_rows
    from parkclf.training import main as train_main

    from hub_standin import calls

    feedback, hub = tmp_path / "feedback", tmp_path / "hub"
    srv = AppServer(env={"FEEDBACK_DIR": str(feedback), "FEEDBACK_MAX_FILES": "2", "FEEDBACK_DATASET": "me/fixes"},
                    argv=["tests/hub_app.py", str(hub)])
    by_name = {c[0]: c for c in cases()}
    bad = {}
    for name in ("text_as_jpg", "truncated_jpeg"):
        bad[name] = tmp_path / by_name[name][2]
        bad[name].write_bytes(by_name[name][1])
    bad["oversized"] = tmp_path / "bomb.png"
    bad["oversized"].write_bytes(bomb_png())
    second, third = tmp_path / "second.jpg", tmp_path / "third.jpg"
    make_photo((80, 130, 60), size=(500, 400), seed=5).save(second)
    make_photo((80, 130, 60), size=(500, 400), seed=6).save(third)
    try:
        srv.wait()
        open_page(page, srv.url)
        zion = ROOT / "examples" / "zion-temples-towers-sunrise.jpg"
        saved(page, zion, feedback, 1)
        refused(page, zion, "already have a correction")
        for path in bad.values():
            refused(page, path, "This correction was not saved")
        saved(page, second, feedback, 2)
        refused(page, third, "folder is full")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-feedback-full.png"), full_page=True)
    finally:
        srv.stop()
    kept = list(feedback.rglob("*.jpg"))
    assert len(kept) == 2 and len(read_rows(feedback)) == 2
    assert all(p.parent.name == "yosemite" and p.read_bytes()[:3] == b"\xff\xd8\xff" for p in kept)
    sent = {a["path"] for c in calls(hub, "create_commit") for a in c["added"]}
    assert sent == {p.relative_to(feedback).as_posix() for p in kept} | {f"{kept[0].parts[-3]}/metadata.jsonl"}

    # the saved folder is an imagefolder with the app's label names: train.py reads it as extra train data
    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "data", per_class=10, classes=("sequoia", "yellowstone", "yosemite"))
    out = tmp_path / "out"
    train_main(["--data-dir", str(data), "--extra-dataset", str(feedback), "--model-name-or-path", str(tiny_vit),
                "--output-dir", str(out), "--freeze-backbone", "--bf16", "false",
                "--no-export-onnx"])
    counts = json.loads((out / "data_report.json").read_text())["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 32  # 30 photos + the two corrections


def test_many_photos_fill_a_table_that_downloads_as_csv(server, page, tmp_path):
    import csv
    import io

    photos = [ROOT / "examples" / n for n in ("seki-giant-sequoia-tree.jpg", "yell-wolf-in-gardiner-basin.jpg",
                                               "arch-delicate-arch.jpg")]
    open_page(page, server.url)
    page.get_by_role("tab", name="Many photos").click()
    page.locator("#many_files input[type=file]").set_input_files([str(p) for p in photos])
    page.locator('#many_files a[href$="arch-delicate-arch.jpg"]').first.wait_for(timeout=60_000)  # uploaded
    page.locator("#many_go").click()
    rows = page.locator("#many_table .virtual-body [role=row]")
    page.wait_for_function("n => document.querySelectorAll('#many_table .virtual-body [role=row]').length >= n", arg=3,
                           timeout=120_000)
    page.locator("#many_csv").wait_for(state="visible", timeout=60_000)
    thumbs = page.eval_on_selector_all("#many_table .virtual-body [role=row] img",
                                       "els => els.map(e => e.naturalWidth)")
    assert rows.count() == 3 and len(thumbs) == 3 and all(w > 0 for w in thumbs), thumbs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-many-photos.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#many_csv").click()
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["path"] for r in table] == [p.name for p in photos]
    assert table[0]["label"] == "sequoia" and table[1]["label"] == "yellowstone" and table[2]["abstained"] == "True"
    assert {"confidence_sequoia", "confidence_yellowstone", "confidence_yosemite", "error"} <= set(table[0])
