"""A library as one JSON Lines file, and back: ``citebot export`` / ``citebot import`` and the
bot's /export.

The file holds what people made, not what the model computed: each article's cleaned text,
paragraphs, layout and metadata, the server's settings, its moderators' pins, the votes and the
subscriptions. Importing re-embeds the articles with the importing library's model, so a file
moves between models, stores and machines. Logged questions are not exported: they are
members' words, kept only for the gap report and only for the retention period.

Every line is one JSON object with a ``type``; the first is a header naming the format.
An import reads and checks the whole file before it changes anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from . import community
from .errors import InputError
from .ingest import ProgressFn
from .library import Library
from .store import Feedback, Record
from .types import Document, IngestReport, Layout

FORMAT = "citebot-library"
VERSION = 1


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def _layout(layout: Layout) -> Any:
    raw = layout.to_json()
    return json.loads(raw) if raw is not None else None


def export_lines(library: Library) -> Iterator[str]:
    """The library as JSON Lines, article by article (nothing is held whole in memory)."""
    yield _line({"type": "header", "format": FORMAT, "version": VERSION, "library": library.name})
    settings = library.own_settings()
    yield _line({"type": "settings", "value": json.loads(settings.to_json())})
    if library.exists():
        for info in library.articles():
            article = library.store.get_article(library.name, info.id)
            if article is None:
                continue  # forgotten while exporting
            yield _line(
                {
                    "type": "article",
                    "key": info.key,
                    "title": info.title,
                    "byline": info.byline,
                    "date": info.date,
                    "url": info.url,
                    "source": info.source,
                    "text": article.text,
                    "paragraphs": [list(p) for p in article.paragraphs],
                    "layout": _layout(article.layout),
                }
            )
        for vote in reversed(library.store.list_feedback(library.name, limit=10_000_000)):
            yield _line(
                {
                    "type": "vote",
                    "question": vote.question,
                    "vote": vote.vote,
                    "user": vote.user,
                    "created_at": vote.created_at,
                    "extra": vote.extra,
                }
            )
    for pin in library.pins():
        record = pin.to_record()
        yield _line(
            {"type": "pin", "id": pin.id, "by": pin.by, "at": pin.at, "value": json.loads(record.value)}
        )
    for url, state in library.store.subscriptions(library.name).items() if library.exists() else ():
        yield _line({"type": "subscription", "url": url, "state": json.loads(state)})


def export_library(library: Library, out: TextIO) -> int:
    """Write the library to ``out``; the number of lines."""
    n = 0
    for line in export_lines(library):
        out.write(line)
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did."""

    ingest: IngestReport
    settings: bool
    pins: int
    pins_dropped: tuple[str, ...]
    votes: int
    subscriptions: int


@dataclass(slots=True)
class _Parsed:
    documents: list[Document]
    settings: community.ServerSettings | None
    pins: list[Record]
    votes: list[Feedback]
    subscriptions: list[tuple[str, str]]


def _text(d: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = d.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be text")
    return value


def _parse(lines: Iterable[str], source: str) -> _Parsed:
    parsed = _Parsed([], None, [], [], [])
    problems: list[str] = []
    header = False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            kind = d.get("type")
            if not header:
                if kind != "header" or d.get("format") != FORMAT:
                    raise ValueError(
                        f"not a citebot library export (the first line must be its {FORMAT} header)"
                    )
                if not isinstance(d.get("version"), int) or d["version"] > VERSION:
                    raise ValueError(f"made by a newer citebot (format version {d.get('version')!r})")
                header = True
            elif kind == "settings":
                parsed.settings = community.ServerSettings.from_json(json.dumps(d.get("value") or {}))
            elif kind == "article":
                text = _text(d, "text") or ""
                spans = tuple((int(a), int(b)) for a, b in d.get("paragraphs") or [])
                if any(not 0 <= a <= b <= len(text) for a, b in spans):
                    raise ValueError("a paragraph lies outside the article's text")
                layout = d.get("layout")
                parsed.documents.append(
                    Document(
                        key=_text(d, "key") or "",
                        title=_text(d, "title") or "",
                        text=text,
                        paragraphs=spans,
                        byline=_text(d, "byline", optional=True),
                        date=_text(d, "date", optional=True),
                        url=_text(d, "url", optional=True),
                        source=_text(d, "source", optional=True),
                        layout=Layout.from_json(json.dumps(layout), len(spans)) if layout else Layout(),
                    )
                )
            elif kind == "vote":
                vote = int(d["vote"])
                if vote not in (1, -1):
                    raise ValueError("a vote is 1 or -1")
                extra = d.get("extra") or {}
                if not isinstance(extra, dict):
                    raise ValueError("'extra' must be an object")
                parsed.votes.append(
                    Feedback(
                        question=_text(d, "question") or "",
                        answer_passage_id=None,
                        article_id=None,
                        vote=vote,
                        user=_text(d, "user") or "",
                        created_at=_text(d, "created_at") or "",
                        extra={str(k): str(v) for k, v in extra.items()},
                    )
                )
            elif kind == "pin":
                value = json.dumps(d["value"], ensure_ascii=False)
                record = Record(
                    community.PIN_KIND,
                    _text(d, "id") or "",
                    value,
                    _text(d, "by") or "",
                    _text(d, "at") or "",
                )
                if community.Pin.of(record) is None:
                    raise ValueError("a damaged pin")
                parsed.pins.append(record)
            elif kind == "subscription":
                parsed.subscriptions.append((_text(d, "url") or "", json.dumps(d.get("state") or {})))
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"line {number}: {exc}")
            if len(problems) >= 5:
                break
    if not header and not problems:
        problems.append("the file is empty")
    if problems:
        raise InputError(f"{source} can't be imported; nothing was changed. " + "; ".join(problems) + ".")
    return parsed


def import_library(
    library: Library, lines: Iterable[str], *, source: str = "the file", progress: ProgressFn | None = None
) -> ImportReport:
    """Add an export's contents to ``library`` (articles re-embedded; an unchanged article is
    skipped, a changed one replaced). Checks the whole file first: a bad line changes nothing."""
    parsed = _parse(lines, source)
    report = library.ingest(parsed.documents, progress=progress) if parsed.documents else IngestReport(())
    if parsed.settings is not None and parsed.settings != community.ServerSettings():
        # Every setting, unset ones too: the file's settings replace the library's.
        library.configure(**asdict(parsed.settings))
    # The pins name passages of the exporting library: followed to this one's by text.
    dropped = library.restore_pins(parsed.pins)
    existing = set()
    if parsed.votes and library.exists():
        existing = {
            (f.user, f.created_at, f.question, f.vote)
            for f in library.store.list_feedback(library.name, 10_000_000)
        }
    added = 0
    for vote in parsed.votes:
        if (vote.user, vote.created_at, vote.question, vote.vote) not in existing:
            library.store.add_feedback(library.name, vote)
            added += 1
    for url, state in parsed.subscriptions:
        library.store.put_subscription(library.name, url, state)
    return ImportReport(
        ingest=report,
        settings=parsed.settings is not None,
        pins=len(parsed.pins) - len(dropped),
        pins_dropped=dropped,
        votes=added,
        subscriptions=len(parsed.subscriptions),
    )
