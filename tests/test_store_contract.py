"""One contract, two stores: the local folder store and PostgreSQL + pgvector answer alike.

Every test here runs against both stores (the PostgreSQL ones against a real server started by
pgserver, skipped with the reason only if it cannot start). The last tests run both side by
side on the same ingests and compare answers, ids and scores.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.wording import for_cli
from embeddings import (
    CorruptIndexError,
    Document,
    EmptyLibraryError,
    Feedback,
    HashEncoder,
    IndexMismatchError,
    InputError,
    Library,
    LibraryBusyError,
    LocalStore,
    NotFoundError,
    Store,
    fitted_config,
)
from embeddings import library as library_module
from embeddings.articles import assemble, load_bytes, parse_markdown
from embeddings.lexical import BM25, Analyzer
from embeddings.types import Layout

from .conftest import SEED
from .test_pdf import PAGES, make_pdf


def stats(store: Store, library: str, terms: list[str]) -> tuple[int, float, dict[str, int]]:
    """Passage count, mean length and document frequencies from :meth:`Store.lexical`."""
    rows = store.lexical(library, terms)
    return rows.passage_count, rows.mean_length, rows.df


def vectors(store: Store, library: str, ids: list[int]) -> np.ndarray:
    """The stored passage vectors of ``ids`` from :meth:`Store.evidence` (missing ids left out)."""
    found = store.evidence(library, ids)
    if not found:
        return np.zeros((0, store.spec(library).dim), dtype=np.float32)  # type: ignore[union-attr]
    return np.stack([e.vector for e in found])


def doc(key: str, title: str, *paragraphs: str) -> Document:
    text, spans = assemble(paragraphs)
    return Document(key=key, title=title, text=text, paragraphs=spans, source=key)


CATS = doc(
    "cats",
    "All about cats",
    "Cats purr when content. They also knead soft blankets.",
    "Cats sleep sixteen hours a day. Kittens sleep even more.",
)
DOGS = doc(
    "dogs",
    "All about dogs",
    "Dogs bark at strangers. Some dogs howl at sirens.",
    "Dogs love long walks in the park. Puppies chew shoes.",
)
BIRDS = doc(
    "birds", "Birds of the city", "Pigeons nest on ledges. Sparrows bathe in dust.", "Crows remember faces."
)
FISH = doc(
    "fish",
    "Fish at home",
    "Goldfish need filtered water. Bettas live alone.",
    "Change a third of the tank water every week.",
)
DOCS = [CATS, DOGS, BIRDS, FISH]
QUESTIONS = [
    "How long do cats sleep?",
    "Why do dogs bark?",
    "What do crows remember?",
    "How often should the tank water change?",
    "walks in the park",
    "Something about volcanoes",
]


@dataclass
class Backend:
    """Opens store instances on one backing (folder or database), like separate processes."""

    kind: str
    factory: Callable[[], Store]
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.factory()
        self.opened.append(store)
        return store


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "local":
        return Backend(kind, lambda: LocalStore(tmp_path / "data"))
    from embeddings.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    # Threshold 0: every library gets its HNSW indexes at once, so the index path is tested.
    return Backend(kind, lambda: PostgresStore(dsn, index_threshold=0))


@pytest.fixture(params=["local", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _backend(request.param, request, tmp_path)
    yield b
    for s in b.opened:
        s.close()


@pytest.fixture
def any_store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture
def enc() -> HashEncoder:
    return HashEncoder(dim=64, max_tokens=48)


@pytest.fixture
def lib(any_store: Store, enc: HashEncoder) -> Library:
    return Library(any_store, enc, "test")


# ---------------------------------------------------------------------- writing


def test_ingest_replace_unchanged(lib: Library):
    first = lib.ingest(DOCS)
    assert [r.status for r in first.results] == ["added"] * 4
    assert lib.store.generation("test") == 1
    assert [r.status for r in lib.ingest(DOCS).results] == ["unchanged"] * 4
    assert lib.store.generation("test") == 1  # nothing written
    twin = replace(CATS, key="cats-copy")
    assert lib.ingest([twin]).results[0].status == "unchanged"
    changed = doc(
        "cats", "All about cats", "Cats purr when content.", "Cats can jump five times their height."
    )
    report = lib.ingest([changed])
    assert report.results[0].status == "replaced"
    assert report.results[0].article.id == first.results[0].article.id
    assert lib.store.generation("test") == 2
    assert [a.title for a in lib.articles()] == [
        "All about dogs",
        "Birds of the city",
        "Fish at home",
        "All about cats",
    ]
    assert "jump" in lib.search("jump height", k=1)[0].passage.text
    assert not any("sixteen" in h.passage.text for h in lib.search("sleep sixteen hours", k=10))
    # Passage ids are numbered per library and never reused: the replaced article got new ones.
    ids = sorted(p.id for a in lib.articles() for p in lib.store.article_passages("test", a.id))
    assert ids == [3, 4, 5, 6, 7, 8, 9, 10]


def test_forget(lib: Library):
    lib.ingest(DOCS)
    gen = lib.store.generation("test")
    assert lib.forget("all about cats").title == "All about cats"
    lib.forget(lib.resolve("Fish at home").id[:5])
    assert [a.title for a in lib.articles()] == ["All about dogs", "Birds of the city"]
    assert lib.store.generation("test") == gen + 2
    assert all(h.article.title != "All about cats" for h in lib.search("cats sleep", k=10))
    with pytest.raises(NotFoundError, match="All about dogs"):
        lib.resolve("All about dgos and more")
    n, _, df = stats(lib.store, "test", ["cat", "dog"])
    assert (n, df) == (4, {"dog": 2})


def test_reset_replaces_content_and_keeps_feedback(lib: Library, any_store: Store):
    lib.ingest(DOCS)
    cats = lib.resolve("All about cats")
    any_store.put_cached("test", "summary", cats.id, cats.id, "Cats sleep.")
    any_store.add_feedback("test", Feedback("q?", 1, cats.id, 1))
    gen = any_store.generation("test")
    keep = [w for w in any_store.export("test") if w.info.key == "dogs"]
    any_store.reset("test", lib.spec, keep)
    assert [a.title for a in any_store.list_articles("test")] == ["All about dogs"]
    assert any_store.generation("test") == gen + 1
    assert any_store.get_cached("test", "summary", cats.id) is None
    assert [f.question for f in any_store.list_feedback("test")] == ["q?"]
    assert stats(any_store, "test", ["cat"])[0] == 2


# ---------------------------------------------------------------------- searching


def test_dense_search_breaks_ties_by_passage_order(any_store: Store, enc: HashEncoder):
    lib = Library(any_store, enc, "lib")
    lib.ingest([doc("a", "A", "same words here."), doc("b", "B", "same words here!"), DOGS])
    q = enc.encode(["same words"])[0]
    top = any_store.nearest("lib", q, 2)[0]
    assert [pid for pid, _ in top] == [1, 2] and top[0][1] == top[1][1]
    assert any_store.nearest("lib", q, 1)[0] == top[:1]  # the tie at the k-th place too
    assert any_store.nearest("lib", q, 1)[1][0][0] == 1
    scores = vectors(any_store, "lib", [1, 2]) @ q
    assert top[0][1] == pytest.approx(float(scores[0]), abs=1e-6)


def test_dense_search_is_exact_on_small_libraries(lib: Library, enc: HashEncoder):
    lib.ingest(DOCS)
    ids = [p.id for a in lib.articles() for p in lib.store.article_passages("test", a.id)]
    matrix = vectors(lib.store, "test", ids)
    for question in QUESTIONS:
        q = enc.encode([question])[0]
        scores = matrix @ q
        expected = sorted(zip(ids, scores.tolist(), strict=True), key=lambda x: (-x[1], x[0]))[:5]
        got = lib.store.nearest("test", q, 5)[0]
        assert [pid for pid, _ in got] == [pid for pid, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_sentence_search_ranks_passages_by_their_best_sentence(lib: Library, enc: HashEncoder):
    lib.ingest(DOCS)
    ids = [p.id for a in lib.articles() for p in lib.store.article_passages("test", a.id)]
    rows = lib.store.sentences("test", ids)
    assert [r.passage_id for r in rows] == sorted(r.passage_id for r in rows)  # grouped, in order
    assert all(r.vector.shape == (64,) and r.vector.dtype == np.float32 for r in rows)
    for question in QUESTIONS:
        q = enc.encode([question])[0]
        best: dict[int, float] = {}
        for r in rows:
            best[r.passage_id] = max(best.get(r.passage_id, -2.0), float(r.vector @ q))
        expected = sorted(best.items(), key=lambda x: (-x[1], x[0]))
        for k in (1, 3, 100):
            got = lib.store.nearest("test", q, k)[1]
            assert [pid for pid, _ in got] == [pid for pid, _ in expected[:k]]
            assert [s for _, s in got] == pytest.approx([s for _, s in expected[:k]], abs=1e-6)


def test_answers_highlight_the_best_sentence(lib: Library):
    lib.ingest(DOCS)
    answer = lib.ask("How many hours a day do cats sleep?")
    assert answer.answered and answer.best.article.title == "All about cats"
    assert answer.sentence == "Cats sleep sixteen hours a day."
    assert not lib.ask("Something about volcanoes?").answered


def test_lexical_stats_and_postings(lib: Library):
    lib.ingest(DOCS)
    analyzer = Analyzer()
    passages = [p for a in lib.articles() for p in lib.store.article_passages("test", a.id)]
    counts = {p.id: analyzer.counts(p.text) for p in passages}
    n, avgdl, df = stats(lib.store, "test", ["cat", "sleep", "volcano"])
    assert n == len(passages)
    assert avgdl == pytest.approx(sum(sum(c.values()) for c in counts.values()) / n)
    assert df == {t: sum(1 for c in counts.values() if t in c) for t in ("cat", "sleep")}
    got = lib.store.lexical("test", ["cat", "sleep", "dog"]).tuples()
    expected = sorted(
        (t, pid, c[t], sum(c.values()))
        for pid, c in counts.items()
        for t in ("cat", "sleep", "dog")
        if t in c
    )
    assert got == expected
    assert lib.store.lexical("test", []).tuples() == []


def test_article_filters_return_k_results_from_those_articles(lib: Library, enc: HashEncoder):
    many = [doc(f"k{i}", f"Filler {i}", f"Cats and more cats number {i}.") for i in range(30)]
    lib.ingest([*many, DOGS])
    dogs = lib.resolve("All about dogs").id
    dog_ids = {p.id for p in lib.store.article_passages("test", dogs)}
    q = enc.encode(["cats"])[0]  # the nearest rows are all outside the filter
    assert {pid for pid, _ in lib.store.nearest("test", q, 5, article_ids=[dogs])[0]} == dog_ids
    assert {pid for pid, _ in lib.store.nearest("test", q, 5, article_ids=[dogs])[1]} == dog_ids
    assert {
        pid for _, pid, _, _ in lib.store.lexical("test", ["dog"], article_ids=[dogs]).tuples()
    } == dog_ids
    assert lib.store.nearest("test", q, 5, article_ids=[])[0] == []
    hits = lib.search("cats", k=3, article_ids=[dogs])
    assert len(hits) == 2 and {h.article.id for h in hits} == {dogs}


# ---------------------------------------------------------------------- feedback and cache


def test_feedback_newest_first(lib: Library, any_store: Store):
    lib.ingest(DOCS)
    for i, vote in enumerate((1, -1, 1)):
        any_store.add_feedback(
            "test", Feedback(f"q{i}?", i + 1, "x", vote, user=f"u{i}", extra={"n": str(i)})
        )
    got = any_store.list_feedback("test")
    assert [(f.question, f.answer_passage_id, f.vote, f.user, f.extra) for f in got] == [
        ("q2?", 3, 1, "u2", {"n": "2"}),
        ("q1?", 2, -1, "u1", {"n": "1"}),
        ("q0?", 1, 1, "u0", {"n": "0"}),
    ]
    assert all(f.created_at for f in got)
    assert [f.question for f in any_store.list_feedback("test", limit=1)] == ["q2?"]


def test_cache_is_dropped_when_its_article_changes_or_goes(lib: Library, any_store: Store):
    lib.ingest(DOCS)
    cats, dogs = lib.resolve("All about cats").id, lib.resolve("All about dogs").id
    any_store.put_cached("test", "summary", cats, cats, "about cats")
    any_store.put_cached("test", "summary", dogs, dogs, "about dogs")
    any_store.put_cached("test", "summary", dogs, dogs, "about dogs, v2")
    assert any_store.get_cached("test", "summary", dogs) == "about dogs, v2"
    lib.ingest([doc("cats", "All about cats", "Cats changed their minds.")])
    assert any_store.get_cached("test", "summary", cats) is None
    assert any_store.get_cached("test", "summary", dogs) == "about dogs, v2"
    lib.forget(dogs)
    assert any_store.get_cached("test", "summary", dogs) is None
    assert any_store.get_cached("test", "other", "nothing") is None


# ---------------------------------------------------------------------- libraries, specs, locks


def test_libraries_are_isolated(any_store: Store, enc: HashEncoder):
    a, b = Library(any_store, enc, "guild-1"), Library(any_store, enc, "guild-2")
    a.ingest([CATS])
    b.ingest([DOGS, BIRDS])
    assert [x.title for x in a.articles()] == ["All about cats"]
    assert all(h.article.title != "All about cats" for h in b.search("cats purr", k=10))
    assert any_store.libraries() == ["guild-1", "guild-2"]
    # Ids are numbered per library, so both start at 1.
    assert [p.id for p in any_store.article_passages("guild-1", a.articles()[0].id)] == [1, 2]
    assert [p.id for p in any_store.article_passages("guild-2", b.articles()[0].id)] == [1, 2]
    assert any_store.generation("guild-1") == 1 and any_store.generation("guild-2") == 1
    assert stats(any_store, "guild-1", ["dog"])[::2] == (2, {})


def test_missing_library(any_store: Store, enc: HashEncoder):
    assert any_store.spec("nothing") is None
    assert any_store.libraries() == []
    for call in (
        lambda: any_store.list_articles("nothing"),
        lambda: any_store.generation("nothing"),
        lambda: any_store.get_cached("nothing", "summary", "x"),
    ):
        with pytest.raises(EmptyLibraryError) as err:
            call()
        assert err.value.library == "nothing" and "`citebot ingest PATH --library nothing`" in for_cli(
            err.value
        )
    with pytest.raises(EmptyLibraryError):
        Library(any_store, enc, "nothing").ask("anything?")
    with pytest.raises(InputError, match="not a valid library name"):
        any_store.spec("../etc")


def test_missing_passages_are_left_out(lib: Library):
    lib.ingest([CATS])
    assert lib.store.evidence("test", []) == []
    assert lib.store.passages("test", [2, 99, 1]) == lib.store.passages("test", [2, 1])
    found = lib.store.evidence("test", [2, 99, 1])
    assert [e.passage.id for e in found] == [2, 1]
    assert all(e.vector.shape == (64,) for e in found)
    assert all(s.passage_id == e.passage.id for e in found for s in e.sentences)
    assert [s.start for s in found[1].sentences] == [r.start for r in lib.store.sentences("test", [1])]


def test_spec_mismatch_and_rebuild_to_another_dimension(any_store: Store):
    Library(any_store, HashEncoder(dim=64), "lib").ingest(DOCS)
    other = Library(any_store, HashEncoder(dim=32), "lib")
    with pytest.raises(IndexMismatchError) as err:
        other.ask("cats?")
    assert "hash-64" in str(err.value) and "hash-32" in str(err.value)
    assert err.value.library == "lib" and any("model" in d for d in err.value.differences)
    assert "citebot rebuild --library lib" in for_cli(err.value)
    with pytest.raises(IndexMismatchError, match="was built with other settings"):
        any_store.create("lib", other.spec)
    assert len(other.rebuild().results) == 4
    assert any_store.spec("lib") == other.spec
    assert other.search("dogs bark", k=1)[0].article.title == "All about dogs"
    assert other.ask("How many hours a day do cats sleep?").sentence == "Cats sleep sixteen hours a day."
    best = any_store.nearest("lib", other.encoder.encode(["x"])[0], 1)[0][0][0]
    assert vectors(any_store, "lib", [best]).shape == (1, 32)


class SpanHashEncoder(HashEncoder):
    """The hash encoder with late chunking's entry point (a span's vector is its own text's: this
    encoder has no context to pool from), counting the calls that make sentence vectors."""

    def __init__(self) -> None:
        super().__init__(dim=64, max_tokens=48)
        self.span_calls = 0

    def encode_spans(self, texts, spans, *, progress=None):  # type: ignore[no-untyped-def]
        self.span_calls += 1
        pieces = [
            super(SpanHashEncoder, self).encode([t[a:b] for a, b in s])
            for t, s in zip(texts, spans, strict=True)
        ]
        return super().encode(texts, progress=progress), pieces


def test_a_library_keeps_the_way_its_sentence_vectors_were_made(backend: Backend):
    enc = SpanHashEncoder()
    store = backend.open()
    Library(store, enc, "lib", sentence_vectors="separate").ingest(DOCS[:2])
    assert store.spec("lib").sentence_vectors == "separate"  # type: ignore[union-attr]
    assert enc.span_calls == 0
    # A process configured the new way (late, the default) reads and writes it the way it is,
    # with the confidence curve fitted for it, until a rebuild.
    view = Library(backend.open(), enc, "lib")
    assert view.sentence_vectors == "late" and view.config == fitted_config("late")
    view.ingest(DOCS[2:])
    assert enc.span_calls == 0 and not view.late_chunking
    assert view.config == view.retriever.config == fitted_config("separate")
    assert view.search(QUESTIONS[0], k=1)[0].article.key == "cats"
    view.rebuild()
    assert enc.span_calls == 1 and store.spec("lib").sentence_vectors == "late"  # type: ignore[union-attr]
    assert view.search(QUESTIONS[1], k=1)[0].article.key == "dogs"
    assert view.late_chunking and view.retriever.config == fitted_config("late")
    # Adding to it now pools from the passage's pass; an operator's threshold holds either way.
    strict = Library(backend.open(), enc, "lib", sentence_vectors="separate", abstain_threshold=0.9)
    strict.ingest([doc("cats", "All about cats", "Cats purr when content.", "Older cats sleep even longer.")])
    assert enc.span_calls == 2 and strict.late_chunking
    assert strict.config == replace(fitted_config("late"), abstain_threshold=0.9)


def test_a_reader_follows_a_rebuild_by_another_process(backend: Backend, monkeypatch: pytest.MonkeyPatch):
    enc = SpanHashEncoder()
    Library(backend.open(), enc, "lib").ingest(DOCS)
    reader = Library(backend.open(), enc, "lib")
    assert reader.ask(QUESTIONS[0]).hits and reader.late_chunking
    Library(backend.open(), enc, "lib", sentence_vectors="separate").rebuild()
    # The library's settings are read again every STATE_TTL seconds.
    monkeypatch.setattr(library_module, "STATE_TTL", 0.0)
    reader.ask(QUESTIONS[0])
    assert not reader.late_chunking and reader.retriever.config == fitted_config("separate")
    # A rebuild with another model is reported, not searched with vectors of another size.
    Library(backend.open(), HashEncoder(dim=32, max_tokens=48), "lib").rebuild()
    with pytest.raises(IndexMismatchError):
        reader.ask(QUESTIONS[0])


def test_sentence_vectors_fall_back_to_separate_passes_when_the_encoder_cannot_pool(any_store: Store):
    plain = Library(any_store, HashEncoder(dim=64, max_tokens=48), "lib")
    plain.ingest([CATS])
    assert plain.sentence_vectors == "separate" and any_store.spec("lib").sentence_vectors == "separate"  # type: ignore[union-attr]
    with pytest.raises(InputError, match="'pooled' are not a choice"):
        Library(any_store, SpanHashEncoder(), "lib", sentence_vectors="pooled")


def test_second_writer_gets_a_clear_message(backend: Backend, enc: HashEncoder):
    first, second = backend.open(), backend.open()
    with first.writer("lib"):
        with pytest.raises(LibraryBusyError) as err:
            Library(second, enc, "lib").ingest([CATS])
        message = str(err.value)
        assert "another citebot process" in message and f"pid {os.getpid()}" in message
        assert err.value.holder and "Wait for it to finish" in for_cli(err.value)
        t0 = time.monotonic()
        with pytest.raises(LibraryBusyError), second.writer("lib", timeout=0.3):
            pass
        assert time.monotonic() - t0 >= 0.3
    Library(second, enc, "lib").ingest([CATS])  # released
    assert [a.title for a in first.list_articles("lib")] == ["All about cats"]


def test_other_instances_see_writes_at_their_next_query(backend: Backend, enc: HashEncoder):
    one, two = backend.open(), backend.open()
    a, b = Library(one, enc, "lib"), Library(two, enc, "lib")
    a.ingest([CATS])
    assert b.search("dogs bark", k=1)[0].article.title == "All about cats"  # b has read the library
    assert one.generation("lib") == two.generation("lib") == 1
    a.ingest([DOGS])
    assert two.generation("lib") == 2
    assert b.search("dogs bark", k=1)[0].article.title == "All about dogs"
    b.forget("All about cats")
    assert [x.title for x in a.articles()] == ["All about dogs"]
    assert a.search("cats purr", k=5)[0].article.title == "All about dogs"
    assert one.generation("lib") == 3


def test_export_and_restore_keep_ids(lib: Library, any_store: Store):
    lib.ingest(DOCS)
    lib.forget("Birds of the city")  # a gap in the ids
    exported = list(any_store.export("test"))
    any_store.create("copy", lib.spec)
    any_store.restore("copy", exported[:1], more=True)
    any_store.restore("copy", exported[1:])
    assert_exports_equal(exported, list(any_store.export("copy")))
    copy = Library(any_store, lib.encoder, "copy")
    for question in QUESTIONS:
        assert hit_keys(copy.search(question, k=5)) == hit_keys(lib.search(question, k=5))
    assert [w.info.id for w in any_store.export("test", [exported[1].info.id])] == [exported[1].info.id]


# ---------------------------------------------------------------------- stored data altered behind citebot's back


def _execute(store: Store, statement: str) -> None:
    """Run one SQL statement on the store's database, as somebody editing it by hand would."""
    if isinstance(store, LocalStore):
        store._conn("test").execute(statement)
        return
    import psycopg

    with psycopg.connect(store._dsn, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(statement)


ALTERATIONS = {
    "title": "UPDATE articles SET title = title || ' (revised)'",
    "byline": "UPDATE articles SET byline = 'By Somebody Else'",
    "date": "UPDATE articles SET date = '1999-12-31'",
    "url": "UPDATE articles SET url = 'https://elsewhere.example/page'",
    "article text": "UPDATE articles SET text = upper(text)",
    "paragraph spans": "UPDATE articles SET paragraphs = '[[0, 3]]'",
    "paragraph number": "UPDATE passages SET paragraph = paragraph + 1",
    "passage offsets": 'UPDATE passages SET start = start + 1, "end" = "end" + 1',
    "passage text": "UPDATE passages SET text = lower(text)",
}


@pytest.mark.parametrize("what", ALTERATIONS)
def test_an_altered_quote_or_citation_is_refused_never_shown(any_store: Store, enc: HashEncoder, what: str):
    # A citation is only worth what its parts are: the quote, and the title, byline, date, link
    # and paragraph it is shown under. Each is checked against a checksum stored with it.
    lib = Library(any_store, enc, "test")
    lib.ingest([replace(CATS, byline="By Ann Lee", date="2024-05-01", url="https://cats.example/a")])
    _execute(any_store, ALTERATIONS[what])
    fresh = Library(any_store, enc, "test")
    with pytest.raises(CorruptIndexError, match="no longer matches its checksum") as caught:
        fresh.ask("How long do cats sleep?")
        fresh.summarize("All about cats")
        fresh.articles()
    assert not caught.value.rebuildable
    assert "ingest" in for_cli(caught.value)


GUIDE_MD = (
    "# Cat care\n\n## Sleeping\n\nCats sleep sixteen hours a day. Kittens sleep even more.\n\n"
    "```python\n# count the hours a cat sleeps\nhours = 16\n```\n\n## Feeding\n\nCats eat meat twice a day.\n"
)

LAYOUT_ALTERATIONS = {
    "section": "UPDATE passages SET section = 'Feeding' WHERE section = 'Sleeping'",
    "kind": "UPDATE passages SET kind = NULL WHERE kind = 'code'",
    "layout": "UPDATE articles SET layout = replace(layout, 'Sleeping', 'Napping')",
}


def test_sections_and_code_are_stored_cited_and_exported(any_store: Store, enc: HashEncoder):
    guide = parse_markdown(GUIDE_MD, key="guide", source="guide.md")
    lib = Library(any_store, enc, "test")
    lib.ingest([guide, CATS])
    (info,) = [a for a in lib.articles() if a.key == "guide"]
    stored = any_store.get_article("test", info.id)
    assert stored is not None and stored.layout == guide.layout and stored.layout
    passages = any_store.article_passages("test", info.id)
    assert [(p.section, p.kind) for p in passages] == [
        (guide.layout.section(p.paragraph), guide.layout.kind(p.paragraph)) for p in passages
    ]
    assert {p.section for p in passages} == {"Sleeping", "Feeding"} and any(p.is_code for p in passages)
    answer = lib.ask("count the hours a cat sleeps")
    assert answer.hits[0].citation.place.startswith("§ Sleeping, ¶ ")
    # An article without headings is stored as before: no layout, no section in its citation.
    plain = any_store.get_article("test", next(a.id for a in lib.articles() if a.key == "cats"))
    assert plain is not None and not plain.layout
    exported = list(any_store.export("test"))
    any_store.create("copy", lib.spec)
    any_store.restore("copy", exported)
    assert_exports_equal(exported, list(any_store.export("copy")))
    assert [w.layout for w in exported] == [guide.layout, Layout()]


def test_pages_are_stored_and_cited(any_store: Store, enc: HashEncoder):
    (manual,) = load_bytes(make_pdf(PAGES, title="Harbour Manual"), name="manual.pdf", key="manual")
    assert not isinstance(manual, InputError)
    lib = Library(any_store, enc, "test")
    lib.ingest([manual])
    (info,) = lib.articles()
    stored = any_store.get_article("test", info.id)
    assert stored is not None and stored.layout == manual.layout and stored.layout.pages
    assert lib.ask("When does the harbour master ring the brass bell?").hits[0].citation.place == "p. 3, ¶ 2"


@pytest.mark.parametrize("what", [*LAYOUT_ALTERATIONS, "page"])
def test_an_altered_section_or_layout_is_refused(any_store: Store, enc: HashEncoder, what: str):
    lib = Library(any_store, enc, "test")
    if what == "page":
        (manual,) = load_bytes(make_pdf(PAGES, title="Harbour Manual"), name="manual.pdf", key="manual")
        lib.ingest([manual])
        _execute(any_store, "UPDATE passages SET page = page + 1")
        with pytest.raises(CorruptIndexError, match="checksum"):
            Library(any_store, enc, "test").ask("When does the harbour master ring the brass bell?")
        return
    lib.ingest([parse_markdown(GUIDE_MD, key="guide", source="guide.md")])
    _execute(any_store, LAYOUT_ALTERATIONS[what])
    fresh = Library(any_store, enc, "test")
    with pytest.raises(CorruptIndexError, match="checksum") as caught:
        fresh.ask("How long do cats sleep?")
        fresh.summarize("Cat care")
    assert not caught.value.rebuildable


def test_subscriptions_are_kept_per_library(any_store: Store):
    any_store.put_subscription("test", "https://a.example/feed.xml", '{"kind": "feed"}')
    any_store.put_subscription("test", "https://b.example/sitemap.xml", '{"kind": "sitemap"}')
    any_store.put_subscription("test", "https://a.example/feed.xml", '{"kind": "feed", "etag": "x"}')
    any_store.put_subscription("other", "https://c.example/feed.xml", "{}")
    assert any_store.subscriptions("test") == {
        "https://a.example/feed.xml": '{"kind": "feed", "etag": "x"}',
        "https://b.example/sitemap.xml": '{"kind": "sitemap"}',
    }
    assert any_store.delete_subscription("test", "https://b.example/sitemap.xml")
    assert not any_store.delete_subscription("test", "https://b.example/sitemap.xml")
    assert list(any_store.subscriptions("test")) == ["https://a.example/feed.xml"]
    assert list(any_store.subscriptions("other")) == ["https://c.example/feed.xml"]


# ---------------------------------------------------------------------- both stores side by side


@pytest.fixture
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    local = _backend("local", request, tmp_path).open()
    pg = _backend("postgres", request, tmp_path).open()
    yield local, pg
    local.close()
    pg.close()


def hit_keys(hits: list) -> list[tuple]:
    return [(h.passage.id, h.article.id, h.passage.text, h.rank) for h in hits]


def assert_exports_equal(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (
            x.info,
            x.text,
            tuple(x.paragraphs),
            x.layout,
            list(x.passages),
            list(x.terms),
            list(x.sentences),
        ) == (
            y.info,
            y.text,
            tuple(y.paragraphs),
            y.layout,
            list(y.passages),
            list(y.terms),
            list(y.sentences),
        )
        np.testing.assert_array_equal(x.vectors, y.vectors)
        np.testing.assert_array_equal(x.sentence_vectors, y.sentence_vectors)


def test_both_stores_give_the_same_answers(both: tuple[Store, Store], enc: HashEncoder):
    libs = [Library(s, enc, "same") for s in both]
    extra = [doc(f"k{i}", f"Note {i}", f"Cats and dogs, note {i}.", "Water for fish.") for i in range(12)]
    for lib in libs:
        lib.ingest([*DOCS, *extra])
        lib.forget("Note 3")
        lib.ingest([doc("k5", "Note 5", "Crows and pigeons, changed.")])
    local, pg = both
    for question in QUESTIONS:
        one, two = (lib.search(question, k=8) for lib in libs)
        assert hit_keys(one) == hit_keys(two)
        assert [h.score for h in one] == pytest.approx([h.score for h in two], abs=1e-6)
        a1, a2 = (lib.ask(question) for lib in libs)
        assert (a1.answered, a1.highlight, a1.sentence) == (a2.answered, a2.highlight, a2.sentence)
        assert a1.confidence == pytest.approx(a2.confidence, abs=1e-6)
        q = enc.encode([question])[0]
        for k in (1, 5):
            assert [p for p, _ in local.nearest("same", q, k)[0]] == [
                p for p, _ in pg.nearest("same", q, k)[0]
            ]
            assert [p for p, _ in local.nearest("same", q, k)[1]] == [
                p for p, _ in pg.nearest("same", q, k)[1]
            ]
        # The lexical ranking on its own: the same passages with the same scores, to the last bit.
        words = Analyzer().terms(question)
        assert BM25().evidence(local, "same", words).top(10) == BM25().evidence(pg, "same", words).top(10)
    terms = ["cat", "dog", "water", "crow"]
    assert stats(local, "same", terms) == stats(pg, "same", terms)
    assert local.lexical("same", terms).tuples() == pg.lexical("same", terms).tuples()
    # added_at is the ingest's own clock: equal up to the second it ran in.
    strip = [replace(w, info=replace(w.info, added_at="")) for w in local.export("same")]
    assert_exports_equal(strip, [replace(w, info=replace(w.info, added_at="")) for w in pg.export("same")])
    assert local.generation("same") == pg.generation("same") == 3


@pytest.mark.slow
def test_real_model_gives_the_same_hits_and_highlights(both: tuple[Store, Store], model):
    libs = [Library(s, model, "seed") for s in both]
    for lib in libs:
        lib.ingest_paths([SEED])
    for question in (
        "What has the US seen in Ukraine?",
        "What did the American Embassy in Kyiv say?",
        "How many refugees have crossed into neighboring countries?",
    ):
        a1, a2 = (lib.ask(question) for lib in libs)
        assert a1.answered
        assert hit_keys(list(a1.hits)) == hit_keys(list(a2.hits))
        assert (a1.highlight, a1.sentence) == (a2.highlight, a2.sentence)
        assert [h.score for h in a1.hits] == pytest.approx([h.score for h in a2.hits], abs=1e-5)


# ---------------------------------------------------------------------- the reads of one question


def test_find_articles_by_key_hash_or_id_in_one_call(lib: Library):
    lib.ingest(DOCS)
    infos = {a.key: a for a in lib.articles()}
    store = lib.store
    assert store.find_articles("test") == []
    found = store.find_articles(
        "test", keys=["cats", "nope"], content_hashes=[infos["dogs"].content_hash], ids=[infos["fish"].id]
    )
    assert sorted(a.key for a in found) == ["cats", "dogs", "fish"]
    assert {a.key: a for a in found}["cats"] == infos["cats"]
    assert store.find_articles("test", ids=["0000"]) == []


def test_article_infos_are_the_listed_metadata(lib: Library):
    lib.ingest(DOCS)
    listed = {a.id: a for a in lib.articles()}
    wanted = [*list(listed)[:2], "missing"]
    assert lib.store.article_infos("test", wanted) == {i: listed[i] for i in wanted[:2]}
    assert lib.store.article_infos("test", []) == {}


def test_a_claim_is_won_exactly_once_even_by_racing_threads(lib: Library):
    import threading

    lib.ingest([CATS])
    cats = lib.articles()[0].id
    barrier = threading.Barrier(6)
    wins: list[bool] = []

    def claim() -> None:
        barrier.wait()
        wins.append(lib.store.claim_cached("test", "vote", "answer:user", cats, "1"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert lib.store.get_cached("test", "vote", "answer:user") == "1"
    # Nothing is kept for an article that is gone, and a claim on it is not won.
    assert lib.store.claim_cached("test", "vote", "other", "gone-id", "1") is False
    lib.forget(cats)
    assert lib.store.get_cached("test", "vote", "answer:user") is None


def test_both_stores_read_the_same_evidence(both: tuple[Store, Store]):
    local, pg = both
    enc = HashEncoder(dim=64, max_tokens=48)
    for store in (local, pg):
        Library(store, enc, "same").ingest(DOCS)
    ids = [p.id for a in local.list_articles("same") for p in local.article_passages("same", a.id)]
    ask = [*reversed(ids), 999]
    a, b = local.evidence("same", ask), pg.evidence("same", ask)
    assert [e.passage for e in a] == [e.passage for e in b]
    assert all(np.allclose(x.vector, y.vector) for x, y in zip(a, b, strict=True))
    assert [[(s.start, s.end) for s in e.sentences] for e in a] == [
        [(s.start, s.end) for s in e.sentences] for e in b
    ]
    dogs = next(x.id for x in local.list_articles("same") if x.key == "dogs")
    a, b = local.lexical("same", ["dog", "bark"], [dogs]), pg.lexical("same", ["dog", "bark"], [dogs])
    assert (a.passage_count, a.mean_length, a.df, a.tuples()) == (
        b.passage_count,
        b.mean_length,
        b.df,
        b.tuples(),
    )


def test_word_statistics_follow_every_write(lib: Library, backend: Backend):
    """The store may keep passage statistics between questions, never past a write."""
    lib.ingest(DOCS)
    terms = ["cat", "sleep", "dog"]
    before = stats(lib.store, "test", terms)
    lib.forget(lib.articles()[0].id)
    after = stats(lib.store, "test", terms)
    assert after != before
    assert after == stats(backend.open(), "test", terms)  # what a fresh process reads
    postings = lib.store.lexical("test", terms).tuples()
    fresh = backend.open().lexical("test", terms).tuples()
    assert postings == fresh


# ---------------------------------------------------------------------- BM25 over postings blocks

WORDS = ["cat", "dog", "crow", "fish", "water", "stone", "river", "sleep"]
_examples = iter(range(10**6))


def _plain_bm25(store: Store, library: str, terms: list[str]) -> dict[int, float]:
    """BM25 counted the plain way from every stored passage's text (the definition, not the index)."""
    analyzer = Analyzer()
    counts = {
        p.id: analyzer.counts(p.text)
        for a in store.list_articles(library)
        for p in store.article_passages(library, a.id)
    }
    n = len(counts)
    mean = sum(sum(c.values()) for c in counts.values()) / n if n else 0.0
    scores: dict[int, float] = {}
    for term in sorted(set(terms)):
        df = sum(1 for c in counts.values() if term in c)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for pid, c in counts.items():
            if term in c:
                tf, length = c[term], sum(c.values())
                scores[pid] = scores.get(pid, 0.0) + idf * tf * 2.2 / (
                    tf + 1.2 * (0.25 + 0.75 * length / mean)
                )
    return scores


_sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(
    lambda w: " ".join(w).capitalize() + "."
)
_write = st.tuples(
    st.sampled_from(["add", "forget", "move"]),
    st.integers(0, 4),
    st.lists(st.lists(_sentence, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=3),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(_write, min_size=1, max_size=8), query=st.lists(st.sampled_from(WORDS), min_size=1))
def test_bm25_is_the_plain_count_after_any_writes(backend: Backend, enc: HashEncoder, writes, query):
    """Adds, replacements, removals and restores with ids far apart (postings in several blocks
    of one term): the index's BM25 is the definition's, in every store and in a fresh process."""
    store = backend.opened[0] if backend.opened else backend.open()
    name = f"bm{next(_examples)}"
    lib = Library(store, enc, name)
    lib.ingest([doc("seed", "Seed", "Cats sleep by the river.")])
    for n, (kind, key, paragraphs) in enumerate(writes):
        if kind == "add":
            lib.ingest([doc(f"k{key}", f"Note {key}", *paragraphs)])
        elif (found := store.find_articles(name, keys=[f"k{key}"])) and kind == "forget":
            lib.forget(found[0].id)
        elif found:  # "move": the same article back under ids in another block
            (w,) = store.export(name, [found[0].id])
            shift = (n + 1) * 5000
            moved = replace(w, passages=[replace(p, id=p.id + shift) for p in w.passages])
            store.write(name, [], [found[0].id])
            store.restore(name, [moved])
    terms = Analyzer().terms(" ".join(query))
    expected = _plain_bm25(store, name, terms)
    for reader in (store, backend.open()):
        evidence = BM25().evidence(reader, name, terms)
        got = dict(zip(evidence.ids.tolist(), evidence.scores.tolist(), strict=True))
        assert got.keys() == expected.keys()
        assert [got[k] for k in sorted(got)] == pytest.approx(
            [expected[k] for k in sorted(expected)], rel=1e-12
        )
        best = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert [pid for pid, _ in evidence.top(3)] == [pid for pid, _ in best]


def test_a_library_made_before_its_spec_named_its_sentence_vectors_made_them_separately(tmp_path: Path):
    store = LocalStore(tmp_path)
    Library(store, HashEncoder(dim=64, max_tokens=48), "test").ingest(DOCS)
    conn = store._conn("test")
    (raw,) = conn.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
    old = {k: v for k, v in json.loads(raw).items() if k != "sentence_vectors"}
    conn.execute("UPDATE meta SET value = ? WHERE key = 'spec'", (json.dumps(old),))
    store._seal_meta(conn)
    store.close()
    again = LocalStore(tmp_path)
    assert again.spec("test").sentence_vectors == "separate"  # type: ignore[union-attr]
    library = Library(again, SpanHashEncoder(), "test")
    assert library.search(QUESTIONS[0], k=1)[0].article.key == "cats"
    assert library.config == fitted_config("separate")


def test_a_library_made_before_postings_blocks_reads_and_gains_them(tmp_path: Path, enc: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, enc, "test").ingest(DOCS)
    terms = ["cat", "dog", "water", "crow", "sleep"]
    before = store.lexical("test", terms).tuples()
    conn = store._conn("test")
    conn.execute("DELETE FROM term_blocks")
    conn.execute("DELETE FROM meta WHERE key = 'term_blocks'")
    store._seal_meta(conn)
    assert store.lexical("test", terms).tuples() == before  # read from the postings table
    assert store.term_counts("test", terms) == store.lexical("test", terms).df
    store.close()
    again = LocalStore(tmp_path)  # a writable open fills the blocks
    assert again._conn("test").execute("SELECT count(*) FROM term_blocks").fetchone()[0] > 0
    assert again.lexical("test", terms).tuples() == before
    hits = Library(again, enc, "test").search("How long do cats sleep?", k=3)
    assert hits[0].article.key == "cats"


def test_a_damaged_posting_in_a_library_made_before_blocks_is_reported_not_a_crash(tmp_path: Path, enc):
    store = LocalStore(tmp_path)
    Library(store, enc, "test").ingest(DOCS)
    conn = store._conn("test")
    conn.execute("DELETE FROM term_blocks")
    conn.execute("DELETE FROM meta WHERE key = 'term_blocks'")
    store._seal_meta(conn)
    conn.execute("UPDATE postings SET tf = 'many' WHERE term = 'cat'")
    store.close()
    again = LocalStore(tmp_path)
    with pytest.raises(CorruptIndexError):
        again.lexical("test", ["cat", "dog"])
    assert again.lexical("test", ["crow"]).df == {"crow": 1}  # the rest still answers


MANY = [f"w{i:02d}x" for i in range(60)]  # distinct made-up words: every one is its own term


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.lists(st.sampled_from(MANY), min_size=3, max_size=30), min_size=2, max_size=12),
    question=st.lists(st.sampled_from(MANY), min_size=33, max_size=80),
)
def test_a_question_of_many_words_is_scored_by_its_rarest(
    backend: Backend, enc: HashEncoder, texts, question
):
    store = backend.opened[0] if backend.opened else backend.open()
    name = f"many{next(_examples)}"
    lib = Library(store, enc, name)
    lib.ingest([doc(f"m{i}", f"Page {i}", " ".join(words) + ".") for i, words in enumerate(texts)])
    analyzer = Analyzer()
    terms = analyzer.terms(" ".join(question))
    unique = list(dict.fromkeys(terms))
    counts = [
        analyzer.counts(p.text) for a in store.list_articles(name) for p in store.article_passages(name, a.id)
    ]
    df = {t: sum(1 for c in counts if t in c) for t in unique}
    assert store.term_counts(name, unique) == {t: n for t, n in df.items() if n}
    bm25 = BM25()
    rarest = sorted(range(len(unique)), key=lambda i: (df[unique[i]], i))[: bm25.max_terms]
    kept = [unique[i] for i in sorted(rarest)]
    assert bm25.query_terms(store, name, terms) == kept
    evidence = bm25.evidence(store, name, terms)
    assert set(evidence.idf) == set(kept)
    expected = _plain_bm25(store, name, kept)
    got = dict(zip(evidence.ids.tolist(), evidence.scores.tolist(), strict=True))
    assert got.keys() == expected.keys()
    assert [got[k] for k in sorted(got)] == pytest.approx([expected[k] for k in sorted(expected)], rel=1e-12)
    # The whole question still answers (stage 2 weighs the same terms).
    assert lib.search(" ".join(question), k=3)
