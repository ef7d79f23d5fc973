"""The PostgreSQL + pgvector store: many libraries in one database, shared by several processes.

Select it with ``DATABASE_URL`` (see ``bot/services.py``); it answers exactly like
:class:`~embeddings.store.local.LocalStore`: same ids, same scores, same tie order, same errors.

Schema and migrations
    ``migrations/NNNN_name.sql``, applied in order on start under an advisory lock, each in its
    own transaction together with its row in ``schema_migrations``. PostgreSQL's DDL is
    transactional, so a migration interrupted halfway leaves nothing behind and the next start
    applies it again from the beginning.

Dimensions
    Libraries may use models of different dimensions, so ``embedding`` is an untyped ``vector``
    column and each library gets its own *partial* HNSW indexes (cosine), typed by a cast::

        CREATE INDEX passages_hnsw_<library id>_<dim> ON passages
        USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops)
        WHERE library_id = <library id> AND vector_dims(embedding) = <dim>

    A per-library index also means a search walks only that library's graph, so it always
    finds ``k`` results (a shared index filtered afterwards can come back short, and pgvector
    0.6 has no iterative scan). The ``vector_dims`` predicate lets a rebuild with a model of
    another dimension insert its rows while the old index still exists.

Index lifecycle
    A library's indexes are built with ``CREATE INDEX CONCURRENTLY`` (other libraries keep
    writing) once it holds ``index_threshold`` passages; below that an exact scan of its rows
    is as fast. A bulk copy (:meth:`PostgresStore.restore` with ``more=True``) postpones the build
    to its last batch: building once is several times faster than inserting into the graph.

Search
    Candidates come from the HNSW index (``SET LOCAL hnsw.ef_search``) and are rescored with
    numpy, exactly as the local store scores, so both stores give the same numbers and break
    ties by passage id. Searches limited to some articles (small sets) scan those rows exactly.

Several processes
    Nothing is cached between calls, so another process's write is seen by the next query.
    :meth:`PostgresStore.writer` holds ``pg_try_advisory_lock`` keyed by the library on its own
    connection; on top of it every write locks its library's row, so even writers that skip the
    lock serialise, and passage ids (numbered per library) are never handed out twice.

Connections
    A small pool; a connection lost during a call is replaced and the call retried once, then
    :class:`~embeddings.errors.StoreUnavailableError` says what happened.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..errors import (
    IndexMismatchError,
    IndexStateError,
    LibraryBusyError,
    NotFoundError,
    StoreUnavailableError,
)
from ..types import Article, ArticleInfo, Passage
from . import ArticleWrite, Feedback, IndexSpec, SentenceRow, article_info, check_library_name
from .local import _REBUILD_HINT, _top_k

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'citebot[postgres]'"

T = TypeVar("T")

# Advisory lock keys (bigint). The migration key is "citebot1" in ASCII; library keys are hashes.
_MIGRATION_LOCK = int.from_bytes(b"citebot1", "big")
_HNSW_MAX_EF = 1000  # pgvector's upper bound for hnsw.ef_search
_TIE_MARGIN = 8  # extra rows fetched so that ties at the k-th place are seen
_SCORE_EPS = 1e-6  # numpy's float32 dot against pgvector's cosine differ by about 1e-7


def _psycopg() -> Any:
    """Import psycopg and pgvector, or say what to install."""
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as exc:
        raise ImportError(
            f"The PostgreSQL store needs psycopg 3 and pgvector ({exc.name} is missing): {INSTALL_HINT}"
        ) from exc
    return psycopg


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _lock_key(kind: str, library: str) -> int:
    """A signed 64-bit advisory lock key for ``library`` (collisions are negligible)."""
    digest = hashlib.sha256(f"citebot.{kind}:{library}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# ---------------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the SQL, recorded when applied: applied files must not change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def load_migrations(directory: str | os.PathLike[str] | None = None) -> list[Migration]:
    """The migrations shipped with citebot (or those in ``directory``), oldest first."""
    folder: Any = Path(directory) if directory is not None else resources.files(__package__) / "migrations"
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise IndexStateError(f"Two migrations share a version number in {folder}.")
    return found


def apply_migrations(conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction; return their versions.

    Runs under an advisory lock, so processes starting together apply each migration once.
    ``conn`` must be in autocommit mode.
    """
    psycopg = _psycopg()
    applied_now: list[int] = []
    # If this process dies mid-migration the server notices within a second, rolls the
    # migration back and frees the lock for the next start (instead of when the query ends).
    if conn.info.server_version >= 140000:  # the setting is new in PostgreSQL 14
        conn.execute("SET client_connection_check_interval = 1000")
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        known = {m.version for m in migrations}
        newer = sorted(set(applied) - known)
        if newer:
            raise IndexStateError(
                f"The database has schema version {newer[-1]}, newer than this citebot knows "
                f"({max(known, default=0)}). Upgrade citebot before using this database."
            )
        for m in migrations:
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise IndexStateError(
                        f"Migration {m.version:04d}_{m.name}.sql was changed after it was applied "
                        "to this database. Restore the file as released; put changes in a new migration."
                    )
                continue
            try:
                with conn.transaction():
                    conn.execute(m.sql.encode())  # several statements: no parameters
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported) as exc:
                raise IndexStateError(
                    f"Could not apply database migration {m.version:04d}_{m.name} ({exc}). If the "
                    "pgvector extension is missing, install it on the server and have an "
                    "administrator run `CREATE EXTENSION vector;` in this database."
                ) from exc
            except psycopg.errors.UndefinedFile as exc:
                raise IndexStateError(
                    f"The PostgreSQL server lacks the pgvector extension ({exc}). Install pgvector "
                    "on the server, then start citebot again."
                ) from exc
            log.info("applied migration %04d_%s", m.version, m.name)
            applied_now.append(m.version)
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


# ---------------------------------------------------------------------- connections


class _Pool:
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


def _is_disconnect(exc: BaseException) -> bool:
    """True for a lost or refused connection (retry on a new one), not for a failed query."""
    psycopg = _psycopg()
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # No SQLSTATE: the client lost the socket. 08: connection exception. 57P: server shut down,
    # backend terminated (pg_terminate_backend), database dropped, or not accepting connections.
    return state is None or state.startswith(("08", "57P"))


# ---------------------------------------------------------------------- the store


_INFO_COLS = (
    "id, key, title, byline, date, url, source, content_hash, jsonb_array_length(paragraphs), "
    "passage_count, added_at"
)


@dataclass(frozen=True, slots=True)
class _Lib:
    """A library's row: its id and what searches and writes need."""

    id: int
    dim: int | None
    next_passage_id: int
    next_sentence_id: int


class PostgresStore:
    """Libraries in one PostgreSQL database with pgvector; see the module docstring.

    ``dsn`` is a libpq connection string or URL. ``ef_search`` is the HNSW candidate list
    size of a query (raised to the number of rows a query needs); ``index_threshold`` is the
    passage count from which a library gets HNSW indexes; ``hnsw_m`` and
    ``hnsw_ef_construction`` are the index build parameters; ``pool_size`` caps the connections
    this store opens for queries (each :meth:`writer` holds one more).
    """

    def __init__(
        self,
        dsn: str,
        *,
        ef_search: int = 100,
        index_threshold: int = 20_000,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        pool_size: int = 8,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        psycopg = _psycopg()
        if not 1 <= ef_search <= _HNSW_MAX_EF:
            raise ValueError(f"ef_search must be between 1 and {_HNSW_MAX_EF}")
        self._psycopg = psycopg
        self._dsn = dsn
        self.ef_search = ef_search
        self.index_threshold = index_threshold
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self._vector_info: Any = None
        self._pool = _Pool(self._connect, pool_size)
        conn = self._connect_with_retry(register=False)
        try:
            apply_migrations(conn, load_migrations() if migrations is None else migrations)
        finally:
            conn.close()

    # ------------------------------------------------------------------ connections

    def _open(self) -> psycopg.Connection[Any]:
        try:
            return self._psycopg.connect(self._dsn, autocommit=True, application_name="citebot")
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"Cannot connect to the PostgreSQL database ({_first_line(exc)}). Check that the "
                "server is running and that DATABASE_URL points at it, then try again."
            ) from exc

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection with the vector type registered (numpy arrays in and out)."""
        conn = self._open()
        try:
            self._register(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_with_retry(self, register: bool = True) -> psycopg.Connection[Any]:
        try:
            return self._connect() if register else self._open()
        except StoreUnavailableError:
            time.sleep(0.5)  # a server restarting or a failover: one more try
            return self._connect() if register else self._open()

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        from pgvector.psycopg.vector import register_vector_info
        from psycopg.types import TypeInfo

        if self._vector_info is None:  # one catalog query per store, not per connection
            self._vector_info = TypeInfo.fetch(conn, "vector")
        register_vector_info(conn, self._vector_info)
        conn.adapters.register_loader(self._vector_info.oid, _numpy_loader())

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T], *, idempotent: bool = True) -> T:
        """Run ``fn`` in one transaction; a lost connection is replaced and ``fn`` run once more.

        A call that is not ``idempotent`` is not repeated when the connection was lost while
        committing: it may have been applied.
        """
        for attempt in (1, 2):
            committing = False
            try:
                with self._pool.connection() as conn:
                    with conn.transaction():
                        result = fn(conn)
                        committing = True
                    return result
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
                if not _is_disconnect(exc):
                    raise
                self._pool.discard_idle()
                if attempt == 1 and (idempotent or not committing):
                    log.warning("lost the database connection (%s); retrying once", _first_line(exc))
                    continue
                raise StoreUnavailableError(
                    "Lost the connection to the PostgreSQL database "
                    + (
                        "again after a retry"
                        if attempt == 2
                        else "while saving, so the change may or may not be saved"
                    )
                    + f" ({_first_line(exc)}). Check that the server is up and reachable, then try again."
                ) from exc
            except StoreUnavailableError:
                if attempt == 1:
                    time.sleep(0.5)
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    # ------------------------------------------------------------------ libraries

    def _lib(self, conn: psycopg.Connection[Any], library: str, *, lock: bool = False) -> _Lib:
        row = conn.execute(
            "SELECT id, dim, next_passage_id, next_sentence_id FROM libraries WHERE name = %s"
            + (" FOR UPDATE" if lock else ""),
            (check_library_name(library),),
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"Library {library!r} does not exist yet (it is not in the database). "
                "Add articles with `citebot ingest PATH`."
            )
        return _Lib(*row)

    def spec(self, library: str) -> IndexSpec | None:
        """The spec the library was built with, or None if it does not exist."""
        check_library_name(library)
        row = self._run(
            lambda c: c.execute("SELECT spec FROM libraries WHERE name = %s", (library,)).fetchone()
        )
        if row is None or row[0] is None:
            return None
        return IndexSpec(**row[0])

    def create(self, library: str, spec: IndexSpec) -> None:
        """Create the library if it does not exist; check the spec if it does."""
        check_library_name(library)
        from psycopg.types.json import Jsonb

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO libraries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (library,))
            (raw,) = conn.execute(
                "SELECT spec FROM libraries WHERE name = %s FOR UPDATE", (library,)
            ).fetchone()
            if raw is None:
                conn.execute(
                    "UPDATE libraries SET spec = %s, dim = %s, updated_at = now() WHERE name = %s",
                    (Jsonb(asdict(spec)), spec.dim, library),
                )
                return
            existing = IndexSpec(**raw)
            if existing != spec:
                raise IndexMismatchError(
                    f"Library {library!r} was built with other settings ("
                    + "; ".join(existing.differences(spec))
                    + "). "
                    + _REBUILD_HINT.format(name=library)
                    + " with the current settings, or change the settings back."
                )

        self._run(run)

    def libraries(self) -> list[str]:
        """Names of the libraries in the database."""
        rows = self._run(lambda c: c.execute("SELECT name FROM libraries").fetchall())
        return sorted(r[0] for r in rows)  # Python order, like the local store, not the collation's

    def generation(self, library: str) -> int:
        """Incremented by every committed write."""
        return self._run(
            lambda c: c.execute(
                "SELECT generation FROM libraries WHERE id = %s", (self._lib(c, library).id,)
            ).fetchone()[0]
        )

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def writer(self, library: str, timeout: float = 0.0) -> Iterator[None]:
        """Hold the library's write lock (a session advisory lock) across processes."""
        check_library_name(library)
        key = _lock_key("writer", library)
        conn = self._connect_with_retry(register=False)
        try:
            me = f"citebot writer: pid {os.getpid()} on {socket.gethostname()}"[:63]
            deadline = time.monotonic() + timeout
            while True:
                (got,) = conn.execute(
                    "SELECT pg_try_advisory_lock(%s) FROM set_config('application_name', %s, false)",
                    (key, me),
                ).fetchone()
                if got:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LibraryBusyError(self._busy_message(conn, library, key))
                time.sleep(min(0.05, left))
            try:
                yield
            finally:
                with contextlib.suppress(self._psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()  # also releases the lock if the unlock above failed

    @staticmethod
    def _busy_message(conn: psycopg.Connection[Any], library: str, key: int) -> str:
        who = ""
        row = conn.execute(
            "SELECT a.application_name, a.query_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
        if row and row[0] and row[0].startswith("citebot writer: "):
            since = row[1].astimezone(UTC).isoformat(timespec="seconds") if row[1] else "?"
            who = f" ({row[0].removeprefix('citebot writer: ')}, since {since})"
        return (
            f"Library {library!r} is being changed by another citebot process{who}. "
            "Wait for it to finish, then run this again."
        )

    # ------------------------------------------------------------------ writing

    def write(self, library: str, add: Sequence[ArticleWrite], delete: Sequence[str] = ()) -> None:
        """Atomically delete ``delete`` and add ``add``; same-id articles are replaced."""
        count = self._run(lambda c: self._commit(c, library, add, delete))
        if count >= self.index_threshold:
            self.ensure_index(library)

    def restore(self, library: str, add: Sequence[ArticleWrite], *, more: bool = False) -> None:
        """Like :meth:`write`, but passages keep their ids; the index is built after the last batch."""
        if add:
            self._run(lambda c: self._commit(c, library, add, (), keep_ids=True))
        if not more:
            self.ensure_index(library)

    def reset(self, library: str, spec: IndexSpec, add: Sequence[ArticleWrite]) -> None:
        """Atomically replace the whole library (and its spec) with ``add``; feedback stays."""
        check_library_name(library)
        from psycopg.types.json import Jsonb

        def run(conn: psycopg.Connection[Any]) -> int:
            conn.execute("INSERT INTO libraries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (library,))
            lib = self._lib(conn, library, lock=True)
            conn.execute(
                "UPDATE libraries SET spec = %s, dim = %s WHERE id = %s",
                (Jsonb(asdict(spec)), spec.dim, lib.id),
            )
            for table in ("postings", "sentences", "passages", "cache", "articles"):
                conn.execute(f"DELETE FROM {table} WHERE library_id = %s", (lib.id,))
            conn.execute("UPDATE libraries SET passage_count = 0, total_length = 0 WHERE id = %s", (lib.id,))
            return self._commit(conn, library, add, ())

        self._run(run)
        # Drops indexes made for another dimension, builds the new ones if the library is big.
        self.ensure_index(library)

    def _commit(
        self,
        conn: psycopg.Connection[Any],
        library: str,
        add: Sequence[ArticleWrite],
        delete: Sequence[str],
        keep_ids: bool = False,
    ) -> int:
        """One write inside the caller's transaction; returns the library's new passage count."""
        lib = self._lib(conn, library, lock=True)  # the row lock serialises this library's writers
        if lib.dim is None:
            raise NotFoundError(
                f"Library {library!r} has no index yet. Add articles with `citebot ingest PATH`."
            )
        for w in add:
            for array in (w.vectors, w.sentence_vectors):
                if array is not None and len(array) and array.shape[1] != lib.dim:
                    raise IndexMismatchError(
                        f"Vectors of {array.shape[1]} dimensions cannot go into library {library!r}, "
                        f"built with {lib.dim}. " + _REBUILD_HINT.format(name=library) + "."
                    )
        gone = list(dict.fromkeys([*delete, *(w.info.id for w in add)]))
        removed, removed_len = 0, 0
        if gone:
            in_gone = "(SELECT id FROM passages WHERE library_id = %s AND article_id = ANY(%s))"
            for table in ("postings", "sentences"):
                conn.execute(
                    f"DELETE FROM {table} WHERE library_id = %s AND passage_id IN {in_gone}",
                    (lib.id, lib.id, gone),
                )
            removed, removed_len = conn.execute(
                "WITH d AS (DELETE FROM passages WHERE library_id = %s AND article_id = ANY(%s) "
                "RETURNING length) SELECT count(*), COALESCE(sum(length), 0) FROM d",
                (lib.id, gone),
            ).fetchone()
            conn.execute("DELETE FROM articles WHERE library_id = %s AND id = ANY(%s)", (lib.id, gone))
        added, added_len, next_pid, next_sid = self._insert(conn, lib, add, keep_ids)
        (count,) = conn.execute(
            "UPDATE libraries SET generation = generation + 1, next_passage_id = %s, "
            "next_sentence_id = %s, passage_count = passage_count + %s, "
            "total_length = total_length + %s, updated_at = now() WHERE id = %s RETURNING passage_count",
            (next_pid, next_sid, added - removed, added_len - removed_len, lib.id),
        ).fetchone()
        return int(count)

    def _insert(
        self, conn: psycopg.Connection[Any], lib: _Lib, add: Sequence[ArticleWrite], keep_ids: bool
    ) -> tuple[int, int, int, int]:
        """COPY the articles in; returns (passages, their total length, next passage id, next sentence id)."""
        from psycopg.types.json import Jsonb

        next_pid, next_sid = lib.next_passage_id, lib.next_sentence_id
        total = total_len = 0
        if not add:
            return 0, 0, next_pid, next_sid
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO articles (library_id, id, key, title, byline, date, url, source, "
                "content_hash, text, paragraphs, passage_count, added_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        lib.id,
                        w.info.id,
                        w.info.key,
                        w.info.title,
                        w.info.byline,
                        w.info.date,
                        w.info.url,
                        w.info.source,
                        w.info.content_hash,
                        w.text,
                        Jsonb([list(p) for p in w.paragraphs]),
                        len(w.passages),
                        w.info.added_at or _now(),
                    )
                    for w in add
                ],
            )
            passage_rows: list[tuple[Any, ...]] = []
            sentence_rows: list[tuple[Any, ...]] = []
            posting_rows: list[tuple[Any, ...]] = []
            for w in add:
                pids: list[int] = []
                vectors = np.asarray(w.vectors, dtype=np.float32)
                for p, terms, vector in zip(w.passages, w.terms, vectors, strict=True):
                    if keep_ids:
                        pid = p.id
                        next_pid = max(next_pid, pid + 1)
                    else:
                        pid, next_pid = next_pid, next_pid + 1
                    pids.append(pid)
                    length = sum(terms.values())
                    total += 1
                    total_len += length
                    passage_rows.append(
                        (
                            lib.id,
                            pid,
                            w.info.id,
                            p.ordinal,
                            p.paragraph,
                            p.start,
                            p.end,
                            p.text,
                            length,
                            vector,
                        )
                    )
                    posting_rows.extend((lib.id, t, pid, n, length) for t, n in terms.items())
                if w.sentences:
                    svectors = np.asarray(w.sentence_vectors, dtype=np.float32)
                    for (ordinal, start, end), vector in zip(w.sentences, svectors, strict=True):
                        sentence_rows.append((lib.id, next_sid, pids[ordinal], start, end, vector))
                        next_sid += 1
            _copy(
                cur,
                'passages (library_id, id, article_id, ordinal, paragraph, start, "end", text, length, embedding)',
                ["int4", "int8", "text", "int4", "int4", "int4", "int4", "text", "int4", "vector"],
                passage_rows,
            )
            _copy(
                cur,
                'sentences (library_id, id, passage_id, start, "end", embedding)',
                ["int4", "int8", "int8", "int4", "int4", "vector"],
                sentence_rows,
            )
            _copy(
                cur,
                "postings (library_id, term, passage_id, tf, length)",
                ["int4", "text", "int8", "int4", "int4"],
                posting_rows,
            )
        return total, total_len, next_pid, next_sid

    # ------------------------------------------------------------------ HNSW indexes

    def ensure_index(self, library: str) -> bool:
        """Bring the library's HNSW indexes up to date; True if an index was built or dropped.

        Builds them (``CREATE INDEX CONCURRENTLY``: other libraries keep writing) once the
        library holds ``index_threshold`` passages, drops indexes of another dimension or left
        invalid by an interrupted build. Another process already doing it is left to finish.
        """
        psycopg = self._psycopg
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT id, dim, passage_count FROM libraries WHERE name = %s", (library,)
            ).fetchone()
            if row is None or row[1] is None:
                return False
            lib_id, dim, count = row
            wanted = (
                {f"{t}_hnsw_{lib_id}_{dim}" for t in ("passages", "sentences")}
                if count >= self.index_threshold
                else set()
            )
            existing = dict(
                conn.execute(
                    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname LIKE %s OR c.relname LIKE %s",
                    (f"passages\\_hnsw\\_{lib_id}\\_%", f"sentences\\_hnsw\\_{lib_id}\\_%"),
                ).fetchall()
            )
            drop = [n for n, valid in existing.items() if n not in wanted or not valid]
            build = [n for n in sorted(wanted) if n not in existing or not existing[n]]
            if not drop and not build:
                return False
            key = _lock_key("index", library)
            (got,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not got:
                return False
            try:
                for name in drop:
                    conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
                for name in build:
                    table = name.split("_", 1)[0]
                    t0 = time.perf_counter()
                    conn.execute(
                        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON {table} '
                        f"USING hnsw ((embedding::vector({dim:d})) vector_cosine_ops) "
                        f"WITH (m = {self.hnsw_m:d}, ef_construction = {self.hnsw_ef_construction:d}) "
                        f"WHERE library_id = {lib_id:d} AND vector_dims(embedding) = {dim:d}"
                    )
                    log.info("built index %s in %.1f s", name, time.perf_counter() - t0)
            except psycopg.Error as exc:
                if _is_disconnect(exc):
                    raise StoreUnavailableError(
                        f"Lost the database connection while indexing library {library!r} "
                        f"({_first_line(exc)}). The data is saved; the index is rebuilt on the next write."
                    ) from exc
                raise
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return True

    # ------------------------------------------------------------------ reading

    def list_articles(self, library: str) -> list[ArticleInfo]:
        """All articles, oldest first."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {_INFO_COLS} FROM articles WHERE library_id = %s ORDER BY added_at, seq",
                (lib.id,),
            ).fetchall()

        return [article_info(r) for r in self._run(run)]

    def get_article(self, library: str, article_id: str) -> Article | None:
        """An article with its cleaned text."""

        def run(conn: psycopg.Connection[Any]) -> Any:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {_INFO_COLS}, text, paragraphs FROM articles WHERE library_id = %s AND id = %s",
                (lib.id, article_id),
            ).fetchone()

        row = self._run(run)
        if row is None:
            return None
        return Article(article_info(row[:-2]), row[-2], tuple(tuple(p) for p in row[-1]))

    def find_article(
        self, library: str, *, key: str | None = None, content_hash: str | None = None
    ) -> ArticleInfo | None:
        """The article with this key (preferred) or content hash."""

        def run(conn: psycopg.Connection[Any]) -> Any:
            lib = self._lib(conn, library)
            row = None
            if key is not None:
                row = conn.execute(
                    f"SELECT {_INFO_COLS} FROM articles WHERE library_id = %s AND key = %s",
                    (lib.id, key),
                ).fetchone()
            if row is None and content_hash is not None:
                row = conn.execute(
                    f"SELECT {_INFO_COLS} FROM articles WHERE library_id = %s AND content_hash = %s "
                    "ORDER BY seq LIMIT 1",
                    (lib.id, content_hash),
                ).fetchone()
            return row

        row = self._run(run)
        return article_info(row) if row else None

    _PASSAGE_COLS = 'id, article_id, ordinal, paragraph, start, "end", text'

    def passages(self, library: str, ids: Sequence[int]) -> list[Passage]:
        """Passages by id, in the order asked (missing ids are left out)."""
        if not ids:
            return []

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {self._PASSAGE_COLS} FROM passages WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, list(ids)),
            ).fetchall()

        found = {r[0]: Passage(r[1], r[2], r[3], r[4], r[5], r[6], id=r[0]) for r in self._run(run)}
        return [found[i] for i in ids if i in found]

    def article_passages(self, library: str, article_id: str) -> list[Passage]:
        """An article's passages in order."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {self._PASSAGE_COLS} FROM passages WHERE library_id = %s AND article_id = %s "
                "ORDER BY ordinal",
                (lib.id, article_id),
            ).fetchall()

        return [Passage(r[1], r[2], r[3], r[4], r[5], r[6], id=r[0]) for r in self._run(run)]

    def vectors(self, library: str, ids: Sequence[int]) -> NDArray[np.float32]:
        """Stored vectors of ``ids``, in that order."""

        def run(conn: psycopg.Connection[Any]) -> tuple[int, list[Any]]:
            lib = self._lib(conn, library)
            rows = (
                conn.cursor(binary=True)
                .execute(
                    "SELECT id, embedding FROM passages WHERE library_id = %s AND id = ANY(%s)",
                    (lib.id, list(ids)),
                )
                .fetchall()
                if ids
                else []
            )
            return lib.dim or 0, rows

        dim, rows = self._run(run)
        found = dict(rows)
        if any(i not in found for i in ids):
            raise NotFoundError("Some passages are no longer in the library; ask again.")
        if not ids:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([found[i] for i in ids])

    def dense_search(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(passage_id, cosine)``: HNSW candidates rescored exactly; ties to the earlier passage."""
        return self._search(library, query, k, article_ids, sentences=False)

    def sentence_search(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(passage_id, best sentence cosine)``: passages ranked by their best sentence."""
        return self._search(library, query, k, article_ids, sentences=True)

    def _search(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None,
        sentences: bool,
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        # A passage has several sentences: fetch more rows than passages wanted.
        limit = (4 * k if sentences else k) + _TIE_MARGIN

        def run(conn: psycopg.Connection[Any]) -> list[tuple[int, float]]:
            lib = self._lib(conn, library)
            if lib.dim is None:
                return []
            if q.shape[0] != lib.dim:
                raise IndexMismatchError(
                    f"The question's vector has {q.shape[0]} dimensions but library {library!r} "
                    f"holds {lib.dim}. " + _REBUILD_HINT.format(name=library) + "."
                )
            nonlocal limit
            while True:
                owners, vectors = self._nearest(conn, lib, q, limit, article_ids, sentences)
                if not owners:
                    return []
                scores = vectors @ q
                if sentences:
                    best: dict[int, float] = {}
                    for pid, score in zip(owners, scores.tolist(), strict=True):
                        if pid not in best or score > best[pid]:
                            best[pid] = score
                    ids = np.fromiter(best, dtype=np.int64, count=len(best))
                    top = _top_k(np.asarray(list(best.values()), dtype=np.float32), ids, k)
                else:
                    top = _top_k(scores, np.asarray(owners, dtype=np.int64), k)
                # Rows not fetched score at most the lowest fetched one: the top k is settled once
                # its last member beats that (or everything was fetched).
                if len(owners) < limit or (len(top) == k and top[-1][1] > float(scores.min()) + _SCORE_EPS):
                    return top
                limit *= 4

        return self._run(run)

    def _nearest(
        self,
        conn: psycopg.Connection[Any],
        lib: _Lib,
        q: NDArray[np.float32],
        limit: int,
        article_ids: Sequence[str] | None,
        sentences: bool,
    ) -> tuple[list[int], NDArray[np.float32]]:
        """The ``limit`` nearest rows by cosine: (owning passage ids, vectors)."""
        cur = conn.cursor(binary=True)
        sql, params, ef = self._nearest_query(lib, q, limit, article_ids, sentences)
        if ef is not None:
            cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
        rows = cur.execute(sql, params).fetchall()
        if not rows:
            return [], np.zeros((0, lib.dim or 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([r[1] for r in rows])

    def _nearest_query(
        self,
        lib: _Lib,
        q: NDArray[np.float32],
        limit: int,
        article_ids: Sequence[str] | None,
        sentences: bool,
    ) -> tuple[str, tuple[Any, ...], int | None]:
        """SQL, parameters and ``hnsw.ef_search`` (None: exact scan) of a nearest-rows query."""
        table, owner = ("sentences", "passage_id") if sentences else ("passages", "id")
        dim = int(lib.dim or 0)
        if article_ids is None and limit <= _HNSW_MAX_EF:
            # Written to match the library's partial index: its predicate and its typed expression.
            # Library id and dimension are integers from our own table, safe to inline (bound
            # parameters would keep the planner from proving that the partial index applies).
            sql = (
                f"SELECT {owner}, embedding FROM {table} "
                f"WHERE library_id = {lib.id:d} AND vector_dims(embedding) = {dim:d} "
                f"ORDER BY embedding::vector({dim:d}) <=> %b::vector({dim:d}) LIMIT %b"
            )
            return sql, (q, limit), max(self.ef_search, limit)
        # Exact: the untyped expression never matches an HNSW index, so every row is scored.
        where = ""
        args: tuple[Any, ...] = (lib.id,)
        if article_ids is not None:
            in_articles = "(SELECT id FROM passages WHERE library_id = %b AND article_id = ANY(%b))"
            where = f" AND {owner} IN {in_articles}"
            args += (lib.id, list(article_ids))
        sql = (
            f"SELECT {owner}, embedding FROM {table} WHERE library_id = %b{where} "
            "ORDER BY embedding <=> %b LIMIT %b"
        )
        return sql, (*args, q, limit), None

    def sentences(self, library: str, passage_ids: Sequence[int]) -> list[SentenceRow]:
        """Stored sentences of ``passage_ids`` with their vectors, grouped in the order asked."""
        if not passage_ids:
            return []

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return (
                conn.cursor(binary=True)
                .execute(
                    'SELECT passage_id, start, "end", embedding FROM sentences '
                    "WHERE library_id = %s AND passage_id = ANY(%s) ORDER BY id",
                    (lib.id, list(passage_ids)),
                )
                .fetchall()
            )

        by_passage: dict[int, list[SentenceRow]] = {}
        for pid, start, end, vector in self._run(run):
            by_passage.setdefault(pid, []).append(SentenceRow(pid, start, end, vector))
        return [r for pid in passage_ids for r in by_passage.get(pid, [])]

    def lexical_stats(self, library: str, terms: Sequence[str]) -> tuple[int, float, dict[str, int]]:
        """Passage count, mean analysed length, and document frequency of ``terms``."""

        def run(conn: psycopg.Connection[Any]) -> tuple[int, int, dict[str, int]]:
            lib = self._lib(conn, library)
            n, total = conn.execute(
                "SELECT passage_count, total_length FROM libraries WHERE id = %s", (lib.id,)
            ).fetchone()
            df: dict[str, int] = {}
            if terms:
                df = dict(
                    conn.execute(
                        "SELECT term, count(*) FROM postings WHERE library_id = %s AND term = ANY(%s) "
                        "GROUP BY term",
                        (lib.id, list(terms)),
                    ).fetchall()
                )
            return n, total, df

        n, total, df = self._run(run)
        return int(n), (total / n if n else 0.0), df

    def postings(
        self, library: str, terms: Sequence[str], article_ids: Sequence[str] | None = None
    ) -> Iterator[tuple[str, int, int, int]]:
        """Every posting of ``terms`` with the passage's analysed length."""
        if not terms:
            return iter(())

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            sql = "SELECT term, passage_id, tf, length FROM postings WHERE library_id = %s AND term = ANY(%s)"
            args: list[Any] = [lib.id, list(terms)]
            if article_ids is not None:
                sql += " AND passage_id IN (SELECT id FROM passages WHERE library_id = %s AND article_id = ANY(%s))"
                args += [lib.id, list(article_ids)]
            # The local store's order (SQLite walks its primary key in binary order): BM25 then
            # adds each passage's terms in the same order, to the same last bit.
            return conn.execute(sql + ' ORDER BY term COLLATE "C", passage_id', args).fetchall()

        return iter([tuple(r) for r in self._run(run)])

    # ------------------------------------------------------------------ feedback and cache

    def add_feedback(self, library: str, feedback: Feedback) -> None:
        """Record a vote (creating the library's row if needed, like the local store)."""
        check_library_name(library)
        from psycopg.types.json import Jsonb

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO libraries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (library,))
            conn.execute(
                'INSERT INTO feedback (library_id, question, passage_id, article_id, vote, "user", '
                "created_at, extra) SELECT id, %s, %s, %s, %s, %s, %s, %s FROM libraries WHERE name = %s",
                (
                    feedback.question,
                    feedback.answer_passage_id,
                    feedback.article_id,
                    feedback.vote,
                    feedback.user,
                    feedback.created_at or _now(),
                    Jsonb(feedback.extra),
                    library,
                ),
            )

        # Not repeated if the connection drops while committing: the vote may be saved already.
        self._run(run, idempotent=False)

    def list_feedback(self, library: str, limit: int = 100) -> list[Feedback]:
        """Newest votes first."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                'SELECT question, passage_id, article_id, vote, "user", created_at, extra '
                "FROM feedback WHERE library_id = %s ORDER BY id DESC LIMIT %s",
                (lib.id, limit),
            ).fetchall()

        return [Feedback(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in self._run(run)]

    def get_cached(self, library: str, kind: str, key: str) -> str | None:
        """A cached value or None."""

        def run(conn: psycopg.Connection[Any]) -> Any:
            lib = self._lib(conn, library)
            return conn.execute(
                "SELECT value FROM cache WHERE library_id = %s AND kind = %s AND key = %s",
                (lib.id, kind, key),
            ).fetchone()

        row = self._run(run)
        return row[0] if row else None

    def put_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> None:
        """Cache a value tied to an article (nothing is kept if the article is already gone)."""

        def run(conn: psycopg.Connection[Any]) -> None:
            lib = self._lib(conn, library)
            conn.execute(
                "INSERT INTO cache (library_id, kind, key, article_id, value) "
                "SELECT %s, %s, %s, id, %s FROM articles WHERE library_id = %s AND id = %s "
                "ON CONFLICT (library_id, kind, key) DO UPDATE "
                "SET article_id = EXCLUDED.article_id, value = EXCLUDED.value",
                (lib.id, kind, key, value, lib.id, article_id),
            )

        self._run(run)

    # ------------------------------------------------------------------ copying

    def export(self, library: str, article_ids: Sequence[str] | None = None) -> Iterator[ArticleWrite]:
        """Stored articles as writes, oldest first, read in chunks (one transaction each)."""
        infos = self.list_articles(library)
        if article_ids is not None:
            wanted = set(article_ids)
            infos = [a for a in infos if a.id in wanted]
        for start in range(0, len(infos), 200):
            yield from self._export_chunk(library, infos[start : start + 200])

    def _export_chunk(self, library: str, infos: Sequence[ArticleInfo]) -> list[ArticleWrite]:
        ids = [a.id for a in infos]

        def run(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
            lib = self._lib(conn, library)
            cur = conn.cursor(binary=True)
            texts = cur.execute(
                "SELECT id, text, paragraphs FROM articles WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, ids),
            ).fetchall()
            passages = cur.execute(
                f"SELECT {self._PASSAGE_COLS}, embedding FROM passages "
                "WHERE library_id = %s AND article_id = ANY(%s) ORDER BY article_id, ordinal",
                (lib.id, ids),
            ).fetchall()
            in_articles = "(SELECT id FROM passages WHERE library_id = %s AND article_id = ANY(%s))"
            postings = cur.execute(
                f"SELECT passage_id, term, tf FROM postings WHERE library_id = %s AND passage_id IN {in_articles}",
                (lib.id, lib.id, ids),
            ).fetchall()
            sentences = cur.execute(
                'SELECT passage_id, start, "end", embedding FROM sentences '
                f"WHERE library_id = %s AND passage_id IN {in_articles} ORDER BY id",
                (lib.id, lib.id, ids),
            ).fetchall()
            return lib.dim, texts, passages, postings, sentences

        dim, texts, passage_rows, posting_rows, sentence_rows = self._run(run)
        text_of = {r[0]: (r[1], tuple(tuple(p) for p in r[2])) for r in texts}
        by_article: dict[str, list[tuple[Passage, NDArray[np.float32]]]] = {}
        for r in passage_rows:
            by_article.setdefault(r[1], []).append(
                (Passage(r[1], r[2], r[3], r[4], r[5], r[6], id=r[0]), r[7])
            )
        terms: dict[int, dict[str, int]] = {}
        for pid, term, tf in posting_rows:
            terms.setdefault(pid, {})[term] = tf
        sentences: dict[int, list[tuple[int, int, NDArray[np.float32]]]] = {}
        for pid, start, end, vector in sentence_rows:
            sentences.setdefault(pid, []).append((start, end, vector))
        out = []
        for info in infos:
            if info.id not in text_of:
                continue  # forgotten since the listing
            text, paragraphs = text_of[info.id]
            rows = by_article.get(info.id, [])
            passages = [p for p, _ in rows]
            spans = [(p.ordinal, s, e, v) for p in passages for s, e, v in sentences.get(p.id, [])]
            out.append(
                ArticleWrite(
                    info=info,
                    text=text,
                    paragraphs=paragraphs,
                    passages=passages,
                    vectors=_stack([v for _, v in rows], dim),
                    terms=[terms.get(p.id, {}) for p in passages],
                    sentences=[(o, s, e) for o, s, e, _ in spans],
                    sentence_vectors=_stack([v for *_, v in spans], dim),
                )
            )
        return out


# ---------------------------------------------------------------------- helpers


@functools.cache
def _numpy_loader() -> type:
    """A loader of pgvector's binary format straight into float32 numpy arrays."""
    from pgvector.psycopg.vector import VectorBinaryLoader

    class NumpyVectorLoader(VectorBinaryLoader):  # type: ignore[misc]
        def load(self, data: Any) -> NDArray[np.float32]:  # type: ignore[override]
            dim = int.from_bytes(bytes(data[:2]), "big")
            return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)

    return NumpyVectorLoader


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _stack(vectors: Sequence[NDArray[np.float32]], dim: int | None) -> NDArray[np.float32]:
    if not vectors:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)


def _copy(cur: Any, target: str, types: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY rows in binary (vectors go as pgvector's binary format, not as text)."""
    rows = list(rows)
    if not rows:
        return
    with cur.copy(f"COPY {target} FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


__all__ = ["INSTALL_HINT", "Migration", "PostgresStore", "apply_migrations", "load_migrations"]
