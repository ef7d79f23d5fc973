"""Declining on questions that do not copy the text: SQuAD-dev questions paraphrased by rule.

    python benchmarks/paraphrase.py [--data ../shared/eval/squad-dev] [--limit 1000] [--seed 0]

SQuAD's questions were written looking at the paragraph and reuse its words, which flatters
both retrieval and the confidence that lets citebot decline. Real members ask in their own
words. This builds a paraphrased copy of the questions by three general rules, applied with a
fixed seed:

* common words get a synonym from a small fixed table (largest → biggest, founded →
  established, ...);
* lower-case content words that also occur in the gold paragraph are dropped with
  probability 0.4 (names and numbers stay: people ask with them);
* nothing else changes (the question word and the order stay).

Both sets are then scored by ``citebot eval``'s own code in the same run (one library of all
articles for retrieval, one of a fixed half for declining) and printed side by side. The rules
were written before looking at any result and are not tuned; they make questions harder than
SQuAD's, not natural.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Settings  # noqa: E402
from bot.services import make_library, quiet_model_loading  # noqa: E402
from embeddings import LocalStore, SentenceTransformerEncoder  # noqa: E402
from embeddings.evaluate import EvalResult, EvalSet, load_eval_set, run_eval, spread  # noqa: E402

SYNONYMS = {
    "largest": "biggest",
    "begin": "start",
    "began": "started",
    "located": "situated",
    "called": "named",
    "founded": "established",
    "died": "passed away",
    "purpose": "aim",
    "used": "employed",
    "famous": "well known",
    "built": "constructed",
    "important": "significant",
    "main": "principal",
    "received": "got",
    "created": "made",
    "type": "kind",
    "help": "assist",
    "reason": "cause",
    "area": "region",
    "wrote": "authored",
    "government": "administration",
    "percentage": "share",
    "amount": "quantity",
    "happened": "occurred",
    "allowed": "permitted",
    "caused": "brought about",
    "needed": "required",
    "increase": "rise",
    "decrease": "fall",
    "buy": "purchase",
    "bought": "purchased",
    "start": "beginning",
    "end": "finish",
    "ended": "finished",
    "big": "large",
    "small": "little",
    "show": "display",
    "shows": "displays",
    "known": "recognised",
    "major": "chief",
}
STOP = set(
    """a an the of in on at to for from by with and or as is are was were be been being do does did
    what which who whom whose when where why how that this these those it its their his her
    has have had not no than then there they he she we you i""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def paraphrase(question: str, paragraph: str, rng: random.Random) -> str:
    """``question`` by the rules in the module docstring."""
    in_paragraph = {w.lower() for w in _WORD.findall(paragraph)}
    words = question.strip().rstrip("?").split()
    out: list[str] = []
    for i, word in enumerate(words):
        core = word.strip(",.;:'\"()").lower()
        if core in SYNONYMS and word[:1].islower():
            out.append(word.lower().replace(core, SYNONYMS[core]))
            continue
        copied = core in in_paragraph and core not in STOP and word[:1].islower() and core.isalpha()
        if i > 0 and copied and rng.random() < 0.4:
            continue
        out.append(word)
    return " ".join(out) + "?"


def paraphrased(data: EvalSet, seed: int) -> EvalSet:
    """The set with every question (answerable or not) paraphrased."""
    rng = random.Random(seed)
    paragraphs: dict[tuple[str, int], str] = {}
    for article in data.articles:
        listed = article.get("paragraphs")
        for i, text in enumerate(listed if isinstance(listed, list) else []):
            paragraphs[(str(article["id"]), i)] = str(text)

    def rewrite(q: dict[str, object]) -> dict[str, object]:
        gold = paragraphs.get((str(q["article_id"]), int(str(q.get("paragraph") or 0))), "")
        return {**q, "question": paraphrase(str(q["question"]), gold, rng)}

    return EvalSet(
        data.articles, [rewrite(q) for q in data.questions], [rewrite(q) for q in data.unanswerable]
    )


def row(name: str, r: EvalResult) -> str:
    d = r.decline
    return (
        f"| {name} | {r.retrieval.recall_at_1:.3f} | {r.retrieval.recall_at_5:.3f} | {r.retrieval.mrr_at_10:.3f} "
        f"| {d.declined_out:.3f} | {d.declined_in:.3f} | {d.auroc:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--limit", type=int, default=1000, help="questions (spread over the set)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    quiet_model_loading()
    data = load_eval_set(args.data)
    data = EvalSet(data.articles, spread(data.questions, args.limit), [])
    para = paraphrased(data, args.seed)
    changed = sum(a["question"] != b["question"] for a, b in zip(data.questions, para.questions, strict=True))
    encoder = SentenceTransformerEncoder()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.load(data_dir=Path(folder))
        store = LocalStore(folder)
        # One store for both runs: the second finds every article already embedded.
        results = [
            (name, run_eval(s, lambda n: make_library(settings, store, encoder, n), source="squad-dev"))
            for name, s in (("SQuAD questions", data), ("paraphrased by rule", para))
        ]
        store.close()
    print(f"{len(data.questions)} questions, {changed} changed by the rules; examples:")
    for a, b in list(zip(data.questions, para.questions, strict=True))[:5]:
        print(f"  {a['question']}  →  {b['question']}")
    print()
    print(
        "| questions | R@1 | R@5 | MRR@10 | out-of-library declined | in-library wrongly declined | AUROC |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results:
        print(row(name, r))
    print()
    print(tradeoff(results))


def tradeoff(results: list[tuple[str, EvalResult]]) -> str:
    """The calibration trade-off: both sets' declining at thresholds around the default.

    It answers "what would it cost to decline paraphrased questions as rarely as SQuAD's": the
    threshold at which paraphrased in-library questions are wrongly declined no more often than
    SQuAD's are at the default, and what out-of-library declining falls to there.
    """
    default = results[0][1].decline.threshold
    curves = [dict((round(t, 3), (o, i)) for t, o, i in r.decline.curve) for _, r in results]
    target = results[0][1].decline.declined_in
    thresholds = sorted(curves[1])
    match = max((t for t in thresholds if curves[1][t][1] <= target), default=thresholds[0])
    shown = sorted({t for t in thresholds if abs(t - default) <= 0.2} | {match})
    lines = [
        f"Threshold sweep (default {default:.3f}; * = paraphrased in-library declined <= SQuAD's "
        f"{target:.3f} at the default):",
        "",
        "| threshold | "
        + " | ".join(f"{name}: out declined | {name}: in wrongly declined" for name, _ in results)
        + " |",
        "|---:|" + "---:|" * (2 * len(results)),
    ]
    for t in shown:
        cells = " | ".join(f"{c[t][0]:.3f} | {c[t][1]:.3f}" for c in curves)
        lines.append(f"| {t:.3f}{' *' if t == match else ''} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
