"""Community mode through payload-built Discord objects, on both stores: /config, mention
channels, thread mode, forum auto-replies, /gaps, pins, quotas, /export, /privacy, leaving."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.config import Settings
from bot.services import make_library
from bot.testing import (
    ADMIN_ID,
    ADMIN_PERMISSIONS,
    BOT_ID,
    GUILD_A,
    FakeDiscord,
    Sent,
    attachment_payload,
    channel_of,
    forum_of,
    running_bot,
)
from embeddings import LocalStore, Store, community

from .conftest import SEED

IN_LIBRARY = "What did the American Embassy in Kyiv say?"
OFF_TOPIC = "How many moons does Neptune have?"
LIBRARY = f"guild-{GUILD_A}"


@pytest.fixture(scope="module", params=["local", "postgres"])
def community_data(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model
) -> Iterator[tuple[Settings, Store]]:
    """Server A's library (the seed article) in a store of each kind, built once per module."""
    root = tmp_path_factory.mktemp("community")
    settings = Settings.load(environ={"CITEBOT_ASK_COOLDOWN": "off"}, env_file=None, data_dir=root / "data")
    database = None
    if request.param == "local":
        store: Store = LocalStore(settings.data_dir)
    else:
        from embeddings.store.postgres import PostgresStore

        postgres = request.getfixturevalue("postgres")
        database = postgres.new_database()
        store = PostgresStore(postgres.dsn(database))
    make_library(settings, store, model, LIBRARY).ingest_paths([SEED])
    yield settings, store
    store.close()
    if database is not None:
        postgres.drop_database(database)


@pytest.fixture
async def fake(community_data: tuple[Settings, Store], model) -> AsyncIterator[FakeDiscord]:
    settings, store = community_data
    # Each test starts from the defaults: no settings, pins, logged questions or votes of others.
    for kind in (community.SETTINGS_KIND, community.PIN_KIND, community.QUESTION_KIND, community.FORUM_KIND):
        store.delete_records(LIBRARY, kind)
    async with running_bot(settings, store, model) as bot:
        yield bot


async def admin(fake: FakeDiscord, name: str, **options: Any) -> Sent:
    fake.recorder.clear()
    fake.tree.errors.clear()
    await fake.slash(name, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, **options)
    return fake.recorder.sent[-1]


async def configure(fake: FakeDiscord, setting: str, value: str) -> None:
    sent = await admin(fake, "config", setting=setting, value=value)
    assert fake.tree.errors == [], fake.tree.errors
    assert sent.embeds and sent.embeds[0].fields[0].name == setting


def channel_posts(fake: FakeDiscord, channel_id: int) -> list[Sent]:
    return [s for s in fake.recorder.of("channel") if f"/channels/{channel_id}/" in s.url]


# ---------------------------------------------------------------------- /config


async def test_config_shows_explains_and_changes_settings(fake: FakeDiscord):
    await fake.slash("config")  # a member without Manage Server
    assert "Manage Server" in fake.recorder.last("message").content
    shown = await admin(fake, "config")
    assert shown.ephemeral and len(shown.embeds[0].fields) == len(community.SETTING_HELP)
    assert all("(default)" in f.value for f in shown.embeds[0].fields)
    await configure(fake, "thread_mode", "on")
    sent = await admin(fake, "config", setting="thread_mode")
    assert (
        sent.embeds[0].fields[0].value.startswith("**on**")
        and "(default)" not in sent.embeds[0].fields[0].value
    )
    sent = await admin(fake, "config", setting="abstain_threshold", value="1.5")
    assert "from 0 to 1" in sent.content and sent.ephemeral
    await configure(fake, "thread_mode", "default")
    sent = await admin(fake, "config", setting="thread_mode")
    assert "(default)" in sent.embeds[0].fields[0].value


# ---------------------------------------------------------------------- mentions, threads, forums


async def test_mentions_are_answered_only_in_the_chosen_channels(fake: FakeDiscord):
    await configure(fake, "mention_channels", "123456789012345678")
    fake.recorder.clear()
    await fake.say(IN_LIBRARY)
    (reply,) = fake.recorder.of("channel")
    assert "only in <#123456789012345678>" in reply.content and not reply.embeds
    await configure(fake, "mention_channels", f"<#{channel_of(GUILD_A)}>")
    fake.recorder.clear()
    await fake.say(IN_LIBRARY)
    assert fake.recorder.last("channel").embeds  # answered here


async def test_thread_mode_answers_in_a_thread_where_no_mention_is_needed(fake: FakeDiscord):
    await configure(fake, "thread_mode", "on")
    fake.recorder.clear()
    await fake.say(IN_LIBRARY)
    (opened,) = fake.http.threads
    assert opened["name"] == IN_LIBRARY and opened["owner_id"] == str(BOT_ID)
    thread = fake.add_thread(opened)
    (answer,) = channel_posts(fake, thread.id)
    assert "American Embassy" in answer.text
    assert not channel_posts(fake, channel_of(GUILD_A))  # nothing in the channel itself
    # In the bot's thread a plain message is a follow-up of the thread's answer.
    fake.recorder.clear()
    await fake.say("What did Blinken say about war crimes?", mention=False, channel_id=thread.id)
    (follow_up,) = channel_posts(fake, thread.id)
    assert "Follow-up" in follow_up.text
    # An image or an unreadable message (no message-content intent) is not a question.
    fake.recorder.clear()
    await fake.say("", mention=False, channel_id=thread.id)
    assert fake.recorder.sent == []


async def test_forum_posts_get_a_reply_only_when_sure_and_only_once(fake: FakeDiscord):
    fake.recorder.clear()
    post = await fake.forum_post("American Embassy in Kyiv", IN_LIBRARY)
    assert channel_posts(fake, post.id) == []  # the forum was not chosen: silent
    await configure(fake, "forum_channels", str(forum_of(GUILD_A)))
    fake.recorder.clear()
    post = await fake.forum_post("American Embassy in Kyiv", IN_LIBRARY)
    (reply,) = channel_posts(fake, post.id)
    assert "American Embassy" in reply.text and reply.custom_ids  # a cited answer with its buttons
    fake.recorder.clear()
    await fake.bot.get_cog("Community").on_thread_create(post)  # type: ignore[union-attr]  # a re-delivered event
    assert channel_posts(fake, post.id) == []
    # Asked in the post (a mention), the bot answers, following up its reply there.
    await fake.say("What did Blinken say about war crimes?", channel_id=post.id)
    (follow_up,) = channel_posts(fake, post.id)
    assert "Follow-up" in follow_up.text
    fake.recorder.clear()
    off = await fake.forum_post("Astronomy", OFF_TOPIC)
    assert channel_posts(fake, off.id) == []  # not sure: silent
    # The threshold is the server's: at 1.0 even the in-library question stays unanswered.
    await configure(fake, "autoreply_threshold", "1")
    fake.recorder.clear()
    strict = await fake.forum_post("American Embassy in Kyiv", IN_LIBRARY)
    assert channel_posts(fake, strict.id) == []


# ---------------------------------------------------------------------- gaps and pins


async def test_gaps_group_what_went_unanswered_with_a_csv(fake: FakeDiscord):
    for q in (OFF_TOPIC, "how many moons does neptune have", "What is the boiling point of gold?"):
        await fake.say(q)
    sent = await admin(fake, "gaps", period="7d")
    assert sent.ephemeral
    (embed,) = sent.embeds
    assert embed.fields[0].name.startswith("1. asked 2×") and "Neptune" in embed.fields[0].value
    (attachment,) = sent.body["attachments"]
    assert attachment["filename"] == "gaps.csv"
    await fake.slash("gaps")  # members may not see it
    assert "Manage Server" in fake.recorder.last("message").content
    sent = await admin(fake, "gaps", period="soon")
    assert "is not a period" in sent.content


async def test_moderators_pin_one_of_other_sources(fake: FakeDiscord):
    fake.recorder.clear()
    await fake.slash("ask", question=IN_LIBRARY, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    answer = fake.recorder.last("followup")
    more = next(c for c in answer.custom_ids if c.startswith("citebot:more:"))
    fake.recorder.clear()
    await fake.click(answer, more)  # a member: no pin buttons
    assert not any(c.startswith("citebot:pin:") for c in fake.recorder.last("followup").custom_ids)
    fake.recorder.clear()
    await fake.click(answer, more, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    sources = fake.recorder.last("followup")
    pins = [c for c in sources.custom_ids if c.startswith("citebot:pin:")]
    assert pins
    fake.recorder.clear()
    await fake.click(sources, pins[0])  # a member pressing a moderator's button
    assert "Manage Server" in fake.recorder.last("message").content
    fake.recorder.clear()
    await fake.click(sources, pins[0], user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    assert fake.recorder.last("followup").content.startswith("📌 Pinned")
    fake.recorder.clear()
    await fake.slash("ask", question=IN_LIBRARY)
    again = fake.recorder.last("followup")
    assert "moderators" in again.text
    listed = await admin(fake, "pins")
    (unpin,) = listed.custom_ids
    fake.recorder.clear()
    await fake.click(listed, unpin, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    assert fake.recorder.last("followup").content.startswith("Unpinned")
    fake.recorder.clear()
    await fake.slash("ask", question=IN_LIBRARY)
    assert "moderators" not in fake.recorder.last("followup").text


# ---------------------------------------------------------------------- quotas


async def test_server_quotas_say_what_was_hit(fake: FakeDiscord):
    await configure(fake, "questions_per_minute", "1")
    fake.recorder.clear()
    await fake.slash("ask", question=IN_LIBRARY)
    await fake.slash("ask", question=IN_LIBRARY, user_id=ADMIN_ID)  # another member, same server
    refused = fake.recorder.last("message")
    assert "1 questions in the last minute" in refused.content and refused.ephemeral
    await configure(fake, "questions_per_minute", "0")
    await configure(fake, "max_articles", "1")
    data = b"Fish swim in schools to avoid predators."
    upload = attachment_payload("fish.txt", data)
    fake.http.cdn[upload["url"]] = data
    sent = await admin(fake, "ingest", file=upload)
    assert "library is full" in sent.content and sent.ephemeral


# ---------------------------------------------------------------------- export, privacy, leaving


async def test_export_attaches_the_library(fake: FakeDiscord):
    await configure(fake, "thread_mode", "on")
    sent = await admin(fake, "export")
    (attachment,) = sent.body["attachments"]
    assert attachment["filename"] == f"{LIBRARY}.jsonl" and sent.ephemeral


async def test_privacy_shows_and_erases_a_members_data(fake: FakeDiscord):
    await fake.say(OFF_TOPIC)
    fake.recorder.clear()
    await fake.slash("privacy")
    shown = fake.recorder.last("followup")
    assert "Your questions" in shown.content and "1 now" in shown.content
    (erase,) = shown.custom_ids
    fake.recorder.clear()
    await fake.click(shown, erase, user_id=ADMIN_ID)  # someone else's button
    assert "not yours" in fake.recorder.last("message").content
    await fake.click(shown, erase)
    assert fake.recorder.last("followup").content.startswith("Deleted 1 question(s)")
    fake.recorder.clear()
    await fake.slash("privacy")
    assert "0 now" in fake.recorder.last("followup").content


async def test_a_removed_servers_library_waits_out_the_grace_period(
    fake: FakeDiscord, community_data: tuple[Settings, Store], model
):
    settings, store = community_data
    gone = 555555555555555555  # a server this process does not see any more
    make_library(settings, store, model, f"guild-{gone}").ingest_paths([SEED])
    guild: Any = type("G", (), {"id": gone})()
    cog: Any = fake.bot.get_cog("Community")
    await cog.on_guild_remove(guild)
    assert await cog.sweep() == []  # within the grace period
    await cog.on_guild_join(guild)  # added back: kept
    community.mark_left(
        store, f"guild-{gone}", community.utcnow() - timedelta(days=settings.leave_grace_days + 1)
    )
    assert await cog.sweep() == [f"guild-{gone}"]
    assert f"guild-{gone}" not in store.libraries()
    assert LIBRARY in store.libraries()


async def test_the_manager_role_may_change_the_library(fake: FakeDiscord):
    import discord

    from bot.testing import MEMBER_PERMISSIONS, command_data, interaction_payload

    role_id = 777777777777777777
    guild = fake.bot.get_guild(GUILD_A)
    assert guild is not None
    guild._add_role(
        discord.Role(
            guild=guild,
            state=fake.bot._connection,
            data={
                "id": str(role_id),
                "name": "Librarians",
                "permissions": "0",
                "position": 1,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            },
        )  # type: ignore[arg-type]
    )

    async def as_librarian(name: str, **options: Any) -> Sent:
        payload = interaction_payload(
            type=2,
            data=command_data(fake.command(name), **options),
            guild_id=GUILD_A,
            permissions=MEMBER_PERMISSIONS,
        )
        payload["member"]["roles"] = [str(role_id)]
        fake.recorder.clear()
        await fake.deliver(payload)
        return fake.recorder.sent[-1]

    refused = await as_librarian("config", setting="thread_mode")
    assert "Manage Server" in refused.content
    await configure(fake, "manager_role", f"<@&{role_id}>")
    allowed = await as_librarian("config", setting="manager_role")
    assert allowed.embeds and allowed.embeds[0].fields[0].value.startswith(f"**<@&{role_id}>**")
