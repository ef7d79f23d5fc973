"""Where libraries live. One protocol, two backends: a local folder (default) and PostgreSQL.

Every call names its library, so one store serves many libraries (one per Discord server).
A store keeps, per library: articles (cleaned text and metadata), passages (spans, text),
one normalised vector per passage, the lexical postings of each passage, feedback, and a small
cache tied to articles (summaries). Writes are atomic: after a crash a reader sees the state
before the write or after it, never half of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..types import Article, ArticleInfo, Passage

FORMAT_VERSION = 2

_LIBRARY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_library_name(name: str) -> str:
    """Return ``name`` if it is a valid library name, else raise :class:`InputError`."""
    if not _LIBRARY_NAME.match(name) or ".." in name:
        raise InputError(
            f"{name!r} is not a valid library name: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """What an index was built with. A library only accepts writers and readers that match."""

    model: str
    dim: int
    max_tokens: int
    overlap: int
    analyzer: str
    format: int = FORMAT_VERSION

    def differences(self, other: IndexSpec) -> list[str]:
        """Human-readable list of the fields that differ from ``other``."""
        out = []
        for name in ("model", "dim", "max_tokens", "overlap", "analyzer", "format"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name}: index has {mine!r}, settings have {theirs!r}")
        return out


@dataclass(frozen=True, slots=True)
class ArticleWrite:
    """One article to store: passages with their vectors and term counts, and sentences.

    ``sentences`` are ``(passage_ordinal, start, end)`` spans in the article text, each with a
    row in ``sentence_vectors``; a sentence shared by two overlapping passages is listed under
    both. Sentence vectors let search score a passage by its best sentence and let answers
    highlight that sentence without running the model again.
    """

    info: ArticleInfo
    text: str
    paragraphs: tuple[tuple[int, int], ...]
    passages: Sequence[Passage]
    vectors: NDArray[np.float32]
    terms: Sequence[dict[str, int]]
    sentences: Sequence[tuple[int, int, int]] = ()
    sentence_vectors: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        n = len(self.passages)
        if self.vectors.shape[0] != n or len(self.terms) != n:
            raise ValueError("passages, vectors and terms must have the same length")
        rows = 0 if self.sentence_vectors is None else self.sentence_vectors.shape[0]
        if rows != len(self.sentences):
            raise ValueError("sentences and sentence_vectors must have the same length")


@dataclass(frozen=True, slots=True)
class SentenceRow:
    """A stored sentence: its passage, its span in the article text, and its vector."""

    passage_id: int
    start: int
    end: int
    vector: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Feedback:
    """A 👍/👎 on an answer, kept with the question and what was answered."""

    question: str
    answer_passage_id: int | None
    article_id: str | None
    vote: int  # +1 or -1
    user: str = ""
    created_at: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def article_info(row: Sequence[object]) -> ArticleInfo:
    """An :class:`ArticleInfo` from a row of id, key, title, byline, date, url, source,
    content_hash, paragraph_count, passage_count, added_at (the order both stores select)."""
    aid, key, title, byline, date, url, source, chash, paragraphs, count, added = row
    return ArticleInfo(
        id=str(aid),
        title=str(title),
        byline=byline,  # type: ignore[arg-type]
        date=date,  # type: ignore[arg-type]
        url=url,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        key=str(key),
        content_hash=str(chash),
        passage_count=int(count),  # type: ignore[call-overload]
        paragraph_count=int(paragraphs),  # type: ignore[call-overload]
        added_at=str(added),
    )


@runtime_checkable
class Store(Protocol):
    """The storage backend the core talks to."""

    def spec(self, library: str) -> IndexSpec | None:
        """The spec a library was built with, or None if the library does not exist."""

    def create(self, library: str, spec: IndexSpec) -> None:
        """Create an empty library (no-op if it exists with the same spec)."""

    def libraries(self) -> list[str]:
        """Names of the libraries in this store."""

    def generation(self, library: str) -> int:
        """A number that changes on every write to the library (for caches)."""

    def writer(self, library: str, timeout: float = 0.0) -> AbstractContextManager[None]:
        """Hold the library's write lock; raise :class:`LibraryBusyError` if another has it."""

    def write(self, library: str, add: Sequence[ArticleWrite], delete: Sequence[str] = ()) -> None:
        """Atomically delete articles ``delete`` and add ``add`` (replacing same-id articles)."""

    def reset(self, library: str, spec: IndexSpec, add: Sequence[ArticleWrite]) -> None:
        """Atomically replace the library's whole content and spec (used by rebuild)."""

    def list_articles(self, library: str) -> list[ArticleInfo]:
        """All articles, oldest first."""

    def get_article(self, library: str, article_id: str) -> Article | None:
        """An article with its text, or None."""

    def find_article(
        self, library: str, *, key: str | None = None, content_hash: str | None = None
    ) -> ArticleInfo | None:
        """The article with this key or content hash, or None."""

    def passages(self, library: str, ids: Sequence[int]) -> list[Passage]:
        """Passages by id, in the order asked (missing ids are left out)."""

    def article_passages(self, library: str, article_id: str) -> list[Passage]:
        """An article's passages in order."""

    def vectors(self, library: str, ids: Sequence[int]) -> NDArray[np.float32]:
        """The stored vectors of passages ``ids``, in that order."""

    def dense_search(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(passage_id, cosine)`` for a normalised query, best first."""

    def sentence_search(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(passage_id, best sentence cosine)``: passages ranked by their best sentence."""

    def sentences(self, library: str, passage_ids: Sequence[int]) -> list[SentenceRow]:
        """The stored sentences of ``passage_ids``, grouped by passage in the order asked."""

    def lexical_stats(self, library: str, terms: Sequence[str]) -> tuple[int, float, dict[str, int]]:
        """``(passage_count, mean_passage_length, document_frequency_per_term)``."""

    def postings(
        self, library: str, terms: Sequence[str], article_ids: Sequence[str] | None = None
    ) -> Iterator[tuple[str, int, int, int]]:
        """``(term, passage_id, term_frequency, passage_length)`` for every posting of ``terms``."""

    def add_feedback(self, library: str, feedback: Feedback) -> None:
        """Record a vote on an answer."""

    def list_feedback(self, library: str, limit: int = 100) -> list[Feedback]:
        """The newest votes first."""

    def get_cached(self, library: str, kind: str, key: str) -> str | None:
        """A cached value (e.g. a summary), or None."""

    def put_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> None:
        """Cache a value; it is dropped when ``article_id`` changes or is forgotten."""

    def export(self, library: str, article_ids: Sequence[str] | None = None) -> Iterator[ArticleWrite]:
        """Stored articles (all, or ``article_ids``) as writes, oldest first, for copying a library.

        Passages carry their stored ids; sentences come in stored order with their vectors.
        """

    def restore(self, library: str, add: Sequence[ArticleWrite], *, more: bool = False) -> None:
        """Like :meth:`write`, but passages keep the ids they carry (copying a library keeps its ids).

        ``more=True`` says more batches follow, so a store may postpone index building to the
        last call (``restore(library, [], more=False)`` ends a copy that had nothing left to add).
        """

    def close(self) -> None:
        """Release connections and file handles."""


__all__ = [
    "FORMAT_VERSION",
    "ArticleWrite",
    "Feedback",
    "IndexSpec",
    "SentenceRow",
    "Store",
    "article_info",
    "check_library_name",
]
