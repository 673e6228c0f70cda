"""The Dockerfile: `vitune serve` as a non-root user with a health check; built and run only where Docker works."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def docker_unavailable() -> str | None:
    """Why Docker cannot build here, or None when its engine answers."""
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False,
                           timeout=30)
    if probe.returncode != 0:
        said = probe.stderr.strip().splitlines() or ["docker info failed"]
        return f"no Docker engine reachable ({said[-1]})"
    return None


def instructions() -> dict[str, list[str]]:
    """The Dockerfile's instructions by keyword (continuation lines joined)."""
    found: dict[str, list[str]] = {}
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def test_dockerfile_serves_read_only_run_as_non_root_with_a_health_check():
    steps = instructions()
    assert steps["USER"] == ["vitune"] and "useradd" in " ".join(steps["RUN"])
    assert len(steps["HEALTHCHECK"]) == 1 and "VITUNE_HEALTH_URL" in steps["HEALTHCHECK"][0]
    assert "VITUNE_HEALTH_URL=http://127.0.0.1:7860/healthz" in " ".join(steps["ENV"])
    assert steps["ENTRYPOINT"] == ['["vitune", "serve", "/run/vitune", "--host", "0.0.0.0", "--port", "7860"]']
    assert "ARG TORCH_VARIANT=cpu" in DOCKERFILE.read_text() and "whl/${TORCH_VARIANT}" in " ".join(steps["RUN"])


@pytest.mark.slow
def test_image_builds_and_refuses_to_listen_without_a_token():
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"vitune-test:{int(time.time())}"
    built = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, check=False,
                           timeout=1800)
    assert built.returncode == 0, built.stderr[-2000:]
    try:
        user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True,
                              text=True, check=False, timeout=120)
        assert user.stdout.strip() == "10001"
        refused = subprocess.run(["docker", "run", "--rm", "-v", f"{ROOT}:/run/vitune:ro", tag], capture_output=True,
                                 text=True, check=False, timeout=300)
        assert refused.returncode == 2 and "give --token-file PATH" in refused.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False, timeout=120)
