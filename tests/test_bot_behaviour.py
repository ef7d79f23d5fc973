"""Behaviour a moderator would call a bug: who may post publicly, what counts as a command, small
talk, uploads with made-up names, the DM library, the ingest report's wording."""

from __future__ import annotations

import discord
from hypothesis import given
from hypothesis import strategies as st

from bot import render
from bot.cogs.admin import upload_key
from bot.cogs.ask import PRIVATE_NOTE
from bot.config import DM_DEMO_LIBRARY, Settings
from bot.testing import MEMBER_PERMISSIONS, OWNER_ID, FakeDiscord
from embeddings import IngestReport, IngestResult
from embeddings.library import is_small_talk

from .test_bot_render import info


async def test_public_answer_only_for_members_who_may_post(discord_bot: FakeDiscord):
    muted = MEMBER_PERMISSIONS & ~discord.Permissions(send_messages=True)
    await discord_bot.slash(
        "ask", question="What has the US seen in Ukraine?", public=True, permissions=muted
    )
    reply = discord_bot.recorder.last("followup")
    assert reply.ephemeral
    assert any(PRIVATE_NOTE in (f.value or "") for f in reply.embeds[0].fields)
    discord_bot.recorder.clear()
    await discord_bot.slash("ask", question="What has the US seen in Ukraine?", public=True)
    assert not discord_bot.recorder.last("followup").ephemeral


async def test_only_the_owner_has_text_commands(discord_bot: FakeDiscord):
    await discord_bot.say("sync the library with the latest news?")
    reply = discord_bot.recorder.last("channel")
    assert reply.embeds or "couldn't find" in reply.content  # answered as a question
    discord_bot.recorder.clear()
    await discord_bot.say("sync", user_id=OWNER_ID)
    # The owner's exact command is left to the command handler: the Ask cog does not answer it.
    assert "channel" not in discord_bot.recorder.kinds()


async def test_thanks_is_not_a_question(discord_bot: FakeDiscord):
    await discord_bot.say("thanks!")
    kinds = discord_bot.recorder.kinds()
    assert "channel" not in kinds  # no "I couldn't find this in the library"
    assert any("reactions" in k for k in kinds)


@given(st.sampled_from(["thanks!", "Thank you :)", "ok 👍", "got it", "LOL", "cool, thx"]))
def test_small_talk_is_recognised(text: str):
    assert is_small_talk(text)


@given(st.sampled_from(["thanks, but who signed it?", "what is a seal", "ok so when was it?", "Blinken"]))
def test_questions_are_not_small_talk(text: str):
    assert not is_small_talk(text)


@given(st.binary(min_size=1, max_size=200), st.binary(min_size=1, max_size=200))
def test_made_up_upload_names_never_replace_another_paste(a: bytes, b: bytes):
    for name in ("message.txt", "message-2.txt", "untitled.md", "paste.txt"):
        assert (upload_key(name, a) == upload_key(name, b)) == (a == b)
    # A real file name identifies the document: its new version replaces the old.
    assert upload_key("seal-survey.md", a) == upload_key("seal-survey.md", b)


def test_direct_messages_get_their_own_demo_library():
    settings = Settings.load(environ={"CITEBOT_LIBRARY": "operator-notes"}, env_file=None)
    assert settings.dm_library_name == DM_DEMO_LIBRARY != settings.library


def test_the_ingest_report_says_updated_for_a_replaced_article():
    report = IngestReport((IngestResult("a", "replaced", info()),))
    assert render.ingest_embed(report, "seals.md").title.startswith("Updated 1 article(s)")
    both = IngestReport((IngestResult("a", "replaced", info()), IngestResult("b", "added", info())))
    assert render.ingest_embed(both, "x").title.startswith("Added 1, updated 1 article(s)")
