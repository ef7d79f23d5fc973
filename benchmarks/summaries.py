"""Score extractive summaries on the CNN/DailyMail dev pairs: Lead-3, ours, and the variants tried.

ROUGE-1, ROUGE-2 and ROUGE-Lsum F1 from the ``rouge-score`` package, stemmer on, Lsum over
newline-separated sentences on both sides (the highlights are one per line already). Every
method uses the same sentence splitter. Prints a Markdown table; progress goes to stderr.

    python benchmarks/summaries.py                # all 2,000 pairs (about 30 min on 2 cores)
    python benchmarks/summaries.py --limit 200    # a quick random subset (the file is shuffled)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embeddings import Analyzer, ChunkSpec, Document, IndexSpec, Ingester  # noqa: E402
from embeddings.sentences import split_sentences  # noqa: E402
from embeddings.summarize import DEFAULT_CONFIG, SummaryConfig, rank_sentences, summary_sentences  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "eval" / "cnndm" / "pairs.jsonl"
METRICS = ("rouge1", "rouge2", "rougeLsum")

Picker = Callable[[list[str], NDArray[np.float32], int], list[int]]


def lead(sentences: list[str], vectors: NDArray[np.float32], n: int) -> list[int]:
    """The first ``n`` sentences."""
    return list(range(min(n, len(sentences))))


def configured(config: SummaryConfig) -> Picker:
    """Our summarizer with ``config``."""
    return lambda sentences, vectors, n: rank_sentences(sentences, vectors, n, config)


def textrank(sentences: list[str], vectors: NDArray[np.float32], n: int) -> list[int]:
    """TextRank (Mihalcea & Tarau 2004) on the cosine graph: PageRank, damping 0.85."""
    if len(sentences) <= n:
        return list(range(len(sentences)))
    w = np.clip(vectors @ vectors.T, 0.0, None).astype(np.float64)
    np.fill_diagonal(w, 0.0)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    rank = np.full(len(sentences), 1.0 / len(sentences))
    for _ in range(50):
        rank = 0.15 / len(sentences) + 0.85 * (w.T @ rank)
    return sorted(int(i) for i in np.argsort(-rank, kind="stable")[:n])


def centroid(sentences: list[str], vectors: NDArray[np.float32], n: int) -> list[int]:
    """The sentences closest to the article's mean sentence vector."""
    if len(sentences) <= n:
        return list(range(len(sentences)))
    scores = vectors @ vectors.mean(axis=0)
    return sorted(int(i) for i in np.argsort(-scores, kind="stable")[:n])


def methods() -> dict[str, tuple[Picker, str | None]]:
    """Name -> (picker, the sentence vectors it uses: None, "fresh" (one pass per sentence) or
    "late" (as a late-chunked library stores them)). The first two rows are the ones compared."""
    d = DEFAULT_CONFIG
    fresh = "fresh"
    return {
        "Lead-3": (lead, None),
        "**ours**: directed centrality + position prior + MMR": (configured(d), fresh),
        "ours on a late-chunked library's stored sentence vectors (measured, not used)": (
            configured(d),
            "late",
        ),
        "ours without MMR": (configured(dataclasses.replace(d, diversity=0.0)), fresh),
        "ours without position prior": (configured(dataclasses.replace(d, position_weight=0.0)), fresh),
        "ours, undirected centrality": (configured(dataclasses.replace(d, backward=1.0)), fresh),
        "directed centrality alone (no prior, no MMR)": (
            configured(dataclasses.replace(d, position_weight=0.0, diversity=0.0, min_words=0)),
            fresh,
        ),
        "TextRank (PageRank on cosine graph)": (textrank, fresh),
        "centroid (closest to mean vector)": (centroid, fresh),
    }


def late_ingester(encoder: Any) -> Ingester:
    """An ingester that makes sentence vectors the way a default library does (late chunking,
    the model's window, one sentence of overlap); only its prepare and embed steps are used."""
    chunk = ChunkSpec(max_tokens=encoder.max_tokens, overlap=1)
    spec = IndexSpec(
        model=encoder.name,
        dim=encoder.dim,
        max_tokens=chunk.max_tokens,
        overlap=chunk.overlap,
        analyzer=Analyzer().name,
        sentence_vectors="late",
    )
    return Ingester(None, encoder, "summaries", spec, chunk, Analyzer())  # type: ignore[arg-type]


def bootstrap(diff: NDArray[np.float64], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the mean of paired per-article differences."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(rounds, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pairs.jsonl (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="score the first N pairs only")
    parser.add_argument("--sentences", type=int, default=3, metavar="N", help="summary length (default 3)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rouge_score import rouge_scorer

    from embeddings import SentenceTransformerEncoder

    if not args.data.exists():
        print(f"No data at {args.data}; pass --data PATH/pairs.jsonl.", file=sys.stderr)
        return 1
    with args.data.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = rows[: args.limit] if args.limit else rows

    encoder = SentenceTransformerEncoder()
    late = late_ingester(encoder)
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    table = methods()
    scores = {name: np.zeros((len(rows), 3)) for name in table}
    seconds = dict.fromkeys(table, 0.0)
    encode_seconds = split_seconds = late_seconds = 0.0
    stored = total = 0
    ours_name = list(table)[1]
    ours_picks: list[tuple[int, ...]] = []
    started = time.perf_counter()
    for k, row in enumerate(rows):
        article = row["article"]
        t = time.perf_counter()
        # Lead-3 takes the splitter's first sentences; the others choose among the same
        # candidates the bot uses (pieces that end like a sentence).
        lead_sentences = [" ".join(article[a:b].split()) for a, b in split_sentences(article)]
        candidates = [
            " ".join(article[a:b].split()) for a, b, _ in summary_sentences(article, [(0, len(article))])
        ]
        split_seconds += time.perf_counter() - t
        t = time.perf_counter()
        vectors = encoder.encode(candidates)
        encode_seconds += time.perf_counter() - t
        # What a late-chunked library holds: the sentence vectors its ingest stored, where a
        # candidate is one of the ingest's sentences, and a fresh pass for the rest. Measured to
        # decide whether Library.summarize may reuse them (it does not: see the README).
        t = time.perf_counter()
        write = late.prepare(
            Document(key="cnn", title="", text=article, paragraphs=((0, len(article)),)), "a", "-"
        )
        (write,) = late.embed([write], None)
        known = {(a, b): v for (_, a, b), v in zip(write.sentences, write.sentence_vectors, strict=True)}  # type: ignore[arg-type]
        spans = [(a, b) for a, b, _ in summary_sentences(article, [(0, len(article))])]
        late_vectors = np.array(
            [known.get(span, vectors[i]) for i, span in enumerate(spans)], dtype=np.float32
        )
        stored += sum(span in known for span in spans)
        total += len(spans)
        late_seconds += time.perf_counter() - t
        seen: dict[tuple[str | None, tuple[int, ...]], NDArray[np.float64]] = {}
        for name, (pick, kind) in table.items():
            sentences = candidates if kind else lead_sentences
            t = time.perf_counter()
            chosen = tuple(pick(sentences, late_vectors if kind == "late" else vectors, args.sentences))
            seconds[name] += time.perf_counter() - t
            key = (kind and "embedded", chosen)  # both vector kinds pick among the same candidates
            if key not in seen:  # variants often agree: score each pick once
                result = scorer.score(row["highlights"], "\n".join(sentences[i] for i in chosen))
                seen[key] = np.array([result[m].fmeasure for m in METRICS])
            scores[name][k] = seen[key]
            if name == ours_name:
                ours_picks.append(chosen)
        if (k + 1) % 100 == 0 or k + 1 == len(rows):
            elapsed = time.perf_counter() - started
            ours = scores[ours_name][: k + 1].mean(axis=0) * 100
            lead3 = scores["Lead-3"][: k + 1].mean(axis=0) * 100
            print(
                f"{k + 1}/{len(rows)} articles, {elapsed:.0f} s; Lead-3 {lead3.round(2)}, ours {ours.round(2)}",
                file=sys.stderr,
            )

    n = len(rows)
    per_ms = 1000.0 / n
    print(
        f"CNN/DailyMail dev, {n} pairs, {args.sentences} sentences, model {encoder.name} ({encoder.precision})."
    )
    print(
        f"Time per article: split {split_seconds * per_ms:.1f} ms, encode "
        f"{encode_seconds * per_ms:.0f} ms; the column adds the method's own time to what it uses."
    )
    print()
    print("| method | ROUGE-1 | ROUGE-2 | ROUGE-Lsum | ms / article |")
    print("|---|---:|---:|---:|---:|")
    for name, (_, kind) in table.items():
        r1, r2, rl = scores[name].mean(axis=0) * 100
        used = {None: 0.0, "fresh": encode_seconds, "late": late_seconds}[kind]
        ms = (split_seconds + seconds[name] + used) * per_ms
        print(f"| {name} | {r1:.2f} | {r2:.2f} | {rl:.2f} | {ms:.1f} |")
    diff = (scores[ours_name] - scores["Lead-3"]) * 100
    cis = [bootstrap(diff[:, i]) for i in range(3)]
    print()
    print(
        "ours − Lead-3, paired bootstrap 95 % CI: "
        + "; ".join(
            f"{label} {diff[:, i].mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"
            for i, (label, (lo, hi)) in enumerate(zip(("R-1", "R-2", "R-Lsum"), cis, strict=True))
        )
    )
    late_name = list(table)[2]
    diff = (scores[late_name] - scores[ours_name]) * 100
    print(
        "late-chunked sentence vectors − ours: "
        + "; ".join(
            f"{label} {diff[:, i].mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"
            for i, (label, (lo, hi)) in enumerate(
                zip(("R-1", "R-2", "R-Lsum"), [bootstrap(diff[:, i]) for i in range(3)], strict=True)
            )
        )
        + f" ({stored / max(total, 1):.0%} of the candidates had a stored vector; the time column "
        "of that row includes chunking and the passages' pass, which a library pays at ingest)"
    )
    lead_picks = sum(1 for p in ours_picks if p == tuple(range(len(p))))
    beyond = np.mean([sum(1 for i in p if i >= args.sentences) for p in ours_picks])
    print(
        f"ours picks exactly the lead in {lead_picks / n:.0%} of articles; on average "
        f"{beyond:.2f} of its {args.sentences} sentences come from after the first {args.sentences}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
