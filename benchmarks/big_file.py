"""One big single-article file: time and peak memory of an ingest, and the size limit's refusal.

    python benchmarks/big_file.py [--data ../shared/eval/squad-dev] [--model-mb 1] [--big-mb 50]

Writes plain-text files of one article each, made of SQuAD-dev paragraphs hard-wrapped at 72
columns (so cleaning re-flows them), and ingests each in a fresh child process, so that the
peak resident memory (``ru_maxrss``) is that run's own:

* ``--model-mb`` MB with the real model, beside the bare ``model.encode`` of the same passages
  and sentences measured in the same run (the ratio is what travels between machines);
* ``--big-mb`` MB at the default article limit: refused, with its message (time and memory
  of reading, cleaning and refusing);
* ``--big-mb`` MB with the limit lifted and everything real except the model's forward pass
  (the real tokenizer chunks, a hashing encoder stands in for the network): the pipeline's own
  time and memory at that size. The model's share is extrapolated from the measured
  throughput and printed as such.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embeddings.library import DEFAULT_MAX_ARTICLE_CHARS  # noqa: E402


def write_article(data: Path, megabytes: float, path: Path) -> None:
    """One article of about ``megabytes`` MB of hard-wrapped prose from the SQuAD articles."""
    size = int(megabytes * 1_000_000)
    articles = [json.loads(line) for line in (data / "articles.jsonl").open(encoding="utf-8")]
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < size:
            for article in articles:
                for paragraph in article["paragraphs"]:
                    block = textwrap.fill(paragraph, 72) + "\n\n"
                    out.write(block)
                    written += len(block.encode())
                    if written >= size:
                        return


class TokenizerOnly:
    """The real model's tokenizer and shape, hashing instead of the network's forward pass."""

    def __init__(self) -> None:
        from embeddings import HashEncoder, SentenceTransformerEncoder

        self.real = SentenceTransformerEncoder()
        self.hashing = HashEncoder(dim=self.real.dim, max_tokens=self.real.max_tokens)

    @property
    def name(self) -> str:
        return self.real.name

    @property
    def dim(self) -> int:
        return self.real.dim

    @property
    def max_tokens(self) -> int:
        return self.real.max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.real.count_tokens(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.real.token_offsets(text)

    def encode(
        self, texts: Sequence[str], *, kind: str = "passage", progress: Any = None
    ) -> NDArray[np.float32]:
        vectors = self.hashing.encode(texts, kind=kind)
        if progress is not None:
            progress(len(texts))
        return vectors


def child(args: argparse.Namespace) -> None:
    """One measured run; prints a JSON line."""
    from bot.services import quiet_model_loading
    from embeddings import Library, LocalStore, SentenceTransformerEncoder

    quiet_model_loading()
    encoder: Any = SentenceTransformerEncoder() if args.encoder == "model" else TokenizerOnly()
    limit = DEFAULT_MAX_ARTICLE_CHARS if args.limit == "default" else None
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        library = Library(store, encoder, "big", max_article_chars=limit)
        start = time.perf_counter()
        if args.bare:
            # The reference: the model alone on exactly what the ingest embeds.
            from embeddings.articles import load_file
            from embeddings.chunking import ChunkSpec, chunk_document, sentence_spans

            (doc,) = load_file(Path(args.file))
            spans = sentence_spans(doc)  # type: ignore[arg-type]
            passages = chunk_document(
                doc,  # type: ignore[arg-type]
                ChunkSpec(encoder.max_tokens),
                encoder.count_tokens,
                encoder.token_offsets,
                sentences=spans,
            )
            texts = [p.text for p in passages] + sorted({doc.text[a:b] for _, a, b in spans})  # type: ignore[union-attr]
            start = time.perf_counter()
            encoder.encode(texts)
            outcome: dict[str, Any] = {"passages": len(passages), "texts": len(texts)}
        else:
            report = library.ingest_paths([args.file])
            (result,) = report.results
            outcome = {
                "status": result.status,
                "reason": result.reason,
                "passages": result.article.passage_count if result.article else 0,
            }
        seconds = time.perf_counter() - start
        store.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, **outcome}))


def run(file: Path, encoder: str, limit: str, bare: bool = False) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(file), "--encoder", encoder, "--limit", limit]
    if bare:
        command.append("--bare")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"  {file.name} {encoder} limit={limit} bare={bare}: {result}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--model-mb", type=float, default=1.0, help="size of the real-model run")
    parser.add_argument("--big-mb", type=float, default=50.0, help="size of the big-file runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", choices=["model", "tokenizer"], help=argparse.SUPPRESS)
    parser.add_argument("--limit", choices=["default", "none"], help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.file = args.child
        child(args)
        return

    with tempfile.TemporaryDirectory() as folder:
        small, at_limit, big = (Path(folder) / f"{name}.txt" for name in ("small", "at_limit", "big"))
        write_article(args.data, args.model_mb, small)
        # Just under the default limit (characters; this prose is ASCII, one byte each).
        write_article(args.data, DEFAULT_MAX_ARTICLE_CHARS * 0.99 / 1e6, at_limit)
        write_article(args.data, args.big_mb, big)
        rows = [
            (
                f"{args.model_mb:g} MB, bare `model.encode` (reference)",
                run(small, "model", "none", bare=True),
            ),
            (f"{args.model_mb:g} MB, `ingest` with the model", run(small, "model", "none")),
            (f"{args.big_mb:g} MB, `ingest` at the default limit", run(big, "model", "default")),
            ("9.9 MB (the default limit), `ingest`, no forward pass", run(at_limit, "tokenizer", "default")),
            (f"{args.big_mb:g} MB, `ingest`, limit lifted, no forward pass", run(big, "tokenizer", "none")),
        ]
    print("| run | time (s) | peak memory (MB) | passages | outcome |")
    print("|---|---:|---:|---:|---|")
    for label, r in rows:
        outcome = r.get("status") or f"{r['texts']} texts embedded"
        if r.get("reason"):
            outcome += f": {r['reason']}"
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['passages']} | {outcome} |")
    bare, ingest, _, _, pipeline = (r for _, r in rows)
    per_text = bare["seconds"] / bare["texts"]
    print()
    print(f"ingest / bare encode at {args.model_mb:g} MB: {ingest['seconds'] / bare['seconds']:.2f}×")
    texts_big = bare["texts"] / bare["passages"] * pipeline["passages"]
    print(
        f"{args.big_mb:g} MB with the model, extrapolated: about {pipeline['seconds'] + per_text * texts_big:.0f} s "
        f"({pipeline['seconds']:.0f} s pipeline + ~{per_text * texts_big:.0f} s of encoding at the measured rate)"
    )


if __name__ == "__main__":
    main()
