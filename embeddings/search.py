"""Retrieval: dense and BM25 candidates, fused into one ranking."""

from __future__ import annotations

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

    ``candidates`` passages are taken from each retriever and fused by weighted reciprocal
    rank (``rrf_k``); ``abstain_threshold`` is the confidence below which the answer is
    "not in the library".
    """

    candidates: int = 50
    rrf_k: float = 60.0
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    abstain_threshold: float = 0.35


@dataclass(frozen=True, slots=True)
class Candidate:
    """A passage id with the evidence gathered for it."""

    passage_id: int
    score: float
    dense: float
    lexical: float
    dense_rank: int | None
    lexical_rank: int | None


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
    ) -> list[Candidate]:
        """Fused candidates, best first."""
        n = self.config.candidates
        dense = self.store.dense_search(library, query_vector, n, article_ids)
        lexical = self.bm25.search(self.store, library, self.analyzer.terms(question), n, article_ids)
        return fuse(dense, lexical, self.config)


def fuse(
    dense: Sequence[tuple[int, float]],
    lexical: Sequence[tuple[int, float]],
    config: SearchConfig,
) -> list[Candidate]:
    """Weighted reciprocal-rank fusion; ties go to the smaller passage id (earlier text)."""
    table: dict[int, dict[str, float]] = {}
    for rank, (pid, score) in enumerate(dense):
        row = table.setdefault(pid, {})
        row["dense"], row["dense_rank"] = score, rank
    for rank, (pid, score) in enumerate(lexical):
        row = table.setdefault(pid, {})
        row["lexical"], row["lexical_rank"] = score, rank
    out = []
    for pid, row in table.items():
        fused = 0.0
        if "dense_rank" in row:
            fused += config.dense_weight / (config.rrf_k + row["dense_rank"] + 1)
        if "lexical_rank" in row:
            fused += config.lexical_weight / (config.rrf_k + row["lexical_rank"] + 1)
        out.append(
            Candidate(
                pid,
                fused,
                row.get("dense", 0.0),
                row.get("lexical", 0.0),
                int(row["dense_rank"]) if "dense_rank" in row else None,
                int(row["lexical_rank"]) if "lexical_rank" in row else None,
            )
        )
    out.sort(key=lambda c: (-c.score, c.passage_id))
    return out
