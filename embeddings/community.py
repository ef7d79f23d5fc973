"""What a community's library keeps beside its articles: its settings, the questions it was
asked (for the knowledge-gap report), its moderators' pins, its usage against its quotas, and
whether its server removed the bot.

Everything is stored as :class:`~embeddings.store.Record` rows of the library, so both stores
keep it, ``citebot migrate`` is not needed for it to survive a restart, and deleting a member's
data is one call. The rules (what counts as a gap, when a pin applies, what a quota allows) live
here; :class:`~embeddings.library.Library` calls them and front ends only render.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import CitebotError, InputError
from .store import Feedback, Record, Store

SETTINGS_KIND = "settings"
QUESTION_KIND = "question"
PIN_KIND = "pin"
DROPPED_PIN_KIND = "pin-dropped"
USAGE_KIND = "usage"
LEFT_KIND = "left"
FORUM_KIND = "forum-reply"
CONVERSATION_KIND = "conversation"
"""Record kinds; a record of ``QUESTION_KIND`` or a vote names its member in ``user``."""

AUTO_REPLY_THRESHOLD = 0.93
"""Default confidence a forum post needs for an unasked reply: on SQuAD-dev (all 10,570
questions, half the articles in the library) the lowest threshold at which at most 2 % of
out-of-library questions are answered was 0.928; there 80.6 % of in-library questions still
get a reply. ``citebot eval`` prints this point for any question set ("threshold answering at
most 2 %")."""

PIN_THRESHOLD = 0.88
"""Cosine between a new question's vector and a pinned question's at which the pin answers: on
SQuAD-dev (``benchmarks/pins.py``) the lowest with at most 1 % false pins (0.81 % with 2,056
pins, 0.02 % with 50), where 75 % of pinned questions re-asked in other words still hit their pin."""

GAP_THRESHOLD = 0.70
"""Cosine to a group's first question at which an unanswered question joins that group. On
SQuAD-dev (``benchmarks/pins.py``'s sweep, which asks the same of pins) 92 % of questions
re-worded join their original while 1.8 % of unrelated questions join one of 50 groups (at
0.60: 95 % and 8.5 %)."""

RETENTION_DAYS = 90
LEAVE_GRACE_DAYS = 30


# ---------------------------------------------------------------------- settings


class QuotaError(CitebotError):
    """A server's limit is reached; the message says which and when it frees up."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """A server's own settings. ``None`` means "not set here": the operator's default applies
    (:meth:`over`). Quotas of 0 mean no limit."""

    mention_channels: tuple[int, ...] | None = None
    public_answers: bool | None = None
    thread_mode: bool | None = None
    forum_channels: tuple[int, ...] | None = None
    abstain_threshold: float | None = None
    autoreply_threshold: float | None = None
    cooldown: tuple[int, float] | None = None
    manager_role: int | None = None
    questions_per_minute: int | None = None
    articles_per_day: int | None = None
    megabytes_per_day: float | None = None
    max_articles: int | None = None
    retention_days: int | None = None

    def over(self, defaults: ServerSettings) -> ServerSettings:
        """These settings, with ``defaults`` wherever nothing is set here."""
        return replace(
            defaults,
            **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None},
        )

    def to_json(self) -> str:
        """Only what is set, as JSON."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> ServerSettings:
        """Parse :meth:`to_json` output; an unknown or damaged entry is left unset."""
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        values: dict[str, Any] = {}
        if isinstance(data, dict):
            for name, value in data.items():
                if name in SETTING_HELP and value is not None:
                    try:
                        values[name] = coerce_setting(name, value)
                    except (TypeError, ValueError, InputError):
                        continue
        return cls(**values)


DEFAULTS = ServerSettings(
    mention_channels=(),
    public_answers=False,
    thread_mode=False,
    forum_channels=(),
    abstain_threshold=None,  # the library's own (SearchConfig, CITEBOT_ABSTAIN_THRESHOLD)
    autoreply_threshold=AUTO_REPLY_THRESHOLD,
    cooldown=(3, 30.0),
    manager_role=0,
    questions_per_minute=30,
    articles_per_day=500,
    megabytes_per_day=50.0,
    max_articles=10_000,
    retention_days=RETENTION_DAYS,
)
"""Built-in defaults; the operator's environment overrides them (``bot.config``)."""

SETTING_HELP: dict[str, str] = {
    "mention_channels": "Channels where a mention is answered (none listed: every channel).",
    "public_answers": "Whether /ask answers are shown to the whole channel by default.",
    "thread_mode": "Answer a mention in a thread on the question; in that thread no mention is needed.",
    "forum_channels": "Forum channels where each new post gets an answer, only when the bot is sure.",
    "abstain_threshold": "Confidence (0-1) below which I say the library doesn't answer.",
    "autoreply_threshold": "Confidence (0-1) a forum post needs before I reply unasked.",
    "cooldown": "Questions one member may ask, as uses/seconds (3/30), or off.",
    "manager_role": "The role allowed to ingest, forget and subscribe (none: Manage Server).",
    "questions_per_minute": "Questions the whole server may ask per minute (0: no limit).",
    "articles_per_day": "Articles the server may add per day (0: no limit).",
    "megabytes_per_day": "Megabytes of text the server may add per day (0: no limit).",
    "max_articles": "Articles the library may hold (0: no limit).",
    "retention_days": "Days a question is kept for /gaps (0: questions are not kept).",
}


def _ids(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        if value.strip().lower() in ("all", "none", "-", ""):
            return ()
        found = re.findall(r"\d{5,20}", value)
        rest = re.sub(r"<#\d+>|\d{5,20}|[\s,]", "", value)
        if rest or not found:
            raise InputError(f"{value!r} is not a list of channels: mention them (#help) or give their ids.")
        return tuple(dict.fromkeys(int(v) for v in found))
    return tuple(dict.fromkeys(int(v) for v in value))


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("on", "yes", "true", "1", "public"):
        return True
    if v in ("off", "no", "false", "0", "private"):
        return False
    raise InputError(f"{value!r} is not on or off.")


def _fraction(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a number from 0 to 1.") from None
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise InputError(f"{value!r} is not a number from 0 to 1.")
    return v


def _count(value: Any) -> int:
    try:
        v = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a whole number (0 for no limit).") from None
    if v < 0 or v > 10**9:
        raise InputError(f"{value!r} is not a whole number from 0 to 1,000,000,000.")
    return v


def _megabytes(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a number of megabytes (0 for no limit).") from None
    if not 0 <= v <= 10**6 or math.isnan(v):
        raise InputError(f"{value!r} is not a number of megabytes from 0 to 1,000,000.")
    return v


def _cooldown(value: Any) -> tuple[int, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        uses, per = int(value[0]), float(value[1])
    else:
        v = str(value).strip().lower()
        if v in ("off", "none", "0"):
            return (0, 0.0)
        m = re.fullmatch(r"(?:(\d+)\s*/\s*)?(\d+(?:\.\d+)?)\s*s?", v)
        if not m:
            raise InputError(f"{value!r} is not a cooldown: write 3/30 (3 questions per 30 seconds) or off.")
        uses, per = int(m.group(1) or 1), float(m.group(2))
    if (uses, per) != (0, 0.0) and (not 1 <= uses <= 1000 or not 0 < per <= 86400):
        raise InputError(f"{value!r} is not a cooldown: 1-1000 questions per 1-86400 seconds, or off.")
    return (uses, per)


def _role(value: Any) -> int:
    if isinstance(value, int):
        return value
    v = str(value).strip()
    if v.lower() in ("none", "default", "manage server", "0", ""):
        return 0
    m = re.fullmatch(r"<@&(\d{5,20})>|(\d{5,20})", v)
    if not m:
        raise InputError(f"{value!r} is not a role: mention it (@Moderators) or give its id.")
    return int(m.group(1) or m.group(2))


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "mention_channels": _ids,
    "public_answers": _bool,
    "thread_mode": _bool,
    "forum_channels": _ids,
    "abstain_threshold": _fraction,
    "autoreply_threshold": _fraction,
    "cooldown": _cooldown,
    "manager_role": _role,
    "questions_per_minute": _count,
    "articles_per_day": _count,
    "megabytes_per_day": _megabytes,
    "max_articles": _count,
    "retention_days": _count,
}


def coerce_setting(name: str, value: Any) -> Any:
    """``value`` (text or an already typed value) checked and typed for setting ``name``;
    :class:`InputError` when it does not fit."""
    return _PARSERS[name](value)


def parse_setting(name: str, raw: str) -> Any:
    """The value of setting ``name`` written as ``raw`` ("default" unsets it: None).

    Raises :class:`InputError` with what is expected.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SETTING_HELP:
        raise InputError(f"There is no setting {name!r}. The settings are: {', '.join(SETTING_HELP)}.")
    if raw.strip().lower() == "default":
        return None
    try:
        return coerce_setting(key, raw)
    except InputError as exc:
        raise InputError(f"{key}: {exc.message} {SETTING_HELP[key]}") from None


def describe_value(name: str, value: Any) -> str:
    """A setting's value as people read it."""
    if value is None:
        return "default"
    if name in ("mention_channels", "forum_channels"):
        return ", ".join(f"<#{c}>" for c in value) or ("all" if name == "mention_channels" else "none")
    if name == "cooldown":
        return "off" if tuple(value) == (0, 0.0) else f"{value[0]}/{value[1]:g} s"
    if name == "manager_role":
        return f"<@&{value}>" if value else "Manage Server"
    if isinstance(value, bool):
        return "on" if value else "off"
    if name.endswith("threshold"):
        return f"{value:.2f}"
    if name in ("questions_per_minute", "articles_per_day", "megabytes_per_day", "max_articles"):
        return "no limit" if not value else f"{value:g}"
    return str(value)


def load_settings(store: Store, library: str) -> ServerSettings:
    """The settings a server changed (nothing set: all defaults)."""
    found = store.records(library, SETTINGS_KIND, keys=["server"])
    return ServerSettings.from_json(found[0].value) if found else ServerSettings()


def save_settings(store: Store, library: str, settings: ServerSettings) -> None:
    """Store a server's settings."""
    store.put_record(library, Record(SETTINGS_KIND, "server", settings.to_json()))


# ---------------------------------------------------------------------- time


def utcnow() -> datetime:
    """Now, in UTC (one place, so tests and rules agree)."""
    return datetime.now(UTC)


def stamp(when: datetime) -> str:
    """A time as records store it (ISO 8601 UTC, to the second, like the stores' ``now()``)."""
    return when.astimezone(UTC).isoformat(timespec="seconds")


def parse_stamp(text: str) -> datetime:
    """A stored time back as a datetime (UTC when it names no zone)."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_period(text: str) -> timedelta:
    """``"7d"``, ``"24h"``, ``"2w"``, ``"30"`` (days) as a period; :class:`InputError` otherwise."""
    m = re.fullmatch(r"\s*(\d{1,4})\s*([hdw]?)\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise InputError(f"{text!r} is not a period: write 24h, 7d or 4w.")
    n = int(m.group(1))
    return {"h": timedelta(hours=n), "w": timedelta(weeks=n)}.get(m.group(2), timedelta(days=n))


# ---------------------------------------------------------------------- vectors in records


def pack_vector(vector: NDArray[np.float32]) -> str:
    """A vector as compact text (float16: question grouping and pin matching need no more)."""
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")


def unpack_vector(text: str) -> NDArray[np.float32]:
    """:func:`pack_vector` back, normalised again."""
    v = np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


# ---------------------------------------------------------------------- the question log


@dataclass(frozen=True, slots=True)
class LoggedQuestion:
    """A question as the knowledge-gap report keeps it."""

    id: str
    question: str
    user: str
    at: str
    answered: bool
    confidence: float
    article_id: str | None
    title: str | None
    vector: NDArray[np.float32] = field(compare=False, repr=False)

    @classmethod
    def of(cls, record: Record) -> LoggedQuestion | None:
        """From its record; None for a damaged one (skipped, not fatal)."""
        try:
            d = json.loads(record.value)
            return cls(
                record.key,
                str(d["q"]),
                record.user,
                record.at,
                bool(d["answered"]),
                float(d["c"]),
                d.get("a"),
                d.get("t"),
                unpack_vector(d["v"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def question_record(
    answer_id: str,
    user: str,
    question: str,
    vector: NDArray[np.float32],
    answered: bool,
    confidence: float,
    article_id: str | None,
    title: str | None,
) -> Record:
    """The log record of one asked question."""
    value = {
        "q": question,
        "answered": answered,
        "c": round(confidence, 4),
        "a": article_id,
        "t": title,
        "v": pack_vector(vector),
    }
    return Record(QUESTION_KIND, answer_id, json.dumps(value, ensure_ascii=False), user=user)


def purge_questions(store: Store, library: str, retention_days: int, now: datetime | None = None) -> int:
    """Remove logged questions older than the retention period; how many."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    return store.delete_records(library, QUESTION_KIND, before=stamp(cutoff))


# ---------------------------------------------------------------------- gaps


@dataclass(frozen=True, slots=True)
class Gap:
    """A group of similar questions the library did not answer (or answered badly)."""

    count: int
    declined: int
    downvoted: int
    examples: tuple[str, ...]
    closest_article: str | None
    last_asked: str
    questions: tuple[str, ...]


def find_gaps(
    questions: Sequence[LoggedQuestion],
    downvoted: Iterable[str],
    *,
    threshold: float = GAP_THRESHOLD,
    dim: int | None = None,
) -> list[Gap]:
    """Group the declined and 👎-voted questions by meaning, largest group first.

    A question joins the group whose first question is closest, when the cosine reaches
    ``threshold``; the newest questions are grouped first, so a group's examples are recent.
    Only vectors of size ``dim`` (the current model's) are grouped.
    """
    down = set(downvoted)
    items = [q for q in questions if not q.answered or q.id in down]
    items.sort(key=lambda q: q.at, reverse=True)
    if items:
        # Questions logged before a change of model have vectors of another size: group those
        # of the model's size ``dim`` (or, not given, of the size most questions have).
        size = dim or Counter(q.vector.shape[0] for q in items).most_common(1)[0][0]
        items = [q for q in items if q.vector.shape[0] == size]
    groups: list[list[LoggedQuestion]] = []
    # Each group's first question, one row each (filled as groups open: no copying per question).
    leaders = np.zeros((len(items), items[0].vector.shape[0] if items else 0), dtype=np.float32)
    for q in items:
        if groups:
            sims = leaders[: len(groups)] @ q.vector
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                groups[best].append(q)
                continue
        leaders[len(groups)] = q.vector
        groups.append([q])
    out = []
    for members in groups:
        examples = tuple(dict.fromkeys(m.question for m in members))[:3]
        titles = Counter(m.title for m in members if m.title)
        out.append(
            Gap(
                count=len(members),
                declined=sum(1 for m in members if not m.answered),
                downvoted=sum(1 for m in members if m.id in down),
                examples=examples,
                closest_article=titles.most_common(1)[0][0] if titles else None,
                last_asked=max(m.at for m in members),
                questions=tuple(m.question for m in members),
            )
        )
    out.sort(key=lambda g: g.last_asked, reverse=True)
    out.sort(key=lambda g: -g.count)  # stable: equal groups stay newest first
    return out


def gaps_csv(gaps: Sequence[Gap]) -> str:
    """The whole report as CSV: one row per question, with its group's figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["group", "group_size", "declined", "downvoted", "closest_article", "last_asked", "question"]
    )
    for n, gap in enumerate(gaps, start=1):
        for question in gap.questions:
            writer.writerow(
                [
                    n,
                    gap.count,
                    gap.declined,
                    gap.downvoted,
                    gap.closest_article or "",
                    gap.last_asked,
                    question,
                ]
            )
    return buffer.getvalue()


# ---------------------------------------------------------------------- pins


@dataclass(frozen=True, slots=True)
class Pin:
    """A passage moderators chose as the answer to a question (and to questions close to it)."""

    id: str
    question: str
    vector: NDArray[np.float32] = field(compare=False, repr=False)
    passage_id: int = 0
    article_id: str = ""
    article_key: str = ""
    text_md5: str = ""
    paragraph: int = 0
    title: str = ""
    by: str = ""
    at: str = ""

    def to_record(self) -> Record:
        """Its record (``user`` is the moderator who pinned it)."""
        value = {
            "q": self.question,
            "v": pack_vector(self.vector),
            "p": self.passage_id,
            "a": self.article_id,
            "k": self.article_key,
            "m": self.text_md5,
            "n": self.paragraph,
            "t": self.title,
        }
        return Record(PIN_KIND, self.id, json.dumps(value, ensure_ascii=False), user=self.by, at=self.at)

    @classmethod
    def of(cls, record: Record) -> Pin | None:
        """From its record; None for a damaged one."""
        try:
            d = json.loads(record.value)
            return cls(
                record.key,
                str(d["q"]),
                unpack_vector(d["v"]),
                int(d["p"]),
                str(d["a"]),
                str(d["k"]),
                str(d["m"]),
                int(d["n"]),
                str(d["t"]),
                record.user,
                record.at,
            )
        except (ValueError, KeyError, TypeError):
            return None


def pin_id(question: str, passage_md5: str) -> str:
    """A short stable id: pinning the same passage for the same question twice is one pin."""
    return hashlib.sha1(f"{' '.join(question.casefold().split())}\n{passage_md5}".encode()).hexdigest()[:10]


def passage_text_md5(text: str) -> str:
    """What a pin remembers of its passage, to know it again after a re-ingest."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()


class PinIndex:
    """A library's pins with their question vectors stacked once, for one product per question."""

    def __init__(self, pins: Sequence[Pin]) -> None:
        self.pins = list(pins)
        self._matrix = np.stack([p.vector for p in self.pins]) if self.pins else None

    def best(self, vector: NDArray[np.float32], threshold: float = PIN_THRESHOLD) -> Pin | None:
        """The pin whose question is closest to ``vector``, when at or above ``threshold``."""
        if self._matrix is None:
            return None
        sims = self._matrix @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(sims))
        return self.pins[best] if sims[best] >= threshold else None


# ---------------------------------------------------------------------- quotas


@dataclass(frozen=True, slots=True)
class Usage:
    """What a server added in the last 24 hours."""

    articles: int
    megabytes: float


def usage(store: Store, library: str, now: datetime | None = None) -> Usage:
    """Articles and megabytes added in the last 24 hours."""
    since = stamp((now or utcnow()) - timedelta(days=1))
    articles, size = 0, 0
    for record in store.records(library, USAGE_KIND, since=since):
        try:
            d = json.loads(record.value)
            articles += int(d["articles"])
            size += int(d["bytes"])
        except (ValueError, KeyError, TypeError):
            continue
    return Usage(articles, size / 1_000_000)


def check_ingest_quota(settings: ServerSettings, used: Usage, stored_articles: int) -> None:
    """Raise :class:`QuotaError` when the server may not add articles now."""
    if settings.max_articles and stored_articles >= settings.max_articles:
        raise QuotaError(
            f"This server's library is full: it holds {stored_articles:,} articles, the limit is "
            f"{settings.max_articles:,}. Forget some articles or ask a moderator to raise max_articles."
        )
    if settings.articles_per_day and used.articles >= settings.articles_per_day:
        raise QuotaError(
            f"This server has added {used.articles:,} articles in the last 24 hours, its daily limit. "
            "Try again tomorrow, or ask a moderator to raise articles_per_day."
        )
    if settings.megabytes_per_day and used.megabytes >= settings.megabytes_per_day:
        raise QuotaError(
            f"This server has added {used.megabytes:.1f} MB of text in the last 24 hours, its daily "
            "limit. Try again tomorrow, or ask a moderator to raise megabytes_per_day."
        )


def record_usage(store: Store, library: str, key: str, articles: int, size: int) -> None:
    """Count an ingest against the daily quotas (records older than a day are purged)."""
    now = utcnow()
    store.delete_records(library, USAGE_KIND, before=stamp(now - timedelta(days=2)))
    store.put_record(
        library, Record(USAGE_KIND, key, json.dumps({"articles": articles, "bytes": size}), at=stamp(now))
    )


# ---------------------------------------------------------------------- leaving


def mark_left(store: Store, library: str, now: datetime | None = None) -> None:
    """Note that the server removed the bot: its library is deleted after the grace period."""
    store.put_record(library, Record(LEFT_KIND, "left", "{}", at=stamp(now or utcnow())))


def clear_left(store: Store, library: str) -> bool:
    """The server added the bot again: keep its library. True if it had been marked."""
    return store.delete_records(library, LEFT_KIND) > 0


def expired_libraries(
    store: Store, libraries: Iterable[str], grace_days: int, now: datetime | None = None
) -> list[str]:
    """Libraries whose server removed the bot more than ``grace_days`` ago."""
    cutoff = stamp((now or utcnow()) - timedelta(days=grace_days))
    out = []
    for name in libraries:
        marks = store.records(name, LEFT_KIND)
        if marks and marks[-1].at < cutoff:
            out.append(name)
    return out


# ---------------------------------------------------------------------- a member's data


@dataclass(frozen=True, slots=True)
class MemberData:
    """What a library holds about one member."""

    questions: tuple[LoggedQuestion, ...]
    votes: tuple[Feedback, ...]


def vote_lines(votes: Sequence[Feedback]) -> list[str]:
    """Votes as short lines for people."""
    out = []
    for v in votes:
        reason = v.extra.get("reason")
        out.append(
            f"{v.created_at[:10]} {'👍' if v.vote > 0 else '👎'} “{v.question}”"
            + (f" ({reason})" if reason else "")
        )
    return out
