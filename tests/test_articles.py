"""Article cleaning: metadata, boilerplate and paragraphs, on the seed and on other shapes."""

from __future__ import annotations

import codecs
import json
import os
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings import InputError, expand_paths, load_file
from embeddings.articles import (
    Metadata,
    _page_title,
    boilerplate_rule,
    clean_article,
    decode_bytes,
    is_boilerplate,
    load_bytes,
    parse_date,
    parse_markdown,
)

from .conftest import SEED


def _only(path: Path):
    items = list(load_file(path))
    assert len(items) == 1
    assert not isinstance(items[0], Exception), items[0]
    return items[0]


def test_seed_metadata_and_boilerplate():
    doc = _only(SEED)
    assert doc.title == (
        "Blinken says US has seen reports of Russian abuses in Ukraine that 'would constitute a war crime'"
    )
    assert doc.byline == "Prof. Ahlam"
    assert doc.date == "2022-03-07"
    assert "Secretary of State Antony Blinken 1" not in doc.text
    assert "01:01" not in doc.text
    assert "See Sec. of State Blinken's answer" not in doc.text
    assert "TurboTax" not in doc.text
    assert "By Prof. Ahlam" not in doc.text
    assert doc.text.startswith("Washington (CNN) Secretary of State Antony Blinken said Sunday")
    assert doc.text.endswith("I'm sure act on that,\" he said.")
    assert "\u00a0" not in doc.text  # non-breaking spaces normalised


def test_seed_paragraph_spans_are_exact():
    doc = _only(SEED)
    assert len(doc.paragraphs) == 12
    joined = "\n\n".join(doc.text[a:b] for a, b in doc.paragraphs)
    assert joined == doc.text
    # Lines of the original without a blank line between them are separate paragraphs.
    assert doc.text[slice(*doc.paragraphs[3])].startswith("The International Criminal Court")
    assert doc.text[slice(*doc.paragraphs[4])].startswith("The American Embassy in Kyiv")


def test_other_news_shape_with_updated_line_share_and_caption():
    raw = """POLITICS

City council approves new bike lanes after heated debate

By Maria Gomez and John Smith, The Daily Planet
Updated 10:32 AM ET, Mon March 7, 2022

Share Tweet Email

The city council voted 7-2 on Tuesday to approve 40 miles of protected bike lanes.
Watch: Council members argue over the plan 02:15
Supporters said the lanes would cut traffic deaths. Opponents worried about parking.

Advertisement

Construction starts in May, officials said.
Related: Mayor unveils budget
Read more
"""
    doc = clean_article(raw, key="k")
    assert doc.title == "City council approves new bike lanes after heated debate"
    assert doc.byline == "Maria Gomez and John Smith, The Daily Planet"
    assert doc.date == "2022-03-07"
    for junk in ("POLITICS", "Share", "Watch:", "Advertisement", "Related", "Read more", "Updated"):
        assert junk not in doc.text
    assert doc.text.startswith("The city council voted 7-2")
    assert doc.text.endswith("Construction starts in May, officials said.")


def test_plain_text_without_byline_uses_first_line_as_title():
    raw = "A short history of tea\n\nTea was first drunk in China.\nIt reached Europe in the 1600s.\n"
    doc = clean_article(raw, key="k")
    assert doc.title == "A short history of tea"
    assert doc.byline is None and doc.date is None
    assert len(doc.paragraphs) == 2


def test_body_sentence_starting_with_by_is_not_a_byline():
    raw = "Storm report\n\nBy the time we arrived, the storm had passed and the river was calm again.\n"
    doc = clean_article(raw, key="k")
    assert doc.byline is None
    assert doc.text.startswith("By the time we arrived")


def test_hard_wrapped_text_is_rejoined():
    raw = (
        "Notes on rivers\n\n"
        "Rivers carry water from high ground to the sea and shape the land\n"
        "they cross. Over thousands of years they cut valleys, build deltas\n"
        "and move enormous amounts of sediment downstream to the coast.\n\n"
        "Floods are part of a river's life.\n"
    )
    doc = clean_article(raw, key="k")
    assert len(doc.paragraphs) == 2
    assert "shape the land they cross." in doc.text


def test_markdown_front_matter_and_syntax():
    md = """---
title: "Growing tomatoes"
author: Ann Lee
date: 2021-05-04
url: https://example.org/tomatoes
---

# Ignored because front matter has a title

Tomatoes need **full sun** and [rich soil](https://x.y).
They are thirsty plants.

- Water deeply twice a week.
- Stake the stems.

![a photo](img.png)
"""
    doc = parse_markdown(md, key="k")
    assert (doc.title, doc.byline, doc.date, doc.url) == (
        "Growing tomatoes",
        "Ann Lee",
        "2021-05-04",
        "https://example.org/tomatoes",
    )
    assert "Tomatoes need full sun and rich soil. They are thirsty plants." in doc.text
    assert "Water deeply twice a week." in doc.text
    assert "**" not in doc.text and "](" not in doc.text and "img.png" not in doc.text


def test_markdown_heading_is_title_without_front_matter(tmp_path: Path):
    f = tmp_path / "note.md"
    f.write_text("# Bees\n\nBees make honey.\n")
    doc = _only(f)
    assert doc.title == "Bees"
    assert doc.text == "Bees make honey."


def test_html_through_trafilatura(tmp_path: Path):
    body = " ".join(["The harbour was rebuilt after the storm of 1987."] * 3)
    html = f"""<html><head><title>Harbour rebuilt | Coastal News</title>
<meta property="og:title" content="Harbour rebuilt after storm">
<meta name="author" content="Rita Moreno">
<meta property="article:published_time" content="2020-06-01T09:00:00Z">
</head><body><nav><a href="/">Home</a> <a href="/news">News</a></nav>
<article><h1>Harbour rebuilt after storm</h1>
<p>{body}</p>
<p>Fishing boats returned in the spring, and the market reopened on the quay with new stalls.</p>
<p>Share this article</p>
</article><footer>Copyright 2020 Coastal News. All rights reserved.</footer></body></html>"""
    f = tmp_path / "page.html"
    f.write_text(html)
    doc = _only(f)
    assert doc.title == "Harbour rebuilt after storm"
    assert doc.byline == "Rita Moreno"
    assert doc.date == "2020-06-01"
    assert "Fishing boats returned" in doc.text
    assert "Home" not in doc.text and "Copyright" not in doc.text and "Share this" not in doc.text


def test_jsonl_records_and_a_malformed_line(tmp_path: Path):
    f = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"id": "r1", "title": "One", "text": "First article text.", "author": "A"}),
        "{not json",
        json.dumps(
            {
                "id": "r2",
                "title": "Two",
                "paragraphs": ["Para one.", "Para two."],
                "url": "https://e.x/2",
                "date": "March 3, 2020",
            }
        ),
        json.dumps({"id": "r3", "title": "No text"}),
    ]
    f.write_text("\n".join(lines) + "\n")
    items = list(load_file(f))
    docs = [i for i in items if not isinstance(i, Exception)]
    errors = [str(i) for i in items if isinstance(i, Exception)]
    assert [d.title for d in docs] == ["One", "Two"]
    assert docs[1].paragraphs == ((0, 9), (11, 20))
    assert docs[1].url == "https://e.x/2" and docs[1].date == "2020-03-03"
    assert any(":2: not valid JSON" in e for e in errors)
    assert any(":4: no text" in e for e in errors)


def test_html_title_prefers_the_declared_title_over_a_stray_heading():
    # On the Rust book's pages (mdBook) trafilatura takes a hidden help dialog's heading,
    # "Keyboard shortcuts", as the title; the text never shows it, the <title> element is right.
    head = "<html><head><title>Fearless Concurrency - The Rust Programming Language</title></head>"
    body = "Handling concurrent programming safely and efficiently is another of Rust's major goals."
    assert _page_title(head, "Keyboard shortcuts", body) == "Fearless Concurrency"
    # When the text opens with the extractor's title, that one stands.
    assert _page_title(head, "Handling concurrent", body) == "Handling concurrent"
    assert _page_title("<p>no title element</p>", "Extracted", body) == "Extracted"
    assert _page_title("<title>News: a day | Site</title>", None, body) == "News: a day"


def test_leading_share_line_is_not_the_title():
    doc = clean_article("Share this article\n\nTown fair returns\n\nThe fair opens on Friday.\n", key="k")
    assert doc.title == "Town fair returns"
    assert doc.text == "The fair opens on Friday."


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("café olé".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_files_give_reasons(tmp_path: Path, content: bytes, reason: str):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    (item,) = list(load_file(f))
    assert isinstance(item, InputError)
    assert reason in str(item) and "bad.txt" in str(item)


def test_expand_paths_reports_empty_folder_and_unsupported(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "x.docx").write_bytes(b"PK")
    files, problems = expand_paths([empty, tmp_path / "x.docx", tmp_path / "missing.txt"])
    assert files == []
    text = " | ".join(str(p) for p in problems)
    assert "no files to ingest" in text and "unsupported file type" in text and "no such file" in text


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("07. Mar 2022", "2022-03-07"),
        ("March 7, 2022", "2022-03-07"),
        ("Mon 7th March 2022", "2022-03-07"),
        ("2022-03-07T10:00:00Z", "2022-03-07"),
        ("Sept. 30 2019", "2019-09-30"),
        ("no date here", None),
        ("February 30, 2020", None),
    ],
)
def test_parse_date(text: str, iso: str | None):
    assert parse_date(text) == iso


@pytest.mark.parametrize(
    "line",
    [
        "Is Russia committing war crimes? See Sec. of State Blinken's answer 01:01",
        "Share on Facebook",
        "Facebook Twitter Email",
        "ADVERTISEMENT",
        "Story continues below advertisement",
        "Sign up for our daily newsletter",
        "Photo credit: Getty Images",
        "Photo: Getty Images",
        "Image: Reuters/John Smith",
    ],
)
def test_boilerplate_lines(line: str):
    assert is_boilerplate(line)


@pytest.mark.parametrize(
    "line",
    [
        "The meeting started at 10:30 and ended an hour later with a vote on the budget for next year.",
        "Share prices rose sharply on Monday after the announcement.",
        "Readers shared their stories with us.",
    ],
)
def test_article_lines_are_not_boilerplate(line: str):
    assert not is_boilerplate(line)


# ------------------------------------------------------------------ unreadable inputs, truthfully

_prose = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=200,
).filter(lambda t: t.strip())


@settings(max_examples=80, deadline=None)
@given(text=_prose, encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]))
def test_unicode_files_with_a_byte_order_mark_are_read(text: str, encoding: str):
    # Windows tools save UTF-16 with a BOM; it used to be called "binary" for its NUL bytes.
    bom = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    bom |= {"utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}
    data = bom[encoding] + text.encode(encoding)
    assert decode_bytes(data, "notes.txt") == text


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(min_value=1, max_value=200_000), opener=st.sampled_from(["[", '{"a":']))
def test_a_deeply_nested_jsonl_line_is_skipped_and_the_rest_kept(depth: int, opener: str):
    closer = "]" if opener == "[" else "}"
    deep = (
        json.dumps({"title": "Deep", "text": "Egrets are herons too, and they nest in colonies."})[:-1]
        + ', "extra": '
        + opener * depth
        + "1"
        + closer * depth
        + "}"
    )
    good = json.dumps({"title": "Herons", "text": "Herons wade in shallow water."})
    items = list(load_bytes(f"{good}\n{deep}\n{good}\n".encode(), name="mix.jsonl", key="mix"))
    docs = [i for i in items if not isinstance(i, InputError)]
    errors = [str(i) for i in items if isinstance(i, InputError)]
    if errors:  # too deep for the parser: that line alone is skipped, with its number
        assert errors == ["mix.jsonl:2: nested too deeply to read (an article is never that deep)."]
        assert [d.title for d in docs] == ["Herons", "Herons"]
    else:
        assert [d.title for d in docs] == ["Herons", "Deep", "Herons"]


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600), kind=st.sampled_from(["txt", "md", "html", "jsonl", "pdf"]))
def test_any_bytes_give_articles_or_reasons_never_an_exception(data: bytes, kind: str):
    for item in load_bytes(data, name=f"upload.{kind}", key="k", kind=kind):
        assert isinstance(item, InputError) or item.text


def test_pipes_and_devices_are_named_for_what_they_are(tmp_path: Path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    _, problems = expand_paths([fifo, "/dev/zero", tmp_path / "missing.txt"])
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "is a named pipe (FIFO), not a file: save what it carries to a file first.",
        "is a device, not a file.",
        "no such file or folder.",
    ]


# ---------------------------------------------------------------------- a quote is never altered

# Words that begin boilerplate rules when they start a line ("copyright", "related", "see
# also", "source:", "share"...), mixed into ordinary prose, so that hard wrapping puts them at
# the start of lines inside paragraphs, where a line-by-line filter once cut them out.
# (Sentences start with ordinary words: a two-line paragraph broken right after a full stop,
# whose second line reads "Source: Reuters.", is furniture to any reader.)
_PROSE = st.sampled_from(
    "the work notice receipt license program holder terms you may copy convey modify"
    " copyright related source: see also share photo credit advertisement follow click"
    " watch read more subscribe newsletter reuters comments views print email".split()
)


@st.composite
def _paragraph(draw: st.DrawFn) -> str:
    sentences = []
    for _ in range(draw(st.integers(1, 5))):
        first = draw(st.sampled_from(["The", "You", "Each", "This", "Any"]))
        words = draw(st.lists(_PROSE, min_size=5, max_size=24))
        sentences.append(" ".join([first, *words]) + ".")
    return " ".join(sentences)


_FURNITURE = st.sampled_from(["Advertisement", "Share this article", "Related: More stories", "Photo: AP"])


@settings(max_examples=int(os.environ.get("CITEBOT_FUZZ_EXAMPLES", "150")), deadline=None)
@given(
    paragraphs=st.lists(_paragraph(), min_size=1, max_size=8),
    furniture=st.lists(st.tuples(st.integers(0, 8), _FURNITURE), max_size=3),
    width=st.integers(40, 90),
)
def test_every_paragraph_is_kept_whole_or_dropped_whole(
    paragraphs: list[str], furniture: list[tuple[int, str]], width: int
):
    blocks = [textwrap.fill(p, width) for p in paragraphs]
    for at, line in sorted(furniture, reverse=True):
        blocks.insert(min(at, len(blocks)), line)
    try:
        doc = clean_article("\n\n".join(blocks), key="k", meta=Metadata(title="A licence"))
        text = " ".join(doc.text.split())
    except InputError:  # every paragraph was dropped (each must then have been dropped whole)
        text = ""
    # Walk the source: each paragraph is in the stored text word for word, where it belongs,
    # or was dropped whole by a rule that says so; nothing else is in the stored text.
    for p in paragraphs:
        if text.startswith(p):
            text = text[len(p) :].lstrip()
        else:
            assert boilerplate_rule(p) is not None, (p, text)
    assert text == ""


_BODY = (
    "<p>" + " ".join(["Ownership is a set of rules that govern how a program manages memory."] * 6) + "</p>"
)


@pytest.mark.parametrize(
    ("head", "body", "date"),
    [
        ('<link rel="stylesheet" href="/css/style-2018-03-04.css">', "", None),  # a file name
        ("", '<a href="/2017/01/02/old.html">an old post</a>', None),  # a link's path
        ('<meta property="article:published_time" content="2021-05-06">', "", "2021-05-06"),
        (
            '<script type="application/ld+json">{"@type":"NewsArticle","datePublished":"2019-07-08"}</script>',
            "",
            "2019-07-08",
        ),
        ("", '<time datetime="2020-02-03">Feb 3</time>', "2020-02-03"),
    ],
)
def test_an_html_date_comes_only_from_what_states_one(head: str, body: str, date: str | None):
    html = (
        f'<html><head><title>Ownership</title>{head}</head><body class="edition2024">'
        f"<article><h1>Ownership</h1>{body}{_BODY}{_BODY}</article></body></html>"
    )
    (doc,) = load_bytes(html.encode(), name="page.html", key="k")
    assert not isinstance(doc, InputError)
    assert doc.date == date


@settings(max_examples=100, deadline=None)
@given(last=st.sampled_from(["}", "};", "end", "return x", "x = 1", "42", "2024", ")", "]]", "fi", "done"]))
def test_the_last_line_of_code_is_not_taken_for_an_ad(last: str):
    # A code block's closing brace was dropped as a "trailing ad word" (and the quote altered).
    text = "Setup\n\nThe program below starts the server.\n\nfn main() {\n    serve();\n" + last + "\n"
    doc = clean_article(text, key="k", meta=Metadata(title="Setup"), one_paragraph_per_line=True)
    kept = [doc.text[a:b] for a, b in doc.paragraphs]
    if re.fullmatch(r"[A-Za-z]+( [A-Za-z]+){0,2}", last):
        return  # a short run of plain words at the very end is what ad words look like
    assert kept[-1] == last


@settings(max_examples=100, deadline=None)
@given(
    sentences=st.lists(
        st.text(
            alphabet="国际刑事法院开始调查将涵盖年以来的事件检察官说我们会独立工作", min_size=1, max_size=20
        ),
        min_size=1,
        max_size=6,
    ),
    ends=st.lists(st.sampled_from(["。", "！", "？", "。」", "！”"]), min_size=6, max_size=6),
)
def test_chinese_sentences_are_split_at_their_full_stops(sentences: list[str], ends: list[str]):
    from embeddings.sentences import split_sentences

    parts = [s + e for s, e in zip(sentences, ends, strict=False)]
    text = "".join(parts)
    assert [text[a:b] for a, b in split_sentences(text)] == parts


def test_a_german_date_is_not_a_sentence_end():
    from embeddings.sentences import split_sentences

    text = "Die Untersuchung beginnt am 3. März in Den Haag. Sie dauert ein Jahr."
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Die Untersuchung beginnt am 3. März in Den Haag.",
        "Sie dauert ein Jahr.",
    ]


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("Von Anna Schmidt", "Anna Schmidt"),
        ("Par Jean Dupont", "Jean Dupont"),
        ("Por María García", "María García"),
        ("记者 张伟", "张伟"),
        ("作者：王小明", "王小明"),
        ("文/李娜", "李娜"),
        ("記者：田中太郎", "田中太郎"),
    ],
)
def test_bylines_in_other_languages_are_metadata_not_text(line: str, name: str):
    text = f"A headline\n\n{line}\n\nThe first paragraph of the story ends here.\n\nA second one follows."
    doc = clean_article(text, key="k")
    assert doc.byline == name
    assert line not in doc.text


def test_a_sentence_that_starts_like_a_byline_stays_text():
    text = "Ein Titel\n\nVon hier aus sieht man das Meer, sagt sie.\n\nEs ist weit."
    doc = clean_article(text, key="k")
    assert doc.byline is None and "Von hier aus sieht man das Meer" in doc.text
