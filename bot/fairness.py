"""Sharing the bot's worker threads fairly between servers, and autocomplete that never waits.

:class:`FairExecutor` keeps one queue per server and serves the queues in turn. A server never
holds every worker (one stays free for the others), and while other servers wait, a server
that already has a job running starts no other: a flood from one server (questions, slow
ingests) no longer makes another's question wait behind it, as a single FIFO queue would.
Jobs of one server still run in the order they came.

:class:`TitleIndex` keeps each library's article list in memory for autocomplete: Discord gives
an autocomplete 3 seconds, and reading the list through the busy worker pool could take longer.
It is updated after every ingest and forget in this process and refreshed in the background
when another process (the command line, another shard) may have changed the library.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

from embeddings import ArticleInfo

T = TypeVar("T")

# "No key may start now". A sentinel, not None: None is a real key (direct messages have no server).
_NOBODY: Any = object()


class FairExecutor:
    """A thread pool with one FIFO queue per key, served round-robin.

    ``submit(key, fn, *args)`` returns a :class:`concurrent.futures.Future`, so it plugs into
    ``loop.run_in_executor``-style code through :func:`asyncio.wrap_future`.
    """

    def __init__(self, workers: int, name: str = "citebot-fair") -> None:
        self._queues: dict[Hashable, collections.deque[tuple[Future[Any], Callable[[], Any]]]] = {}
        self._turns: collections.deque[Hashable] = collections.deque()  # keys with queued work
        self._running: collections.Counter[Hashable] = collections.Counter()
        # One key never holds every worker: the last one stays free for other servers, so their
        # next question starts at once instead of after one of the flood's jobs.
        self._cap = max(1, workers - 1)
        self._cond = threading.Condition()
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, key: Hashable, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` behind ``key``'s earlier jobs."""
        future: Future[T] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("the executor is shut down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque()
            if not queue:
                self._turns.append(key)
            queue.append((future, lambda: fn(*args, **kwargs)))
            self._cond.notify()
        return future

    def pending(self) -> dict[Hashable, int]:
        """Jobs waiting per key (for metrics and tests)."""
        with self._cond:
            return {k: len(q) for k, q in self._queues.items() if q}

    def _pick(self) -> Hashable:
        """The next key to serve, or ``_NOBODY``: the first in turn not at its limit of running jobs.

        While other servers wait, a server that already has a job running does not start
        another; alone, it may use every worker but one.
        """
        contended = len(self._turns) > 1
        for key in self._turns:
            running = self._running[key]
            if running < self._cap and not (contended and running >= 1):
                return key
        if contended:  # everyone waiting already has a job running: plain turns, within the cap
            for key in self._turns:
                if self._running[key] < self._cap:
                    return key
        return _NOBODY

    def _next(self) -> tuple[Hashable, Future[Any], Callable[[], Any]] | None:
        with self._cond:
            while True:
                if self._shutdown and not self._turns:
                    return None
                key = self._pick() if self._turns else _NOBODY
                if key is not _NOBODY:
                    break
                self._cond.wait()
            self._turns.remove(key)
            queue = self._queues[key]
            future, call = queue.popleft()
            if queue:
                self._turns.append(key)  # its next job waits for every other server's turn
            else:
                del self._queues[key]
            self._running[key] += 1
            return key, future, call

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            key, future, call = job
            try:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            finally:
                with self._cond:
                    self._running[key] -= 1
                    if not self._running[key]:
                        del self._running[key]
                    self._cond.notify_all()  # a key below its limit may be served now

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        """Stop taking jobs; cancel the queued ones; let running ones finish (wait if asked)."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                for queue in self._queues.values():
                    for future, _ in queue:
                        future.cancel()
                self._queues.clear()
                self._turns.clear()
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()


class TitleIndex:
    """Each library's articles, in memory, for autocomplete (see the module docstring).

    ``max_age`` seconds after a load the list is refreshed in the background, so changes made by
    another process show up; changes made by this process show up at once (:meth:`put`).
    """

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self._lists: dict[str, tuple[float, list[ArticleInfo]]] = {}
        self._lock = threading.Lock()

    def get(self, library: str) -> tuple[list[ArticleInfo] | None, bool]:
        """``(articles or None if never loaded, stale?)``; never blocks on I/O."""
        with self._lock:
            entry = self._lists.get(library)
        if entry is None:
            return None, True
        loaded, articles = entry
        return articles, time.monotonic() - loaded > self.max_age

    def put(self, library: str, articles: list[ArticleInfo]) -> None:
        """Replace a library's list (after a load, an ingest or a forget)."""
        with self._lock:
            self._lists[library] = (time.monotonic(), list(articles))


__all__ = ["FairExecutor", "TitleIndex"]
