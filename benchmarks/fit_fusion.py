"""Fit the reranker's weights and the confidence curve on SQuAD-dev, the way the defaults were made.

    python benchmarks/fit_fusion.py [--data ../shared/eval/squad-dev] [--work DIR] [--keep-weights]

The library is built the way the settings say (``CITEBOT_SENTENCE_VECTORS``); each way of making
sentence vectors has its own confidence curve in ``embeddings/search.py``, while the ranking
weights are shared (refitting them for late chunking moved R@1 by 0.002; see the README).

1. (Not with ``--keep-weights``.) Builds a library of all articles, asks every question through
   the real retriever, and keeps each candidate's features.
2. (Not with ``--keep-weights``.) Fits the stage-1 and stage-2 linear weights by listwise softmax
   (the gold paragraph's passages against the other candidates) on the questions of the
   even-numbered articles, and reports Recall@1/5 and MRR@10 on the odd-numbered ones (held out)
   and on all.
3. Builds a library of the even-numbered articles only, asks every question, and fits a logistic
   curve on the final score: questions about articles in that library against questions about
   the others. The threshold is the 5th percentile of in-library confidence on half of those
   questions; the declining rates are reported on the other half.

Prints the weights as a ``SearchConfig(...)`` to paste into ``embeddings/search.py``. Only a few
numbers are fitted (six weights, four stage-1 weights, two for the curve, one threshold), which
keeps the room to overfit SQuAD small; see the README for what may still be SQuAD-specific.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.config import Settings  # noqa: E402
from bot.services import make_library, quiet_model_loading  # noqa: E402
from embeddings import Library, LocalStore, SentenceTransformerEncoder  # noqa: E402
from embeddings.evaluate import auroc, documents, load_eval_set, split_articles  # noqa: E402
from embeddings.search import FEATURES, STAGE1_FEATURES  # noqa: E402


def collect(lib: Library, questions: list[dict], record_of: dict[str, str]) -> list[dict]:
    """Per question: stage-1 features of all candidates, stage-2 of the reranked, gold flags."""
    rows = []
    texts = [" ".join(str(q["question"]).split()) for q in questions]
    # One batched encode: single-question calls would spend most of the time in overhead.
    vectors = lib.encoder.encode(texts, kind="query")
    for q, text, qvec in zip(questions, texts, vectors, strict=True):
        cands = lib.retriever.candidates(lib.name, text, qvec)
        passages = {p.id: p for p in lib.store.passages(lib.name, [c.passage_id for c in cands])}
        gold = []
        for c in cands:
            p = passages[c.passage_id]
            gold.append(record_of[p.article_id] == q["article_id"] and p.paragraph - 1 == q["paragraph"])
        rows.append(
            {
                "s1": np.array([[c.features[f] for f in STAGE1_FEATURES] for c in cands], np.float32),
                "s2": np.array([[c.features[f] for f in FEATURES] for c in cands if c.reranked], np.float32),
                "gold": np.array(gold),
                "reranked": np.array([c.reranked for c in cands]),
                "article": q["article_id"],
            }
        )
    return rows


def fit_listwise(lists: list[tuple[np.ndarray, np.ndarray]], iters: int = 800, lr: float = 5.0) -> np.ndarray:
    """Softmax over each list's candidates toward its gold ones; plain gradient descent."""
    lists = [(x, y) for x, y in lists if y.any() and len(y) > 1]
    width = max(len(y) for _, y in lists)
    x = np.zeros((len(lists), width, lists[0][0].shape[1]))
    target = np.zeros((len(lists), width))
    valid = np.zeros((len(lists), width), bool)
    for i, (xi, yi) in enumerate(lists):
        x[i, : len(yi)] = xi
        target[i, : len(yi)] = yi / yi.sum()
        valid[i, : len(yi)] = True
    w = np.zeros(x.shape[2])
    for _ in range(iters):
        s = np.where(valid, x @ w, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = np.einsum("qc,qcf->f", p - target, x) / len(lists)
        w -= lr * (grad + 1e-3 * w)
    return w


def rank_metrics(lists: list[tuple[np.ndarray, np.ndarray]], w: np.ndarray) -> tuple[float, float, float]:
    """R@1, R@5, MRR@10 when each list is ordered by ``x @ w``."""
    ranks = []
    for x, y in lists:
        order = np.argsort(-(x @ w), kind="stable")
        hit = np.flatnonzero(y[order][:10])
        ranks.append(hit[0] + 1 if len(hit) else 0)
    r = np.array(ranks)
    return (
        float(np.mean(r == 1)),
        float(np.mean((r >= 1) & (r <= 5))),
        float(np.mean(np.where(r > 0, 1 / np.maximum(r, 1), 0))),
    )


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 4000) -> tuple[np.ndarray, float]:
    """Logistic regression by gradient descent on standardised inputs; returns raw-scale weights."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mu) / sd
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(iters):
        g = sigmoid(z @ w + b) - y
        w -= 0.5 * (z.T @ g / len(y))
        b -= 0.5 * float(g.mean())
    return w / sd, b - float((w / sd) @ mu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--work", type=Path, default=Path("/tmp/citebot-fit"), help="index cache")
    parser.add_argument(
        "--keep-weights",
        action="store_true",
        help="fit only the confidence curve, with the current ranking weights (as for late "
        "chunking, which shares the weights fitted with separate sentence vectors)",
    )
    args = parser.parse_args()
    quiet_model_loading()
    settings = Settings.load(env_file=None)
    encoder = SentenceTransformerEncoder(settings.model, precision=settings.precision)
    data = load_eval_set(args.data)
    store = LocalStore(args.work)
    inside_articles, _ = split_articles(data.articles)
    train_articles = {a["id"] for a in inside_articles}

    full = make_library(settings, store, encoder, "fit-all")
    current = full.config
    if args.keep_weights:
        config = current
    else:
        full.ingest(documents(data.articles, str(args.data)))
        record_of = {a.id: a.key.removeprefix("eval:") for a in full.articles()}
        rows = collect(full, data.questions, record_of)

        def lists(key: str, subset: str) -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for r in rows:
                if subset == "train" and r["article"] not in train_articles:
                    continue
                if subset == "test" and r["article"] in train_articles:
                    continue
                y = r["gold"] if key == "s1" else r["gold"][r["reranked"]]
                out.append((r[key], y.astype(np.float64)))
            return out

        w1 = fit_listwise(lists("s1", "train"))
        w2 = fit_listwise(lists("s2", "train"))
        print("stage 1 weights", np.round(w1, 2), "(current", current.stage1_weights, ")")
        print("stage 2 weights", np.round(w2, 2), "(current", current.weights, ")")
        for name, subset in (("held-out half", "test"), ("training half", "train"), ("all", "all")):
            print(
                f"stage 2 on {name}: R@1 {{:.3f}} R@5 {{:.3f}} MRR@10 {{:.3f}}".format(
                    *rank_metrics(lists("s2", subset), w2)
                )
            )
            print(
                "  (current weights: R@1 {:.3f} R@5 {:.3f} MRR@10 {:.3f})".format(
                    *rank_metrics(lists("s2", subset), np.array(current.weights))
                )
            )
        config = replace(
            current,
            stage1_weights=tuple(round(float(v), 2) for v in w1),
            weights=tuple(round(float(v), 2) for v in w2),
        )

    # Confidence: a library of the training half; in-library vs out-of-library questions.
    half = Library(
        store,
        encoder,
        "fit-half",
        chunk=full.chunk,
        search=config,
        sentence_vectors=full.spec.sentence_vectors,
    )
    half.ingest(documents(inside_articles, str(args.data)))
    feats, inside = [], []
    texts = [" ".join(str(q["question"]).split()) for q in data.questions]
    for q, text, qvec in zip(data.questions, texts, half.encoder.encode(texts, kind="query"), strict=True):
        cands = half.retriever.candidates(half.name, text, qvec)
        c = cands[0]
        feats.append((c.score, c.features["sentence"], c.features["dense"]))
        inside.append(q["article_id"] in train_articles)
    f, y = np.array(feats), np.array(inside, dtype=float)
    fit_mask = np.arange(len(y)) % 2 == 0  # fit on every other question, check on the rest
    wf, bf = fit_logistic(f[fit_mask][:, :1], y[fit_mask])
    wd, bd = fit_logistic(f[fit_mask][:, 1:], y[fit_mask])
    center, scale = -bf / wf[0], 1 / wf[0]
    conf = np.maximum(sigmoid(f[:, :1] @ wf + bf), sigmoid(f[:, 1:] @ wd + bd))
    threshold = float(np.quantile(conf[fit_mask & (y == 1)], 0.05))
    check = ~fit_mask
    print(
        f"confidence: center {center:.3f}, scale {scale:.3f}, dense {np.round(wd, 2)} {bd:.2f}, threshold {threshold:.3f}"
    )
    print(
        f"held-out questions: out-of-library declined {np.mean(conf[check & (y == 0)] < threshold):.3f}, "
        f"in-library declined {np.mean(conf[check & (y == 1)] < threshold):.3f}, "
        f"AUROC {auroc(conf[check & (y == 1)].tolist(), conf[check & (y == 0)].tolist()):.3f}"
    )
    print(f"\nSearchConfig(  # sentence vectors {full.spec.sentence_vectors}")
    print(f"    stage1_weights={config.stage1_weights},")
    print(f"    weights={config.weights},")
    print(f"    confidence_center={center:.2f},\n    confidence_scale={scale:.2f},")
    print(f"    dense_confidence=({wd[0]:.2f}, {wd[1]:.2f}, {bd:.2f}),")
    print(f"    abstain_threshold={threshold:.2f},\n)")
    store.close()


if __name__ == "__main__":
    main()
