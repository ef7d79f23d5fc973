"""/ask, its buttons, the message menu, mentions and follow-ups: payload-built interactions,
the real model, recorded HTTP. Server A's library holds the seed article, server B's a bread recipe."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from discord import app_commands

from bot import render
from bot.testing import (
    ADMIN_ID,
    BOT_ID,
    GUILD_A,
    GUILD_B,
    GUILD_EMPTY,
    USER_ID,
    FakeDiscord,
    Sent,
    message_payload,
    running_bot,
    user_payload,
)
from bot.wording import ANSWER_GONE as GONE
from bot.wording import EMPTY_LIBRARY
from embeddings import Library

from .bot_fakes import SEED_TITLE

US_QUESTION = "What has the US seen in Ukraine?"
BREAD_QUESTION = "How long does the dough rise during bulk fermentation?"


def assert_sendable(sent: Sent) -> None:
    """Within Discord's limits, and never able to ping anyone."""
    assert len(sent.content) <= render.CONTENT_LIMIT
    for embed in sent.embeds:
        assert render.embed_problems(embed) == []
    assert all(len(c) <= render.CUSTOM_ID for c in sent.custom_ids)
    if sent.kind in ("followup", "message", "channel", "edit"):
        assert sent.body["allowed_mentions"]["parse"] == []
        assert not sent.body["allowed_mentions"].get("replied_user")


async def ask(fake: FakeDiscord, question: str, **kw: Any) -> Sent:
    fake.recorder.clear()
    await fake.slash("ask", question=question, **kw)
    assert fake.tree.errors == []
    return fake.recorder.last("followup")


async def test_ask_defers_then_answers_with_a_cited_embed(discord_bot: FakeDiscord):
    interaction = await discord_bot.slash("ask", question=US_QUESTION)
    rec = discord_bot.recorder
    assert rec.kinds() == ["defer", "followup"]  # deferred first, answered once
    defer, answer = rec.sent
    assert defer.order < answer.order
    assert defer.ephemeral and answer.ephemeral  # private by default
    assert discord_bot.tree.errors == []
    assert_sendable(answer)
    (embed,) = answer.embeds
    assert (
        "**Washington (CNN) Secretary of State Antony Blinken said Sunday that the US has seen reports"
        in (embed.description or "")
    )
    assert embed.author.name == SEED_TITLE
    assert embed.footer.text == "by Prof. Ahlam · 2022-03-07 · ¶ 1"
    assert embed.title == US_QUESTION
    confidence = next(f for f in embed.fields if f.name == "Confidence")
    assert "(high)" in (confidence.value or "")
    assert answer.custom_ids == [
        f"citebot:full:{interaction.id}",
        f"citebot:more:{interaction.id}",
        f"citebot:vote:{interaction.id}:up",
        f"citebot:vote:{interaction.id}:down",
    ]


async def test_public_answers_are_visible_to_the_channel(discord_bot: FakeDiscord):
    await discord_bot.slash("ask", question=US_QUESTION, public=True)
    defer, answer = discord_bot.recorder.sent
    assert defer.kind == "defer" and not defer.ephemeral
    assert answer.kind == "followup" and not answer.ephemeral


async def test_unanswerable_question_quotes_nothing(discord_bot: FakeDiscord):
    sent = await ask(discord_bot, "What is a good recipe for banana bread?")
    assert sent.embeds == [] and sent.custom_ids == []
    assert sent.content.startswith("I couldn't find this in the library.")
    assert "Closest articles: “Blinken says US has seen reports" in sent.content
    assert "**" not in sent.content
    assert_sendable(sent)


async def test_servers_never_see_each_others_articles(discord_bot: FakeDiscord):
    bread = await ask(discord_bot, BREAD_QUESTION, guild_id=GUILD_B)
    (embed,) = bread.embeds
    assert embed.author.name == "Sourdough for beginners"
    assert "four to six hours" in (embed.description or "")
    # The same question in server A: its library has no bread, and says so without naming B's article.
    other = await ask(discord_bot, BREAD_QUESTION, guild_id=GUILD_A)
    assert other.content.startswith("I couldn't find this") and "Sourdough" not in other.text
    # And the reverse.
    us = await ask(discord_bot, US_QUESTION, guild_id=GUILD_B)
    assert "Blinken" not in us.text and "Ukraine" not in us.text.replace(US_QUESTION, "")


async def test_a_server_without_a_library_is_told_how_to_fill_it(discord_bot: FakeDiscord):
    await discord_bot.slash("ask", question=US_QUESTION, guild_id=GUILD_EMPTY)
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    assert discord_bot.recorder.last("followup").content == EMPTY_LIBRARY
    assert discord_bot.recorder.last("followup").ephemeral


async def test_direct_messages_use_the_seeded_demo_library(discord_bot: FakeDiscord):
    sent = await ask(discord_bot, "How many refugees have crossed into neighboring countries?", guild_id=None)
    (embed,) = sent.embeds
    assert "1.5 million refugees" in (embed.description or "")
    assert discord_bot.bot.libraries.get(None).name == "dm-demo"


async def test_full_passage_button(discord_bot: FakeDiscord):
    answer = await ask(discord_bot, "How many refugees have crossed into neighboring countries?")
    full_id = answer.custom_ids[0]
    discord_bot.recorder.clear()
    await discord_bot.click(answer, full_id, user_id=ADMIN_ID)
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    defer, reply = discord_bot.recorder.sent
    assert defer.ephemeral and reply.ephemeral
    (embed,) = reply.embeds
    library = discord_bot.bot.libraries.get(GUILD_A)
    passage = next(
        p for p in library.store.article_passages(library.name, library.articles()[0].id) if p.paragraph == 11
    )
    shown = (embed.description or "").replace("**", "").replace("\\", "")
    assert shown == passage.text
    assert embed.footer.text == "by Prof. Ahlam · 2022-03-07 · ¶ 11"
    assert_sendable(reply)


async def test_other_sources_button_lists_the_next_three_hits(discord_bot: FakeDiscord):
    answer = await ask(discord_bot, US_QUESTION)
    discord_bot.recorder.clear()
    await discord_bot.click(answer, answer.custom_ids[1])
    reply = discord_bot.recorder.last("followup")
    assert reply.ephemeral
    (embed,) = reply.embeds
    assert embed.title == "Other sources"
    assert [f.name.split(".")[0] for f in embed.fields] == ["2", "3", "4"]
    library: Library = discord_bot.bot.libraries.get(GUILD_A)
    expected = library.ask(US_QUESTION).hits[1:4]
    for field, hit in zip(embed.fields, expected, strict=True):
        assert f"¶ {hit.passage.paragraph}" in (field.value or "")
        assert hit.passage.text[:40].replace("'", "'") in (field.value or "").replace("\\", "")
    assert_sendable(reply)


async def test_votes_are_stored_once_per_user_with_the_question_and_answer(discord_bot: FakeDiscord):
    answer = await ask(discord_bot, "What did the American Embassy in Kyiv say?")
    up, down = answer.custom_ids[2], answer.custom_ids[3]
    store = discord_bot.bot.store
    library = f"guild-{GUILD_A}"
    before = len(store.list_feedback(library, limit=1000))

    discord_bot.recorder.clear()
    await discord_bot.click(answer, up, user_id=USER_ID)
    assert discord_bot.recorder.last("followup").content.startswith("Thanks! Your 👍 is noted")
    await discord_bot.click(answer, up, user_id=USER_ID)  # a second click counts once
    assert discord_bot.recorder.last("followup").content == "You already rated this answer; thanks!"
    await discord_bot.click(answer, down, user_id=ADMIN_ID)
    assert all(s.ephemeral for s in discord_bot.recorder.sent)
    # A 👎 offers the reasons, one click each; the click shows the vote and its reason counted.
    asking = discord_bot.recorder.last("followup")
    assert asking.content.startswith("Your 👎 is noted") and len(asking.custom_ids) == 3
    why = next(c for c in asking.custom_ids if c.endswith(":outdated"))
    discord_bot.recorder.clear()
    await discord_bot.click(asking, why, user_id=ADMIN_ID)
    shown = discord_bot.recorder.last("update")
    assert "out of date" in shown.content and not shown.custom_ids

    votes = store.list_feedback(library, limit=1000)
    assert len(votes) == before + 2
    newest, older = votes[0], votes[1]
    assert (newest.vote, newest.user) == (-1, str(ADMIN_ID))
    assert newest.extra["reason"] == "out of date" and "reason" not in older.extra
    assert (older.vote, older.user) == (1, str(USER_ID))
    assert older.question == "What did the American Embassy in Kyiv say?"
    assert older.extra["sentence"].startswith("The American Embassy in Kyiv said in a tweet Friday")
    assert older.extra["paragraph"] == "5" and older.extra["title"] == SEED_TITLE
    assert older.article_id == discord_bot.bot.libraries.get(GUILD_A).articles()[0].id


async def test_buttons_only_read_the_library_of_the_server_they_are_clicked_in(discord_bot: FakeDiscord):
    bread = await ask(discord_bot, BREAD_QUESTION, guild_id=GUILD_B)
    store = discord_bot.bot.store
    votes_a = len(store.list_feedback(f"guild-{GUILD_A}", limit=1000))
    votes_b = len(store.list_feedback(f"guild-{GUILD_B}", limit=1000))
    for custom_id in bread.custom_ids:
        discord_bot.recorder.clear()
        await discord_bot.click(bread, custom_id, guild_id=GUILD_A)  # the same id, clicked in server A
        reply = discord_bot.recorder.last("followup")
        assert reply.content == GONE and reply.ephemeral
        assert "Sourdough" not in reply.text and "dough" not in reply.text
    # The votes went nowhere: not into A's library, and not into B's from server A.
    assert len(store.list_feedback(f"guild-{GUILD_A}", limit=1000)) == votes_a
    assert len(store.list_feedback(f"guild-{GUILD_B}", limit=1000)) == votes_b


async def test_buttons_survive_a_restart(bot_data, model):
    """The custom id is all a button needs: a new bot process answers a click on an old answer."""
    async with running_bot(bot_data.settings, bot_data.store, model) as first:
        answer = await ask(first, US_QUESTION)
    async with running_bot(bot_data.settings, bot_data.store, model) as second:
        await second.click(answer, answer.custom_ids[0])
        (embed,) = second.recorder.last("followup").embeds
        assert "reports of Russian abuses" in (embed.description or "")


async def test_cooldown_gives_a_friendly_private_message(bot_data, model):
    settings = replace(bot_data.settings, ask_cooldown=(1, 60.0))
    async with running_bot(settings, bot_data.store, model) as fake:
        await fake.slash("ask", question=US_QUESTION)
        fake.recorder.clear()
        await fake.slash("ask", question="What did Biden say?")
        assert fake.recorder.kinds() == ["message"]  # answered at once, never deferred
        reply = fake.recorder.sent[0]
        assert reply.ephemeral and reply.content.startswith("You're asking quickly: try again in ")
        assert isinstance(fake.tree.errors[-1], app_commands.CommandOnCooldown)
        # Per user: someone else may still ask.
        fake.recorder.clear()
        await fake.slash("ask", question="What did Biden say?", user_id=ADMIN_ID)
        assert fake.recorder.kinds() == ["defer", "followup"]


async def test_empty_question_is_refused_before_deferring(discord_bot: FakeDiscord):
    await discord_bot.slash("ask", question="   ")
    assert discord_bot.recorder.kinds() == ["message"]
    assert discord_bot.recorder.sent[0].ephemeral
    assert discord_bot.recorder.sent[0].content == "The question is empty: type what you want to know."


async def test_message_menu_asks_the_message_text(discord_bot: FakeDiscord):
    target = message_payload(
        content="How many refugees have crossed into neighboring countries?", guild_id=GUILD_A
    )
    await discord_bot.message_menu(target)
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    reply = discord_bot.recorder.last("followup")
    assert reply.ephemeral and "1.5 million refugees" in reply.text
    discord_bot.recorder.clear()
    await discord_bot.message_menu(message_payload(content="", guild_id=GUILD_A))
    assert discord_bot.recorder.kinds() == ["message"]
    assert discord_bot.recorder.sent[0].content == "That message has no text I can use as a question."


# ---------------------------------------------------------------------- mentions


async def test_mention_is_answered_with_a_reply_that_pings_nobody(discord_bot: FakeDiscord):
    question = await discord_bot.say("What did the American Embassy in Kyiv say?")
    kinds = discord_bot.recorder.kinds()
    assert kinds[0] == "typing" and kinds[-1] == "channel"
    reply = discord_bot.recorder.last("channel")
    assert reply.body["message_reference"]["message_id"] == question.id
    assert reply.body["allowed_mentions"] == {"parse": [], "replied_user": False}
    (embed,) = reply.embeds
    assert "**The American Embassy in Kyiv said in a tweet Friday" in (embed.description or "")
    assert reply.custom_ids[0] == f"citebot:full:{question.id}"
    assert_sendable(reply)


async def test_reply_to_an_answer_is_a_follow_up_on_its_article(discord_bot: FakeDiscord):
    await discord_bot.say(US_QUESTION)
    answer = discord_bot.http.messages[max(discord_bot.http.messages)]  # the bot's latest message
    discord_bot.recorder.clear()
    await discord_bot.say("And how many refugees have crossed into neighboring countries?", referenced=answer)
    reply = discord_bot.recorder.last("channel")
    (embed,) = reply.embeds
    assert "1.5 million refugees" in (embed.description or "")
    assert "Follow-up: searched the article of the previous answer." in reply.text
    # A follow-up the article can't answer falls back to the whole library, and says so.
    discord_bot.recorder.clear()
    await discord_bot.say("How long should the dough rise?", referenced=answer)
    reply = discord_bot.recorder.last("channel")
    assert reply.content.startswith("I couldn't find this in the library.")
    assert "searched the whole library" in reply.content


async def test_reply_to_a_message_that_is_not_in_the_cache_is_fetched(discord_bot: FakeDiscord):
    await discord_bot.say(US_QUESTION)
    answer = discord_bot.http.messages[max(discord_bot.http.messages)]
    partial = dict(answer)
    discord_bot.recorder.clear()
    payload = message_payload(
        content=f"<@{BOT_ID}> How many refugees have crossed into neighboring countries?",
        guild_id=GUILD_A,
        mentions=[user_payload(BOT_ID, "citebot", bot=True)],
        referenced=partial,
    )
    del payload["referenced_message"]  # Discord may leave it out; the bot fetches it
    await discord_bot.bot.get_cog("Ask").on_message(discord_bot.message(payload))  # type: ignore[union-attr]
    assert "GET /channels/{channel_id}/messages/{message_id}" in discord_bot.recorder.kinds()
    assert "Follow-up: searched the article" in discord_bot.recorder.last("channel").text


async def test_messages_not_addressed_to_the_bot_are_ignored(discord_bot: FakeDiscord):
    await discord_bot.say("What has the US seen?", mention=False)
    everyone = message_payload(content="@everyone What has the US seen?", guild_id=GUILD_A) | {
        "mention_everyone": True
    }
    await discord_bot.bot.get_cog("Ask").on_message(discord_bot.message(everyone))  # type: ignore[union-attr]
    bot_author = message_payload(
        content=f"<@{BOT_ID}> hi",
        guild_id=GUILD_A,
        author=user_payload(5, "otherbot", bot=True),
        mentions=[user_payload(BOT_ID, "citebot", bot=True)],
    )
    await discord_bot.bot.get_cog("Ask").on_message(discord_bot.message(bot_author))  # type: ignore[union-attr]
    assert discord_bot.recorder.sent == []


async def test_mention_without_a_question_gets_help(discord_bot: FakeDiscord):
    await discord_bot.say("")
    reply = discord_bot.recorder.last("channel")
    assert len(reply.embeds) == 1
    assert "/ask question [public]" in reply.text and "Ask citebot" in reply.text
    assert_sendable(reply)


async def test_direct_message_needs_no_mention(discord_bot: FakeDiscord):
    await discord_bot.say("What did Biden say?", guild_id=None, mention=False)
    reply = discord_bot.recorder.last("channel")
    assert "We are following it very closely" in reply.text


async def test_mention_cooldown(bot_data, model):
    settings = replace(bot_data.settings, ask_cooldown=(1, 60.0))
    async with running_bot(settings, bot_data.store, model) as fake:
        await fake.slash("ask", question=US_QUESTION)  # /ask and mentions share the budget
        fake.recorder.clear()
        await fake.say("What did Biden say?")
        reply = fake.recorder.last("channel")
        assert reply.content.startswith("You're asking quickly")
        assert reply.embeds == []
