"""Retrieval benchmark on SQuAD-dev: citebot against BM25, dense-only and RRF baselines.

    python benchmarks/retrieval.py [--data ../shared/eval/squad-dev] [--limit N]

Prints Markdown tables:
1. quality: paragraph-level Recall@1, Recall@5, MRR@10 for BM25 (bm25s), dense MiniLM,
   equal-weight reciprocal-rank fusion, and citebot, all over citebot's own passages;
2. citebot's answering-sentence rate, declining figures and latency by stage;
3. speed: citebot's ingest against bare ``model.encode`` of the same texts, and bf16 against
   fp32 throughput, each pair measured in this run (the machine is shared, so ratios matter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Settings  # noqa: E402
from bot.services import make_library, quiet_model_loading  # noqa: E402
from embeddings import LocalStore, SentenceTransformerEncoder  # noqa: E402
from embeddings.evaluate import ask_all, documents, format_result, load_eval_set, run_eval, spread  # noqa: E402


def ranks_from_lists(lists: list[list[int]], gold: list[set[int]]) -> np.ndarray:
    """Rank (1-based) of the first gold passage in each list, 0 when absent from the top 10."""
    out = []
    for ranked, g in zip(lists, gold, strict=True):
        r = 0
        for i, pid in enumerate(ranked[:10], start=1):
            if pid in g:
                r = i
                break
        out.append(r)
    return np.array(out)


def metrics(ranks: np.ndarray) -> tuple[float, float, float]:
    """Recall@1, Recall@5, MRR@10."""
    r1 = float(np.mean(ranks == 1))
    r5 = float(np.mean((ranks >= 1) & (ranks <= 5)))
    mrr = float(np.mean(np.where(ranks >= 1, 1.0 / np.maximum(ranks, 1), 0.0)))
    return r1, r5, mrr


def rrf(a: list[int], b: list[int], k: float = 60.0) -> list[int]:
    """Equal-weight reciprocal-rank fusion of two rankings."""
    score: dict[int, float] = {}
    for ranked in (a, b):
        for i, pid in enumerate(ranked):
            score[pid] = score.get(pid, 0.0) + 1.0 / (k + i + 1)
    return sorted(score, key=lambda p: (-score[p], p))


def throughput(encoder: SentenceTransformerEncoder, texts: list[str]) -> float:
    """Texts per second through the encoder's own batching."""
    start = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--limit", type=int, default=0, help="ask only N questions (spread over the set)")
    parser.add_argument("--speed-sample", type=int, default=400, help="passages for the bf16/fp32 comparison")
    args = parser.parse_args()

    quiet_model_loading()
    settings = Settings.load(env_file=None)
    encoder = SentenceTransformerEncoder(settings.model, precision=settings.precision)
    data = load_eval_set(args.data)
    questions = spread(data.questions, args.limit)
    print(f"# Retrieval on {args.data.name}: {len(data.articles)} articles, {len(questions)} questions")
    print(f"model {encoder.name}, precision {encoder.precision}, {os.cpu_count()} CPUs\n")

    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        result = run_eval(
            data,
            lambda name: make_library(settings, store, encoder, name),
            limit=args.limit,
            source=str(args.data),
        )
        # The same articles with sentence vectors made the other way: one pass per sentence when
        # the setting is late chunking (the default), pooled from the passage's pass otherwise.
        mode = settings.sentence_vectors
        other_mode = "separate" if mode == "late" else "late"
        other = make_library(replace(settings, sentence_vectors=other_mode), store, encoder, "eval-other")
        start = time.perf_counter()
        other.ingest(documents(data.articles, str(args.data)))
        other_seconds = time.perf_counter() - start
        other_outcomes = ask_all(other, questions)
        lib = make_library(settings, store, encoder, "eval-all")
        infos = lib.articles()
        record = {a.id: a.key.removeprefix("eval:") for a in infos}
        passages = []
        sentence_texts = []
        for a in infos:
            mine = store.article_passages("eval-all", a.id)
            passages.extend(mine)
            text = store.get_article("eval-all", a.id).text  # type: ignore[union-attr]
            spans = dict.fromkeys((r.start, r.end) for r in store.sentences("eval-all", [p.id for p in mine]))
            sentence_texts.extend(text[x:y] for x, y in spans)

        # Gold: every passage inside the gold paragraph counts.
        by_para: dict[tuple[str, int], set[int]] = {}
        for p in passages:
            by_para.setdefault((record[p.article_id], p.paragraph - 1), set()).add(p.id)
        gold = [by_para.get((str(q["article_id"]), int(q["paragraph"])), set()) for q in questions]

        # Baselines over the same passages.
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        ids = [p.id for p in passages]
        bm = bm25s.BM25()
        bm.index(
            bm25s.tokenize([p.text for p in passages], stopwords="en", stemmer=stemmer, show_progress=False),
            show_progress=False,
        )
        qtok = bm25s.tokenize(
            [str(q["question"]) for q in questions], stopwords="en", stemmer=stemmer, show_progress=False
        )
        docs, _ = bm.retrieve(qtok, k=100, show_progress=False, n_threads=1)
        bm25_lists = [[ids[j] for j in row] for row in docs]
        qvecs = encoder.encode([str(q["question"]) for q in questions], kind="query")
        dense_lists = [[pid for pid, _ in store.nearest("eval-all", v, 100)[0]] for v in qvecs]
        rrf_lists = [rrf(a, b) for a, b in zip(bm25_lists, dense_lists, strict=True)]
        ours = np.array([o.rank for o in result.outcomes])

        print("## Quality (paragraph level: a hit is a passage inside the gold paragraph)\n")
        print("| method | R@1 | R@5 | MRR@10 |")
        print("|---|---|---|---|")
        for name, ranks in (
            ("BM25 (bm25s, Snowball stems, English stop words)", ranks_from_lists(bm25_lists, gold)),
            ("dense all-MiniLM-L6-v2 (passage vectors)", ranks_from_lists(dense_lists, gold)),
            ("hybrid, equal-weight RRF (k=60) of the two", ranks_from_lists(rrf_lists, gold)),
            (f"**citebot** (sentence vectors {mode})", ours),
            (
                f"citebot, CITEBOT_SENTENCE_VECTORS={other_mode}",
                np.array([o.rank for o in other_outcomes]),
            ),
        ):
            r1, r5, mrr = metrics(ranks)
            print(f"| {name} | {r1:.3f} | {r5:.3f} | {mrr:.3f} |")

        print("\n## citebot eval\n")
        print("```")
        print(format_result(result, curve=True))
        print("```\n")

        # Speed: our ingest against the bare model on the same texts, in this run.
        texts = [p.text for p in passages]
        start = time.perf_counter()
        encoder.model.encode(texts, batch_size=32, show_progress_bar=False)
        bare_passages = time.perf_counter() - start
        start = time.perf_counter()
        encoder.model.encode(sentence_texts, batch_size=32, show_progress_bar=False)
        bare_sentences = time.perf_counter() - start
        sample = texts[: args.speed_sample]
        fp32 = SentenceTransformerEncoder(settings.model, precision="fp32")
        fp32_rate = statistics.median(throughput(fp32, sample) for _ in range(2))
        bf16_rate = (
            statistics.median(throughput(encoder, sample) for _ in range(2))
            if encoder.precision == "bf16"
            else None
        )

        print("## Speed (same run)\n")
        print("| what | seconds | per passage (ms) | ratio |")
        print("|---|---|---|---|")
        n = len(passages)
        print(
            f"| bare `model.encode`, {n} passages | {bare_passages:.1f} | {1000 * bare_passages / n:.1f} | 1.00 |"
        )
        print(
            f"| bare `model.encode`, passages + {len(sentence_texts)} sentences | {bare_passages + bare_sentences:.1f} | "
            f"{1000 * (bare_passages + bare_sentences) / n:.1f} | {(bare_passages + bare_sentences) / bare_passages:.2f} |"
        )
        print(
            f"| **citebot ingest** (clean, chunk, embed, store; sentence vectors {mode}) | {result.ingest_seconds:.1f} | "
            f"{1000 * result.ingest_seconds / n:.1f} | {result.ingest_seconds / bare_passages:.2f} |"
        )
        print(
            f"| citebot ingest, sentence vectors {other_mode} | {other_seconds:.1f} | "
            f"{1000 * other_seconds / n:.1f} | {other_seconds / bare_passages:.2f} |"
        )
        other_bold = float(np.mean([o.sentence_has_answer for o in other_outcomes if o.rank == 1]))
        print(
            f"\nbold sentence holds a gold answer (top passage right), sentence vectors {other_mode}: {other_bold:.3f}"
        )
        print("\n| precision | passages/s | ratio |")
        print("|---|---|---|")
        print(f"| fp32 | {fp32_rate:.1f} | 1.00 |")
        if bf16_rate is not None:
            print(f"| bf16 (auto on this CPU) | {bf16_rate:.1f} | {bf16_rate / fp32_rate:.2f} |")
        else:
            print("| bf16 | not supported natively on this CPU | - |")
        store.close()


if __name__ == "__main__":
    main()
