"""/articles (paginated with buttons), /summary and /help."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import render
from bot.config import Settings
from bot.testing import GUILD_A, GUILD_B, GUILD_EMPTY, FakeDiscord, running_bot
from bot.wording import EMPTY_LIBRARY
from embeddings import Document, HashEncoder, Library, LocalStore

from .bot_fakes import SEED_TITLE

HAS_SUMMARIZE = hasattr(Library, "summarize")


@pytest.fixture
async def list_bot(tmp_path: Path) -> AsyncIterator[FakeDiscord]:
    """Server A has 23 articles, server B one; hash encoder."""
    settings = Settings.load(environ={"CITEBOT_ASK_COOLDOWN": "off"}, env_file=None, data_dir=tmp_path / "d")
    store = LocalStore(settings.data_dir)
    async with running_bot(settings, store, HashEncoder(dim=64, max_tokens=48)) as fake:
        for guild_id, titles in (
            (GUILD_A, [f"Bird survey {i:02d}" for i in range(23)]),
            (GUILD_B, ["Only B"]),
        ):
            docs = [
                Document(
                    key=t,
                    title=t,
                    text=f"{t} counted birds.",
                    paragraphs=((0, len(t) + 15),),
                    date="2024-05-01",
                )
                for t in titles
            ]
            fake.bot.libraries.get(guild_id).ingest(docs)
        yield fake
    store.close()


def titles(embed_description: str) -> list[str]:
    return re.findall(r"^\d+\. \*\*(.+?)\*\*$", embed_description, flags=re.M)


async def test_articles_is_paginated_with_buttons(list_bot: FakeDiscord):
    await list_bot.slash("articles")
    assert list_bot.recorder.kinds() == ["defer", "followup"]
    first = list_bot.recorder.last("followup")
    assert first.ephemeral
    (embed,) = first.embeds
    assert titles(embed.description or "") == [f"Bird survey {i:02d}" for i in range(10)]
    assert embed.footer.text == "Page 1 of 3 · 23 article(s)"
    assert embed.title == "This server's library"
    assert first.custom_ids == ["citebot:articles:0:prev", "citebot:articles:1:next"]
    buttons = first.body["components"][0]["components"]
    assert buttons[0]["disabled"] and not buttons[1]["disabled"]

    list_bot.recorder.clear()
    await list_bot.click(first, "citebot:articles:1:next")
    assert list_bot.recorder.kinds() == ["defer_update", "edit"]  # the same message, updated in place
    second = list_bot.recorder.last("edit")
    assert titles(second.embeds[0].description or "")[0] == "Bird survey 10"
    assert second.custom_ids == ["citebot:articles:0:prev", "citebot:articles:2:next"]

    list_bot.recorder.clear()
    await list_bot.click(second, "citebot:articles:2:next")
    last = list_bot.recorder.last("edit")
    assert titles(last.embeds[0].description or "") == ["Bird survey 20", "Bird survey 21", "Bird survey 22"]
    assert last.embeds[0].footer.text == "Page 3 of 3 · 23 article(s)"
    assert last.body["components"][0]["components"][1]["disabled"]
    for sent in (first, second, last):
        assert render.embed_problems(sent.embeds[0]) == []


async def test_articles_per_server(list_bot: FakeDiscord):
    await list_bot.slash("articles", guild_id=GUILD_B)
    reply = list_bot.recorder.last("followup")
    assert titles(reply.embeds[0].description or "") == ["Only B"]
    assert reply.custom_ids == []  # one page: no buttons
    # A page button from server A's list, clicked in server B, shows B's list.
    list_bot.recorder.clear()
    await list_bot.slash("articles")
    first_a = list_bot.recorder.last("followup")
    list_bot.recorder.clear()
    await list_bot.click(first_a, "citebot:articles:1:next", guild_id=GUILD_B)
    shown = list_bot.recorder.last("edit").embeds[0].description or ""
    assert titles(shown) == ["Only B"] and "Bird" not in shown


async def test_articles_in_a_server_without_a_library(list_bot: FakeDiscord):
    await list_bot.slash("articles", guild_id=GUILD_EMPTY)
    reply = list_bot.recorder.last("followup")
    assert reply.content == EMPTY_LIBRARY and reply.ephemeral


async def test_help_lists_every_command(list_bot: FakeDiscord):
    await list_bot.slash("help")
    assert list_bot.recorder.kinds() == ["message"]
    reply = list_bot.recorder.sent[0]
    assert reply.ephemeral
    (embed,) = reply.embeds
    names = [f.name for f in embed.fields]
    assert names == [
        "/ask question [public]",
        "/articles",
        "/summary article [sentences]",
        "/help",
        "/ingest [file] [url]",
        "/forget article",
        "/subscribe url",
        "/subscriptions",
        "/unsubscribe url",
        "/config [setting] [value]",
        "/gaps [period]",
        "/pins",
        "/export",
        "/privacy",
        "Apps → Ask citebot",
    ]
    assert all(f.value for f in embed.fields)
    assert render.embed_problems(embed) == []
    # Every slash command's description is a Discord description: 1 to 100 characters.
    for command in list_bot.bot.tree.walk_commands():
        assert 1 <= len(command.description) <= 100


@pytest.mark.skipif(not HAS_SUMMARIZE, reason="Library.summarize arrives with the summarizer branch")
async def test_summary_cites_paragraphs(discord_bot: FakeDiscord):
    choices = await discord_bot.autocomplete("summary", "article", article="blinken")
    assert [c["name"] for c in choices] == [f"{SEED_TITLE} (2022-03-07)"[:99] + "…"] or choices[0][
        "name"
    ].startswith("Blinken says")
    discord_bot.recorder.clear()
    await discord_bot.slash("summary", article=choices[0]["value"], sentences=3)
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    reply = discord_bot.recorder.last("followup")
    assert reply.ephemeral and discord_bot.tree.errors == []
    (embed,) = reply.embeds
    lines = (embed.description or "").splitlines()
    assert len(lines) == 3
    assert all(re.search(r"\(¶ \d+\)$", line) for line in lines)
    assert embed.author.name == SEED_TITLE
    assert render.embed_problems(embed) == []
    # Server B's summary of server A's article id finds nothing.
    discord_bot.recorder.clear()
    await discord_bot.slash("summary", article=choices[0]["value"], guild_id=GUILD_B)
    assert discord_bot.recorder.last("followup").content.startswith("No article matches")


async def test_summary_autocomplete_is_per_server(discord_bot: FakeDiscord):
    a = await discord_bot.autocomplete("summary", "article", article="")
    b = await discord_bot.autocomplete("summary", "article", article="", guild_id=GUILD_B)
    assert [c["name"] for c in b] == ["Sourdough for beginners (2023-02-01)"]
    assert len(a) == 1 and a[0]["name"].startswith("Blinken says US has seen reports")
    assert len(a[0]["name"]) <= 100
    assert a[0]["value"] == discord_bot.bot.libraries.get(GUILD_A).articles()[0].id
