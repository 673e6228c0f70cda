"""`vitune report --pdf` and report.html as Chromium renders it: readable overlays, working anchors, a PDF.

Screenshots and the PDF are kept under ``tests/artefacts/`` (git-ignored) for a person to look at.
"""

import unicodedata

import pytest
from browser import ARTEFACTS, chromium_page, needs_chromium
from tiny_run import run_cli, tiny_run_copy

from vitune.config import ReportConfig
from vitune.errors import UserError
from vitune.evaluation.pdf import print_pdf
from vitune.evaluation.report import SECTIONS, anchor, build_report
from vitune.explain.overlay import MIN_WIDTH


@pytest.fixture(scope="module")
def printed(tmp_path_factory, tiny_vit):
    """A tiny multi-label run with `vitune report RUN_DIR --pdf` written: the RUN_DIR."""
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("pdf") / "run")
    build_report(ReportConfig(run=run_dir, pdf=True))
    return run_dir


@pytest.mark.slow
@needs_chromium
def test_pdf_pages_start_at_sections_and_the_first_names_the_run(printed):
    from pypdf import PdfReader

    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / "report.pdf").write_bytes((printed / "report.pdf").read_bytes())
    print(f"PDF kept at {ARTEFACTS / 'report.pdf'}")
    # NFKC: Chromium's fonts set "fi" as one ligature glyph
    pages = [unicodedata.normalize("NFKC", page.extract_text()) for page in PdfReader(printed / "report.pdf").pages]
    first = pages[0]
    assert "vitune report: run" in first and "Contents" in first
    assert "tiny-vit0 (local checkpoint), ViTForImageClassification at 32 px" in first
    assert "CPU, 2 cores (x86_64)" in first and "Data" not in first.split("Contents")[0]
    openings = [text.strip().splitlines()[0] for text in pages[1:] if text.strip()]
    assert [title for title in openings if title in SECTIONS] == list(SECTIONS)  # each section on a new page
    assert len(pages) >= 1 + len(SECTIONS)
    assert "config.yaml" in "".join(pages) and "lr: 0.003" in "".join(pages)  # collapsed <details> printed open


@pytest.mark.slow
@needs_chromium
def test_report_in_chromium_has_wide_overlays_and_working_anchors(printed):
    with chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.goto((printed / "report.html").as_uri())
        widths = page.eval_on_selector_all("#where-the-model-looks img",
                                           "images => images.map(image => image.getBoundingClientRect().width)")
        landed = {}
        for name in SECTIONS:
            page.click(f'nav.toc a[href="#{anchor(name)}"]')
            page.wait_for_function(f"location.hash === '#{anchor(name)}'")
            landed[name] = page.eval_on_selector(f"#{anchor(name)}", "section => section.getBoundingClientRect().top")
        page.click('nav.toc a[href="#where-the-model-looks"]')
        page.screenshot(path=str(ARTEFACTS / "report-explanations.png"))
    print(f"screenshot kept at {ARTEFACTS / 'report-explanations.png'}")
    assert len(widths) == 12 and min(widths) >= 2 * MIN_WIDTH  # the image and its overlay, each >= 224 px
    scrolled = {name: top for name, top in landed.items() if name not in ("Heads", "Configuration")}
    assert all(abs(top) <= 1 for top in scrolled.values()), landed  # the short last sections cannot reach the top
    assert all(top >= -1 for top in landed.values())


def test_a_missing_chromium_is_a_user_error(tmp_path, monkeypatch):
    page = tmp_path / "report.html"
    page.write_text("<!DOCTYPE html><title>t</title><p>hello</p>")
    monkeypatch.setenv("VITUNE_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(UserError, match="--pdf prints with Chromium and none was found"):
        print_pdf(page, tmp_path / "report.pdf")
    assert not (tmp_path / "report.pdf").exists()


def test_cli_report_pdf_without_chromium_exits_2(tmp_path, tmp_path_factory, tiny_vit, monkeypatch, capsys):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    monkeypatch.setenv("VITUNE_CHROMIUM", str(tmp_path / "no-such-chromium"))
    code, _, err = run_cli(monkeypatch, capsys, "report", run_dir, "--pdf")
    assert code == 2 and err.startswith("error: --pdf prints with Chromium") and "Traceback" not in err
    assert not (run_dir / "report.html").exists()  # checked before anything is written
