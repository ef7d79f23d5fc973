"""The core's front door: one library of articles in one store, read and written.

Everything here is synchronous and blocking (model inference, disk); front ends that run an
event loop call it from a worker thread. The write path lives in :mod:`embeddings.ingest`,
recorded answers and votes in :mod:`embeddings.records`; :class:`Library` is what front ends
call for all of them, so the command line and the Discord bot behave the same.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from . import community
from .answer import build_answer
from .articles import expand_paths, load_file
from .chunking import ChunkSpec
from .community import Gap, MemberData, Pin, ServerSettings
from .encoder import Encoder
from .errors import CitebotError, EmptyLibraryError, IndexMismatchError, InputError, NotFoundError
from .ingest import SHORT_ID, Ingester, ProgressFn, UrlLoader
from .lexical import Analyzer
from .records import ANSWER_KIND, VOTE_KIND, AnswerRecord, RecordedAnswer
from .search import SENTENCE_VECTORS, Candidate, Reranker, Retriever, SearchConfig, fitted_config
from .store import Feedback, IndexSpec, Record, Store, check_library_name
from .summarize import SUMMARIZER_VERSION, make_summary, spans_from_json, spans_to_json, summarize_document
from .types import Answer, ArticleInfo, Document, Hit, IngestReport, IngestResult, Summary

MAX_QUESTION_CHARS = 1000
DEFAULT_MAX_ARTICLE_CHARS = 10_000_000
"""The longest article one ingest takes by default: three times *War and Peace*. An article is
embedded and committed whole, so its vectors (about 120 MB at this size) are held at once."""
"""Longer questions are cut here (the model reads about 256 word pieces anyway)."""

PINNED_NOTE = "Chosen by this server's moderators as the answer to questions like this one."
VOTE_REASONS = {
    "wrong": "wrong passage",
    "missing": "not answered",
    "outdated": "out of date",
}
"""Why an answer got a 👎: key -> how it reads."""
STATE_TTL = 10.0
"""Seconds a library trusts its cached settings and pins before reading them again (another
process, the command line, may have changed them; this process's own changes apply at once)."""

FOLLOW_UP_WITHIN = "Follow-up: searched the article of the previous answer."
FOLLOW_UP_WIDENED = (
    "Follow-up: the previous answer's article doesn't cover this, so I searched the whole library."
)


_SMALL_TALK = frozenset(
    "thanks thank you thx ty tysm cheers ok okay k cool great nice good awesome perfect lol lmao haha "
    "yes yeah yep no nope hi hello hey bye got it wow sure".split()
)


def is_small_talk(text: str) -> bool:
    """True for a short reply that is not a question ("thanks!", "ok 👍", "got it"): the bot
    should not search the library for it and answer "I couldn't find this"."""
    if "?" in text:
        return False
    words = re.findall(r"[^\W\d_]+", text.casefold())
    return 0 < len(words) <= 4 and all(w in _SMALL_TALK for w in words)


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id's display form: its first :data:`~embeddings.ingest.SHORT_ID` characters, or more
    where two ids share that prefix, so every shown id still resolves to one article."""
    ordered = sorted(set(ids))

    def common(a: str, b: str) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    out: dict[str, str] = {}
    for i, aid in enumerate(ordered):
        # In sorted order the ids sharing the longest prefix with this one are its neighbours.
        shared = max(
            common(aid, ordered[i - 1]) if i > 0 else 0,
            common(aid, ordered[i + 1]) if i + 1 < len(ordered) else 0,
        )
        out[aid] = aid[: max(SHORT_ID, shared + 1)]
    return out


_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def clean_question(question: str) -> tuple[str, tuple[str, ...]]:
    """Normalise a question's whitespace and cut it to :data:`MAX_QUESTION_CHARS`.

    Returns the question and notes for the user (e.g. that it was truncated); raises
    :class:`InputError` for an empty question.
    """
    if not isinstance(question, str):
        raise InputError("The question is empty: type what you want to know.")
    # Control characters and lone surrogates carry no meaning in a question, and the stores
    # cannot keep them (PostgreSQL refuses NUL; UTF-8 cannot encode a lone surrogate): the
    # question is logged and voted on with its text, so they go here, before anything else.
    question = _UNPRINTABLE.sub(" ", question)
    if not question.strip():
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
        max_article_chars: int | None = DEFAULT_MAX_ARTICLE_CHARS,
        server_defaults: ServerSettings = community.DEFAULTS,
        sentence_vectors: str = "late",
        abstain_threshold: float | None = None,
    ) -> None:
        if sentence_vectors not in SENTENCE_VECTORS:
            raise InputError(
                f"Sentence vectors {sentence_vectors!r} are not a choice: use one of {', '.join(SENTENCE_VECTORS)}."
            )
        if sentence_vectors == "late" and not hasattr(encoder, "encode_spans"):
            sentence_vectors = "separate"  # an encoder that cannot pool spans of one pass
        # What a library created or rebuilt by this view gets; an existing library keeps its own.
        self.sentence_vectors = sentence_vectors
        self._search = search
        self._abstain_threshold = abstain_threshold
        self.max_article_chars = max_article_chars
        self.server_defaults = server_defaults
        self._state: tuple[float, ServerSettings, community.PinIndex] | None = None
        self._state_lock = threading.Lock()
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
        self.spec = IndexSpec(
            model=encoder.name,
            dim=encoder.dim,
            max_tokens=self.chunk.max_tokens,
            overlap=self.chunk.overlap,
            analyzer=self.analyzer.name,
            sentence_vectors=sentence_vectors,
        )
        self.retriever = Retriever(
            store, encoder, self.analyzer, self._config_for(sentence_vectors), reranker=reranker
        )
        self.write_timeout = write_timeout
        # Threads of one process (the bot) take turns writing; other processes meet the
        # store's file lock.
        self._write_lock = threading.Lock()
        self._checked = False
        self._checked_at = 0.0

    # ------------------------------------------------------------------ state

    def exists(self) -> bool:
        """True once the library has been created in the store."""
        return self.store.spec(self.name) is not None

    @property
    def late_chunking(self) -> bool:
        """True when the library's sentence vectors come from their passage's forward pass."""
        return self.spec.sentence_vectors == "late"

    @property
    def config(self) -> SearchConfig:
        """The search settings in force (the retriever's)."""
        return self.retriever.config

    def _config_for(self, sentence_vectors: str) -> SearchConfig:
        """The search settings for a library whose sentence vectors were made this way: the
        given ones, else those fitted for the kind (the confidence curve depends on it)."""
        config = self._search or fitted_config(sentence_vectors)
        if self._abstain_threshold is not None:
            config = replace(config, abstain_threshold=self._abstain_threshold)
        return config

    def _check(self) -> None:
        """Refuse to read a library built with another model or chunking, and follow the way its
        sentence vectors were made. Read at most every :data:`STATE_TTL` seconds, not per
        question, so that a rebuild by another process is followed (or reported) within that."""
        if self._checked and time.monotonic() - self._checked_at < STATE_TTL:
            return
        existing = self.store.spec(self.name)
        if existing is None:
            raise EmptyLibraryError(self.name)
        differences = existing.same_index(self.spec)
        if differences:
            raise IndexMismatchError(self.name, differences)
        if existing != self.spec:
            self.spec = existing
            self.retriever.config = self._config_for(existing.sentence_vectors)
        self._checked, self._checked_at = True, time.monotonic()

    def articles(self) -> list[ArticleInfo]:
        """Every article in the library, oldest first."""
        self._check()
        return self.store.list_articles(self.name)

    def resolve(self, ref: str) -> ArticleInfo:
        """Find an article by id, id prefix, or title (exact, then close).

        Raises :class:`NotFoundError` with the closest titles when nothing matches clearly.
        """
        return self.match(ref)[0]

    def match(self, ref: str) -> tuple[ArticleInfo, bool]:
        """Like :meth:`resolve`, and whether the match is exact (an id, a unique id prefix, the
        title as written) rather than close (a part of the title, a typo). A front end asks for
        confirmation before it deletes a close match."""
        ref = ref.strip()
        if not ref:
            raise InputError("Name an article: its id or its title.")
        articles = self.articles()
        by_id = {a.id: a for a in articles}
        if ref in by_id:
            return by_id[ref], True
        if len(ref) >= 4:
            prefixed = [a for a in articles if a.id.startswith(ref)]
            if len(prefixed) == 1:
                return prefixed[0], True
            if len(prefixed) > 1:
                shown = "; ".join(f"{a.id[: SHORT_ID + 4]} “{a.title}”" for a in prefixed[:5])
                more = f" and {len(prefixed) - 5} more" if len(prefixed) > 5 else ""
                raise NotFoundError(
                    f"{ref!r} is ambiguous in library {self.name!r}: it begins the ids of "
                    f"{len(prefixed)} articles ({shown}{more}). Give more of the id.",
                    tuple(a.title for a in prefixed[:5]),
                    kind="article",
                    ref=ref,
                    library=self.name,
                )
        # A JSONL record's own id (its key is "jsonl:<file>#<id>").
        records = [a for a in articles if a.key.startswith("jsonl:") and a.key.rpartition("#")[2] == ref]
        if len(records) == 1:
            return records[0], True
        low = ref.casefold()
        exact = [a for a in articles if a.title.casefold() == low]
        if len(exact) == 1:
            return exact[0], True
        contains = [a for a in articles if low in a.title.casefold()]
        if len(contains) == 1 and len(low) >= 8:
            return contains[0], False
        # Fuzzy: resolve a near-exact title (a typo) when it clearly beats the runner-up.
        scored = sorted(
            ((difflib.SequenceMatcher(None, low, a.title.casefold()).ratio(), a) for a in articles),
            key=lambda sa: -sa[0],
        )
        if scored and scored[0][0] >= 0.85 and (len(scored) == 1 or scored[0][0] - scored[1][0] >= 0.05):
            return scored[0][1], False
        close = [a.title for ratio, a in scored if ratio >= 0.5]
        ranked = list(dict.fromkeys([a.title for a in contains] + close))[:5]
        hint = (" Did you mean: " + "; ".join(f"“{t}”" for t in ranked) + "?") if ranked else ""
        raise NotFoundError(
            f"No article matches {ref!r} in library {self.name!r}.{hint}",
            tuple(ranked),
            kind="article",
            ref=ref,
            library=self.name,
        )

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
            if self.store.spec(self.name) is None:
                self.store.create(self.name, self._configured_spec())
            self._checked = False
            self._check()
            report = self._ingester().ingest(items, progress=progress, batch_passages=batch_passages)
            return replace(report, dropped_pins=self._refresh_pins())

    def _configured_spec(self) -> IndexSpec:
        """The spec of a library this view creates or rebuilds."""
        return replace(self.spec, sentence_vectors=self.sentence_vectors)

    def _ingester(self, spec: IndexSpec | None = None) -> Ingester:
        return Ingester(
            self.store,
            self.encoder,
            self.name,
            spec or self.spec,
            self.chunk,
            self.analyzer,
            self.max_article_chars,
        )

    def forget(self, ref: str) -> ArticleInfo:
        """Remove an article (by id or title) and its passages."""
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            info = self.resolve(ref)
            self.store.write(self.name, [], delete=[info.id])
            self._refresh_pins()
        return info

    def forget_keys(self, keys: Sequence[str]) -> list[ArticleInfo]:
        """Remove the articles stored under ``keys`` (their URLs, for pages gone from a
        subscription); keys with no article are ignored."""
        if not keys or not self.exists():
            return []
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            found = self.store.find_articles(self.name, keys=list(keys))
            if found:
                self.store.write(self.name, [], delete=[a.id for a in found])
                self._refresh_pins()
        return found

    def rebuild(self, progress: ProgressFn | None = None) -> IngestReport:
        """Re-chunk and re-embed every stored article with the current model and settings.

        For a change of model, chunk size or way of making sentence vectors, or a damaged
        vectors file: the cleaned texts in the store are the source, so no original file is
        needed. Nothing is written until every article is embedded, and then the library is
        swapped in one atomic step, so an interrupted rebuild leaves the old library as it was.
        """
        if self.store.spec(self.name) is None:
            raise EmptyLibraryError(self.name)
        with self._write_lock, self.store.writer(self.name, self.write_timeout):
            spec = self._configured_spec()
            writes = self._ingester(spec).rebuild(progress)
            self.store.reset(self.name, spec, writes)
            self._checked = False
            dropped = self._refresh_pins()
        return IngestReport(
            tuple(IngestResult(w.info.source or w.info.key, "replaced", w.info) for w in writes), dropped
        )

    # ------------------------------------------------------------------ reading

    def search(self, question: str, k: int = 5, article_ids: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` passages that best match ``question``, best first."""
        self._check()
        q, _ = clean_question(question)
        qvec = self.retriever.embed_query(q)
        return self._hits(self.retriever.candidates(self.name, q, qvec, article_ids)[:k])

    def _hits(self, candidates: Sequence[Candidate]) -> list[Hit]:
        """Candidates as hits: their passages came with them; article metadata in one read."""
        found = [(c, c.passage) for c in candidates if c.passage is not None]
        infos = self.store.article_infos(self.name, list(dict.fromkeys(p.article_id for _, p in found)))
        hits: list[Hit] = []
        for c, passage in found:
            info = infos.get(passage.article_id)
            if info is None:
                continue  # forgotten since the search
            hits.append(
                Hit(passage=passage, article=info, score=c.score, rank=len(hits) + 1, scores=dict(c.features))
            )
        return hits

    def ask(
        self,
        question: str,
        *,
        k: int = 4,
        article_ids: Sequence[str] | None = None,
        prefer_articles: Sequence[str] | None = None,
        record_as: str | None = None,
        timings: dict[str, float] | None = None,
        asked_by: str | None = None,
    ) -> Answer:
        """Answer from the library: the best passage, its answering sentence, or a refusal.

        ``article_ids`` limits the search to those articles. ``prefer_articles`` asks within
        those articles first and, when they do not answer, the whole library; a note says which
        happened. ``record_as`` records an answered question under that id for its buttons,
        follow-ups and votes (:meth:`recorded`, :meth:`vote`). ``timings``, when given, receives
        the seconds spent in each stage. ``asked_by`` (a member's id) logs the question for the
        knowledge-gap report (:meth:`gaps`) for as long as the retention setting says.

        A question close enough to one the moderators pinned an answer for gets that passage
        first (``pinned``); the server's abstain threshold decides the rest.
        """
        self._check()
        answer = None
        if prefer_articles:
            within, vector = self._ask(question, k, prefer_articles, timings)
            if within.answered:
                answer = replace(within, notes=(*within.notes, FOLLOW_UP_WITHIN))
            else:
                answer, vector = self._ask(question, k, article_ids, timings)
                answer = replace(answer, notes=(*answer.notes, FOLLOW_UP_WIDENED))
        else:
            answer, vector = self._ask(question, k, article_ids, timings)
        if record_as is not None and answer.best is not None:
            self.store.put_cached(
                self.name, ANSWER_KIND, record_as, answer.best.article.id, AnswerRecord.of(answer).to_json()
            )
        if asked_by is not None:
            self._log_question(answer, vector, asked_by, record_as)
        return answer

    def _log_question(self, answer: Answer, vector: NDArray[np.float32], user: str, key: str | None) -> None:
        if not self.settings().retention_days:
            return  # the server keeps no questions
        closest = answer.hits[0].article if answer.hits else None
        self.store.put_record(
            self.name,
            community.question_record(
                key or uuid.uuid4().hex,
                user,
                answer.question,
                vector,
                answer.answered,
                answer.confidence,
                closest.id if closest else None,
                closest.title if closest else None,
            ),
        )

    def follow_up(
        self,
        question: str,
        previous: str | None,
        *,
        record_as: str | None = None,
        asked_by: str | None = None,
    ) -> Answer:
        """Ask a follow-up of the recorded answer ``previous``: within its article first.

        An unknown or expired ``previous`` (another library's answer, a changed article) makes
        this an ordinary question.
        """
        self._check()
        record = self._record(previous) if previous is not None else None
        return self.ask(
            question,
            prefer_articles=[record.article_id] if record else None,
            record_as=record_as,
            asked_by=asked_by,
        )

    def _ask(
        self,
        question: str,
        k: int,
        article_ids: Sequence[str] | None,
        timings: dict[str, float] | None,
    ) -> tuple[Answer, NDArray[np.float32]]:
        q, notes = clean_question(question)
        start = time.perf_counter()
        qvec = self.retriever.embed_query(q)
        if timings is not None:
            timings["embed"] = timings.get("embed", 0.0) + time.perf_counter() - start
        candidates = self.retriever.candidates(self.name, q, qvec, article_ids, timings)
        start = time.perf_counter()
        settings, pins = self._server_state()
        pin = pins.best(qvec)
        if pin is not None and (article_ids is None or pin.article_id in article_ids):
            candidates = self._pinned_first(pin, candidates, qvec)
        else:
            pin = None
        candidates = candidates[:k]
        hits = self._hits(candidates)
        if timings is not None:
            timings["hits"] = timings.get("hits", 0.0) + time.perf_counter() - start
        config = self.config
        if settings.abstain_threshold is not None:
            config = replace(config, abstain_threshold=settings.abstain_threshold)
        answer = build_answer(q, candidates, hits, config, notes)
        if pin is not None and hits and hits[0].passage.id == pin.passage_id:
            # The moderators' choice is the answer, however sure the ranking is.
            if not answer.answered:
                answer = build_answer(q, candidates, hits, replace(config, abstain_threshold=0.0), notes)
            answer = replace(answer, pinned=True, notes=(*answer.notes, PINNED_NOTE))
        return answer, qvec

    def _pinned_first(
        self, pin: Pin, candidates: Sequence[Candidate], qvec: NDArray[np.float32]
    ) -> list[Candidate]:
        """``candidates`` with the pinned passage first (read and scored if the search missed it)."""
        rest = [c for c in candidates if c.passage_id != pin.passage_id]
        found = next((c for c in candidates if c.passage_id == pin.passage_id), None)
        if found is None or found.highlight is None:
            evidence = self.store.evidence(self.name, [pin.passage_id])
            if not evidence:
                return list(candidates)  # gone since the pins were read: an ordinary answer
            e = evidence[0]
            dense = float(e.vector @ qvec)
            scored = [(float(r.vector @ qvec), r.start, r.end) for r in e.sentences]
            best = max(scored, default=None)
            highlight = None if best is None or e.passage.is_code else (best[1], best[2])
            features = dict(found.features) if found else {}
            features.setdefault("dense", dense)
            features.setdefault("sentence", best[0] if best else dense)
            found = Candidate(
                pin.passage_id, found.score if found else 0.0, features, highlight, True, e.passage
            )
        return [found, *rest]

    # ------------------------------------------------------------------ recorded answers and votes

    def _record(self, answer_id: str) -> AnswerRecord | None:
        raw = self.store.get_cached(self.name, ANSWER_KIND, answer_id)
        return AnswerRecord.from_json(raw) if raw else None

    def recorded(self, answer_id: str) -> RecordedAnswer:
        """A recorded answer with its passages as stored now, in their original order.

        Raises :class:`NotFoundError` (kind ``answer``) when this library has no such answer:
        another library's id, or its article was changed or forgotten since.
        """
        self._check()
        record = self._record(answer_id)
        gone = NotFoundError(
            f"Answer {answer_id} is not in library {self.name!r} (its article was changed or removed).",
            kind="answer",
            ref=answer_id,
            library=self.name,
        )
        if record is None:
            raise gone
        passages = {p.id: p for p in self.store.passages(self.name, list(record.passage_ids))}
        infos = self.store.article_infos(
            self.name, list(dict.fromkeys(p.article_id for p in passages.values()))
        )
        hits: list[Hit] = []
        for rank, (pid, score) in enumerate(zip(record.passage_ids, record.scores, strict=True), start=1):
            passage = passages.get(pid)
            info = infos.get(passage.article_id) if passage is not None else None
            if passage is not None and info is not None:
                hits.append(Hit(passage=passage, article=info, score=score, rank=rank))
        if not hits or hits[0].passage.id != record.passage_ids[0]:
            raise gone
        return RecordedAnswer(answer_id, record, tuple(hits))

    def vote(self, answer_id: str, voter: str, up: bool, context: dict[str, str] | None = None) -> bool:
        """Store a 👍/👎 on a recorded answer with its question; False if ``voter`` already voted on it.

        Counted once per voter and answer, across threads and processes. ``context`` is kept
        with the vote (e.g. the server it came from). Raises :class:`NotFoundError` when the
        answer is gone (see :meth:`recorded`).
        """
        answer = self.recorded(answer_id)
        record, best = answer.record, answer.best
        if not self.store.claim_cached(
            self.name, VOTE_KIND, f"{answer_id}:{voter}", record.article_id, "1" if up else "-1"
        ):
            return False
        self.store.add_feedback(
            self.name,
            Feedback(
                question=record.question,
                answer_passage_id=record.passage_ids[0],
                article_id=record.article_id,
                vote=1 if up else -1,
                user=voter,
                extra={
                    **(context or {}),
                    "answer_id": answer_id,
                    "sentence": record.sentence or "",
                    "title": best.article.title,
                    "paragraph": str(best.passage.paragraph),
                },
            ),
        )
        return True

    def auto_reply(self, place: str, question: str, *, asked_by: str | None = None) -> Answer | None:
        """The answer to post unasked in ``place`` (a new forum post), or None to stay silent.

        Replies only when sure: a pinned answer, or a confidence at or above the server's
        auto-reply threshold (by default the point where at most 2 % of out-of-library
        questions get a reply). Never twice in one place: the first call claims it, whatever it
        decides, so a re-delivered event or a second process stays silent.
        """
        if self.store.records(self.name, community.FORUM_KIND, keys=[place]):
            return None
        threshold = self.settings().autoreply_threshold
        answer = self.ask(question, record_as=place, asked_by=asked_by)
        sure = answer.best is not None and (
            answer.pinned or threshold is None or answer.confidence >= threshold
        )
        self.store.put_record(
            self.name,
            Record(
                community.FORUM_KIND, place, json.dumps({"replied": sure, "confidence": answer.confidence})
            ),
        )
        if not sure:
            return None
        self.remember_conversation(place, place)
        return answer

    def remember_conversation(self, place: str, answer_id: str) -> None:
        """Note ``answer_id`` as the latest answer in ``place`` (a thread): the next question
        there is a follow-up of it (:meth:`latest_answer`)."""
        self.store.put_record(self.name, Record(community.CONVERSATION_KIND, place, answer_id))

    def latest_answer(self, place: str) -> str | None:
        """The latest answer given in ``place``, if any."""
        found = self.store.records(self.name, community.CONVERSATION_KIND, keys=[place])
        return found[0].value if found else None

    def explain_vote(self, answer_id: str, voter: str, reason: str) -> bool:
        """Say why a 👎 was given (a key of :data:`VOTE_REASONS`); False if no such vote."""
        if reason not in VOTE_REASONS:
            raise InputError(f"Unknown reason {reason!r}: one of {', '.join(VOTE_REASONS)}.")
        return self.store.set_feedback_reason(self.name, answer_id, voter, VOTE_REASONS[reason])

    # ------------------------------------------------------------------ a community's settings

    def _server_state(self) -> tuple[ServerSettings, community.PinIndex]:
        """The effective settings and the pins, read at most every :data:`STATE_TTL` seconds."""
        with self._state_lock:
            state = self._state
            if state is not None and time.monotonic() - state[0] < STATE_TTL:
                return state[1], state[2]
        stored = community.load_settings(self.store, self.name)
        # A pin made with another model (before a rebuild) has a vector of another size: it
        # cannot be compared, so it does not apply.
        pins = community.PinIndex([p for p in self.pins() if p.vector.shape[0] == self.encoder.dim])
        settings = stored.over(self.server_defaults)
        with self._state_lock:
            self._state = (time.monotonic(), settings, pins)
        return settings, pins

    def _forget_state(self) -> None:
        with self._state_lock:
            self._state = None

    def settings(self) -> ServerSettings:
        """The settings in force: the server's own over the operator's defaults."""
        return self._server_state()[0]

    def own_settings(self) -> ServerSettings:
        """Only what the server changed (unset: the default applies)."""
        return community.load_settings(self.store, self.name)

    def configure(self, **changes: object) -> ServerSettings:
        """Change settings (a value of None returns one to its default); the settings in force.

        Values are checked as :func:`community.parse_setting` would (raises :class:`InputError`).
        """
        current = self.own_settings()
        values: dict[str, object] = {}
        for name, value in changes.items():
            if name not in community.SETTING_HELP:
                raise InputError(f"There is no setting {name!r}.")
            values[name] = None if value is None else community.coerce_setting(name, value)
        community.save_settings(self.store, self.name, replace(current, **values))  # type: ignore[arg-type]
        self._forget_state()
        return self.settings()

    # ------------------------------------------------------------------ gaps

    def gaps(self, since: datetime | None = None, *, threshold: float = community.GAP_THRESHOLD) -> list[Gap]:
        """Questions declined or voted 👎 since ``since`` (default: the retention period),
        grouped by meaning, largest group first."""
        settings = self.settings()
        if settings.retention_days:
            community.purge_questions(self.store, self.name, settings.retention_days)
        since_text = community.stamp(since) if since is not None else None
        logged = [
            q
            for q in map(
                community.LoggedQuestion.of,
                self.store.records(self.name, community.QUESTION_KIND, since=since_text),
            )
            if q is not None
        ]
        # A 👎 counts where its question was logged (the vote names the answer's id).
        votes = self.store.list_feedback(self.name, limit=1_000_000) if self.exists() else []
        down = [f.extra.get("answer_id", "") for f in votes if f.vote < 0]
        return community.find_gaps(logged, down, threshold=threshold, dim=self.encoder.dim)

    # ------------------------------------------------------------------ pins

    def pins(self) -> list[Pin]:
        """The moderators' pins, oldest first."""
        return [p for p in map(Pin.of, self.store.records(self.name, community.PIN_KIND)) if p is not None]

    def pin(self, answer_id: str, rank: int, by: str) -> Pin:
        """Pin the ``rank``-th passage (1 = the answer) of a recorded answer as the answer to its
        question and to questions close to it. Pinning the same passage again changes nothing."""
        answer = self.recorded(answer_id)
        hit = next((h for h in answer.hits if h.rank == rank), None)
        if hit is None:
            raise NotFoundError(
                "That source is no longer in the library.", kind="passage", ref=str(rank), library=self.name
            )
        question = answer.record.question
        logged = self.store.records(self.name, community.QUESTION_KIND, keys=[answer_id])
        entry = community.LoggedQuestion.of(logged[0]) if logged else None
        vector = entry.vector if entry is not None else self.retriever.embed_query(question)
        md5 = community.passage_text_md5(hit.passage.text)
        pin = Pin(
            community.pin_id(question, md5),
            question,
            vector,
            hit.passage.id,
            hit.article.id,
            hit.article.key,
            md5,
            hit.passage.paragraph,
            hit.article.title,
            by,
            community.stamp(community.utcnow()),
        )
        self.store.put_record(self.name, pin.to_record())
        self._forget_state()
        return pin

    def restore_pins(self, records: Sequence[Record]) -> tuple[str, ...]:
        """Add pins made elsewhere (an export, a benchmark) and follow each to this library's
        passage of the same text; returns the questions of those that found none (dropped)."""
        for record in records:
            self.store.put_record(self.name, record)
        return self._refresh_pins() if records else ()

    def unpin(self, ref: str) -> Pin:
        """Remove a pin by its id (or a unique prefix of it)."""
        ref = ref.strip()
        matches = [p for p in self.pins() if p.id.startswith(ref)] if ref else []
        if len(matches) != 1:
            raise NotFoundError(
                f"No pin {'matches' if not matches else 'is uniquely named by'} {ref!r}: see the list of pins.",
                kind="passage",
                ref=ref,
                library=self.name,
            )
        self.store.delete_records(self.name, community.PIN_KIND, keys=[matches[0].id])
        self._forget_state()
        return matches[0]

    def dropped_pins(self) -> list[Pin]:
        """Pins removed because their passage changed or went away (until cleared)."""
        return [
            p for p in map(Pin.of, self.store.records(self.name, community.DROPPED_PIN_KIND)) if p is not None
        ]

    def clear_dropped_pins(self) -> int:
        """Forget the report of dropped pins."""
        return self.store.delete_records(self.name, community.DROPPED_PIN_KIND)

    def _refresh_pins(self) -> tuple[str, ...]:
        """After a write: follow each pin to its passage's new id when the article was
        re-ingested with the passage's text unchanged, drop it otherwise. Returns the dropped
        pins' questions."""
        pins = self.pins()
        if not pins:
            return ()
        current = {p.id: p for p in self.store.passages(self.name, [pin.passage_id for pin in pins])}
        dropped: list[str] = []
        for pin in pins:
            passage = current.get(pin.passage_id)
            if passage is not None and community.passage_text_md5(passage.text) == pin.text_md5:
                continue
            moved = None
            for info in self.store.find_articles(self.name, keys=[pin.article_key]):
                moved = next(
                    (
                        p
                        for p in self.store.article_passages(self.name, info.id)
                        if community.passage_text_md5(p.text) == pin.text_md5
                    ),
                    None,
                )
            if moved is not None:
                new = replace(
                    pin, passage_id=moved.id, article_id=moved.article_id, paragraph=moved.paragraph
                )
                self.store.put_record(self.name, new.to_record())
                continue
            self.store.delete_records(self.name, community.PIN_KIND, keys=[pin.id])
            record = pin.to_record()
            self.store.put_record(
                self.name,
                Record(
                    community.DROPPED_PIN_KIND,
                    pin.id,
                    record.value,
                    record.user,
                    community.stamp(community.utcnow()),
                ),
            )
            dropped.append(pin.question)
        self._forget_state()
        return tuple(dropped)

    # ------------------------------------------------------------------ quotas and members

    def check_ingest_quota(self) -> None:
        """Raise :class:`~embeddings.community.QuotaError` when the server may not add now."""
        stored = len(self.store.list_articles(self.name)) if self.exists() else 0
        community.check_ingest_quota(self.settings(), community.usage(self.store, self.name), stored)

    def record_usage(self, report: IngestReport, key: str | None = None) -> None:
        """Count what an ingest added against the daily quotas."""
        # The ingest measured each text it wrote: no article is read back to size it.
        changed = {r.article.id: r for r in report.results if r.status in ("added", "replaced") and r.article}
        if changed:
            size = sum(r.text_bytes for r in changed.values())
            community.record_usage(self.store, self.name, key or uuid.uuid4().hex, len(changed), size)

    def member_data(self, user: str) -> MemberData:
        """What the library holds about one member: logged questions and votes."""
        if not self.exists():
            return MemberData((), ())
        questions = [
            q
            for q in map(
                community.LoggedQuestion.of, self.store.records(self.name, community.QUESTION_KIND, user=user)
            )
            if q is not None
        ]
        votes = [f for f in self.store.list_feedback(self.name, limit=100_000) if f.user == user]
        return MemberData(tuple(questions), tuple(votes))

    def erase_member(self, user: str) -> tuple[int, int]:
        """Delete a member's logged questions and votes; how many of each."""
        questions = self.store.delete_records(self.name, community.QUESTION_KIND, user=user)
        votes = self.store.delete_feedback(self.name, user)
        return questions, votes

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
            # A library with sentence vectors made one pass each already holds what the summarizer
            # reads: reuse them, encode only the rest. Late-chunked ones carry their passage's
            # context, which blurs the centrality graph: on CNN/DailyMail they cost 0.6 ROUGE-1
            # (40.30 against 40.90, Lead-3 40.05; benchmarks/summaries.py), so those are encoded.
            known = None
            if not self.late_chunking:
                passage_ids = [p.id for p in self.store.article_passages(self.name, info.id)]
                known = {(r.start, r.end): r.vector for r in self.store.sentences(self.name, passage_ids)}
            spans = summarize_document(
                article.text, article.paragraphs, self.encoder, sentences, known=known, layout=article.layout
            )
            self.store.put_cached(self.name, "summary", key, info.id, spans_to_json(spans))
        return make_summary(info, article.text, article.paragraphs, spans, sentences, article.layout)
