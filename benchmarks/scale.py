"""Scale benchmark: N synthetic passages in the local store and in PostgreSQL + pgvector.

    python -m benchmarks.scale --n 1000000 --fit path/to/articles.jsonl --json scale.json

For each store it reports build time, memory, disk, dense-search latency (p50/p99, k=10, one
query at a time through the Store API) and, for PostgreSQL, the HNSW index's recall@10 against
exact search for a sweep of ``hnsw.ef_search``. The local store searches exactly (numpy).

Vectors: 384-dimension, L2-normalised, drawn from a Gaussian with a realistic spectrum. With
``--fit FILE`` (a .jsonl of ``{"paragraphs": [...]}`` or ``{"text": ...}`` rows, or a .txt of
lines) the mean and covariance are fitted to real all-MiniLM-L6-v2 embeddings of that text;
without it a power-law spectrum (eigenvalue i ~ 1/i) with a random rotation and a common
direction stands in. Isotropic noise would make HNSW recall unrealistically bad (see
``shared/research/models-and-speed.md`` §4), and one Gaussian, however well fitted, has no
topics: it is the hard case. ``--topics SPREAD`` draws a topic mixture instead, every vector
one of the real embeddings plus SPREAD times noise of their covariance, as a corpus with many
passages per subject. Queries are fresh draws from the same distribution.

Passages are written through the Store API in batches of synthetic ``ArticleWrite``s (the model
is not run). Sentence vectors are left out (``--sentences`` adds that many per passage), and so
are BM25 postings unless ``--postings``: this measures the vector side. PostgreSQL is started
with ``pgserver`` in a temporary folder unless ``--pg-dsn`` names a server; the bulk path
(``restore`` in batches, then one ``CREATE INDEX CONCURRENTLY``) is what ``citebot migrate``
uses; ``--pg-load write`` inserts through the HNSW index instead, as ingests do.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embeddings.store import ArticleWrite, IndexSpec
from embeddings.store.local import LocalStore
from embeddings.types import ArticleInfo, Passage

DIM = 384
LIBRARY = "scale"
SPEC = IndexSpec(model="synthetic-384", dim=DIM, max_tokens=256, overlap=1, analyzer="en-v1-stem-sw112")


# ---------------------------------------------------------------------- synthetic vectors


@dataclass(frozen=True, slots=True)
class Spectrum:
    """A Gaussian in 384 dimensions, ``x = mean + z @ factor``, normalised afterwards.

    With ``anchors`` it is a mixture instead, one component per anchor (a real embedding):
    ``x = anchor + spread * z @ factor``. Real corpora are made of topics, each with many
    passages; a single Gaussian has no such structure and is the hard case for HNSW.
    """

    mean: NDArray[np.float64]
    factor: NDArray[np.float64]
    source: str
    anchors: NDArray[np.float64] | None = None
    spread: float = 0.0

    @classmethod
    def power_law(cls, seed: int = 0) -> Spectrum:
        """Eigenvalue i proportional to 1/i, a random rotation, and a shared mean direction."""
        rng = np.random.default_rng(seed)
        eig = 1.0 / np.arange(1, DIM + 1)
        rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        factor = np.sqrt(eig / eig.sum())[:, None] * rotation.T
        mean = rng.standard_normal(DIM)
        mean *= 0.6 / np.linalg.norm(mean)  # MiniLM passages share a direction: cosines ~0.1-0.3
        return cls(mean, factor, "power-law spectrum (eigenvalue i ~ 1/i), random rotation")

    @classmethod
    def fitted(cls, path: Path, spread: float | None = None, cache: Path | None = None) -> Spectrum:
        """Mean and covariance of real all-MiniLM-L6-v2 embeddings of the texts in ``path``.

        ``spread`` makes it a topic mixture around those embeddings; ``cache`` keeps the
        embeddings in a .npy file so a second run skips the model.
        """
        if cache is not None and cache.exists():
            vectors = np.load(cache).astype(np.float64)
        else:
            from embeddings.encoder import SentenceTransformerEncoder

            texts = _read_texts(path)
            if len(texts) < 200:
                raise SystemExit(f"{path}: {len(texts)} texts; need at least 200 to fit a covariance")
            t0 = time.perf_counter()
            vectors = SentenceTransformerEncoder().encode(texts, kind="passage").astype(np.float64)
            log(f"embedded {len(texts)} texts of {path.name} in {time.perf_counter() - t0:.0f} s")
            if cache is not None:
                np.save(cache, vectors.astype(np.float32))
        mean = vectors.mean(axis=0)
        cov = np.cov(vectors - mean, rowvar=False)
        eig, vecs = np.linalg.eigh(cov)
        factor = np.sqrt(np.clip(eig, 1e-8, None))[:, None] * vecs.T
        what = f"{len(vectors)} all-MiniLM-L6-v2 embeddings of {path.name}"
        if spread is None:
            return cls(mean, factor, f"Gaussian fitted to {what}")
        return cls(
            mean,
            factor,
            f"topic mixture: each vector one of {what} plus {spread} x noise of their covariance",
            anchors=vectors,
            spread=spread,
        )

    def sample(self, n: int, seed: int | tuple[int, ...]) -> NDArray[np.float32]:
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((n, DIM)) @ self.factor
        if self.anchors is None:
            x = self.mean + noise
        else:
            x = self.anchors[rng.integers(0, len(self.anchors), n)] + self.spread * noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)


def _read_texts(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        texts: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.extend(row.get("paragraphs") or [row.get("text", "")])
        return [t for t in texts if t.strip()]
    return [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


CHUNK = 50_000


def chunks(spectrum: Spectrum, n: int) -> Iterator[tuple[int, NDArray[np.float32]]]:
    """The N passage vectors, chunk by chunk, the same for every store (seeded per chunk)."""
    for start in range(0, n, CHUNK):
        yield start, spectrum.sample(min(CHUNK, n - start), seed=(1, start))


def exact_top(
    spectrum: Spectrum, n: int, queries: NDArray[np.float32], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-k passage ids (1-based, as the stores number them) and cosines of each query."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start, block in chunks(spectrum, n):
        scores = queries @ block.T
        ids = np.arange(start + 1, start + 1 + len(block), dtype=np.int64)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_ids = np.take_along_axis(all_ids, top, axis=1)
    return best_ids, best_scores


# ---------------------------------------------------------------------- synthetic articles

_WORDS = [
    "".join(chr(97 + (i * 7 + j * 13) % 26) for j in range(3 + i % 6)) for i in range(4000)
]  # a fixed pseudo-vocabulary


def articles(
    spectrum: Spectrum, n: int, per_article: int, text_chars: int, sentences: int, postings: bool, batch: int
) -> Iterator[list[ArticleWrite]]:
    """Synthetic articles in batches of about ``batch`` passages; passage ids are 1..N."""
    rng = np.random.default_rng(2)
    pending: list[ArticleWrite] = []
    size = 0
    for start, vectors in chunks(spectrum, n):
        svectors = spectrum.sample(len(vectors) * sentences, seed=(3, start)) if sentences else None
        for a0 in range(0, len(vectors), per_article):
            count = min(per_article, len(vectors) - a0)
            number = (start + a0) // per_article
            aid = f"a{number:07d}"
            texts = []
            for _ in range(count):
                words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), text_chars // 6)]
                texts.append(" ".join(words)[:text_chars])
            offsets = np.cumsum([0] + [len(t) + 2 for t in texts])
            passages = [
                Passage(aid, i, i + 1, int(offsets[i]), int(offsets[i]) + len(t), t, id=start + a0 + i + 1)
                for i, t in enumerate(texts)
            ]
            spans = [(i, p.start, p.end) for i, p in enumerate(passages) for _ in range(sentences)]
            rows = slice((a0) * sentences, (a0 + count) * sentences)
            pending.append(
                ArticleWrite(
                    info=ArticleInfo(
                        id=aid,
                        title=f"Article {number}",
                        byline=None,
                        date=None,
                        url=None,
                        source=None,
                        key=aid,
                        content_hash=f"{number:064x}",
                        passage_count=count,
                        paragraph_count=count,
                        added_at="2024-01-01T00:00:00+00:00",
                    ),
                    text="\n\n".join(texts),
                    paragraphs=tuple((p.start, p.end) for p in passages),
                    passages=passages,
                    vectors=vectors[a0 : a0 + count],
                    terms=[_counts(t) if postings else {} for t in texts],
                    sentences=spans,
                    sentence_vectors=None if svectors is None else svectors[rows],
                )
            )
            size += count
            if size >= batch:
                yield pending
                pending, size = [], 0
    if pending:
        yield pending


def _counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in text.split():
        out[w] = out.get(w, 0) + 1
    return out


# ---------------------------------------------------------------------- measuring


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def latencies(store: Any, queries: NDArray[np.float32], k: int, warmup: int = 20) -> tuple[list, list]:
    """Per-query seconds and results, after ``warmup`` untimed queries."""
    for q in queries[:warmup]:
        store.nearest(LIBRARY, q, k)[0]
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.nearest(LIBRARY, q, k)[0]
        times.append(time.perf_counter() - t0)
        results.append([pid for pid, _ in hits])
    return times, results


def recall(results: list[list[int]], exact: NDArray[np.int64], k: int) -> float:
    return float(
        np.mean([len(set(r[:k]) & set(e[:k].tolist())) / k for r, e in zip(results, exact, strict=True)])
    )


def pct(times: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000, p))


# ---------------------------------------------------------------------- the two stores


def bench_local(args: argparse.Namespace, spectrum: Spectrum, queries: NDArray, exact: NDArray) -> dict:
    root = Path(tempfile.mkdtemp(prefix="scale-local-", dir=args.work_dir))
    try:
        store = LocalStore(root)
        store.create(LIBRARY, SPEC)
        t0 = time.perf_counter()
        done = 0
        for batch in articles(
            spectrum,
            args.n,
            args.per_article,
            args.text_chars,
            args.sentences,
            args.postings,
            args.local_batch,
        ):
            store.write(LIBRARY, batch)
            done += sum(len(w.passages) for w in batch)
            log(f"local: {done:,} passages written ({time.perf_counter() - t0:.0f} s)")
        build = time.perf_counter() - t0
        store.close()
        del store
        gc.collect()
        before = rss_mb()
        fresh = LocalStore(root)  # a new process's view: loads and checks the matrix once
        t0 = time.perf_counter()
        fresh.nearest(LIBRARY, queries[0], args.k)
        first = time.perf_counter() - t0
        memory = rss_mb() - before
        times, results = latencies(fresh, queries, args.k)
        out = {
            "store": "local",
            "n": args.n,
            "build_s": round(build, 1),
            "first_query_s": round(first, 2),
            "memory_mb": round(memory),
            "disk_mb": round(folder_mb(root)),
            "p50_ms": round(pct(times, 50), 2),
            "p99_ms": round(pct(times, 99), 2),
            "recall_at_10": round(recall(results, exact, args.k), 4),
        }
        fresh.close()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def pg_server(args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
    """A DSN: ``--pg-dsn``, or a fresh pgserver tuned like a dedicated database host."""
    if args.pg_dsn:
        yield args.pg_dsn, None
        return
    import pgserver
    import psycopg

    keep: Path | None = getattr(args, "keep", None)
    folder = keep or Path(tempfile.mkdtemp(prefix="scale-pg-", dir=args.work_dir))
    server = pgserver.get_server(folder / "pgdata", cleanup_mode=None)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        # What a DBA would set on a host for this: buffers for the index, and enough
        # maintenance memory for the HNSW graph to be built in memory.
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.pg_shared_buffers}'")
        conn.execute(f"ALTER SYSTEM SET maintenance_work_mem = '{args.pg_maintenance_mem}'")
        conn.execute("ALTER SYSTEM SET max_parallel_maintenance_workers = 2")
    info = server.get_postmaster_info()
    ctl = ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(server.log)]
    pgserver.pg_ctl([*ctl, "restart"], pgdata=server.pgdata, user=server.system_user, timeout=120)
    try:
        yield server.get_uri(), server
    finally:
        with contextlib.suppress(Exception):
            pgserver.pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=120)
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def server_memory_mb(server: Any) -> float | None:
    """Proportional set size of the server's processes (shared buffers counted once)."""
    import psutil

    if server is None:
        return None
    # The postmaster's pid is the first line of postmaster.pid (pgserver's own record is stale
    # after the restart that applied shared_buffers).
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    family = [postmaster, *postmaster.children(recursive=True)]
    return sum(p.memory_full_info().pss for p in family) / 2**20


def bench_postgres(args: argparse.Namespace, spectrum: Spectrum, queries: NDArray, exact: NDArray) -> dict:
    import psycopg

    from embeddings.store.postgres import PostgresStore

    with pg_server(args) as (dsn, server):
        threshold = 0 if args.pg_load == "write" else 1
        store = PostgresStore(
            dsn, index_threshold=threshold, hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM libraries WHERE name = %s", (LIBRARY,))
        store.create(LIBRARY, SPEC)
        if args.pg_load == "write":  # the index exists from the start: every insert walks the graph
            store.restore(LIBRARY, [])
        t0 = time.perf_counter()
        done = 0
        for batch in articles(
            spectrum, args.n, args.per_article, args.text_chars, args.sentences, args.postings, args.pg_batch
        ):
            if args.pg_load == "write":
                store.write(LIBRARY, batch)
            else:
                store.restore(LIBRARY, batch, more=True)
            done += sum(len(w.passages) for w in batch)
            log(f"postgres: {done:,} passages loaded ({time.perf_counter() - t0:.0f} s)")
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.restore(LIBRARY, [])  # the last batch: builds the HNSW index (bulk path)
        index = time.perf_counter() - t1
        log(f"postgres: index built in {index:.0f} s")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE passages")
            sizes = dict(
                conn.execute(
                    "SELECT 'database', pg_database_size(current_database()) UNION ALL "
                    "SELECT 'passages', pg_table_size('passages') UNION ALL "
                    "SELECT 'hnsw', COALESCE(sum(pg_relation_size(c.oid)), 0) FROM pg_class c "
                    "WHERE c.relname LIKE 'passages_hnsw_%'"
                ).fetchall()
            )
        rows = []
        before = rss_mb()
        for ef in args.ef:
            store.ef_search = ef
            times, results = latencies(store, queries, args.k)
            rows.append(
                {
                    "ef_search": ef,
                    "p50_ms": round(pct(times, 50), 2),
                    "p99_ms": round(pct(times, 99), 2),
                    "recall_at_10": round(recall(results, exact, args.k), 4),
                }
            )
            log(f"postgres: ef_search {ef}: {rows[-1]}")
        out = {
            "store": "postgres",
            "n": args.n,
            "load": args.pg_load,
            "hnsw": f"m={args.hnsw_m}, ef_construction={args.hnsw_ef_construction}",
            "load_s": round(load, 1),
            "index_s": round(index, 1),
            "build_s": round(load + index, 1),
            "client_memory_mb": round(rss_mb() - before),
            "server_memory_mb": (lambda m: None if m is None else round(m))(server_memory_mb(server)),
            "shared_buffers": args.pg_shared_buffers,
            "disk_mb": round(sizes["database"] / 2**20),
            "table_mb": round(sizes["passages"] / 2**20),
            "hnsw_mb": round(sizes["hnsw"] / 2**20),
            "sweep": rows,
        }
        store.close()
        return out


def table(results: list[dict]) -> str:
    lines = [
        "| store | N | build | memory | disk | ef_search | p50 ms | p99 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["store"] == "local":
            lines.append(
                f"| local (numpy, exact) | {r['n']:,} | {r['build_s']:.0f} s | {r['memory_mb']:,} MB (process) "
                f"| {r['disk_mb']:,} MB | - | {r['p50_ms']} | {r['p99_ms']} | {r['recall_at_10']} |"
            )
        else:
            build = f"{r['build_s']:.0f} s ({r['load_s']:.0f} load + {r['index_s']:.0f} index)"
            mem = f"{r['server_memory_mb']:,} MB server PSS" if r["server_memory_mb"] is not None else "n/a"
            disk = f"{r['disk_mb']:,} MB (index {r['hnsw_mb']:,})"
            head = ["postgres (HNSW)", f"{r['n']:,}", build, mem, disk]
            for s in r["sweep"]:
                lines.append(
                    f"| {' | '.join(head)} | {s['ef_search']} | {s['p50_ms']} | {s['p99_ms']} "
                    f"| {s['recall_at_10']} |"
                )
                head = [""] * len(head)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="passages (default 100,000)")
    parser.add_argument("--stores", default="local,postgres", help="comma-separated: local, postgres")
    parser.add_argument("--fit", type=Path, help="texts to fit the vector distribution to (.jsonl or .txt)")
    parser.add_argument(
        "--topics",
        type=float,
        metavar="SPREAD",
        help="with --fit: a topic mixture around each real embedding, noise scaled by SPREAD",
    )
    parser.add_argument("--fit-cache", type=Path, help="a .npy to keep the --fit embeddings in")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--ef", type=lambda s: [int(x) for x in s.split(",")], default=[40, 100, 200, 400, 800]
    )
    parser.add_argument("--per-article", type=int, default=10, help="passages per synthetic article")
    parser.add_argument("--text-chars", type=int, default=400, help="characters of text per passage")
    parser.add_argument("--sentences", type=int, default=0, help="sentence vectors per passage")
    parser.add_argument("--postings", action="store_true", help="also write BM25 postings")
    parser.add_argument("--local-batch", type=int, default=100_000, help="passages per local write")
    parser.add_argument("--pg-batch", type=int, default=20_000, help="passages per PostgreSQL transaction")
    parser.add_argument("--pg-load", choices=("bulk", "write"), default="bulk")
    parser.add_argument("--pg-dsn", help="use this server instead of starting one with pgserver")
    parser.add_argument("--pg-shared-buffers", default="4GB")
    parser.add_argument("--pg-maintenance-mem", default="4GB")
    parser.add_argument("--work-dir", default=None, help="where the temporary stores go")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    spectrum = Spectrum.fitted(args.fit, args.topics, args.fit_cache) if args.fit else Spectrum.power_law()
    queries = spectrum.sample(args.queries, seed=9)
    t0 = time.perf_counter()
    exact, cosines = exact_top(spectrum, args.n, queries, args.k)
    log(
        f"exact top-{args.k} of {args.queries} queries over {args.n:,} passages: {time.perf_counter() - t0:.0f} s"
    )
    # How much neighbourhood structure the data has: the cosine of a question's nearest and
    # k-th nearest passage.
    structure = {
        "nearest_cosine_median": round(float(np.median(cosines[:, 0])), 3),
        "kth_cosine_median": round(float(np.median(cosines[:, -1])), 3),
    }
    log(json.dumps(structure))
    results = []
    for name in args.stores.split(","):
        bench = {"local": bench_local, "postgres": bench_postgres}[name.strip()]
        results.append(bench(args, spectrum, queries, exact))
        log(json.dumps(results[-1]))
        if args.json:
            args.json.write_text(
                json.dumps({"vectors": spectrum.source, **structure, "results": results}, indent=2)
            )
    print(
        f"Vectors: {spectrum.source}; {args.queries} queries, k={args.k}, {os.cpu_count()} CPUs; "
        f"median cosine of a query's nearest passage {structure['nearest_cosine_median']}, "
        f"of its {args.k}th nearest {structure['kth_cosine_median']}.\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
