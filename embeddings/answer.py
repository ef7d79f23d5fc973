"""From ranked passages to an answer: the sentence to highlight and whether to answer at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .encoder import Encoder
from .lexical import Analyzer
from .sentences import split_sentences


@dataclass(frozen=True, slots=True)
class SentencePick:
    """The best sentence of a passage: its span in the passage text and its scores."""

    start: int
    end: int
    similarity: float
    overlap: float


def pick_sentence(
    encoder: Encoder,
    analyzer: Analyzer,
    question: str,
    query_vector: NDArray[np.float32],
    text: str,
) -> SentencePick:
    """Score each sentence of ``text`` against the question and return the best one.

    The score adds the sentence's cosine to the query and the share of the question's terms it
    contains; the second term breaks near-ties toward the sentence that names what was asked.
    """
    spans = split_sentences(text) or [(0, len(text))]
    if len(spans) == 1:
        a, b = spans[0]
        vec = encoder.encode([text[a:b]])[0]
        return SentencePick(a, b, float(vec @ query_vector), _overlap(analyzer, question, [text[a:b]])[0])
    sentences = [text[a:b] for a, b in spans]
    sims = encoder.encode(sentences) @ query_vector
    overlaps = _overlap(analyzer, question, sentences)
    scores = [s + 0.5 * o for s, o in zip(sims, overlaps, strict=True)]
    i = int(np.argmax(scores))
    return SentencePick(spans[i][0], spans[i][1], float(sims[i]), overlaps[i])


def _overlap(analyzer: Analyzer, question: str, sentences: Sequence[str]) -> list[float]:
    q = set(analyzer.terms(question))
    if not q:
        return [0.0] * len(sentences)
    return [len(q & set(analyzer.terms(s))) / len(q) for s in sentences]
