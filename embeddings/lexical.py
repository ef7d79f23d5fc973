"""Lexical retrieval: an analyzer (tokens, stop words, Snowball stems) and BM25 over postings.

The postings live in the store and are written with each article, so the lexical index is
persisted and updated incrementally with the library; scoring happens here, identically for
every store.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .store import Store

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
    """Okapi BM25 with Lucene's idf; ``k1`` and ``b`` are the usual parameters."""

    k1: float = 1.2
    b: float = 0.75

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
        unique = list(dict.fromkeys(terms))
        if not unique:
            return LexicalEvidence({}, {}, {})
        rows = store.lexical(library, unique, article_ids)
        n, df = rows.passage_count, rows.df
        idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in unique}
        scores: dict[int, float] = {}
        found: dict[int, float] = {}
        if n:
            k1, b = self.k1, self.b
            norm = rows.mean_length or 1.0
            for term, pid, tf, length in rows.postings:
                w = idf[term]
                scores[pid] = scores.get(pid, 0.0) + w * tf * (k1 + 1) / (
                    tf + k1 * (1 - b + b * length / norm)
                )
                found[pid] = found.get(pid, 0.0) + w
        total = sum(idf.values())
        return LexicalEvidence(scores, {pid: v / total for pid, v in found.items()}, idf)


@dataclass(frozen=True, slots=True)
class LexicalEvidence:
    """BM25 score and idf-weighted term coverage per passage, and the idf of each query term."""

    scores: dict[int, float]
    coverage: dict[int, float]
    idf: dict[str, float]


def top_scores(scores: dict[int, float], k: int) -> list[tuple[int, float]]:
    """The ``k`` highest ``(id, score)`` pairs; ties go to the smaller id."""
    if k <= 0:
        return []
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
