"""Connections to PostgreSQL: the driver import, a small pool, and what counts as a lost connection."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'citebot[postgres]'"


def psycopg_module() -> Any:
    """Import psycopg and pgvector, or say what to install."""
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as exc:
        raise ImportError(
            f"The PostgreSQL store needs psycopg 3 and pgvector ({exc.name} is missing): {INSTALL_HINT}"
        ) from exc
    return psycopg


class Pool:
    """A few connections shared by the caller's threads; broken ones are thrown away."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], size: int) -> None:
        self._connect = connect
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                with self._lock:
                    if conn.closed or conn.broken or self._closed:
                        conn.close()
                    else:
                        self._idle.append(conn)
        finally:
            self._slots.release()

    def discard_idle(self) -> None:
        """Close idle connections (after a lost connection the others are likely dead too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.discard_idle()


def is_disconnect(exc: BaseException) -> bool:
    """True for a lost or refused connection (retry on a new one), not for a failed query."""
    psycopg = psycopg_module()
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # No SQLSTATE: the client lost the socket. 08: connection exception. 57P: server shut down,
    # backend terminated (pg_terminate_backend), database dropped, or not accepting connections.
    return state is None or state.startswith(("08", "57P"))


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = ["INSTALL_HINT", "Pool", "first_line", "is_disconnect", "psycopg_module"]
