"""The core's front door: one library of articles in one store, read and written.

Everything here is synchronous and blocking (model inference, disk); front ends that run an
event loop call it from a worker thread.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from .answer import build_answer
from .articles import content_hash, expand_paths, load_file
from .chunking import ChunkSpec, chunk_document
from .encoder import Encoder
from .errors import CitebotError, IndexMismatchError, InputError, NotFoundError
from .lexical import Analyzer
from .search import Candidate, Reranker, Retriever, SearchConfig
from .sentences import split_sentences
from .store import ArticleWrite, IndexSpec, Store, check_library_name
from .summarize import SUMMARIZER_VERSION, make_summary, spans_from_json, spans_to_json, summarize_document
from .types import (
    Answer,
    ArticleInfo,
    Document,
    Hit,
    IngestReport,
    IngestResult,
    Summary,
)

MAX_QUESTION_CHARS = 1000
"""Longer questions are cut here (the model reads about 256 word pieces anyway)."""


class UrlLoader(Protocol):
    """Downloads a URL into articles (:class:`embeddings.fetch.Fetcher` is one)."""

    def load(self, url: str) -> list[Document | InputError]:
        """The articles at ``url``, or errors for parts that could not be used."""


ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while passages are embedded."""


def clean_question(question: str) -> tuple[str, tuple[str, ...]]:
    """Normalise a question's whitespace and cut it to :data:`MAX_QUESTION_CHARS`.

    Returns the question and notes for the user (e.g. that it was truncated); raises
    :class:`InputError` for an empty question.
    """
    if not isinstance(question, str) or not question.strip():
        raise InputError("The question is empty: type what you want to know.")
    q = " ".join(question.split())
    if len(q) <= MAX_QUESTION_CHARS:
        return q, ()
    cut = q[:MAX_QUESTION_CHARS].rsplit(" ", 1)[0] or q[:MAX_QUESTION_CHARS]
    note = f"Your question was {len(q):,} characters long; only the first {len(cut):,} were used."
    return cut, (note,)


class Library:
    """One named library: ingest, list, forget, search and answer."""

    def __init__(
        self,
        store: Store,
        encoder: Encoder,
        name: str = "default",
        *,
        chunk: ChunkSpec | None = None,
        analyzer: Analyzer | None = None,
        search: SearchConfig | None = None,
        reranker: Reranker | None = None,
        write_timeout: float = 0.0,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.name = check_library_name(name)
        self.chunk = chunk or ChunkSpec(max_tokens=encoder.max_tokens)
        if self.chunk.max_tokens > encoder.max_tokens:
            raise InputError(
                f"Chunk size {self.chunk.max_tokens} is larger than the model's window "
                f"({encoder.max_tokens} word pieces); passages would be truncated."
            )
        self.analyzer = analyzer or Analyzer()
        self.config = search or SearchConfig()
        self.retriever = Retriever(store, encoder, self.analyzer, self.config, reranker=reranker)
        self.spec = IndexSpec(
            model=encoder.name,
            dim=encoder.dim,
            max_tokens=self.chunk.max_tokens,
            overlap=self.chunk.overlap,
            analyzer=self.analyzer.name,
        )
        self.write_timeout = write_timeout
        # Threads of one process (the bot) take turns writing; other processes meet the
        # store's file lock.
        self._write_lock = threading.Lock()
        self._checked = False

    # ------------------------------------------------------------------ state

    def exists(self) -> bool:
        """True once the library has been created in the store."""
        return self.store.spec(self.name) is not None

    def _check(self) -> None:
        """Refuse to read a library built with another model or chunking."""
        if self._checked:
            return
        existing = self.store.spec(self.name)
        if existing is None:
            raise NotFoundError(
                f"Library {self.name!r} is empty. Add articles with "
                f"`citebot ingest PATH --library {self.name}`."
            )
        if existing != self.spec:
            raise IndexMismatchError(
                f"Library {self.name!r} was built with other settings ("
                + "; ".join(existing.differences(self.spec))
                + f"). Run `citebot rebuild --library {self.name}` to rebuild it with the "
                "current settings, or change the settings back."
            )
        self._checked = True

    def articles(self) -> list[ArticleInfo]:
        """Every article in the library, oldest first."""
        self._check()
        return self.store.list_articles(self.name)

    def resolve(self, ref: str) -> ArticleInfo:
        """Find an article by id, id prefix, or title (exact, then close).

        Raises :class:`NotFoundError` with the closest titles when nothing matches clearly.
        """
        ref = ref.strip()
        if not ref:
            raise InputError("Name an article: its id or its title.")
        articles = self.articles()
        by_id = {a.id: a for a in articles}
        if ref in by_id:
            return by_id[ref]
        if len(ref) >= 4:
            prefixed = [a for a in articles if a.id.startswith(ref)]
            if len(prefixed) == 1:
                return prefixed[0]
        low = ref.casefold()
        exact = [a for a in articles if a.title.casefold() == low]
        if len(exact) == 1:
            return exact[0]
        contains = [a for a in articles if low in a.title.casefold()]
        if len(contains) == 1 and len(low) >= 8:
            return contains[0]
        # Fuzzy: resolve a near-exact title (a typo) when it clearly beats the runner-up.
        scored = sorted(
            ((difflib.SequenceMatcher(None, low, a.title.casefold()).ratio(), a) for a in articles),
            key=lambda sa: -sa[0],
        )
        if scored and scored[0][0] >= 0.85 and (len(scored) == 1 or scored[0][0] - scored[1][0] >= 0.05):
            return scored[0][1]
        close = [a.title for ratio, a in scored if ratio >= 0.5]
        ranked = list(dict.fromkeys([a.title for a in contains] + close))[:5]
        hint = (" Did you mean: " + "; ".join(f"“{t}”" for t in ranked) + "?") if ranked else ""
        raise NotFoundError(f"No article matches {ref!r} in library {self.name!r}.{hint}", tuple(ranked))

    # ------------------------------------------------------------------ writing

    def ingest_paths(
        self,
        paths: Iterable[str | Path],
        progress: ProgressFn | None = None,
        fetcher: UrlLoader | None = None,
    ) -> IngestReport:
        """Ingest files, folders (.txt, .md, .html, .jsonl) and, with a ``fetcher``, URLs.

        A bad file or a dead link is skipped with its reason; the rest are ingested.
        """
        paths = list(paths)
        urls = [str(p) for p in paths if re.match(r"^https?://", str(p), re.I)]
        files, problems = expand_paths([p for p in paths if str(p) not in urls])

        def items() -> Iterable[Document | CitebotError]:
            yield from problems
            for url in urls:
                if fetcher is None:
                    yield InputError(
                        f"{url}: downloading is not enabled here; save the page and ingest the file."
                    )
                    continue
                try:
                    yield from fetcher.load(url)
                except CitebotError as exc:  # FetchError: dead link, refused address, too large
                    yield exc
            for f in files:
                yield from load_file(f)

        return self.ingest(items(), progress=progress)

    def ingest(
        self,
        items: Iterable[Document | CitebotError],
        *,
        progress: ProgressFn | None = None,
        batch_passages: int = 512,
    ) -> IngestReport:
        """Add or replace articles. Unchanged ones are skipped; errors are reported per source.

        Articles are committed in batches of about ``batch_passages`` passages, each batch
        atomically, so an interrupted ingest keeps every article it finished and no part of
        the one it was working on.
        """
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            self.store.create(self.name, self.spec)
            self._checked = False
            self._check()
            results: list[IngestResult] = []
            planned: list[tuple[ArticleWrite, str]] = []  # (write without vectors, status)
            seen_keys: set[str] = set()
            for item in items:
                if isinstance(item, CitebotError):
                    results.append(IngestResult(source="", status="skipped", reason=str(item)))
                    continue
                plan = self._plan(item, seen_keys)
                if isinstance(plan, IngestResult):
                    results.append(plan)
                else:
                    planned.append(plan)
            total = sum(len(w.passages) for w, _ in planned)
            done = 0
            if progress is not None:
                progress(0, total)
            batch: list[tuple[ArticleWrite, str]] = []
            size = 0
            for write, status in planned:
                batch.append((write, status))
                size += len(write.passages)
                if size >= batch_passages:
                    done = self._commit(batch, results, done, total, progress)
                    batch, size = [], 0
            if batch:
                self._commit(batch, results, done, total, progress)
        return IngestReport(tuple(results))

    def _plan(self, doc: Document, seen_keys: set[str]) -> tuple[ArticleWrite, str] | IngestResult:
        source = doc.source or doc.key
        if doc.key in seen_keys:
            return IngestResult(source, "skipped", reason="appears twice in this ingest; kept the first")
        seen_keys.add(doc.key)
        digest = content_hash(doc)
        existing = self.store.find_article(self.name, key=doc.key)
        if existing is not None and existing.content_hash == digest:
            return IngestResult(source, "unchanged", existing)
        if existing is None:
            twin = self.store.find_article(self.name, content_hash=digest)
            if twin is not None:
                return IngestResult(
                    source, "unchanged", twin, reason=f"same text as article {twin.id} already here"
                )
        article_id = existing.id if existing else self._new_id(doc.key)
        return self._prepare(doc, article_id, digest), ("replaced" if existing else "added")

    def _prepare(self, doc: Document, article_id: str, digest: str) -> ArticleWrite:
        """Chunk an article and count its terms; vectors are filled in by :meth:`_embed`."""
        passages = chunk_document(
            doc,
            self.chunk,
            self.encoder.count_tokens,
            self.encoder.token_offsets,
            article_id=article_id,
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
        sentences = [
            (p.ordinal, a, b) for p in passages for a, b in split_sentences(doc.text, p.start, p.end)
        ]
        return ArticleWrite(
            info=info,
            text=doc.text,
            paragraphs=doc.paragraphs,
            passages=passages,
            vectors=np.zeros((len(passages), self.encoder.dim), dtype=np.float32),
            terms=[self.analyzer.counts(p.text) for p in passages],
            sentences=sentences,
            sentence_vectors=np.zeros((len(sentences), self.encoder.dim), dtype=np.float32),
        )

    def _embed(
        self, writes: Sequence[ArticleWrite], progress: Callable[[int], None] | None
    ) -> list[ArticleWrite]:
        """Embed passages and their (distinct) sentences in one pass and attach the vectors.

        Progress counts passages; a passage is reported once its sentences are done too.
        """
        texts = [p.text for w in writes for p in w.passages]
        # A sentence shared by overlapping passages is embedded once.
        spans: dict[tuple[int, int, int], int] = {}
        for wi, w in enumerate(writes):
            for _, a, b in w.sentences:
                spans.setdefault((wi, a, b), len(spans))
        sentence_texts = [writes[wi].text[a:b] for wi, a, b in spans]
        n_passages = len(texts)
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
            rows = [n_passages + spans[(wi, a, b)] for _, a, b in w.sentences]
            out.append(
                ArticleWrite(
                    w.info,
                    w.text,
                    w.paragraphs,
                    w.passages,
                    vectors[row : row + n],
                    w.terms,
                    w.sentences,
                    vectors[rows].reshape(len(rows), -1),
                )
            )
            row += n
        return out

    def _new_id(self, key: str) -> str:
        digest = hashlib.sha1(key.encode()).hexdigest()
        for length in (8, 12, 16, 40):
            candidate = digest[:length]
            other = self.store.get_article(self.name, candidate)
            if other is None or other.info.key == key:
                return candidate
        raise AssertionError("sha1 collision")

    def _commit(
        self,
        batch: list[tuple[ArticleWrite, str]],
        results: list[IngestResult],
        done: int,
        total: int,
        progress: ProgressFn | None,
    ) -> int:
        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        writes = self._embed([w for w, _ in batch], step)
        self.store.write(self.name, writes)
        results.extend(
            IngestResult(w.info.source or w.info.key, status, w.info)
            for w, (_, status) in zip(writes, batch, strict=True)
        )
        return done

    def forget(self, ref: str) -> ArticleInfo:
        """Remove an article (by id or title) and its passages."""
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            info = self.resolve(ref)
            self.store.write(self.name, [], delete=[info.id])
        return info

    def rebuild(self, progress: ProgressFn | None = None) -> IngestReport:
        """Re-chunk and re-embed every stored article with the current model and settings.

        For a change of model or chunk size, or a damaged vectors file: the cleaned texts in
        the store are the source, so no original file is needed. Nothing is written until every
        article is embedded, and then the library is swapped in one atomic step, so an
        interrupted rebuild leaves the old library as it was.
        """
        if self.store.spec(self.name) is None:
            raise NotFoundError(f"Library {self.name!r} does not exist; nothing to rebuild.")
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            writes: list[ArticleWrite] = []
            for info in self.store.list_articles(self.name):
                article = self.store.get_article(self.name, info.id)
                if article is None:
                    continue
                doc = Document(
                    key=info.key,
                    title=info.title,
                    text=article.text,
                    paragraphs=article.paragraphs,
                    byline=info.byline,
                    date=info.date,
                    url=info.url,
                    source=info.source,
                )
                writes.append(self._prepare(doc, info.id, info.content_hash))
            total = sum(len(w.passages) for w in writes)
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            if progress is not None:
                progress(0, total)
            writes = self._embed(writes, step)
            self.store.reset(self.name, self.spec, writes)
            self._checked = False
        return IngestReport(
            tuple(IngestResult(w.info.source or w.info.key, "replaced", w.info) for w in writes)
        )

    # ------------------------------------------------------------------ reading

    def search(self, question: str, k: int = 5, article_ids: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` passages that best match ``question``, best first."""
        self._check()
        q, _ = clean_question(question)
        qvec = self.retriever.embed_query(q)
        return self._hits(self.retriever.candidates(self.name, q, qvec, article_ids)[:k])

    def _hits(self, candidates: Sequence[Candidate]) -> list[Hit]:
        passages = self.store.passages(self.name, [c.passage_id for c in candidates])
        by_id = {p.id: p for p in passages}
        infos: dict[str, ArticleInfo] = {}
        hits: list[Hit] = []
        for c in candidates:
            p = by_id.get(c.passage_id)
            if p is None:
                continue
            info = infos.get(p.article_id)
            if info is None:
                article = self.store.get_article(self.name, p.article_id)
                if article is None:
                    continue
                info = infos[p.article_id] = article.info
            hits.append(
                Hit(
                    passage=p,
                    article=info,
                    score=c.score,
                    rank=len(hits) + 1,
                    scores=dict(c.features),
                )
            )
        return hits

    def ask(
        self,
        question: str,
        *,
        k: int = 4,
        article_ids: Sequence[str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Answer:
        """Answer from the library: the best passage, its answering sentence, or a refusal.

        ``article_ids`` limits the search to those articles (a follow-up about one article);
        ``timings``, when given, receives the seconds spent in each stage.
        """
        self._check()
        q, notes = clean_question(question)
        start = time.perf_counter()
        qvec = self.retriever.embed_query(q)
        if timings is not None:
            timings["embed"] = timings.get("embed", 0.0) + time.perf_counter() - start
        candidates = self.retriever.candidates(self.name, q, qvec, article_ids, timings)[:k]
        start = time.perf_counter()
        hits = self._hits(candidates)
        if timings is not None:
            timings["hits"] = timings.get("hits", 0.0) + time.perf_counter() - start
        return build_answer(q, candidates, hits, self.config, notes)

    def summarize(self, ref: str, sentences: int = 3) -> Summary:
        """An extractive summary of one article (by id or title), cached until the article changes."""
        if sentences < 1:
            raise InputError("Ask for at least one sentence.")
        info = self.resolve(ref)
        article = self.store.get_article(self.name, info.id)
        if article is None:
            raise NotFoundError("That article has been removed from the library.")
        info = article.info
        # The store drops an article's entries when it changes; the hash in the key also makes a
        # stale entry unreachable, and the version retires entries of an older summarizer.
        key = f"{info.id}:{info.content_hash}:{sentences}:v{SUMMARIZER_VERSION}"
        cached = self.store.get_cached(self.name, "summary", key)
        spans = spans_from_json(cached, article.paragraphs) if cached else None
        if spans is None:
            # The library already holds its sentences' vectors: reuse them, encode only the rest.
            passage_ids = [p.id for p in self.store.article_passages(self.name, info.id)]
            known = {(r.start, r.end): r.vector for r in self.store.sentences(self.name, passage_ids)}
            spans = summarize_document(article.text, article.paragraphs, self.encoder, sentences, known=known)
            self.store.put_cached(self.name, "summary", key, info.id, spans_to_json(spans))
        return make_summary(info, article.text, article.paragraphs, spans, sentences)
