"""The write path: articles in, passages, sentences, vectors and postings out, committed in batches.

:class:`Ingester` plans each article against the store (new, changed, unchanged, or a twin of a
stored one), chunks and counts it, embeds passages and sentences in one model pass, and commits
the result atomically batch by batch. :class:`~embeddings.library.Library` is the front door that
calls it; nothing here reads the environment or talks to a user.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from .articles import content_hash
from .chunking import ChunkSpec, chunk_document, sentence_spans
from .encoder import Encoder
from .errors import CitebotError, InputError
from .lexical import Analyzer
from .store import ArticleWrite, IndexSpec, Store
from .types import ArticleInfo, Document, IngestReport, IngestResult, Passage


class UrlLoader(Protocol):
    """Downloads a URL into articles (:class:`embeddings.fetch.Fetcher` is one)."""

    def load(self, url: str) -> list[Document | InputError]:
        """The articles at ``url``, or errors for parts that could not be used."""


ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while passages are embedded."""

PLAN_BATCH = 256
"""Articles looked up in the store with one read while planning an ingest."""


@dataclass(frozen=True, slots=True)
class _Planned:
    write: ArticleWrite  # vectors still zero; filled in by Ingester.embed
    status: str  # "added" or "replaced"


ID_LENGTH = 16
"""Hex digits of a new article id: 64 bits, so that even a million articles collide with odds of
about 3 in 100 million; a collision that happens anyway gets a longer id, never a replacement."""
SHORT_ID = 8
"""Hex digits shown for an article id (any unique prefix of four or more resolves)."""


def _key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def article_id_candidates(key: str) -> Iterator[str]:
    """The ids an article with ``key`` may get, shortest first; longer ones avoid a collision.

    After the whole digest come numbered variants of it, so some id is always free.
    """
    digest = _key_digest(key)
    yield from (digest[:n] for n in (ID_LENGTH, 24, 32, len(digest)))
    n = 2
    while True:
        yield f"{digest}-{n}"
        n += 1


def passage_sentences(
    passages: Sequence[Passage], spans: Sequence[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Each passage's sentences as ``(passage_ordinal, start, end)``, from the document's sentences.

    A passage is packed from whole sentences, or is one piece of an over-long sentence, so its
    sentences are the document's sentences clipped to its span (the sentences are split once).
    """
    starts = [s for _, s, _ in spans]
    out: list[tuple[int, int, int]] = []
    for p in passages:
        # The first sentence that may overlap the passage ends after its start.
        i = max(0, bisect.bisect_right(starts, p.start) - 1)
        while i < len(spans) and spans[i][1] < p.end:
            _, a, b = spans[i]
            if b > p.start:
                out.append((p.ordinal, max(a, p.start), min(b, p.end)))
            i += 1
    return out


def _with_section(passage: Passage) -> str:
    """The text a passage is found by in the word index: its section's headings, then its text
    (a question naming a section finds the passages under it, as a title would).

    Only the word index: the same prefix on the passage's vector was measured on the document
    set (R@1 0.778 against 0.833 without it, and one more question declined).
    """
    return f"{passage.section}\n{passage.text}" if passage.section else passage.text


class Ingester:
    """Writes articles into one library of a store; see the module docstring.

    The caller holds the library's write lock (:meth:`Store.writer`) around every call.
    """

    def __init__(
        self,
        store: Store,
        encoder: Encoder,
        library: str,
        spec: IndexSpec,
        chunk: ChunkSpec,
        analyzer: Analyzer,
        max_article_chars: int | None = None,
    ) -> None:
        self.max_article_chars = max_article_chars
        # Sentence vectors pooled from their passage's forward pass instead of one pass each,
        # when the library was made that way; an encoder that cannot pool spans (a custom one
        # opened on such a library) embeds each sentence on its own rather than fail.
        self.late_chunking = spec.sentence_vectors == "late" and hasattr(encoder, "encode_spans")
        self.store = store
        self.encoder = encoder
        self.library = library
        self.spec = spec
        self.chunk = chunk
        self.analyzer = analyzer

    def ingest(
        self,
        items: Iterable[Document | CitebotError],
        *,
        progress: ProgressFn | None = None,
        batch_passages: int = 512,
    ) -> IngestReport:
        """Add or replace articles; unchanged ones are skipped and errors reported per source.

        Articles are committed in batches of about ``batch_passages`` passages, each batch
        atomically, so an interrupted ingest keeps every article it finished and no part of
        the one it was working on.
        """
        results: list[IngestResult] = []
        # Articles are planned (chunked, counted) as they come and embedded a batch at a time:
        # memory is bounded by a batch, not by the whole ingest. The progress total grows as
        # articles are planned.
        done = total = 0
        batch: list[_Planned] = []
        size = 0
        for plan in self._plan_all(items, results):
            batch.append(plan)
            size += len(plan.write.passages)
            total += len(plan.write.passages)
            if progress is not None:
                progress(done, total)
            if size >= batch_passages:
                done = self._commit(batch, results, done, total, progress)
                batch, size = [], 0
        if batch:
            self._commit(batch, results, done, total, progress)
        return IngestReport(tuple(results))

    def prepare(self, doc: Document, article_id: str, digest: str) -> ArticleWrite:
        """Chunk an article, split its sentences and count its terms; vectors are zero until embedded."""
        spans = sentence_spans(doc)
        passages = chunk_document(
            doc,
            self.chunk,
            self.encoder.count_tokens,
            self.encoder.token_offsets,
            article_id=article_id,
            sentences=spans,
        )
        info = ArticleInfo(
            id=article_id,
            title=doc.title,
            byline=doc.byline,
            date=doc.date,
            url=doc.url,
            source=doc.source,
            key=doc.key,
            content_hash=digest,
            passage_count=len(passages),
            paragraph_count=len(doc.paragraphs),
            added_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        sentences = passage_sentences(passages, spans)
        return ArticleWrite(
            info=info,
            text=doc.text,
            paragraphs=doc.paragraphs,
            passages=passages,
            vectors=_zeros(len(passages), self.encoder.dim),
            terms=[self.analyzer.counts(_with_section(p)) for p in passages],
            sentences=sentences,
            sentence_vectors=_zeros(len(sentences), self.encoder.dim),
            layout=doc.layout,
        )

    def embed(
        self, writes: Sequence[ArticleWrite], progress: Callable[[int], None] | None
    ) -> list[ArticleWrite]:
        """Embed passages and their (distinct) sentences in one pass and attach the vectors.

        Progress counts passages; a passage is reported once its sentences are done too.
        """
        if self.late_chunking:
            return self._embed_late(writes, progress)
        texts = [p.text for w in writes for p in w.passages]
        n_passages = len(texts)
        # The row of each text in the one batch: a sentence shared by overlapping passages is
        # embedded once, and a sentence that is its whole passage (a one-sentence paragraph, a
        # list item, a code block) takes the passage's vector instead of a second forward pass.
        whole: dict[tuple[int, int, int], int] = {}
        row = 0
        for wi, w in enumerate(writes):
            for p in w.passages:
                whole[(wi, p.start, p.end)] = row
                row += 1
        spans: dict[tuple[int, int, int], int] = {}
        for wi, w in enumerate(writes):
            for _, a, b in w.sentences:
                if (wi, a, b) not in whole:
                    spans.setdefault((wi, a, b), n_passages + len(spans))
        sentence_texts = [writes[wi].text[a:b] for wi, a, b in spans]
        scale = n_passages / max(1, n_passages + len(sentence_texts))
        reported = 0
        seen = 0

        def step(n: int) -> None:
            nonlocal reported, seen
            seen += n
            now = int(seen * scale)
            if progress is not None and now > reported:
                progress(now - reported)
                reported = now

        vectors = self.encoder.encode(texts + sentence_texts, kind="passage", progress=step)
        if progress is not None and n_passages > reported:
            progress(n_passages - reported)
        out: list[ArticleWrite] = []
        row = 0
        for wi, w in enumerate(writes):
            n = len(w.passages)
            keys = [(wi, a, b) for _, a, b in w.sentences]
            rows = [whole[k] if k in whole else spans[k] for k in keys]
            out.append(
                replace(
                    w, vectors=vectors[row : row + n], sentence_vectors=vectors[rows].reshape(len(rows), -1)
                )
            )
            row += n
        return out

    def _embed_late(
        self, writes: Sequence[ArticleWrite], progress: Callable[[int], None] | None
    ) -> list[ArticleWrite]:
        """:meth:`embed` with each passage's sentences pooled from the passage's own pass."""
        texts: list[str] = []
        spans: list[list[tuple[int, int]]] = []
        place: list[list[tuple[int, int]]] = []  # per write, per sentence: (passage row, span index)
        for w in writes:
            first = len(texts)
            for p in w.passages:
                texts.append(p.text)
                spans.append([])
            rows = []
            for ordinal, a, b in w.sentences:
                passage = w.passages[ordinal]
                row = first + ordinal
                rows.append((row, len(spans[row])))
                spans[row].append((a - passage.start, b - passage.start))
            place.append(rows)
        vectors, pieces = self.encoder.encode_spans(texts, spans, progress=progress)  # type: ignore[attr-defined]
        out: list[ArticleWrite] = []
        row = 0
        for w, rows in zip(writes, place, strict=True):
            n = len(w.passages)
            sentence_vectors = (
                np.stack([pieces[r][k] for r, k in rows]) if rows else _zeros(0, self.encoder.dim)
            )
            out.append(replace(w, vectors=vectors[row : row + n], sentence_vectors=sentence_vectors))
            row += n
        return out

    def rebuild(self, progress: ProgressFn | None = None) -> list[ArticleWrite]:
        """Every stored article re-chunked and re-embedded from its stored text (nothing written)."""
        writes: list[ArticleWrite] = []
        for info in self.store.list_articles(self.library):
            article = self.store.get_article(self.library, info.id)
            if article is None:
                continue  # forgotten since the listing
            doc = Document(
                key=info.key,
                title=info.title,
                text=article.text,
                paragraphs=article.paragraphs,
                byline=info.byline,
                date=info.date,
                url=info.url,
                source=info.source,
                layout=article.layout,
            )
            writes.append(self.prepare(doc, info.id, info.content_hash))
        total = sum(len(w.passages) for w in writes)
        if progress is not None:
            progress(0, total)
        return self.embed(writes, _counter(progress, 0, total))

    # ------------------------------------------------------------------ planning

    def _plan_all(
        self, items: Iterable[Document | CitebotError], results: list[IngestResult]
    ) -> Iterator[_Planned]:
        """Plan every article, looking the store up once per :data:`PLAN_BATCH` articles."""
        seen_keys: set[str] = set()
        taken: dict[str, str] = {}  # id -> key, of the articles planned in this ingest
        hashes: dict[str, str] = {}  # content hash -> id, likewise
        pending: list[Document] = []

        def flush() -> Iterator[_Planned]:
            yield from self._plan_batch(pending, results, taken, hashes)
            pending.clear()

        for item in items:
            if isinstance(item, CitebotError):
                results.append(IngestResult(source="", status="skipped", reason=str(item)))
                continue
            limit = self.max_article_chars
            if limit is not None and len(item.text) > limit:
                # One article is one commit: its vectors are all held until it is written. An
                # article past the limit would take memory and time without bound, so it is
                # refused before any work, with what to do instead.
                results.append(
                    IngestResult(
                        item.source or item.key,
                        "skipped",
                        reason=(
                            f"{_millions(len(item.text))} characters of text is more than one article may "
                            f"hold ({_millions(limit)}): split it into parts (chapters, sections) and "
                            "ingest those"
                        ),
                    )
                )
                continue
            if item.key in seen_keys:
                results.append(
                    IngestResult(
                        item.source or item.key,
                        "skipped",
                        reason="appears twice in this ingest; kept the first",
                    )
                )
                continue
            seen_keys.add(item.key)
            pending.append(item)
            if len(pending) >= PLAN_BATCH:
                yield from flush()
        yield from flush()

    def _plan_batch(
        self,
        docs: Sequence[Document],
        results: list[IngestResult],
        taken: dict[str, str],
        hashes: dict[str, str],
    ) -> Iterator[_Planned]:
        if not docs:
            return
        digests = [content_hash(d) for d in docs]
        # The four digest lengths are looked up at once; numbered variants (never needed unless
        # sha256 collides or a test forces it) are looked up one by one in _new_id.
        candidates = {d.key: list(itertools.islice(article_id_candidates(d.key), 4)) for d in docs}
        stored = self.store.find_articles(
            self.library,
            keys=[d.key for d in docs],
            content_hashes=digests,
            ids=[i for ids in candidates.values() for i in ids],
        )
        by_key = {a.key: a for a in stored}
        by_id = {a.id: a for a in stored}
        by_hash: dict[str, ArticleInfo] = {}
        for a in stored:
            by_hash.setdefault(a.content_hash, a)
        for doc, digest in zip(docs, digests, strict=True):
            source = doc.source or doc.key
            existing = by_key.get(doc.key)
            if existing is not None and existing.content_hash == digest:
                results.append(IngestResult(source, "unchanged", existing))
                continue
            if existing is None:
                twin = by_hash.get(digest)
                if twin is not None:
                    results.append(
                        IngestResult(
                            source, "unchanged", twin, reason=f"same text as article {twin.id} already here"
                        )
                    )
                    continue
                if digest in hashes:
                    results.append(
                        IngestResult(
                            source, "skipped", reason=f"same text as article {hashes[digest]} in this ingest"
                        )
                    )
                    continue
            article_id = existing.id if existing else self._new_id(doc.key, by_id, taken)
            taken[article_id] = doc.key
            hashes[digest] = article_id
            yield _Planned(self.prepare(doc, article_id, digest), "replaced" if existing else "added")

    def _new_id(self, key: str, stored: dict[str, ArticleInfo], taken: dict[str, str]) -> str:
        """The shortest id of ``key`` that no other article (stored or in this ingest) has."""
        for n, candidate in enumerate(article_id_candidates(key)):
            other = stored.get(candidate)
            if n >= 4 and other is None:  # beyond the ids looked up with the batch
                found = self.store.find_articles(self.library, ids=[candidate])
                other = found[0] if found else None
            if (other is None or other.key == key) and taken.get(candidate, key) == key:
                return candidate
        raise AssertionError("unreachable: the candidates never end")

    # ------------------------------------------------------------------ committing

    def _commit(
        self,
        batch: list[_Planned],
        results: list[IngestResult],
        done: int,
        total: int,
        progress: ProgressFn | None,
    ) -> int:
        writes = self.embed([p.write for p in batch], _counter(progress, done, total))
        self.store.write(self.library, writes)
        results.extend(
            IngestResult(
                w.info.source or w.info.key, p.status, w.info, text_bytes=len(w.text.encode("utf-8"))
            )
            for w, p in zip(writes, batch, strict=True)
        )
        return done + sum(len(w.passages) for w in writes)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f} million" if n >= 1_000_000 else f"{n:,}"


def _zeros(rows: int, dim: int) -> NDArray[np.float32]:
    """Placeholder vectors that take no memory (a read-only view of one zero row)."""
    return np.broadcast_to(np.zeros((1, dim), dtype=np.float32), (rows, dim))


def _counter(progress: ProgressFn | None, done: int, total: int) -> Callable[[int], None]:
    """A step callback that reports ``progress(done so far, total)`` as passages are embedded."""

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return step


__all__ = [
    "ID_LENGTH",
    "PLAN_BATCH",
    "SHORT_ID",
    "Ingester",
    "ProgressFn",
    "UrlLoader",
    "article_id_candidates",
    "passage_sentences",
]
