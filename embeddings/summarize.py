"""Extractive summaries: the article's own sentences, in article order, each with its paragraph.

Method (unsupervised, no training data, works on the sentence embeddings citebot computes):

1. **Directed centrality** (PacSum, Zheng & Lapata 2019). Sentences are nodes; the edge weight
   between two sentences is their cosine similarity above a per-article threshold. A sentence
   scores by how strongly it is echoed by the sentences *after* it, minus a penalty for how
   much it repeats the ones *before* it: the sentence that introduces what the rest of the text
   develops wins, which is what a writer's summary sentence does in news and in essays alike.
2. **A soft position prior** that decays slowly with the sentence's position and counts only
   as much as the sentence is echoed elsewhere in the text: an opening that the body keeps
   returning to is preferred, a weak opening loses to a central sentence later on.
3. **MMR** (maximal marginal relevance) picks the sentences one at a time, discounting those
   that say again what an already picked sentence says.

Sentences that cannot stand alone as a summary line (a few words, a quotation that may be cut
mid-quote) are kept as graph nodes but picked only when too few others are left. The core is
pure numpy plus the :class:`Encoder`; it reads no settings and keeps no state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .articles import clean_article, content_hash, parse_html
from .encoder import Encoder
from .errors import InputError
from .sentences import split_sentences
from .types import CODE, ArticleInfo, Layout, Summary, SummarySentence

# Part of every cached summary's key: a change to what a summary is made from makes new ones.
# 2: a late-chunked library's summaries no longer read its stored sentence vectors.
SUMMARIZER_VERSION = "2"
"""Part of every cache key: bump it when the method or its defaults change."""

_WORD = re.compile(r"\w+")
_OPENS_QUOTE = re.compile(r"""^[\"'“‘«„]""")
_ENDS_SENTENCE = re.compile(r"""[.!?…]["'”’»)\]]*$""")
# Markup that means "this is a web page": it goes through the HTML extractor, not the text cleaner.
_HTML = re.compile(r"<(?:!doctype\s+html|html|body|article|main|p|div)\b[^>]*>", re.I)


@dataclass(frozen=True, slots=True)
class SummaryConfig:
    """The few knobs of the summarizer; the defaults were tuned on the CNN/DailyMail dev set.

    ``threshold`` places the edge cut between the article's least and most similar pair
    (0 keeps every edge, 1 none). ``backward`` weighs edges to earlier sentences (negative:
    repeating what came before counts against a sentence); edges to later sentences weigh 1.
    ``position_weight`` and ``position_scale`` shape the prior ``1 / (1 + i / scale)`` that,
    times the sentence's support, is added to the centrality scaled to [0, 1]. ``diversity`` is the MMR trade-off (0 = pure score). Sentences
    under ``min_words`` words, or opening with a quotation mark, are picked only when there are
    too few others.
    """

    threshold: float = 0.3
    backward: float = -0.5
    position_weight: float = 2.0
    position_scale: float = 5.0
    diversity: float = 0.3
    min_words: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if self.position_scale <= 0:
            raise ValueError("position_scale must be positive")
        if not 0.0 <= self.diversity < 1.0:
            raise ValueError("diversity must be in [0, 1)")


DEFAULT_CONFIG = SummaryConfig()


def summary_sentences(
    text: str, paragraphs: Sequence[tuple[int, int]], layout: Layout | None = None
) -> list[tuple[int, int, int]]:
    """The sentences a summary of ``text`` is made from, as ``(start, end, paragraph)`` spans.

    Paragraphs are 1-based. Only pieces that end like a sentence count: headings, photo credits,
    list labels and "Read more" lines that survived cleaning end without ``.!?``. A text with no
    sentence punctuation at all is taken as it is. Code blocks (``layout``) are never summary
    sentences.
    """
    layout = layout or Layout()
    spans = [
        (a, b, number)
        for number, (start, end) in enumerate(paragraphs, start=1)
        if layout.kind(number) != CODE
        for a, b in split_sentences(text, start, end)
    ]
    return [s for s in spans if _ENDS_SENTENCE.search(text, s[0], s[1])] or spans


def word_count(sentence: str) -> int:
    """Words in a sentence (runs of letters and digits)."""
    return len(_WORD.findall(sentence))


def can_stand_alone(sentence: str, min_words: int) -> bool:
    """True for a sentence that can be a summary line on its own.

    Not a fragment of a few words, and not one that opens with a quotation mark: a quote is
    someone else's words, often cut mid-quotation by the splitter ("So right now, we're looking
    at these reports.), where a summary line should be the writer's own statement.
    """
    if word_count(sentence) < min_words or _OPENS_QUOTE.match(sentence):
        return False
    # A double quote left open or closed without an opening: a piece of a longer quotation.
    return sentence.count('"') % 2 == 0 and sentence.count("“") == sentence.count("”")


def directed_centrality(sims: NDArray[np.float32], threshold: float, backward: float) -> NDArray[np.float64]:
    """PacSum centrality: edges to later sentences count 1, to earlier ones ``backward``.

    ``sims`` is the square cosine matrix. Edges below ``min + threshold * (max - min)`` of the
    off-diagonal similarities are dropped, as in the paper, so a long article's many weak links
    do not drown its few strong ones.
    """
    n = sims.shape[0]
    if n < 2:
        return np.zeros(n)
    off = sims[~np.eye(n, dtype=bool)]
    lo, hi = float(off.min()), float(off.max())
    edges = np.clip(sims.astype(np.float64) - (lo + threshold * (hi - lo)), 0.0, None)
    np.fill_diagonal(edges, 0.0)
    later = np.triu(edges, 1).sum(axis=1)
    earlier = np.tril(edges, -1).sum(axis=1)
    scores: NDArray[np.float64] = later + backward * earlier
    return scores


def position_prior(n: int, scale: float) -> NDArray[np.float64]:
    """``1 / (1 + i / scale)`` for sentence ``i``: a slow, heavy-tailed decay, never zero."""
    return 1.0 / (1.0 + np.arange(n) / scale)


def _unit(x: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Min-max scale ``x`` to [0, 1] over the ``mask`` entries (all 1 when they are equal)."""
    vals = x[mask]
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-12:
        return np.ones_like(x)
    return (x - lo) / (hi - lo)


def sentence_scores(
    vectors: NDArray[np.float32], eligible: NDArray[np.bool_], config: SummaryConfig = DEFAULT_CONFIG
) -> NDArray[np.float64]:
    """Each sentence's salience: normalised centrality plus a support-weighted position prior.

    The position bonus is scaled by the sentence's support, its highest cosine to any other
    sentence, so an opening the text never comes back to (an anecdote, a scene-setter, a stray
    caption) cannot win on position alone.
    """
    n = vectors.shape[0]
    sims = vectors @ vectors.T
    central = _unit(directed_centrality(sims, config.threshold, config.backward), eligible)
    others = sims.astype(np.float64)
    np.fill_diagonal(others, -1.0)
    support = np.clip(others.max(axis=1), 0.0, 1.0)
    scores: NDArray[np.float64] = central + config.position_weight * support * position_prior(
        n, config.position_scale
    )
    return scores


def select(
    scores: NDArray[np.float64],
    vectors: NDArray[np.float32],
    eligible: NDArray[np.bool_],
    n: int,
    diversity: float,
) -> list[int]:
    """Pick ``n`` eligible sentences by MMR; return their indexes in article order."""
    candidates = [int(i) for i in np.flatnonzero(eligible)]
    if not candidates:
        return []
    rel = _unit(scores, eligible)
    picked: list[int] = []
    redundancy = np.zeros(len(scores))
    while candidates and len(picked) < n:
        gains = [(1.0 - diversity) * rel[i] - diversity * redundancy[i] for i in candidates]
        best = candidates.pop(int(np.argmax(gains)))
        picked.append(best)
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return sorted(picked)


def rank_sentences(
    sentences: Sequence[str],
    vectors: NDArray[np.float32],
    n: int = 3,
    config: SummaryConfig = DEFAULT_CONFIG,
) -> list[int]:
    """The indexes of the ``n`` summary sentences among ``sentences``, in article order.

    ``vectors`` are the sentences' L2-normalised embeddings, one row each. When fewer than ``n``
    sentences are long enough to stand alone, the short ones become eligible too.
    """
    if n <= 0 or not sentences:
        return []
    if len(sentences) <= n:
        return list(range(len(sentences)))
    eligible = np.array([can_stand_alone(s, config.min_words) for s in sentences])
    if eligible.sum() < n:
        # Too few full statements (an interview, a list of quotes): any sentence may be picked.
        eligible = np.array([word_count(s) > 0 for s in sentences])
    if eligible.sum() <= n:
        return [int(i) for i in np.flatnonzero(eligible)] or list(range(n))
    scores = sentence_scores(vectors, eligible, config)
    return select(scores, vectors, eligible, n, config.diversity)


def summarize_document(
    text: str,
    paragraphs: Sequence[tuple[int, int]],
    encoder: Encoder,
    n: int = 3,
    config: SummaryConfig = DEFAULT_CONFIG,
    known: Mapping[tuple[int, int], NDArray[np.float32]] | None = None,
    layout: Layout | None = None,
) -> list[tuple[int, int, int]]:
    """An ``n``-sentence extractive summary of a cleaned text: ``(start, end, paragraph)`` spans.

    ``text``/``paragraphs`` are a cleaned article and its paragraph spans (as in
    :class:`~embeddings.types.Document`). Spans are in article order; ``text[start:end]`` is the
    sentence verbatim and lies inside paragraph ``paragraph`` (1-based). A text of ``n`` or fewer
    sentences (see :func:`summary_sentences`) comes back whole. ``known`` maps ``(start, end)``
    spans to vectors already computed (a library stores its sentences'); only the rest are
    encoded.
    """
    spans = summary_sentences(text, paragraphs, layout)
    if len(spans) <= n:
        return spans
    sentences = [text[a:b] for a, b, _ in spans]
    known = known or {}
    missing = [i for i, (a, b, _) in enumerate(spans) if (a, b) not in known]
    fresh = encoder.encode([sentences[i] for i in missing], kind="passage") if missing else None
    vectors = np.zeros((len(spans), encoder.dim), dtype=np.float32)
    for i, (a, b, _) in enumerate(spans):
        if (a, b) in known:
            vectors[i] = known[(a, b)]
    if fresh is not None:
        vectors[missing] = fresh
    return [spans[i] for i in rank_sentences(sentences, vectors, n, config)]


# ---------------------------------------------------------------------- results


def make_summary(
    info: ArticleInfo,
    text: str,
    paragraphs: Sequence[tuple[int, int]],
    spans: Sequence[tuple[int, int, int]],
    n: int,
    layout: Layout | None = None,
) -> Summary:
    """Wrap picked ``(start, end, paragraph)`` spans of an article into a :class:`Summary`."""
    total = len(summary_sentences(text, paragraphs, layout))
    whole = total <= n
    notes: tuple[str, ...] = ()
    if whole:
        what = "one sentence" if total == 1 else f"{total} sentences"
        notes = (f"The article is only {what} long, so this is all of it.",)
    layout = layout or Layout()
    sentences = tuple(
        SummarySentence(text[a:b], p, a, b, layout.section(p), layout.page(p), layout.page_paragraph(p))
        for a, b, p in spans
    )
    return Summary(article=info, sentences=sentences, whole=whole, notes=notes)


def spans_to_json(spans: Sequence[tuple[int, int, int]]) -> str:
    """Serialise summary spans for the store's cache."""
    return json.dumps([list(s) for s in spans])


def spans_from_json(value: str, paragraphs: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]] | None:
    """Read cached spans back; None when the value does not fit the article (then recompute)."""
    try:
        raw = json.loads(value)
        spans = [(int(a), int(b), int(p)) for a, b, p in raw]
    except (ValueError, TypeError):
        return None
    for a, b, p in spans:
        if not 1 <= p <= len(paragraphs):
            return None
        lo, hi = paragraphs[p - 1]
        if not lo <= a < b <= hi:
            return None
    return spans


def summarize_text(
    raw: str,
    encoder: Encoder,
    n: int = 3,
    *,
    source: str = "stdin",
    config: SummaryConfig = DEFAULT_CONFIG,
) -> Summary:
    """Summarize text that is not in a library (``citebot summary -``).

    The text is cleaned first, as an ingested article would be (HTML through the page
    extractor): header, byline, share and caption lines are dropped, so none can be picked.
    """
    if n < 1:
        raise InputError("Ask for at least one sentence.")
    if not raw.strip():
        raise InputError("There is no text to summarize.")
    if _HTML.search(raw[:10_000]):
        doc = parse_html(raw, key=source, source=source)
    else:
        doc = clean_article(raw, key=source, source=source)
    spans = summarize_document(doc.text, doc.paragraphs, encoder, n, config, layout=doc.layout)
    info = ArticleInfo(
        id="-",
        title=doc.title,
        byline=doc.byline,
        date=doc.date,
        url=doc.url,
        source=source,
        key=source,
        content_hash=content_hash(doc),
        passage_count=0,
        paragraph_count=len(doc.paragraphs),
        added_at="",
    )
    return make_summary(info, doc.text, doc.paragraphs, spans, n, doc.layout)
