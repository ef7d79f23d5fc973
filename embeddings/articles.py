"""Load articles from files and clean real-world text into a :class:`Document`.

The rules are general, not tuned to one article:

* **Header.** Lines above the byline are header lines; the one right above the byline is the
  headline, anything higher is a kicker (section label, photo credit, gallery counter) and is
  dropped. Without a byline the first line is the title when it reads like a headline.
* **Byline and date.** ``By <Name>`` lines, optionally followed by a date after a separator;
  ``Author:``/``Date:``/``Published``/``Updated`` lines; dates in the usual written forms.
* **Boilerplate.** Video captions (a line that ends in a running time such as ``01:01``),
  share/follow/advertisement lines, photo credits, and a trailing run of short unpunctuated
  lines (stray ad words at the end of a scrape).
* **Paragraphs.** Blank lines separate paragraphs; inside a block each line is a paragraph
  (scraped news puts one per line) unless the block is hard-wrapped, which is detected from
  its line lengths and from lines that end mid-sentence.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import logging
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date as _date
from pathlib import Path
from typing import Any

from .errors import InputError
from .types import CODE, SECTION_SEPARATOR, Document, Layout

log = logging.getLogger(__name__)

KIND_BY_SUFFIX = {
    ".pdf": "pdf",
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
"""The one table of file types: suffix -> the parser that reads it."""
SUPPORTED_SUFFIXES = tuple(KIND_BY_SUFFIX)

# --------------------------------------------------------------------------- normalisation

_SPACE_LIKE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t\f\v]")
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\u00ad]")
_MULTI_SPACE = re.compile(r" {2,}")


def normalize_text(text: str) -> str:
    """NFC, unify newlines and odd spaces, drop invisible characters, trim every line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    text = _INVISIBLE.sub("", _SPACE_LIKE.sub(" ", text))
    return "\n".join(_MULTI_SPACE.sub(" ", line).strip() for line in text.split("\n"))


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_bytes(data: bytes, name: str) -> str:
    """Decode a file's bytes as UTF-8 text, or raise :class:`InputError` saying why not."""
    if not data.strip():
        raise InputError(f"{name}: the file is empty.")
    # A byte-order mark says which Unicode encoding the file is in (Windows tools write UTF-16
    # with one); without it, NUL bytes mean binary. UTF-32 marks first: they begin like UTF-16's.
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{name}: starts like {encoding.upper()} text but is not valid {encoding.upper()} "
                    f"(at byte {exc.start + len(bom)})."
                ) from None
    head = data[:8192]
    if b"\x00" in head:
        raise InputError(f"{name}: looks like a binary file (it contains NUL bytes), not text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}). "
            "Convert it first, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    controls = sum(1 for ch in text[:8192] if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(text[:8192]) // 50):
        raise InputError(f"{name}: looks like a binary file (many control characters), not text.")
    return text


# --------------------------------------------------------------------------- dates

_MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for m in names
}
_MONTH_RE = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_PATTERNS = [
    re.compile(r"(?<!\d)(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)"),
    re.compile(
        r"\b(?P<d>\d{1,2})(?:st|nd|rd|th)?\.?\s+(?:of\s+)?" + _MONTH_RE + r",?\s+(?P<y>\d{4})\b",
        re.I,
    ),
    re.compile(r"\b" + _MONTH_RE + r"\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>\d{4})\b", re.I),
]


def parse_date(text: str) -> str | None:
    """Find the first written date in ``text`` and return it as ISO ``YYYY-MM-DD``."""
    best: tuple[int, str] | None = None
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            groups = m.groupdict()
            month = int(groups["m"]) if groups.get("m") else _MONTHS[groups["mon"].lower()]
            try:
                iso = _date(int(groups["y"]), month, int(groups["d"])).isoformat()
            except ValueError:
                continue
            if best is None or m.start() < best[0]:
                best = (m.start(), iso)
            break
    return best[1] if best else None


# A line that is only a date, perhaps with a label and a time ("Updated 10:32 AM ET, Mon March 7, 2022").
_DATE_LABEL = re.compile(
    r"^(?:(?:published|updated|posted|date|last updated|first published)\b:?\s*(?:on\s+)?)?"
    r"(?P<rest>.*)$",
    re.I,
)
_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s*[A-Z]{2,4})?\b", re.I)
_WEEKDAY = re.compile(r"\b(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)[a-z]*\.?,?", re.I)


def _date_only_line(line: str) -> str | None:
    """Return the ISO date when ``line`` holds nothing but a date (with label/time/weekday)."""
    iso = parse_date(line)
    if iso is None:
        return None
    label = _DATE_LABEL.match(line)
    rest = label.group("rest") if label else line
    for pattern in _DATE_PATTERNS:
        rest = pattern.sub(" ", rest)
    rest = _WEEKDAY.sub(" ", _TIME.sub(" ", rest))
    return iso if not re.sub(r"[\s,.\-–—|/·•:()]+", "", rest) else None


# --------------------------------------------------------------------------- bylines

_NAME_WORD = re.compile(r"^(?:[A-Z][\w'’.-]*|[A-Z]\.|and|&|de|da|del|der|van|von|la|le|bin|al|ibn|el)$")
_BYLINE = re.compile(
    # English, then German, French, Spanish, Dutch ("Von Anna Schmidt", "Par Jean Dupont").
    r"^(?:by|written by|words by|story by|reporting by|author:?|von|par|por|door)\s+(?P<rest>.+)$",
    re.I,
)
# Chinese and Japanese bylines: "作者：王小明", "记者 张伟", "文/李娜", "記者：田中太郎".
_CJK_BYLINE = re.compile(
    r"^(?:作者|记者|記者|文|撰文)\s*[:：/／]?\s*(?P<name>[\u4e00-\u9fff\u3040-\u30ff·・]{2,12})$"
)
_BYLINE_SPLIT = re.compile(r"\s*(?:[/|·•]|\s[–—-]\s|,\s+(?=\S*\d)|\bon\b|\bupdated\b|\bpublished\b)\s*")


def _parse_byline(line: str) -> tuple[str, str | None] | None:
    """Return ``(name, iso_date)`` when ``line`` is a byline, else None."""
    if len(line) > 160:
        return None
    cjk = _CJK_BYLINE.match(line.strip())
    if cjk:
        return cjk.group("name"), None
    m = _BYLINE.match(line)
    if not m:
        return None
    pieces = _BYLINE_SPLIT.split(m.group("rest"), maxsplit=1)
    name = pieces[0].strip(" ,;")
    rest = pieces[1] if len(pieces) > 1 else ""
    # Several authors: "Jane Doe and John Roe, CNN" -- keep the organisation too.
    words = [w for w in re.split(r"[\s,]+", name) if w]
    if not words or len(words) > 12 or not all(_NAME_WORD.match(w) for w in words):
        return None
    if not any(w[0].isupper() and w not in ("and", "&") for w in words):
        return None
    return name, parse_date(rest) if rest else None


# --------------------------------------------------------------------------- boilerplate

_DURATION_END = re.compile(r"(?:^|\s)\(?\d{1,2}:\d{2}(?::\d{2})?\)?$")
_BOILERPLATE = re.compile(
    r"""^(?:
        (?P<advertisement>advertisement|advert|ad\ feedback|sponsored(?:\ content)?|paid\ content
          |promoted\ content|story\ continues\ (?:below|after)\ (?:this\ )?(?:advertisement|ad))
      | (?P<continue_reading>continue\ reading(?:\ below|\ the\ main\ story)?)
      | (?P<read_more>(?:read|see|watch)\ (?:more|also|next)(?:\s*:.{0,80}|\W*))
      | (?P<related_links>related(?:\ articles?|\ stories|\ coverage|\ content|\ links)?(?:\s*:.{0,80}|\W*))
      | (?P<newsletter>(?:sign\ up|subscribe)\b.{0,100}(?:newsletter|updates|inbox|free)\b.{0,40})
      | (?P<follow_us>follow\ (?:us|@\w+)\b.{0,60})
      | (?P<click_here>click\ here\b.{0,80}|click\ to\ (?:expand|enlarge|play|watch|read|see|view)\b.{0,40})
      | (?P<caption_control>(?:hide|show|enlarge|expand)\ (?:caption|image|photo)s?\b.{0,40})
      | (?P<photo_credit>(?:photo|image|video|picture)s?\ (?:credit|courtesy|by|source)\b.{0,80}
          |(?:photo|image|picture|graphic|illustration)s?\s*:.{0,80}
          |(?:credit|source|getty\ images|ap\ photo|reuters)\s*[:/].{0,80})
      | (?P<copyright>(?:©|\(c\)|copyright\ (?:©|\(c\)|\d{4}))\s?.{0,120}|all\ rights\ reserved.{0,40})
      | (?P<counter>(?:[\d,.]+\s*)?(?:shares?|comments?|views?))
      | (?P<share_buttons>(?:share|tweet|email|e-mail|print|save|pin|copy\ link|facebook|twitter|linkedin
          |whatsapp|reddit|pinterest|messenger|x)(?:\ (?:this|on|via|the|article|story|link|page|post
          |to|facebook|twitter|email|x))*)
    )\W*$""",
    re.I | re.X,
)
# "Share Tweet Email" / "Facebook Twitter LinkedIn": a line made only of sharing words.
_SHARE_WORDS = frozenset(
    """share shares tweet email e-mail print save pin copy link facebook twitter linkedin
    whatsapp reddit pinterest messenger telegram this article story on via""".split()
)
# The end of a sentence (a colon or semicolon is not: a lower-case line after one continues it).
_SENTENCE_END = re.compile(r"""[.!?…。！？．]["'”’)\]」』）】〉》]*$""")
# Sentence-final punctuation, Latin and CJK (。！？ and the closing brackets and quotes after them).
_TERMINAL = re.compile(r"""[.!?…:;"'”’)\]。！？．」』）】〉》"]$""")


def boilerplate_rule(paragraph: str) -> str | None:
    """The rule that makes a whole paragraph page furniture rather than article text, or None.

    Rules are matched against a whole paragraph (or a line that stands alone), never against
    a line inside a paragraph: a citation tool may drop a block, never alter one.
    """
    words = paragraph.split()
    if not words:
        return None
    if _DURATION_END.search(paragraph) and len(words) <= 30:
        return "video caption (ends in a running time)"
    m = _BOILERPLATE.match(paragraph)
    if m:
        return (m.lastgroup or "boilerplate").replace("_", " ")
    lowered = [w.strip("|·•,:;").lower() for w in words]
    if len(words) <= 8 and all(w in _SHARE_WORDS or not w for w in lowered):
        return "share buttons"
    return None


def is_boilerplate(line: str) -> bool:
    """True for a paragraph (or a line that stands alone) that is page furniture."""
    return boilerplate_rule(line) is not None


_WORDS_ONLY = re.compile(r"[^\W\d_][\w'’&.-]*(?:\s+[^\W\d_][\w'’&.-]*){0,2}")


def _is_stray(line: str) -> bool:
    """A short line of words with no sentence punctuation: an ad word or a widget label.

    Only words: a closing brace, a line of code or a number ends a text, it is not an ad.
    """
    return len(line) <= 40 and not _TERMINAL.search(line) and bool(_WORDS_ONLY.fullmatch(line))


def _looks_like_headline(line: str) -> bool:
    words = line.split()
    if not 1 <= len(words) <= 30 or len(line) > 250:
        return False
    # Headlines do not end mid-clause; a question or a quotation is fine.
    return not re.search(r"[,;]$", line) and not (line.endswith(".") and len(words) > 20)


# --------------------------------------------------------------------------- headings in plain text

# "3.", "3.2", "IV.", "§ 4": the number of a numbered heading ("3. Protecting Users' Rights.").
_HEADING_NUMBER = re.compile(
    r"^(?P<num>\d{1,3}(?:\.\d{1,3})*\.?|[IVXLC]{1,6}\.|§+\s*\d+[\w.]*)\s+(?P<rest>\S.*)$"
)


# Code, formulas and field tables, not headings: "Version ::= INTEGER", "f(x) = {", "CARD32",
# "N_ALIASES", "-- a comment".
_CODE_LIKE = re.compile(r"[{}<>=;|\\`_]|::|\w\(|\b[A-Za-z]+\d+\b|^\W")


def plain_heading_level(line: str) -> int | None:
    """The level of a plain-text line that reads as a heading, else None.

    A heading is short (at most 12 words), has letters, states no date, link or address, and
    either is numbered ("0. Definitions.", "3.2 Limits") with capitalised words or has no
    sentence punctuation and is in capitals or title case ("TERMS AND CONDITIONS", "How to
    Apply These Terms"). Capitals are level 1, numbered headings one level per number part,
    the rest level 2.
    """
    words = line.split()
    if not 1 <= len(words) <= 12 or len(line) > 100 or not any(c.isalpha() for c in line):
        return None
    if "://" in line or "@" in line or _CODE_LIKE.search(line) or parse_date(line) is not None:
        return None
    numbered = _HEADING_NUMBER.match(line)
    rest = numbered.group("rest") if numbered else line
    if numbered:
        if rest.endswith(("!", "?", "…", "..", ",", ";", ":")) or not rest[:1].isupper():
            return None
    elif _TERMINAL.search(line) or line.endswith(","):
        return None
    elif len(words) == 1 and line.isupper() and len(line) < 6:
        return None  # BEGIN, END, NULL: keywords of code more often than headings
    significant = [w for w in re.findall(r"[^\W\d_][\w'’-]*", rest) if len(w) >= 4]
    title_case = sum(w[0].isupper() for w in significant) >= 0.7 * len(significant)
    # A numbered heading may be in sentence case ("2.1. Directory layout") when it is short.
    if significant and not title_case and not (numbered and len(words) <= 6 and not rest.endswith(".")):
        return None
    if not significant and not numbered and len(words) > 2:
        return None
    if numbered:
        return 2 + numbered.group("num").rstrip(".").count(".")
    return 1 if rest.isupper() else 2


def _plain_headings(blocks: list[Block], where: str) -> list[Block]:
    """Plain text's headings made sections: a standalone heading line followed by prose.

    A heading line is not a paragraph (it would be quoted as an answer on its own): it names
    the section of the paragraphs below it. A run of heading-like lines at the very end has no
    prose to head and stays text.
    """
    levels = [plain_heading_level(b.text) if b.standalone and b.kind != CODE else None for b in blocks]
    last_prose = max((i for i, level in enumerate(levels) if level is None), default=-1)
    sections = _Sections()
    out: list[Block] = []
    for i, (block, level) in enumerate(zip(blocks, levels, strict=True)):
        if level is not None and i < last_prose:
            sections.heading(level, block.text)
            log.debug("%s: a heading, kept as the section of what follows: %r", where, block.text[:200])
            continue
        out.append(replace(block, section=sections.path) if sections.path and not block.section else block)
    return out


# --------------------------------------------------------------------------- paragraphs


def _join_block(lines: list[str], hard_wrapped: bool | None) -> list[str]:
    """Turn one blank-line-separated block into paragraphs."""
    if len(lines) == 1:
        return lines
    # A line of page furniture stands alone only between two sentences: "Advertisement" after
    # a full stop does, "copyright holder, and you cure…" after "from that" is prose. Lines
    # standing alone do not count when telling wrapped prose, and are never joined to a line.
    alone = [
        is_boilerplate(line)
        and (i == 0 or bool(_SENTENCE_END.search(lines[i - 1])))
        and (i == len(lines) - 1 or not lines[i + 1][:1].islower())
        for i, line in enumerate(lines)
    ]
    if hard_wrapped is None:
        prose = [x for x, a in zip(lines[:-1], alone[:-1], strict=True) if not a]
        lengths = [len(x) for x in prose]
        longest = max(lengths, default=0)
        open_ends = sum(1 for x in prose if not _TERMINAL.search(x))
        # Hard-wrapped prose: lines of similar width that often stop mid-sentence (or enough
        # of them at one width: joining keeps every word, splitting could drop one).
        hard_wrapped = (
            bool(prose)
            and longest <= 100
            and min(lengths) >= 0.6 * longest
            and (open_ends * 2 >= len(lengths) or len(lengths) >= 2)
        )
    if hard_wrapped:
        # One paragraph, kept or dropped whole: a line that looks like furniture inside wrapped
        # prose may as well be a sentence that happens to start a line.
        return [" ".join(lines)]
    paragraphs: list[str] = []
    for i, line in enumerate(lines):
        prev = paragraphs[-1] if paragraphs else None
        # A line that starts lower-case right after one that ends mid-sentence continues it
        # (page furniture standing alone is kept apart, to be dropped whole and nothing with it).
        if (
            prev is not None
            and not alone[i]
            and not alone[i - 1]
            and not _SENTENCE_END.search(prev)
            and line[:1].islower()
        ):
            paragraphs[-1] = f"{prev} {line}"
        else:
            paragraphs.append(line)
    return paragraphs


def _hard_wrapped(blocks: list[list[str]]) -> bool | None:
    """True when the whole text is hard-wrapped at one width; None leaves it to each block.

    Wrapping is a property of the document, not of a block: a two-line paragraph whose break
    happens to fall after a full stop is still one paragraph when the rest of the text is
    wrapped at the same width. A text that is not clearly wrapped (too few lines, long lines
    somewhere) lets each block decide, as a wrapped passage can sit among long lines.
    """
    inner = [line for block in blocks for line in block[:-1] if not is_boilerplate(line)]
    if len(inner) < 4:
        return None
    longest = max(len(x) for x in inner)
    near = sum(1 for x in inner if len(x) >= 0.6 * longest)
    return True if longest <= 100 and near >= 0.9 * len(inner) else None


def _blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if line:
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def assemble(paragraphs: Iterable[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Join paragraphs with blank lines; return the text and each paragraph's span."""
    text, spans, _ = _assemble(Block(p) for p in paragraphs)
    return text, spans


@dataclass(frozen=True, slots=True)
class Block:
    """One paragraph as a parser found it: its text, its kind (``""`` or :data:`CODE`) and the
    path of headings it sits under."""

    text: str
    kind: str = ""
    section: str = ""
    standalone: bool = False
    """A single line set apart by blank lines in plain text: it may be a heading."""
    page: int = 0
    """The page the block starts on (PDF), 0 when the source has no pages."""


def _assemble(blocks: Iterable[Block]) -> tuple[str, tuple[tuple[int, int], ...], Layout]:
    """Join blocks with blank lines: the text, each paragraph's span, and their layout.

    Prose is trimmed; code keeps its indentation (only blank lines around it go).
    """
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    kinds: list[str] = []
    sections: list[str] = []
    pages: list[int] = []
    pos = 0
    for block in blocks:
        para = block.text.strip("\n").rstrip() if block.kind == CODE else block.text.strip()
        if not para.strip():
            continue
        if parts:
            pos += 2
        spans.append((pos, pos + len(para)))
        parts.append(para)
        kinds.append(block.kind)
        sections.append(block.section)
        pages.append(block.page)
        pos += len(para)
    layout = Layout(tuple(kinds), tuple(sections), tuple(pages) if any(pages) else ())
    return "\n\n".join(parts), tuple(spans), layout if layout else Layout()


# --------------------------------------------------------------------------- the cleaner


@dataclass(slots=True)
class Metadata:
    """Metadata a container format already gives (front matter, JSONL fields, HTML meta)."""

    title: str | None = None
    byline: str | None = None
    date: str | None = None
    url: str | None = None


def clean_article(
    raw: str,
    *,
    key: str,
    source: str | None = None,
    meta: Metadata | None = None,
    one_paragraph_per_line: bool = False,
    hard_wrapped: bool | None = None,
    fallback_title: str | None = None,
) -> Document:
    """Clean raw article text into a :class:`Document`.

    ``meta`` values win over what is detected in the text. ``one_paragraph_per_line`` is for
    extractor output where every line is already a paragraph; ``hard_wrapped`` forces (True) or
    forbids (False) joining lines inside a block, None detects it.
    """
    meta = meta or Metadata()
    lines = normalize_text(raw).split("\n")
    title, byline, date = meta.title, meta.byline, meta.date
    body_start = _skip_header(lines, want_title=title is None)
    header = [ln for ln in lines[: body_start.index] if ln]
    if title is None:
        title = body_start.title
    byline = byline or body_start.byline
    date = date or body_start.date
    if date is None:
        for ln in header:
            date = parse_date(ln)
            if date:
                break

    body = lines[body_start.index :]
    # Date-only and byline lines right at the top of the body are metadata, not text.
    body, body_date = _drop_leading_meta(body)
    date = date or body_date
    if one_paragraph_per_line:
        candidates = [Block(ln) for ln in body if ln]
    else:
        blocks = list(_blocks(body))
        wrapped = hard_wrapped if hard_wrapped is not None else _hard_wrapped(blocks)
        candidates = [
            Block(p, standalone=len(block) == 1) for block in blocks for p in _join_block(block, wrapped)
        ]
    return _finish(
        candidates,
        key=key,
        source=source,
        meta=Metadata(title, byline, date, meta.url),
        fallback_title=fallback_title,
    )


def clean_blocks(
    blocks: Sequence[Block],
    *,
    key: str,
    source: str | None = None,
    meta: Metadata | None = None,
    fallback_title: str | None = None,
) -> Document:
    """Clean the paragraphs a structured format gave (Markdown, HTML) into a :class:`Document`.

    The same rules as :func:`clean_article`, on whole blocks: a byline, date or headline among
    the first prose blocks is metadata; boilerplate prose blocks are dropped. Code is never
    cleaned: it is kept exactly, indentation included.
    """
    meta = meta or Metadata()
    # The header is read from the prose before the first heading or code block.
    lead = 0
    while lead < len(blocks) and blocks[lead].kind != CODE and not blocks[lead].section:
        lead += 1
    found = _skip_header([b.text for b in blocks[:lead]], want_title=meta.title is None)
    title = meta.title or found.title
    byline, date = meta.byline or found.byline, meta.date or found.date
    if date is None:
        date = next((d for b in blocks[: found.index] if (d := parse_date(b.text))), None)
    body = list(blocks[found.index :])
    # Date and byline blocks right at the top of the body (before any code) are metadata.
    prose = list(itertools.takewhile(lambda b: b.kind != CODE, body))
    rest, body_date = _drop_leading_meta([b.text for b in prose])
    body = body[len(prose) - len(rest) :]
    date = date or body_date
    return _finish(
        body,
        key=key,
        source=source,
        meta=Metadata(title, byline, date, meta.url),
        fallback_title=fallback_title,
    )


def _finish(
    blocks: Sequence[Block], *, key: str, source: str | None, meta: Metadata, fallback_title: str | None
) -> Document:
    """Drop boilerplate blocks, assemble the rest, and make the :class:`Document`."""
    # Paragraphs are kept or dropped whole: the stored text is the source's, word for word.
    kept: list[Block] = []
    for block in blocks:
        rule = None if block.kind == CODE else boilerplate_rule(block.text)
        if rule is None:
            kept.append(block)
        else:
            log.debug("%s: dropped a paragraph as %s: %r", source or key, rule, block.text[:200])
    while kept and kept[-1].kind != CODE and _is_stray(kept[-1].text):
        stray = kept.pop().text
        log.debug("%s: dropped a paragraph as a trailing ad or widget label: %r", source or key, stray)
    text, spans, layout = _assemble(_plain_headings(kept, source or key))
    if not text:
        raise InputError(f"{source or key}: no article text left after cleaning.")
    title = meta.title or fallback_title or _first_words(text)
    return Document(
        key=key,
        title=title,
        text=text,
        paragraphs=spans,
        byline=meta.byline,
        date=meta.date,
        url=meta.url,
        source=source,
        layout=layout,
    )


@dataclass(slots=True)
class _Header:
    index: int
    title: str | None = None
    byline: str | None = None
    date: str | None = None


_HEADER_LINES = 12  # a byline further down than this is part of the body, not the header


def _skip_header(lines: list[str], *, want_title: bool) -> _Header:
    """Find where the body starts, reading title, byline and date from the header."""
    nonblank = [i for i, ln in enumerate(lines) if ln][:_HEADER_LINES]
    if not nonblank:
        return _Header(0)
    for pos, i in enumerate(nonblank):
        parsed = _parse_byline(lines[i])
        if parsed is None:
            continue
        name, date = parsed
        above = [
            lines[j] for j in nonblank[:pos] if not _date_only_line(lines[j]) and not is_boilerplate(lines[j])
        ]
        date = date or next((d for j in nonblank[:pos] if (d := _date_only_line(lines[j]))), None)
        title = above[-1] if above and _looks_like_headline(above[-1]) else None
        return _Header(i + 1, title if want_title else None, name, date)
    if not want_title:
        return _Header(0)
    # Page furniture above the headline ("Share this article") is not the title.
    content = [i for i in nonblank if not is_boilerplate(lines[i])]
    if not content:
        return _Header(0)
    first = content[0]
    line = lines[first]
    # A first line is a title when it reads like one and is set apart from the text below it.
    set_apart = first + 1 < len(lines) and not lines[first + 1]
    if _looks_like_headline(line) and (set_apart or not _TERMINAL.search(line)) and len(content) > 1:
        return _Header(first + 1, line)
    return _Header(0)


def _drop_leading_meta(body: list[str]) -> tuple[list[str], str | None]:
    """Drop date and byline lines at the top of the body; return the first date they give."""
    out = list(body)
    found: str | None = None
    while out and (not out[0] or _date_only_line(out[0]) or _parse_byline(out[0])):
        line = out.pop(0)
        if line and found is None:
            found = _date_only_line(line) or (_parse_byline(line) or (None, None))[1]
    return out, found


def _first_words(text: str, limit: int = 80) -> str:
    first = text.split("\n", 1)[0]
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + "…"


def article_digest(
    title: str,
    byline: str | None,
    date: str | None,
    url: str | None,
    text: str,
    paragraphs: Sequence[Sequence[int]],
    layout: Layout | None = None,
) -> str:
    """A hash of everything stored for an article (the content hash): a changed article is noticed
    on ingest, and a stored article whose text, spans or layout were altered is refused when read.

    A plain article's layout adds nothing, so its hash is what it was before layouts existed.
    """
    h = hashlib.sha256()
    for part in (title, byline or "", date or "", url or "", text):
        h.update(part.encode())
        h.update(b"\x1f")
    h.update(repr(tuple(tuple(p) for p in paragraphs)).encode())
    stored = layout.to_json() if layout else None
    if stored is not None:
        h.update(b"\x1f" + stored.encode())
    return h.hexdigest()


def content_hash(doc: Document) -> str:
    """A hash of everything stored for an article, so a changed article is noticed."""
    return article_digest(doc.title, doc.byline, doc.date, doc.url, doc.text, doc.paragraphs, doc.layout)


# --------------------------------------------------------------------------- formats

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    fields: dict[str, str] = {}
    for line in m.group(1).split("\n"):
        if ":" in line and not line.startswith((" ", "\t", "-", "#")):
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip().strip("\"'")
    return fields, text[m.end() :]


_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def _prose(text: str) -> str:
    """Normalised prose on one line: a line break inside a paragraph is a soft wrap."""
    return " ".join(normalize_text(text).split())


def _code(text: str) -> str:
    """A code block as written: indentation kept; trailing spaces and blank edge lines go."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [_INVISIBLE.sub("", line).rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


class _Sections:
    """The path of headings above the current block, kept as headings open and close."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        if text:
            self._open.append((level, text))

    @property
    def path(self) -> str:
        return SECTION_SEPARATOR.join(text for _, text in self._open)


def _markdown_inline(token: Any) -> str:
    """The text of an inline Markdown token: markup, links' targets and images left out."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak", "html_inline"):
            parts.append(" ")
    return _prose("".join(parts))


def parse_markdown(text: str, *, key: str, source: str | None = None) -> Document:
    """Markdown through a CommonMark parser (markdown-it-py): headings become each paragraph's
    section path (a leading ``#`` heading is the title), fenced and indented code blocks stay
    whole, list items and table rows are paragraphs; front matter gives metadata."""
    from markdown_it import MarkdownIt  # lazy: only Markdown needs it

    fields, body = _front_matter(text.replace("\r\n", "\n").replace("\r", "\n"))
    meta = _meta_from_fields({k: normalize_text(v) for k, v in fields.items()})
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    blocks: list[Block] = []
    sections = _Sections()
    row: list[str] | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.type == "heading_open":
            heading = _markdown_inline(tokens[i])
            i += 2  # the inline token and heading_close
            if token.tag == "h1" and meta.title is None and not blocks and not sections.path:
                meta.title = heading or None
            else:
                sections.heading(int(token.tag[1:]), heading)
        elif token.type in ("fence", "code_block"):
            blocks.append(Block(_code(token.content), CODE, sections.path))
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            blocks.append(Block(" | ".join(cell for cell in row if cell), "", sections.path))
            row = None
        elif token.type == "inline":
            if row is not None:
                row.append(_markdown_inline(token))
            else:
                blocks.append(Block(_markdown_inline(token), "", sections.path))
        elif token.type == "html_block":
            blocks.append(
                Block(_prose(_HTML_TAG.sub(" ", _HTML_COMMENT.sub("", token.content))), "", sections.path)
            )
    return clean_blocks(blocks, key=key, source=source, meta=meta, fallback_title=_title_from_name(source))


_XML_BLOCKS = frozenset({"p", "head", "list", "item", "quote", "table", "div", "section", "main", "article"})


def _xml_inline(element: Any) -> str:
    """The raw text of an inline element of trafilatura's XML (``<lb/>``, a ``<br>``, is a space)."""
    parts: list[str] = [" "] if element.tag == "lb" else []
    if element.text:
        parts.append(element.text)
    for child in element:
        parts.append(_xml_inline(child))
        if child.tail:
            parts.append(child.tail)
    return "".join(parts)


def _standalone_code(el: Any, before: str | None) -> bool:
    """A ``<code>`` that is a block of its own (a listing), not a word in a sentence."""
    parent = el.getparent()
    if parent is None or parent.tag == "p":
        return False
    text = "".join(el.itertext()).strip()
    return "\n" in text or (not (before or "").strip() and not (el.tail or "").strip())


def _xml_blocks(body: Any) -> list[Block]:
    """Paragraphs from trafilatura's XML body: its block elements, in document order.

    ``<head>`` elements make section paths; a ``<code>`` that stands alone is a code block;
    paragraphs, list items and table rows are paragraphs; the text between block elements
    (an item's words before its nested list) is a paragraph too. The source's line breaks
    inside a ``<p>`` are soft wraps.
    """
    blocks: list[Block] = []
    sections = _Sections()

    def prose(pieces: list[str]) -> None:
        text = _prose("".join(pieces))
        pieces.clear()
        if text:
            blocks.append(Block(text, "", sections.path))

    def walk(parent: Any) -> None:
        run: list[str] = [parent.text or ""]
        before = parent.text
        for el in parent:
            tag = el.tag if isinstance(el.tag, str) else ""
            if tag == "head":
                prose(run)
                rend = str(el.get("rend") or "")
                sections.heading(
                    int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2, _prose(_xml_inline(el))
                )
            elif tag == "code" and _standalone_code(el, before):
                prose(run)
                blocks.append(Block(_code("".join(el.itertext())), CODE, sections.path))
            elif tag == "table":
                prose(run)
                for row in el.iter("row"):
                    cells = [_prose(_xml_inline(cell)) for cell in row.iter("cell")]
                    blocks.append(Block(" | ".join(c for c in cells if c), "", sections.path))
            elif tag in _XML_BLOCKS:
                prose(run)
                walk(el)
            elif tag:
                run.append(_xml_inline(el))
            run.append(el.tail or "")
            before = el.tail
        prose(run)

    walk(body)
    return blocks


def parse_html(html: str, *, key: str, source: str | None = None, url: str | None = None) -> Document:
    """HTML through trafilatura's main-content extraction, read from its structured output
    (paragraphs, headings, lists, code, tables), then the same cleaning rules."""
    import trafilatura  # lazy: it pulls in lxml and friends

    # A trafilatura Document (its attributes are read below; the dict form is for as_dict=True).
    extracted: Any = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        # The balanced mode: precision mode drops headings, which are the article's sections.
        favor_precision=False,
        # A date only from what states one (meta tags, JSON-LD, <time>): htmldate's extensive
        # search also guesses from links, file names and CSS classes ("edition2024"), and a
        # citation with an invented date is worse than one without.
        date_extraction_params={"extensive_search": False, "original_date": True},
    )
    if extracted is None or not (getattr(extracted, "text", None) or "").strip():
        raise InputError(f"{source or url or key}: no article text found in this HTML page.")
    meta = Metadata(
        title=(extracted.title or None),
        byline=(extracted.author or None),
        date=parse_date(extracted.date) if extracted.date else None,
        url=url or extracted.url or None,
    )
    if meta.byline:
        meta.byline = meta.byline.replace(";", ",")
    meta.title = _page_title(html, meta.title, extracted.text)
    blocks = _xml_blocks(extracted.body) if extracted.body is not None else []
    blocks = _restore_repeated_code(html, blocks)
    if not blocks:
        blocks = [Block(_prose(line)) for line in extracted.text.split("\n")]
    if meta.title:
        # The headline often opens the text too (as a heading or not): it is the title, not
        # paragraph 1 or a section.
        first = next((b for b in blocks if b.text), None)
        title = normalize_text(meta.title).casefold()
        if first is not None and not first.section and first.text.casefold() == title and len(blocks) > 1:
            blocks.remove(first)
        blocks = [replace(b, section=_drop_title(b.section, title)) if b.section else b for b in blocks]
    return clean_blocks(blocks, key=key, source=source, meta=meta, fallback_title=_title_from_name(source))


def _source_code(html: str) -> list[str]:
    """The page's ``<pre>`` blocks as code blocks, in document order."""
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return []
    return [text for pre in root.iter("pre") if (text := _code("".join(pre.itertext())))]


def _restore_repeated_code(html: str, blocks: list[Block]) -> list[Block]:
    """Put back the code blocks trafilatura drops for repeating the block before them.

    trafilatura removes a block whose whitespace-collapsed text equals the previous block's
    (a guard against extraction artifacts), so of two listings that differ only in indentation,
    or a listing shown twice, the second is lost. Each code block of the extraction is found
    among the page's ``<pre>`` blocks; the page's next blocks that repeat it that way follow it
    again, unless the extraction has them as its next code block (it kept them).
    """
    if not any(b.kind == CODE for b in blocks):
        return blocks
    source = _source_code(html)
    out: list[Block] = []
    at = 0
    for n, block in enumerate(blocks):
        out.append(block)
        if block.kind != CODE or block.text not in source[at:]:
            continue
        at = source.index(block.text, at) + 1
        words = block.text.split()
        kept = next((b.text for b in blocks[n + 1 :] if b.kind == CODE), None)
        while at < len(source) and source[at].split() == words and source[at] != kept:
            out.append(Block(source[at], CODE, block.section))
            at += 1
    return out


def _drop_title(section: str, title: str) -> str:
    """A section path without the article's own title as its first heading."""
    first, _, rest = section.partition(SECTION_SEPARATOR)
    return rest if first.casefold() == title else section


_TITLE_TAG = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def _page_title(html: str, extracted: str | None, text: str) -> str | None:
    """Pick the page's title: the extractor's when the text confirms it (its heading opens the
    text), else the ``<title>`` element's first part ("Headline | Site"), the title the page
    declares; the extractor sometimes takes a stray heading such as a hidden help dialog's."""
    import html as html_lib

    m = _TITLE_TAG.search(html)
    tag = normalize_text(html_lib.unescape(m.group(1))).replace("\n", " ").strip() if m else ""
    tag = re.split(r"\s+[-|–—·]\s+", tag)[0].strip() if tag else ""
    opening = normalize_text(text[:600]).casefold()
    if extracted and (extracted.casefold() in opening or not tag):
        return extracted
    return tag or extracted or None


_TEXT_FIELDS = ("text", "content", "body", "article", "maintext")
_TITLE_FIELDS = ("title", "headline", "name")
_BYLINE_FIELDS = ("byline", "author", "authors", "by")
_DATE_FIELDS = ("date", "published", "published_at", "date_published", "publish_date", "pubdate")
_URL_FIELDS = ("url", "link", "source_url", "source", "href")


def _meta_from_fields(fields: Mapping[str, object]) -> Metadata:
    def pick(names: tuple[str, ...]) -> str | None:
        for n in names:
            v = fields.get(n)
            if isinstance(v, list):
                v = ", ".join(str(x) for x in v if x)
            if v not in (None, ""):
                return str(v).strip()
        return None

    url = pick(_URL_FIELDS)
    if url and not re.match(r"^https?://", url, re.I):
        url = None
    raw_date = pick(_DATE_FIELDS)
    return Metadata(
        title=pick(_TITLE_FIELDS),
        byline=pick(_BYLINE_FIELDS),
        date=parse_date(raw_date) if raw_date else None,
        url=url,
    )


def parse_record(record: dict[str, object], *, key: str, source: str | None = None) -> Document:
    """One JSON object: ``paragraphs`` (a list) or a text field, plus metadata fields."""
    meta = _meta_from_fields({k.lower(): v for k, v in record.items()})
    paras = record.get("paragraphs")
    if isinstance(paras, list):
        if not all(isinstance(p, str) for p in paras):
            raise InputError(f"{source or key}: 'paragraphs' must be a list of strings.")
        # Given paragraphs are kept as they are (only whitespace-normalised), one per entry.
        joined = "\n".join(" ".join(normalize_text(p).split()) for p in paras)
        return clean_article(
            joined,
            key=key,
            source=source,
            meta=meta,
            one_paragraph_per_line=True,
            fallback_title=str(record.get("id") or "") or None,
        )
    body = next((record[f] for f in _TEXT_FIELDS if isinstance(record.get(f), str)), None)
    if body is None or not str(body).strip():
        raise InputError(f"{source or key}: no text. Give one of {', '.join(_TEXT_FIELDS)} or 'paragraphs'.")
    return clean_article(str(body), key=key, source=source, meta=meta)


def parse_jsonl(text: str, *, source: str) -> Iterator[Document | InputError]:
    """Yield a Document per JSON line, or an InputError for a line that cannot be used."""
    seen = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        seen += 1
        where = f"{source}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InputError(f"{where}: not valid JSON ({exc.msg}).")
            continue
        except RecursionError:  # the parser recurses per nesting level
            yield InputError(f"{where}: nested too deeply to read (an article is never that deep).")
            continue
        if not isinstance(record, dict):
            yield InputError(f"{where}: each line must be a JSON object.")
            continue
        meta_url = _meta_from_fields({k.lower(): v for k, v in record.items()}).url
        rid = record.get("id")
        key = f"jsonl:{Path(source).name}#{rid}" if rid not in (None, "") else (meta_url or f"{where}")
        try:
            yield parse_record(record, key=key, source=where)
        except InputError as exc:
            yield exc
    if not seen:
        yield InputError(f"{source}: the file has no records.")


def _title_from_name(source: str | None) -> str | None:
    if not source:
        return None
    stem = Path(source.split("#", 1)[0]).stem
    words = re.sub(r"[_\-]+", " ", stem).strip()
    # A name made of ids and hashes ("000_d127e4febeeb3753") is no title.
    if not words or not re.search(r"[a-zA-Z]{3,}", words) or re.search(r"[0-9a-f]{10,}", words):
        return None
    return words[:1].upper() + words[1:]


def load_file(path: Path) -> Iterator[Document | InputError]:
    """Read one file and yield its articles (JSONL gives several) or errors for bad parts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield InputError(f"{path}: cannot be read ({exc.strerror or exc}).")
        return
    yield from load_bytes(data, name=str(path), key=f"file:{path.resolve()}")


def load_bytes(
    data: bytes, *, name: str, key: str, url: str | None = None, kind: str | None = None
) -> Iterator[Document | InputError]:
    """Parse the bytes of one file (an upload, a download) into articles, or errors.

    ``name`` is shown in messages and, without ``kind``, its suffix picks the format;
    ``kind`` forces one of ``txt``, ``md``, ``html``, ``jsonl``, ``pdf``. ``url`` is the
    article's address when it came from the web. A PDF is known by its signature too.
    """
    kind = kind or KIND_BY_SUFFIX.get(Path(name.split("?", 1)[0]).suffix.lower())
    if kind == "pdf" or data[:1024].lstrip().startswith(b"%PDF-"):
        from .pdf import parse_pdf  # lazy: PDFium is loaded only for PDFs

        try:
            yield _with_url(parse_pdf(data, key=key, source=name), url)
        except InputError as exc:
            yield exc
        return
    try:
        text = decode_bytes(data, name)
    except InputError as exc:
        yield exc
        return
    try:
        if kind == "jsonl":
            yield from parse_jsonl(text, source=name)
        elif kind == "md":
            yield _with_url(parse_markdown(text, key=key, source=name), url)
        elif kind == "html":
            yield parse_html(text, key=key, source=name, url=url)
        else:
            doc = clean_article(text, key=key, source=name, fallback_title=_title_from_name(name))
            yield _with_url(doc, url)
    except InputError as exc:
        yield exc


def _with_url(doc: Document, url: str | None) -> Document:
    if url is None or doc.url:
        return doc
    return replace(doc, url=url)


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[InputError]]:
    """Expand files and folders into supported files; report what cannot be used."""
    files: list[Path] = []
    problems: list[InputError] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                problems.append(
                    InputError(f"{p}: no files to ingest here (looked for {', '.join(SUPPORTED_SUFFIXES)}).")
                )
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                problems.append(
                    InputError(f"{p}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)}.")
                )
            else:
                files.append(p)
        else:
            problems.append(InputError(f"{p}: {_what_it_is(p)}"))
    return files, problems


def _what_it_is(p: Path) -> str:
    """Why ``p``, which is neither a regular file nor a folder, cannot be read, in words."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        if p.is_symlink():
            return "a link to something that does not exist."
        return "no such file or folder."
    except PermissionError:
        return "cannot be reached (permission denied on a folder above it)."
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})."
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file: save what it carries to a file first."
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file."
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file."
    return "is not a regular file or folder."
