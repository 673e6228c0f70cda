"""Micro-batching: concurrent requests' images scored together, one forward pass at a time.

Each request puts its decoded image on an asyncio queue and awaits its own future. One worker
takes the first image waiting, adds whatever else is already queued (up to ``max_batch``), scores
the stack in a thread (the event loop keeps accepting requests meanwhile) and hands each request
its row. Nothing waits for a batch to fill: a lone request is scored at once, and requests that
arrive during a forward pass make up the next batch, so batches grow with the load by themselves.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

Score = Callable[[np.ndarray], Sequence]  # uint8 [B, 3, S, S] -> one answer per image (a score row, or more)


class MicroBatcher:
    """Scores single images through ``score`` in batches of at most ``max_batch``.

    Call :meth:`start` inside the serving event loop and :meth:`stop` when it ends;
    ``batch_sizes`` counts the batches run by size (for tests and the benchmark).
    """

    def __init__(self, score: Score, max_batch: int):
        self.score = score
        self.max_batch = max_batch
        self.batch_sizes: Counter[int] = Counter()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the batching worker in the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="vitune-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get a ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._worker = None

    async def submit(self, pixels: np.ndarray) -> Any:
        """The answer for one uint8 ``[3, S, S]`` image: its row of what ``score`` returned for the batch."""
        if self._worker is None or self._queue is None:
            raise RuntimeError("the batcher is not running: call start() in the serving loop")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._run([item for item in batch if not item[1].cancelled()])

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        if not batch:
            return
        try:
            scores = await asyncio.to_thread(self.score, np.stack([pixels for pixels, _ in batch]))
        except Exception as exc:  # one failed forward pass fails its requests, not the server
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batch_sizes[len(batch)] += 1
        for row, (_, future) in zip(scores, batch):
            if not future.done():  # its client may have gone away meanwhile
                future.set_result(row)
