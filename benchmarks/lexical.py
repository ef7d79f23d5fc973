"""The lexical stage on SQuAD-dev: citebot's postings blocks against row-by-row BM25.

    python -m benchmarks.lexical [--data ../shared/eval/squad-dev] [--limit N]

Builds the SQuAD-dev library with the default settings, then ranks every question's passages
by BM25 twice: through ``BM25.evidence`` (postings read as packed blocks per term, scored with
numpy: what ``Library.ask`` uses) and the way citebot scored before the blocks existed (one
row per posting from the postings table, each passage's length joined from its row, summed
posting by posting in Python). Prints paragraph-level Recall@1/5 and MRR@10 of both, the mean
time per question, how many questions get a different top 10, and the largest score difference.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.retrieval import metrics, ranks_from_lists
from bot.config import Settings
from bot.services import make_library, quiet_model_loading
from embeddings import LocalStore, SentenceTransformerEncoder
from embeddings.evaluate import documents, load_eval_set, spread
from embeddings.lexical import BM25

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rows_bm25(db: sqlite3.Connection, terms: list[str], bm25: BM25) -> dict[int, float]:
    """BM25 from the postings table, one posting at a time (the algorithm before the blocks)."""
    n, total = db.execute("SELECT count(*), total(length) FROM passages").fetchone()
    unique = list(dict.fromkeys(terms))
    if not unique or not n:
        return {}
    marks = ",".join("?" * len(unique))
    df = dict(
        db.execute(f"SELECT term, count(*) FROM postings WHERE term IN ({marks}) GROUP BY term", unique)
    )
    idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in unique}
    rows = db.execute(
        "SELECT t.term, t.passage_id, t.tf, p.length FROM postings t JOIN passages p ON p.id = t.passage_id "
        f"WHERE t.term IN ({marks}) ORDER BY t.term, t.passage_id",
        unique,
    )
    norm = total / n
    k1, b = bm25.k1, bm25.b
    scores: dict[int, float] = {}
    for term, pid, tf, length in rows:
        scores[pid] = scores.get(pid, 0.0) + idf[term] * tf * (k1 + 1) / (
            tf + k1 * (1 - b + b * length / norm)
        )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--limit", type=int, default=0, help="ask only N questions (spread over the set)")
    args = parser.parse_args()

    quiet_model_loading()
    settings = Settings.load(env_file=None)
    encoder = SentenceTransformerEncoder(settings.model, precision=settings.precision)
    data = load_eval_set(args.data)
    questions = spread(data.questions, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        lib = make_library(settings, store, encoder, "lexical")
        lib.ingest(documents(data.articles, str(args.data)))
        record = {a.id: a.key.removeprefix("eval:") for a in lib.articles()}
        by_para: dict[tuple[str, int], set[int]] = {}
        for a in lib.articles():
            for p in store.article_passages("lexical", a.id):
                by_para.setdefault((record[p.article_id], p.paragraph - 1), set()).add(p.id)
        gold = [by_para.get((str(q["article_id"]), int(str(q["paragraph"]))), set()) for q in questions]
        db = sqlite3.connect(store.library_dir("lexical") / "index.sqlite3")
        bm25 = BM25()
        blocks_lists, rows_lists = [], []
        blocks_s = rows_s = 0.0
        differ, worst = 0, 0.0
        for q in questions:
            terms = lib.analyzer.terms(str(q["question"]))
            t0 = time.perf_counter()
            evidence = bm25.evidence(store, "lexical", terms)
            top = evidence.top(10)
            t1 = time.perf_counter()
            plain = rows_bm25(db, terms, bm25)
            reference = sorted(plain.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            t2 = time.perf_counter()
            blocks_s += t1 - t0
            rows_s += t2 - t1
            blocks_lists.append([pid for pid, _ in top])
            rows_lists.append([pid for pid, _ in reference])
            differ += blocks_lists[-1] != rows_lists[-1]
            got = dict(zip(evidence.ids.tolist(), evidence.scores.tolist(), strict=True))
            if got.keys() != plain.keys():
                differ += 1
            worst = max([worst, *(abs(got.get(pid, 0.0) - s) for pid, s in plain.items())])
    n = len(questions)
    print(f"# Lexical stage on {args.data.name}: {len(data.articles)} articles, {n} questions\n")
    print("| BM25 over citebot's passages | Recall@1 | Recall@5 | MRR@10 | ms / question |")
    print("|---|---|---|---|---|")
    for name, lists, seconds in (
        ("row by row from the postings table (before)", rows_lists, rows_s),
        ("postings blocks + numpy (`BM25.evidence`)", blocks_lists, blocks_s),
    ):
        r1, r5, mrr = metrics(ranks_from_lists(lists, gold))
        print(f"| {name} | {r1:.3f} | {r5:.3f} | {mrr:.3f} | {1000 * seconds / n:.2f} |")
    print(
        f"\nquestions whose top 10 or scored passages differ: {differ} of {n}; largest score difference {worst:.2e}"
    )
    print(f"mean of {np.mean([len(x) for x in blocks_lists]):.1f} ranked passages per question")


if __name__ == "__main__":
    main()
