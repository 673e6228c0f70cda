"""``vitune report --pdf``: ``report.pdf`` printed from ``report.html`` by headless Chromium.

The same HTML a reader opens is printed, so the two never disagree. Printing is Chromium's own
(``Page.printToPDF``, driven by Playwright's ``page.pdf``): the system ``chromium`` that ``make
setup`` installs, found on the PATH; Playwright downloads no browser. WeasyPrint was the other
maintained choice, but it is a second layout engine with its own CSS subset, while Chromium lays the
page out exactly as the browser test sees it. The report's print stylesheet starts each section on a
new page and keeps figures and tables whole (``break-inside: avoid``); every collapsed ``<details>``
is opened before printing, so the PDF holds everything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vitune.errors import UserError
from vitune.storage.atomic import write_atomic

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_MARGIN = {"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"}
LOAD_TIMEOUT_MS = 120_000  # a report with many embedded images on a busy 2-core machine


def find_chromium() -> str | None:
    """The Chromium executable: ``VITUNE_CHROMIUM`` when set, else the first of :data:`CHROMIUM_NAMES` on the PATH."""
    chosen = os.environ.get("VITUNE_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_printer():
    """Playwright's sync API and the Chromium executable, or a UserError that says what to install."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        raise UserError("--pdf prints with Playwright, which is not installed: pip install 'vitune[pdf]'") from exc
    executable = find_chromium()
    if executable is None:
        raise UserError("--pdf prints with Chromium and none was found: install it (apt-get install chromium) "
                        "or set VITUNE_CHROMIUM to its executable")
    return sync_playwright, Error, executable


def print_pdf(html_path: Path | str, pdf_path: Path | str) -> Path:
    """Print the page ``html_path`` to ``pdf_path`` (A4, backgrounds kept, every ``<details>`` open); return it."""
    sync_playwright, PlaywrightError, executable = require_printer()
    html_path = Path(html_path).resolve()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                # the report is self-contained: it asks for nothing outside its own file
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                           else route.abort())
                page.goto(html_path.as_uri(), timeout=LOAD_TIMEOUT_MS)
                page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
                document = page.pdf(format="A4", print_background=True, margin=PAGE_MARGIN)
            finally:
                browser.close()
    except PlaywrightError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"Chromium ({executable}) could not print {html_path.name}: {first_line}") from exc
    return write_atomic(pdf_path, document)
