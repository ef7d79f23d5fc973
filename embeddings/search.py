"""Retrieval: three candidate lists fused by score, and the evidence for each candidate.

Candidates come from BM25 over passages, dense passage vectors, and dense sentence vectors (a
passage scored by its best sentence). Each candidate then gets all three scores, and the final
score is a weighted sum of:

* ``lexical``: BM25 divided by the best BM25 score for this question (0..1),
* ``dense``: cosine of the question to the whole passage,
* ``sentence``: cosine of the question to the passage's best sentence.

The sentence signal matters because a question usually targets one sentence, and a passage
vector averages that sentence with the rest of the paragraph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .encoder import Encoder
from .lexical import BM25, Analyzer
from .store import Store


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Retrieval settings.

    ``candidates`` passages are taken from each of the three retrievers; the weights combine
    their scores; ``abstain_threshold`` is the confidence below which the answer is "not in the
    library".
    """

    candidates: int = 50
    lexical_weight: float = 0.5
    dense_weight: float = 0.3
    sentence_weight: float = 1.0
    abstain_threshold: float = 0.35


@dataclass(frozen=True, slots=True)
class Candidate:
    """A passage with the evidence gathered for it.

    ``sentence_span`` is the best sentence's ``(start, end)`` in the article text; ``coverage``
    is the idf-weighted share of the question's terms found in the passage.
    """

    passage_id: int
    score: float
    dense: float
    sentence: float
    lexical: float
    lexical_norm: float
    coverage: float
    sentence_span: tuple[int, int] | None


class _Clock:
    """Adds the time since the previous lap to ``timings[stage]`` (no-op without a dict)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


class Retriever:
    """Hybrid retrieval over one store with one encoder."""

    def __init__(
        self,
        store: Store,
        encoder: Encoder,
        analyzer: Analyzer,
        config: SearchConfig,
        bm25: BM25 | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.analyzer = analyzer
        self.config = config
        self.bm25 = bm25 or BM25()

    def embed_query(self, question: str) -> NDArray[np.float32]:
        """The normalised query vector."""
        return self.encoder.encode([question], kind="query")[0]

    def candidates(
        self,
        library: str,
        question: str,
        query_vector: NDArray[np.float32],
        article_ids: Sequence[str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Candidate]:
        """All candidates with their evidence, best first (ties: earlier passage first).

        ``timings``, when given, receives the seconds spent in each stage.
        """
        clock = _Clock(timings)
        n = self.config.candidates
        q = np.asarray(query_vector, dtype=np.float32)
        terms = list(dict.fromkeys(self.analyzer.terms(question)))
        lexical = dict(self.bm25.search(self.store, library, terms, n, article_ids))
        clock.lap("bm25")
        ids = list(lexical)
        for pid, _ in self.store.dense_search(library, q, n, article_ids):
            if pid not in lexical:
                ids.append(pid)
        clock.lap("dense")
        seen = set(ids)
        for pid, _ in self.store.sentence_search(library, q, n, article_ids):
            if pid not in seen:
                ids.append(pid)
                seen.add(pid)
        clock.lap("sentences")
        if not ids:
            return []
        dense = self.store.vectors(library, ids) @ q
        best: dict[int, tuple[float, tuple[int, int]]] = {}
        for row in self.store.sentences(library, ids):
            score = float(row.vector @ q)
            if row.passage_id not in best or score > best[row.passage_id][0]:
                best[row.passage_id] = (score, (row.start, row.end))
        top_lexical = max(lexical.values(), default=0.0) or 1.0
        coverage = self._coverage(library, terms, ids)
        clock.lap("evidence")
        cfg = self.config
        out = []
        for pid, d in zip(ids, dense, strict=True):
            s, span = best.get(pid, (float(d), None))
            lex = lexical.get(pid, 0.0)
            norm = lex / top_lexical
            score = cfg.lexical_weight * norm + cfg.dense_weight * float(d) + cfg.sentence_weight * s
            out.append(Candidate(pid, score, float(d), s, lex, norm, coverage.get(pid, 0.0), span))
        out.sort(key=lambda c: (-c.score, c.passage_id))
        clock.lap("fuse")
        return out

    def _coverage(self, library: str, terms: Sequence[str], ids: Sequence[int]) -> dict[int, float]:
        """Idf-weighted share of the question's terms that occur in each passage."""
        if not terms:
            return {}
        n, _, df = self.store.lexical_stats(library, terms)
        # Terms the library has never seen still count in the denominator: a question about
        # something absent should not look fully covered.
        idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms}
        total = sum(idf.values()) or 1.0
        wanted = set(ids)
        found: dict[int, float] = {}
        for term, pid, _, _ in self.store.postings(library, [t for t in terms if t in df]):
            if pid in wanted:
                found[pid] = found.get(pid, 0.0) + idf[term]
        return {pid: v / total for pid, v in found.items()}
