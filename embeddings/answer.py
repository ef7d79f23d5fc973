"""From ranked candidates to an :class:`Answer`: confidence, declining, highlight."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .search import Candidate, SearchConfig
from .types import Answer, Hit


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def confidence(candidate: Candidate, config: SearchConfig) -> float:
    """How sure we are that the library holds the answer, 0..1.

    Two logistic curves fitted on SQuAD-dev (``benchmarks/fit_fusion.py``) separate questions
    about articles in the library from questions about other articles: one on the final
    ranking score, which leans on shared words, and one on the dense cosines alone. Taking the
    larger keeps a paraphrased question (few shared words, close meaning) from being declined
    just because SQuAD's questions reuse the paragraph's words.
    """
    fused = _sigmoid((candidate.score - config.confidence_center) / config.confidence_scale)
    ws, wd, bias = config.dense_confidence
    f = candidate.features
    dense = _sigmoid(ws * f.get("sentence", 0.0) + wd * f.get("dense", 0.0) + bias)
    return max(fused, dense)


def build_answer(
    question: str,
    candidates: Sequence[Candidate],
    hits: Sequence[Hit],
    config: SearchConfig,
    notes: tuple[str, ...] = (),
) -> Answer:
    """The answer for ``question`` from candidates (best first) and their hits (same order)."""
    if not hits or not candidates or hits[0].passage.id != candidates[0].passage_id:
        return Answer(question, False, 0.0, tuple(hits), None, notes)
    best, top = candidates[0], hits[0]
    conf = confidence(best, config)
    answered = conf >= config.abstain_threshold
    highlight = None
    if answered and best.highlight is not None:
        a, b = best.highlight
        highlight = (a - top.passage.start, b - top.passage.start)
    return Answer(question, answered, conf, tuple(hits), highlight, notes)
