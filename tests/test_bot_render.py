"""render.py: Discord's limits always hold, cuts fall on sentence boundaries, text is escaped."""

from __future__ import annotations

import discord
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import render
from embeddings import (
    Answer,
    ArticleInfo,
    Hit,
    IngestReport,
    IngestResult,
    Passage,
    Summary,
    SummarySentence,
    split_sentences,
)

LONG_TITLE = "A title that goes on " + "and on " * 40 + "until it ends"  # about 300 characters


def info(
    title: str = "Seals of the estuary", url: str | None = "https://example.org/seals", **kw
) -> ArticleInfo:
    return ArticleInfo(
        id=kw.get("id", "a1b2c3d4"),
        title=title,
        byline=kw.get("byline", "Mia Lund"),
        date=kw.get("date", "2024-05-01"),
        url=url,
        source=None,
        key="k",
        content_hash="h",
        passage_count=kw.get("passages", 3),
        paragraph_count=3,
        added_at="2024-05-01T00:00:00+00:00",
    )


def hit(text: str, *, rank: int = 1, title: str = "Seals of the estuary", paragraph: int = 2, **kw) -> Hit:
    return Hit(
        Passage("a1b2c3d4", rank - 1, paragraph, 0, len(text), text, id=rank), info(title, **kw), 0.5, rank
    )


def answer(
    text: str, highlight: tuple[int, int] | None, *, title: str = "Seals of the estuary", **kw
) -> Answer:
    hits = (hit(text, title=title, **kw), hit("Second passage.", rank=2), hit("Third passage.", rank=3))
    return Answer("How many seals were counted?", True, 0.81, hits, highlight)


SENTENCES = [f"Sentence number {i} says something about seals and the estuary." for i in range(200)]
LONG_PASSAGE = " ".join(SENTENCES)  # about 13,000 characters


def test_short_answer_is_shown_whole_with_the_sentence_in_bold():
    text = "Seals rest on sandbanks. Counters found 1,200 seals this spring. Numbers are rising."
    start = text.index("Counters")
    end = text.index("Numbers") - 1
    embed = render.answer_embed(answer(text, (start, end)))
    assert (
        embed.description
        == "Seals rest on sandbanks. **Counters found 1,200 seals this spring.** Numbers are rising."
    )
    assert embed.author.name == "Seals of the estuary" and embed.author.url == "https://example.org/seals"
    assert embed.footer.text == "by Mia Lund · 2024-05-01 · ¶ 2"
    assert embed.fields[0].name == "Confidence" and embed.fields[0].value == "▰▰▰▰▱ 0.81 (high)"
    # The link is the author line's target (and a link button), never Markdown in a field.
    assert all("](" not in f.value for f in embed.fields)
    assert render.link_button("https://example.org/seals").url == "https://example.org/seals"
    assert render.embed_problems(embed) == []


def test_very_long_passage_and_300_character_title_fit_discords_limits():
    target = SENTENCES[120]
    start = LONG_PASSAGE.index(target)
    a = answer(LONG_PASSAGE, (start, start + len(target)), title=LONG_TITLE)
    embed = render.answer_embed(a)
    assert render.embed_problems(embed) == []
    assert len(embed.author.name or "") <= 256 and (embed.author.name or "").endswith("…")
    description = embed.description or ""
    assert len(description) <= render.ANSWER_BUDGET
    assert f"**{target}**" in description
    assert description.startswith("… ") and description.endswith(" …")
    # Cut on sentence boundaries: everything between the ellipses is whole sentences.
    inner = description[2:-2].replace("**", "")
    assert all(s in SENTENCES for s in (inner[a:b] for a, b in split_sentences(inner)))
    # The full passage view shows as much as Discord allows, still whole sentences.
    full = render.passage_embed(a.hits[0], a.highlight)
    assert render.embed_problems(full) == []
    assert len(full.description or "") > 3500


def test_a_single_huge_sentence_is_cut_at_a_word():
    text = "word " * 3000 + "end."
    embed = render.answer_embed(answer(text, (0, len(text))))
    assert render.embed_problems(embed) == []
    assert (embed.description or "").startswith("**word word") and (embed.description or "").endswith("…**")


def test_article_text_cannot_format_itself_or_inject_links():
    text = "# Breaking\n**Not bold** and _not italic_ [click](https://evil.example) @everyone <@123> ~~x~~ `code`."
    embed = render.answer_embed(answer(text, None))
    d = embed.description or ""
    assert "\\# Breaking" in d and "\\*\\*Not bold\\*\\*" in d and "\\_not italic\\_" in d
    assert "\\[click](https:\u200b//evil.example)" in d and "\\~\\~x\\~\\~" in d and "\\`code\\`" in d
    assert "https://" not in d and "@everyone" not in d and "<@123>" not in d


def test_links_only_when_they_are_web_links():
    embed = render.answer_embed(answer("Seals.", None, url="javascript:alert(1)"))
    assert embed.author.url is None and all(f.name != "Source" for f in embed.fields)


def test_not_found_names_the_closest_articles_only():
    hits = tuple(hit("Some unrelated passage text.", rank=i, title=LONG_TITLE + str(i)) for i in range(1, 5))
    a = Answer("banana bread?", False, 0.1, hits, None, ("Your question was long; only part was used.",))
    text = render.not_found_text(a)
    assert text.startswith("I couldn't find this in the library.\nClosest articles: “A title that goes on")
    assert "unrelated passage" not in text and "**" not in text
    assert text.count("“") == 3 and len(text) <= 2000
    assert text.endswith("-# Your question was long; only part was used.")
    assert render.not_found_text(Answer("q", False, 0.0, ())) == "I couldn't find this in the library."


def test_other_sources_fit_with_huge_passages_and_links():
    hits = [
        hit(LONG_PASSAGE, rank=i, title=LONG_TITLE, url="https://example.org/" + "x" * 1500)
        for i in (2, 3, 4)
    ]
    embed = render.sources_embed(hits)
    assert render.embed_problems(embed) == []
    assert [f.name[:2] for f in embed.fields] == ["2.", "3.", "4."]
    assert all(len(f.value or "") <= 1024 for f in embed.fields)
    assert render.sources_embed([]).description == "No other passage in the library matched this question."


def test_summary_embed():
    sentences = tuple(SummarySentence(s * 20, p, 0, 1) for p, s in enumerate(SENTENCES[:10], start=1))
    embed = render.summary_embed(Summary(info(LONG_TITLE), sentences, whole=True, notes=("Cached.",)))
    assert render.embed_problems(embed) == []
    lines = (embed.description or "").splitlines()
    assert lines[0].startswith("• Sentence number 0") and lines[0].endswith("(¶ 1)")
    assert lines[-1].endswith("more sentence(s) did not fit.")
    assert embed.fields[0].value == "The article is short: this is all of it.\nCached."


def test_articles_pages():
    articles = [info(f"Title {i} " + "x" * 290, id=f"id{i:06d}", url=None) for i in range(25)]
    embed = render.articles_embed(articles, 2, title="This server's library")
    assert embed.footer.text == "Page 3 of 3 · 25 article(s)"
    assert (embed.description or "").startswith("21. **Title 20")
    assert render.embed_problems(embed) == []
    assert render.articles_embed(articles, 99, title="t").footer.text.startswith("Page 3 of 3")
    assert render.articles_embed([], 0, title="t").description == "No articles yet."
    assert render.page_count(0) == 1 and render.page_count(10) == 1 and render.page_count(11) == 2


def test_ingest_report_of_hundreds_of_files():
    results = [IngestResult(f"f{i}.txt", "added", info(LONG_TITLE, passages=4)) for i in range(200)]
    results += [IngestResult("bad.txt", "skipped", None, "x" * 500)]
    embed = render.ingest_embed(IngestReport(tuple(results)), "archive.jsonl")
    assert render.embed_problems(embed) == []
    assert embed.title == "Added 200 article(s) from archive.jsonl"
    assert (embed.description or "").splitlines()[-1].startswith("… and ")
    assert embed.footer.text == "800 passage(s) embedded"
    nothing = render.ingest_embed(
        IngestReport((IngestResult("a.pdf", "skipped", None, "not text"),)), "a.pdf"
    )
    assert nothing.title == "Nothing new from a.pdf" and nothing.description == "⚠️ Skipped: not text"


def test_confidence_label():
    assert render.confidence_label(0.0) == "▱▱▱▱▱ 0.00 (low)"
    assert render.confidence_label(0.55) == "▰▰▰▱▱ 0.55 (medium)"
    assert render.confidence_label(1.0) == "▰▰▰▰▰ 1.00 (high)"


def test_embed_problems_detects_violations():
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for _ in range(26):
        embed.add_field(name="n", value="v" * 1100)
    problems = render.embed_problems(embed)
    assert "title 300 > 256" in problems and "description 5000 > 4096" in problems
    assert "fields 26 > 25" in problems and any("total" in p for p in problems)


@settings(max_examples=150, deadline=None)
@given(
    sentences=st.lists(
        st.text(min_size=1, max_size=400).map(lambda s: s.strip() + "."), min_size=1, max_size=30
    ),
    pick=st.integers(min_value=0, max_value=29),
    limit=st.integers(min_value=20, max_value=4096),
)
def test_excerpt_always_fits(sentences: list[str], pick: int, limit: int):
    text = " ".join(sentences)
    spans = split_sentences(text) or [(0, len(text))]
    highlight = spans[pick % len(spans)]
    shown = render.excerpt(text, limit, highlight)
    assert len(shown.text) <= limit
    a = render.answer_embed(answer(text, highlight), budget=limit)
    assert render.embed_problems(a) == []
