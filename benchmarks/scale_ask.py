"""The whole question at scale: ``Library.ask`` over N passages with their sentences and
postings, in the local store and in PostgreSQL + pgvector.

    python -m benchmarks.scale_ask --n 100000 [--stores local,postgres] [--questions 200]

What is built is what an ingest writes, through the Store API: passages, each passage's
sentences with their vectors, and the word postings of citebot's own analyzer. The text is
prose: each passage is 3-6 real sentences drawn from the SQuAD-dev and CNN/DailyMail articles in
``../shared/eval``, so word statistics look like prose. The vectors are real: every pool sentence
is embedded once with the configured model (cached with ``--cache``); a sentence's stored vector
is its real embedding plus a little noise (so reused sentences are not identical), and a
passage's vector is the normalised mean of its sentences' (the model itself is not run per
passage: 1M passages would take days on two cores).

Then real SQuAD-dev questions are asked one at a time through ``Library.ask`` (all stages:
embedding the question, BM25, passage and sentence vectors, rerank, answer): once right after
the library is opened (caches as a restart leaves them), and again after ``--warmup`` other
questions (a busy server's steady state). It prints p50/p95/p99 of both, each stage's mean and
p95, build time, disk, and the resident memory the library adds to the serving process (and,
for PostgreSQL, the server's).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.scale import folder_mb, log, pct, pg_server, rss_mb, server_memory_mb
from bot.config import Settings
from bot.services import make_encoder
from embeddings import MAX_QUESTION_CHARS, Library, LocalStore
from embeddings.chunking import ChunkSpec
from embeddings.encoder import Encoder
from embeddings.lexical import BM25, Analyzer
from embeddings.sentences import split_sentences
from embeddings.store import ArticleWrite, Store
from embeddings.types import ArticleInfo, Passage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "eval"
LIBRARY = "scale-ask"
PER_ARTICLE = 10


def sentence_pool(limit: int, seed: int = 0) -> list[str]:
    """Real sentences from the evaluation articles (SQuAD-dev paragraphs, CNN/DailyMail stories)."""
    texts: list[str] = []
    for path in (SHARED / "squad-dev" / "articles.jsonl", SHARED / "cnndm" / "pairs.jsonl"):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.extend(row.get("paragraphs") or [row.get("article") or row.get("text") or ""])
    pool: list[str] = []
    for text in texts:
        for a, b in split_sentences(text):
            sentence = " ".join(text[a:b].split())
            if 40 <= len(sentence) <= 300:
                pool.append(sentence)
    random.Random(seed).shuffle(pool)
    return pool[:limit]


def pool_vectors(encoder: Encoder, pool: list[str], cache: Path | None) -> NDArray[np.float32]:
    if cache is not None and cache.is_file():
        vectors = np.load(cache)
        if vectors.shape[0] == len(pool):
            return vectors
    t0 = time.perf_counter()
    vectors = encoder.encode(pool, kind="passage")
    log(f"embedded {len(pool):,} pool sentences in {time.perf_counter() - t0:.0f} s")
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def articles(
    n: int, pool: list[str], vectors: NDArray[np.float32], analyzer: Analyzer, batch: int
) -> Iterator[list[ArticleWrite]]:
    """Synthetic articles of real sentences, in batches of about ``batch`` passages."""
    rng = np.random.default_rng(7)
    pending: list[ArticleWrite] = []
    size = 0
    dim = vectors.shape[1]
    for a0 in range(0, n, PER_ARTICLE):
        count = min(PER_ARTICLE, n - a0)
        aid = f"s{a0 // PER_ARTICLE:08d}"
        paragraphs: list[str] = []
        chosen: list[NDArray[np.int64]] = []
        for _ in range(count):
            picks = rng.integers(0, len(pool), int(rng.integers(3, 7)))
            chosen.append(picks)
            paragraphs.append(" ".join(pool[i] for i in picks))
        text = "\n\n".join(paragraphs)
        passages, spans, svecs, pvecs, terms = [], [], [], [], []
        at = 0
        for ordinal, (paragraph, picks) in enumerate(zip(paragraphs, chosen, strict=True)):
            pid = a0 + ordinal + 1  # passage ids 1..N, as the bulk path keeps them
            passages.append(Passage(aid, ordinal, ordinal + 1, at, at + len(paragraph), paragraph, id=pid))
            noisy = vectors[picks] + rng.normal(0, 0.02, (len(picks), dim)).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            mean = noisy.mean(axis=0)
            pvecs.append(mean / np.linalg.norm(mean))
            s = at
            for i in picks:
                spans.append((ordinal, s, s + len(pool[i])))
                s += len(pool[i]) + 1
            svecs.append(noisy)
            terms.append(analyzer.counts(paragraph))
            at += len(paragraph) + 2
        info = ArticleInfo(
            id=aid,
            title=f"Synthetic article {a0 // PER_ARTICLE}",
            byline=None,
            date=None,
            url=None,
            source=None,
            key=aid,
            content_hash=f"{a0:064x}",
            passage_count=count,
            paragraph_count=count,
            added_at="2026-01-01T00:00:00+00:00",
        )
        pending.append(
            ArticleWrite(
                info=info,
                text=text,
                paragraphs=tuple((p.start, p.end) for p in passages),
                passages=passages,
                vectors=np.stack(pvecs).astype(np.float32),
                terms=terms,
                sentences=spans,
                sentence_vectors=np.concatenate(svecs).astype(np.float32),
            )
        )
        size += count
        if size >= batch:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending


def questions(limit: int, warmup: int = 0) -> tuple[list[str], list[str]]:
    """``limit`` SQuAD-dev questions spread over the set, and ``warmup`` others (none of them
    among the first) spread the same way."""
    rows = [
        json.loads(x)
        for x in (SHARED / "squad-dev" / "questions.jsonl").read_text().splitlines()
        if x.strip()
    ]
    texts = [str(r["question"]) for r in rows]
    timed = texts[:: max(1, len(texts) // limit)][:limit]
    chosen = set(timed)
    others = [t for t in dict.fromkeys(texts) if t not in chosen]
    return timed, others[:: max(1, len(others) // warmup)][:warmup] if warmup else []


def ask_times(library: Library, qs: list[str], warm: list[str]) -> dict[str, Any]:
    """Times ``qs`` twice: right after the library is opened (the caches as a restart leaves
    them: every question reads what no question read before it), and again after the ``warm``
    questions (other questions, so the second pass is not answered from what the first read):
    a busy server's steady state. The second pass is the headline figure."""
    cold = _timed(library, qs)
    for q in warm:
        library.ask(q)
    out = _timed(library, qs) if warm else cold
    out["cold_p50_ms"], out["cold_p95_ms"] = cold["p50_ms"], cold["p95_ms"]
    out["warmup_questions"] = len(warm)
    return out


def _timed(library: Library, qs: list[str]) -> dict[str, Any]:
    times: list[float] = []
    stages: dict[str, list[float]] = {}
    for q in qs:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        library.ask(q, timings=timings)
        times.append(time.perf_counter() - t0)
        for stage, seconds in timings.items():
            stages.setdefault(stage, []).append(seconds)
    return {
        "p50_ms": round(pct(times, 50), 1),
        "p95_ms": round(pct(times, 95), 1),
        "p99_ms": round(pct(times, 99), 1),
        "stages_ms": {k: round(1000 * sum(v) / len(qs), 1) for k, v in stages.items()},
        # Which stage makes the slow questions slow: each stage's own 95th percentile.
        "stages_p95_ms": {k: round(pct(v, 95), 1) for k, v in stages.items()},
    }


def long_questions(pool: list[str], analyzer: Analyzer, count: int = 20) -> list[str]:
    """Questions of the longest kind accepted (1,000 characters) made of the library's commonest
    words: the costliest a member can make BM25 (each word's postings are read and scored)."""
    frequency: dict[str, int] = {}
    for sentence in pool:
        for word in {w.lower() for w in sentence.split() if w.isalpha()}:
            if analyzer.terms(word):
                frequency[word] = frequency.get(word, 0) + 1
    common = sorted(frequency, key=lambda w: -frequency[w])[:400]
    rng = random.Random(3)
    return [" ".join(rng.sample(common, 200))[:MAX_QUESTION_CHARS] for _ in range(count)]


def long_question_times(library: Library, qs: list[str]) -> dict[str, float]:
    """p95 of the long questions, scored by their 32 rarest terms (the default) and by all."""
    out: dict[str, float] = {}
    default = library.retriever.bm25
    for label, bm25 in (("long_p95_ms", default), ("long_all_terms_p95_ms", BM25(max_terms=10**6))):
        library.retriever.bm25 = bm25
        times = []
        for q in qs:
            t0 = time.perf_counter()
            library.ask(q)
            times.append(time.perf_counter() - t0)
        out[label] = round(pct(times, 95), 1)
    library.retriever.bm25 = default
    return out


def write_times(
    store: Store, pool: list[str], vectors: NDArray[np.float32], analyzer: Analyzer
) -> dict[str, float]:
    """Seconds to add one more article (10 passages) to the built library, then to remove it:
    what an ingest or a /forget costs a community at this size."""
    (extra,) = next(articles(PER_ARTICLE, pool, vectors, analyzer, PER_ARTICLE))
    info = replace(extra.info, id="extra", key="extra", content_hash="e" * 64)
    extra = replace(extra, info=info, passages=[replace(p, article_id="extra") for p in extra.passages])
    t0 = time.perf_counter()
    store.write(LIBRARY, [extra])
    t1 = time.perf_counter()
    store.write(LIBRARY, [], ["extra"])
    return {"add_article_s": round(t1 - t0, 2), "remove_article_s": round(time.perf_counter() - t1, 2)}


def build(
    store: Store,
    library: Library,
    args: argparse.Namespace,
    pool: list[str],
    vectors: NDArray[np.float32],
    batch: int,
    bulk: bool,
) -> float:
    store.create(LIBRARY, library.spec)
    t0 = time.perf_counter()
    done = 0
    for writes in articles(args.n, pool, vectors, library.analyzer, batch):
        if bulk:
            store.restore(LIBRARY, writes, more=True)  # type: ignore[call-arg]
        else:
            store.write(LIBRARY, writes)
        done += sum(len(w.passages) for w in writes)
        log(f"{LIBRARY}: {done:,} passages ({time.perf_counter() - t0:.0f} s)")
    if bulk:
        store.restore(LIBRARY, [])  # the bulk path's end: the HNSW indexes are built
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--stores", default="local,postgres")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--pool", type=int, default=30_000, help="real sentences to build passages from")
    parser.add_argument("--cache", type=Path, help="a .npy to keep the pool's embeddings in")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--pg-dsn")
    parser.add_argument("--pg-shared-buffers", default="4GB")
    parser.add_argument("--pg-maintenance-mem", default="4GB")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="other questions asked between the first (cold) and the second (timed) pass",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="PostgreSQL only: keep the server's data here, and reuse a library built there "
        "before (a 1M build takes hours; its questions can then be timed again)",
    )
    args = parser.parse_args()

    settings = Settings.load(env_file=None)
    encoder = make_encoder(settings)
    pool = sentence_pool(args.pool)
    vectors = pool_vectors(encoder, pool, args.cache)
    qs, warm = questions(args.questions, args.warmup)
    results = []
    for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
        gc.collect()
        if kind == "local":
            root = Path(tempfile.mkdtemp(prefix="scale-ask-", dir=args.work_dir))
            store: Any = LocalStore(root)
            library = Library(store, encoder, LIBRARY, chunk=ChunkSpec(max_tokens=encoder.max_tokens))
            seconds = build(store, library, args, pool, vectors, 100_000, bulk=False)
            store.close()
            gc.collect()
            before = rss_mb()
            store = LocalStore(root)  # a serving process's view
            library = Library(store, encoder, LIBRARY)
            timing = ask_times(library, qs, warm)
            timing.update(long_question_times(library, long_questions(pool, library.analyzer)))
            timing.update(write_times(store, pool, vectors, library.analyzer))
            results.append(
                {
                    "store": "local",
                    "n": args.n,
                    "build_s": round(seconds),
                    "disk_mb": round(folder_mb(root)),
                    "memory_mb": round(rss_mb() - before),
                    **timing,
                }
            )
            store.close()
            shutil.rmtree(root, ignore_errors=True)
        else:
            from embeddings.store.postgres import PostgresStore

            with pg_server(args) as (dsn, server):
                store = PostgresStore(dsn, index_threshold=1)
                library = Library(store, encoder, LIBRARY)
                built = args.keep / f"built-{args.n}.json" if args.keep else None
                if built is not None and built.exists():
                    seconds = json.loads(built.read_text())["build_s"]
                    log(f"{LIBRARY}: reusing the library built in {args.keep}")
                else:
                    seconds = build(store, library, args, pool, vectors, 20_000, bulk=True)
                    if built is not None:
                        built.write_text(json.dumps({"build_s": seconds}))
                import psycopg

                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
                    (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[misc]
                before = rss_mb()
                timing = ask_times(library, qs, warm)
                timing.update(long_question_times(library, long_questions(pool, library.analyzer)))
                timing.update(write_times(store, pool, vectors, library.analyzer))
                results.append(
                    {
                        "store": "postgres",
                        "n": args.n,
                        "build_s": round(seconds),
                        "disk_mb": round(size / 2**20),
                        "memory_mb": round(rss_mb() - before),
                        "server_memory_mb": (lambda m: None if m is None else round(m))(
                            server_memory_mb(server)
                        ),
                        **timing,
                    }
                )
                store.close()
        log(json.dumps(results[-1]))
    print(
        "| store | passages | build | disk | memory | p50 / p95 / p99 ms | right after opening, p50 / p95 "
        "| mean / p95 ms by stage "
        "| 1,000-character question of common words, p95 (all terms) | add / remove an article |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        stages = ", ".join(f"{k} {v} / {r['stages_p95_ms'][k]}" for k, v in r["stages_ms"].items())
        memory = f"{r['memory_mb']:,} MB" + (
            f" (server {r['server_memory_mb']:,} MB)" if r.get("server_memory_mb") else ""
        )
        print(
            f"| {r['store']} | {r['n']:,} | {r['build_s']:,} s | {r['disk_mb']:,} MB | {memory} "
            f"| {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} | {r['cold_p50_ms']} / {r['cold_p95_ms']} "
            f"| {stages} "
            f"| {r['long_p95_ms']} ms ({r['long_all_terms_p95_ms']} ms) "
            f"| {r['add_article_s']} / {r['remove_article_s']} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
