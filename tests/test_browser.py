"""Browser tier: Debian's chromium, driven by Playwright, uploads a photo and reads the answer."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import EMBEDDED, ROOT
from live import AppServer

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
    assert "sequoia" in text.lower(), text
    assert "sequoia" in page.locator("#prediction").inner_text().lower()


def test_out_of_scope_photo_is_answered_honestly(server, page):
    text = upload_and_read(page, server.url, ROOT / "examples" / "arch-delicate-arch.jpg", "browser-arches.png")
    assert "doesn't look like" in text, text


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
