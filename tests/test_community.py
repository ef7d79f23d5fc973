"""Community mode in the core, on both stores: records, settings, the question log and gaps,
pins, quotas, a member's data, leaving, forum auto-replies, export and import."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddings import HashEncoder, InputError, Library, community
from embeddings.community import QuotaError, ServerSettings
from embeddings.exchange import export_library, import_library
from embeddings.store import Record, Store
from embeddings.types import Document
from tests.test_store_contract import _backend, any_store, backend  # noqa: F401  (fixtures)

PETS = (
    "Cats sleep sixteen hours a day, mostly in the afternoon.",
    "Dogs bark at strangers and guard the house at night.",
    "Parrots can learn hundreds of words and live for decades.",
)


def pets(*paragraphs: str, key: str = "pets") -> Document:
    text = "\n\n".join(paragraphs)
    spans, at = [], 0
    for p in paragraphs:
        spans.append((at, at + len(p)))
        at += len(p) + 2
    return Document(key, "Pets", text, tuple(spans))


@pytest.fixture
def enc() -> HashEncoder:
    return HashEncoder(dim=64, max_tokens=48)


@pytest.fixture
def lib(any_store: Store, enc: HashEncoder) -> Library:  # noqa: F811
    library = Library(any_store, enc, "guild-1")
    library.ingest([pets(*PETS)])
    # The hash encoder's confidences are low: answer everything unless a test says otherwise.
    library.configure(abstain_threshold=0.0)
    return library


# ---------------------------------------------------------------------- records


def test_records_are_filtered_replaced_and_erased(any_store: Store):  # noqa: F811
    assert any_store.records("nowhere", "x") == [] and any_store.delete_records("nowhere") == 0
    any_store.put_record("lib", Record("q", "a", '{"n": 1}', "u1", "2026-01-01T00:00:00+00:00"))
    any_store.put_record("lib", Record("q", "b", '{"n": 2}', "u2", "2026-02-01T00:00:00+00:00"))
    any_store.put_record("lib", Record("q", "a", '{"n": 3}', "u1", "2026-03-01T00:00:00+00:00"))  # replaces
    any_store.put_record("lib", Record("pin", "a", "{}"))
    any_store.put_record("other", Record("q", "z", "{}", "u1"))
    assert [(r.key, r.value) for r in any_store.records("lib", "q")] == [("b", '{"n": 2}'), ("a", '{"n": 3}')]
    assert [r.key for r in any_store.records("lib", "q", user="u1")] == ["a"]
    assert [r.key for r in any_store.records("lib", "q", keys=["b", "zz"])] == ["b"]
    assert [r.key for r in any_store.records("lib", "q", since="2026-02-15T00:00:00+00:00")] == ["a"]
    assert any_store.records("lib", "q", keys=[]) == []
    assert any_store.delete_records("lib", "q", before="2026-02-15T00:00:00+00:00") == 1
    assert any_store.delete_records("lib", user="u1") == 1
    assert [r.kind for r in any_store.records("lib", "pin")] == ["pin"]
    assert [r.key for r in any_store.records("other", "q")] == ["z"]  # another library's stay
    assert any_store.drop("other") and not any_store.drop("other")
    assert "other" not in any_store.libraries() and any_store.records("other", "q") == []


# ---------------------------------------------------------------------- settings


def test_settings_default_change_and_reset(lib: Library):
    defaults = ServerSettings().over(community.DEFAULTS)
    assert lib.settings().thread_mode is False and lib.settings().retention_days == defaults.retention_days
    lib.configure(
        thread_mode="on", mention_channels="<#123456789012345678>, 223456789012345678", cooldown="2/10"
    )
    s = lib.settings()
    assert (
        s.thread_mode
        and s.mention_channels == (123456789012345678, 223456789012345678)
        and s.cooldown == (2, 10.0)
    )
    assert lib.own_settings().public_answers is None  # untouched: the default applies
    lib.configure(thread_mode=None)
    assert lib.settings().thread_mode is False and lib.own_settings().thread_mode is None
    with pytest.raises(InputError, match="not on or off"):
        lib.configure(thread_mode="maybe")
    with pytest.raises(InputError, match="There is no setting"):
        community.parse_setting("colour", "red")


@given(name=st.sampled_from(sorted(community.SETTING_HELP)), raw=st.text(max_size=40))
def test_any_setting_text_parses_or_is_refused_in_words(name: str, raw: str):
    try:
        value = community.parse_setting(name, raw)
    except InputError as exc:
        assert name in exc.message and len(exc.message) < 500
        return
    # What parses is stored and read back the same.
    stored = ServerSettings(**{name: value})
    assert ServerSettings.from_json(stored.to_json()) == stored


def test_a_damaged_settings_record_falls_back_to_defaults(lib: Library, any_store: Store):  # noqa: F811
    any_store.put_record(
        "guild-1", Record(community.SETTINGS_KIND, "server", '{"thread_mode": "x", "cooldown": [1, -5]}')
    )
    lib._forget_state()
    assert lib.own_settings() == ServerSettings() and lib.settings().thread_mode is False


def test_the_server_abstain_threshold_decides_what_is_answered(lib: Library):
    assert lib.ask("How long do cats sleep?").answered
    lib.configure(abstain_threshold=1.0)
    assert not lib.ask("How long do cats sleep?").answered


# ---------------------------------------------------------------------- questions and gaps


def test_gaps_group_declined_and_downvoted_questions(lib: Library):
    lib.configure(abstain_threshold=0.99)  # everything is declined
    for i, q in enumerate(
        ["What do giraffes eat?", "what do giraffes eat", "What do giraffes eat??", "Who built Rome?"]
    ):
        lib.ask(q, record_as=f"q{i}", asked_by=f"u{i}")
    lib.configure(abstain_threshold=0.0)
    answered = lib.ask("How long do cats sleep?", record_as="a1", asked_by="u9")
    assert answered.answered
    lib.vote("a1", "u9", up=False)
    gaps = lib.gaps()
    assert [g.count for g in gaps] == [3, 1, 1]
    assert gaps[0].examples[0].lower().startswith("what do giraffes eat") and gaps[0].declined == 3
    assert any(g.downvoted == 1 and g.examples == ("How long do cats sleep?",) for g in gaps)
    assert all(g.closest_article == "Pets" for g in gaps)
    rows = community.gaps_csv(gaps).splitlines()
    assert rows[0].startswith("group,group_size") and len(rows) == 1 + 5
    # A period before the questions were asked finds nothing.
    assert lib.gaps(community.utcnow() + timedelta(hours=1)) == []


def test_questions_are_kept_only_for_the_retention_period(lib: Library, any_store: Store):  # noqa: F811
    lib.ask("What do giraffes eat?", asked_by="u1")
    old = community.question_record(
        "old", "u1", "Old question?", np.ones(64, np.float32), False, 0.1, None, None
    )
    any_store.put_record(
        "guild-1", Record(old.kind, old.key, old.value, old.user, "2020-01-01T00:00:00+00:00")
    )
    assert len(lib.member_data("u1").questions) == 2
    lib.gaps()  # purges past the retention (90 days)
    assert [q.question for q in lib.member_data("u1").questions] == ["What do giraffes eat?"]
    lib.configure(retention_days=0)
    lib.ask("Who built Rome?", asked_by="u2")
    assert lib.member_data("u2").questions == ()


hostile = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), min_size=1, max_size=60)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=hostile)
def test_any_question_is_logged_voted_and_erased(lib: Library, question: str):
    """Control characters and lone surrogates never reach a store (PostgreSQL refuses NUL)."""
    try:
        answer = lib.ask(question, record_as="h1", asked_by="hostile")
    except InputError:
        return  # nothing but blanks and control characters: an empty question
    assert "\x00" not in answer.question
    if answer.best is not None:
        lib.vote("h1", "hostile", up=False)
        lib.explain_vote("h1", "hostile", "wrong")
    data = lib.member_data("hostile")
    assert data.questions[-1].question == answer.question
    lib.erase_member("hostile")
    assert lib.member_data("hostile") == community.MemberData((), ())


# ---------------------------------------------------------------------- pins


def test_a_pin_answers_close_questions_and_survives_an_unchanged_reingest(lib: Library):
    first = lib.ask("Which animal learns words?", record_as="p1", asked_by="u1")
    assert first.answered and len(first.hits) >= 2
    rank = next(h.rank for h in first.hits if "Parrots" in h.passage.text)
    other = next(h for h in first.hits if "Parrots" not in h.passage.text)
    pin = lib.pin("p1", other.rank, "mod")  # the moderators prefer another passage
    assert pin.paragraph == other.passage.paragraph and rank != other.rank
    again = lib.ask("Which animal learns words?")
    assert again.pinned and again.best is not None and again.best.passage.id == other.passage.id
    assert any("moderators" in n for n in again.notes)
    assert not lib.ask("How long do cats sleep?").pinned  # another question: no pin
    # Re-ingest with the pinned paragraph unchanged: the pin follows it to its new passage.
    changed = [PETS[0] + " Kittens sleep more.", PETS[1], PETS[2]]
    if other.passage.paragraph == 1:
        changed = [PETS[0], PETS[1] + " Puppies too.", PETS[2]]
    report = lib.ingest([pets(*changed)])
    assert report.dropped_pins == ()
    assert lib.ask("Which animal learns words?").pinned
    # Change the pinned paragraph itself: the pin is dropped and reported.
    edited = list(changed)
    edited[other.passage.paragraph - 1] += " Edited."
    report = lib.ingest([pets(*edited)])
    assert report.dropped_pins == ("Which animal learns words?",)
    assert lib.pins() == [] and [p.question for p in lib.dropped_pins()] == ["Which animal learns words?"]
    assert not lib.ask("Which animal learns words?").pinned


def test_pins_and_logged_questions_of_another_model_are_left_aside(lib: Library, any_store: Store):  # noqa: F811
    lib.ask("How long do cats sleep?", record_as="p9", asked_by="u1")
    pin = lib.pin("p9", 1, "mod")
    old = community.Pin("0ld", "How long do cats sleep?", np.ones(8, np.float32) / np.sqrt(8), pin.passage_id)
    any_store.put_record("guild-1", old.to_record())
    bad = community.question_record("b", "u2", "Old model?", np.ones(8, np.float32), False, 0.1, None, None)
    any_store.put_record("guild-1", bad)
    lib.configure(abstain_threshold=0.99)
    lib.ask("What do giraffes eat?", record_as="g1", asked_by="u3")
    lib._forget_state()
    assert lib.ask("How long do cats sleep?").pinned  # the current model's pin still applies
    assert [g.examples for g in lib.gaps()] == [("What do giraffes eat?",)]


def test_pins_are_listed_and_removed(lib: Library):
    lib.ask("How long do cats sleep?", record_as="p2")
    pin = lib.pin("p2", 1, "mod")
    assert lib.pin("p2", 1, "mod").id == pin.id and len(lib.pins()) == 1  # the same pin twice is one
    with pytest.raises(Exception, match="No pin"):
        lib.unpin("ffff")
    assert lib.unpin(pin.id[:4]).id == pin.id and lib.pins() == []


# ---------------------------------------------------------------------- quotas, members, leaving


def test_ingest_quotas(lib: Library):
    lib.configure(max_articles=1)
    with pytest.raises(QuotaError, match="library is full"):
        lib.check_ingest_quota()
    lib.configure(max_articles=0, articles_per_day=1)
    lib.check_ingest_quota()
    report = lib.ingest([pets("A new article about fish.", key="fish")])
    lib.record_usage(report)
    with pytest.raises(QuotaError, match="1 articles in the last 24 hours"):
        lib.check_ingest_quota()
    lib.configure(articles_per_day=0, megabytes_per_day=0.00001)
    with pytest.raises(QuotaError, match="MB of text"):
        lib.check_ingest_quota()


def test_a_library_is_kept_for_the_grace_period_then_deleted(lib: Library, any_store: Store):  # noqa: F811
    now = community.utcnow()
    community.mark_left(any_store, "guild-1", now - timedelta(days=10))
    assert community.expired_libraries(any_store, ["guild-1"], 30, now) == []
    assert community.expired_libraries(any_store, ["guild-1"], 5, now) == ["guild-1"]
    assert community.clear_left(any_store, "guild-1")  # the bot was added back
    assert community.expired_libraries(any_store, ["guild-1"], 5, now) == []


# ---------------------------------------------------------------------- forum auto-replies


def test_auto_reply_only_when_sure_and_never_twice(lib: Library):
    lib.configure(autoreply_threshold=1.0)
    assert lib.auto_reply("post-1", "How long do cats sleep?") is None  # not sure enough: silent
    lib.configure(autoreply_threshold=0.0)
    assert lib.auto_reply("post-1", "How long do cats sleep?") is None  # already decided there
    answer = lib.auto_reply("post-2", "How long do cats sleep?", asked_by="u1")
    assert answer is not None and answer.best is not None
    assert lib.auto_reply("post-2", "How long do cats sleep?") is None
    assert lib.latest_answer("post-2") == "post-2"  # the post's next question is a follow-up


# ---------------------------------------------------------------------- export and import


@pytest.mark.parametrize("target", ["local", "postgres"])
def test_export_and_import_round_trip(lib: Library, enc: HashEncoder, target: str, request, tmp_path):
    lib.configure(thread_mode=True, questions_per_minute=5)
    lib.ask("Which animal learns words?", record_as="e1", asked_by="u1")
    lib.pin("e1", 1, "mod")
    lib.vote("e1", "u1", up=False)
    lib.explain_vote("e1", "u1", "outdated")
    lib.store.put_subscription("guild-1", "https://example.org/feed.xml", '{"kind": "feed"}')
    out = io.StringIO()
    export_library(lib, out)
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["type"] == "header"
    assert "u1" not in [json.loads(x).get("user") for x in lines if json.loads(x)["type"] == "question"]
    store = _backend(target, request, tmp_path / "target").open()
    try:
        copy = Library(store, enc, "imported")
        report = import_library(copy, lines)
        assert report.ingest.count("added") == 1 and report.pins == 1 and report.votes == 1
        assert report.subscriptions == 1 and report.settings
        assert copy.settings().thread_mode and copy.settings().questions_per_minute == 5
        assert copy.articles()[0].title == "Pets"
        assert copy.store.get_article("imported", copy.articles()[0].id).text == "\n\n".join(PETS)
        assert copy.store.list_feedback("imported")[0].extra["reason"] == "out of date"
        assert copy.ask("Which animal learns words?").pinned
        # Importing the same file again adds nothing twice.
        again = import_library(copy, lines)
        assert again.ingest.count("unchanged") == 1 and again.votes == 0 and len(copy.pins()) == 1
    finally:
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(['{"type": "article"}', "[]", '{"type": "pin", "value": 1}']),
        ),
        max_size=4,
    )
)
def test_a_bad_import_file_changes_nothing_and_says_where(lib: Library, garbage: list[str]):
    header = json.dumps({"type": "header", "format": "citebot-library", "version": 1})
    before = (lib.articles(), lib.own_settings(), lib.pins())
    for lines in (garbage, [header, *garbage]):
        try:
            import_library(lib, lines, source="upload.jsonl")
        except InputError as exc:
            assert exc.message.startswith("upload.jsonl can't be imported; nothing was changed.")
            assert "line" in exc.message or "empty" in exc.message
    assert (lib.articles(), lib.own_settings(), lib.pins()) == before
