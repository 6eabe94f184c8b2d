"""The draw-a-digit page in a real browser: headless Chromium from the system's packages, driven by Selenium.

It draws a real MNIST test digit on the canvas with pointer events, uploads,
drops and pastes image files, checks the digits the page shows, and saves a
screenshot of the page to docs/serve_page.png. It draws ambiguous pictures (two
test digits over each other) until one is read below the sure probability, checks
that the page says "Not sure", and saves that page to docs/serve_page_not_sure.png.
It draws pictures that hold no digit (letters, shapes, scribbles), checks that the
page declines those the model declines, and saves one to docs/serve_page_not_a_digit.png.
Skipped only where Chromium is not installed.
"""

from __future__ import annotations

import base64
import functools
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import REPO, png_bytes

from mnist_tf.core.types import SURE
from mnist_tf.serve.process import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


SCREENSHOT = REPO / "docs" / "serve_page.png"


NOT_SURE_SCREENSHOT = REPO / "docs" / "serve_page_not_sure.png"


NOT_A_DIGIT_SCREENSHOT = REPO / "docs" / "serve_page_not_a_digit.png"


PAD = 280  # the canvas' size in CSS pixels: 10 per MNIST pixel


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="chromium is not installed (Debian: apt-get install -y chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def digits(real_source):
    """The first 200 MNIST test images and labels."""
    from mnist_tf.data import pipeline

    return pipeline.arrays("test[:200]", real_source)


@pytest.fixture(scope="module")
def served(trained_run, digits, tmp_path_factory):
    """The trained model exported and served: (server, SavedModel version folder)."""
    from mnist_tf.export.saved_model import export_saved_model

    out = tmp_path_factory.mktemp("browser_export")
    version = export_saved_model(trained_run / "model.keras", out, digits[0][:3])
    server = ServerProcess(version.parent)
    yield server, version
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1100,960",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def thin(ink: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: the one-pixel-wide skeleton of a boolean image, the pen's path."""
    ink = np.pad(ink.copy(), 1)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            remove = []
            for y, x in zip(*np.nonzero(ink)):
                n = [
                    ink[y - 1, x],
                    ink[y - 1, x + 1],
                    ink[y, x + 1],
                    ink[y + 1, x + 1],
                    ink[y + 1, x],
                    ink[y + 1, x - 1],
                    ink[y, x - 1],
                    ink[y - 1, x - 1],
                ]
                transitions = sum(not n[i] and n[(i + 1) % 8] for i in range(8))
                if not (2 <= sum(n) <= 6 and transitions == 1):
                    continue
                if step == 0 and not (n[0] and n[2] and n[4]) and not (n[2] and n[4] and n[6]):
                    remove.append((y, x))
                if step == 1 and not (n[0] and n[2] and n[6]) and not (n[0] and n[4] and n[6]):
                    remove.append((y, x))
            for y, x in remove:
                ink[y, x] = False
            changed |= bool(remove)
    return ink[1:-1, 1:-1]


def strokes(image: np.ndarray, threshold: int = 128) -> list[list[tuple[int, int]]]:
    """The digit as pen strokes on the 280-pixel pad: polylines along its skeleton, 10 pad pixels per MNIST pixel."""
    skeleton = thin(image.reshape(28, 28) >= threshold)
    left = {(int(y), int(x)) for y, x in zip(*np.nonzero(skeleton))}
    done: set[tuple[int, int]] = set()

    def neighbours(p):
        return [
            (p[0] + dy, p[1] + dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if (dy or dx) and (p[0] + dy, p[1] + dx) in left | done
        ]

    lines = []
    while left:
        # Start at an end of a line where there is one, joined to what is drawn already.
        start = min(left, key=lambda p: (len([q for q in neighbours(p) if q in left]) != 1, p))
        path = [q for q in neighbours(start) if q in done][:1] + [start]
        left.discard(start)
        while nxt := [q for q in neighbours(path[-1]) if q in left]:
            path.append(nxt[0])
            left.discard(nxt[0])
        done.update(path)
        lines.append([(x * 10 + 5, y * 10 + 5) for y, x in path])
    return lines


def draw(driver, image: np.ndarray) -> None:
    """Draws `image`'s strokes on the pad with a pen's pointer events."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    actions = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_PEN, "pen"), duration=0)
    for line in strokes(image):  # offsets from the pad's centre
        (x, y), rest = line[0], line[1:]
        actions.pointer_action.move_to(pad, x - PAD // 2, y - PAD // 2).pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(pad, x - PAD // 2, y - PAD // 2)
        actions.pointer_action.pointer_up()
    actions.perform()


def shown(driver, timeout: float = 60) -> str:
    """The digit the page shows once the answer to its latest request is in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("answered", "refused")
    )
    return driver.find_element(By.ID, "digit").text


# A PNG (base64) handed to the page as a file dropped on the pad, or pasted, as a browser does.
DROP_OR_PASTE = """
const [b64, how] = arguments;
const file = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], "digit.png", {type: "image/png"});
const files = new DataTransfer();
files.items.add(file);
if (how === "drop") {
  document.getElementById("pad").dispatchEvent(
    new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));
} else {
  document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: files, bubbles: true, cancelable: true}));
}
"""


@functools.cache
def _serving_bytes(version: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(version)).signatures["serving_bytes"]


def serving_bytes_class(version: Path, data: bytes) -> int:
    """The class the SavedModel itself gives these bytes, called in this process."""
    return serving_bytes_answer(version, data)[0]


def serving_bytes_answer(version: Path, data: bytes) -> tuple[int, float]:
    """The class the SavedModel itself gives these bytes and its (calibrated) probability, called in this process."""
    import tensorflow as tf

    outputs = _serving_bytes(version)(image_bytes=tf.constant([data]))
    class_id = int(outputs["class_id"].numpy()[0])
    return class_id, float(outputs["probabilities"].numpy()[0].max())


def test_draw_upload_and_screenshot(browser, served, digits, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, version = served
    images, labels = digits
    browser.get(server.url + "/")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
    assert browser.find_element(By.ID, "digit").text == "?"

    # Upload: a test digit's PNG, which the model itself reads correctly and surely, is shown as that digit.
    def read_surely(i: int) -> bool:
        class_id, probability = serving_bytes_answer(version, png_bytes(images[i]))
        return class_id == labels[i] and probability >= SURE

    upload = next(i for i in range(len(labels)) if labels[i] != 3 and read_surely(i))
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(images[upload]))
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert shown(browser) == str(labels[upload])
    assert browser.find_element(By.ID, "confidence").text.endswith(f"sure it is a {labels[upload]}.")

    # Drop, then paste: dark ink on light paper this time, read as the same digit by the model's preprocessing.
    for how in ("drop", "paste"):
        dark = next(
            i
            for i in range(upload + 1, len(labels))
            if labels[i] != labels[upload] and serving_bytes_class(version, png_bytes(255 - images[i])) == labels[i]
        )
        browser.execute_script(DROP_OR_PASTE, base64.b64encode(png_bytes(255 - images[dark])).decode(), how)
        assert shown(browser) == str(labels[dark]), how
        upload = dark

    # A file that is no image: the page says so and keeps working.
    (tmp_path / "notes.txt").write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
    assert "not an image" in browser.find_element(By.ID, "status").text

    # Keyboard: Escape on the pad clears it.
    browser.find_element(By.ID, "pad").send_keys(Keys.ESCAPE)
    assert browser.find_element(By.ID, "digit").text == "?"

    # Draw: the first test 3, stroke by stroke, as large as MNIST draws it (20 of 28 pixels, ~200 on the pad).
    three = int(np.flatnonzero(labels == 3)[0])
    draw(browser, images[three])
    assert shown(browser) == "3", browser.find_element(By.ID, "status").text
    metadata = httpx.get(server.url + "/v1/models/mnist/metadata").json()
    outputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_bytes"]["outputs"]
    # The 28x28 the model saw, shown where the model returns it.
    assert browser.find_element(By.ID, "seen-figure").is_displayed() == ("image" in outputs)
    if "image" in outputs:
        assert (
            browser.execute_script(
                "const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;"
                "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;"
            )
            > 0
        )

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("document.activeElement.blur()")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))


# Pairs of digits that look alike in parts: drawn over each other, a fair test of a model's doubt.
LOOKALIKES = [(4, 9), (3, 8), (1, 7), (5, 6), (3, 5), (7, 9), (0, 6), (2, 7), (5, 8), (4, 1)]


def test_an_ambiguous_drawing_is_shown_as_not_sure(browser, served, digits):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, version = served
    images, labels = digits
    browser.get(server.url + "/")
    pad = browser.find_element(By.ID, "pad")
    for a, b in LOOKALIKES:
        pad.send_keys(Keys.ESCAPE)
        overlay = np.maximum(images[np.flatnonzero(labels == a)[0]], images[np.flatnonzero(labels == b)[0]])
        draw(browser, overlay)
        digit = shown(browser)
        # What the page sent: the pad as a PNG; the SavedModel's own answer to it, in this process.
        data_url = browser.execute_script("return document.getElementById('pad').toDataURL('image/png')")
        sent = base64.b64decode(data_url.split(",")[1])
        class_id, probability = serving_bytes_answer(version, sent)
        if class_id < 0:  # declined as not a digit: `test_a_drawing_that_is_no_digit_is_declined`
            continue
        assert digit == str(class_id)
        text = browser.find_element(By.ID, "confidence").text
        if probability >= SURE:
            assert text.endswith(f"% sure it is a {class_id}.") and "Not sure" not in text, text
            continue
        match = re.fullmatch(r"Not sure: perhaps a (\S+) \(([0-9.]+)%\)\.", text)
        assert match, text
        assert match.group(1) == str(class_id) and abs(float(match.group(2)) - 100 * probability) < 0.051
        break
    else:
        pytest.fail(f"none of the {len(LOOKALIKES)} overlaid pairs was read below {SURE:.0%}")
    browser.execute_script("document.activeElement.blur()")
    assert browser.save_screenshot(str(NOT_SURE_SCREENSHOT))


@pytest.fixture(scope="module")
def served_quick(quick_run, digits, tmp_path_factory):
    """The quick model (default recipe: trained with non-digits, so it declines) exported and served."""
    from mnist_tf.export.saved_model import export_saved_model

    out = tmp_path_factory.mktemp("browser_quick_export")
    version = export_saved_model(quick_run[0] / "model.keras", out, digits[0][:3])
    server = ServerProcess(version.parent)
    yield server, version
    server.stop()


def test_a_drawing_that_is_no_digit_is_declined(browser, served_quick):
    import tensorflow as tf
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from mnist_tf.data.non_digits import non_digit_images

    server, version = served_quick
    browser.get(server.url + "/")
    pad = browser.find_element(By.ID, "pad")
    declined = 0
    for picture in non_digit_images(12, seed=2024):  # a seed no training run uses (runs use their own)
        pad.send_keys(Keys.ESCAPE)
        draw(browser, picture)
        digit = shown(browser)
        data_url = browser.execute_script("return document.getElementById('pad').toDataURL('image/png')")
        sent = base64.b64decode(data_url.split(",")[1])
        answer = _serving_bytes(version)(image_bytes=tf.constant([sent]))  # the SavedModel's own answer
        text = browser.find_element(By.ID, "confidence").text
        if bool(answer["not_a_digit"].numpy()[0]):
            assert digit == "–" and text == "Not a digit: that does not look like any digit 0-9.", text
            declined += 1
            if declined == 1:
                browser.execute_script("document.activeElement.blur()")
                assert browser.save_screenshot(str(NOT_A_DIGIT_SCREENSHOT))
        else:
            assert digit == str(int(answer["class_id"].numpy()[0])) or answer["blank"].numpy()[0], (digit, text)
    # The served model was trained with non-digits (other ones: another seed): most drawings are declined.
    assert declined >= 6, f"only {declined} of 12 drawings that hold no digit were declined"
