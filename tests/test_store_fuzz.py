"""Damage to any file of a library folder: a truthful error or the right answer, never anything else.

Each example copies a pristine library, flips random bytes in one of its files, opens it with a
fresh store and uses it the way the bot and the CLI do. The only outcomes allowed are a
:class:`CitebotError` (said to the user in words) or results identical in text and citation to
the pristine library's. A traceback, a hang (pytest-timeout) or a quote that differs from what
was ingested fails the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.wording import for_cli
from embeddings import CitebotError, CorruptIndexError, HashEncoder, Library, LocalStore
from embeddings.articles import assemble
from embeddings.types import Answer, Citation, Document

QUESTIONS = ("Why do cats purr?", "How long do dogs walk?", "What do parrots eat?", "cats")


def _doc(key: str, title: str, *paragraphs: str) -> Document:
    text, spans = assemble(paragraphs)
    return Document(key=key, title=title, text=text, paragraphs=spans, source=key, byline="By Ann Lee")


DOCS = [
    _doc(
        "cats",
        "All about cats",
        "Cats purr when content. They knead blankets.",
        "Cats sleep sixteen hours a day.",
    ),
    _doc(
        "dogs", "All about dogs", "Dogs bark at strangers.", "Dogs love long walks in the park every morning."
    ),
    _doc(
        "birds", "Parrots at home", "Parrots eat seeds, fruit and nuts.", "A parrot can live for fifty years."
    ),
]


def _use(root: Path) -> dict[str, Any]:
    """Everything a reader does with a library, as plain values to compare."""
    store = LocalStore(root)
    try:
        lib = Library(store, HashEncoder(dim=64, max_tokens=48), "lib")
        infos = lib.articles()
        return {
            "articles": [(a.id, a.key, a.title, a.byline, a.date, a.url, a.passage_count) for a in infos],
            "answers": [lib.ask(question) for question in QUESTIONS],
            "summaries": [lib.summarize(a.id).sentences for a in infos],
            "passages": [
                [(p.text, p.paragraph, p.start, p.end) for p in store.article_passages("lib", a.id)]
                for a in infos
            ],
        }
    finally:
        store.close()


def _all_quotes(expected: dict[str, Any]) -> set[tuple[str, Citation]]:
    """Every passage of the pristine library with the citation it is shown under."""
    by_id = {a[0]: a for a in expected["articles"]}
    return {
        (text, Citation(aid, by_id[aid][2], by_id[aid][3], by_id[aid][4], paragraph, by_id[aid][5]))
        for aid, passages in zip(by_id, expected["passages"], strict=True)
        for text, paragraph, _, _ in passages
    }


def _quotes(answers: list[Answer]) -> set[tuple[str, Citation]]:
    return {(h.passage.text, h.citation) for a in answers for h in a.hits}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("pristine")
    store = LocalStore(root)
    Library(store, HashEncoder(dim=64, max_tokens=48), "lib").ingest(DOCS)
    store.close()
    return root, _use(root)


TWINS = {
    "ids.1.npy": ("vectors.1.npy",),
    "vectors.1.npy": ("ids.1.npy",),
    "sentence_ids.1.npy": ("sentences.1.npy",),
    "sentences.1.npy": ("sentence_ids.1.npy",),
}
FILES = ["index.sqlite3", "vectors.1.npy", "ids.1.npy", "sentences.1.npy", "sentence_ids.1.npy"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(FILES),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_flipped_bytes_in_any_library_file_give_a_truthful_error_or_the_right_answer(
    pristine: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    flips: list[tuple[float, int]],
):
    source, expected = pristine
    root = tmp_path_factory.mktemp("damaged")
    shutil.copytree(source, root, dirs_exist_ok=True)
    path = root / "libraries" / "lib" / name
    data = bytearray(path.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path.write_bytes(bytes(data))
    try:
        seen = _use(root)
    except CitebotError as exc:
        words = for_cli(exc)
        assert words and "unexpected" not in words.lower()
        # The message names the damaged file; a vectors file's twin (vectors and their ids are
        # checked as a pair) may be blamed when the two disagree in a way neither file shows alone.
        assert isinstance(exc, CorruptIndexError) and exc.location is not None
        assert Path(exc.location).name in {name, *TWINS.get(name, ())}
        assert exc.location in words
        return
    # What is stored and checksummed reads back exactly as it was ingested.
    for part in ("articles", "summaries", "passages"):
        assert seen[part] == expected[part]
    # Answers may rank differently when a damaged page changed word counts or sentence bounds
    # (derived data, no checksum), but every quote is a stored passage under its own citation.
    assert _quotes(seen["answers"]) <= _quotes(expected["answers"]) | _all_quotes(expected)
    for answer in seen["answers"]:
        if answer.best is not None and answer.highlight is not None:
            start, end = answer.highlight
            assert 0 <= start < end <= len(answer.best.passage.text)
