"""`vitune report`: one self-contained HTML file with every section; missing parts noted, not fatal."""

import base64
import io
import json
import os
import re

import yaml
from PIL import Image
from tiny_run import run_cli, tiny_run_copy

from vitune.config import EvaluateConfig, ReportConfig
from vitune.data.dataset_dir import DatasetInfo
from vitune.evaluation.evaluate import evaluate
from vitune.evaluation.report import SECTIONS, build_report
from vitune.evaluation.templating import fmt
from vitune.explain.overlay import GAP, colour_bar
from vitune.runtime.version import VITUNE_VERSION
from vitune.storage.layout import RunDir


def assert_self_contained(page: str) -> None:
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    links = re.findall(r'href="([^"]*)"', page)
    assert links and all(link.startswith("#") for link in links)  # the table of contents, inside the page
    assert "<link" not in page and "<script" not in page


def test_report_has_every_section_with_evaluation_and_heads(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    result = evaluate(EvaluateConfig(run=run_dir, bootstrap=100)).to_json()
    heads = {"embedding": {"dim": 32, "seconds": 0.5, "cached": False},
             "heads": {"svm": {"backend": "sklearn", "fit_seconds": 0.25, "predict_seconds": 0.01,
                               "metrics": {"roc_auc_macro": 0.8125}}}}
    (run_dir / "heads").mkdir()
    (run_dir / "heads" / "heads.json").write_text(json.dumps(heads))

    page = build_report(ReportConfig(run=run_dir)).read_text()
    assert (run_dir / "report.html").is_file()
    for name in SECTIONS:
        assert f"<h2>{name}</h2>" in page
    assert_self_contained(page)
    # sample grid, loss, lr, test ROC and PR, reliability; 2 top positives and 2 worst false positives per label
    assert page.count("data:image/png;base64,") == 6 + 3 * 4
    looks = page.split("<h2>Where the model looks</h2>")[1].split("</section>")[0]
    assert looks.count("<summary>") == 3 and looks.count("<h4>top positives</h4>") == 3
    assert "24 test images scored" in looks and "maps by grad-rollout" in looks
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", looks)
    assert len(captions) == 12 and all(re.search(r" score \d\.\d{4} · true: ", c) for c in captions)
    assert looks.count('<div class="explained-grid">') == 6  # per label: top positives, then worst false positives
    for png in re.findall(r'src="data:image/png;base64,([^"]+)"', looks):
        with Image.open(io.BytesIO(base64.b64decode(png))) as panel:
            assert panel.size == (2 * 32 * 7 + colour_bar(32 * 7).width + 2 * GAP, 32 * 7)  # 32 px cached, 7x
    training = page.split("<h2>Training</h2>")[1].split("</section>")[0]
    assert "<td>1</td>" in training and "<td>3.00e-03</td>" in training  # epoch as an integer, lr scientific
    assert "training time 1 s, 100 samples/s" in training
    header = page.split('<dl class="header">')[1].split("</dl>")[0]
    assert "<dd>tiny-vit0 (local checkpoint), ViTForImageClassification at 32 px</dd>" in header
    assert "<dd>CPU, 2 cores (x86_64)</dd>" in header and f"by vitune {VITUNE_VERSION}" in header
    assert re.search(r"<dt>data</dt><dd>\S+ \(\w+ format\), 96 images</dd>", header), header
    low, high = result["confidence_intervals"]["roc_auc_macro"]
    assert f"<td>{fmt(result['metrics']['roc_auc_macro'])}</td><td>[{fmt(low)}, {fmt(high)}]</td>" in page
    assert "<td>svm</td><td>sklearn</td><td>0.25</td><td>0.01</td>" in page and "0.8125" in page
    data = os.path.relpath(RunDir(run_dir).dataset_dir(), run_dir)
    assert f"data: {data}" in page and data.startswith("..")  # config.yaml, paths relative to the RUN_DIR
    assert str(tmp_path) not in page and str(tiny_vit) not in page  # nothing of this machine's layout
    # the tiny dataset has no sex/age/view, so only the subgroup section has nothing to show
    assert page.count('class="missing"') == 1 and "no subgroup evaluation yet" in page


def test_report_notes_missing_parts(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"] = str(tmp_path / "gone")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "plots" / "lr.png").unlink()

    page = build_report(ReportConfig(run=run_dir, out=tmp_path / "r.html")).read_text()
    for name in SECTIONS:
        assert f"<h2>{name}</h2>" in page
    assert "dataset not available" in page and "run `vitune evaluate RUN_DIR`" in page
    assert "../gone" in page and str(tmp_path) not in page  # the recorded dataset, relative to the RUN_DIR
    assert "no heads/heads.json" in page
    assert_self_contained(page)


def test_report_lists_skipped_files(tmp_path, tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "single_label", tmp_path / "run",
                            sizes={"train": 48, "validation": 30})
    data_dir = tmp_path / "data"
    import shutil

    shutil.copytree(RunDir(run_dir).dataset_dir(), data_dir)
    info = DatasetInfo.load(data_dir)
    info.skipped = [{"file": f"bad{i}.png", "reason": "truncated image"} for i in range(12)]
    info.save(data_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "data": str(data_dir)}))

    page = build_report(ReportConfig(run=run_dir)).read_text()
    assert "12 file(s)" in page and "<td>bad9.png</td><td>truncated image</td>" in page
    assert "bad10.png" not in page  # only the first reasons are listed
    assert (run_dir / "plots" / "samples.png").is_file()  # generated, the dataset had none


def test_cli_report(tmp_path, tmp_path_factory, tiny_vit, monkeypatch, capsys):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    code, out, _ = run_cli(monkeypatch, capsys, "report", run_dir)
    assert code == 0 and out.strip() == f"wrote {run_dir / 'report.html'}"
    code, out, err = run_cli(monkeypatch, capsys, "report", tmp_path / "missing")
    assert code == 2 and err.startswith("error: RUN_DIR") and err.count("\n") == 1


def test_labels_that_look_like_markup_are_shown_as_text(tmp_path, tmp_path_factory, tiny_vit):
    script, attribute = "<script>alert(1)</script>", 'x" onload="alert(2)'
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run",
                            labels=["a", script, attribute])
    page = build_report(ReportConfig(run=run_dir)).read_text()
    assert "<script" not in page and 'onload="alert(2)' not in page
    shown, quoted = "&lt;script&gt;alert(1)&lt;/script&gt;", "x&#34; onload=&#34;alert(2)"
    assert f"<b>3 label(s):</b> a, {shown}, {quoted}</p>" in page  # the data section
    assert f"<tr><td>{shown}</td>" in page and f"<tr><td>{quoted}</td>" in page  # the per-label table
    assert f"<summary>{shown}</summary>" in page and f"<summary>{quoted}</summary>" in page  # where the model looks
    assert_self_contained(page)
