"""The values the core hands out: frozen dataclasses, no behaviour beyond small helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

CODE = "code"
"""The kind of a paragraph that is a code block: kept whole, shown as code, never highlighted."""

SECTION_SEPARATOR = " › "
"""Joins the headings of a section path ("Usage › Install")."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The structure of an article's paragraphs: what kind each is and the section it is in.

    ``kinds`` and ``sections`` are empty (a plain article: prose, no headings) or hold one entry
    per paragraph. A kind is ``""`` for prose or :data:`CODE`; a section is the path of headings
    above the paragraph joined by :data:`SECTION_SEPARATOR`, ``""`` before the first heading.
    Headings themselves are not paragraphs: a heading is never quoted as an answer on its own.
    """

    kinds: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    pages: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return any(self.kinds) or any(self.sections) or any(self.pages)

    def kind(self, number: int) -> str:
        """The kind of paragraph ``number`` (1-based): ``""`` for prose."""
        return self.kinds[number - 1] if 0 < number <= len(self.kinds) else ""

    def section(self, number: int) -> str:
        """The section path of paragraph ``number`` (1-based), ``""`` when it has none."""
        return self.sections[number - 1] if 0 < number <= len(self.sections) else ""

    def page(self, number: int) -> int:
        """The page paragraph ``number`` (1-based) starts on, 0 when the article has no pages."""
        return self.pages[number - 1] if 0 < number <= len(self.pages) else 0

    def page_paragraph(self, number: int) -> int:
        """Paragraph ``number``'s place on its page (1-based), 0 when the article has no pages."""
        page = self.page(number)
        if not page:
            return 0
        first = number
        while first > 1 and self.pages[first - 2] == page:
            first -= 1
        return number - first + 1

    def to_json(self) -> str | None:
        """The stored form, or None for a plain article (nothing to store)."""
        if not self:
            return None
        data: dict[str, list[str] | list[int]] = {"kinds": list(self.kinds), "sections": list(self.sections)}
        if self.pages:
            data["pages"] = list(self.pages)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, value: str | None, paragraph_count: int) -> Layout:
        """Read :meth:`to_json`'s form back; raise ``ValueError`` when it does not fit the article."""
        if value is None:
            return cls()
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("a layout is an object")
        kinds, sections, pages = data.get("kinds", []), data.get("sections", []), data.get("pages", [])
        for values, kind in ((kinds, str), (sections, str), (pages, int)):
            if not isinstance(values, list) or not all(type(v) is kind for v in values):
                raise ValueError("a layout holds lists of strings and page numbers")
            if values and len(values) != paragraph_count:
                raise ValueError("a layout has one entry per paragraph")
        return cls(tuple(kinds), tuple(sections), tuple(pages))


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
    layout: Layout = Layout()


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
    layout: Layout = Layout()

    def paragraph_text(self, number: int) -> str:
        """Return paragraph ``number`` (1-based) of the cleaned text."""
        start, end = self.paragraphs[number - 1]
        return self.text[start:end]


@dataclass(frozen=True, slots=True)
class Passage:
    """A piece of one paragraph, sized to the model's window.

    ``start``/``end`` are offsets into the article's cleaned text; ``paragraph`` is 1-based;
    ``ordinal`` is the passage's position within its article. ``section``, ``kind``, ``page``
    and ``page_paragraph`` (its paragraph's place on that page) are its paragraph's, from the
    article's :class:`Layout` (0 for an article without pages).
    """

    article_id: str
    ordinal: int
    paragraph: int
    start: int
    end: int
    text: str
    id: int = -1
    section: str = ""
    kind: str = ""
    page: int = 0
    page_paragraph: int = 0

    @property
    def is_code(self) -> bool:
        """Whether this passage is (part of) a code block."""
        return self.kind == CODE


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a quoted passage comes from, ready to show to a person."""

    article_id: str
    title: str
    byline: str | None
    date: str | None
    paragraph: int
    url: str | None
    section: str = ""
    page: int = 0
    page_paragraph: int = 0

    @property
    def heading(self) -> str:
        """The innermost heading of the passage's section, ``""`` when it has none."""
        # "8. Termination." reads "§ 8. Termination, ¶ 64" in a citation.
        return self.section.rsplit(SECTION_SEPARATOR, 1)[-1].rstrip(".")

    @property
    def place(self) -> str:
        """Where in the article: "§ Ownership Rules, ¶ 3"; "p. 4, ¶ 2" (the second paragraph
        of page 4) in a paged document; "¶ 3" in an article without either."""
        where = f"p. {self.page}, ¶ {self.page_paragraph}" if self.page else f"¶ {self.paragraph}"
        return (f"§ {self.heading}, " if self.section else "") + where

    def format(self) -> str:
        """One line: title, byline, date, section and paragraph, and link when known."""
        parts = [f"“{self.title}”"]
        if self.byline:
            parts.append(f"by {self.byline}")
        if self.date:
            parts.append(self.date)
        parts.append(self.place)
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
        p = self.passage
        return Citation(
            a.id, a.title, a.byline, a.date, p.paragraph, a.url, p.section, p.page, p.page_paragraph
        )


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
    pinned: bool = False  # the server's moderators chose this passage for questions like this

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
    text_bytes: int = 0  # UTF-8 size of the cleaned text written (added or replaced), for quotas


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The outcome of one ingest call, source by source."""

    results: tuple[IngestResult, ...]
    dropped_pins: tuple[str, ...] = ()  # questions whose pinned passage changed or went away

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
    """One sentence of an extractive summary, with the paragraph it comes from (and, in a
    structured article, that paragraph's section, page and place on the page)."""

    text: str
    paragraph: int
    start: int
    end: int
    section: str = ""
    page: int = 0
    page_paragraph: int = 0

    @property
    def place(self) -> str:
        """Where the sentence is, as a citation says it: "p. 3, ¶ 2", "§ Usage, ¶ 4", "¶ 4"."""
        return Citation(
            "", "", None, None, self.paragraph, None, self.section, self.page, self.page_paragraph
        ).place


@dataclass(frozen=True, slots=True)
class Summary:
    """An extractive summary: article sentences in article order, each traceable."""

    article: ArticleInfo
    sentences: tuple[SummarySentence, ...]
    whole: bool = False
    notes: tuple[str, ...] = ()
