"""The default store: one folder per library, SQLite for text and postings, ``.npy`` for vectors.

Layout of ``<root>/libraries/<name>/``:

* ``index.sqlite3``: meta, articles, passages, lexical postings, feedback, cache (WAL mode).
* ``vectors.<generation>.npy`` (float32, one L2-normalised row per passage, ordered by passage
  id) and ``ids.<generation>.npy`` (the passage ids of those rows).
* ``write.lock`` (+ ``writer.json`` naming the holder): one writer at a time across processes.

Atomicity: a write builds the next generation's ``.npy`` files beside the current ones, then
commits the SQLite transaction that switches ``generation``. A crash before the commit leaves
the old generation in force (the orphan files are removed by the next writer); a crash after it
leaves only stale old files. Readers check the matrix against the database (row count, ids,
CRC) and refuse to answer from a half-written or damaged index.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock, Timeout
from numpy.typing import NDArray

from ..errors import (
    AccessProblem,
    CitebotError,
    CorruptIndexError,
    EmptyLibraryError,
    IndexMismatchError,
    LibraryAccessError,
    LibraryBusyError,
)
from ..types import Article, ArticleInfo, Passage
from . import (
    ArticleWrite,
    Feedback,
    IndexSpec,
    LexicalRows,
    PassageEvidence,
    Record,
    SentenceRow,
    TermPostings,
    check_library_name,
)
from .common import (
    BLOCK_BITS,
    MAX_BLOCK_COUNT,
    PASSAGE_COLUMNS,
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
    passage_md5,
    passage_row_md5,
    posting_blocks,
    prune_block,
    restrict_postings,
    stream_blocks,
    text_md5,
    top_k,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    byline TEXT,
    date TEXT,
    url TEXT,
    source TEXT,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    paragraphs TEXT NOT NULL,
    passage_count INTEGER NOT NULL,
    added_at TEXT NOT NULL,
    info_md5 TEXT,
    layout TEXT
);
CREATE INDEX IF NOT EXISTS articles_hash ON articles(content_hash);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    paragraph INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    length INTEGER NOT NULL,
    text_md5 TEXT,
    section TEXT,
    kind TEXT,
    page INTEGER,
    page_paragraph INTEGER
);
CREATE INDEX IF NOT EXISTS passages_article ON passages(article_id, ordinal);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    passage_id INTEGER NOT NULL REFERENCES passages(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sentences_passage ON sentences(passage_id);
CREATE TABLE IF NOT EXISTS postings (
    term TEXT NOT NULL,
    passage_id INTEGER NOT NULL REFERENCES passages(id) ON DELETE CASCADE,
    tf INTEGER NOT NULL,
    PRIMARY KEY (term, passage_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS postings_passage ON postings(passage_id);
-- The same postings packed per (term, block of passage ids): what questions read (see
-- common.BLOCK_BITS); the table above is what writes find a passage's terms by.
CREATE TABLE IF NOT EXISTS term_blocks (
    term TEXT NOT NULL,
    block INTEGER NOT NULL,
    offsets BLOB NOT NULL,
    tfs BLOB NOT NULL,
    lengths BLOB NOT NULL,
    PRIMARY KEY (term, block)
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question TEXT NOT NULL,
    passage_id INTEGER,
    article_id TEXT,
    vote INTEGER NOT NULL,
    user TEXT NOT NULL,
    created_at TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    url TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    user TEXT NOT NULL,
    at TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS records_user ON records(user);
CREATE TABLE IF NOT EXISTS cache (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


@dataclass(slots=True)
class _Matrix:
    """One generation of a library's vectors, as loaded and checked."""

    generation: int
    vectors: NDArray[np.float32]  # one row per passage, ordered by passage id
    ids: NDArray[np.int64]
    sentence_vectors: NDArray[np.float32]  # one row per sentence, ordered by sentence id
    sentence_ids: NDArray[np.int64]
    sentence_passages: NDArray[np.int64]  # the passage of each sentence row (non-decreasing)

    @classmethod
    def empty(cls, dim: int) -> _Matrix:
        none = np.zeros(0, np.int64)
        return cls(0, np.zeros((0, dim), np.float32), none, np.zeros((0, dim), np.float32), none, none)


# The vector sets of a library: file prefix of vectors and ids, checksum key, and the query that
# lists the ids the database holds, in row order.
_SETS = {
    "passages": ("vectors", "ids", "vectors_crc", "SELECT id FROM passages ORDER BY id"),
    "sentences": (
        "sentences",
        "sentence_ids",
        "sentences_crc",
        "SELECT id, passage_id FROM sentences ORDER BY id",
    ),
}


_PART: dict[str, Literal["passage vectors", "sentence vectors"]] = {
    "passages": "passage vectors",
    "sentences": "sentence vectors",
}


def _holder(owner_file: Path) -> str | None:
    """Who holds a library's write lock, from the file the holder wrote (None if unknown)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads(owner_file.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    return None


# Columns added after the first release, by table: a library made before them gets them on
# open (NULL: "not recorded", which every reader accepts).
_LATER_COLUMNS = {
    "articles": ("info_md5", "layout"),
    "passages": ("text_md5", "section", "kind", "page", "page_paragraph"),
}


@contextlib.contextmanager
def _upgrading(conn: sqlite3.Connection, skip: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """One upgrade of a library made by an older citebot, in one transaction.

    A read-only library is still read: what the upgrade adds goes unused until it is writable.
    An exception in ``skip`` also undoes the upgrade and is not raised (the caller says why).
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except skip:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if "readonly" not in str(exc).lower():
            raise


def _add_checksums(conn: sqlite3.Connection) -> None:
    """Give a library made before the checksums (and layouts) existed their columns and values, once."""
    present = {
        table: {row[1] for row in conn.execute(f"PRAGMA table_info({table})")} for table in _LATER_COLUMNS
    }
    missing = {t: [c for c in cols if c not in present[t]] for t, cols in _LATER_COLUMNS.items()}
    if not any(missing.values()):
        return
    with _upgrading(conn):
        for table, columns in missing.items():
            for column in columns:
                kind = "INTEGER" if column.startswith("page") else "TEXT"
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if "text_md5" in missing["passages"]:
            rows = conn.execute('SELECT id, article_id, ordinal, paragraph, start, "end", text FROM passages')
            conn.executemany(
                "UPDATE passages SET text_md5=? WHERE id=?",
                [(passage_md5(*r[1:]), r[0]) for r in rows.fetchall()],
            )
        if "info_md5" in missing["articles"]:
            rows = conn.execute(
                "SELECT id, key, title, byline, date, url, source, content_hash, passage_count, added_at FROM articles"
            )
            conn.executemany(
                "UPDATE articles SET info_md5=? WHERE id=?", [(info_md5(*r), r[0]) for r in rows.fetchall()]
            )


_BLOCKS_READY = "term_blocks"
"""The meta key saying the ``term_blocks`` table holds every posting (absent in a library made
before blocks existed, until a writable open fills the table; until then questions read the
postings table itself, see ``LocalStore._legacy_postings``)."""


def _add_term_blocks(conn: sqlite3.Connection) -> None:
    """Fill ``term_blocks`` from the postings of a library made before it existed, once.

    A damaged posting (a text where an id belongs) leaves the blocks unmade: questions then read
    the postings table, which reports the damage where a question meets it.
    """
    if conn.execute("SELECT 1 FROM meta WHERE key=?", (_BLOCKS_READY,)).fetchone() is not None:
        return
    with _upgrading(conn, skip=(TypeError, ValueError, OverflowError)):
        conn.execute("DELETE FROM term_blocks")
        # The postings' primary key order: each block's rows come together, one block in memory.
        rows = conn.execute(
            "SELECT t.term, t.passage_id, t.tf, p.length FROM postings t JOIN passages p ON p.id = t.passage_id "
            "ORDER BY t.term, t.passage_id"
        )
        conn.executemany("INSERT INTO term_blocks VALUES (?,?,?,?,?)", stream_blocks(rows))
        conn.execute("INSERT INTO meta VALUES (?, '1')", (_BLOCKS_READY,))
        if conn.execute("SELECT 1 FROM meta WHERE key='meta_md5'").fetchone() is not None:
            LocalStore._seal_meta(conn)


_ACCESS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection to a database in a folder this user may not write.

    SQLite opens a WAL database read-only only where it can create the shared-memory file;
    where it cannot, ``immutable`` reads the file as it is (nobody else may write it either,
    or they would have the rights this user lacks).
    """
    uri = db.resolve().as_uri()
    try:
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=30, check_same_thread=False, isolation_level=None
        )
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.OperationalError:
        conn = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, timeout=30, check_same_thread=False, isolation_level=None
        )
    # A library from before the later columns cannot be given them here; temporary views
    # (in memory, found before the file's tables) add them as NULL: read, unchecked.
    for table, columns in _LATER_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA main.table_info({table})")}
        added = "".join(f", NULL AS {column}" for column in columns if column not in present)
        if added:
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT *{added} FROM main.{table}")
    return conn


def _crc(array: NDArray[np.generic]) -> str:
    """The CRC-32 of an array's bytes, read in place (``tobytes`` would copy a whole matrix)."""
    return str(zlib.crc32(np.ascontiguousarray(array).data))


def _meta_md5(meta: dict[str, str]) -> str:
    return text_md5(json.dumps(sorted(meta.items())))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and type a ``.npy`` file's header declares, read without loading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _fortran, dtype = read(f)
    return tuple(shape), dtype


class LocalStore:
    """Libraries in folders under ``root``; exact top-k search with numpy."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._matrices: dict[str, _Matrix] = {}
        self._stats: dict[str, tuple[str, tuple[int, int, NDArray[np.int64], float]]] = {}
        # sqlite3 connections are shared between the bot's worker threads; one lock per store
        # keeps each statement sequence whole.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ paths and connections

    def library_dir(self, library: str) -> Path:
        """The folder that holds ``library``."""
        return self.root / "libraries" / check_library_name(library)

    def _conn(self, library: str, create: bool = False) -> sqlite3.Connection:
        with self._lock, self._access_errors(library):
            conn = self._conns.get(library)
            if conn is not None:
                return conn
            folder = self.library_dir(library)
            db = folder / "index.sqlite3"
            if not db.exists():
                self._check_not_missing(library)
                if not create:
                    raise EmptyLibraryError(library)
                folder.mkdir(parents=True, exist_ok=True)
            try:
                try:
                    conn = sqlite3.connect(db, timeout=30, check_same_thread=False, isolation_level=None)
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA foreign_keys=ON")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.executescript(_SCHEMA)
                    _add_checksums(conn)
                    _add_term_blocks(conn)
                except sqlite3.OperationalError as exc:
                    error = self._db_error(library, exc)
                    if create or not isinstance(error, LibraryAccessError) or error.problem == "disk_full":
                        raise
                    # A library this user may not write (a read-only mount, another owner's
                    # files) still answers questions; a write then says why it cannot.
                    try:
                        conn = _read_only(db)
                    except sqlite3.OperationalError as again:
                        raise LibraryAccessError(library, "unreadable", str(db), str(again)) from again
            except sqlite3.DatabaseError as exc:
                raise self._db_error(library, exc) from exc
            except UnicodeDecodeError as exc:  # a damaged schema or text SQLite hands to Python
                raise self._corrupt_db(library, exc) from exc
            self._conns[library] = conn
            return conn

    def _db_path(self, library: str) -> str:
        return str(self.library_dir(library) / "index.sqlite3")

    def _check_not_missing(self, library: str) -> None:
        """Vectors without their database: it was deleted or moved, the library not never made."""
        folder = self.library_dir(library)
        if any(folder.glob("vectors.*.npy")):
            raise CorruptIndexError(
                library, "database", "is missing", rebuildable=False, location=str(folder / "index.sqlite3")
            )

    def _db_error(self, library: str, exc: sqlite3.DatabaseError) -> CitebotError:
        """What a database error means: a file this user may not write, a full disk, or damage.

        Only real damage is called damage: advising to move an intact library aside over a
        permission problem would discard a good library.
        """
        text = str(exc).lower()
        db = self._db_path(library)
        if isinstance(exc, sqlite3.OperationalError):
            if "disk is full" in text or "disk full" in text:
                return LibraryAccessError(library, "disk_full", db, str(exc))
            if any(s in text for s in ("readonly", "read-only", "unable to open")):
                return LibraryAccessError(library, self._why_not_writable(library), db, str(exc))
        return self._corrupt_db(library, exc)

    def _why_not_writable(self, library: str) -> AccessProblem:
        folder = self.library_dir(library)
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return "read_only"
        except OSError:
            pass
        return "permission"

    @contextlib.contextmanager
    def _access_errors(self, library: str) -> Iterator[None]:
        """Turn an access error on the library's files into :class:`LibraryAccessError`."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _ACCESS_ERRNOS:
                raise
            raise self._os_error(library, exc) from exc

    def _os_error(self, library: str, exc: OSError) -> LibraryAccessError:
        """An access error (errno in ``_ACCESS_ERRNOS``) on the library's files, in the user's terms."""
        where = str(exc.filename or self.library_dir(library))
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return LibraryAccessError(library, "disk_full", where, str(exc))
        if exc.errno == errno.EROFS:
            return LibraryAccessError(library, "read_only", where, str(exc))
        return LibraryAccessError(library, self._why_not_writable(library), where, str(exc))

    def _damaged(self, library: str, detail: str) -> CorruptIndexError:
        """The database is damaged in a way described by ``detail`` (it holds the texts: no rebuild)."""
        return CorruptIndexError(
            library, "database", detail, rebuildable=False, location=self._db_path(library)
        )

    def _corrupt_db(self, library: str, exc: Exception) -> CorruptIndexError:
        # The database holds the article texts themselves: nothing is left to rebuild from.
        return self._damaged(library, f"is damaged ({exc})")

    @contextlib.contextmanager
    def _db(self, library: str, create: bool = False) -> Iterator[sqlite3.Connection]:
        # Access errors also cover writing the vector files: a full disk, a read-only folder.
        with self._lock, self._access_errors(library):
            conn = self._conn(library, create)
            try:
                yield conn
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise LibraryBusyError(library, locked_database=True) from exc
                raise self._db_error(library, exc) from exc
            except UnicodeDecodeError as exc:
                raise self._corrupt_db(library, exc) from exc

    def close(self) -> None:
        """Close every open database connection."""
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._matrices.clear()
            self._stats.clear()

    # ------------------------------------------------------------------ meta

    def _meta(self, conn: sqlite3.Connection, library: str) -> dict[str, str]:
        """The meta rows, checked against their checksum (``meta_md5``, absent
        in libraries made before it existed): a damaged vectors checksum or generation number
        must be blamed on the database, not on the intact vector files it no longer matches."""
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not all(type(k) is str and type(v) is str for k, v in meta.items()):
            raise self._corrupt_db(library, ValueError("its settings record is damaged"))
        stored = meta.pop("meta_md5", None)
        if stored is not None and stored != _meta_md5(meta):
            raise self._corrupt_db(library, ValueError("its settings record is damaged"))
        return meta

    @staticmethod
    def _seal_meta(conn: sqlite3.Connection) -> None:
        """Store the checksum of the meta rows (inside the transaction that changed them)."""
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key != 'meta_md5'").fetchall())
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('meta_md5', ?)", (_meta_md5(meta),))

    def spec(self, library: str) -> IndexSpec | None:
        """The spec the library was built with, or None if it does not exist."""
        if not (self.library_dir(library) / "index.sqlite3").exists():
            self._check_not_missing(library)
            return None
        with self._db(library) as conn:
            meta = self._meta(conn, library)
            raw = meta.get("spec")
            if raw is None and (
                meta.get("generation", "0") != "0"
                or conn.execute("SELECT 1 FROM articles LIMIT 1").fetchone()
            ):
                # Articles without the settings they were embedded with: the record was lost.
                raise self._corrupt_db(library, ValueError("its settings record is missing"))
        if raw is None:
            return None
        try:
            return IndexSpec(**json.loads(raw))
        except (TypeError, ValueError) as exc:
            raise self._corrupt_db(library, exc) from exc

    def create(self, library: str, spec: IndexSpec) -> None:
        """Create the library if it does not exist; check the spec if it does."""
        existing = self.spec(library)
        if existing is not None:
            if existing != spec:
                raise IndexMismatchError(library, existing.differences(spec))
            return
        with self._db(library, create=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('spec', ?)",
                (json.dumps(asdict(spec)),),
            )
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            self._seal_meta(conn)
            conn.execute("COMMIT")

    def libraries(self) -> list[str]:
        """Libraries that have an index folder."""
        base = self.root / "libraries"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "index.sqlite3").exists())

    def generation(self, library: str) -> int:
        """Incremented by every committed write."""
        with self._db(library) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def writer(self, library: str, timeout: float = 0.0) -> Iterator[None]:
        """Hold the cross-process write lock of ``library``."""
        folder = self.library_dir(library)
        lock = FileLock(str(folder / "write.lock"))
        owner_file = folder / "writer.json"
        try:
            with self._access_errors(library):
                folder.mkdir(parents=True, exist_ok=True)
                lock.acquire(timeout=timeout)
        except Timeout:
            raise LibraryBusyError(library, _holder(owner_file)) from None
        try:
            with self._access_errors(library):
                owner_file.write_text(
                    json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()})
                )
            yield
        finally:
            with contextlib.suppress(OSError):
                owner_file.unlink()
            lock.release()

    # ------------------------------------------------------------------ vectors on disk

    def _files(self, library: str, generation: int, which: str) -> tuple[Path, Path]:
        vec_prefix, ids_prefix, _, _ = _SETS[which]
        folder = self.library_dir(library)
        return folder / f"{vec_prefix}.{generation}.npy", folder / f"{ids_prefix}.{generation}.npy"

    def _matrix(self, library: str) -> _Matrix:
        """The current vectors, loaded once per generation and checked against the database."""
        for attempt in range(3):
            with self._db(library) as conn:
                conn.execute("BEGIN")  # one snapshot for the generation and the ids
                try:
                    meta = self._meta(conn, library)
                    generation = int(meta.get("generation", "0"))
                    cached = self._matrices.get(library)
                    if cached is not None and cached.generation == generation:
                        return cached
                    db_rows = {
                        which: np.array(conn.execute(sql).fetchall(), dtype=np.int64).reshape(
                            -1, sql.count(",") + 1
                        )
                        for which, (_, _, _, sql) in _SETS.items()
                    }
                except (TypeError, ValueError) as exc:  # a damaged record: an id read back as NULL
                    raise self._corrupt_db(library, exc) from exc
                finally:
                    conn.execute("COMMIT")
            spec = self.spec(library)
            dim = spec.dim if spec else 0
            if generation == 0:
                matrix = _Matrix.empty(dim)
                self._matrices[library] = matrix
                return matrix
            try:
                loaded = {
                    which: self._load_set(library, generation, which, meta, db_rows[which][:, 0], dim)
                    for which in _SETS
                }
            except FileNotFoundError as exc:
                if attempt < 2:
                    # A writer replaced this generation between our two reads; read again.
                    time.sleep(0.05)
                    continue
                raise CorruptIndexError(
                    library,
                    "passage vectors",
                    f"are missing ({Path(str(exc.filename)).name})",
                    rebuildable=True,
                    location=str(exc.filename),
                ) from None
            matrix = _Matrix(
                generation,
                *loaded["passages"],
                *loaded["sentences"],
                db_rows["sentences"][:, 1].copy(),
            )
            self._matrices[library] = matrix
            return matrix
        raise AssertionError("unreachable")

    def _load_set(
        self,
        library: str,
        generation: int,
        which: str,
        meta: dict[str, str],
        db_ids: NDArray[np.int64],
        dim: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Load one vector set and check it against the database; FileNotFoundError passes."""
        vec_path, ids_path = self._files(library, generation, which)
        loading = vec_path  # the file being read, named if it turns out damaged
        try:
            # The headers first: a damaged header claiming billions of rows must not make numpy
            # try to allocate terabytes before anything is checked.
            expected = {vec_path: ((len(db_ids), dim), np.float32), ids_path: ((len(db_ids),), np.int64)}
            for path, (shape, dtype) in expected.items():
                loading = path
                found_shape, found_dtype = _npy_header(path)
                if found_shape != shape or found_dtype != np.dtype(dtype):
                    raise CorruptIndexError(
                        library,
                        _PART[which],
                        f"do not match the database: {path.name} says it holds {found_dtype} of "
                        f"shape {found_shape}, the database expects {np.dtype(dtype)} of shape {shape}",
                        rebuildable=True,
                        location=str(path),
                    )
            loading = vec_path
            vectors = np.load(vec_path, allow_pickle=False)
            loading = ids_path
            ids = np.load(ids_path, allow_pickle=False)
        except (FileNotFoundError, CorruptIndexError):
            raise
        except Exception as exc:  # numpy's header parser raises SyntaxError, TokenError, ValueError...
            if isinstance(exc, PermissionError):  # a file this user may not read is not damaged
                raise LibraryAccessError(library, "unreadable", str(loading), str(exc)) from exc
            why = f"({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else "is damaged"
            raise CorruptIndexError(
                library,
                _PART[which],
                f"cannot be read: {loading.name} {why}",
                rebuildable=True,
                location=str(loading),
            ) from exc
        problem, culprit = None, vec_path
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != dim:
            problem = f"it has shape {vectors.shape} and type {vectors.dtype}, expected (n, {dim}) float32"
        elif vectors.shape[0] != len(ids) or not np.array_equal(ids, db_ids):
            problem = (
                f"it holds {vectors.shape[0]} vectors for {len(ids)} ids, but the database has "
                f"{len(db_ids)} {which}"
                if not vectors.shape[0] == len(ids) == len(db_ids)
                else f"the ids of its vectors are not those of the database's {which}"
            )
            ids_crc = meta.get(f"{_SETS[which][2]}_ids")
            if ids_crc is not None and ids_crc == _crc(ids):
                # The ids file is as written: the database's ids are what changed.
                raise self._corrupt_db(library, ValueError(f"its {which} no longer match their vectors"))
            if vectors.shape[0] == len(db_ids):
                culprit = ids_path  # the vectors are as many as they should be: the ids are wrong
        elif _crc(vectors) != meta.get(_SETS[which][2]):
            problem = "its checksum does not match"
        if problem:
            raise CorruptIndexError(
                library,
                _PART[which],
                f"do not match the database: {problem}",
                rebuildable=True,
                location=str(culprit),
            )
        return vectors, ids

    # ------------------------------------------------------------------ writing

    def write(self, library: str, add: Sequence[ArticleWrite], delete: Sequence[str] = ()) -> None:
        """Atomically delete ``delete`` and add ``add``; same-id articles are replaced."""
        self._commit(library, add, delete, self._matrix(library))

    def restore(self, library: str, add: Sequence[ArticleWrite], *, more: bool = False) -> None:
        """Like :meth:`write`, but passages keep the ids in ``add`` (copying a library keeps its ids)."""
        if add:
            self._commit(library, add, (), self._matrix(library), keep_ids=True)

    def export(self, library: str, article_ids: Sequence[str] | None = None) -> Iterator[ArticleWrite]:
        """Stored articles as writes, oldest first, passages with their ids, sentences in stored order."""
        wanted = None if article_ids is None else set(article_ids)
        for info in self.list_articles(library):
            if wanted is not None and info.id not in wanted:
                continue
            article = self.get_article(library, info.id)
            passages = self.article_passages(library, info.id)
            if article is None:
                continue
            pids = [p.id for p in passages]
            ordinal = {p.id: p.ordinal for p in passages}
            terms: dict[int, dict[str, int]] = {pid: {} for pid in pids}
            marks = ",".join("?" * len(pids))
            with self._db(library) as conn:
                for pid, term, tf in conn.execute(
                    f"SELECT passage_id, term, tf FROM postings WHERE passage_id IN ({marks})", pids
                ):
                    terms[pid][term] = tf
            sentences = self.sentences(library, pids)
            dim = self._matrix(library).vectors.shape[1]
            yield ArticleWrite(
                info=info,
                text=article.text,
                paragraphs=article.paragraphs,
                layout=article.layout,
                passages=passages,
                vectors=self._vectors(self._matrix(library), pids),
                terms=[terms[pid] for pid in pids],
                sentences=[(ordinal[s.passage_id], s.start, s.end) for s in sentences],
                sentence_vectors=np.asarray([s.vector for s in sentences], dtype=np.float32).reshape(-1, dim),
            )

    def reset(self, library: str, spec: IndexSpec, add: Sequence[ArticleWrite]) -> None:
        """Atomically replace the whole library (and its spec) with ``add``.

        Used by rebuild; it never reads the old vectors, so it also repairs a damaged file.
        """
        self._commit(library, add, (), _Matrix.empty(spec.dim), spec=spec)

    def _commit(
        self,
        library: str,
        add: Sequence[ArticleWrite],
        delete: Sequence[str],
        current: _Matrix,
        spec: IndexSpec | None = None,
        keep_ids: bool = False,
    ) -> None:
        """Write the next generation: vector files first, then the transaction that adopts them."""
        with self._db(library, create=True) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
            new_gen = (int(row[0]) if row else 0) + 1
            paths = [p for which in _SETS for p in self._files(library, new_gen, which)]
            conn.execute("BEGIN IMMEDIATE")
            try:
                if spec is not None:  # reset: everything goes
                    conn.execute("DELETE FROM articles")
                    conn.execute("DELETE FROM term_blocks")
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('spec', ?)", (json.dumps(asdict(spec)),)
                    )
                removed: list[int] = []
                touched: set[tuple[str, int]] = set()  # (term, block) rows holding removed postings
                for article_id in set(delete) | {w.info.id for w in add}:
                    pids = [
                        r[0]
                        for r in conn.execute("SELECT id FROM passages WHERE article_id=?", (article_id,))
                    ]
                    removed.extend(pids)
                    touched.update(
                        (term, pid >> BLOCK_BITS)
                        for term, pid in conn.execute(
                            f"SELECT term, passage_id FROM postings WHERE passage_id IN ({','.join('?' * len(pids))})",
                            pids,
                        )
                    )
                    conn.execute("DELETE FROM articles WHERE id=?", (article_id,))
                gone = np.asarray(removed, dtype=np.int64)
                self._prune_blocks(conn, touched, gone)
                # Indexing by a mask copies the arrays; a write that removes nothing (most
                # ingests) takes them whole, and one that only removes uses the masked copy as
                # it is (`_joined`), so a write holds the vectors twice (old and new) and not
                # three times: at 1,000,000 passages, 16 GB instead of 24.
                keep: slice | NDArray[np.bool_] = slice(None)
                keep_s: slice | NDArray[np.bool_] = slice(None)
                if len(gone):
                    keep = ~np.isin(current.ids, gone)
                    keep_s = ~np.isin(current.sentence_passages, gone)
                new_ids: list[int] = []
                new_sids: list[int] = []
                new_spids: list[int] = []
                new_postings: list[tuple[str, int, int, int]] = []
                for w in add:
                    pids, article_sids = self._insert_article(conn, w, new_postings, keep_ids)
                    new_ids.extend(pids)
                    new_sids.extend(article_sids)
                    new_spids.extend(pids[ordinal] for ordinal, _, _ in w.sentences)
                # A new passage's postings join its terms' blocks (new ids: mostly each term's last).
                conn.executemany(
                    "INSERT INTO term_blocks VALUES (?,?,?,?,?) ON CONFLICT (term, block) DO UPDATE SET "
                    # || makes text of two blobs (their bytes, unchanged): cast back to a blob.
                    "offsets = CAST(offsets || excluded.offsets AS BLOB), tfs = CAST(tfs || excluded.tfs AS BLOB), "
                    "lengths = CAST(lengths || excluded.lengths AS BLOB)",
                    posting_blocks(new_postings),
                )
                dim = current.vectors.shape[1]
                vectors = _joined([current.vectors[keep]] + [w.vectors.astype(np.float32) for w in add])
                ids = np.concatenate([current.ids[keep], np.asarray(new_ids, dtype=np.int64)])
                if keep_ids and len(ids) and np.any(np.diff(ids) < 0):
                    # Restored ids may fall between existing ones; rows stay in passage-id order.
                    order = np.argsort(ids, kind="stable")
                    vectors, ids = np.ascontiguousarray(vectors[order]), ids[order]
                svectors = _joined(
                    [current.sentence_vectors[keep_s]]
                    + [
                        (w.sentence_vectors if w.sentence_vectors is not None else np.zeros((0, dim)))
                        .astype(np.float32)
                        .reshape(-1, dim)
                        for w in add
                    ]
                )
                sids = np.concatenate([current.sentence_ids[keep_s], np.asarray(new_sids, dtype=np.int64)])
                spids = np.concatenate(
                    [current.sentence_passages[keep_s], np.asarray(new_spids, dtype=np.int64)]
                )
                arrays: tuple[NDArray[np.generic], ...] = (vectors, ids, svectors, sids)
                for path, array in zip(paths, arrays, strict=True):
                    _save_npy(path, array)
                conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [
                        ("generation", str(new_gen)),
                        ("vectors_crc", _crc(vectors)),
                        ("sentences_crc", _crc(svectors)),
                        # The ids files' own checksums tell a damaged ids file from damaged ids
                        # in the database when the two disagree.
                        ("vectors_crc_ids", _crc(ids)),
                        ("sentences_crc_ids", _crc(sids)),
                        ("updated_at", now()),
                    ],
                )
                self._seal_meta(conn)
                conn.execute("COMMIT")
            except BaseException:
                # BaseException: Ctrl-C mid-write must roll back too.
                conn.execute("ROLLBACK")
                for p in paths:
                    with contextlib.suppress(OSError):
                        p.unlink()
                raise
            self._matrices[library] = _Matrix(new_gen, vectors, ids, svectors, sids, spids)
        self._remove_stale_files(library, keep=new_gen)

    def _prune_blocks(
        self, conn: sqlite3.Connection, touched: set[tuple[str, int]], gone: NDArray[np.int64]
    ) -> None:
        """Take the postings of the ``gone`` passages out of the ``touched`` block rows."""
        for term, block in sorted(touched):
            row = conn.execute(
                "SELECT offsets, tfs, lengths FROM term_blocks WHERE term=? AND block=?", (term, block)
            ).fetchone()
            if row is None:
                continue
            kept = prune_block(block, row, gone)
            if kept is None:
                conn.execute("DELETE FROM term_blocks WHERE term=? AND block=?", (term, block))
            else:
                conn.execute(
                    "UPDATE term_blocks SET offsets=?, tfs=?, lengths=? WHERE term=? AND block=?",
                    (*kept, term, block),
                )

    def _insert_article(
        self,
        conn: sqlite3.Connection,
        w: ArticleWrite,
        postings: list[tuple[str, int, int, int]],
        keep_ids: bool = False,
    ) -> tuple[list[int], list[int]]:
        """Insert one article, its passages and sentences; its postings go on ``postings``."""
        a = w.info
        added_at = a.added_at or now()
        fields = (a.id, a.key, a.title, a.byline, a.date, a.url, a.source, a.content_hash)
        conn.execute(
            "INSERT INTO articles (id, key, title, byline, date, url, source, content_hash, text, paragraphs, "
            "passage_count, added_at, info_md5, layout) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *fields,
                w.text,
                json.dumps(w.paragraphs),
                len(w.passages),
                added_at,
                info_md5(*fields, len(w.passages), added_at),
                w.layout.to_json(),
            ),
        )
        ids: list[int] = []
        for p, terms in zip(w.passages, w.terms, strict=True):
            length = sum(terms.values())
            cur = conn.execute(
                'INSERT INTO passages (id, article_id, ordinal, paragraph, start, "end", text, length, '
                "text_md5, section, kind, page, page_paragraph) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    p.id if keep_ids else None,  # None: the next AUTOINCREMENT id
                    a.id,
                    p.ordinal,
                    p.paragraph,
                    p.start,
                    p.end,
                    p.text,
                    length,
                    passage_row_md5(a.id, p),
                    p.section or None,
                    p.kind or None,
                    p.page or None,
                    p.page_paragraph or None,
                ),
            )
            pid = _row_id(cur)
            ids.append(pid)
            conn.executemany("INSERT INTO postings VALUES (?,?,?)", [(t, pid, n) for t, n in terms.items()])
            postings.extend((t, pid, n, length) for t, n in terms.items())
        sids: list[int] = []
        for ordinal, start, end in w.sentences:
            cur = conn.execute(
                'INSERT INTO sentences (passage_id, start, "end") VALUES (?,?,?)', (ids[ordinal], start, end)
            )
            sids.append(_row_id(cur))
        return ids, sids

    def _remove_stale_files(self, library: str, keep: int) -> None:
        """Delete vector files of other generations: leftovers of old writes or crashed ones."""
        for path in self.library_dir(library).glob("*.npy*"):
            parts = path.name.split(".")
            if len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) != keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    # ------------------------------------------------------------------ reading

    # The paragraph count comes from the stored spans (SQLite's JSON functions).
    _INFO_COLS = info_columns("json_array_length")

    def list_articles(self, library: str) -> list[ArticleInfo]:
        """All articles, oldest first."""
        with self._db(library) as conn:
            rows = conn.execute(f"SELECT {self._INFO_COLS} FROM articles ORDER BY added_at, rowid").fetchall()
        return [info_from_row(r, library, self._db_path(library)) for r in rows]

    def get_article(self, library: str, article_id: str) -> Article | None:
        """An article with its cleaned text."""
        with self._db(library) as conn:
            row = conn.execute(
                f"SELECT {self._INFO_COLS}, text, paragraphs, layout FROM articles WHERE id=?", (article_id,)
            ).fetchone()
            # A miss is rare (a forgotten article); make sure it is not a damaged index hiding one.
            if (
                row is None
                and conn.execute("SELECT 1 FROM articles NOT INDEXED WHERE id=?", (article_id,)).fetchone()
            ):
                raise self._corrupt_db(library, ValueError("its article index is damaged"))
        if row is None:
            return None
        try:
            spans = json.loads(row[-2])
        except (ValueError, RecursionError):
            spans = None  # damaged JSON: refused as unreadable spans
        return article_from_row(row[:-2], spans, library, self._db_path(library), row[-1])

    def find_articles(
        self,
        library: str,
        *,
        keys: Sequence[str] = (),
        content_hashes: Sequence[str] = (),
        ids: Sequence[str] = (),
    ) -> list[ArticleInfo]:
        """Every article whose key, content hash or id is among those given."""
        clauses: list[str] = []
        args: list[object] = []
        for column, values in (("key", keys), ("content_hash", content_hashes), ("id", ids)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if not clauses:
            return []
        with self._db(library) as conn:
            rows = conn.execute(
                f"SELECT {self._INFO_COLS} FROM articles WHERE {' OR '.join(clauses)} ORDER BY rowid", args
            ).fetchall()
        return [info_from_row(r, library, self._db_path(library)) for r in rows]

    def article_infos(self, library: str, ids: Sequence[str]) -> dict[str, ArticleInfo]:
        """Metadata of articles by id, without their text."""
        if not ids:
            return {}
        with self._db(library) as conn:
            rows = conn.execute(
                f"SELECT {self._INFO_COLS} FROM articles WHERE id IN ({','.join('?' * len(ids))})",
                list(ids),
            ).fetchall()
        return infos_by_id(info_from_row(r, library, self._db_path(library)) for r in rows)

    def _passage_rows(
        self, conn: sqlite3.Connection, library: str, where: str, args: Sequence[object]
    ) -> list[Passage]:
        rows = conn.execute(f"SELECT {PASSAGE_COLUMNS} FROM passages {where}", args).fetchall()
        return [passage_from_row(r, library, self._db_path(library)) for r in rows]

    def passages(self, library: str, ids: Sequence[int]) -> list[Passage]:
        """Passages by id, in the order asked."""
        if not ids:
            return []
        with self._db(library) as conn:
            found = {
                p.id: p
                for p in self._passage_rows(
                    conn, library, f"WHERE id IN ({','.join('?' * len(ids))})", list(ids)
                )
            }
        return in_order(found, ids)

    def article_passages(self, library: str, article_id: str) -> list[Passage]:
        """An article's passages in order."""
        with self._db(library) as conn:
            passages = self._passage_rows(conn, library, "WHERE article_id=? ORDER BY ordinal", (article_id,))
            count = conn.execute("SELECT passage_count FROM articles WHERE id=?", (article_id,)).fetchone()
        if count is not None and [p.ordinal for p in passages] != list(range(count[0])):
            # A damaged index page hides rows from a lookup; a summary or an export must not
            # silently leave part of an article out.
            raise self._damaged(library, f"is missing passages of article {article_id}")
        return passages

    def _vectors(self, m: _Matrix, ids: Sequence[int]) -> NDArray[np.float32]:
        """Rows of ``ids`` in the matrix, in that order (every id must be there)."""
        rows = np.searchsorted(m.ids, np.asarray(ids, dtype=np.int64))
        if len(ids) and (rows.max() >= len(m.ids) or not np.array_equal(m.ids[rows], ids)):
            raise AssertionError("passage ids and vectors disagree inside one generation")
        return m.vectors[rows]

    def evidence(self, library: str, ids: Sequence[int]) -> list[PassageEvidence]:
        """Passages with their vectors and sentences, in the order asked, read in one snapshot."""
        if not ids:
            return []
        with self._lock:  # the passages, sentences and matrix of one generation
            m = self._matrix(library)
            passages = self.passages(library, ids)
            sentences = self._sentence_rows(library, m, [p.id for p in passages])
        vectors = self._vectors(m, [p.id for p in passages])
        by_passage: dict[int, list[SentenceRow]] = {}
        for row in sentences:
            by_passage.setdefault(row.passage_id, []).append(row)
        for p in passages:
            if not all(p.start <= r.start and r.end <= p.end for r in by_passage.get(p.id, ())):
                # A sentence outside its passage would put the bold answer on the wrong words.
                raise self._damaged(library, "holds damaged sentence records")
        return [
            PassageEvidence(p, vectors[i], tuple(by_passage.get(p.id, ()))) for i, p in enumerate(passages)
        ]

    def _allowed(self, library: str, article_ids: Sequence[str]) -> NDArray[np.int64]:
        with self._db(library) as conn:
            rows = conn.execute(
                f"SELECT id FROM passages WHERE article_id IN ({','.join('?' * len(article_ids))})",
                list(article_ids),
            ).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def nearest(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Exact cosine top-k of passages and of passages by their best sentence (numpy).

        Ties go to the earlier passage.
        """
        m = self._matrix(library)
        vectors, ids = m.vectors, m.ids
        svectors, owners = m.sentence_vectors, m.sentence_passages
        if article_ids is not None:
            allowed = self._allowed(library, article_ids)
            keep, keep_s = np.isin(ids, allowed), np.isin(owners, allowed)
            vectors, ids, svectors, owners = vectors[keep], ids[keep], svectors[keep_s], owners[keep_s]
        passages = top_k(_scores(vectors, query), ids, k) if len(ids) else []
        if len(owners) == 0:
            return passages, []
        scores = _scores(svectors, query)
        # Sentence rows are grouped by passage (ids grow with insertion), so a passage's best
        # sentence is a max over one contiguous run.
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        return passages, top_k(np.maximum.reduceat(scores, starts), owners[starts], k)

    def sentences(self, library: str, passage_ids: Sequence[int]) -> list[SentenceRow]:
        """Stored sentences of ``passage_ids`` with their vectors, grouped in the order asked."""
        if not passage_ids:
            return []
        with self._lock:
            return self._sentence_rows(library, self._matrix(library), passage_ids)

    def _sentence_rows(self, library: str, m: _Matrix, passage_ids: Sequence[int]) -> list[SentenceRow]:
        if not passage_ids:
            return []
        with self._db(library) as conn:
            rows = conn.execute(
                f'SELECT id, passage_id, start, "end" FROM sentences '
                f"WHERE passage_id IN ({','.join('?' * len(passage_ids))}) ORDER BY id",
                list(passage_ids),
            ).fetchall()
        if not rows:
            return []
        wanted = set(passage_ids)
        if not all(
            type(i) is int and pid in wanted and type(start) is int and type(end) is int and 0 <= start < end
            for i, pid, start, end in rows
        ):
            raise self._damaged(library, "holds damaged sentence records")
        sids = np.asarray([r[0] for r in rows], dtype=np.int64)
        found = np.minimum(np.searchsorted(m.sentence_ids, sids), len(m.sentence_ids) - 1)
        if len(m.sentence_ids) == 0 or not np.array_equal(m.sentence_ids[found], sids):
            # Every sentence has a vector in this generation unless a record was damaged.
            raise self._damaged(library, "holds sentence records without vectors")
        return group_by_passage(
            (
                SentenceRow(pid, start, end, m.sentence_vectors[row])
                for (_, pid, start, end), row in zip(rows, found, strict=True)
            ),
            passage_ids,
        )

    def lexical(
        self, library: str, terms: Sequence[str], article_ids: Sequence[str] | None = None
    ) -> LexicalRows:
        """Passage count, mean analysed length, document frequencies and postings of ``terms``."""
        terms = list(dict.fromkeys(terms))
        with self._db(library) as conn:
            conn.execute("BEGIN")  # one snapshot for the statistics and the postings
            try:
                n, total, lengths, bad = self._passage_stats(conn, library)
                if bad:
                    raise self._damaged(library, "holds damaged word statistics")
                allowed = self._allowed(library, article_ids) if article_ids is not None else None
                if not terms:
                    postings: dict[str, TermPostings] = {}
                elif conn.execute("SELECT 1 FROM meta WHERE key=?", (_BLOCKS_READY,)).fetchone():
                    marks = ",".join("?" * len(terms))
                    rows = conn.execute(
                        f"SELECT term, block, offsets, tfs, lengths FROM term_blocks WHERE term IN ({marks})",
                        terms,
                    ).fetchall()
                    postings = gather_postings(rows)
                else:
                    postings = self._legacy_postings(conn, terms)
            except ValueError as exc:
                raise self._damaged(library, "holds damaged word statistics") from exc
            finally:
                conn.execute("COMMIT")
        # A damaged page can hand back a row of a term nobody asked for, or postings of passages
        # that are not there (or not of that length): the statistics catch both.
        wanted = set(terms)
        for term, p in postings.items():
            pids = p.passage_ids
            if (
                term not in wanted
                or (len(pids) and (pids.min() < 0 or pids.max() >= len(lengths)))
                or not np.array_equal(np.minimum(lengths[pids], MAX_BLOCK_COUNT), p.lengths)
            ):
                raise self._damaged(library, "holds damaged word statistics")
        df = {term: len(p) for term, p in postings.items()}
        if allowed is not None:
            postings = restrict_postings(postings, allowed)
        return LexicalRows(int(n), (total / n if n else 0.0), df, postings)

    def term_counts(self, library: str, terms: Sequence[str]) -> dict[str, int]:
        """Document frequencies from the blocks' sizes (SQLite reads a blob's size from its
        record header, not the blob)."""
        terms = list(dict.fromkeys(terms))
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        with self._db(library) as conn:
            if conn.execute("SELECT 1 FROM meta WHERE key=?", (_BLOCKS_READY,)).fetchone():
                sql = f"SELECT term, sum(length(offsets)) / 2 FROM term_blocks WHERE term IN ({marks}) GROUP BY term"
            else:
                sql = f"SELECT term, count(*) FROM postings WHERE term IN ({marks}) GROUP BY term"
            rows = conn.execute(sql, terms).fetchall()
        if not all(type(t) is str and t in terms and type(n) is int for t, n in rows):
            raise self._damaged(library, "holds damaged word statistics")
        return {t: n for t, n in rows if n}

    @staticmethod
    def _legacy_postings(conn: sqlite3.Connection, terms: list[str]) -> dict[str, TermPostings]:
        """The postings of ``terms`` from the postings table: a read-only library made before
        ``term_blocks`` existed (a writable open fills that table)."""
        rows = conn.execute(
            "SELECT t.term, t.passage_id, t.tf, p.length FROM postings t JOIN passages p ON p.id = t.passage_id "
            f"WHERE t.term IN ({','.join('?' * len(terms))})",
            terms,
        ).fetchall()
        by_term: dict[str, list[tuple[int, int, int]]] = {}
        for term, pid, tf, length in rows:
            if not all(type(v) is int for v in (pid, tf, length)):
                raise ValueError("a posting is damaged")
            by_term.setdefault(term, []).append((pid, tf, length))
        return {
            term: TermPostings(*(np.asarray(c, dtype=np.int64) for c in zip(*found, strict=True)))
            for term, found in by_term.items()
        }

    def _passage_stats(
        self, conn: sqlite3.Connection, library: str
    ) -> tuple[int, int, NDArray[np.int64], float]:
        """Passage count, total analysed length, each passage's length by id (-1: no passage),
        and how many damaged values were met: read once per generation (every write changes
        it), not per question, which scanned the whole passages table each time (60 ms at
        100,000 passages)."""
        (generation,) = conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone() or ("0",)
        cached = self._stats.get(library)
        if cached is not None and cached[0] == generation:
            return cached[1]
        # SQLite hands back what a damaged page holds (a NULL or a text where a count belongs):
        # the statistics, which read these rows anyway, count such values.
        rows = conn.execute("SELECT id, length FROM passages").fetchall()
        bad = float(sum(1 for pid, length in rows if type(pid) is not int or type(length) is not int))
        good = [(pid, length) for pid, length in rows if type(pid) is int and type(length) is int]
        lengths = np.full(max((pid for pid, _ in good), default=0) + 1, -1, dtype=np.int64)
        for pid, length in good:
            lengths[pid] = length
        stats = (len(rows), sum(length for _, length in good), lengths, bad)
        if not bad:
            self._stats[library] = (generation, stats)
        return stats

    # ------------------------------------------------------------------ feedback and cache

    def add_feedback(self, library: str, feedback: Feedback) -> None:
        """Record a vote."""
        with self._db(library, create=True) as conn:
            conn.execute(
                "INSERT INTO feedback (question, passage_id, article_id, vote, user, created_at, extra) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    feedback.question,
                    feedback.answer_passage_id,
                    feedback.article_id,
                    feedback.vote,
                    feedback.user,
                    feedback.created_at or now(),
                    json.dumps(feedback.extra),
                ),
            )

    def list_feedback(self, library: str, limit: int = 100) -> list[Feedback]:
        """Newest votes first."""
        with self._db(library) as conn:
            rows = conn.execute(
                "SELECT question, passage_id, article_id, vote, user, created_at, extra "
                "FROM feedback ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Feedback(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def subscriptions(self, library: str) -> dict[str, str]:
        """The library's subscriptions: URL -> state (JSON text written by the caller)."""
        with self._db(library) as conn:
            if not self._has_subscriptions(conn):
                return {}
            return dict(conn.execute("SELECT url, state FROM subscriptions ORDER BY url").fetchall())

    def put_subscription(self, library: str, url: str, state: str) -> None:
        """Add a subscription or replace its state."""
        with self._db(library, create=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS subscriptions (url TEXT PRIMARY KEY, state TEXT NOT NULL)"
            )
            conn.execute("INSERT OR REPLACE INTO subscriptions (url, state) VALUES (?, ?)", (url, state))

    def delete_subscription(self, library: str, url: str) -> bool:
        """Remove a subscription; True if there was one."""
        with self._db(library) as conn:
            if not self._has_subscriptions(conn):
                return False
            return conn.execute("DELETE FROM subscriptions WHERE url=?", (url,)).rowcount == 1

    @staticmethod
    def _has_subscriptions(conn: sqlite3.Connection) -> bool:
        # A library made before subscriptions existed has no table until one is added.
        return conn.execute("SELECT 1 FROM sqlite_schema WHERE name='subscriptions'").fetchone() is not None

    def set_feedback_reason(self, library: str, answer_id: str, user: str, reason: str) -> bool:
        """Add ``reason`` to the vote ``user`` gave answer ``answer_id``; False if there is none."""
        with self._db(library) as conn:
            return (
                conn.execute(
                    "UPDATE feedback SET extra = json_set(extra, '$.reason', ?) "
                    "WHERE user = ? AND json_extract(extra, '$.answer_id') = ?",
                    (reason, user, answer_id),
                ).rowcount
                > 0
            )

    def delete_feedback(self, library: str, user: str) -> int:
        """Remove every vote of ``user``; how many were removed."""
        if not self._exists(library):
            return 0
        with self._db(library) as conn:
            return conn.execute("DELETE FROM feedback WHERE user = ?", (user,)).rowcount

    # ------------------------------------------------------------------ records

    def _exists(self, library: str) -> bool:
        return (self.library_dir(library) / "index.sqlite3").exists()

    @staticmethod
    def _has_records(conn: sqlite3.Connection) -> bool:
        # A read-only library made before records existed has no table (the schema adds it on open).
        return conn.execute("SELECT 1 FROM sqlite_schema WHERE name='records'").fetchone() is not None

    def put_record(self, library: str, record: Record) -> None:
        """Add a record or replace the one of the same kind and key."""
        with self._db(library, create=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO records (kind, key, user, at, value) VALUES (?,?,?,?,?)",
                (record.kind, record.key, record.user, record.at or now(), record.value),
            )

    @staticmethod
    def _record_filter(
        kind: str | None,
        keys: Sequence[str] | None,
        user: str | None,
        since: str | None = None,
        before: str | None = None,
    ) -> tuple[str, list[Any]]:
        where, args = ["1=1"], []
        for column, op, value in (
            ("kind", "=", kind),
            ("user", "=", user),
            ("at", ">=", since),
            ("at", "<", before),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if keys is not None:
            where.append(f"key IN ({','.join('?' * len(keys))})")
            args += list(keys)
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
        if not self._exists(library) or keys == []:
            return []
        where, args = self._record_filter(kind, keys, user, since)
        with self._db(library) as conn:
            if not self._has_records(conn):
                return []
            rows = conn.execute(
                f"SELECT kind, key, value, user, at FROM records WHERE {where} ORDER BY at, key", args
            ).fetchall()
        return [Record(*r) for r in rows]

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
        if not self._exists(library) or keys == []:
            return 0
        where, args = self._record_filter(kind, keys, user, before=before)
        with self._db(library) as conn:
            if not self._has_records(conn):
                return 0
            return conn.execute(f"DELETE FROM records WHERE {where}", args).rowcount

    def drop(self, library: str) -> bool:
        """Delete the library's folder (holding its write lock, so no ingest is half-way)."""
        folder = self.library_dir(library)
        if not folder.exists():
            return False
        with self.writer(library, timeout=30.0):
            with self._lock:
                conn = self._conns.pop(library, None)
                if conn is not None:
                    conn.close()
                self._matrices.pop(library, None)
                self._stats.pop(library, None)
            with self._access_errors(library):
                for child in folder.iterdir():
                    if child.name not in ("write.lock", "writer.json"):
                        if child.is_dir():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
        return True

    def get_cached(self, library: str, kind: str, key: str) -> str | None:
        """A cached value or None."""
        with self._db(library) as conn:
            row = conn.execute("SELECT value FROM cache WHERE kind=? AND key=?", (kind, key)).fetchone()
        return row[0] if row else None

    def put_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> None:
        """Cache a value tied to an article."""
        with self._db(library) as conn:
            # Through a SELECT, so that nothing is kept for an article already gone (like PostgreSQL).
            conn.execute(
                "INSERT OR REPLACE INTO cache SELECT ?, ?, id, ? FROM articles WHERE id=?",
                (kind, key, value, article_id),
            )

    def claim_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> bool:
        """Cache a value only if ``key`` is new; True if this call stored it."""
        with self._db(library) as conn:
            # SQLite serialises writers across processes: one INSERT OR IGNORE wins.
            cur = conn.execute(
                "INSERT OR IGNORE INTO cache SELECT ?, ?, id, ? FROM articles WHERE id=?",
                (kind, key, value, article_id),
            )
            return cur.rowcount == 1


# Below this many rows one BLAS thread is faster: on 2 busy cores a 10k x 384 product took
# 32 ms with OpenBLAS's 2 threads (waiting threads spin) and 4 ms with one. Above it, threads
# pay for themselves (300k rows: 164 ms against 217 ms).
_PARALLEL_ROWS = 200_000


@functools.cache
def _blas_controller() -> Any:  # threadpoolctl ships no type information
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency of scikit-learn and of citebot
        return None
    return ThreadpoolController()


def _scores(matrix: NDArray[np.float32], query: NDArray[np.float32]) -> NDArray[np.float32]:
    """``matrix @ query``, on one BLAS thread unless the matrix is large."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    controller = _blas_controller()
    if matrix.shape[0] >= _PARALLEL_ROWS or controller is None:
        return matrix @ q
    with controller.limit(limits=1, user_api="blas"):
        return matrix @ q


def _joined(parts: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    """The rows of ``parts`` as one C-contiguous array; a single part (a write that only
    removes) is used as it is, without the copy concatenation would make of it."""
    return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts))


def _row_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just added."""
    if cur.lastrowid is None:
        raise AssertionError("INSERT without a row id")
    return cur.lastrowid


def _save_npy(path: Path, array: NDArray[np.generic]) -> None:
    """Write an array durably: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
