"""`vitune serve` with a token: 401 without it, a login on the page, failed logins limited, HTTPS, the bind check."""

import datetime
import ipaddress
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest
from browser import STARTUP_SECONDS, chromium_page, needs_chromium
from fastapi.testclient import TestClient
from PIL import Image
from tiny_run import run_cli, tiny_run_copy

from vitune.config import ServeConfig
from vitune.errors import UserError
from vitune.serve.app import create_app
from vitune.serve.security import TOKEN_ENV, LoginLimiter, bearer_token, check_exposure, read_token

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vit):
    return tiny_run_copy(tmp_path_factory, tiny_vit, "multi_label", tmp_path_factory.mktemp("secure") / "run")


@pytest.fixture(scope="module")
def image_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("secure-images") / "chest.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(ServeConfig(run=run_dir, device="cpu"), token=TOKEN)) as test_client:
        yield test_client


def predict(client, data: bytes, headers=None):
    return client.post("/v1/predict", files={"image": ("chest.png", data, "image/png")}, headers=headers or {})


def test_the_api_needs_the_bearer_token(client, image_bytes):
    missing = predict(client, image_bytes)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer TOKEN" in missing.json()["error"]
    assert predict(client, image_bytes, {"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert predict(client, image_bytes, {"Authorization": f"Basic {TOKEN}"}).status_code == 401
    granted = predict(client, image_bytes, {"Authorization": f"Bearer {TOKEN}"})
    assert granted.status_code == 200 and sorted(granted.json()["scores"]) == ["a", "b", "c"]
    assert client.get("/healthz").json()["status"] == "ok"  # health checks need no token


def test_the_page_logs_in_with_the_token_and_failed_logins_are_limited(client):
    assert client.get("/gradio_api/login_check").status_code == 401
    assert client.post("/login", data={"username": "anyone", "password": TOKEN}).status_code == 200
    assert client.get("/gradio_api/login_check").status_code == 200
    client.cookies.clear()
    refused = [client.post("/login", data={"username": "x", "password": f"guess{i}"}).status_code for i in range(7)]
    assert refused == [400] * 5 + [429] * 2
    locked = client.post("/login", data={"username": "x", "password": TOKEN})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1


def test_login_limiter_forgets_after_its_window(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("vitune.serve.security.time.monotonic", lambda: clock[0])
    limiter = LoginLimiter(limit=2, window=10)
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 11 and limiter.retry_after("10.0.0.2") == 0
    clock[0] = 110.5
    assert limiter.retry_after("10.0.0.1") == 0


def test_token_sources_and_their_checks(tmp_path, monkeypatch, run_dir):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(ServeConfig(run=run_dir)) is None
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert read_token(ServeConfig(run=run_dir)) == TOKEN
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    with pytest.raises(UserError, match="the token has 5 characters, at least 16"):
        read_token(ServeConfig(run=run_dir, token_file=str(token_file)))
    assert bearer_token(f"bearer {TOKEN}") == TOKEN and bearer_token(TOKEN) is None


def test_a_non_loopback_host_without_a_token_exits_2_with_what_to_do(monkeypatch, capsys, run_dir):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    code, out, err = run_cli(monkeypatch, capsys, "serve", run_dir, "--host", "0.0.0.0")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: --host 0.0.0.0 lets anyone on the network") and "--token-file PATH" in err
    check_exposure(ServeConfig(run=run_dir, host="0.0.0.0", insecure=True), None)
    check_exposure(ServeConfig(run=run_dir, host="0.0.0.0"), TOKEN)
    check_exposure(ServeConfig(run=run_dir, host="::1"), None)
    with pytest.raises(UserError, match="both --ssl-certfile and --ssl-keyfile"):
        ServeConfig(run=run_dir, ssl_certfile="cert.pem")


def self_signed_certificate(folder):
    """A certificate for 127.0.0.1 and its key, as PEM files (cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
@needs_chromium
def test_https_server_refuses_without_token_and_chromium_logs_in(tmp_path, run_dir, image_bytes):

    cert, key = self_signed_certificate(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    command = [sys.executable, "-m", "vitune", "serve", str(run_dir), "--port", "0", "--device", "cpu",
               "--token-file", str(token_file), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = process.stdout.readline()
        found = re.search(r"https://127\.0\.0\.1:\d+/", line)
        assert found, f"vitune serve did not come up: {line}"
        base = found.group(0)
        with httpx.Client(verify=str(cert)) as https:
            upload = {"image": ("chest.png", image_bytes, "image/png")}
            assert https.post(base + "v1/predict", files=upload).status_code == 401
            wrong = {"Authorization": "Bearer not-the-token-0123456789"}
            assert https.post(base + "v1/predict", files=upload, headers=wrong).status_code == 401
            granted = https.post(base + "v1/predict", files=upload, headers={"Authorization": f"Bearer {TOKEN}"})
            assert granted.status_code == 200 and set(granted.json()["scores"]) == {"a", "b", "c"}
        with chromium_page(ignore_https_errors=True) as page:
            page.goto(base, timeout=STARTUP_SECONDS * 1000)
            page.wait_for_selector("input[type=password]", timeout=60_000)
            assert page.locator("#vitune-upload").count() == 0  # nothing of the app before the login
            page.locator("input[type=text]").first.fill("clinician")
            page.locator("input[type=password]").fill(TOKEN)
            page.get_by_role("button", name=re.compile("login", re.IGNORECASE)).click()
            page.wait_for_selector("#vitune-upload input[type=file]", state="attached", timeout=60_000)
            assert page.title() == "vitune: run"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_unusable_certificate_is_one_error_line(tmp_path, run_dir, monkeypatch):
    from vitune.serve.app import serve

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    config = ServeConfig(run=run_dir, port=0, device="cpu", ssl_certfile=str(tmp_path / "cert.pem"),
                         ssl_keyfile=str(tmp_path / "key.pem"))
    printed = []
    with pytest.raises(UserError, match="cannot serve HTTPS with --ssl-certfile .*give a PEM certificate"):
        serve(config, echo=printed.append)
    assert printed == []  # nothing claims to be serving
