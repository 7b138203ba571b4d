"""Calls that arrive together, served together: one caller at a time runs the batch of
everything queued so far, and every caller gets its own answer (flat combining)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future


class Combined:
    """`submit(key)` calls `run(keys)` with every key queued meanwhile and answers whether
    `key` was among those `run` handled. Two hundred timers firing in the same second become a
    few batches, not two hundred transactions."""

    def __init__(self, run: Callable[[list[int]], Collection[int]]):
        self._run = run
        self._queued: list[tuple[int, Future[bool]]] = []
        self._queue_lock = threading.Lock()
        self._running = threading.Lock()

    def submit(self, key: int) -> bool:
        mine: Future[bool] = Future()
        with self._queue_lock:
            self._queued.append((key, mine))
        with self._running:
            if not mine.done():  # else the batch before took it along
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                try:
                    handled = self._run(sorted({k for k, _ in batch}))
                except BaseException as exc:
                    for _, waiting in batch:
                        waiting.set_exception(exc)
                else:
                    for k, waiting in batch:
                        waiting.set_result(k in handled)
        return mine.result()
