"""Lexical retrieval: an analyzer (tokens, stop words, Snowball stems) and BM25 over postings.

The postings live in the store and are written with each article, so the lexical index is
persisted and updated incrementally with the library. A store hands back each query term's
postings as arrays (it keeps them packed in blocks of passage ids, see
:data:`embeddings.store.common.BLOCK_BITS`); scoring happens here with numpy, identically for
every store: exact BM25 over every passage that holds a query term, no candidate cut-off.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .store import Store
from .store.common import top_k

# Lucene's English stop words plus question and auxiliary words: questions are full of them
# and they say nothing about which passage answers.
STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with what which who whom whose when where why how
    did do does done doing has have had having been being were am i me my we our you your he
    him his she her its them from than so can could would should may might must shall also
    about over under after before during while""".split()
)

_TOKEN = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1)
def _stemmer() -> Any:  # PyStemmer ships no type information
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("Lexical search needs PyStemmer: pip install PyStemmer") from exc
    return Stemmer.Stemmer("english")


@dataclass(frozen=True, slots=True)
class Analyzer:
    """Turns text into index terms. ``name`` is stored with the index; change it on any change."""

    stem: bool = True
    stopwords: frozenset[str] = STOPWORDS

    @property
    def name(self) -> str:
        """Identity stored in the index spec."""
        return f"en-v1{'-stem' if self.stem else ''}-sw{len(self.stopwords)}"

    def terms(self, text: str) -> list[str]:
        """Lower-cased word tokens, stop words and single letters removed, stemmed."""
        words = [
            w for w in _TOKEN.findall(text.lower()) if w not in self.stopwords and (len(w) > 1 or w.isdigit())
        ]
        if self.stem and words:
            words = _stemmer().stemWords(words)
        return words

    def counts(self, text: str) -> dict[str, int]:
        """Term frequencies of ``text``."""
        return dict(Counter(self.terms(text)))


@dataclass(frozen=True, slots=True)
class BM25:
    """Okapi BM25 with Lucene's idf; ``k1`` and ``b`` are the usual parameters.

    A question of more than ``max_terms`` distinct terms (a pasted paragraph) is scored by its
    ``max_terms`` rarest ones, as search engines' "more like this" queries do: the cost of BM25
    grows with the postings of every term, and a thousand characters of the library's commonest
    words would otherwise read a large share of the whole index for one question. Questions
    people ask have far fewer terms (SQuAD-dev: at most 17), and are scored exactly.
    """

    k1: float = 1.2
    b: float = 0.75
    max_terms: int = 32

    def query_terms(self, store: Store, library: str, terms: Sequence[str]) -> list[str]:
        """The distinct terms BM25 scores ``terms`` by, in question order: all of them, or the
        ``max_terms`` rarest in the library (ties: the earlier in the question)."""
        unique = list(dict.fromkeys(terms))
        if len(unique) <= self.max_terms:
            return unique
        df = store.term_counts(library, unique)
        ranked = sorted(range(len(unique)), key=lambda i: (df.get(unique[i], 0), i))
        return [unique[i] for i in sorted(ranked[: self.max_terms])]

    def evidence(
        self,
        store: Store,
        library: str,
        terms: Sequence[str],
        article_ids: Sequence[str] | None = None,
    ) -> LexicalEvidence:
        """BM25 scores and term coverage of every passage that shares a term with the query.

        One pass over the postings gives both. Coverage is the idf-weighted share of the query's
        distinct terms found in a passage; a term the library has never seen still counts in the
        denominator, so a question about something absent never looks fully covered.
        """
        unique = self.query_terms(store, library, terms)
        if not unique:
            return LexicalEvidence.empty()
        rows = store.lexical(library, unique, article_ids)
        n, df = rows.passage_count, rows.df
        idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in unique}
        total = sum(idf.values())
        # Terms in binary order: every store then adds a passage's terms in the same order, and
        # the sums agree to the last bit (bincount adds in the order of its input).
        present = sorted(t for t in rows.postings if t in idf)
        if not n or not present:
            return LexicalEvidence.empty(idf)
        k1, b = self.k1, self.b
        norm = rows.mean_length or 1.0
        pids = np.concatenate([rows.postings[t].passage_ids for t in present])
        weights = np.concatenate([np.full(len(rows.postings[t]), idf[t]) for t in present])
        tf = np.concatenate([rows.postings[t].tfs for t in present]).astype(np.float64)
        length = np.concatenate([rows.postings[t].lengths for t in present]).astype(np.float64)
        contributions = weights * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / norm))
        # Sum per passage. bincount adds in input order whichever way the slots are made, so
        # both ways give the same sums: straight by id when the ids are dense enough (a
        # question of common words at scale), else by rank among the distinct ids (a sort).
        low = int(pids.min())
        span = int(pids.max()) - low + 1
        if span <= 4 * len(pids):
            slot = pids - low
            ids = np.flatnonzero(np.bincount(slot, minlength=span)) + low
            scores = np.bincount(slot, weights=contributions, minlength=span)[ids - low]
            coverage = np.bincount(slot, weights=weights, minlength=span)[ids - low] / total
        else:
            ids, slot = np.unique(pids, return_inverse=True)
            scores = np.bincount(slot, weights=contributions, minlength=len(ids))
            coverage = np.bincount(slot, weights=weights, minlength=len(ids)) / total
        return LexicalEvidence(ids, np.asarray(scores, dtype=np.float64), coverage, idf)


@dataclass(frozen=True, slots=True, eq=False)
class LexicalEvidence:
    """BM25 score and idf-weighted term coverage of each passage sharing a term with the query
    (``ids`` ascending, ``scores`` and ``coverage`` beside them), and the idf of each term it
    was scored by (see :attr:`BM25.max_terms`)."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float64]
    coverage: NDArray[np.float64]
    idf: dict[str, float]

    @classmethod
    def empty(cls, idf: dict[str, float] | None = None) -> LexicalEvidence:
        """No passage shares a term (``idf`` still says what each term would weigh)."""
        none = np.zeros(0)
        return cls(none.astype(np.int64), none, none, idf or {})

    def top(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` best ``(passage id, score)``; ties go to the smaller id."""
        return top_k(self.scores, self.ids, k)

    def lookup(self, passage_ids: Sequence[int]) -> tuple[list[float], list[float]]:
        """Score and coverage of each of ``passage_ids`` (0 for a passage sharing no term)."""
        wanted = np.asarray(passage_ids, dtype=np.int64)
        if not len(self.ids):
            return [0.0] * len(wanted), [0.0] * len(wanted)
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        hit = self.ids[at] == wanted
        return np.where(hit, self.scores[at], 0.0).tolist(), np.where(hit, self.coverage[at], 0.0).tolist()
