"""Headings are structure, code is code: how Markdown and HTML become paragraphs with a layout.

Generated documents (hypothesis) with sections, wrapped prose, list items and code blocks go
through the real parsers; every prose paragraph must come out whole and re-flowed under its
section path, every code block exactly as written, and no heading may be a paragraph.
"""

from __future__ import annotations

import html
import itertools
import re
import textwrap
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import Terminal
from bot.render import code_excerpt
from embeddings import CODE, HashEncoder, Layout
from embeddings.articles import Metadata, clean_article, parse_html, parse_markdown
from embeddings.chunking import ChunkSpec, chunk_document
from embeddings.library import Library
from embeddings.store.local import LocalStore
from embeddings.summarize import summary_sentences
from embeddings.types import SECTION_SEPARATOR

WORDS = (
    "memory owner value scope heap stack string vector thread lock channel borrow compiler "
    "program function module crate trait type pattern error result option loop match closure"
).split()


def _words(draw: st.DrawFn, lo: int, hi: int) -> list[str]:
    return draw(st.lists(st.sampled_from(WORDS), min_size=lo, max_size=hi))


@st.composite
def sentence(draw: st.DrawFn) -> str:
    words = _words(draw, 4, 14)
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


@st.composite
def prose(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(sentence(), min_size=1, max_size=5)))


@st.composite
def code(draw: st.DrawFn) -> str:
    lines = ["fn main() {"]
    for _ in range(draw(st.integers(1, 6))):
        indent = "    " * draw(st.integers(1, 3))
        words = _words(draw, 1, 5)
        comment = draw(st.booleans())
        lines.append(
            indent + ("// " + " ".join(words) + "." if comment else f"let {words[0]} = {len(words)};")
        )
    lines.append("}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Part:
    kind: str  # "heading", "prose", "item", "code"
    text: str
    level: int = 0


@st.composite
def parts(draw: st.DrawFn) -> list[Part]:
    out: list[Part] = []
    for _ in range(draw(st.integers(2, 10))):
        kind = draw(st.sampled_from(["heading", "prose", "prose", "item", "code"]))
        if kind == "heading":
            words = _words(draw, 1, 4)
            out.append(Part(kind, " ".join(words).capitalize(), draw(st.integers(2, 4))))
        elif kind == "code":
            out.append(Part(kind, draw(code())))
        else:
            out.append(Part(kind, draw(prose())))
    # Enough prose to be an article: on a page of a few words the HTML extractor falls back to
    # taking the whole page as one block, as it should.
    out.append(Part("prose", " ".join(draw(st.lists(sentence(), min_size=8, max_size=10)))))
    # A page that repeats a paragraph word for word loses the copy to the HTML extractor's
    # duplicate filter (by design: a repeated block is usually page furniture).
    seen: set[str] = set()
    return [p for p in out if p.kind == "heading" or not (p.text in seen or seen.add(p.text))]


def expected(parts: list[Part]) -> list[tuple[str, str, str]]:
    """``(kind, section, text)`` of every paragraph the document should have."""
    open_: list[tuple[int, str]] = []
    out = []
    for part in parts:
        if part.kind == "heading":
            while open_ and open_[-1][0] >= part.level:
                open_.pop()
            open_.append((part.level, part.text))
            continue
        section = SECTION_SEPARATOR.join(t for _, t in open_)
        out.append((CODE if part.kind == "code" else "", section, part.text))
    return out


def paragraphs_of(doc) -> list[tuple[str, str, str]]:
    return [
        (doc.layout.kind(n), doc.layout.section(n), doc.text[a:b])
        for n, (a, b) in enumerate(doc.paragraphs, start=1)
    ]


def to_markdown(parts: list[Part], title: str) -> str:
    out = [f"# {title}", ""]
    for part in parts:
        if part.kind == "heading":
            out.append("#" * part.level + " " + part.text)
        elif part.kind == "code":
            out.append("```rust\n" + part.text + "\n```")
        elif part.kind == "item":
            out.append("- " + "\n  ".join(textwrap.wrap(part.text, 40)))
        else:
            out.append("\n".join(textwrap.wrap(part.text, 50)))  # hard-wrapped source lines
        out.append("")
    return "\n".join(out)


def to_html(parts: list[Part], title: str) -> str:
    body = [f"<h1>{title}</h1>"]
    for part in parts:
        text = html.escape(part.text)
        if part.kind == "heading":
            body.append(f"<h{part.level}>{text}</h{part.level}>")
        elif part.kind == "code":
            body.append(f"<pre><code>{text}</code></pre>")
        elif part.kind == "item":
            body.append(f"<ul><li>{text}</li></ul>")
        else:
            body.append("<p>" + "\n".join(textwrap.wrap(text, 50)) + "</p>")
    return (
        f"<html><head><title>{title}</title></head><body><main><article>"
        + "\n".join(body)
        + "</article></main></body></html>"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts())
def test_markdown_paragraphs_are_the_documents_blocks(parts: list[Part]):
    doc = parse_markdown(to_markdown(parts, "Guide"), key="k", source="guide.md")
    assert doc.title == "Guide"
    assert paragraphs_of(doc) == expected(parts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts())
def test_html_paragraphs_are_the_pages_blocks(parts: list[Part]):
    # Two adjacent code blocks that differ only in indentation (or not at all) included: the
    # extractor drops such a repeat, and the parser puts it back from the page.
    doc = parse_html(to_html(parts, "Guide"), key="k", source="guide.html")
    assert doc.title == "Guide"
    assert paragraphs_of(doc) == expected(parts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code(), st.sampled_from(["same", "indented", "dedented"]), st.booleans(), parts())
def test_a_listing_shown_twice_is_kept_twice_never_three_times(
    listing: str, how: str, between: bool, rest: list[Part]
):
    """The HTML extractor drops a block repeating the previous one up to whitespace: both
    listings must come out, once each, whether prose stands between them or not."""
    if how == "indented":
        again = "\n".join("  " + line for line in listing.split("\n"))
    elif how == "dedented":
        again = "\n".join(line.removeprefix("    ") for line in listing.split("\n"))
    else:
        again = listing
    middle = [Part("prose", "Here is the same listing once more, laid out again.")] if between else []
    page = [Part("code", listing), *middle, Part("code", again), *rest]
    doc = parse_html(to_html(page, "Guide"), key="k", source="guide.html")
    got = [text for kind, _, text in paragraphs_of(doc) if kind == CODE]
    want = [p.text for p in page if p.kind == "code"]
    assert got == want


def test_a_heading_is_never_a_paragraph_and_code_keeps_its_indentation():
    md = "# API\n\nIntro text here.\n\n## File descriptors\n\n```c\nint main() {\n    // Check if the file exists\n    return 0;\n}\n```\n\n    indented();\n    block();\n"
    doc = parse_markdown(md, key="k", source="api.md")
    got = paragraphs_of(doc)
    assert ("", "", "Intro text here.") in got
    assert (
        CODE,
        "File descriptors",
        "int main() {\n    // Check if the file exists\n    return 0;\n}",
    ) in got
    assert (CODE, "File descriptors", "indented();\nblock();") in got
    assert all(text != "File descriptors" for _, _, text in got)


@settings(max_examples=40, deadline=None)
@given(st.lists(code(), min_size=1, max_size=4), st.integers(12, 60))
def test_no_passage_is_a_lone_brace_and_code_is_cut_between_lines(blocks: list[str], budget: int):
    md = "# Code\n\nSome words first.\n\n" + "\n\n".join(f"```\n{b}\n```" for b in blocks)
    doc = parse_markdown(md, key="k", source="code.md")
    enc = HashEncoder()
    passages = chunk_document(doc, ChunkSpec(budget), enc.count_tokens, enc.token_offsets)
    code_passages = [p for p in passages if p.is_code]
    assert code_passages
    for p in code_passages:
        assert p.text.strip() not in ("{", "}")
        assert doc.layout.kind(p.paragraph) == CODE
    # The pieces of each block, in order, cover the block (consecutive passages may overlap).
    for number in {p.paragraph for p in code_passages}:
        a, b = doc.paragraphs[number - 1]
        pieces = [p for p in code_passages if p.paragraph == number]
        assert pieces[0].start == a and pieces[-1].end == b
        for x, y in itertools.pairwise(pieces):
            assert x.start < y.start and x.end < y.end
            assert not doc.text[x.end : y.start].strip()


def test_code_is_never_the_highlight_and_the_citation_names_the_section(tmp_path):
    md = (
        "# Files\n\n## Opening files\n\nA file is opened with the open call, which returns a descriptor.\n\n"
        "```c\n// Check if the file exists before opening the file\nint fd = open(path, O_RDONLY);\n```\n\n"
        "## Closing files\n\nA descriptor is released with close when the program is done with the file.\n"
    )
    doc = parse_markdown(md, key="k", source="files.md")
    lib = Library(LocalStore(tmp_path), HashEncoder(), "t")
    lib.ingest([doc])
    stored = lib.store.get_article("t", lib.articles()[0].id)
    assert stored is not None and stored.layout == doc.layout
    for question in ("Check if the file exists before opening the file", "How is a descriptor released?"):
        answer = lib.ask(question)
        for hit in answer.hits:
            assert hit.passage.section in ("Opening files", "Closing files")
            assert hit.citation.place.startswith(f"§ {hit.passage.section}, ¶ ")
        if answer.best is not None and answer.best.passage.is_code:
            assert answer.highlight is None and answer.sentence is None
            shown = Terminal(_Sink()).answer(answer)
            assert "```\n// Check if the file exists" in shown and "**" not in shown


class _Sink:
    def write(self, s: str) -> int:
        return len(s)

    def isatty(self) -> bool:
        return False


def test_summaries_never_quote_code():
    md = "# T\n\nRust checks borrows at compile time. It rejects dangling references.\n\n```\nlet a = 1;\nlet b = 2;\n```\n\nThe borrow checker is strict. Programs that pass it are memory safe.\n"
    doc = parse_markdown(md, key="k")
    spans = summary_sentences(doc.text, doc.paragraphs, doc.layout)
    assert spans and all(doc.layout.kind(p) != CODE for _, _, p in spans)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("`ab\n {}<@>"), max_size=400), st.integers(20, 300))
def test_a_code_excerpt_stays_one_fenced_block_within_its_limit(text: str, limit: int):
    shown = code_excerpt(text, limit)
    assert len(shown.text) <= limit
    assert shown.text.startswith("```\n")
    body = shown.text.removesuffix("\n…")
    assert body.endswith("\n```")
    # The only fences are the block's own: the code cannot close it early.
    assert len(re.findall(r"(?<!`)```(?!`)", body)) == 2 and body.count("```") == 2


def test_layout_json_round_trips_and_refuses_what_does_not_fit():
    layout = Layout(("", CODE), ("Intro", "Intro › Usage"))
    assert Layout.from_json(layout.to_json(), 2) == layout
    assert Layout().to_json() is None and Layout.from_json(None, 5) == Layout()
    for bad in ('{"kinds": ["", ""]}', '{"kinds": [1]}', "[]", '{"sections": "x"}'):
        try:
            Layout.from_json(bad, 1)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


# ---------------------------------------------------------------------- plain text


@st.composite
def plain_heading(draw: st.DrawFn) -> tuple[str, int]:
    words = [w.capitalize() for w in _words(draw, 1, 5)]
    style = draw(st.sampled_from(["numbered", "caps", "title"]))
    if style == "numbered":
        number = draw(st.integers(0, 20))
        sub = draw(st.one_of(st.none(), st.integers(1, 9)))
        num = f"{number}.{sub}" if sub is not None else f"{number}."
        dot = draw(st.sampled_from(["", "."]))
        return f"{num} {' '.join(words)}{dot}", 3 if sub is not None else 2
    if style == "caps":
        # One short word in capitals ("END", "BEGIN") is taken for a keyword of code, not a heading.
        return " ".join(words if len(words) > 1 else [*words, "Notes"]).upper(), 1
    return " ".join(words), 2


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), plain_heading()), prose()), min_size=1, max_size=8),
    st.integers(40, 90),
)
def test_plain_text_headings_become_sections_and_prose_stays_whole(
    sections: list[tuple[tuple[str, int] | None, str]], width: int
):
    blocks: list[str] = []
    parts: list[Part] = []
    for heading, text in sections:
        if heading is not None:
            blocks.append(heading[0])
            parts.append(Part("heading", heading[0], heading[1]))
        blocks.append(textwrap.fill(text, width))
        parts.append(Part("prose", text))
    doc = clean_article("\n\n".join(blocks), key="k", meta=Metadata(title="Terms"))
    # Where a two-line block breaks after a full stop, plain text cannot say whether it is one
    # paragraph or two (the cleaner keeps two): compare each section's words, in order.
    assert by_section(paragraphs_of(doc)) == by_section(expected(parts))


def by_section(paragraphs: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _, section, text in paragraphs:
        if out and out[-1][0] == section:
            out[-1] = (section, f"{out[-1][1]} {text}")
        else:
            out.append((section, text))
    return out


@pytest.mark.parametrize(
    "line",
    [
        "He left.",  # a sentence
        "Then it rained on the whole town",  # words in lower case: prose, not a title
        "1. Preheat the oven to the temperature given",  # a numbered step, not a title
        "Updated March 3, 2024",  # a date line
        "See https://example.com/terms",  # a link
        "BEGIN",  # a keyword of code
        "Version ::= INTEGER",  # a line of code
    ],
)
def test_a_short_line_that_is_not_a_heading_stays_a_paragraph(line: str):
    text = (
        f"First paragraph of the text, long enough.\n\n{line}\n\nThe paragraph after it goes on for a while."
    )
    doc = clean_article(text, key="k", meta=Metadata(title="T"))
    assert line in [doc.text[a:b] for a, b in doc.paragraphs] and not any(doc.layout.sections)


def test_heading_lines_at_the_end_have_nothing_to_head_and_stay_text():
    doc = clean_article("Some text here.\n\nEND OF TERMS\n\n1. Appendix", key="k", meta=Metadata(title="T"))
    assert [doc.text[a:b] for a, b in doc.paragraphs] == ["Some text here.", "END OF TERMS", "1. Appendix"]
    assert not doc.layout
