"""`vitune serve RUN_DIR` as its own process, its page driven by a real headless Chromium (Playwright).

Chromium is Debian's `chromium` package (`make setup` installs it); Playwright only drives it, it
downloads no browser. The test skips only when no chromium executable can be found.
"""

import json
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from browser import ARTEFACTS, STARTUP_SECONDS, chromium_page, needs_chromium
from PIL import Image
from tiny_run import tiny_run_copy

THRESHOLDS = {"a": 0.3, "b": 0.5, "c": 0.7}

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_vit):
    """A `vitune serve` process on a free 127.0.0.1 port (--port 0): its base URL."""
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("browser") / "run")
    (run_dir / "thresholds.json").write_text(json.dumps({"thresholds": THRESHOLDS}))
    command = [sys.executable, "-m", "vitune", "serve", str(run_dir), "--port", "0", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = process.stdout.readline()  # "vitune serve: http://127.0.0.1:PORT/ (run ...)" once it listens
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"vitune serve did not come up: {line}{process.stdout.read() if process.poll() else ''}"
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def uploads(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for name, size in (("chest1.png", (48, 40)), ("chest2.png", (32, 32))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    return paths, tmp_path / "notes.txt"


def test_page_renders_in_chromium_and_shows_the_api_scores(server, uploads):
    images, text_file = uploads
    expected = {p.name: httpx.post(server + "v1/predict", files={"image": (p.name, p.read_bytes())}).json()
                for p in images}
    outside = []
    with chromium_page() as page:
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                   else (outside.append(route.request.url), route.abort()))
        page.goto(server, timeout=STARTUP_SECONDS * 1000)
        page.wait_for_selector("#vitune-upload input[type=file]", state="attached", timeout=60_000)
        assert page.title() == "vitune: run"
        page.set_input_files("#vitune-upload input[type=file]", [*map(str, images), str(text_file)])
        page.wait_for_function("document.querySelectorAll('#vitune-results .vt-result').length === 3",
                               timeout=60_000)
        shown = {name: _chart(page, name) for name in expected}
        refusal = page.inner_text("#vitune-results .vt-bad")
        page.get_by_role("tab", name="Model card").click()
        card = page.inner_text("#vitune-metrics")
    for name, body in expected.items():
        ranked = sorted(body["scores"].items(), key=lambda item: -item[1])
        assert shown[name]["rows"] == [[label, f"{score:.4f}", f"threshold {THRESHOLDS[label]:.2f}"]
                                       for label, score in ranked]
        assert shown[name]["decision"] == "predicted: " + (", ".join(body["predicted"]) or "none above its threshold")
        assert shown[name]["on"] == sorted(body["predicted"])
    assert "notes.txt" in refusal and "not scored: unreadable image: not a recognised image format" in refusal
    assert "Per-label results" in card and "roc_auc" in card
    assert outside == []  # the page asks nothing of any other host


def _chart(page, name: str) -> dict:
    section = page.locator(f'#vitune-results .vt-result[data-file="{name}"]')
    rows = [[row.locator(part).inner_text().strip() for part in (".vt-label", ".vt-score", ".vt-cutoff")]
            for row in section.locator(".vt-row").all()]
    chosen = sorted(row.get_attribute("data-label") for row in section.locator(".vt-row.vt-on").all())
    return {"rows": rows, "decision": section.locator(".vt-decision").inner_text().strip(), "on": chosen}


def test_serve_keeps_serving_after_bad_requests(server):
    text = httpx.post(server + "v1/predict", files={"image": ("notes.txt", b"hello")})
    assert text.status_code == 422 and text.json()["error"].startswith("unreadable image")
    start = time.perf_counter()
    assert httpx.get(server + "healthz").json()["status"] == "ok"
    assert time.perf_counter() - start < 5


def test_an_example_click_shows_its_scores(server):
    with chromium_page(viewport={"width": 1280, "height": 1000}) as page:
        page.goto(server, timeout=STARTUP_SECONDS * 1000)
        examples = page.locator("#vitune-examples button")
        examples.first.wait_for(timeout=60_000)
        captions = [text.strip() for text in examples.all_inner_texts()]
        examples.first.click()
        page.wait_for_selector("#vitune-results .vt-result", timeout=60_000)
        result = page.locator("#vitune-results .vt-result").first
        scores = [float(text) for text in result.locator(".vt-score").all_inner_texts()]
        page.screenshot(path=str(ARTEFACTS / "app-example.png"), full_page=True)
    print(f"screenshot kept at {ARTEFACTS / 'app-example.png'}")
    assert 2 <= len(captions) <= 6 and captions[0].startswith("positive for ")
    assert len({caption.split(" (")[0] for caption in captions}) >= 2  # positives of different labels
    assert len(scores) == len(THRESHOLDS) and all(0.0 <= score <= 1.0 for score in scores)
    assert scores == sorted(scores, reverse=True)
