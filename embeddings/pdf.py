"""PDF text through PDFium (pypdfium2), made into paragraphs that know their page.

PDFium was chosen over pypdf after reading the same documents with both (a LaTeX manual and a
specification on this machine, and the generated papers and slides of the tests): the text
came out alike, line for line, and PDFium read a 36-page manual in 0.06 s against pypdf's
0.96 s. A PDF's text layer has lines, not paragraphs, so paragraphs are rebuilt from them:

* **Running headers and footers** (a line at the top or bottom of most pages, page numbers
  aside) and **page numbers** alone on a line are dropped.
* **Paragraphs** end at a line that is short and ends a sentence, at a short line (a heading,
  a label), or before a list item; a paragraph that runs on to the next page is joined.
* **Hyphenation** at a line end ("informa-" + "tion") is undone, unless the document writes
  the hyphenated form elsewhere and the joined one nowhere (a compound: "well-known"); other
  line breaks are spaces.
* **Headings**, title, byline and date are found by the same rules as for plain text; the PDF's
  own metadata (Title, Author, CreationDate) wins when it is there.

A PDF without a text layer (a scan) cannot be read without OCR, which citebot does not ship;
an encrypted one cannot be opened; both say so.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .articles import Block, Metadata, _title_from_name, clean_blocks, normalize_text, parse_date
from .errors import InputError
from .types import Document

# A line that is only a page number: "12", "- 12 -", "Page 3", "3 of 10", "iv".
_PAGE_NUMBER = re.compile(
    r"^[-–—\s]*(?:page\s+)?(?:\d{1,4}|[ivxlc]{1,7})(?:\s*(?:of|/)\s*\d{1,4})?[-–—\s]*$", re.I
)
_LIST_ITEM = re.compile(r"^(?:[•◦▪‣∙·*–-]\s|\(?\d{1,2}[.)]\s|\(?[a-z][.)]\s)")
_SENTENCE_END = re.compile(r"""[.!?…:]["'”’)\]]*$""")
_EDGE = 2  # lines at the top and at the bottom of a page where running headers and footers sit


@dataclass(frozen=True, slots=True)
class _Line:
    """A line of a page's text layer and where it sits (PDF points, y grows upwards)."""

    text: str
    left: float
    right: float
    y: float  # the middle of the line's font box


def _page_lines(textpage: Any) -> list[_Line]:
    """The text lines of a page with their positions (each character of PDFium's text has a
    box; a line's are read at its first and last character)."""
    raw = textpage.get_text_range()
    lines: list[_Line] = []
    pos = 0
    for piece in raw.split("\r\n"):
        stripped = " ".join(piece.split())  # one line: any other break inside it is a space
        if stripped:
            first = pos + len(piece) - len(piece.lstrip())
            last = pos + len(piece.rstrip()) - 1
            left, bottom, _, top = textpage.get_charbox(first, loose=True)
            _, _, right, _ = textpage.get_charbox(last, loose=True)
            lines.append(_Line(stripped, float(left), float(right), (float(bottom) + float(top)) / 2))
        pos += len(piece) + 2
    return lines


def _signature(line: str) -> str:
    """A line with its numbers blanked: "Chapter 3 · page 12" repeats as "chapter # · page #"."""
    return re.sub(r"\d+", "#", line.casefold())


def _strip_furniture(pages: list[list[_Line]]) -> tuple[list[list[_Line]], str | None]:
    """Drop running headers/footers (repeated at the edge of most pages) and page numbers.

    Also returns the first page's first line when it was dropped as a running header: a
    document whose title heads every page has it there, and it is the title.
    """
    counts: Counter[str] = Counter()
    for lines in pages:
        counts.update({_signature(x.text) for x in lines[:_EDGE] + lines[-_EDGE:]})
    repeated = {sig for sig, n in counts.items() if len(pages) >= 3 and n >= max(3, 0.5 * len(pages))}
    out = []
    for lines in pages:
        edge = set(range(min(_EDGE, len(lines)))) | set(range(max(0, len(lines) - _EDGE), len(lines)))
        out.append(
            [
                line
                for i, line in enumerate(lines)
                if i not in edge or not (_signature(line.text) in repeated or _PAGE_NUMBER.match(line.text))
            ]
        )
    first = pages[0][0].text if pages and pages[0] and (not out[0] or out[0][0] is not pages[0][0]) else None
    return out, first if first is not None and not _PAGE_NUMBER.match(first) else None


def _paragraphs(lines: Sequence[_Line], width: float) -> list[tuple[str, bool]]:
    """A page's lines as paragraphs, each with whether it was one line (it may be a heading).

    A paragraph ends where the space to the next line is clearly wider than the page's usual
    line spacing, at a line that is short and ends a sentence, at a short line (a heading or a
    label), or before a list item. A jump up the page (the next column) continues the paragraph
    unless the line before ended it.
    """
    steps = sorted(a.y - b.y for a, b in itertools.pairwise(lines) if a.y > b.y)
    spacing = steps[len(steps) // 4] if steps else 0.0  # the usual step: lower quartile
    right = max((x.right for x in lines), default=0.0)
    left = min((x.left for x in lines), default=0.0)
    out: list[tuple[str, bool]] = []
    current: list[str] = []
    for i, line in enumerate(lines):
        current.append(line.text)
        following = lines[i + 1] if i + 1 < len(lines) else None
        sentence_end = bool(_SENTENCE_END.search(line.text))
        short = line.right < right - 0.15 * (right - left)
        ends = (
            following is None
            or (spacing > 0 and line.y - following.y > 1.4 * spacing)
            or (short and sentence_end)
            or len(line.text) < 0.6 * width
            or bool(_LIST_ITEM.match(following.text))
        )
        if ends:
            out.append((" ".join(current), len(current) == 1))
            current = []
    return out


# PDFium joins a word broken at a line end with U+FFFE where the hyphen was ("infor\ufffemation").
_BROKEN_WORD = re.compile(r"(\w+)\ufffe(\w+)")
_WORDS = re.compile(r"\w+(?:-\w+)*")


def _mend_broken_words(pages: list[str]) -> list[str]:
    """Words hyphenated at a line end made whole: "infor-mation" is "information", but
    "well-known" stays hyphenated when the document writes it so elsewhere (and the joined
    form nowhere), the one way to tell a compound from a hyphenation without a dictionary."""
    vocabulary = {w.casefold() for text in pages for w in _WORDS.findall(text.replace("\ufffe", " "))}

    def mend(m: re.Match[str]) -> str:
        joined, hyphened = m.group(1) + m.group(2), f"{m.group(1)}-{m.group(2)}"
        keep = hyphened.casefold() in vocabulary and joined.casefold() not in vocabulary
        return hyphened if keep else joined

    return [_BROKEN_WORD.sub(mend, text).replace("\ufffe", "-") for text in pages]


def _pdf_date(value: str) -> str | None:
    """An ISO date from a PDF date ("D:20220429171908Z"), or None."""
    m = re.match(r"^(?:D:)?(\d{4})(\d{2})(\d{2})", value.strip())
    return parse_date(f"{m.group(1)}-{m.group(2)}-{m.group(3)}") if m else None


def parse_pdf(data: bytes, *, key: str, source: str | None = None) -> Document:
    """A PDF's text as a :class:`Document` whose paragraphs know their page."""
    import pypdfium2 as pdfium  # lazy: only PDFs need PDFium

    where = source or key
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise InputError(
                f"{where}: the PDF is encrypted (it needs a password to open). Save a copy without "
                "the password and ingest that."
            ) from None
        raise InputError(f"{where}: not a PDF that can be read ({exc}).") from None
    try:
        pages = []
        for page in pdf:
            textpage = page.get_textpage()
            pages.append(_page_lines(textpage))
            textpage.close()
            page.close()
        info = pdf.get_metadata_dict()
    except (pdfium.PdfiumError, ValueError, IndexError) as exc:  # a damaged page or text layer
        raise InputError(f"{where}: a page of this PDF cannot be read ({exc}); it may be damaged.") from None
    finally:
        pdf.close()
    # Broken words are mended and the text normalised line by line: a line keeps its place.
    texts = _mend_broken_words(["\n".join(x.text for x in page) for page in pages])
    lines = [
        [
            replace(x, text=t)
            for x, t in zip(
                page, (" ".join(normalize_text(y).split()) for y in text.split("\n")), strict=False
            )
            if t
        ]
        for page, text in zip(pages, texts, strict=True)
    ]
    if not any(lines):
        raise InputError(
            f"{where}: the PDF has no text layer (a scan or pictures of text). citebot cannot read "
            "text in images: run it through OCR first (for example `ocrmypdf in.pdf out.pdf`) and "
            "ingest the result."
        )
    lines, running_title = _strip_furniture(lines)
    lengths = sorted(len(x.text) for page in lines for x in page)
    width = float(lengths[int(0.9 * (len(lengths) - 1))]) if lengths else 80.0
    blocks: list[Block] = []
    for number, page in enumerate(lines, start=1):
        for i, (text, single) in enumerate(_paragraphs(page, width)):
            previous = blocks[-1] if blocks else None
            # A paragraph that runs on from the previous page: its first line goes on in lower
            # case after a line that did not end a sentence.
            if (
                i == 0
                and previous is not None
                and text[:1].islower()
                and not _SENTENCE_END.search(previous.text)
            ):
                blocks[-1] = replace(previous, text=f"{previous.text} {text}", standalone=False)
                continue
            blocks.append(Block(text, standalone=single, page=number))
    meta = Metadata(
        title=(info.get("Title") or "").strip() or running_title,
        byline=(info.get("Author") or "").strip() or None,
        date=_pdf_date(info.get("CreationDate") or ""),
    )
    return clean_blocks(blocks, key=key, source=source, meta=meta, fallback_title=_title_from_name(source))
