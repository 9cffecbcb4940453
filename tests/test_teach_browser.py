"""Browser tier for the "Teach it" tab: Debian's chromium teaches 3 classes of 8 real scene photos, reads the
metrics, tries a new photo, downloads the model, and a fresh ``python app.py`` serves the zip's checkpoint."""

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import EMBEDDED, ROOT, SCENES, needs_shared
from live import AppServer, RawHTTP

pytestmark = pytest.mark.browser
ARTIFACTS = Path(os.environ.get("PARKCLF_ARTIFACTS", ROOT / "artifacts"))
BASE = Path(os.environ.get("PARKCLF_TEACH_BASE", EMBEDDED))
CLASSES = ("buildings", "forest", "sea")


def scene_photos(split: str, scene: str, n: int) -> list[str]:
    return [str(p) for p in sorted((SCENES / split / scene).glob("*.jpg"))[:n]]


def teach_in_the_page(page, url: str) -> str:
    """Open the tab, fill three class rows, see them read, press Teach; the summary once the model can be tried."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Teach it").click()
    for i, scene in enumerate(CLASSES):
        page.locator(f"#teach_name_{i} textarea, #teach_name_{i} input").first.fill(scene)
        page.locator(f"#teach_photos_{i} input[type=file]").set_input_files(scene_photos("train", scene, 8))
        page.locator(f"#teach_photos_{i} a[href$='.jpg']").nth(7).wait_for(timeout=60_000)  # all 8 uploaded
    page.locator("#teach_add").click()  # a fourth row, left empty: empty rows are left out
    page.locator("#teach_name_3").wait_for(state="visible", timeout=30_000)
    for i in range(len(CLASSES)):  # each row's photos went through the backbone as they were dropped
        page.locator(f"#teach_read_{i}").get_by_text("8 photos read").wait_for(timeout=120_000)
    page.locator("#teach_go").click()
    page.locator("#teach_summary").get_by_text("Held-out accuracy").wait_for(timeout=180_000)
    return page.locator("#teach_summary").inner_text()


@needs_shared
def test_teach_try_download_and_serve_the_zip_in_a_fresh_app(browser, tmp_path):
    if not (BASE / "onnx").exists():
        pytest.skip(f"{BASE} has no ONNX export to teach from")
    srv = AppServer(env={"MODEL_ID": str(BASE)})
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        srv.wait()
        summary = teach_in_the_page(page, srv.url)
        assert "Taught 3 classes from 24 photos" in summary, summary
        table = page.locator("#teach_per_class").inner_text()
        assert all(c.title() in table for c in CLASSES), table
        assert page.locator("#teach_confusion img").first.evaluate("e => e.naturalWidth") > 100

        page.locator("#teach_try_photo input[type=file]").set_input_files(scene_photos("test", "forest", 1))
        verdict = page.locator("#teach_verdict")
        verdict.get_by_text("%").wait_for(timeout=60_000)
        assert verdict.inner_text().startswith("Forest"), verdict.inner_text()
        page.locator("#teach_try").get_by_label("Show which pixels decided (explanation overlay)").check()
        page.locator("#teach_explanation img").first.wait_for(timeout=60_000)
        page.locator("#teach_download").wait_for(state="visible", timeout=120_000)
        page.wait_for_timeout(1000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-teach.png"), full_page=True)
        with page.expect_download(timeout=120_000) as download:
            page.locator("#teach_download").click()
        archive = tmp_path / "model.zip"
        shutil.copy(download.value.path(), archive)
    finally:
        page.close()
        srv.stop()

    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    (folder,) = list((tmp_path / "unzipped").iterdir())  # one top folder: the checkpoint
    served = AppServer(env={"MODEL_ID": str(folder)})
    try:
        served.wait()
        raw = RawHTTP(served.url)
        ok, out = raw.call("predict", [raw.upload(scene_photos("test", "sea", 1)[0])], "fresh")
        assert ok and set(out[0]["confidences"]) == set(CLASSES), out
        assert out[0]["label"] == "sea", out
    finally:
        served.stop()
