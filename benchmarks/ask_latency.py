"""Per-question cost of ``Library.ask``: store calls and latency, on a SQuAD-dev library.

    python benchmarks/ask_latency.py [--data ../shared/eval/squad-dev] [--keep DIR] [--limit N]

Builds (or reuses, with ``--keep``) a local library of the SQuAD-dev articles, then asks
``--limit`` questions one at a time, twice over (the first pass warms caches and is not timed).
Prints a Markdown table: store calls per question (a wrapper counts every call on the store,
by method), latency p50/p95/mean in ms, and the model's own query encoding time measured in
the same run as the reference, since the machine is shared and only ratios travel.

The library's format did not change with the store-call work, so the same ``--keep`` folder can
be read by an older checkout of citebot to measure "before" on identical data.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Settings  # noqa: E402
from bot.services import make_library, quiet_model_loading  # noqa: E402
from bot.testing import CountingStore  # noqa: E402
from embeddings import LocalStore, SentenceTransformerEncoder  # noqa: E402
from embeddings.evaluate import documents, load_eval_set, spread  # noqa: E402

LIBRARY = "squad-dev"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--keep", type=Path, required=True, help="folder of the library (built if missing)")
    parser.add_argument("--limit", type=int, default=1000, help="questions to ask (spread over the set)")
    args = parser.parse_args()

    quiet_model_loading()
    data = load_eval_set(args.data)
    encoder = SentenceTransformerEncoder()
    settings = Settings.load(data_dir=args.keep)
    raw = LocalStore(args.keep)
    store = CountingStore(raw)
    library = make_library(settings, store, encoder, LIBRARY)  # type: ignore[arg-type]
    if not library.exists():
        t0 = time.perf_counter()
        library.ingest(documents(data.articles))
        print(f"built {LIBRARY} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    questions = [str(q["question"]) for q in spread(data.questions, args.limit)]

    for q in questions:  # warm-up: page cache, the matrix in memory, the spec check
        library.ask(q)
    store.calls.clear()
    latencies: list[float] = []
    stages: dict[str, float] = {}
    for q in questions:
        t0 = time.perf_counter()
        library.ask(q, timings=stages)
        latencies.append((time.perf_counter() - t0) * 1000)
    calls = dict(store.calls)
    encode: list[float] = []
    for q in questions:
        t0 = time.perf_counter()
        encoder.encode([q], kind="query")
        encode.append((time.perf_counter() - t0) * 1000)
    n = len(questions)
    per_call = ", ".join(f"{name} {count / n:g}" for name, count in sorted(calls.items()))
    print("| questions | store calls / question | ask p50 ms | ask p95 ms | ask mean ms | encode p50 ms |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {n} | {sum(calls.values()) / n:g} ({per_call}) | {percentile(latencies, 0.5):.1f} | "
        f"{percentile(latencies, 0.95):.1f} | {statistics.fmean(latencies):.1f} | {percentile(encode, 0.5):.1f} |"
    )
    print("\nmean ms per stage: " + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in stages.items()))
    raw.close()


if __name__ == "__main__":
    main()
