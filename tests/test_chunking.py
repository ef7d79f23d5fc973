"""Sentence splitting and passage packing: unit cases and hypothesis properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddings import ChunkSpec, HashEncoder, chunk_document, split_sentences
from embeddings.articles import assemble
from embeddings.chunking import sentence_spans
from embeddings.types import Document


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith went to Washington. He said hi.", ["Mr. Smith went to Washington.", "He said hi."]),
        ("It sold 1.5 million copies. Then it stopped.", ["It sold 1.5 million copies.", "Then it stopped."]),
        ("J. K. Rowling wrote it. It sold well.", ["J. K. Rowling wrote it.", "It sold well."]),
        ('He asked "Why?" and left. Nobody knew.', ['He asked "Why?" and left.', "Nobody knew."]),
        (
            '"It\'s too early," Biden said. "We are watching."',
            ['"It\'s too early," Biden said.', '"We are watching."'],
        ),
        ("the u.s. said no. then it left.", ["the u.s. said no.", "then it left."]),
        ("See No. 5 on the list. Done!", ["See No. 5 on the list.", "Done!"]),
        ("Wait... what? Yes!", ["Wait... what?", "Yes!"]),
        ("No terminal punctuation", ["No terminal punctuation"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]):
    assert [text[a:b] for a, b in split_sentences(text)] == expected


def _doc(paragraphs: list[str]) -> Document:
    text, spans = assemble(paragraphs)
    return Document(key="k", title="t", text=text, paragraphs=spans)


def test_passages_stay_inside_paragraphs_and_overlap_one_sentence():
    enc = HashEncoder(max_tokens=12)
    sentences = [f"Sentence number {w} is here." for w in ("one", "two", "three", "four", "five")]
    doc = _doc([" ".join(sentences), "A second paragraph."])
    passages = chunk_document(doc, ChunkSpec(max_tokens=12, overlap=1), enc.count_tokens, enc.token_offsets)
    assert all(p.paragraph in (1, 2) for p in passages)
    first_para = [p for p in passages if p.paragraph == 1]
    assert first_para[0].start == doc.paragraphs[0][0]
    assert first_para[-1].end == doc.paragraphs[0][1]
    assert passages[-1].text == "A second paragraph."
    assert [p.ordinal for p in passages] == list(range(len(passages)))


def test_overlap_is_exactly_one_sentence():
    enc = HashEncoder(max_tokens=40)
    sentences = [f"Alpha {i} beta gamma." for i in range(10)]  # 5 tokens each
    doc = _doc([" ".join(sentences)])
    passages = chunk_document(doc, ChunkSpec(max_tokens=20, overlap=1), enc.count_tokens, enc.token_offsets)
    assert len(passages) > 1
    for a, b in itertools.pairwise(passages):
        last_of_a = split_sentences(a.text)[-1]
        first_of_b = split_sentences(b.text)[0]
        assert a.text[slice(*last_of_a)] == b.text[slice(*first_of_b)]


def test_overlong_sentence_is_cut_not_truncated():
    enc = HashEncoder(max_tokens=10)
    words = [f"w{i}" for i in range(35)]
    doc = _doc([" ".join(words) + "."])
    passages = chunk_document(doc, ChunkSpec(max_tokens=10, overlap=1), enc.count_tokens, enc.token_offsets)
    assert all(n <= 10 for n in enc.count_tokens([p.text for p in passages]))
    covered = " ".join(p.text for p in passages)
    for w in words:
        assert w in covered


def test_real_tokenizer_keeps_passages_in_the_window(model):
    long_para = " ".join(
        f"The committee of inquiry number {i} examined unprecedented interdisciplinary "
        f"counterarguments about photosynthesis and thermodynamics."
        for i in range(40)
    )
    doc = _doc([long_para, "Short one."])
    passages = chunk_document(
        doc, ChunkSpec(max_tokens=model.max_tokens), model.count_tokens, model.token_offsets
    )
    counts = model.count_tokens([p.text for p in passages])
    assert max(counts) <= model.max_tokens == 254
    assert len(passages) >= 3


_word = st.text(alphabet=st.characters(codec="utf-8", categories=["Ll", "Lu", "Nd"]), min_size=1, max_size=12)
_sentence = st.builds(
    lambda ws, end: " ".join(ws) + end,
    st.lists(_word, min_size=1, max_size=30),
    st.sampled_from([".", "!", "?", '."', ""]),
)
_paragraph = st.builds(" ".join, st.lists(_sentence, min_size=1, max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    paragraphs=st.lists(_paragraph, min_size=1, max_size=5),
    budget=st.integers(min_value=8, max_value=60),
    overlap=st.integers(min_value=0, max_value=2),
)
def test_chunking_properties(paragraphs: list[str], budget: int, overlap: int):
    enc = HashEncoder(max_tokens=budget)
    doc = _doc(paragraphs)
    passages = chunk_document(
        doc, ChunkSpec(max_tokens=budget, overlap=overlap), enc.count_tokens, enc.token_offsets
    )
    # No passage is empty, none is over the limit, every one is the text at its offsets.
    assert passages
    for p in passages:
        assert p.text.strip()
        assert p.text == doc.text[p.start : p.end]
        assert enc.count_tokens([p.text])[0] <= budget
        pa, pb = doc.paragraphs[p.paragraph - 1]
        assert pa <= p.start < p.end <= pb
    # Order is kept, and each passage reaches further than the one before: a passage that is a
    # piece of its neighbour (an overlap that could add nothing) is never made.
    starts = [p.start for p in passages]
    assert starts == sorted(starts)
    for x, y in itertools.pairwise(passages):
        assert (y.end > x.end and y.start > x.start) or y.paragraph != x.paragraph
    # Every sentence's every character lands in some passage.
    covered = bytearray(len(doc.text))
    for p in passages:
        covered[p.start : p.end] = b"\x01" * (p.end - p.start)
    for _, a, b in sentence_spans(doc):
        for i in range(a, b):
            assert covered[i] or doc.text[i].isspace(), (doc.text[a:b], i)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paragraphs=st.lists(_paragraph, min_size=1, max_size=3), budget=st.integers(min_value=8, max_value=64))
def test_chunking_properties_with_the_real_tokenizer(model, paragraphs: list[str], budget: int):
    doc = _doc(paragraphs)
    passages = chunk_document(doc, ChunkSpec(max_tokens=budget), model.count_tokens, model.token_offsets)
    assert passages
    assert max(model.count_tokens([p.text for p in passages])) <= budget
    covered = bytearray(len(doc.text))
    for p in passages:
        covered[p.start : p.end] = b"\x01" * (p.end - p.start)
    for _, a, b in sentence_spans(doc):
        assert all(covered[i] or doc.text[i].isspace() for i in range(a, b))
