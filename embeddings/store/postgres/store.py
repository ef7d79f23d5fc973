"""The PostgreSQL store itself: libraries, writes, HNSW indexes and reads (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ...errors import (
    EmptyLibraryError,
    IndexMismatchError,
    LibraryBusyError,
    StoreUnavailableError,
)
from ...types import Article, ArticleInfo, Layout, Passage
from .. import (
    ArticleWrite,
    Feedback,
    IndexSpec,
    LexicalRows,
    PassageEvidence,
    Record,
    SentenceRow,
    check_library_name,
)
from ..common import (
    BLOCK_BITS,
    PASSAGE_COLUMNS,
    PASSAGE_WIDTH,
    article_from_row,
    gather_postings,
    group_by_passage,
    in_order,
    info_columns,
    info_from_row,
    info_md5,
    infos_by_id,
    now,
    passage_from_row,
    passage_row_md5,
    posting_blocks,
    prune_block,
    restrict_postings,
    top_k,
)
from .migrations import Migration, apply_migrations, load_migrations
from .pool import Pool, first_line, is_disconnect, psycopg_module

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

T = TypeVar("T")

_HNSW_MAX_EF = 1000  # pgvector's upper bound for hnsw.ef_search
_TIE_MARGIN = 8  # extra rows fetched so that ties at the k-th place are seen
_SCORE_EPS = 1e-6  # numpy's float32 dot against pgvector's cosine differ by about 1e-7


def _lock_key(kind: str, library: str) -> int:
    """A signed 64-bit advisory lock key for ``library`` (collisions are negligible)."""
    digest = hashlib.sha256(f"citebot.{kind}:{library}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# ---------------------------------------------------------------------- the store


_INFO_COLS = info_columns("jsonb_array_length")


def _article_row(library_id: int, w: ArticleWrite) -> tuple[Any, ...]:
    """The values of an article's row, its metadata checksum last."""
    from psycopg.types.json import Jsonb

    a = w.info
    added_at = a.added_at or now()
    fields = (a.id, a.key, a.title, a.byline, a.date, a.url, a.source, a.content_hash)
    return (
        library_id,
        *fields,
        w.text,
        Jsonb([list(p) for p in w.paragraphs]),
        len(w.passages),
        added_at,
        info_md5(*fields, len(w.passages), added_at),
        w.layout.to_json(),
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
        connect_timeout: float = 10.0,
        statement_timeout: float = 60.0,
    ) -> None:
        psycopg = psycopg_module()
        if not 1 <= ef_search <= _HNSW_MAX_EF:
            raise ValueError(f"ef_search must be between 1 and {_HNSW_MAX_EF}")
        self._psycopg = psycopg
        self._dsn = dsn
        # A server that accepts the TCP connection and never answers (a hung host, a firewall
        # that drops packets) would otherwise hold a command or a question forever.
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.ef_search = ef_search
        self.index_threshold = index_threshold
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self._vector_info: Any = None
        self._pool = Pool(self._connect, pool_size)
        conn = self._connect_with_retry(register=False)
        try:
            apply_migrations(conn, load_migrations() if migrations is None else migrations)
        finally:
            conn.close()

    # ------------------------------------------------------------------ connections

    def _open(self) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = self._psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name="citebot",
                # libpq counts whole seconds, at least 2.
                connect_timeout=max(2, math.ceil(self.connect_timeout)),
                # A connection whose server vanished is noticed within about a minute.
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailableError("unreachable", first_line(exc)) from exc
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (self._statement_ms(),))
        except self._psycopg.OperationalError as exc:
            conn.close()
            raise StoreUnavailableError("unreachable", first_line(exc)) from exc
        return conn

    def _statement_ms(self) -> str:
        return str(max(0, round(self.statement_timeout * 1000)))

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
            except self._psycopg.errors.QueryCanceled as exc:
                raise StoreUnavailableError("too_slow", first_line(exc)) from exc
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
                if not is_disconnect(exc):
                    raise
                self._pool.discard_idle()
                if attempt == 1 and (idempotent or not committing):
                    log.warning("lost the database connection (%s); retrying once", first_line(exc))
                    continue
                raise StoreUnavailableError(
                    "lost" if attempt == 2 else "lost_while_saving", first_line(exc)
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
            raise EmptyLibraryError(library)
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
            (raw,) = _one(
                conn.execute("SELECT spec FROM libraries WHERE name = %s FOR UPDATE", (library,)).fetchone()
            )
            if raw is None:
                conn.execute(
                    "UPDATE libraries SET spec = %s, dim = %s, updated_at = now() WHERE name = %s",
                    (Jsonb(asdict(spec)), spec.dim, library),
                )
                return
            existing = IndexSpec(**raw)
            if existing != spec:
                raise IndexMismatchError(library, existing.differences(spec))

        self._run(run)

    def libraries(self) -> list[str]:
        """Names of the libraries in the database."""
        rows = self._run(lambda c: c.execute("SELECT name FROM libraries").fetchall())
        return sorted(r[0] for r in rows)  # Python order, like the local store, not the collation's

    def generation(self, library: str) -> int:
        """Incremented by every committed write."""
        row = self._run(
            lambda c: _one(
                c.execute(
                    "SELECT generation FROM libraries WHERE id = %s", (self._lib(c, library).id,)
                ).fetchone()
            )
        )
        return int(row[0])

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
                (got,) = _one(
                    conn.execute(
                        "SELECT pg_try_advisory_lock(%s) FROM set_config('application_name', %s, false)",
                        (key, me),
                    ).fetchone()
                )
                if got:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LibraryBusyError(library, self._holder(conn, key))
                time.sleep(min(0.05, left))
            try:
                yield
            finally:
                with contextlib.suppress(self._psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            conn.close()  # also releases the lock if the unlock above failed

    @staticmethod
    def _holder(conn: psycopg.Connection[Any], key: int) -> str | None:
        """Who holds the advisory lock ``key``, from the holder's application name (None if unknown)."""
        row = conn.execute(
            "SELECT a.application_name, a.query_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
        if row and row[0] and row[0].startswith("citebot writer: "):
            since = row[1].astimezone(UTC).isoformat(timespec="seconds") if row[1] else "?"
            return f"{row[0].removeprefix('citebot writer: ')}, since {since}"
        return None

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
            for table in ("term_blocks", "postings", "sentences", "passages", "cache", "articles"):
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
            raise EmptyLibraryError(library)
        for w in add:
            for array in (w.vectors, w.sentence_vectors):
                if array is not None and len(array) and array.shape[1] != lib.dim:
                    raise IndexMismatchError(
                        library, [f"dim: library has {lib.dim}, vectors have {array.shape[1]}"]
                    )
        gone = list(dict.fromkeys([*delete, *(w.info.id for w in add)]))
        removed, removed_len = 0, 0
        if gone:
            in_gone = "(SELECT id FROM passages WHERE library_id = %s AND article_id = ANY(%s))"
            self._prune_blocks(conn, lib.id, in_gone, gone)
            for table in ("postings", "sentences"):
                conn.execute(
                    f"DELETE FROM {table} WHERE library_id = %s AND passage_id IN {in_gone}",
                    (lib.id, lib.id, gone),
                )
            removed, removed_len = _one(
                conn.execute(
                    "WITH d AS (DELETE FROM passages WHERE library_id = %s AND article_id = ANY(%s) "
                    "RETURNING length) SELECT count(*), COALESCE(sum(length), 0) FROM d",
                    (lib.id, gone),
                ).fetchone()
            )
            conn.execute("DELETE FROM articles WHERE library_id = %s AND id = ANY(%s)", (lib.id, gone))
        added, added_len, next_pid, next_sid = self._insert(conn, lib, add, keep_ids)
        (count,) = _one(
            conn.execute(
                "UPDATE libraries SET generation = generation + 1, next_passage_id = %s, "
                "next_sentence_id = %s, passage_count = passage_count + %s, "
                "total_length = total_length + %s, updated_at = now() WHERE id = %s RETURNING passage_count",
                (next_pid, next_sid, added - removed, added_len - removed_len, lib.id),
            ).fetchone()
        )
        return int(count)

    @staticmethod
    def _prune_blocks(conn: psycopg.Connection[Any], library_id: int, in_gone: str, gone: list[str]) -> None:
        """Take the postings of the passages of the ``gone`` articles out of their block rows."""
        found = conn.execute(
            f"SELECT term, passage_id FROM postings WHERE library_id = %s AND passage_id IN {in_gone}",
            (library_id, library_id, gone),
        ).fetchall()
        if not found:
            return
        removed = np.unique(np.asarray([pid for _, pid in found], dtype=np.int64))
        touched = sorted({(term, pid >> BLOCK_BITS) for term, pid in found})
        rows = conn.execute(
            "SELECT term, block, offsets, tfs, lengths FROM term_blocks WHERE library_id = %s "
            "AND (term, block) IN (SELECT * FROM unnest(%s::text[], %s::int8[]))",
            (library_id, [t for t, _ in touched], [b for _, b in touched]),
        ).fetchall()
        with conn.cursor() as cur:
            kept = [(term, block, prune_block(block, cols, removed)) for term, block, *cols in rows]
            cur.executemany(
                "DELETE FROM term_blocks WHERE library_id = %s AND term = %s AND block = %s",
                [(library_id, term, block) for term, block, k in kept if k is None],
            )
            cur.executemany(
                "UPDATE term_blocks SET offsets = %s, tfs = %s, lengths = %s "
                "WHERE library_id = %s AND term = %s AND block = %s",
                [(*k, library_id, term, block) for term, block, k in kept if k is not None],
            )

    def _insert(
        self, conn: psycopg.Connection[Any], lib: _Lib, add: Sequence[ArticleWrite], keep_ids: bool
    ) -> tuple[int, int, int, int]:
        """COPY the articles in; returns (passages, their total length, next passage id, next sentence id)."""

        next_pid, next_sid = lib.next_passage_id, lib.next_sentence_id
        total = total_len = 0
        if not add:
            return 0, 0, next_pid, next_sid
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO articles (library_id, id, key, title, byline, date, url, source, "
                "content_hash, text, paragraphs, passage_count, added_at, info_md5, layout) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [_article_row(lib.id, w) for w in add],
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
                            passage_row_md5(w.info.id, p),
                            p.section or None,
                            p.kind or None,
                            p.page or None,
                            p.page_paragraph or None,
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
                'passages (library_id, id, article_id, ordinal, paragraph, start, "end", text, length, embedding, '
                "text_md5, section, kind, page, page_paragraph)",
                [
                    *("int4", "int8", "text", "int4", "int4", "int4", "int4", "text", "int4", "vector"),
                    *("text", "text", "text", "int4", "int4"),
                ],
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
            # The new postings join their terms' blocks (new ids: mostly each term's last block),
            # staged by COPY and merged in one statement.
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS new_blocks (term text, block int8, offsets bytea, tfs bytea, "
                "lengths bytea) ON COMMIT DELETE ROWS"
            )
            cur.execute("TRUNCATE new_blocks")
            _copy(
                cur,
                "new_blocks (term, block, offsets, tfs, lengths)",
                ["text", "int8", "bytea", "bytea", "bytea"],
                posting_blocks(row[1:] for row in posting_rows),
            )
            cur.execute(
                "INSERT INTO term_blocks (library_id, term, block, offsets, tfs, lengths) "
                "SELECT %s, term, block, offsets, tfs, lengths FROM new_blocks "
                "ON CONFLICT (library_id, term, block) DO UPDATE SET offsets = term_blocks.offsets || excluded.offsets, "
                "tfs = term_blocks.tfs || excluded.tfs, lengths = term_blocks.lengths || excluded.lengths",
                (lib.id,),
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
            (got,) = _one(conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone())
            if not got:
                return False
            # An index build takes minutes on a big library: no statement timeout for it.
            conn.execute("SET statement_timeout = 0")
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
                if is_disconnect(exc):
                    raise StoreUnavailableError("lost_while_indexing", first_line(exc)) from exc
                raise
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    # The connection goes back to the pool: the usual limit again.
                    conn.execute("SELECT set_config('statement_timeout', %s, false)", (self._statement_ms(),))
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

        return [info_from_row(r, library) for r in self._run(run)]

    def get_article(self, library: str, article_id: str) -> Article | None:
        """An article with its cleaned text."""

        def run(conn: psycopg.Connection[Any]) -> Any:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {_INFO_COLS}, text, paragraphs, layout FROM articles WHERE library_id = %s AND id = %s",
                (lib.id, article_id),
            ).fetchone()

        row = self._run(run)
        if row is None:
            return None
        return article_from_row(row[:-2], row[-2], library, layout=row[-1])

    def find_articles(
        self,
        library: str,
        *,
        keys: Sequence[str] = (),
        content_hashes: Sequence[str] = (),
        ids: Sequence[str] = (),
    ) -> list[ArticleInfo]:
        """Every article whose key, content hash or id is among those given (one query)."""
        if not (keys or content_hashes or ids):
            return []

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {_INFO_COLS} FROM articles WHERE library_id = %s "
                "AND (key = ANY(%s) OR content_hash = ANY(%s) OR id = ANY(%s)) ORDER BY seq",
                (lib.id, list(keys), list(content_hashes), list(ids)),
            ).fetchall()

        return [info_from_row(r, library) for r in self._run(run)]

    def article_infos(self, library: str, ids: Sequence[str]) -> dict[str, ArticleInfo]:
        """Metadata of articles by id, without their text."""
        if not ids:
            return {}

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {_INFO_COLS} FROM articles WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, list(ids)),
            ).fetchall()

        return infos_by_id(info_from_row(r, library) for r in self._run(run))

    def passages(self, library: str, ids: Sequence[int]) -> list[Passage]:
        """Passages by id, in the order asked (missing ids are left out)."""
        if not ids:
            return []

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {PASSAGE_COLUMNS} FROM passages WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, list(ids)),
            ).fetchall()

        found = {p.id: p for p in (passage_from_row(r, library) for r in self._run(run))}
        return in_order(found, ids)

    def article_passages(self, library: str, article_id: str) -> list[Passage]:
        """An article's passages in order."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                f"SELECT {PASSAGE_COLUMNS} FROM passages WHERE library_id = %s AND article_id = %s "
                "ORDER BY ordinal",
                (lib.id, article_id),
            ).fetchall()

        return [passage_from_row(r, library) for r in self._run(run)]

    def evidence(self, library: str, ids: Sequence[int]) -> list[PassageEvidence]:
        """Passages with their vectors and sentences, in the order asked, in one transaction."""
        if not ids:
            return []

        def run(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
            lib = self._lib(conn, library)
            cur = conn.cursor(binary=True)
            passages = cur.execute(
                f"SELECT {PASSAGE_COLUMNS}, embedding FROM passages WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, list(ids)),
            ).fetchall()
            sentences = cur.execute(
                'SELECT passage_id, start, "end", embedding FROM sentences '
                "WHERE library_id = %s AND passage_id = ANY(%s) ORDER BY id",
                (lib.id, list(ids)),
            ).fetchall()
            return passages, sentences

        passage_rows, sentence_rows = self._run(run)
        by_passage: dict[int, list[SentenceRow]] = {}
        for pid, start, end, vector in sentence_rows:
            by_passage.setdefault(pid, []).append(SentenceRow(pid, start, end, vector))
        found = {
            int(r[0]): PassageEvidence(
                passage_from_row(r, library), r[PASSAGE_WIDTH], tuple(by_passage.get(int(r[0]), ()))
            )
            for r in passage_rows
        }
        return in_order(found, ids)

    def nearest(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """HNSW candidates rescored exactly, for passages and for their best sentence; ties to the
        earlier passage. Both searches run in one transaction."""
        if k <= 0:
            return [], []
        q = np.asarray(query, dtype=np.float32).reshape(-1)

        def run(conn: psycopg.Connection[Any]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
            lib = self._lib(conn, library)
            if lib.dim is None:
                return [], []
            if q.shape[0] != lib.dim:
                raise IndexMismatchError(library, [f"dim: library has {lib.dim}, question has {q.shape[0]}"])
            return (
                self._search(conn, lib, q, k, article_ids, sentences=False),
                self._search(conn, lib, q, k, article_ids, sentences=True),
            )

        return self._run(run)

    def _search(
        self,
        conn: psycopg.Connection[Any],
        lib: _Lib,
        q: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None,
        sentences: bool,
    ) -> list[tuple[int, float]]:
        # A passage has several sentences: fetch more rows than passages wanted.
        limit = (4 * k if sentences else k) + _TIE_MARGIN
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
                top = top_k(np.asarray(list(best.values()), dtype=np.float32), ids, k)
            else:
                top = top_k(scores, np.asarray(owners, dtype=np.int64), k)
            # Rows not fetched score at most the lowest fetched one: the top k is settled once
            # its last member beats that (or everything was fetched).
            if len(owners) < limit or (len(top) == k and top[-1][1] > float(scores.min()) + _SCORE_EPS):
                return top
            limit *= 4

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

        return group_by_passage((SentenceRow(*r) for r in self._run(run)), passage_ids)

    def lexical(
        self, library: str, terms: Sequence[str], article_ids: Sequence[str] | None = None
    ) -> LexicalRows:
        """Passage count, mean analysed length, document frequencies and postings of ``terms``."""
        terms = list(dict.fromkeys(terms))

        def run(conn: psycopg.Connection[Any]) -> tuple[int, int, list[Any], list[Any] | None]:
            lib = self._lib(conn, library)
            n, total = _one(
                conn.execute(
                    "SELECT passage_count, total_length FROM libraries WHERE id = %s", (lib.id,)
                ).fetchone()
            )
            rows: list[Any] = []
            if terms:
                rows = conn.execute(
                    "SELECT term, block, offsets, tfs, lengths FROM term_blocks WHERE library_id = %s AND term = ANY(%s)",
                    (lib.id, terms),
                ).fetchall()
            allowed = None
            if article_ids is not None:
                allowed = conn.execute(
                    "SELECT id FROM passages WHERE library_id = %s AND article_id = ANY(%s)",
                    (lib.id, list(article_ids)),
                ).fetchall()
            return n, total, rows, allowed

        n, total, rows, allowed = self._run(run)
        postings = gather_postings(rows)
        df = {term: len(p) for term, p in postings.items()}
        if allowed is not None:
            postings = restrict_postings(postings, np.asarray([r[0] for r in allowed], dtype=np.int64))
        return LexicalRows(int(n), (total / n if n else 0.0), df, postings)

    def term_counts(self, library: str, terms: Sequence[str]) -> dict[str, int]:
        """Document frequencies from the blocks' sizes (``octet_length`` reads a stored value's
        size from its TOAST pointer, not the value)."""
        terms = list(dict.fromkeys(terms))
        if not terms:
            return {}

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                "SELECT term, sum(octet_length(offsets)) / 2 FROM term_blocks WHERE library_id = %s "
                "AND term = ANY(%s) GROUP BY term",
                (lib.id, terms),
            ).fetchall()

        return {t: int(n) for t, n in self._run(run) if n}

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
                    feedback.created_at or now(),
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

    def subscriptions(self, library: str) -> dict[str, str]:
        """The library's subscriptions: URL -> state (JSON text written by the caller)."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            lib = self._lib(conn, library)
            return conn.execute(
                "SELECT url, state FROM subscriptions WHERE library_id = %s ORDER BY url", (lib.id,)
            ).fetchall()

        return {str(url): str(state) for url, state in self._run(run)}

    def put_subscription(self, library: str, url: str, state: str) -> None:
        """Add a subscription or replace its state (creating the library's row if needed)."""
        check_library_name(library)

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO libraries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (library,))
            conn.execute(
                "INSERT INTO subscriptions (library_id, url, state) SELECT id, %s, %s FROM libraries "
                "WHERE name = %s ON CONFLICT (library_id, url) DO UPDATE SET state = EXCLUDED.state",
                (url, state, library),
            )

        self._run(run)

    def delete_subscription(self, library: str, url: str) -> bool:
        """Remove a subscription; True if there was one."""

        def run(conn: psycopg.Connection[Any]) -> int:
            lib = self._lib(conn, library)
            return conn.execute(
                "DELETE FROM subscriptions WHERE library_id = %s AND url = %s", (lib.id, url)
            ).rowcount

        return bool(self._run(run))

    def set_feedback_reason(self, library: str, answer_id: str, user: str, reason: str) -> bool:
        """Add ``reason`` to the vote ``user`` gave answer ``answer_id``; False if there is none."""

        def run(conn: psycopg.Connection[Any]) -> int:
            lib = self._lib(conn, library)
            return conn.execute(
                "UPDATE feedback SET extra = extra || jsonb_build_object('reason', %s::text) "
                "WHERE library_id = %s AND \"user\" = %s AND extra->>'answer_id' = %s",
                (reason, lib.id, user, answer_id),
            ).rowcount

        return bool(self._run(run))

    def delete_feedback(self, library: str, user: str) -> int:
        """Remove every vote of ``user``; how many were removed."""

        def run(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT id FROM libraries WHERE name = %s", (library,)).fetchone()
            if row is None:
                return 0
            return conn.execute(
                'DELETE FROM feedback WHERE library_id = %s AND "user" = %s', (row[0], user)
            ).rowcount

        return int(self._run(run))

    # ------------------------------------------------------------------ records

    def put_record(self, library: str, record: Record) -> None:
        """Add a record or replace the one of the same kind and key (creating the library's row)."""
        check_library_name(library)

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute("INSERT INTO libraries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (library,))
            conn.execute(
                'INSERT INTO records (library_id, kind, key, "user", at, value) '
                "SELECT id, %s, %s, %s, %s, %s FROM libraries WHERE name = %s "
                'ON CONFLICT (library_id, kind, key) DO UPDATE SET "user" = EXCLUDED."user", '
                "at = EXCLUDED.at, value = EXCLUDED.value",
                (record.kind, record.key, record.user, record.at or now(), record.value, library),
            )

        self._run(run)

    @staticmethod
    def _record_filter(
        lib_id: int,
        kind: str | None,
        keys: Sequence[str] | None,
        user: str | None,
        since: str | None = None,
        before: str | None = None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = ["library_id = %s"]
        args: list[Any] = [lib_id]
        for column, op, value in (
            ("kind", "=", kind),
            ('"user"', "=", user),
            ("at", ">=", since),
            ("at", "<", before),
        ):
            if value is not None:
                where.append(f'{column} {op} %s COLLATE "C"' if column == "at" else f"{column} {op} %s")
                args.append(value)
        if keys is not None:
            where.append("key = ANY(%s)")
            args.append(list(keys))
        return " AND ".join(where), args

    def records(
        self,
        library: str,
        kind: str,
        *,
        keys: Sequence[str] | None = None,
        user: str | None = None,
        since: str | None = None,
    ) -> list[Record]:
        """The records of ``kind`` (filtered), oldest first; none for a missing library."""

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            row = conn.execute("SELECT id FROM libraries WHERE name = %s", (library,)).fetchone()
            if row is None:
                return []
            where, args = self._record_filter(row[0], kind, keys, user, since)
            return conn.execute(
                f'SELECT kind, key, value, "user", at FROM records WHERE {where} '
                'ORDER BY at COLLATE "C", key COLLATE "C"',
                args,
            ).fetchall()

        return [Record(*r) for r in self._run(run)]

    def delete_records(
        self,
        library: str,
        kind: str | None = None,
        *,
        keys: Sequence[str] | None = None,
        user: str | None = None,
        before: str | None = None,
    ) -> int:
        """Remove the matching records; how many were removed."""

        def run(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT id FROM libraries WHERE name = %s", (library,)).fetchone()
            if row is None:
                return 0
            where, args = self._record_filter(row[0], kind, keys, user, before=before)
            return conn.execute(f"DELETE FROM records WHERE {where}", args).rowcount

        return int(self._run(run))

    def drop(self, library: str) -> bool:
        """Delete the library and everything in it (its rows cascade), under its write lock."""
        check_library_name(library)
        with self.writer(library, timeout=30.0):

            def run(conn: psycopg.Connection[Any]) -> int:
                row = conn.execute("SELECT id FROM libraries WHERE name = %s", (library,)).fetchone()
                if row is None:
                    return 0
                # Its HNSW indexes are partial indexes named by the library's id: gone with it.
                names = conn.execute(
                    "SELECT relname FROM pg_class WHERE relkind = 'i' AND (relname LIKE %s OR relname LIKE %s)",
                    (f"passages\\_hnsw\\_{row[0]}\\_%", f"sentences\\_hnsw\\_{row[0]}\\_%"),
                ).fetchall()
                for (name,) in names:
                    conn.execute(f'DROP INDEX IF EXISTS "{name}"')
                return conn.execute("DELETE FROM libraries WHERE id = %s", (row[0],)).rowcount

            return bool(self._run(run))

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

    def claim_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> bool:
        """Cache a value only if ``key`` is new; True if this call stored it (one INSERT wins)."""

        def run(conn: psycopg.Connection[Any]) -> bool:
            lib = self._lib(conn, library)
            cur = conn.execute(
                "INSERT INTO cache (library_id, kind, key, article_id, value) "
                "SELECT %s, %s, %s, id, %s FROM articles WHERE library_id = %s AND id = %s "
                "ON CONFLICT (library_id, kind, key) DO NOTHING",
                (lib.id, kind, key, value, lib.id, article_id),
            )
            return cur.rowcount == 1

        # Not repeated after a connection lost while committing: the claim may have been stored.
        return self._run(run, idempotent=False)

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
                "SELECT id, text, paragraphs, layout FROM articles WHERE library_id = %s AND id = ANY(%s)",
                (lib.id, ids),
            ).fetchall()
            passages = cur.execute(
                f"SELECT {PASSAGE_COLUMNS}, embedding FROM passages "
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
        text_of = {r[0]: (r[1], tuple(tuple(p) for p in r[2]), r[3]) for r in texts}
        by_article: dict[str, list[tuple[Passage, NDArray[np.float32]]]] = {}
        for r in passage_rows:
            by_article.setdefault(r[1], []).append((passage_from_row(r, library), r[PASSAGE_WIDTH]))
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
            text, paragraphs, layout = text_of[info.id]
            rows = by_article.get(info.id, [])
            passages = [p for p, _ in rows]
            spans = [(p.ordinal, s, e, v) for p in passages for s, e, v in sentences.get(p.id, [])]
            out.append(
                ArticleWrite(
                    info=info,
                    text=text,
                    paragraphs=paragraphs,
                    layout=Layout.from_json(layout, len(paragraphs)),
                    passages=passages,
                    vectors=_stack([v for _, v in rows], dim),
                    terms=[terms.get(p.id, {}) for p in passages],
                    sentences=[(o, s, e) for o, s, e, _ in spans],
                    sentence_vectors=_stack([v for *_, v in spans], dim),
                )
            )
        return out


# ---------------------------------------------------------------------- helpers


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, an UPDATE … RETURNING)."""
    if row is None:
        raise AssertionError("the query returned no row")
    return row


@functools.cache
def _numpy_loader() -> type:
    """A loader of pgvector's binary format straight into float32 numpy arrays."""
    from pgvector.psycopg.vector import VectorBinaryLoader

    class NumpyVectorLoader(VectorBinaryLoader):
        def load(self, data: Any) -> NDArray[np.float32]:  # type: ignore[override]
            dim = int.from_bytes(bytes(data[:2]), "big")
            return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)

    return NumpyVectorLoader


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
