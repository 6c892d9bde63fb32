"""The demo page in a real browser: Playwright driving Debian's Chromium against a live service.

Screenshots are saved to ``test-artifacts/`` (or ``$AURUM_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.photos import PHOTOS, encode, group_photo
from tests.helpers.stack import ROOT, Stack

CHROMIUM = os.environ.get("AURUM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("AURUM_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("browser-stack")) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(stack.base + "/")
    page.get_by_label("API key").fill(stack.http.headers["X-API-Key"])
    page.get_by_label("API key").dispatch_event("change")
    yield page
    context.close()


def test_upload_a_photo_and_see_its_faces_and_score(page) -> None:
    page.set_input_files("#photos", str(PHOTOS / "astronaut.png"))
    state = page.locator(".card .state").first
    state.wait_for()
    page.wait_for_selector(".card .state[data-state=done]", timeout=30_000)
    assert "1 face(s)" in state.inner_text()
    faces = page.locator(".card .faces li")
    assert faces.count() == 1 and "score" in faces.first.inner_text()
    canvas_size = page.eval_on_selector(".card canvas", "c => [c.width, c.height]")
    assert canvas_size == [512, 512]
    # the canvas shows more than the bare photo: boxes and landmarks were drawn
    drawn = page.eval_on_selector(".card canvas", """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let cyan = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 60 && d[i+1] > 170 && d[i+2] > 200) cyan++;
        return cyan; }""")
    assert drawn > 100
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-astronaut.png"), full_page=True)


def test_a_non_image_file_shows_its_message(page, tmp_path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are not pixels")
    page.set_input_files("#photos", str(notes))
    page.wait_for_selector(".card .state[data-state=failed]", timeout=15_000)
    error = page.locator(".card .error").first
    assert error.get_attribute("data-code") == "UNSUPPORTED_FORMAT"
    assert "not supported" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "demo-error.png"), full_page=True)


def test_batch_progress_and_results(page, tmp_path) -> None:
    canvas, _ = group_photo()
    group = tmp_path / "group.png"
    group.write_bytes(encode(canvas))
    page.set_input_files("#photos", [str(PHOTOS / "camera.png"), str(group)])
    from playwright.sync_api import expect

    expect(page.locator(".card .state[data-state=done]")).to_have_count(2, timeout=30_000)
    assert page.locator("#batch-progress").get_attribute("value") == "2"
    texts = page.locator(".card .state").all_inner_texts()
    assert texts == ["done: 1 face(s)", "done: 3 face(s)"]
    page.screenshot(path=str(ARTIFACTS / "demo-batch.png"), full_page=True)


def test_page_is_labelled_and_keyboard_reachable(page) -> None:
    assert page.get_by_label("API key").is_visible()
    assert page.get_by_label("Show landmarks").is_checked()
    page.keyboard.press("Tab")
    reached = set()
    for _ in range(6):
        reached.add(page.evaluate("document.activeElement.id"))
        page.keyboard.press("Tab")
    assert {"api-key", "photos", "show-landmarks"} <= reached


FIREFOX = os.environ.get("AURUM_FIREFOX", "/usr/bin/firefox-esr")
FIREFOX_DRIVER = ROOT / "tests/firefox"


def test_the_page_works_in_firefox_too(stack, tmp_path) -> None:
    """Firefox ESR (Debian) through WebDriver BiDi with puppeteer-core (tests/firefox, npm ci)."""
    import json
    import subprocess

    assert Path(FIREFOX).exists(), f"{FIREFOX} is missing: apt-get install firefox-esr (.ci/run does)"
    assert (FIREFOX_DRIVER / "node_modules/puppeteer-core").is_dir(), "run: npm ci --prefix tests/firefox"
    notes = tmp_path / "notes.jpg"
    notes.write_text("not pixels")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["node", "check.mjs", stack.base + "/", stack.http.headers["X-API-Key"],
                          str(ARTIFACTS / "demo-firefox.png"), str(PHOTOS / "astronaut.png")],
                         cwd=FIREFOX_DRIVER, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AURUM_FIREFOX": FIREFOX})
    assert out.returncode == 0, out.stderr[-2000:]
    [card] = json.loads(out.stdout.strip().splitlines()[-1])
    assert card["state"].startswith("done: 1 face(s)")  # "(from cache)" when Chromium sent it first
    assert card["error"] is None and card["faces"] == 1 and card["canvas"] == [512, 512]
    out = subprocess.run(["node", "check.mjs", stack.base + "/", stack.http.headers["X-API-Key"],
                          str(ARTIFACTS / "demo-firefox-error.png"), str(notes)],
                         cwd=FIREFOX_DRIVER, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AURUM_FIREFOX": FIREFOX})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])[0]["error"] == "UNSUPPORTED_FORMAT"
