"""The draw-a-digit page in a real browser against the real app and a real TorchServe.

Headless Chromium (Debian's package) draws with real pointer input (mouse, and touch through
the DevTools protocol), uploads files through the real file input and reads what the page shows.
The tests share one page and run in file order, like one person's visit: draw, upload, a bad
upload, the server going away and coming back; the last test checks that no key reached the
browser in anything it received during the visit.

The stroke-to-answer time is measured in the page (performance.now() from pointerup to the frame
that shows the answer, `window.lenet.timings`) and written to results/web_browser.json.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import requests

from deploy.keys import auth_headers
from project.paths import REPO_ROOT
from samples.digits import encode_png
from samples.render import render_realistic
from web.app import DEFAULT_MAX_UPLOAD_BYTES

RESULTS = REPO_ROOT / "results" / "web_browser.json"
# `LENET_WEB_SCREENSHOT=docs/web-demo.png` refreshes the README's picture.
SCREENSHOT = Path(os.environ.get("LENET_WEB_SCREENSHOT") or REPO_ROOT / "results" / "web-demo.png")
SPEED_STROKES = 20  # strokes timed for the median (10 ones, 10 sevens)
TARGET_MEDIAN_MS = 150  # the target on this machine: reported, not asserted
GENEROUS_MEDIAN_MS = 1000  # asserted: catches a debounce or a poll, never a busy host

# Strokes as a person writes them on the 280x280 pad: a digit about 190 px tall, slightly
# slanted, each stroke a polyline the pointer follows in small steps.
ONE = [[(152, 46), (149, 90), (145, 140), (141, 190), (138, 236)]]
SEVEN = [[(76, 64), (120, 60), (168, 58), (206, 57), (186, 100), (164, 146), (146, 192),
          (132, 238)]]  # fmt: skip


# --- what a person does --------------------------------------------------------------------
def _pad_points(page, stroke):
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    return [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]


def draw(page, strokes, touch: bool = False) -> None:
    """Draw `strokes` with the mouse (or a finger: DevTools touch input) without waiting."""
    cdp = page.context.new_cdp_session(page) if touch else None
    for stroke in strokes:
        points = _pad_points(page, stroke)
        if touch:
            kinds = ["touchStart"] + ["touchMove"] * (len(points) - 1)
            for kind, (x, y) in zip(kinds, points, strict=True):
                touch_point = {"x": x, "y": y}
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [touch_point]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point, steps=6)
            page.mouse.up()
    if cdp is not None:
        cdp.detach()


def answers(page) -> int:
    return page.evaluate("window.lenet.answers")


def draw_and_read(page, strokes, touch: bool = False) -> str:
    """Clear, draw, wait for the page to show the answer; the digit it shows."""
    page.click("#clear")
    before = answers(page)
    draw(page, strokes, touch)
    page.wait_for_function("n => window.lenet.answers > n", arg=before, timeout=30_000)
    return page.text_content("#digit")


def upload(page, name: str, mime: str, data: bytes) -> None:
    page.set_input_files("#upload", files=[{"name": name, "mimeType": mime, "buffer": data}])


def upload_and_read(page, name: str, mime: str, data: bytes) -> str:
    before = answers(page)
    upload(page, name, mime, data)
    page.wait_for_function("n => window.lenet.answers > n", arg=before, timeout=30_000)
    return page.text_content("#digit")


def message(page) -> tuple[str | None, str]:
    """(kind, text) of the page's message; kind None when no message is shown."""
    el = page.locator("#message")
    if el.is_hidden():
        return None, ""
    return el.get_attribute("data-kind"), el.text_content()


# --- the visit -----------------------------------------------------------------------------
def test_drawn_one_and_seven_are_read_then_cleared(page):
    assert draw_and_read(page, ONE) == "1"
    assert message(page) == (None, "")
    assert draw_and_read(page, SEVEN, touch=True) == "7"  # a finger this time
    heights = "els => els.map(e => parseFloat(e.style.height))"
    bars = page.eval_on_selector_all(".bar .fill", heights)
    assert len(bars) == 10 and max(bars) == bars[7] and bars[7] > 50
    assert page.text_content("#model-name") == "lenet"
    assert page.text_content("#model-version").startswith("v")
    assert_panels_show_the_explanation(page)
    page.screenshot(path=str(_screenshot_path()))
    page.click("#clear")
    assert page.text_content("#digit") == "?"
    assert page.is_visible("#model-input-na") and page.is_visible("#attribution-na")
    blank = page.evaluate(
        "(() => { const d = document.getElementById('pad').getContext('2d')"
        ".getImageData(0, 0, 280, 280).data; return d.every(v => v === 255); })()"
    )
    assert blank, "Clear left ink on the pad"


def test_uploaded_mnist_png_and_photo_like_jpeg_are_read(page, mnist_test, mar_path):
    images, labels = mnist_test
    index = 1  # a 2: neither of the drawn digits
    assert upload_and_read(page, "mnist.png", "image/png", encode_png(images[index])) == str(
        labels[index]
    )
    jpeg, label = _photo_like_jpeg(images, labels, mar_path)
    assert upload_and_read(page, "photo.jpg", "image/jpeg", jpeg) == str(label)
    assert message(page) == (None, "")


def test_text_file_named_png_shows_the_apis_error_and_the_page_stays_usable(page, served):
    text = b"Shopping list: milk, eggs, bread. Not a picture at all.\n" * 4
    api = requests.post(served.server.predict_url, data=text, timeout=30,
                        headers={**auth_headers(served.server.inference_token),
                                 "Content-Type": "application/octet-stream"})  # fmt: skip
    assert api.status_code == 400
    before = page.evaluate("window.lenet.refusals")
    upload(page, "notes.png", "image/png", text)
    page.wait_for_function("n => window.lenet.refusals > n", arg=before, timeout=30_000)
    kind, shown = message(page)
    assert kind == "refused"
    assert shown == f"The server refused this image: {api.json()['message']}"
    assert page.text_content("#digit") == "?"
    assert draw_and_read(page, ONE) == "1"  # still usable
    assert message(page) == (None, "")


def test_upload_over_the_size_limit_is_refused_with_the_limit_named(page):
    limit = DEFAULT_MAX_UPLOAD_BYTES
    before = page.evaluate("window.lenet.refusals")
    upload(page, "huge.png", "image/png", b"\0" * (limit + 1))
    page.wait_for_function("n => window.lenet.refusals > n", arg=before, timeout=60_000)
    kind, shown = message(page)
    assert kind == "refused"
    assert f"{limit + 1:,} bytes" in shown and f"at most {limit:,} bytes" in shown
    assert draw_and_read(page, SEVEN) == "7"


def test_server_down_is_reported_and_the_page_recovers_without_a_reload(page, served):
    page.evaluate("window.sameDocument = true")
    served.server.stop()
    try:
        page.click("#clear")
        draw(page, SEVEN)
        page.wait_for_selector("#message[data-kind=server]", timeout=30_000)
        assert "not answering" in message(page)[1]
        assert page.get_attribute("#server", "data-state") == "down"
    finally:
        served.server.start()
        served.keys()  # the restarted server wrote new keys
    # The page polls the app's health and sends the drawing again by itself.
    page.wait_for_function(
        "() => document.getElementById('digit').textContent === '7' && "
        "document.getElementById('message').hidden",
        timeout=120_000,
    )
    assert page.get_attribute("#server", "data-state") == "ready"
    assert page.evaluate("window.sameDocument === true")  # no reload happened
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert draw_and_read(page, ONE) == "1"


def test_stroke_to_answer_time(page):
    page.evaluate("window.lenet.timings.length = 0; window.lenet.phases.length = 0")
    for i in range(SPEED_STROKES):
        expected, strokes = ("1", ONE) if i % 2 == 0 else ("7", SEVEN)
        assert draw_and_read(page, strokes) == expected
    timings = page.evaluate("window.lenet.timings")
    phases = page.evaluate("window.lenet.phases")
    assert len(timings) == SPEED_STROKES
    median = statistics.median(timings)
    report = {
        "what": "pointerup -> answer painted, measured in the page with performance.now()",
        "strokes": len(timings),
        "median_ms": round(median, 1),
        "p90_ms": round(statistics.quantiles(timings, n=10)[-1], 1),
        "max_ms": round(max(timings), 1),
        "phase_medians_ms": {
            name: round(statistics.median(p[name] for p in phases), 1) for name in phases[0]
        },
        "target_median_ms": TARGET_MEDIAN_MS,
        "meets_target": median <= TARGET_MEDIAN_MS,
        "samples_ms": [round(t, 1) for t in timings],
        "cpus": os.cpu_count(),
        "chromium": page.context.browser.version if page.context.browser else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nstroke-to-answer median {median:.1f} ms over {len(timings)} strokes "
          f"(p90 {report['p90_ms']} ms) -> {RESULTS}")  # fmt: skip
    assert median < GENEROUS_MEDIAN_MS


def test_no_key_reached_the_browser(page, served):
    keys = served.keys()
    assert len(keys) >= 6, "expected the keys of two server starts"  # 3 kinds x 2 starts
    urls = [url for url, _, _ in page.received]
    assert any(url.endswith("/api/predict") for url in urls)
    assert any(url.endswith("/app.js") for url in urls)
    for url, headers, body in page.received:
        seen = body.decode("utf-8", errors="replace") + json.dumps(headers)
        for key in keys:
            assert key not in seen, f"a TorchServe key is in the response of {url}"


# --- helpers -------------------------------------------------------------------------------
# The pixels of the two panels as the browser decoded and drew them: the 28x28 input image (an
# <img> of the server's PNG) and the attribution canvas the page painted.
PANEL_PIXELS = """() => {
  const img = document.getElementById('model-input');
  const probe = document.createElement('canvas');
  probe.width = img.naturalWidth; probe.height = img.naturalHeight;
  const g = probe.getContext('2d');
  g.drawImage(img, 0, 0);
  const input = Array.from(g.getImageData(0, 0, probe.width, probe.height).data)
    .filter((_, i) => i % 4 === 0);
  const map = document.getElementById('attribution');
  const rgba = map.getContext('2d').getImageData(0, 0, map.width, map.height).data;
  const red = [], blue = [];
  for (let i = 0; i < rgba.length; i += 4) { red.push(rgba[i]); blue.push(rgba[i + 2]); }
  return {size: [img.naturalWidth, img.naturalHeight], map: [map.width, map.height],
          input, red, blue};
}"""


def assert_panels_show_the_explanation(page) -> None:
    """Both panels show real 28x28 images: the model's input is a drawn digit (some ink, mostly
    background) and the attribution map is coloured where that ink is, red somewhere."""
    assert page.is_hidden("#model-input-na") and page.is_hidden("#attribution-na")
    assert page.text_content("#explanation-note") == ""
    page.wait_for_function("() => { const i = document.getElementById('model-input');"
                           " return i.complete && i.naturalWidth > 0; }")  # fmt: skip
    pixels = page.evaluate(PANEL_PIXELS)
    assert pixels["size"] == [28, 28] and pixels["map"] == [28, 28]
    ink = np.asarray(pixels["input"]).reshape(28, 28) > 0
    assert 20 <= ink.sum() <= 28 * 28 // 2, ink.sum()
    coloured = (np.asarray(pixels["red"]) + np.asarray(pixels["blue"])).reshape(28, 28) > 0
    assert np.asarray(pixels["red"]).max() > 100
    # Integrated gradients from a blank image: no attribution where the input has no ink.
    assert not (coloured & ~ink).any()


def _screenshot_path() -> Path:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT


def _photo_like_jpeg(images, labels, mar_path) -> tuple[bytes, int]:
    """A photo-like JPEG of an MNIST test digit (samples.render) that the model reads right
    offline, through the archive's own model and preprocessing: the page must show that digit."""
    import torch

    from handler.artifact import load_torchscript
    from handler.preprocessing import preprocess

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(mar_path) as mar:
        model, _ = load_torchscript(Path(mar.extract("lenet.pt", tmp)))
    for index in range(len(labels)):
        if labels[index] in (1, 2, 7):
            continue
        data = render_realistic(images[index], np.random.default_rng(index))
        if not data.startswith(b"\xff\xd8"):  # JPEG only
            continue
        with torch.inference_mode():
            digit = int(model(torch.from_numpy(preprocess(data)[np.newaxis])).argmax())
        if digit == labels[index]:
            return data, int(labels[index])
    raise AssertionError("no photo-like JPEG the model reads right")  # pragma: no cover

