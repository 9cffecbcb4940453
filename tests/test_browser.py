"""Browser tier: Debian's chromium, driven by Playwright, uploads a photo and reads the answer."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import EMBEDDED, ROOT
from live import AppServer

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PARKCLF_ARTIFACTS", ROOT / "artifacts"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def server():
    if not EMBEDDED.exists():
        pytest.skip(f"the embedded model {EMBEDDED} is missing")
    srv = AppServer()
    srv.wait()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (the README's test command does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def upload_and_read(page, url, photo: Path, shot: str) -> str:
    page.goto(url, wait_until="domcontentloaded")
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(photo))
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
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
    page.get_by_label("Show which pixels decided (explanation overlay)").check()
    page.locator("input[type=file]").first.set_input_files(str(ROOT / "examples" / "yell-wolf-in-gardiner-basin.jpg"))
    page.locator("#verdict").get_by_text("%").wait_for(timeout=60_000)
    overlay = page.locator("#explanation img")
    overlay.first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-explain.png"), full_page=True)
    assert overlay.count() >= 1


def test_correction_saved_through_the_page_becomes_training_data(page, tmp_path, tiny_vit):
    """Feedback loop end to end: the page saves an imagefolder that train.py --extra-data-dir reads."""
    import json

    from parkclf.training import main as train_main

    feedback = tmp_path / "feedback"
    srv = AppServer(env={"FEEDBACK_DIR": str(feedback)})
    try:
        srv.wait()
        page.goto(srv.url, wait_until="domcontentloaded")
        page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(ROOT / "examples" / "zion-temples-towers-sunrise.jpg"))
        page.locator("#verdict").get_by_text("%").wait_for(timeout=60_000)
        page.get_by_text("Wrong? Tell us the right answer").click()
        page.get_by_label("The right class").click()
        page.get_by_role("option", name="yosemite").click()
        page.get_by_role("button", name="Save correction").click()
        page.get_by_text("Saved as").wait_for(timeout=30_000)
    finally:
        srv.stop()
    saved = list((feedback / "yosemite").glob("*"))
    assert len(saved) == 1 and (feedback / "feedback.csv").exists()

    # the saved folder is an imagefolder with the app's label names: train.py reads it as extra train data
    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "data", per_class=10, classes=("sequoia", "yellowstone", "yosemite"))
    out = tmp_path / "out"
    train_main(["--data-dir", str(data), "--extra-data-dir", str(feedback), "--model-name-or-path", str(tiny_vit),
                "--output-dir", str(out), "--freeze-backbone", "--head-epochs", "2", "--bf16", "false", "--no-export-onnx"])
    counts = json.loads((out / "data_report.json").read_text())["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 31  # 30 photos + the correction
