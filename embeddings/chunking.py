"""Split an article into passages: sentences packed within a paragraph up to a token budget.

A passage never crosses a paragraph, so every citation names one paragraph. Consecutive
passages of one paragraph share ``overlap`` sentences. A sentence longer than the budget is cut
at word-piece boundaries (never silently truncated by the model). A code block is one unit, not
split into sentences: it is cut only where it exceeds the budget, between lines where it can be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .sentences import split_sentences
from .types import CODE, Document, Passage

TokenCounter = Callable[[Sequence[str]], list[int]]
TokenOffsets = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """How passages are sized: at most ``max_tokens`` word pieces, ``overlap`` shared sentences."""

    max_tokens: int
    overlap: int = 1

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if self.overlap < 0:
            raise ValueError("overlap must be >= 0")


def sentence_spans(doc: Document) -> list[tuple[int, int, int]]:
    """Every sentence of ``doc`` as ``(paragraph_number, start, end)``, in order."""
    out: list[tuple[int, int, int]] = []
    for number, (start, end) in enumerate(doc.paragraphs, start=1):
        if doc.layout.kind(number) == CODE:
            out.append((number, start, end))  # code has lines, not sentences
        else:
            out.extend((number, a, b) for a, b in split_sentences(doc.text, start, end))
    return out


def _cut_long(text: str, start: int, end: int, budget: int, offsets: TokenOffsets) -> list[tuple[int, int]]:
    """Cut one over-long sentence (or code block) into spans of at most ``budget`` word pieces.

    The pieces are of about equal size, so the last is never a scrap (a lone closing brace).
    Cuts fall between lines where one is near, else between words, so no word is split across
    two passages.
    """
    pieces = [(start + a, start + b) for a, b in offsets(text[start:end])]
    n = len(pieces)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < n:
        # As many spans as the rest needs, each about as long as the others (recounted after
        # every cut, as backing off to a boundary leaves more for the rest).
        rest = n - i
        target = -(-rest // -(-rest // budget))
        j = n if rest <= budget else i + target
        if j < n:
            # Back off to a line break past half the target, else to a word boundary (a piece
            # followed by whitespace ends a word).
            k = j
            while k > i + target // 2 and "\n" not in text[pieces[k - 1][1] : pieces[k][0]]:
                k -= 1
            if k <= i + target // 2:
                k = j
                while k > i + 1 and pieces[k][0] == pieces[k - 1][1]:
                    k -= 1
            if k > i + 1:
                j = k
        a = pieces[i][0]
        b = pieces[j - 1][1]
        spans.append((a, b))
        i = j
    return spans or [(start, end)]


def chunk_document(
    doc: Document,
    spec: ChunkSpec,
    count_tokens: TokenCounter,
    token_offsets: TokenOffsets,
    *,
    article_id: str = "",
    sentences: list[tuple[int, int, int]] | None = None,
) -> list[Passage]:
    """Split ``doc`` into passages that each fit ``spec.max_tokens`` word pieces.

    ``sentences`` are the document's :func:`sentence_spans`, when the caller already has them.
    """
    if sentences is None:
        sentences = sentence_spans(doc)
    if not sentences:
        return []
    counts = count_tokens([doc.text[a:b] for _, a, b in sentences])
    # Over-long sentences become several "sentences" of at most the budget each.
    units: list[tuple[int, int, int, int]] = []  # paragraph, start, end, tokens
    for (para, a, b), n in zip(sentences, counts, strict=True):
        if n <= spec.max_tokens:
            units.append((para, a, b, n))
            continue
        cut = _cut_long(doc.text, a, b, spec.max_tokens, token_offsets)
        for (ca, cb), cn in zip(cut, count_tokens([doc.text[x:y] for x, y in cut]), strict=True):
            units.append((para, ca, cb, cn))

    def end_of(i: int) -> int:
        """One past the last unit of the passage that starts at unit ``i``."""
        para, total, j = units[i][0], units[i][3], i + 1
        # Joined sentences can tokenize to a little more than the sum (a space after a
        # quote), so keep one token of slack per sentence.
        while j < len(units) and units[j][0] == para and total + units[j][3] + (j - i) <= spec.max_tokens:
            total += units[j][3]
            j += 1
        return j

    layout = doc.layout
    passages: list[Passage] = []
    i = 0
    while i < len(units):
        para = units[i][0]
        j = end_of(i)
        start, end = units[i][1], units[j - 1][2]
        passages.append(
            Passage(
                article_id=article_id,
                ordinal=len(passages),
                paragraph=para,
                start=start,
                end=end,
                text=doc.text[start:end],
                section=layout.section(para),
                kind=layout.kind(para),
                page=layout.page(para),
                page_paragraph=layout.page_paragraph(para),
            )
        )
        if j >= len(units) or units[j][0] != para:
            i = j
        else:
            # Overlap: start the next passage ``overlap`` sentences back, but always move on,
            # and only when that passage reaches further: one that ends where this one ends
            # would be a piece of this one.
            i = max(i + 1, j - spec.overlap)
            if end_of(i) <= j:
                i = j
    return _enforce_budget(passages, spec, count_tokens, token_offsets, doc)


def _enforce_budget(
    passages: list[Passage],
    spec: ChunkSpec,
    count_tokens: TokenCounter,
    token_offsets: TokenOffsets,
    doc: Document,
) -> list[Passage]:
    """Check each passage with the real tokenizer; cut any that still exceed the budget."""
    counts = count_tokens([p.text for p in passages])
    if all(n <= spec.max_tokens for n in counts):
        return passages
    out: list[Passage] = []
    for p, n in zip(passages, counts, strict=True):
        spans = (
            [(p.start, p.end)]
            if n <= spec.max_tokens
            else _cut_long(doc.text, p.start, p.end, spec.max_tokens, token_offsets)
        )
        for a, b in spans:
            out.append(dataclasses.replace(p, ordinal=len(out), start=a, end=b, text=doc.text[a:b]))
    return out
