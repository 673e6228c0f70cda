"""`vitune serve`'s JSON API through FastAPI's test client: the scores of `vitune predict`, 4xx JSON
refusals that leave the server serving, upload and pixel caps, micro-batching without mix-ups."""

import asyncio
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tiny_run import run_cli, tiny_run_copy

from vitune.config import PredictConfig, ServeConfig
from vitune.errors import UserError
from vitune.inference.predict import predict
from vitune.serve.app import bind, create_app
from vitune.serve.batching import MicroBatcher

THRESHOLDS = {"a": 0.3, "b": 0.5, "c": 0.7}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight different images: RGB and grey PNGs, a JPEG, a 16-bit PNG and a DICOM (shipped with pydicom)."""
    from pydicom import examples

    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("serve-images")
    paths = []
    for i in range(5):
        path = folder / f"rgb{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.uint16)).save(folder / "grey16.png")
    (folder / "ct.dcm").write_bytes(examples.get_path("ct").read_bytes())
    return paths + [folder / "photo.jpg", folder / "grey16.png", folder / "ct.dcm"]


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_vit):
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("serve") / "run")
    (run_dir / "thresholds.json").write_text(json.dumps({"thresholds": THRESHOLDS}))
    return run_dir


@pytest.fixture(scope="module")
def client(multi_label_run):
    with TestClient(create_app(ServeConfig(run=multi_label_run, device="cpu", max_upload_mb=0.25))) as test_client:
        yield test_client


def post(client, name: str, data: bytes, field: str = "image"):
    return client.post("/v1/predict", files={field: (name, data, "application/octet-stream")})


def test_scores_equal_vitune_predict_for_the_same_files(client, multi_label_run, images):
    expected = predict(PredictConfig(run=multi_label_run, inputs=images, device="cpu")).rows
    assert len(expected) == len(images)
    for path, row in zip(images, expected):
        response = post(client, path.name, path.read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["file", "scores", "predicted", "tta"] and body["file"] == path.name and body["tta"] == "none"
        assert list(body["scores"]) == ["a", "b", "c"]
        np.testing.assert_allclose([body["scores"][k] for k in "abc"], [row[k] for k in "abc"], atol=1e-6, rtol=0)
        assert body["predicted"] == [k for k in "abc" if row[k] >= THRESHOLDS[k]]  # the tuned thresholds
        assert "|".join(body["predicted"]) == row["predicted"]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["task"] == "multi_label" and health["labels"] == ["a", "b", "c"]
    assert health["head"] == "model" and health["run"] == "run" and health["tta"] == "none"
    assert health["backend"] == "torch" and health["ood_threshold"] is None  # the tiny run has no OOD statistics


def test_a_text_file_gets_a_4xx_json_reason_and_the_next_request_succeeds(client, images):
    good = images[0].read_bytes()
    refusals = [
        (post(client, "notes.txt", b"just some text\n"), 422, "unreadable image: not a recognised image format"),
        (post(client, "empty.png", b""), 422, "empty file"),
        (post(client, "cut.png", good[: len(good) // 2]), 422, "truncated image"),
        (post(client, "x.png", good, field="picture"), 400, "no file in the multipart field 'image'"),
        (client.post("/v1/predict", content=good, headers={"content-type": "image/png"}), 415, "multipart/form-data"),
        (post(client, "big.png", b"\0" * 300_000), 413, "upload too large"),
    ]
    for response, status, reason in refusals:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert reason in response.json()["error"]
    assert post(client, "notes.txt", b"just some text\n").json()["file"] == "notes.txt"
    after = post(client, images[0].name, good)
    assert after.status_code == 200 and set(after.json()["scores"]) == {"a", "b", "c"}


def test_the_decompression_bomb_limit_applies_to_uploads(client, images, monkeypatch):
    monkeypatch.setattr("vitune.data.images.MAX_IMAGE_PIXELS", 40 * 40)
    response = post(client, images[0].name, images[0].read_bytes())  # 40 x 50 pixels
    assert response.status_code == 422
    assert response.json()["error"].startswith("decompression bomb: 50x40 pixels exceeds 1600")


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(multi_label_run, images):
    app = create_app(ServeConfig(run=multi_label_run, device="cpu", max_batch=4))
    served = app.state.served
    score = served.batcher.score
    served.batcher.score = lambda pixels: (time.sleep(0.2), score(pixels))[1]  # requests pile up meanwhile
    expected = {row["file"].split("/")[-1]: row for row in
                predict(PredictConfig(run=multi_label_run, inputs=images, device="cpu")).rows}
    with TestClient(app) as client, ThreadPoolExecutor(len(images)) as pool:
        bodies = list(pool.map(lambda path: post(client, path.name, path.read_bytes()).json(), images))
        sizes = {int(k): v for k, v in client.get("/healthz").json()["batch_sizes"].items()}
    for body in bodies:
        row = expected[body["file"]]
        np.testing.assert_allclose([body["scores"][k] for k in "abc"], [row[k] for k in "abc"], atol=1e-6, rtol=0)
    assert sum(size * count for size, count in sizes.items()) == len(images)
    assert max(sizes) > 1 and max(sizes) <= 4


def test_micro_batcher_takes_what_is_queued_up_to_max_batch():
    calls = []

    def score(pixels):
        calls.append(len(pixels))
        return pixels.reshape(len(pixels), -1).sum(axis=1, dtype=np.float64)

    async def scenario():
        batcher = MicroBatcher(score, max_batch=4)
        await batcher.start()
        images = [np.full((3, 2, 2), i, dtype=np.uint8) for i in range(10)]
        results = await asyncio.gather(*(batcher.submit(image) for image in images))
        await batcher.stop()
        return results, batcher.batch_sizes

    results, sizes = asyncio.run(scenario())
    assert [float(r) for r in results] == [12.0 * i for i in range(10)]
    assert calls == [4, 4, 2] and sizes == {4: 2, 2: 1}


def test_a_failed_forward_pass_fails_its_requests_only():
    async def scenario():
        fail = threading.Event()
        fail.set()

        def score(pixels):
            if fail.is_set():
                fail.clear()
                raise RuntimeError("out of memory")
            return np.zeros(len(pixels))

        batcher = MicroBatcher(score, max_batch=2)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(np.zeros((3, 1, 1), np.uint8)), return_exceptions=True)
        second = await batcher.submit(np.zeros((3, 1, 1), np.uint8))
        await batcher.stop()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], RuntimeError) and float(second) == 0.0


@pytest.mark.parametrize("task", ["single_label", "regression"])
def test_single_label_and_regression_answers(tmp_path, tmp_path_factory, tiny_vit, images, task):
    dataset = {"sizes": {"train": 48, "validation": 30}} if task == "single_label" else {}
    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, task, tmp_path / "run", **dataset)
    row = predict(PredictConfig(run=run_dir, inputs=images[:1], device="cpu")).rows[0]
    with TestClient(create_app(ServeConfig(run=run_dir, device="cpu"))) as client:
        body = post(client, images[0].name, images[0].read_bytes()).json()
    if task == "single_label":
        assert body["predicted"] == [row["predicted"]]
        assert body["scores"][row["predicted"]] == pytest.approx(row["probability"], abs=1e-6)
    else:
        assert set(body) == {"file", "scores", "value", "tta"}
        assert body["value"] == pytest.approx(row["predicted"], abs=1e-4) and body["scores"] == {"score": body["value"]}


def test_cli_refuses_bad_settings_in_one_line(tmp_path, monkeypatch, capsys, multi_label_run):
    code, _, err = run_cli(monkeypatch, capsys, "serve", multi_label_run, "--port", "70000")
    assert code == 2 and err == "error: --port 70000 is not a TCP port: use 1 to 65535 (0: any free port)\n"
    code, _, err = run_cli(monkeypatch, capsys, "serve", tmp_path / "nothing", "--device", "cpu")
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "serve", multi_label_run, "--head", "svm", "--device", "cpu")
    assert code == 2 and err.endswith("has no fitted heads (heads-config.json): run `vitune heads` first\n")
    with pytest.raises(UserError, match="--max-batch must be at least 1"):
        ServeConfig(run=multi_label_run, max_batch=0)


def test_a_busy_port_is_one_error_line():
    first = bind("127.0.0.1", 0)
    assert first.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on its connections only then
    try:
        with pytest.raises(UserError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*choose another --port"):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_a_frozen_backbone_head_answers_as_vitune_predict_does(tmp_path, tmp_path_factory, tiny_vit, images):
    from vitune.config import HeadsConfig
    from vitune.heads import fit_heads
    from vitune.storage.layout import RunDir

    run_dir = tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path / "run")
    fit_heads(HeadsConfig(model=run_dir, data=RunDir(run_dir).dataset_dir(), heads="logreg"))
    rows = predict(PredictConfig(run=run_dir, inputs=images[:3], head="logreg", device="cpu")).rows
    with TestClient(create_app(ServeConfig(run=run_dir, head="logreg", device="cpu"))) as client:
        assert client.get("/healthz").json()["head"] == "logreg"
        for path, row in zip(images, rows):
            body = post(client, path.name, path.read_bytes()).json()
            np.testing.assert_allclose([body["scores"][k] for k in "abc"], [row[k] for k in "abc"], atol=1e-6, rtol=0)
            assert "|".join(body["predicted"]) == row["predicted"]  # at 0.5: tuned thresholds are the model's


def test_model_card_tab_shows_the_card_without_front_matter_and_the_per_label_auc(multi_label_run):
    from vitune.serve.card import metrics_html, model_card_text

    card = multi_label_run / "model" / "README.md"
    card.write_text("---\nmodel-index:\n- name: run\n---\n# Tiny chest model\n\nTrained for tests.\n")
    try:
        assert model_card_text(multi_label_run) == "# Tiny chest model\n\nTrained for tests."
    finally:
        card.unlink()
    assert model_card_text(multi_label_run) is None
    metrics = json.loads((multi_label_run / "metrics.json").read_text())
    page = metrics_html(multi_label_run, "summary")
    assert "Per-label results" in page and "95% CI" in page
    for label in "abc":
        assert f"<td>{metrics['per_label'][label]['roc_auc']:.4f}</td>" in page


@pytest.mark.parametrize("task", ["multi_label", "single_label", "regression"])
def test_page_results_sorted_with_thresholds_marked_only_where_they_decide(task):
    from vitune.inference.predict import Scorer
    from vitune.serve.page import decision_rule, prediction_html
    from vitune.serve.service import ServedModel
    from vitune.tasks import get_task

    labels = ["score"] if task == "regression" else ["a", "b", "c"]
    tuned = np.array([0.3, 0.5, 0.7]) if task == "multi_label" else None
    scorer = Scorer(get_task(task), labels, 32, scores=None, thresholds=tuned)
    served = ServedModel(scorer, max_batch=2, name="run", head="model")
    row = np.array(42.5) if task == "regression" else np.array([0.2, 0.9, 0.6])
    page = prediction_html(served, served.prediction("x<1>.png", row))
    assert 'data-file="x&lt;1&gt;.png"' in page and "<h3>x&lt;1&gt;.png</h3>" in page
    if task == "regression":
        assert "predicted value: <b>42.5000</b>" in page and "vt-row" not in page
        return
    order = [page.index(f'data-label="{label}"') for label in ("b", "c", "a")]
    assert order == sorted(order)  # most probable first
    if task == "multi_label":
        assert page.count('class="vt-cut"') == 3 and "threshold 0.30" in page
        assert "predicted: <b>b</b>" in page  # c's 0.6 is under its tuned 0.7
        assert "tuned on validation" in decision_rule(served)
    else:
        assert 'class="vt-cut"' not in page and "threshold" not in page and "predicted: <b>b</b>" in page
        assert decision_rule(served) == "single-label: the most probable class"


def test_page_fragments_show_labels_and_file_names_that_look_like_markup_as_text(multi_label_run):
    from vitune.inference.predict import Scorer
    from vitune.serve.card import metrics_html
    from vitune.serve.page import prediction_html, refusal_html
    from vitune.serve.service import ServedModel
    from vitune.tasks import get_task

    script = "<script>alert(1)</script>"
    shown = "&lt;script&gt;alert(1)&lt;/script&gt;"
    served = ServedModel(Scorer(get_task("multi_label"), ["a", script], 32, scores=None, thresholds=None),
                         max_batch=2, name="run", head="model")
    page = prediction_html(served, served.prediction(f"{script}.png", np.array([0.2, 0.9])), overlays=[(script, b"png")])
    assert "<script" not in page
    assert f'<section class="vt-result" data-file="{shown}.png"><h3>{shown}.png</h3>' in page
    assert f"predicted: <b>{shown}</b>" in page and f'<span class="vt-label">{shown}</span>' in page
    assert page.count(f'data-label="{shown}"') == 2  # its bar and its overlay
    assert f'<img class="vt-overlay" alt="where the model looks: {shown}" data-label="{shown}" ' in page
    assert f'data-file="{shown}"><h3>{shown}</h3><p class="vt-error">not scored: {shown}</p>' in refusal_html(script,
                                                                                                           script)
    assert f'<p class="meta">{shown}</p>' in metrics_html(multi_label_run, script)


def test_an_oversized_upload_is_refused_while_it_streams_in(client, images):
    boundary = "vitune-test-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="huge.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()

    def body():  # no Content-Length: only counting the stream as it comes can refuse it
        yield head
        for _ in range(64):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/predict", content=body(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and response.json()["error"].startswith("upload too large: more than")
    declared = post(client, "huge.png", b"\0" * 1_000_000)
    assert declared.status_code == 413 and "1000" in declared.json()["error"]
    assert post(client, images[0].name, images[0].read_bytes()).status_code == 200


def test_explain_adds_the_peaks_of_vitune_explain_for_the_decided_labels(client, multi_label_run, images):
    from vitune.explain import explain_images
    from vitune.models.run import load_run

    run = load_run(multi_label_run, "cpu")
    for path in images[:3]:
        plain = post(client, path.name, path.read_bytes()).json()
        response = client.post("/v1/predict?explain=1", files={"image": (path.name, path.read_bytes())})
        assert response.status_code == 200, response.text
        body = response.json()
        assert {k: body[k] for k in ("file", "scores", "predicted", "tta")} == plain
        wanted = plain["predicted"] or None
        reference = explain_images(run, [path], labels=wanted, top=None if wanted else 1)[0]
        assert list(body["peaks"]) == list(reference.labels) and len(body["peaks"]) >= 1
        width, height = Image.open(path).size
        for label, (x, y) in body["peaks"].items():
            assert [x, y] == pytest.approx(list(reference.labels[label].peak), abs=1e-6)
            assert 0 <= x <= width and 0 <= y <= height


def test_the_page_shows_an_overlay_per_decided_label(multi_label_run, images):
    import base64
    import io

    from vitune.explain.overlay import GAP, colour_bar
    from vitune.serve.explaining import OVERLAY_WIDTH, ServedExplainer
    from vitune.serve.page import _one_file
    from vitune.serve.service import ServedModel

    served = ServedModel.from_config(ServeConfig(run=multi_label_run, device="cpu"))
    explainer = ServedExplainer(multi_label_run, "cpu")
    big = images[0].parent / "wide.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (300, 900, 3), dtype=np.uint8)).save(big)

    async def show(path, chosen):
        await served.batcher.start()
        try:
            return await _one_file(served, str(path), 10**7, chosen)
        finally:
            await served.batcher.stop()

    shown = asyncio.run(show(big, explainer))
    assert "not explained" not in shown
    sources = [part.split('"')[0] for part in shown.split('src="data:image/png;base64,')[1:]]
    labels = [part.split('"')[0] for part in shown.split('class="vt-overlay" alt="where the model looks: ')[1:]]
    assert len(sources) == len(labels) >= 1
    for encoded in sources:
        overlay = Image.open(io.BytesIO(base64.b64decode(encoded)))
        panel_width = 2 * 900 + colour_bar(300).width + 2 * GAP  # the source, its overlay, the colour bar
        assert overlay.size == (OVERLAY_WIDTH, round(300 * OVERLAY_WIDTH / panel_width))  # scaled down whole
    assert "vt-overlay" not in asyncio.run(show(big, None))  # unticked: no overlays


def test_an_image_unlike_the_training_data_is_flagged_in_the_json_and_warned_of_on_the_page(tmp_path_factory, tiny_vit):
    from tiny_run import chest_film_run

    from vitune.data.dataset_dir import load_dataset_dir
    from vitune.data.synthetic import blank_frame
    from vitune.serve.page import prediction_html
    from vitune.serve.service import ServedModel
    from vitune.storage.layout import RunDir

    run_dir = chest_film_run(tmp_path_factory, tiny_vit)
    ds, _ = load_dataset_dir(RunDir(run_dir).dataset_dir())
    film = np.asarray(ds["test"].with_format("numpy")[0]["pixel_values"], dtype=np.uint8)
    uploads = {}
    for name, pixels in {"blank.png": blank_frame(32), "film.png": film}.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels.transpose(1, 2, 0)).save(buffer, format="PNG")
        uploads[name] = buffer.getvalue()
    config = ServeConfig(run=run_dir, device="cpu")
    with TestClient(create_app(config)) as chest_client:
        answers = {name: post(chest_client, name, data).json() for name, data in uploads.items()}
        health = chest_client.get("/healthz").json()
    served = ServedModel.from_config(config)
    assert health["ood_threshold"] == pytest.approx(served.ood_threshold) and served.ood_threshold > 0
    assert answers["blank.png"]["out_of_distribution"] is True
    assert answers["blank.png"]["ood_distance"] > served.ood_threshold
    assert answers["film.png"]["out_of_distribution"] is False
    assert answers["film.png"]["ood_distance"] <= served.ood_threshold

    async def answer(name: str):
        await served.batcher.start()
        try:
            return await served.predict(name, uploads[name])
        finally:
            await served.batcher.stop()

    flagged, usual = asyncio.run(answer("blank.png")), asyncio.run(answer("film.png"))
    warning = prediction_html(served, flagged)
    assert '<p class="vt-ood" role="alert">This image is unlike the images the model was trained on' in warning
    assert f"distance {flagged.ood_distance:.1f}, over the threshold {served.ood_threshold:.1f}" in warning
    assert "vt-ood" not in prediction_html(served, usual)
