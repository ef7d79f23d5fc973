"""Hostile articles: nothing from an article becomes a link, a pill or a message Discord rejects.

Every article field (text, title, byline, date, URL) is filled with generated hostile strings
(masked links, bare links, invites, every mention form, Markdown, control characters, huge
lengths) and sent through every render path and the one limits validator. Whatever comes out
must fit Discord's limits and contain no link or mention token the bot did not write itself.
"""

from __future__ import annotations

import re
from typing import Any

import discord
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import limits, render
from bot.cogs.ask import answer_message
from bot.testing import payload_problems
from embeddings import Answer, ArticleInfo, Hit, IngestReport, IngestResult, Passage, Summary, SummarySentence

HOSTILE = [
    "[Claim free Nitro](https://evil.example/nitro)",
    "https://evil.example/x",
    "http://evil.example",
    "discord.gg/evil",
    "https://discord.com@evil.example/",
    "<@123456789012345678>",
    "<@!123456789012345678>",
    "<@&123456789012345678>",
    "<#123456789012345678>",
    "</ask:123456789012345678>",
    "@everyone",
    "@here",
    "# Heading",
    "-# subtext",
    "**bold** _it_ ~~s~~ `code` ||spoiler||",
    "> quote",
    "\\",
    "\u202e",
    "\x00\x07",
    "line\nbreak",
]

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30)), min_size=1, max_size=12
).map(" ".join)
long_text = st.builds(lambda s, n: s * n, hostile_text, st.integers(1, 120))
url = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "https://example.org/a b",
            "javascript:alert(1)",
            "https://example.org/" + "x" * 1400,
            "https://example.org/ok?q=1#f",
            "https://discord.com@evil.example/",
            "https://exämple.org/päth",
            "https://example.org/)[x](https://evil.example",
        ]
    ),
    st.text(max_size=60).map(lambda t: "https://example.org/" + t),
)

MENTION = re.compile(r"<[@#][!&]?\d+>|</[^>\s]+:\d+>|@everyone|@here", re.IGNORECASE)
LINK = re.compile(r"[a-z][a-z0-9+.-]*://|discord\.gg/|(?<!\\)\[[^\]]*\]\(", re.IGNORECASE)
BARE_LINK = re.compile(r"[a-z][a-z0-9+.-]*://|discord\.gg/", re.IGNORECASE)


def _strings(kwargs: dict[str, Any]) -> list[tuple[str, bool]]:
    """Every piece of text a message would show, with whether Discord renders it as Markdown."""
    out: list[tuple[str, bool]] = []
    if isinstance(kwargs.get("content"), str):
        out.append((kwargs["content"], True))
    embeds = list(kwargs.get("embeds") or []) + ([kwargs["embed"]] if kwargs.get("embed") else [])
    for e in embeds:
        d = e.to_dict()
        out += [(d.get("title", ""), True), (d.get("description", ""), True)]
        # Footers and author names are shown as written: no Markdown, no masked links.
        out += [(d.get("footer", {}).get("text", ""), False), (d.get("author", {}).get("name", ""), False)]
        for f in d.get("fields", []):
            out += [(f["name"], True), (f["value"], True)]
    view = kwargs.get("view")
    if isinstance(view, discord.ui.View):
        out += [(getattr(i, "label", None) or "", False) for i in view.children]
    return out


def _urls(kwargs: dict[str, Any]) -> list[str]:
    embeds = list(kwargs.get("embeds") or []) + ([kwargs["embed"]] if kwargs.get("embed") else [])
    urls = [e.to_dict().get("author", {}).get("url") for e in embeds] + [e.url for e in embeds]
    view = kwargs.get("view")
    if isinstance(view, discord.ui.View):
        urls += [getattr(i, "url", None) for i in view.children]
    return [u for u in urls if u]


def check(kwargs: dict[str, Any]) -> None:
    """The message fits Discord's limits; no text carries a link or a mention; links are checked."""
    assert limits.problems(**kwargs) == []
    for text, markdown in _strings(kwargs):
        assert not MENTION.search(text), text
        assert not (LINK if markdown else BARE_LINK).search(text), text
    for u in _urls(kwargs):
        assert render.safe_url(u) == u and len(u) <= render.URL_CAP
        assert "@" not in u.split("/")[2] and not any(c.isspace() for c in u)


def make_info(title: str, byline: str, date: str, link: str | None, aid: str = "a1b2c3d4") -> ArticleInfo:
    return ArticleInfo(aid, title, byline, date, link, None, "k", "h", 3, 3, "2024-05-01T00:00:00+00:00")


@settings(max_examples=60, deadline=None)
@given(text=long_text, title=long_text, byline=long_text, date=hostile_text, link=url, question=long_text)
def test_no_render_path_lets_an_article_write_markdown(
    text: str, title: str, byline: str, date: str, link: str | None, question: str
):
    article = make_info(title, byline, date, link)
    hits = tuple(
        Hit(Passage(article.id, i, 1, 0, len(text), text, id=i + 1), article, 0.5, i + 1) for i in range(4)
    )
    answered = Answer(question or "?", True, 0.9, hits, (0, min(len(text), 40)), ("a note",))
    declined = Answer(question or "?", False, 0.1, hits, None)
    check(answer_message(answered, 123))
    check(answer_message(declined, 123))
    check(limits.fit(embed=render.passage_embed(hits[0], (0, min(len(text), 40)))))
    view = render.sources_view(list(hits[1:]))
    check(limits.fit(embed=render.sources_embed(list(hits[1:])), **({"view": view} if view else {})))
    summary = Summary(article, (SummarySentence(text, 1, 0, len(text)),) * 3, False, ())
    check(limits.fit(embed=render.summary_embed(summary)))
    check(limits.fit(embed=render.articles_embed([article] * 12, 0, title="This server's library")))
    report = IngestReport(
        (IngestResult(title, "added", article), IngestResult(title, "skipped", reason=text))
    )
    check(limits.fit(embed=render.ingest_embed(report, link or title)))
    # Errors quote what the user typed (a title, a link): they fit too.
    check(limits.fit(content=f"No article matches {render.escape(title)!r} in this library."))
    label = render.choice_label(article)
    choices = limits.fit_choices([discord.app_commands.Choice(name=label, value=article.id)] * 30)
    assert len(choices) <= 25 and all(1 <= len(c.name) <= 100 for c in choices)
    assert not any(MENTION.search(c.name) or BARE_LINK.search(c.name) for c in choices)


@settings(max_examples=100, deadline=None)
@given(
    content=st.text(max_size=5000),
    description=st.text(max_size=9000),
    fields=st.lists(st.tuples(st.text(max_size=400), st.text(max_size=2000)), max_size=40),
    footer=st.text(max_size=3000),
    author=st.text(max_size=600),
    embeds=st.integers(1, 12),
)
def test_the_validator_cuts_any_message_to_discords_limits(
    content: str, description: str, fields: list[tuple[str, str]], footer: str, author: str, embeds: int
):
    def make() -> discord.Embed:
        e = discord.Embed(title=description[:400], description=description)
        for name, value in fields:
            e.add_field(name=name or "n", value=value or "v")
        e.set_footer(text=footer)
        e.set_author(name=author or "a")
        return e

    fitted = limits.fit(content=content, embeds=[make() for _ in range(embeds)])
    assert limits.problems(**fitted) == []
    assert fitted["embeds"], "at least the first embed is kept"


@given(st.text(max_size=3000), st.integers(1, 2100))
def test_cut_never_exceeds_the_limit_and_never_dangles_an_escape(text: str, limit: int):
    out = limits.cut(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
    else:
        assert out.endswith("…") or limit <= 1
        assert not out[:-1].endswith("\\")


@settings(max_examples=60, deadline=None)
@given(
    content=st.integers(min_value=0, max_value=2100),
    description=st.integers(min_value=0, max_value=4200),
    fields=st.integers(min_value=0, max_value=27),
    choices=st.integers(min_value=0, max_value=27),
)
def test_the_fake_discord_refuses_what_discord_refuses(
    content: int, description: int, fields: int, choices: int
):
    # Every test's sends pass this check, so an over-limit message fails its test as it would
    # fail on Discord (400, nothing shown) instead of passing unnoticed.
    embed: dict[str, Any] = {"description": "d" * description} if description else {}
    if fields:
        embed["fields"] = [{"name": "n", "value": "v"} for _ in range(fields)]
    body: dict[str, Any] = {"content": "c" * content, "embeds": [embed] if embed else []}
    if choices:
        body["choices"] = [{"name": f"c{i}", "value": str(i)} for i in range(choices)]
    found = payload_problems(body)
    expected = content > 2000 or description > 4096 or fields > 25 or choices > 25
    assert bool(found) == expected, found


@settings(max_examples=40, deadline=None)
@given(question=long_text, title=long_text, count=st.integers(1, 40))
def test_community_reports_never_let_a_member_write_markdown(question: str, title: str, count: int):
    """/gaps, /pins, /privacy and the pin confirmation quote members' questions and titles."""
    import numpy as np

    from bot.cogs.community import gaps_embed, pins_embed, privacy_text
    from embeddings import community
    from embeddings.store import Feedback

    vector = np.ones(8, np.float32)
    gap = community.Gap(
        count,
        count,
        0,
        (question, question[:50], title),
        title,
        "2026-01-01T00:00:00+00:00",
        (question,) * count,
    )
    check(limits.fit(embed=gaps_embed([gap] * count, "7d")))
    pin = community.Pin(
        "abcdef1234", question or "?", vector, 1, "a", "k", "m", 3, title, "42", "2026-01-01T00:00:00+00:00"
    )
    check(limits.fit(embed=pins_embed([pin] * count, [pin] * 3)))
    check(limits.fit(content=render.pinned_text(pin)))
    logged = community.LoggedQuestion(
        "1", question, "42", "2026-01-01T00:00:00+00:00", False, 0.1, None, title, vector
    )
    votes = (Feedback(question, 1, "a", -1, "42", "2026-01-01T00:00:00+00:00", {"reason": title}),) * count
    check(limits.fit(content=privacy_text(community.MemberData((logged,) * count, votes), 90)))
    report = IngestReport((), dropped_pins=(question,) * count)
    check(limits.fit(embed=render.ingest_embed(report, title or "x")))
