"""Recorded answers and votes: what an answer's buttons, follow-ups and 👍/👎 need later.

An answer that was given is recorded under an id the front end chooses (the Discord bot uses
the snowflake of the interaction or message that asked). The record keeps the question, the
passages that matched and the highlight, so "show the full passage", "other sources", a
follow-up question and a vote all work later, in another process too. A record belongs to one
library and is tied to its article: when the article changes or is forgotten, the record goes
with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from .store import Feedback, Store, check_library_name
from .types import Answer, Hit

ANSWER_KIND = "answer"
"""Store cache kind of answer records."""
VOTE_KIND = "vote"
"""Store cache kind of "this voter already voted on this answer" markers."""


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """What is kept of a given answer, stored as compact JSON in the library's cache."""

    question: str
    article_id: str
    passage_ids: tuple[int, ...]
    scores: tuple[float, ...]
    highlight: tuple[int, int] | None
    sentence: str | None
    confidence: float

    @classmethod
    def of(cls, answer: Answer) -> AnswerRecord:
        """The record of an answered question."""
        if answer.best is None:
            raise ValueError("only an answered question has a record")
        return cls(
            question=answer.question,
            article_id=answer.best.article.id,
            passage_ids=tuple(h.passage.id for h in answer.hits),
            scores=tuple(round(h.score, 6) for h in answer.hits),
            highlight=answer.highlight,
            sentence=answer.sentence,
            confidence=answer.confidence,
        )

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(
            {
                "q": self.question,
                "a": self.article_id,
                "p": list(self.passage_ids),
                "s": list(self.scores),
                "h": list(self.highlight) if self.highlight else None,
                "t": self.sentence,
                "c": self.confidence,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> AnswerRecord:
        """Parse :meth:`to_json` output."""
        d = json.loads(raw)
        highlight = d["h"]
        return cls(
            question=d["q"],
            article_id=d["a"],
            passage_ids=tuple(int(p) for p in d["p"]),
            scores=tuple(float(s) for s in d["s"]),
            highlight=(int(highlight[0]), int(highlight[1])) if highlight else None,
            sentence=d["t"],
            confidence=float(d["c"]),
        )


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """A recorded answer with its passages as they are stored now, in their original order."""

    id: str
    record: AnswerRecord
    hits: tuple[Hit, ...]

    @property
    def best(self) -> Hit:
        """The passage that was quoted as the answer."""
        return self.hits[0]


def list_votes(
    store: Store, libraries: Sequence[str] | None = None, limit: int = 100
) -> list[tuple[str, Feedback]]:
    """The newest ``limit`` votes first, as ``(library, vote)``, from ``libraries`` (None: all).

    Reads the store only: no model is needed to list votes.
    """
    names = store.libraries() if libraries is None else [check_library_name(n) for n in libraries]
    rows = [(name, f) for name in names for f in store.list_feedback(name, limit)]
    rows.sort(key=lambda row: row[1].created_at, reverse=True)
    return rows[:limit]


__all__ = ["ANSWER_KIND", "VOTE_KIND", "AnswerRecord", "RecordedAnswer", "list_votes"]
