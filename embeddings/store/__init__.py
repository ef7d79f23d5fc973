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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..types import Article, ArticleInfo, Layout, Passage

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
    """What an index was built with. A library only accepts writers and readers that match.

    ``sentence_vectors`` says how the sentence vectors were made: ``"late"`` pooled from their
    passage's own forward pass, ``"separate"`` one pass per sentence (every library from before
    the field). It is the library's own choice, made when it is created or rebuilt: readers and
    writers follow it rather than having to match it (see :meth:`same_index`).
    """

    model: str
    dim: int
    max_tokens: int
    overlap: int
    analyzer: str
    format: int = FORMAT_VERSION
    sentence_vectors: str = "separate"

    def differences(self, other: IndexSpec) -> list[str]:
        """Human-readable list of the fields that differ from ``other``."""
        out = []
        for name in ("model", "dim", "max_tokens", "overlap", "analyzer", "format", "sentence_vectors"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name}: index has {mine!r}, settings have {theirs!r}")
        return out

    def same_index(self, other: IndexSpec) -> list[str]:
        """:meth:`differences` that matter to a reader or writer: all but ``sentence_vectors``,
        which a library keeps from its creation (both kinds live in the model's vector space)."""
        return self.differences(replace(other, sentence_vectors=self.sentence_vectors))


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
    layout: Layout = Layout()

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
class PassageEvidence:
    """A candidate passage with what scoring it needs: its vector and its sentences' vectors."""

    passage: Passage
    vector: NDArray[np.float32]
    sentences: tuple[SentenceRow, ...]


@dataclass(frozen=True, slots=True, eq=False)
class TermPostings:
    """One term's postings as parallel arrays: passage ids, term frequencies, passage lengths.

    The order of the entries is the store's own (each passage appears once); whatever adds them
    up per passage gets the same sums in any order, since a passage meets each term once.
    """

    passage_ids: NDArray[np.int64]
    tfs: NDArray[np.int64]
    lengths: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.passage_ids)


@dataclass(frozen=True, slots=True, eq=False)
class LexicalRows:
    """What BM25 needs for one question, read in one call.

    ``postings`` maps each of the question's terms that some (allowed) passage holds to its
    :class:`TermPostings`; ``df`` counts the passages of the whole library holding each term.
    """

    passage_count: int
    mean_length: float
    df: dict[str, int]
    postings: dict[str, TermPostings]

    def tuples(self) -> list[tuple[str, int, int, int]]:
        """Every posting as ``(term, passage_id, tf, length)``, sorted: for comparing two reads."""
        return sorted(
            (term, int(pid), int(tf), int(length))
            for term, p in self.postings.items()
            for pid, tf, length in zip(p.passage_ids, p.tfs, p.lengths, strict=True)
        )


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


@dataclass(frozen=True, slots=True)
class Record:
    """A small piece of library state kept for a front end's features: a server's settings, a
    logged question, a pin. ``kind`` and ``key`` name it; ``user`` is whose it is (empty for the
    server's own), so a member's data can be shown and erased; ``at`` is when it was written
    (ISO 8601 UTC); ``value`` is JSON text the caller writes and reads."""

    kind: str
    key: str
    value: str
    user: str = ""
    at: str = ""


def article_info(row: Sequence[Any]) -> ArticleInfo:
    """An :class:`ArticleInfo` from a row of id, key, title, byline, date, url, source,
    content_hash, paragraph_count, passage_count, added_at (the order both stores select)."""
    aid, key, title, byline, date, url, source, chash, paragraphs, count, added = row
    return ArticleInfo(
        id=str(aid),
        title=str(title),
        byline=byline,
        date=date,
        url=url,
        source=source,
        key=str(key),
        content_hash=str(chash),
        passage_count=int(count),
        paragraph_count=int(paragraphs),
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

    def find_articles(
        self,
        library: str,
        *,
        keys: Sequence[str] = (),
        content_hashes: Sequence[str] = (),
        ids: Sequence[str] = (),
    ) -> list[ArticleInfo]:
        """Every article whose key, content hash or id is among those given (one read for a batch)."""

    def article_infos(self, library: str, ids: Sequence[str]) -> dict[str, ArticleInfo]:
        """Metadata of articles by id, without their text (missing ids are left out)."""

    def passages(self, library: str, ids: Sequence[int]) -> list[Passage]:
        """Passages by id, in the order asked (missing ids are left out)."""

    def article_passages(self, library: str, article_id: str) -> list[Passage]:
        """An article's passages in order."""

    def nearest(
        self,
        library: str,
        query: NDArray[np.float32],
        k: int,
        article_ids: Sequence[str] | None = None,
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The dense candidates of a normalised query, in one call.

        Returns the top ``k`` ``(passage_id, cosine)`` by the passage vectors, and the top ``k``
        ``(passage_id, best sentence cosine)`` by the sentence vectors; both best first, ties to
        the earlier passage. ``article_ids`` limits both to those articles.
        """

    def evidence(self, library: str, ids: Sequence[int]) -> list[PassageEvidence]:
        """Passages by id with their vectors and sentences, in the order asked (missing left out)."""

    def sentences(self, library: str, passage_ids: Sequence[int]) -> list[SentenceRow]:
        """The stored sentences of ``passage_ids``, grouped by passage in the order asked."""

    def lexical(
        self, library: str, terms: Sequence[str], article_ids: Sequence[str] | None = None
    ) -> LexicalRows:
        """Passage count and mean analysed length of the library, document frequency of ``terms``,
        and their postings (limited to ``article_ids`` when given; the statistics never are)."""

    def term_counts(self, library: str, terms: Sequence[str]) -> dict[str, int]:
        """How many passages of the library hold each of ``terms`` (terms none holds left out),
        without reading their postings."""

    def add_feedback(self, library: str, feedback: Feedback) -> None:
        """Record a vote on an answer."""

    def list_feedback(self, library: str, limit: int = 100) -> list[Feedback]:
        """The newest votes first."""

    def subscriptions(self, library: str) -> dict[str, str]:
        """The library's subscriptions: URL -> state (JSON text written by the caller)."""
        ...

    def put_subscription(self, library: str, url: str, state: str) -> None:
        """Add a subscription or replace its state."""
        ...

    def delete_subscription(self, library: str, url: str) -> bool:
        """Remove a subscription; True if there was one."""
        ...

    def set_feedback_reason(self, library: str, answer_id: str, user: str, reason: str) -> bool:
        """Add ``reason`` to the vote ``user`` gave answer ``answer_id``; False if there is none."""
        ...

    def delete_feedback(self, library: str, user: str) -> int:
        """Remove every vote of ``user``; how many were removed."""
        ...

    def put_record(self, library: str, record: Record) -> None:
        """Add a record or replace the one of the same kind and key (creating the library's
        storage if needed: a server's settings may come before its first article)."""
        ...

    def records(
        self,
        library: str,
        kind: str,
        *,
        keys: Sequence[str] | None = None,
        user: str | None = None,
        since: str | None = None,
    ) -> list[Record]:
        """The records of ``kind`` (only ``keys``, of ``user``, written at or after ``since``),
        oldest first; none for a library that does not exist."""
        ...

    def delete_records(
        self,
        library: str,
        kind: str | None = None,
        *,
        keys: Sequence[str] | None = None,
        user: str | None = None,
        before: str | None = None,
    ) -> int:
        """Remove records (of ``kind``, only ``keys``, of ``user``, written before ``before``);
        how many were removed."""
        ...

    def drop(self, library: str) -> bool:
        """Delete the library and everything in it; False if there was none."""
        ...

    def get_cached(self, library: str, kind: str, key: str) -> str | None:
        """A cached value (e.g. a summary), or None."""

    def put_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> None:
        """Cache a value; it is dropped when ``article_id`` changes or is forgotten."""

    def claim_cached(self, library: str, kind: str, key: str, article_id: str, value: str) -> bool:
        """Cache a value only if ``key`` is new; True if this call stored it.

        Atomic across processes and threads: of two concurrent claims exactly one wins (a vote is
        counted once per user and answer however many shards see the click).
        """

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
    "LexicalRows",
    "PassageEvidence",
    "SentenceRow",
    "Store",
    "TermPostings",
    "article_info",
    "check_library_name",
]
