"""Pins on SQuAD-dev: how much a moderator's pin helps the questions like it, and how often a
pin fires for a question about something else.

For every paragraph with at least two questions, the first question is "pinned" to the gold
paragraph's passage (as a moderator would from "Other sources"). The paragraph's other questions
are the ones a pin should help; every question about another paragraph is one a pin must leave
alone. For a sweep of cosine thresholds it prints, from the question vectors:

* fires (same paragraph): share of the other questions whose closest pin is their paragraph's
  and reaches the threshold;
* false pins: share of all questions whose closest pin (at or above the threshold) belongs to
  another paragraph. Target: at most 1 %.

Then, at the default threshold (:data:`embeddings.community.PIN_THRESHOLD`), it asks a spread
of the helped questions through ``Library.ask`` with and without the pins stored, and prints
paragraph-level R@1, R@5 and MRR@10 of both, and the false-pin rate measured the same way.

    python benchmarks/pins.py [--data ../shared/eval/squad-dev] [--limit 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paraphrase import paraphrase  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.services import make_encoder, make_library  # noqa: E402
from embeddings import LocalStore, community  # noqa: E402
from embeddings.community import Pin  # noqa: E402
from embeddings.evaluate import ask_all, documents, load_eval_set, retrieval_report, spread  # noqa: E402

FEW_PINS = 50
"""A server's moderators pin tens of answers, not thousands: the false-pin rate is also shown
for this many pins (a fixed random choice)."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--limit", type=int, default=2000, help="helped questions asked through Library.ask")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the library in this folder")
    args = parser.parse_args()

    data = load_eval_set(args.data)
    settings = Settings.load(env_file=None)
    encoder = make_encoder(settings)
    tmp = tempfile.TemporaryDirectory(prefix="citebot-pins-")
    store = LocalStore(args.keep or tmp.name)
    library = make_library(settings, store, encoder, "pins")
    if not library.exists():
        t0 = time.perf_counter()
        library.ingest(documents(data.articles, str(args.data)))
        print(f"library: {len(data.articles)} articles in {time.perf_counter() - t0:.0f} s")

    by_paragraph: dict[tuple[str, int], list[dict[str, object]]] = defaultdict(list)
    for q in data.questions:
        by_paragraph[(str(q["article_id"]), int(q["paragraph"]))].append(q)  # type: ignore[call-overload]
    pinned = {key: qs[0] for key, qs in by_paragraph.items() if len(qs) >= 2}
    pinned_ids = {str(q["id"]) for q in pinned.values()}
    helped = [q for key, qs in by_paragraph.items() if key in pinned for q in qs[1:]]

    # Every question's vector, as Library.ask computes it (a pin keeps float16 of its own).
    t0 = time.perf_counter()
    texts = [str(q["question"]) for q in data.questions]
    vectors = encoder.encode(texts, kind="query")
    print(f"encoded {len(texts):,} questions in {time.perf_counter() - t0:.0f} s")
    index = {str(q["id"]): i for i, q in enumerate(data.questions)}
    keys = list(pinned)
    pin_vectors = np.stack(
        [community.unpack_vector(community.pack_vector(vectors[index[str(pinned[k]["id"])]])) for k in keys]
    )
    paragraph_of = [(str(q["article_id"]), int(q["paragraph"])) for q in data.questions]  # type: ignore[call-overload]
    sims = vectors @ pin_vectors.T
    best = sims.argmax(axis=1)
    best_sim = sims[np.arange(len(best)), best]
    others = [i for i, q in enumerate(data.questions) if str(q["id"]) not in pinned_ids]
    helped_idx = [index[str(q["id"])] for q in helped]
    others_arr = np.array(others)
    own = np.array([keys[best[i]] == paragraph_of[i] for i in range(len(best))])

    # The pinned question asked again in other words (the case a pin is for).
    rng = random.Random(0)
    texts_by_paragraph = {
        (str(a["id"]), i): str(t)
        for a in data.articles
        for i, t in enumerate(a.get("paragraphs") or [])  # type: ignore[arg-type]
    }
    reasked = [
        {**q, "question": paraphrase(str(q["question"]), texts_by_paragraph.get(key, ""), rng)}
        for key, q in pinned.items()
    ]
    reasked_vectors = encoder.encode([str(q["question"]) for q in reasked], kind="query")
    re_sims = reasked_vectors @ pin_vectors.T
    re_best = re_sims.argmax(axis=1)
    re_best_sim = re_sims[np.arange(len(re_best)), re_best]
    re_own = np.array([keys[b] == k for b, k in zip(re_best, keys, strict=True)])

    few = sorted(random.Random(1).sample(range(len(keys)), min(FEW_PINS, len(keys))))
    few_sims = vectors[others_arr] @ pin_vectors[few].T
    few_best = few_sims.argmax(axis=1)
    few_best_sim = few_sims[np.arange(len(few_best)), few_best]
    few_false = np.array([keys[few[b]] != paragraph_of[i] for b, i in zip(few_best, others, strict=True)])

    print(
        f"\n{len(keys):,} pins; {len(helped):,} other questions on pinned paragraphs; "
        f"{len(others):,} questions not pinned"
    )
    print(
        "threshold  re-asked: fires  other questions, same paragraph: fires  "
        f"false pins ({len(keys):,} pins)  false pins ({len(few)} pins)"
    )
    lowest = None
    for t in np.round(np.arange(0.60, 0.961, 0.01), 2):
        refires = float(np.mean(re_own & (re_best_sim >= t)))
        fires = float(np.mean(own[helped_idx] & (best_sim[helped_idx] >= t)))
        false = float(np.mean(~own[others_arr] & (best_sim[others_arr] >= t)))
        false_few = float(np.mean(few_false & (few_best_sim >= t)))
        if lowest is None and false <= 0.01:
            lowest = float(t)
        if round(t * 100) % 5 == 0 or 0.84 <= t <= 0.92:
            print(f"{t:9.2f}  {refires:15.3f}  {fires:38.3f}  {false:22.4f}  {false_few:17.4f}")
    print(f"lowest threshold with at most 1 % false pins ({len(keys):,} pins): {lowest}")

    # The real thing at the default threshold: pins stored, questions asked through Library.ask.
    record_of = {a.key.removeprefix("eval:"): a for a in library.articles()}
    by_key: dict[tuple[str, int], int] = {}
    for (article, paragraph), q in pinned.items():
        info = record_of[article]
        passages = [p for p in store.article_passages(library.name, info.id) if p.paragraph == paragraph + 1]
        answers = [str(a) for a in q.get("answers") or []]  # type: ignore[union-attr]
        chosen = next(
            (p for p in passages if any(a in p.text for a in answers)), passages[0] if passages else None
        )
        if chosen is not None:
            by_key[(article, paragraph)] = chosen.id
    store.delete_records(library.name, community.PIN_KIND)  # a kept library's earlier run
    library._forget_state()
    sample = spread(helped, args.limit)
    re_sample = spread(reasked, args.limit)
    without = retrieval_report(ask_all(library, sample))
    re_without = retrieval_report(ask_all(library, re_sample))
    records = []
    for (article, paragraph), pid in by_key.items():
        q = pinned[(article, paragraph)]
        text = next(p.text for p in store.passages(library.name, [pid]))
        pin = Pin(
            community.pin_id(str(q["question"]), community.passage_text_md5(text)),
            str(q["question"]),
            vectors[index[str(q["id"])]],
            pid,
            record_of[article].id,
            record_of[article].key,
            community.passage_text_md5(text),
            paragraph + 1,
            record_of[article].title,
            "benchmark",
            community.stamp(community.utcnow()),
        )
        records.append(pin.to_record())
    library.restore_pins(records)
    t0 = time.perf_counter()
    with_pins = retrieval_report(ask_all(library, sample))
    per_question = (time.perf_counter() - t0) / max(1, len(sample)) * 1000
    re_with = retrieval_report(ask_all(library, re_sample))
    t = community.PIN_THRESHOLD
    false = float(np.mean(~own[others_arr] & (best_sim[others_arr] >= t)))
    print(f"\nat the default threshold {t:.2f}, through Library.ask, paragraph level:")
    print("questions                                         pins     R@1    R@5    MRR@10")
    for label, a, b in (
        (f"other questions on pinned paragraphs ({len(sample):,})", without, with_pins),
        (f"pinned questions re-asked in other words ({len(re_sample):,})", re_without, re_with),
    ):
        print(f"{label:<50}without  {a.recall_at_1:.3f}  {a.recall_at_5:.3f}  {a.mrr_at_10:.3f}")
        print(f"{'':<50}with     {b.recall_at_1:.3f}  {b.recall_at_5:.3f}  {b.mrr_at_10:.3f}")
    print(f"false pins: {false:.4f} of {len(others):,} questions about other paragraphs")
    print(f"mean ask with {len(by_key):,} pins: {per_question:.1f} ms")
    store.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
