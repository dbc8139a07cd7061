"""The upload page in a real headless Chromium: choose a file, submit, read the verdict.

Runs Debian's `chromium` through Playwright (no browser download). Set REALFAKE_SCREENSHOT and
REALFAKE_PHONE_SCREENSHOT to paths to also save the result page there, on a desktop and on a
390-pixel-wide phone (the README's pictures), and REALFAKE_BROWSER_MODEL to serve another model
than the test session's untrained one.
"""

import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from realfake.app.webapp import EXTENSION, create_app
from realfake.app.webpage import DECLARED_AI_HEADLINE, VERDICTS
from realfake.core.images import load_rgb
from realfake.inference.classifier import Prediction

pytestmark = pytest.mark.end_to_end

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium, or a skip saying what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-deps` installs Debian's chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(request):
    """(base URL, app): the app on a free loopback port, served from a thread."""
    from werkzeug.serving import make_server

    model = os.environ.get("REALFAKE_BROWSER_MODEL")
    flask_app = create_app({"MODEL_PATH": model}) if model else request.getfixturevalue("app")
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", flask_app
    server.shutdown()
    thread.join(timeout=10)


def scene(path: Path) -> Path:
    """A small drawn landscape: something to look at in the screenshot, from no dataset."""
    image = Image.new("RGB", (256, 256))
    draw = ImageDraw.Draw(image)
    for row in range(256):
        draw.line([(0, row), (255, row)], fill=(90 + row // 4, 150 + row // 5, 235 - row // 3))
    draw.ellipse([170, 30, 225, 85], fill=(255, 214, 90))
    draw.polygon(
        [(0, 200), (70, 120), (150, 190), (210, 140), (256, 180), (256, 256), (0, 256)],
        fill=(60, 120, 70),
    )
    image.save(path)
    return path


def noise(path: Path) -> Path:
    pixels = np.random.default_rng(5).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def signed_scene(path: Path) -> Path:
    """The drawn landscape as a JPEG whose content credentials, signed by a throwaway test CA,
    declare generative AI."""
    from provenance_fixtures import encode_as_editor, make_signer, manifest, sign

    with Image.open(scene(path.with_name("unsigned.png"))) as image:
        pixels = np.asarray(image.convert("RGB"))
    definition = manifest("trainedAlgorithmicMedia", tool="Example Image Service")
    signed = sign(encode_as_editor(pixels, "JPEG"), "image/jpeg", definition, make_signer())
    path.write_bytes(signed)
    return path


def with_generation_settings(path: Path) -> Path:
    """A PNG whose text chunk holds generation settings with one long unbroken prompt word, as
    hostile as layout goes."""
    from provenance_fixtures import png_with_text

    pixels = np.random.default_rng(6).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    settings = "x" * 400 + "\nSteps: 20, Sampler: Euler, Model: " + "y" * 150
    path.write_bytes(png_with_text(pixels, {"parameters": settings}))
    return path


def expected_probability(flask_app, path: Path) -> float:
    """P(Fake) from the Keras model itself, averaged with the mirror image where the card asks."""
    from realfake.inference.classifier import probability_fake

    predictor = flask_app.extensions[EXTENSION].get()
    pixels = load_rgb(path, predictor.image_size)[None]
    return float(
        probability_fake(predictor.model, pixels, predictor.test_time_flip, batch_size=1)[0]
    )


def offsite_requests(page, base_url: str) -> list[str]:
    """Block and record every request the page makes to anywhere but the app."""
    blocked: list[str] = []

    def handle(route):
        url = route.request.url
        if url.startswith(base_url) or url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", handle)
    return blocked


def read_results(page) -> list[dict]:
    results = []
    for card in page.locator("article.result").all():
        shown = card.locator(".probability").inner_text()
        results.append(
            {
                "filename": card.locator(".filename").inner_text(),
                "verdict": card.locator(".verdict").inner_text(),
                "percent": float(re.fullmatch(r"([0-9.]+)%", shown).group(1)),
                "threshold": card.locator(".threshold-value").inner_text(),
                "heatmap_width": card.locator("img.heatmap").evaluate("img => img.naturalWidth"),
            }
        )
    return results


def failed_requests(page) -> list[str]:
    """Record every response of the page with an error status (a missing icon, a broken link)."""
    failures: list[str] = []
    page.on(
        "response",
        lambda response: (
            failures.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    return failures


def check_against_model(results, flask_app, files):
    predictor = flask_app.extensions[EXTENSION].get()
    threshold = predictor.threshold
    assert [result["filename"] for result in results] == [path.name for path in files]
    for result, path in zip(results, files, strict=True):
        probability = expected_probability(flask_app, path)
        assert result["percent"] == pytest.approx(100 * probability, abs=0.051)
        band = predictor.classifier.uncertain_band
        verdict = Prediction(probability, 1 - probability, threshold, band).verdict
        assert result["verdict"] == VERDICTS[verdict]
        assert result["threshold"] == f"{100 * threshold:.1f}%"
        assert result["heatmap_width"] == 256  # the inline PNG loaded under the page's policy


def test_upload_through_the_form(browser, served, tmp_path):
    base_url, flask_app = served
    files = [scene(tmp_path / "landscape.png"), noise(tmp_path / "noise.jpg")]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    blocked = offsite_requests(page, base_url)
    failures = failed_requests(page)
    page.goto(base_url + "/")
    assert page.locator("h1").inner_text() == "realfake"
    page.set_input_files("#file-input", [str(path) for path in files])
    page.click("#submit-button")
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, files)
    assert "About this model" in page.locator("#about").inner_text()
    screenshot = tmp_path / "result.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with Image.open(screenshot) as image:
        assert image.width == 1100 and image.height >= 900
    if os.environ.get("REALFAKE_SCREENSHOT"):
        page.screenshot(path=os.environ["REALFAKE_SCREENSHOT"], full_page=True)
    page.close()
    assert blocked == []
    assert failures == []  # the favicon included


def test_signed_image_is_headlined_by_its_content_credentials(browser, served, tmp_path):
    base_url, flask_app = served
    files = [signed_scene(tmp_path / "signed.jpg"), noise(tmp_path / "noise.jpg")]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(base_url + "/")
    page.set_input_files("#file-input", [str(path) for path in files])
    page.click("#submit-button")
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, files)  # the pixel verdicts stay
    signed_card, plain_card = page.locator("article.result").all()
    assert signed_card.locator(".declared-headline").inner_text() == DECLARED_AI_HEADLINE
    assert signed_card.locator(".declared-headline").is_visible()
    panel = signed_card.locator(".provenance")
    assert panel.is_visible() and "signed content credentials (C2PA)" in panel.inner_text()
    assert plain_card.locator(".declared-headline").count() == 0
    assert "its absence says nothing" in plain_card.locator(".provenance").inner_text()
    page.close()


def test_upload_works_without_javascript(browser, served, tmp_path):
    base_url, flask_app = served
    files = [noise(tmp_path / "plain.jpg")]
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(base_url + "/")
    page.set_input_files("#file-input", str(files[0]))
    page.click("#submit-button")
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, files)
    context.close()


def test_dropping_a_file_submits_it(browser, served, tmp_path):
    base_url, flask_app = served
    path = noise(tmp_path / "dropped.jpg")
    page = browser.new_page()
    page.goto(base_url + "/")
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
            return transfer;
        }""",
        [path.name, list(path.read_bytes())],
    )
    with page.expect_navigation():
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, [path])
    page.close()


def test_a_non_image_gets_a_friendly_message(browser, served, tmp_path):
    base_url, _ = served
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    page = browser.new_page()
    page.goto(base_url + "/")
    page.set_input_files("#file-input", str(path))
    page.click("#submit-button")
    message = page.wait_for_selector(".file-error").inner_text()
    assert message.startswith("not an image")
    assert "Traceback" not in page.content()
    page.close()


def wide_photo(path: Path) -> Path:
    """A 640x360 landscape, wider than a phone, to check that nothing spills sideways."""
    source = scene(path.with_name("square.png"))
    with Image.open(source) as image:
        image.resize((640, 360)).save(path)
    return path


def test_on_a_phone_the_results_fit_the_screen(browser, served, tmp_path):
    base_url, flask_app = served
    files = [
        wide_photo(tmp_path / "wide_landscape.png"),
        noise(tmp_path / "noise.jpg"),
        signed_scene(tmp_path / "signed.jpg"),  # the fullest Provenance panel
        with_generation_settings(tmp_path / "settings.png"),
    ]
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page.goto(base_url + "/")
    page.set_input_files("#file-input", [str(path) for path in files])
    page.click("#submit-button")
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, files)
    # Opened, the file's claims and its prompt still fit the width.
    page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth,"
        " Math.max(...[...document.querySelectorAll('img.heatmap')]"
        ".map((img) => img.getBoundingClientRect().right))]"
    )
    scroll_width, inner_width, heatmap_right = widths
    assert page.locator(".declared-headline").inner_text() == DECLARED_AI_HEADLINE
    assert scroll_width <= inner_width == 390
    assert heatmap_right <= inner_width  # the heatmap is whole on screen, not cut off
    if os.environ.get("REALFAKE_PHONE_SCREENSHOT"):
        page.screenshot(path=os.environ["REALFAKE_PHONE_SCREENSHOT"], full_page=True)
    page.close()


def test_pasting_an_image_submits_it(browser, served, tmp_path):
    base_url, flask_app = served
    path = scene(tmp_path / "pasted.png")
    page = browser.new_page()
    page.goto(base_url + "/")
    with page.expect_navigation():
        page.evaluate(
            """(bytes) => {
                const transfer = new DataTransfer();
                const blob = new Uint8Array(bytes);
                transfer.items.add(new File([blob], "image.png", {type: "image/png"}));
                document.dispatchEvent(
                    new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true}));
            }""",
            list(path.read_bytes()),
        )
    page.wait_for_selector("article.result .verdict")
    check_against_model(read_results(page), flask_app, [path])  # named pasted.png by the page
    page.close()


def test_an_example_is_checked_with_one_click(browser, served):
    base_url, _ = served
    page = browser.new_page()
    failures = failed_requests(page)
    page.goto(base_url + "/")
    examples = page.locator("button.example")
    assert examples.count() >= 3
    assert all(
        image.evaluate("img => img.naturalWidth") > 0
        for image in page.locator("button.example img").all()
    )
    name = examples.first.get_attribute("value")
    examples.first.click()
    page.wait_for_selector("article.result .verdict")
    assert page.locator(".filename").inner_text() == f"{name}.png"
    assert page.locator(".legend").inner_text().split() == ["less", "more", "influence"]
    page.close()
    assert failures == []
