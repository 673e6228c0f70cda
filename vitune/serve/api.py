"""The JSON API: ``GET /healthz`` and ``POST /v1/predict`` (multipart field ``image``).

Every refusal is a 4xx JSON body ``{"error": REASON}`` (plus ``"file"`` when the upload had a
name) and leaves the server serving: 400 for a request without an ``image`` file, 413 for an
upload over ``--max-upload-mb`` (counted while it streams in, so an oversized body is never held
whole), 415 for a body that is not ``multipart/form-data``, 422 for a file that is not a usable
image (the reason :func:`vitune.data.images.decode_image` gives, the decompression bomb limit
included). ``?explain=1`` adds the peaks of :mod:`vitune.serve.explaining`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from vitune.data.images import BadImage
from vitune.errors import UserError
from vitune.serve.explaining import ServedExplainer, peaks
from vitune.serve.service import ServedModel

IMAGE_FIELD = "image"
EXPLAIN_ON = ("1", "true", "yes")
MULTIPART_SLACK = 64 * 1024  # room for the multipart boundaries and part headers around the file


class ApiError(Exception):
    """A refused request: its HTTP status and the reason sent back as JSON."""

    def __init__(self, status: int, reason: str, file: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.file = status, reason, file

    def response(self) -> JSONResponse:
        """The JSON error response."""
        body = {"error": self.reason, **({"file": self.file} if self.file is not None else {})}
        return JSONResponse(body, status_code=self.status)


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"upload too large: more than {limit - MULTIPART_SLACK} bytes (see --max-upload-mb)")
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """``(file name, bytes)`` of the request's ``image`` file, or an :class:`ApiError` saying what is wrong."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, f"send the image as multipart/form-data in the field {IMAGE_FIELD!r} "
                            f"(curl -F {IMAGE_FIELD}=@FILE)")
    limit = max_bytes + MULTIPART_SLACK
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"upload too large: {declared} bytes, at most {max_bytes} (see --max-upload-mb)")
    parser = MultiPartParser(request.headers, _capped(request.stream(), limit), max_files=1, max_fields=16)
    parser.spool_max_size = limit  # the upload stays in memory: a patient's image is never spooled to disk
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed multipart body: {exc.message}") from exc
    try:
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            raise ApiError(400, f"no file in the multipart field {IMAGE_FIELD!r} (curl -F {IMAGE_FIELD}=@FILE)")
        name = upload.filename or IMAGE_FIELD
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise ApiError(413, f"upload too large: {len(data)} bytes, at most {max_bytes} (see --max-upload-mb)", name)
    return name, data


def build_api(served: ServedModel, max_upload_bytes: int, explainer: ServedExplainer) -> FastAPI:
    """The FastAPI app with the JSON routes; its lifespan runs the micro-batcher."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await served.batcher.start()
        try:
            yield
        finally:
            await served.batcher.stop()

    # no /docs or /redoc: their pages load scripts from a CDN
    app = FastAPI(title=f"vitune: {served.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(ApiError, lambda request, exc: exc.response())

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness, what answers (the run, its head, task, labels, backend and out-of-distribution threshold, null
        without statistics) and the batches run so far by size."""
        task = served.scorer.task
        batches = {str(size): count for size, count in sorted(served.batcher.batch_sizes.items())}
        return {"status": "ok", "run": served.name, "head": served.head, "task": task.name, "labels": served.labels,
                "tta": served.scorer.tta, "backend": served.backend, "ood_threshold": served.ood_threshold,
                "batch_sizes": batches}

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        """Scores and decisions for the uploaded image, as ``vitune predict`` gives them; with ``?explain=1``
        also ``"peaks"``: where the model looks for each decided label, ``[x, y]`` in the upload's pixels."""
        name, data = await read_upload(request, max_upload_bytes)
        try:
            prediction = await served.predict(name, data)
        except BadImage as exc:
            raise ApiError(422, exc.reason, name) from exc
        if request.query_params.get("explain", "0").lower() in EXPLAIN_ON:
            try:
                explanation = await explainer.explain(prediction, data)
            except UserError as exc:  # a model no method explains
                raise ApiError(422, f"cannot explain this model: {exc}", name) from exc
            return JSONResponse(prediction.response(peaks=peaks(explanation)))
        return JSONResponse(prediction.response())

    return app
