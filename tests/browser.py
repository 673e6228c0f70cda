"""A headless Chromium page for the browser tests (Debian's `chromium`, driven by Playwright), and where
their screenshots are kept for a person to look at (``tests/artefacts/``, git-ignored)."""

from contextlib import contextmanager
from pathlib import Path

import pytest

from vitune.evaluation.pdf import CHROMIUM_ARGS, find_chromium

CHROMIUM = find_chromium()
STARTUP_SECONDS = 120  # a served page: torch and gradio imports on a loaded 2-core machine
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable found")


@contextmanager
def chromium_page(**options):
    """A fresh page of a headless Chromium (``options`` go to ``new_context``), closed on exit."""
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_context(**options).new_page()
        finally:
            browser.close()
