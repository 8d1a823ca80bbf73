"""The studio page in a real browser: Playwright drives Debian's Chromium (headless) against
``anyseg serve --checkpoint <fixture>`` started on a free loopback port.

Screenshots of every step land in ``test-artifacts/studio/``. Without ``/usr/bin/chromium`` the
tests skip, unless ``ANYSEG_REQUIRE_BROWSER=1`` (CI), which makes its absence a failure.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from server_helpers import REPO, clip_from, free_port, start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "studio"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

COUNT_MASK_PIXELS = """(id) => {
    const canvas = document.getElementById(id || "mask-canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
    return n;
}"""
MASK_COLOURS = """() => {
    const canvas = document.getElementById("mask-canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0 && data[i + 3] < 255) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return [...seen];
}"""


def _require_browser():
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install -e '.[test]')"
    if missing:
        if os.environ.get("ANYSEG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing}, and ANYSEG_REQUIRE_BROWSER=1 requires it")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _serve(tmp_path: Path, *args: str):
    port = free_port()
    env = {"ANYSEG_HOME": str(tmp_path / "home")}
    server = start_server(["-m", "anyseg.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "studio"),
                           *args], port, env=env, log=tmp_path / "server.log")
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def studio(browser, fixtures_dir, samples_dir, tmp_path_factory):
    """``anyseg serve`` with the fixture checkpoint; yields its address once the model is ready."""
    tmp = tmp_path_factory.mktemp("studio")
    server, url = _serve(tmp, "--checkpoint", str(fixtures_dir / "sam2.1_hiera_tiny.random.pt"),
                         "--samples", str(samples_dir))
    try:
        deadline = time.monotonic() + 120
        while json.loads(urllib.request.urlopen(f"{url}/api/status").read())["model"]["state"] != "ready":
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(180_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def click_at(page, fx: float, fy: float, button: str = "left") -> None:
    """Click the image at a fraction of its width and height."""
    box = page.locator("#prompt-canvas").bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"], button=button)


def hover_at(page, fx: float, fy: float) -> None:
    box = page.locator("#prompt-canvas").bounding_box()
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    box = page.locator("#prompt-canvas").bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
    page.mouse.up()


def wait_idle(page) -> None:
    page.wait_for_selector("body:not(.working)")


def download(page, fmt: str, dest: Path) -> Path:
    with page.expect_download() as info:
        page.click(f'#exports a[data-fmt="{fmt}"]')
    info.value.save_as(dest / info.value.suggested_filename)
    return dest / info.value.suggested_filename


def test_image_click_mask_box_undo_export(studio, page, samples_dir, tmp_path):
    page.goto(studio)
    page.wait_for_selector("#model-pill.ready")
    page.wait_for_selector("#gallery .sample >> nth=6")  # the gallery loads on its own
    assert page.locator("#gallery .sample").count() == 7
    assert page.locator("#concept-text").is_disabled() and "SAM 3" in page.text_content("#concept-reason")
    shot(page, "image-0-start")

    page.set_input_files("#file-input", str(samples_dir / "images" / "dog.jpg"))
    page.wait_for_selector("#canvas-wrap:not([hidden])")
    assert page.input_value("#project-name") == "dog.jpg"
    shot(page, "image-1-uploaded")

    previews = []
    page.on("request", lambda r: r.url.endswith("/preview") and previews.append(r.url))
    hover_at(page, 0.45, 0.65)  # the mask a click there would give, before the click
    page.wait_for_function(f"({COUNT_MASK_PIXELS})('preview-canvas') > 0")
    shown = page.evaluate(f"({COUNT_MASK_PIXELS})('preview-canvas')")
    assert page.evaluate(COUNT_MASK_PIXELS) == 0 and page.locator("#objects li").count() == 0  # nothing stored
    shot(page, "image-2-hover-preview")

    click_at(page, 0.45, 0.65)
    page.wait_for_function(f"({COUNT_MASK_PIXELS})() > 0")
    wait_idle(page)
    assert page.locator("#objects li").count() == 1 and page.locator("#candidates button").count() == 3
    assert page.evaluate(COUNT_MASK_PIXELS) == shown  # the click gave the mask previewed
    assert page.evaluate(f"({COUNT_MASK_PIXELS})('preview-canvas')") == 0
    assert "128,0,0" in page.evaluate(MASK_COLOURS)  # object 1's colour, as in the exports
    shot(page, "image-2-click-mask")

    hover_at(page, 0.6, 0.4)  # now the object's click plus this one
    page.wait_for_function(f"({COUNT_MASK_PIXELS})('preview-canvas') > 0")
    with page.expect_request(lambda r: r.url.endswith("/preview") and '"positive":false' in (r.post_data or "")):
        page.keyboard.press("n")  # another tool: asked again where the pointer is
    page.keyboard.press("p")
    wait_idle(page)

    page.keyboard.press("h")  # previews off: moving over the image asks for none
    page.wait_for_selector("#preview-toggle[aria-pressed=false]")
    asked = len(previews)
    hover_at(page, 0.3, 0.3)
    hover_at(page, 0.35, 0.4)
    page.wait_for_timeout(300)
    assert len(previews) == asked and page.evaluate(f"({COUNT_MASK_PIXELS})('preview-canvas')") == 0

    page.keyboard.press("3")  # the third candidate
    page.wait_for_function("document.querySelectorAll('#candidates button')[2].classList.contains('chosen')")
    wait_idle(page)

    page.keyboard.press("o")  # a second object, drawn with a box
    page.keyboard.press("b")
    page.wait_for_selector("#objects li >> nth=1")
    drag(page, (0.55, 0.1), (0.95, 0.8))
    page.wait_for_function(f"({MASK_COLOURS})().includes('0,128,0')")
    wait_idle(page)
    shot(page, "image-3-second-object-box")

    page.keyboard.press("z")  # undo the box: object 2 has no mask any more
    page.wait_for_function(f"!({MASK_COLOURS})().includes('0,128,0')")
    wait_idle(page)

    page.click('#objects li[data-obj="1"]')
    path = download(page, "mask.png", tmp_path)
    assert path.name == "dog_obj1_mask.png"
    exported = np.asarray(Image.open(path))
    assert exported.shape == (534, 800) and exported.max() == 255
    shown = page.evaluate(COUNT_MASK_PIXELS)
    assert abs(int((exported > 0).sum()) - shown) <= 0.02 * shown  # the PNG holds the mask the canvas shows
    shot(page, "image-4-exported")


def test_video_prompt_track_scrub_export(studio, page, samples_dir, tmp_path):
    clip = clip_from(samples_dir / "videos" / "bedroom.mp4", tmp_path / "bedroom-3.mp4", frames=3)
    page.goto(studio)
    page.wait_for_selector("#model-pill.ready")
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("#video-panel:not([hidden])")
    page.wait_for_selector("#filmstrip button >> nth=2")
    assert page.text_content("#frame-label") == "1 / 3"
    shot(page, "video-0-uploaded")

    click_at(page, 0.5, 0.5)
    page.wait_for_function(f"({COUNT_MASK_PIXELS})() > 0")
    wait_idle(page)
    shot(page, "video-1-prompt")

    page.keyboard.press("Space")  # track both ways
    page.wait_for_selector("#track-cancel:not([hidden])")
    page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('Tracked')")
    assert "Tracked 3 frames" in page.text_content("#progress-text")  # forward 0, 1, 2 (nothing before 0)
    shot(page, "video-2-tracked")

    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('frame-label').textContent === '2 / 3'")
    page.wait_for_function(f"({COUNT_MASK_PIXELS})() > 0")
    shot(page, "video-3-scrubbed-frame-2")
    page.click("#filmstrip button >> nth=2")
    page.wait_for_function("document.getElementById('frame-label').textContent === '3 / 3'")
    page.wait_for_function(f"({COUNT_MASK_PIXELS})() > 0")
    assert page.locator("#objects li small").text_content() == "3 fr"
    shot(page, "video-4-scrubbed-frame-3")

    davis = download(page, "davis.zip", tmp_path)
    with zipfile.ZipFile(davis) as z:
        assert z.namelist() == ["00000.png", "00001.png", "00002.png"]
        assert Image.open(io.BytesIO(z.read("00002.png"))).mode == "P"
    mp4 = download(page, "overlay.mp4", tmp_path)
    with av.open(str(mp4)) as video:
        assert sum(1 for _ in video.decode(video=0)) == 3
    shot(page, "video-5-exported")


def test_missing_weights_page(browser, tmp_path):
    """No weights and no download: the page says which file to download and where, no trace."""
    server, url = _serve(tmp_path, "--model", "sam2.1-tiny", "--no-download")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(url)
        page.wait_for_selector("#model-banner:not([hidden])", timeout=60_000)
        assert page.text_content("#model-download-url").endswith("/sam2.1_hiera_tiny.pt")
        save_as = page.text_content("#model-save-as")
        assert save_as == str(tmp_path / "home" / "checkpoints" / "sam2.1_hiera_tiny.pt")
        assert "Traceback" not in page.content()
        shot(page, "no-weights")
        page.close()
    finally:
        server.terminate()
        server.wait(30)
