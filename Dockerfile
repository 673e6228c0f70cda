# vitune serve in a container: the page and the API of one RUN_DIR, mounted read-only, as a non-root user.
#
#   docker build -t vitune .                                   # CPU (PyTorch's CPU wheels)
#   docker build -t vitune:cuda --build-arg TORCH_VARIANT=cu124 .   # CUDA 12.4 wheels (run with --gpus all)
#   docker run --rm -p 7860:7860 -v "$PWD/runs/cxr14:/run/vitune:ro" \
#       -v "$PWD/token:/run/secrets/vitune-token:ro" vitune --token-file /run/secrets/vitune-token
#
# The image serves with --host 0.0.0.0 (inside the container), so it needs a token (--token-file or
# VITUNE_SERVE_TOKEN) unless --insecure is given. --backend onnx|onnx-int8 use RUN_DIR/export/: export it
# once where RUN_DIR is writable (`vitune predict RUN_DIR IMAGE --backend onnx`), the mount is read-only.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_TEMP_DIR=/tmp/gradio \
    VITUNE_HEALTH_URL=http://127.0.0.1:7860/healthz

RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch torchvision

WORKDIR /opt/vitune
COPY pyproject.toml README.md ./
COPY vitune ./vitune
RUN pip install ".[serve,onnx]" && useradd --create-home --uid 10001 vitune

USER vitune
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['VITUNE_HEALTH_URL'], timeout=4, context=ssl._create_unverified_context())"
ENTRYPOINT ["vitune", "serve", "/run/vitune", "--host", "0.0.0.0", "--port", "7860"]
