"""Headless Chromium for the page tests: Debian's `chromium` (installed by `make setup`), driven by Playwright."""

import os
import shutil

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_SECONDS = 120  # torch and gradio imports on a loaded 2-core machine
