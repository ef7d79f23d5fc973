"""The values the core hands out: frozen dataclasses, no behaviour beyond small helpers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed article before it is split and embedded.

    ``text`` is the cleaned body: paragraphs joined by a blank line. ``paragraphs`` holds the
    ``(start, end)`` character span of each paragraph inside ``text``. ``key`` identifies the
    article across re-ingests (its URL, record id or file path), so a changed file replaces
    its old version instead of adding a second copy.
    """

    key: str
    title: str
    text: str
    paragraphs: tuple[tuple[int, int], ...]
    byline: str | None = None
    date: str | None = None
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ArticleInfo:
    """An article as stored in a library, without its text."""

    id: str
    title: str
    byline: str | None
    date: str | None
    url: str | None
    source: str | None
    key: str
    content_hash: str
    passage_count: int
    paragraph_count: int
    added_at: str


@dataclass(frozen=True, slots=True)
class Article:
    """A stored article with its cleaned text and paragraph spans."""

    info: ArticleInfo
    text: str
    paragraphs: tuple[tuple[int, int], ...]

    def paragraph_text(self, number: int) -> str:
        """Return paragraph ``number`` (1-based) of the cleaned text."""
        start, end = self.paragraphs[number - 1]
        return self.text[start:end]


@dataclass(frozen=True, slots=True)
class Passage:
    """A piece of one paragraph, sized to the model's window.

    ``start``/``end`` are offsets into the article's cleaned text; ``paragraph`` is 1-based;
    ``ordinal`` is the passage's position within its article.
    """

    article_id: str
    ordinal: int
    paragraph: int
    start: int
    end: int
    text: str
    id: int = -1


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a quoted passage comes from, ready to show to a person."""

    article_id: str
    title: str
    byline: str | None
    date: str | None
    paragraph: int
    url: str | None

    def format(self) -> str:
        """One line: title, byline, date, paragraph and link when known."""
        parts = [f"“{self.title}”"]
        if self.byline:
            parts.append(f"by {self.byline}")
        if self.date:
            parts.append(self.date)
        parts.append(f"¶ {self.paragraph}")
        line = ", ".join(parts)
        if self.url:
            line += f" <{self.url}>"
        return line


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved passage with the scores that ranked it."""

    passage: Passage
    article: ArticleInfo
    score: float
    rank: int
    scores: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def citation(self) -> Citation:
        """The citation for this passage."""
        a = self.article
        return Citation(a.id, a.title, a.byline, a.date, self.passage.paragraph, a.url)


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to a question.

    When ``answered`` is false the library holds nothing that answers; ``hits`` then lists the
    closest passages only so a front end can name their articles, never to quote them as the
    answer. ``highlight`` is the ``(start, end)`` span of the answering sentence inside the top
    passage's text.
    """

    question: str
    answered: bool
    confidence: float
    hits: tuple[Hit, ...]
    highlight: tuple[int, int] | None = None
    notes: tuple[str, ...] = ()

    @property
    def best(self) -> Hit | None:
        """The passage quoted as the answer, or None when the library has no answer."""
        return self.hits[0] if self.answered and self.hits else None

    @property
    def sentence(self) -> str | None:
        """The highlighted sentence of the answer passage."""
        best = self.best
        if best is None or self.highlight is None:
            return None
        start, end = self.highlight
        return best.passage.text[start:end]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one source during an ingest."""

    source: str
    status: str  # "added", "replaced", "unchanged", "skipped"
    article: ArticleInfo | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The outcome of one ingest call, source by source."""

    results: tuple[IngestResult, ...]

    def count(self, status: str) -> int:
        """How many sources ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def passages_added(self) -> int:
        """Passages written by this ingest."""
        return sum(
            r.article.passage_count
            for r in self.results
            if r.article is not None and r.status in ("added", "replaced")
        )


@dataclass(frozen=True, slots=True)
class SummarySentence:
    """One sentence of an extractive summary, with the paragraph it comes from."""

    text: str
    paragraph: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Summary:
    """An extractive summary: article sentences in article order, each traceable."""

    article: ArticleInfo
    sentences: tuple[SummarySentence, ...]
    whole: bool = False
    notes: tuple[str, ...] = ()
