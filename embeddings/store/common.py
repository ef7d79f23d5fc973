"""What both stores share: row mappings, the time stamp, top-k selection, grouping of sentences.

The stores share a contract (the :class:`~embeddings.store.Store` protocol and the contract
suite), not an algorithm, so there is no base class; only helpers that must give the same
result in both live here, so that both stores answer with the same ids, scores and tie order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..errors import CorruptIndexError
from ..types import ArticleInfo, Passage
from . import SentenceRow

T = TypeVar("T")

PASSAGE_COLUMNS = 'id, article_id, ordinal, paragraph, start, "end", text, text_md5'
"""The columns :func:`passage_from_row` reads, in order."""
PASSAGE_WIDTH = PASSAGE_COLUMNS.count(",") + 1
"""How many columns that is (a query may select more after them)."""


def text_md5(text: str) -> str:
    """The checksum stored beside each passage's text, hex (PostgreSQL's ``md5()`` agrees)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def info_columns(array_length: str) -> str:
    """The columns :func:`~embeddings.store.article_info` reads, in order.

    ``array_length`` is the SQL function that counts the stored paragraph spans
    (``json_array_length`` in SQLite, ``jsonb_array_length`` in PostgreSQL).
    """
    return (
        f"id, key, title, byline, date, url, source, content_hash, {array_length}(paragraphs), "
        "passage_count, added_at"
    )


def now() -> str:
    """The current UTC time as stored: ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def passage_from_row(row: Sequence[Any], library: str) -> Passage:
    """A :class:`Passage` from a row of :data:`PASSAGE_COLUMNS` (a database row: typed by the driver).

    The text is checked against its stored checksum: a quote is the source, so a passage whose
    text changed inside the database (a flipped byte, an edit by hand) is refused, never quoted.
    Rows written before checksums existed (``text_md5`` NULL) are not checked.
    """
    pid, article_id, ordinal, paragraph, start, end, text, md5 = row[:PASSAGE_WIDTH]
    if md5 is not None and text_md5(str(text)) != md5:
        raise CorruptIndexError(
            library,
            "database",
            f"holds a passage whose text no longer matches its checksum (passage {pid} of article "
            f"{article_id}): it was altered after it was stored",
            rebuildable=False,
        )
    return Passage(
        str(article_id), int(ordinal), int(paragraph), int(start), int(end), str(text), id=int(pid)
    )


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


def top_k(scores: NDArray[np.float32], ids: NDArray[np.int64], k: int) -> list[tuple[int, float]]:
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


__all__ = [
    "PASSAGE_COLUMNS",
    "PASSAGE_WIDTH",
    "group_by_passage",
    "in_order",
    "info_columns",
    "infos_by_id",
    "now",
    "passage_from_row",
    "text_md5",
    "top_k",
]
