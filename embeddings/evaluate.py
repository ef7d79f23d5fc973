"""Measure a library on a question set: retrieval, answering sentence, and declining.

A set is a folder with ``articles.jsonl`` (``{"id", "title", "paragraphs": [...]}`` or any
record :func:`~embeddings.articles.parse_record` accepts), ``questions.jsonl``
(``{"id", "question", "article_id", "paragraph", "answers": [...]}``, ``paragraph`` 0-based) and
optionally ``questions_unanswerable.jsonl`` (same fields, empty answers).

Mapping: a retrieved passage is a hit when it comes from the gold article and lies inside the
gold paragraph (passages never cross paragraphs, so this is exact).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .articles import parse_record
from .errors import InputError
from .library import Library
from .types import Answer, Document


@dataclass(frozen=True, slots=True)
class EvalSet:
    """Articles and questions of one evaluation set."""

    articles: list[dict[str, object]]
    questions: list[dict[str, object]]
    unanswerable: list[dict[str, object]] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
    return rows


def load_eval_set(folder: str | Path) -> EvalSet:
    """Read an evaluation folder; raise :class:`InputError` saying what is missing."""
    folder = Path(folder)
    articles, questions = folder / "articles.jsonl", folder / "questions.jsonl"
    for f in (articles, questions):
        if not f.is_file():
            raise InputError(f"{folder}: an evaluation set needs {f.name} (see `citebot eval --help`).")
    unanswerable = folder / "questions_unanswerable.jsonl"
    return EvalSet(
        _read_jsonl(articles),
        _read_jsonl(questions),
        _read_jsonl(unanswerable) if unanswerable.is_file() else [],
    )


def documents(articles: Iterable[dict[str, object]], source: str = "eval") -> list[Document]:
    """The set's articles as documents whose key is ``eval:<record id>``."""
    docs = []
    for record in articles:
        rid = record.get("id")
        if rid in (None, ""):
            raise InputError(f"{source}: every article needs an 'id'.")
        docs.append(parse_record(record, key=f"eval:{rid}", source=f"{source}#{rid}"))
    return docs


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True, slots=True)
class Outcome:
    """One question's result: rank of the gold paragraph (0 = not in the top 10) and more."""

    rank: int
    answered: bool
    confidence: float
    sentence_has_answer: bool
    seconds: float


def ask_all(
    library: Library,
    questions: Sequence[dict[str, object]],
    *,
    k: int = 10,
    progress: Callable[[int, int], None] | None = None,
    stage_times: dict[str, float] | None = None,
) -> list[Outcome]:
    """Ask every question and record where its gold paragraph ranked."""
    record_of = {a.id: a.key.removeprefix("eval:") for a in library.articles()}
    out: list[Outcome] = []
    for i, q in enumerate(questions):
        start = time.perf_counter()
        answer: Answer = library.ask(str(q["question"]), k=k, timings=stage_times)
        seconds = time.perf_counter() - start
        rank = 0
        for hit in answer.hits:
            if (
                record_of.get(hit.article.id) == q["article_id"]
                and hit.passage.paragraph - 1 == q["paragraph"]
            ):
                rank = hit.rank
                break
        has = False
        if answer.hits and answer.highlight is not None:
            a, b = answer.highlight
            sentence = _norm(answer.hits[0].passage.text[a:b])
            answers = q.get("answers") or []
            has = isinstance(answers, list) and any(_norm(str(ans)) in sentence for ans in answers)
        out.append(Outcome(rank, answer.answered, answer.confidence, has, seconds))
        if progress is not None:
            progress(i + 1, len(questions))
    return out


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    """Paragraph-level retrieval figures over answerable questions."""

    questions: int
    recall_at_1: float
    recall_at_5: float
    mrr_at_10: float
    sentence_rate: float  # bold sentence holds a gold answer, among questions whose top passage is right
    p50_ms: float
    p95_ms: float


def retrieval_report(outcomes: Sequence[Outcome]) -> RetrievalReport:
    """Recall@1, Recall@5, MRR@10, answering-sentence rate and latency percentiles."""
    ranks = np.array([o.rank for o in outcomes])
    top = [o for o in outcomes if o.rank == 1]
    ms = sorted(o.seconds * 1000 for o in outcomes)
    return RetrievalReport(
        questions=len(outcomes),
        recall_at_1=float(np.mean(ranks == 1)),
        recall_at_5=float(np.mean((ranks >= 1) & (ranks <= 5))),
        mrr_at_10=float(np.mean(np.where((ranks >= 1) & (ranks <= 10), 1.0 / np.maximum(ranks, 1), 0.0))),
        sentence_rate=float(np.mean([o.sentence_has_answer for o in top])) if top else 0.0,
        p50_ms=statistics.median(ms) if ms else 0.0,
        p95_ms=ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else 0.0,
    )


@dataclass(frozen=True, slots=True)
class DeclineReport:
    """How well the library says "not here": in-library vs out-of-library questions."""

    threshold: float
    in_library: int
    out_of_library: int
    declined_out: float  # share of out-of-library questions declined (want high)
    declined_in: float  # share of in-library questions wrongly declined (want low)
    auroc: float
    curve: list[tuple[float, float, float]]  # (threshold, declined_out, declined_in)
    # The lowest threshold at which at most AUTO_REPLY_OUT_ANSWERED of the out-of-library
    # questions are answered, and the shares answered there (the forum auto-reply's trade-off).
    auto_threshold: float = 1.0
    auto_answered_out: float = 0.0
    auto_answered_in: float = 0.0


AUTO_REPLY_OUT_ANSWERED = 0.02
"""The share of out-of-library questions a forum auto-reply may answer (wrongly): at most 2 %."""


def threshold_for(negative: Sequence[float], answered_at_most: float) -> float:
    """The lowest confidence threshold at which at most ``answered_at_most`` of ``negative``
    (out-of-library confidences) reach it, to three decimals (rounded up)."""
    if not negative:
        return 0.0
    ranked = np.sort(np.asarray(negative, dtype=np.float64))[::-1]
    allowed = int(np.floor(answered_at_most * len(ranked)))  # this many may be answered
    if allowed >= len(ranked):
        return 0.0
    # Just above the (allowed+1)-th highest confidence, so that one is declined.
    return float(min(1.0, np.ceil((ranked[allowed] + 1e-9) * 1000) / 1000))


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    if not positive or not negative:
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = len(positive)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * len(negative)))


def decline_report(inside: Sequence[Outcome], outside: Sequence[Outcome], threshold: float) -> DeclineReport:
    """Declining figures at ``threshold`` and over a sweep of thresholds."""
    pos = [o.confidence for o in inside]
    neg = [o.confidence for o in outside]
    curve = []
    for t in np.linspace(0.0, 1.0, 41):
        curve.append((float(t), float(np.mean(np.array(neg) < t)), float(np.mean(np.array(pos) < t))))
    auto = threshold_for(neg, AUTO_REPLY_OUT_ANSWERED)
    return DeclineReport(
        auto_threshold=auto,
        auto_answered_out=float(np.mean(np.array(neg) >= auto)) if neg else 0.0,
        auto_answered_in=float(np.mean(np.array(pos) >= auto)) if pos else 0.0,
        threshold=threshold,
        in_library=len(inside),
        out_of_library=len(outside),
        declined_out=float(np.mean([not o.answered for o in outside])) if outside else 0.0,
        declined_in=float(np.mean([not o.answered for o in inside])) if inside else 0.0,
        auroc=auroc(pos, neg),
        curve=curve,
    )


def split_articles(
    articles: Sequence[dict[str, object]],
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """A fixed half split: articles at even positions form the library, odd ones stay out."""
    return list(articles[0::2]), list(articles[1::2])


def spread(items: Sequence[dict[str, object]], limit: int) -> list[dict[str, object]]:
    """At most ``limit`` items taken evenly across the list (all of them when ``limit`` is 0)."""
    if not limit or limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Everything ``citebot eval`` measures."""

    articles: int
    retrieval: RetrievalReport
    decline: DeclineReport
    unanswerable_declined: float | None
    unanswerable: int
    ingest_seconds: float
    passages: int
    stage_ms: dict[str, float]
    outcomes: list[Outcome]


Progress = Callable[[str], Callable[[int, int], None] | None]
"""Given a stage label, returns a ``progress(done, total)`` callback (or None)."""


def run_eval(
    data: EvalSet,
    make_library: Callable[[str], Library],
    *,
    limit: int = 0,
    progress: Progress | None = None,
    source: str = "eval",
) -> EvalResult:
    """Build a library of all articles and one of a fixed half, ask, and score.

    ``make_library(name)`` returns an empty :class:`Library` to fill (the caller picks store,
    encoder and settings).
    """

    def bar(label: str) -> Callable[[int, int], None] | None:
        return progress(label) if progress is not None else None

    questions = spread(data.questions, limit)
    full = make_library("eval-all")
    start = time.perf_counter()
    full.ingest(documents(data.articles, source), progress=bar("Ingesting"))
    ingest_seconds = time.perf_counter() - start
    passages = sum(a.passage_count for a in full.articles())
    stages: dict[str, float] = {}
    outcomes = ask_all(full, questions, progress=bar("Asking"), stage_times=stages)
    inside_articles, _ = split_articles(data.articles)
    inside_ids = {a["id"] for a in inside_articles}
    half = make_library("eval-half")
    half.ingest(documents(inside_articles, source), progress=bar("Ingesting half"))
    half_outcomes = ask_all(half, questions, progress=bar("Asking half"))
    inside = [o for o, q in zip(half_outcomes, questions, strict=True) if q["article_id"] in inside_ids]
    outside = [o for o, q in zip(half_outcomes, questions, strict=True) if q["article_id"] not in inside_ids]
    unanswerable = spread([q for q in data.unanswerable if q["article_id"] in inside_ids], limit)
    un = ask_all(half, unanswerable, progress=bar("Unanswerable")) if unanswerable else []
    return EvalResult(
        articles=len(data.articles),
        retrieval=retrieval_report(outcomes),
        decline=decline_report(inside, outside, half.config.abstain_threshold),
        unanswerable_declined=float(np.mean([not o.answered for o in un])) if un else None,
        unanswerable=len(un),
        ingest_seconds=ingest_seconds,
        passages=passages,
        stage_ms={k: 1000 * v / max(1, len(questions)) for k, v in stages.items()},
        outcomes=outcomes,
    )


def format_result(result: EvalResult, *, curve: bool = False) -> str:
    """The report as aligned text lines."""
    r, d = result.retrieval, result.decline
    rows = [
        ("articles / passages", f"{result.articles} / {result.passages}"),
        ("questions", f"{r.questions}"),
        ("Recall@1", f"{r.recall_at_1:.3f}"),
        ("Recall@5", f"{r.recall_at_5:.3f}"),
        ("MRR@10", f"{r.mrr_at_10:.3f}"),
        ("bold sentence holds a gold answer (top passage right)", f"{r.sentence_rate:.3f}"),
        ("latency p50 / p95 (ms)", f"{r.p50_ms:.1f} / {r.p95_ms:.1f}"),
        ("latency by stage (ms, mean)", ", ".join(f"{k} {v:.1f}" for k, v in result.stage_ms.items())),
        (
            f"declining at threshold {d.threshold:.2f}: out-of-library declined",
            f"{d.declined_out:.3f} of {d.out_of_library}",
        ),
        ("in-library wrongly declined", f"{d.declined_in:.3f} of {d.in_library}"),
        ("AUROC (in- vs out-of-library confidence)", f"{d.auroc:.3f}"),
        (
            f"threshold answering at most {AUTO_REPLY_OUT_ANSWERED:.0%} of out-of-library questions",
            f"{d.auto_threshold:.3f}: out-of-library answered {d.auto_answered_out:.3f}, "
            f"in-library answered {d.auto_answered_in:.3f}",
        ),
    ]
    if result.unanswerable_declined is not None:
        rows.append(
            (
                "adversarial unanswerable questions declined",
                f"{result.unanswerable_declined:.3f} of {result.unanswerable}",
            )
        )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if curve:
        lines += ["", "threshold  out-of-library declined  in-library declined"]
        lines += [f"{t:9.3f}  {o:23.3f}  {i:19.3f}" for t, o, i in d.curve]
    return "\n".join(lines)


# ---------------------------------------------------------------------- a set of real documents

DOCUMENT_QUESTIONS = "questions.jsonl"
"""In a document set: ``{"id", "file", "question", "expect"}`` per line, next to the files."""


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """One question of a document set: where the expected words ranked, and what was said."""

    id: str
    file: str
    rank: int  # 1-based rank of the first passage holding the expected words; 0 = not in the top k
    answered: bool
    bold_holds_expected: bool


def is_document_set(folder: Path) -> bool:
    """A folder of real files with questions naming them (rather than articles.jsonl records)."""
    return (folder / DOCUMENT_QUESTIONS).is_file() and not (folder / "articles.jsonl").is_file()


def load_document_questions(folder: Path) -> list[dict[str, str]]:
    """The questions of a document set, each checked to name a file of the set."""
    questions = [{str(k): str(v) for k, v in q.items()} for q in _read_jsonl(folder / DOCUMENT_QUESTIONS)]
    for q in questions:
        missing = [k for k in ("id", "file", "question", "expect") if not q.get(k)]
        if missing:
            raise InputError(f"{folder / DOCUMENT_QUESTIONS}: question {q.get('id', '?')} lacks {missing}.")
        if not (folder / q["file"]).is_file():
            raise InputError(
                f"{folder / DOCUMENT_QUESTIONS}: question {q['id']} names {q['file']}, not here."
            )
    return questions


def ask_document_questions(
    library: Library, questions: Sequence[dict[str, str]], k: int = 5
) -> list[DocumentResult]:
    """Ask each question of a document set of a library that holds its files.

    A passage is right when it comes from the question's file and holds the expected words
    (whitespace aside): the words a reader would point at, robust to how the file is split.
    """
    by_source = {Path(a.source or "").name: a.id for a in library.articles()}
    out: list[DocumentResult] = []
    for q in questions:
        answer = library.ask(q["question"], k=k)
        want = " ".join(q["expect"].split())
        rank = next(
            (
                i
                for i, hit in enumerate(answer.hits, start=1)
                if hit.article.id == by_source.get(q["file"]) and want in " ".join(hit.passage.text.split())
            ),
            0,
        )
        bold = bool(answer.sentence and want in " ".join(answer.sentence.split()))
        out.append(DocumentResult(q["id"], q["file"], rank, answer.answered, bold))
    return out


def format_document_results(results: Sequence[DocumentResult]) -> str:
    """The figures of a document set, then each question that missed."""
    n = len(results) or 1
    rows = [
        ("questions", f"{len(results)}"),
        ("Recall@1", f"{sum(r.rank == 1 for r in results) / n:.3f}"),
        ("Recall@5", f"{sum(0 < r.rank <= 5 for r in results) / n:.3f}"),
        ("answered (not declined)", f"{sum(r.answered for r in results) / n:.3f}"),
        ("bold sentence holds the expected words", f"{sum(r.bold_holds_expected for r in results) / n:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    misses = [r for r in results if r.rank != 1]
    if misses:
        lines += ["", "not first: " + ", ".join(f"{r.id} (rank {r.rank or '>5'})" for r in misses)]
    return "\n".join(lines)
