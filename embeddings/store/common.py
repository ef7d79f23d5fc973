"""What both stores share: row mappings, the time stamp, top-k selection, grouping of sentences.

The stores share a contract (the :class:`~embeddings.store.Store` protocol and the contract
suite), not an algorithm, so there is no base class; only helpers that must give the same
result in both live here, so that both stores answer with the same ids, scores and tie order.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..articles import article_digest
from ..errors import CorruptIndexError
from ..types import Article, ArticleInfo, Layout, Passage
from . import SentenceRow, TermPostings, article_info

T = TypeVar("T")

PASSAGE_COLUMNS = (
    'id, article_id, ordinal, paragraph, start, "end", text, text_md5, section, kind, page, page_paragraph'
)
"""The columns :func:`passage_from_row` reads, in order."""
PASSAGE_WIDTH = PASSAGE_COLUMNS.count(",") + 1
"""How many columns that is (a query may select more after them)."""


def text_md5(text: str) -> str:
    """The md5 of a text, hex (PostgreSQL's ``md5()`` agrees)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


_ROW_CHECKSUM = "r1:"
"""The prefix of a passage checksum over the whole row (a bare md5 covers the text alone: rows
written before the row checksum existed keep that and are checked as far as it goes)."""
_LAID_OUT_CHECKSUM = "r2:"
"""The prefix of the checksum of a passage with a section, a kind or a page: those are covered too."""


def passage_md5(
    article_id: str,
    ordinal: int,
    paragraph: int,
    start: int,
    end: int,
    text: str,
    section: str = "",
    kind: str = "",
    page: int = 0,
    page_paragraph: int = 0,
) -> str:
    """The checksum stored with a passage: its text and everything its citation is made of."""
    fields: tuple[object, ...] = (article_id, ordinal, paragraph, start, end, text)
    if section or kind or page:
        laid_out = (*fields, section, kind, *((page, page_paragraph) if page else ()))
        return _LAID_OUT_CHECKSUM + text_md5("\x1f".join(map(str, laid_out)))
    return _ROW_CHECKSUM + text_md5("\x1f".join(map(str, fields)))


def passage_row_md5(article_id: str, p: Passage) -> str:
    """:func:`passage_md5` of a passage about to be stored under ``article_id``."""
    return passage_md5(
        article_id,
        p.ordinal,
        p.paragraph,
        p.start,
        p.end,
        p.text,
        p.section,
        p.kind,
        p.page,
        p.page_paragraph,
    )


def info_md5(
    article_id: str,
    key: str,
    title: str,
    byline: str | None,
    date: str | None,
    url: str | None,
    source: str | None,
    content_hash: str,
    passage_count: int,
    added_at: str,
) -> str:
    """The checksum stored with an article's metadata, as inserted (title, byline, date and url
    make its citations). PostgreSQL's migration 0003 computes the same from the stored columns."""
    fields = (article_id, key, title, byline, date, url, source, content_hash, passage_count, added_at)
    return text_md5("\x1f".join("" if f is None else str(f) for f in fields))


def info_columns(array_length: str) -> str:
    """The columns :func:`info_from_row` reads, in order.

    ``array_length`` is the SQL function that counts the stored paragraph spans
    (``json_array_length`` in SQLite, ``jsonb_array_length`` in PostgreSQL).
    """
    return (
        f"id, key, title, byline, date, url, source, content_hash, {array_length}(paragraphs), "
        "passage_count, added_at, info_md5"
    )


def now() -> str:
    """The current UTC time as stored: ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _altered(library: str, what: str, location: str | None) -> CorruptIndexError:
    return CorruptIndexError(
        library,
        "database",
        f"holds {what} that no longer matches its checksum: it was altered after it was stored",
        rebuildable=False,
        location=location,
    )


def passage_from_row(row: Sequence[Any], library: str, location: str | None = None) -> Passage:
    """A :class:`Passage` from a row of :data:`PASSAGE_COLUMNS` (a database row: typed by the driver).

    The row is checked against its stored checksum: a quote is the source, so a passage whose
    text or citation changed inside the database (a flipped byte, an edit by hand) is refused,
    never quoted. Rows written before checksums existed (``text_md5`` NULL) are not checked.
    """
    pid, article_id, ordinal, paragraph, start, end, text, md5, section, kind, page, on_page = row[
        :PASSAGE_WIDTH
    ]
    section, kind, page, on_page = section or "", kind or "", page or 0, on_page or 0
    if md5 is not None:
        if str(md5).startswith((_ROW_CHECKSUM, _LAID_OUT_CHECKSUM)):
            expected = passage_md5(
                article_id, ordinal, paragraph, start, end, text, section, kind, page, on_page
            )
        else:
            expected = text_md5(str(text))
        if expected != md5:
            raise _altered(library, f"a passage (passage {pid} of article {article_id})", location)
    try:
        return Passage(
            str(article_id),
            int(ordinal),
            int(paragraph),
            int(start),
            int(end),
            str(text),
            id=int(pid),
            section=str(section),
            kind=str(kind),
            page=int(page),
            page_paragraph=int(on_page),
        )
    except (TypeError, ValueError):  # a damaged record: a number read back as NULL or text
        raise _altered(library, f"a passage (passage {pid})", location) from None


def info_from_row(row: Sequence[Any], library: str, location: str | None = None) -> ArticleInfo:
    """An :class:`ArticleInfo` from a row of :func:`info_columns`, checked against its checksum
    (NULL for articles stored before it existed, which are not checked)."""
    try:
        info = article_info(row[:-1])
    except (TypeError, ValueError):  # a damaged record: a number read back as NULL or text
        raise _altered(library, f"the record of article {row[0]!r}", location) from None
    stored = row[-1]
    if stored is not None:
        expected = info_md5(
            info.id,
            info.key,
            info.title,
            info.byline,
            info.date,
            info.url,
            info.source,
            info.content_hash,
            info.passage_count,
            info.added_at,
        )
        if expected != stored:
            raise _altered(library, f"the title, byline, date or link of article {info.id}", location)
    return info


def article_from_row(
    row: Sequence[Any], paragraphs: object, library: str, location: str | None = None, layout: object = None
) -> Article:
    """An :class:`Article` from a row of :func:`info_columns` plus its text, with its decoded
    paragraph spans and stored layout (JSON text or NULL); the text, spans and layout are
    checked against the article's content hash."""
    info = info_from_row(row[:-1], library, location)
    text = str(row[-1])
    try:
        if not (
            isinstance(paragraphs, list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in paragraphs
            )
        ):
            raise ValueError("paragraph spans are pairs of numbers")
        if layout is not None and not isinstance(layout, str):
            raise ValueError("a layout is JSON text")
        parsed = Layout.from_json(layout, len(paragraphs))
    except (ValueError, RecursionError):
        raise CorruptIndexError(
            library,
            "database",
            "holds paragraph spans or a layout that cannot be read",
            rebuildable=False,
            location=location,
        ) from None
    spans = tuple((a, b) for a, b in paragraphs)
    if article_digest(info.title, info.byline, info.date, info.url, text, spans, parsed) != info.content_hash:
        raise _altered(library, f"the text of article {info.id}", location)
    return Article(info, text, spans, parsed)


def in_order(found: dict[int, T], ids: Iterable[int]) -> list[T]:
    """The values of ``found`` for ``ids``, in that order; ids not found are left out."""
    return [found[i] for i in ids if i in found]


def infos_by_id(infos: Iterable[ArticleInfo]) -> dict[str, ArticleInfo]:
    """Article metadata keyed by id."""
    return {info.id: info for info in infos}


def group_by_passage(rows: Iterable[SentenceRow], passage_ids: Sequence[int]) -> list[SentenceRow]:
    """Sentence rows grouped by passage in the order of ``passage_ids`` (rows keep their order)."""
    by_passage: dict[int, list[SentenceRow]] = {}
    for row in rows:
        by_passage.setdefault(row.passage_id, []).append(row)
    return [r for pid in passage_ids for r in by_passage.get(pid, [])]


def top_k(scores: NDArray[np.floating[Any]], ids: NDArray[np.int64], k: int) -> list[tuple[int, float]]:
    """The ``k`` best ``(id, score)``; ties go to the smaller id (the earlier passage)."""
    if k <= 0 or len(ids) == 0:
        return []
    k = min(k, len(ids))
    top = np.arange(len(ids))
    if k < len(ids):
        # argpartition picks any of the rows tied at the k-th score: keep them all, sort, cut.
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        top = np.flatnonzero(scores >= kth)
    order = top[np.lexsort((ids[top], -scores[top]))][:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


# ---------------------------------------------------------------------- postings in blocks

BLOCK_BITS = 12
"""Each term's postings are kept in blocks of 2**12 consecutive passage ids, one row per
(term, block). A question then reads a few rows per term instead of one row per posting (at
1,000,000 passages a common term has over 100,000 postings), and a write rewrites only the
blocks it touches: new passages take new ids, so an ingest appends to each term's last block."""

_U16 = np.dtype(">u2")
"""A block's three columns are arrays of big-endian unsigned 16-bit numbers: each posting's
passage id less the block's first (under 2**12), its term frequency and its passage's length
in terms. Six bytes a posting, a third of 8-byte ids and 4-byte counts: a question at 1,000,000
passages reads about a megabyte of postings, and reading is most of BM25's time. Big-endian as
PostgreSQL's ``int4send`` writes them, so SQL builds blocks too (its migration does). A
passage is cut to the model's window, so its length and its term frequencies stay far below
65,535; a larger count (no model's window is that long) is stored as 65,535."""

MAX_BLOCK_COUNT = 2**16 - 1
"""The largest term frequency or passage length a block holds (larger ones are stored as it)."""


def _u16(values: Sequence[int] | NDArray[np.int64]) -> bytes:
    return np.minimum(np.asarray(values, dtype=np.int64), MAX_BLOCK_COUNT).astype(_U16).tobytes()


def pack_postings(
    passage_ids: Sequence[int] | NDArray[np.int64],
    tfs: Sequence[int] | NDArray[np.int64],
    lengths: Sequence[int] | NDArray[np.int64],
) -> tuple[bytes, bytes, bytes]:
    """The ``(offsets, tfs, lengths)`` columns of one block's postings (all in that block)."""
    offsets = np.asarray(passage_ids, dtype=np.int64) & ((1 << BLOCK_BITS) - 1)
    return _u16(offsets), _u16(tfs), _u16(lengths)


def posting_blocks(rows: Iterable[tuple[str, int, int, int]]) -> list[tuple[str, int, bytes, bytes, bytes]]:
    """``(term, passage_id, tf, length)`` rows as block rows ``(term, block, offsets, tfs,
    lengths)``, each block's postings in passage-id order."""
    return list(stream_blocks(sorted(rows)))


def stream_blocks(
    rows: Iterable[tuple[str, int, int, int]],
) -> Iterator[tuple[str, int, bytes, bytes, bytes]]:
    """Block rows of ``(term, passage_id, tf, length)`` rows already ordered by term and passage id,
    holding one block at a time (a whole library's postings can be more than memory holds)."""
    for (term, block), group in itertools.groupby(rows, key=lambda r: (r[0], r[1] >> BLOCK_BITS)):
        _, pids, tfs, lengths = zip(*group, strict=True)
        yield term, block, *pack_postings(pids, tfs, lengths)


def prune_block(
    block: int, columns: Sequence[object], removed: NDArray[np.int64]
) -> tuple[bytes, bytes, bytes] | None:
    """Block ``block``'s ``(offsets, tfs, lengths)`` without the postings of ``removed``
    passages (None: nothing is left)."""
    (postings,) = gather_postings([("", block, *columns)]).values()
    keep = ~np.isin(postings.passage_ids, removed)
    if not keep.any():
        return None
    return pack_postings(postings.passage_ids[keep], postings.tfs[keep], postings.lengths[keep])


def gather_postings(rows: Iterable[Sequence[object]]) -> dict[str, TermPostings]:
    """Each term's postings from its block rows ``(term, block, offsets, tfs, lengths)``, one
    join and one array conversion per term (a common term has hundreds of blocks at 1,000,000
    passages); :class:`ValueError` if a row cannot be a block's (a damaged row)."""
    parts: dict[str, list[tuple[int, bytes, bytes, bytes]]] = {}
    for row in rows:
        term, block, offsets, tfs, lengths = row
        if not (
            type(term) is str
            and type(block) is int
            and isinstance(offsets, bytes)
            and isinstance(tfs, bytes)
            and isinstance(lengths, bytes)
        ):
            raise ValueError("a postings block is damaged")
        if len(offsets) % 2 or len(offsets) != len(tfs) or len(tfs) != len(lengths):
            raise ValueError("a postings block's columns disagree in length")
        parts.setdefault(term, []).append((block, offsets, tfs, lengths))
    out: dict[str, TermPostings] = {}
    for term, found in parts.items():
        counts = np.fromiter((len(r[1]) // 2 for r in found), np.int64, len(found))
        firsts = np.fromiter((r[0] for r in found), np.int64, len(found)) << BLOCK_BITS
        out[term] = TermPostings(
            np.frombuffer(b"".join(r[1] for r in found), _U16).astype(np.int64) + np.repeat(firsts, counts),
            np.frombuffer(b"".join(r[2] for r in found), _U16).astype(np.int64),
            np.frombuffer(b"".join(r[3] for r in found), _U16).astype(np.int64),
        )
    return out


def restrict_postings(
    postings: dict[str, TermPostings], allowed: NDArray[np.int64]
) -> dict[str, TermPostings]:
    """Only the postings of ``allowed`` passages (terms left with none are left out)."""
    out: dict[str, TermPostings] = {}
    for term, p in postings.items():
        keep = np.isin(p.passage_ids, allowed)
        if keep.any():
            out[term] = TermPostings(p.passage_ids[keep], p.tfs[keep], p.lengths[keep])
    return out


__all__ = [
    "BLOCK_BITS",
    "MAX_BLOCK_COUNT",
    "PASSAGE_COLUMNS",
    "PASSAGE_WIDTH",
    "article_from_row",
    "gather_postings",
    "group_by_passage",
    "in_order",
    "info_columns",
    "info_from_row",
    "info_md5",
    "infos_by_id",
    "now",
    "pack_postings",
    "passage_from_row",
    "passage_md5",
    "passage_row_md5",
    "posting_blocks",
    "prune_block",
    "restrict_postings",
    "stream_blocks",
    "text_md5",
    "top_k",
]
