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
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bot.config import Settings
from bot.services import make_encoder, make_library
from embeddings import LocalStore, community
from embeddings.community import Pin
from embeddings.evaluate import ask_all, documents, load_eval_set, retrieval_report, spread

ROOT = Path(__file__).resolve().parent.parent


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

    print(
        f"\n{len(keys):,} pins; {len(helped):,} other questions on pinned paragraphs; {len(others):,} questions not pinned"
    )
    print("threshold  fires (same paragraph)  false pins (all questions)")
    for t in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        fires = np.mean([best_sim[i] >= t and keys[best[i]] == paragraph_of[i] for i in helped_idx])
        false = np.mean([best_sim[i] >= t and keys[best[i]] != paragraph_of[i] for i in others])
        print(f"{t:9.2f}  {fires:21.3f}  {false:26.3f}")

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
    sample = spread(helped, args.limit)
    without = retrieval_report(ask_all(library, sample))
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
        store.put_record(library.name, pin.to_record())
    library._forget_state()
    t0 = time.perf_counter()
    outcomes = ask_all(library, sample)
    with_pins = retrieval_report(outcomes)
    per_question = (time.perf_counter() - t0) / max(1, len(sample)) * 1000
    t = community.PIN_THRESHOLD
    false = float(np.mean([best_sim[i] >= t and keys[best[i]] != paragraph_of[i] for i in others]))
    fires = float(np.mean([best_sim[i] >= t and keys[best[i]] == paragraph_of[i] for i in helped_idx]))
    print(f"\nat the default threshold {t:.2f}, {len(sample):,} helped questions asked through Library.ask:")
    print("              R@1    R@5    MRR@10")
    print(f"without pins  {without.recall_at_1:.3f}  {without.recall_at_5:.3f}  {without.mrr_at_10:.3f}")
    print(
        f"with pins     {with_pins.recall_at_1:.3f}  {with_pins.recall_at_5:.3f}  {with_pins.mrr_at_10:.3f}"
    )
    print(
        f"pin fired for {fires:.3f} of the helped questions; false pins {false:.4f} of {len(others):,} questions"
    )
    print(f"mean ask with {len(by_key):,} pins: {per_question:.1f} ms")
    store.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
