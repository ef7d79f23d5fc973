"""The core owns every rule about answers: store calls per question, follow-ups, records, votes,
and errors that carry facts which each front end words for its own user."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.testing import CountingStore
from bot.wording import for_cli, for_discord
from embeddings import (
    CorruptIndexError,
    Document,
    EmptyLibraryError,
    HashEncoder,
    IndexMismatchError,
    LibraryBusyError,
    LocalStore,
    NotFoundError,
    StoreUnavailableError,
)
from embeddings.ingest import PLAN_BATCH
from embeddings.library import FOLLOW_UP_WIDENED, FOLLOW_UP_WITHIN, Library

from .conftest import SEED


def doc(key: str, title: str, *paragraphs: str) -> Document:
    text = "\n\n".join(paragraphs)
    spans, at = [], 0
    for p in paragraphs:
        spans.append((at, at + len(p)))
        at += len(p) + 2
    return Document(key=key, title=title, text=text, paragraphs=tuple(spans))


ARTICLES = [
    doc("cats", "All about cats", "Cats purr when they are content.", "A cat sleeps sixteen hours a day."),
    doc("dogs", "All about dogs", "Dogs bark at strangers.", "A dog can learn many words."),
    doc("owls", "All about owls", "Owls hunt at night.", "An owl can turn its head far around."),
]


@pytest.fixture
def counted(tmp_path: Path, hash_encoder: HashEncoder) -> tuple[Library, CountingStore]:
    store = CountingStore(LocalStore(tmp_path / "data"))
    library = Library(store, hash_encoder, "lib")  # type: ignore[arg-type]
    library.ingest(ARTICLES)
    yield library, store
    store.inner.close()


@pytest.fixture
def real(tmp_path: Path, model: Any) -> Library:
    """The three articles with the real model: answered or declined depends on real confidence."""
    library = Library(LocalStore(tmp_path / "real"), model, "lib")
    library.ingest(ARTICLES)
    return library


def test_a_question_makes_at_most_four_store_calls(counted: tuple[Library, CountingStore]):
    library, store = counted
    library.ask("How long does a cat sleep?")  # the first read checks the library's spec once
    store.calls.clear()
    answer = library.ask("How long does a cat sleep?")
    assert answer.hits
    assert sum(store.calls.values()) <= 4, store.calls
    assert "get_article" not in store.calls  # metadata comes without the article's text


def test_ingest_looks_articles_up_once_per_batch(counted: tuple[Library, CountingStore]):
    library, store = counted
    store.calls.clear()
    changed = doc("cats", "All about cats", "Cats purr when they are happy.", "They sleep a lot.")
    new = [doc(f"n{i}", f"Note {i}", f"Note number {i} is about topic {i}.") for i in range(5)]
    report = library.ingest([changed, *new, ARTICLES[1]])
    assert [r.status for r in report.results].count("added") == 5
    assert report.count("replaced") == 1 and report.count("unchanged") == 1
    assert store.calls["find_articles"] == 1
    assert "get_article" not in store.calls and "find_article" not in store.calls


def test_same_text_twice_in_one_ingest_is_stored_once(tmp_path: Path, hash_encoder: HashEncoder):
    library = Library(LocalStore(tmp_path), hash_encoder, "lib")
    a = doc("a.txt", "Copy", "The same words in both files.")
    b = doc("b.txt", "Copy", "The same words in both files.")
    report = library.ingest([a, b])
    assert [r.status for r in report.results] == ["skipped", "added"] or [
        r.status for r in report.results
    ] == ["added", "skipped"]
    assert len(library.articles()) == 1


def test_follow_up_searches_the_previous_article_first(real: Library):
    library = real
    first = library.ask("Why do cats purr?", record_as="1")
    assert first.best is not None and first.best.article.title == "All about cats"
    within = library.follow_up("How many hours a day does a cat sleep?", "1", record_as="2")
    assert FOLLOW_UP_WITHIN in within.notes and within.best is not None
    assert within.best.article.title == "All about cats"
    widened = library.follow_up("At what time of day do owls hunt?", "2")
    assert FOLLOW_UP_WIDENED in widened.notes
    assert widened.best is not None and widened.best.article.title == "All about owls"
    # An unknown previous answer (another server's id) is an ordinary question, without a note.
    plain = library.follow_up("When do owls hunt?", "999")
    assert not any(n.startswith("Follow-up") for n in plain.notes)


def test_records_go_with_their_article(counted: tuple[Library, CountingStore]):
    library, _ = counted
    answer = library.ask("Why do cats purr?", record_as="7")
    recorded = library.recorded("7")
    assert recorded.best.passage == answer.hits[0].passage
    assert recorded.record.question == "Why do cats purr?"
    library.forget("All about cats")
    with pytest.raises(NotFoundError) as err:
        library.recorded("7")
    assert err.value.kind == "answer" and err.value.library == "lib"


def test_a_vote_counts_once_per_voter_even_when_racing(counted: tuple[Library, CountingStore]):
    library, store = counted
    library.ask("Why do cats purr?", record_as="9")
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def click() -> None:
        barrier.wait()
        results.append(library.vote("9", "user-1", up=True, context={"guild": "5"}))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert library.vote("9", "user-2", up=False) is True
    votes = store.inner.list_feedback("lib")
    assert sorted(v.vote for v in votes) == [-1, 1]
    assert {v.extra["guild"] for v in votes if v.user == "user-1"} == {"5"}
    assert all(v.extra["title"] == "All about cats" for v in votes)


# ---------------------------------------------------------------------- one error, two wordings

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(lambda n: ".." not in n)


@settings(max_examples=50, deadline=None)
@given(
    library=names,
    differences=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3),
    rebuildable=st.booleans(),
)
def test_each_front_end_words_the_remedy(library: str, differences: list[str], rebuildable: bool):
    errors = [
        IndexMismatchError(library, differences),
        CorruptIndexError(library, "passage vectors", "do not match", rebuildable=rebuildable, location="/x"),
        EmptyLibraryError(library),
        LibraryBusyError(library, "pid 1 on host, since now"),
        StoreUnavailableError("unreachable", "connection refused"),
    ]
    for error in errors:
        fact = str(error)
        # The core states facts only: no command, no setting.
        assert "`citebot" not in fact and "DATABASE_URL" not in fact and "--library" not in fact
        cli = for_cli(error)
        discord_text, _ = for_discord(error)
        assert cli.startswith(fact) and len(cli) > len(fact)
        assert "`citebot" not in discord_text and "DATABASE_URL" not in discord_text
        # Discord members never see the internal library name either.
        assert f"'{library}'" not in discord_text


def test_the_same_error_reads_differently_at_the_terminal_and_on_discord():
    error = IndexMismatchError("guild-1", ["model: index has 'a', settings have 'b'"])
    assert for_cli(error) == (
        "Library 'guild-1' was built with other settings (model: index has 'a', settings have 'b'). "
        "Run `citebot rebuild --library guild-1` to rebuild it with the current settings, or change "
        "the settings back."
    )
    assert for_discord(error) == (
        "This library needs maintenance by the bot's operator; it has been logged.",
        True,
    )
    damaged = CorruptIndexError(
        "default",
        "database",
        "is damaged (file is not a database)",
        rebuildable=False,
        location="/d/index.sqlite3",
    )
    assert for_cli(damaged).endswith(
        "Damaged file: /d/index.sqlite3. Restore it from a backup, or move /d aside and ingest the "
        "articles again (`citebot ingest PATH`)."
    )


# ---------------------------------------------------------------------- article ids never collide


def test_colliding_ids_get_longer_ones_never_a_replacement(
    tmp_path: Path, hash_encoder: HashEncoder, monkeypatch: pytest.MonkeyPatch
):
    import embeddings.ingest as ingest

    # Every key hashes alike: each id candidate collides, within one batch and across batches.
    monkeypatch.setattr(ingest, "_key_digest", lambda key: "ab" * 32)
    library = Library(LocalStore(tmp_path), hash_encoder, "lib")
    first = [doc(f"k{i}", f"Note {i}", f"Note {i} is about subject number {i}.") for i in range(5)]
    report = library.ingest(first, batch_passages=2)
    assert report.count("added") == 5
    later = library.ingest([doc("k9", "Note 9", "Note nine is about something else.")])
    assert later.count("added") == 1
    articles = library.articles()
    assert sorted(a.key for a in articles) == ["k0", "k1", "k2", "k3", "k4", "k9"]
    assert len({a.id for a in articles}) == 6
    # Re-ingesting a changed article keeps its own id.
    again = library.ingest([doc("k3", "Note 3", "Note 3 changed its mind.")])
    assert again.count("replaced") == 1
    assert {a.key: a.id for a in library.articles()}["k3"] == {a.key: a.id for a in articles}["k3"]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789abcdef", min_size=1, max_size=20), min_size=1, max_size=40, unique=True
    )
)
def test_short_ids_are_unique_prefixes(ids: list[str]):
    from embeddings.library import short_ids

    shown = short_ids(ids)
    for aid in ids:
        assert aid.startswith(shown[aid])
        # A shown id is a prefix of no other id (unless it is that whole other id's prefix too).
        assert [o for o in ids if o.startswith(shown[aid])] == [aid] or shown[aid] == aid


# ---------------------------------------------------------------------- big ingests in bounded memory


def test_an_ingest_embeds_and_commits_as_it_reads(tmp_path: Path, hash_encoder: HashEncoder):
    # Every article of an ingest used to be chunked (with its vectors allocated) before the
    # first was embedded: memory grew with the whole ingest, not with a batch.
    store = LocalStore(tmp_path / "data")
    lib = Library(store, hash_encoder, "lib")
    read = 0
    committed_after: list[int] = []
    write = store.write

    def recording_write(*args: Any, **kwargs: Any) -> None:
        committed_after.append(read)
        write(*args, **kwargs)

    store.write = recording_write  # type: ignore[method-assign]

    def articles():
        nonlocal read
        for i in range(2 * PLAN_BATCH):  # articles are looked up in the store PLAN_BATCH at a time
            read += 1
            yield doc(f"k{i}", f"Article {i}", f"Paragraph one of article {i}.", f"Paragraph two of {i}.")

    progress: list[tuple[int, int]] = []
    report = lib.ingest(articles(), batch_passages=8, progress=lambda d, t: progress.append((d, t)))
    assert report.count("added") == 2 * PLAN_BATCH
    assert committed_after[0] <= PLAN_BATCH  # began writing long before the end
    assert progress[-1] == (4 * PLAN_BATCH, 4 * PLAN_BATCH) and all(d <= t for d, t in progress)
    store.close()


def test_each_distinct_text_goes_through_the_model_once(tmp_path: Path, hash_encoder: HashEncoder):
    # A sentence that is its whole passage (a one-sentence paragraph, a list item, a code block)
    # used to be encoded a second time as a sentence.
    encoded: list[str] = []
    encode = hash_encoder.encode

    def counting(texts: Any, **kwargs: Any) -> Any:
        encoded.extend(texts)
        return encode(texts, **kwargs)

    hash_encoder.encode = counting  # type: ignore[method-assign]
    lib = Library(LocalStore(tmp_path / "data"), hash_encoder, "lib")
    lib.ingest([doc("k", "Notes", "One sentence alone.", "First of two. Second of two.", "- a list item")])
    assert sorted(encoded) == sorted(
        [
            "One sentence alone.",
            "First of two. Second of two.",
            "- a list item",
            "First of two.",
            "Second of two.",
        ]
    )
    # The sentence rows of one-sentence passages carry their passage's vector.
    (info,) = lib.articles()
    passages = lib.store.article_passages("lib", info.id)
    evidence = {e.passage.text: e for e in lib.store.evidence("lib", [p.id for p in passages])}
    alone = evidence["One sentence alone."]
    assert len(alone.sentences) == 1
    np.testing.assert_array_equal(alone.sentences[0].vector, alone.vector)


@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 400), min_size=1, max_size=6),
    limit=st.integers(50, 300),
)
def test_an_article_over_the_size_limit_is_skipped_and_the_rest_kept(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], limit: int
):
    store = LocalStore(tmp_path_factory.mktemp("limit"))
    lib = Library(store, HashEncoder(dim=64, max_tokens=48), "lib", max_article_chars=limit)
    docs = [
        doc(f"k{i}", f"Article {i}", f"Text {i}: " + ("word " * n).strip() + ".")
        for i, n in enumerate(lengths)
    ]
    report = lib.ingest(docs)
    by_source = {r.source: r for r in report.results}
    assert len(by_source) == len(docs)
    for d in docs:
        result = by_source[d.source or d.key]
        if len(d.text) > limit:
            assert result.status == "skipped"
            assert result.reason and "split it into parts" in result.reason
        else:
            assert result.status == "added"
    assert sorted(a.key for a in lib.articles()) == sorted(d.key for d in docs if len(d.text) <= limit)
    store.close()


def test_an_ambiguous_id_prefix_lists_the_matches(
    tmp_path: Path, hash_encoder: HashEncoder, monkeypatch: pytest.MonkeyPatch
):
    import embeddings.ingest as ingest

    # Keys hash alike (ids then differ only where the collision handling makes them longer).
    monkeypatch.setattr(ingest, "_key_digest", lambda key: "ab" * 32)
    library = Library(LocalStore(tmp_path), hash_encoder, "lib")
    library.ingest([doc(f"k{i}", f"Note {i}", f"Note {i} is about subject number {i}.") for i in range(3)])
    ids = [a.id for a in library.articles()]
    with pytest.raises(NotFoundError, match="ambiguous") as caught:
        library.resolve("abab")
    assert all(i[:12] in str(caught.value) for i in ids) and set(caught.value.suggestions) == {
        "Note 0",
        "Note 1",
        "Note 2",
    }
    assert library.resolve(ids[1]).title == "Note 1"  # the whole id is never ambiguous


def test_a_jsonl_record_is_found_by_its_own_id(tmp_path: Path, hash_encoder: HashEncoder):
    from embeddings.articles import parse_jsonl

    library = Library(LocalStore(tmp_path), hash_encoder, "lib")
    records = [
        {"id": "faq-17", "title": "Refunds", "text": "Refunds take five working days."},
        {"id": "faq-18", "title": "Shipping", "text": "Parcels ship within two days."},
    ]
    text = "\n".join(json.dumps(r) for r in records)
    library.ingest([d for d in parse_jsonl(text, source="faq.jsonl") if isinstance(d, Document)])
    assert library.resolve("faq-18").title == "Shipping"


def test_late_chunking_pools_sentences_from_the_passage_pass(model, tmp_path: Path):
    """One forward pass per passage: the passage vector is the model's own, and each sentence's
    is pooled from the tokens it covers (CITEBOT_SENTENCE_VECTORS=late)."""
    texts = ["Cats sleep a lot. Dogs bark at night.", "Paris is the capital of France."]
    spans = [[(0, 17), (18, 37)], [(0, 31)]]
    passages, sentences = model.encode_spans(texts, spans)
    # The same vectors up to float rounding: the model pools in torch, this in numpy, and how far
    # their float results differ depends on the CPU's kernels (up to 4e-4 a component on one).
    cosines = np.sum(passages * model.encode(texts), axis=1)
    assert np.all(cosines > 0.9999), cosines
    assert [s.shape for s in sentences] == [(2, model.dim), (1, model.dim)]
    assert np.allclose(np.linalg.norm(sentences[0], axis=1), 1.0, atol=1e-5)
    # A sentence that is its whole text is pooled from the same tokens as the text (minus the
    # special tokens), so it lies close to the text's vector; two sentences differ.
    assert float(sentences[1][0] @ passages[1]) > 0.95
    assert float(sentences[0][0] @ sentences[0][1]) < 0.95
    library = Library(LocalStore(tmp_path), model, "late", sentence_vectors="late")
    library.ingest_paths([SEED])
    answer = library.ask("What did the American Embassy in Kyiv say?")
    assert answer.answered and answer.sentence and "Embassy" in answer.sentence
