"""Retrieval: three candidate lists, two scoring stages, and the evidence behind each score.

**Candidates** come from BM25 over passages, dense passage vectors, and dense sentence vectors
(a passage ranked by its best sentence), ``candidates`` from each.

**Stage 1** scores every candidate with cheap evidence already at hand:

* ``lexical_norm``: BM25 divided by the best BM25 score for this question (0..1);
* ``dense``: cosine of the question to the passage vector;
* ``sentence``: cosine of the question to the passage's best sentence vector;
* ``coverage``: idf-weighted share of the question's terms found in the passage.

**Stage 2** rescores the best ``rerank`` candidates with evidence that needs their text:

* ``sentence_coverage``: the best single sentence's idf-weighted share of the question terms;
* ``bigram_coverage``: share of the question's adjacent term pairs found in the passage.

Both stages are linear; the weights were fitted on one half of SQuAD-dev and checked on the
other (``benchmarks/fit_fusion.py``). The final score also gives the answer's confidence (see
:mod:`embeddings.answer`). Sentence evidence matters because a question usually targets one
sentence, while a passage vector averages that sentence with the rest of the paragraph.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .encoder import Encoder
from .lexical import BM25, Analyzer
from .store import Store
from .types import Passage

STAGE1_FEATURES = ("lexical_norm", "dense", "sentence", "coverage")
FEATURES = (*STAGE1_FEATURES, "sentence_coverage", "bigram_coverage")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Retrieval settings.

    ``candidates`` passages come from each retriever; the best ``rerank`` after stage 1 are
    rescored. ``stage1_weights``/``weights`` follow :data:`STAGE1_FEATURES`/:data:`FEATURES`.
    ``confidence_center``/``confidence_scale`` map the final score to a 0..1 confidence, and
    ``dense_confidence`` (weights of the best-sentence and passage cosines, then a bias) gives a
    second one from the dense evidence alone; the answer's confidence is the larger of the two
    (see :mod:`embeddings.answer`). ``abstain_threshold`` is the confidence below which the
    answer is "not in the library".
    ``highlight_coverage`` weighs term coverage against cosine when picking the sentence to
    highlight. The confidence defaults below are those of sentence vectors made one pass each;
    :func:`fitted_config` gives each kind's own, and is what a :class:`~embeddings.Library` uses.
    """

    candidates: int = 50
    rerank: int = 20
    # Fitted by benchmarks/fit_fusion.py on SQuAD-dev (weights on the even-numbered articles,
    # the confidence curves on a library of those articles).
    stage1_weights: tuple[float, ...] = (3.15, 5.2, 6.72, 4.56)
    weights: tuple[float, ...] = (2.05, 5.19, 5.93, 3.26, 2.63, 2.12)
    confidence_center: float = 10.31
    confidence_scale: float = 0.80
    dense_confidence: tuple[float, float, float] = (12.92, 6.70, -9.33)
    abstain_threshold: float = 0.61
    highlight_coverage: float = 1.0


SENTENCE_VECTORS = ("late", "separate")
"""Ways of making sentence vectors: pooled from the passage's own forward pass, or one pass
each (:class:`embeddings.store.IndexSpec`)."""

# The ranking weights are shared: refitted on late-chunked libraries they moved R@1 by 0.002.
# Each way has its own confidence curves (benchmarks/fit_fusion.py --keep-weights).
_FITTED = {
    "late": SearchConfig(
        confidence_center=10.06,
        confidence_scale=0.79,
        dense_confidence=(22.18, -3.05, -9.00),
        abstain_threshold=0.60,
    ),
    "separate": SearchConfig(),
}


def fitted_config(sentence_vectors: str) -> SearchConfig:
    """The default settings for a library whose sentence vectors were made this way.

    The ranking weights are shared; the confidence curves and threshold were fitted on libraries
    built each way: late-chunked sentence vectors sit a little closer to their passage's, so the
    same cosines mean a little less, and the other kind's curve declined 7.1 % of answerable
    questions instead of 4.9 %.
    """
    return _FITTED[sentence_vectors]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A passage with the evidence gathered for it.

    ``features`` maps each name in :data:`FEATURES` to its value (stage-2 features only for
    reranked candidates). ``highlight`` is the best sentence's ``(start, end)`` in the article
    text, chosen by cosine plus term coverage. ``passage`` is the passage itself, read with its
    evidence, so that nothing reads it again.
    """

    passage_id: int
    score: float
    features: dict[str, float]
    highlight: tuple[int, int] | None
    reranked: bool = False
    passage: Passage | None = None


@dataclass(slots=True)
class _Sentence:
    start: int
    end: int
    cosine: float


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


def _dot(weights: Sequence[float], names: Sequence[str], features: dict[str, float]) -> float:
    return sum(w * features.get(n, 0.0) for w, n in zip(weights, names, strict=True))


def _bigrams(terms: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(terms))


@runtime_checkable
class Reranker(Protocol):
    """A model that scores (question, passage) pairs, e.g. a cross-encoder."""

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage; higher is better."""


class Retriever:
    """Hybrid retrieval with a two-stage linear reranker over one store and one encoder.

    With a ``reranker`` (a cross-encoder), the stage-2 candidates are put in the reranker's
    order; the linear score still drives the confidence, which is calibrated.
    """

    def __init__(
        self,
        store: Store,
        encoder: Encoder,
        analyzer: Analyzer,
        config: SearchConfig,
        bm25: BM25 | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        if len(config.stage1_weights) != len(STAGE1_FEATURES) or len(config.weights) != len(FEATURES):
            raise ValueError("one weight per feature is needed")
        self.store = store
        self.encoder = encoder
        self.analyzer = analyzer
        self.config = config
        self.bm25 = bm25 or BM25()
        self.reranker = reranker

    def embed_query(self, question: str) -> NDArray[np.float32]:
        """The normalised query vector."""
        vector: NDArray[np.float32] = self.encoder.encode([question], kind="query")[0]
        return vector

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
        cfg = self.config
        q = np.asarray(query_vector, dtype=np.float32)
        terms = list(dict.fromkeys(self.analyzer.terms(question)))
        evidence = self.bm25.evidence(self.store, library, terms, article_ids)
        # Stage 2 weighs the terms BM25 scored by (all of them, or a long question's rarest).
        terms = [t for t in terms if t in evidence.idf]
        lexical = dict(evidence.top(cfg.candidates))
        clock.lap("bm25")
        ids = list(lexical)
        seen = set(ids)
        by_passage, by_sentence = self.store.nearest(library, q, cfg.candidates, article_ids)
        for pid, _ in (*by_passage, *by_sentence):
            if pid not in seen:
                ids.append(pid)
                seen.add(pid)
        clock.lap("dense")
        if not ids:
            return []
        # Passages, their vectors and their sentences in one read; a passage removed by a
        # concurrent write is simply no longer a candidate.
        found = self.store.evidence(library, ids)
        if not found:
            return []
        dense = np.stack([e.vector for e in found]) @ q
        sentences: dict[int, list[_Sentence]] = {
            e.passage.id: [_Sentence(r.start, r.end, float(r.vector @ q)) for r in e.sentences] for e in found
        }
        idf = evidence.idf
        bm25, coverage = evidence.lookup([e.passage.id for e in found])
        top_lexical = max(lexical.values(), default=0.0) or 1.0
        clock.lap("evidence")

        stage1: list[Candidate] = []
        for e, d, lex, cov in zip(found, dense, bm25, coverage, strict=True):
            pid = e.passage.id
            sents = sentences[pid]
            features = {
                "lexical_norm": lex / top_lexical,
                "dense": float(d),
                "sentence": max((s.cosine for s in sents), default=float(d)),
                "coverage": cov,
            }
            score = _dot(cfg.stage1_weights, STAGE1_FEATURES, features)
            stage1.append(Candidate(pid, score, features, None, passage=e.passage))
        stage1.sort(key=lambda c: (-c.score, c.passage_id))
        head = self._rerank(terms, idf, stage1[: cfg.rerank], sentences, question)
        clock.lap("rerank")
        return head + stage1[cfg.rerank :]

    def _rerank(
        self,
        terms: Sequence[str],
        idf: dict[str, float],
        head: Sequence[Candidate],
        sentences: dict[int, list[_Sentence]],
        question: str,
    ) -> list[Candidate]:
        """Stage 2: add text-level evidence to the best candidates, rescore, pick highlights."""
        cfg = self.config
        total = sum(idf.values()) or 1.0
        wanted = set(terms)
        q_bigrams = _bigrams(terms)
        out: list[Candidate] = []
        for c in head:
            passage = c.passage
            if passage is None:
                continue
            best_cov = 0.0
            highlight: tuple[int, int] | None = None
            best_pick = -math.inf
            for s in sentences.get(c.passage_id, []):
                # A passage's sentences lie inside it: slice them from the passage's own text.
                sentence = passage.text[s.start - passage.start : s.end - passage.start]
                found = wanted.intersection(self.analyzer.terms(sentence))
                cov = sum(idf[t] for t in found) / total
                best_cov = max(best_cov, cov)
                pick = s.cosine + cfg.highlight_coverage * cov
                # Code is quoted, never bolded as the answering sentence.
                if pick > best_pick and not passage.is_code:
                    best_pick, highlight = pick, (s.start, s.end)
            p_terms = self.analyzer.terms(passage.text)
            features = {
                **c.features,
                "sentence_coverage": best_cov,
                "bigram_coverage": len(q_bigrams & _bigrams(p_terms)) / len(q_bigrams) if q_bigrams else 0.0,
            }
            out.append(
                Candidate(
                    c.passage_id, _dot(cfg.weights, FEATURES, features), features, highlight, True, passage
                )
            )
        out.sort(key=lambda c: (-c.score, c.passage_id))
        if self.reranker is not None and out:
            out = self._cross_encode(question, out)
        return out

    def _cross_encode(self, question: str, head: list[Candidate]) -> list[Candidate]:
        """Reorder by the reranker's score (ties keep the linear order)."""
        assert self.reranker is not None
        scores = self.reranker.score(question, [c.passage.text for c in head if c.passage is not None])
        ranked = sorted(zip(scores, range(len(head)), head, strict=True), key=lambda t: (-t[0], t[1]))
        return [replace(c, features={**c.features, "reranker": float(s)}) for s, _, c in ranked]
