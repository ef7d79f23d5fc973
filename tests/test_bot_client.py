"""The bot itself: startup and command sync, intents, sharding, the one error handler, the
token kept out of logs, settings, and the `run` / `feedback` commands."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import discord
import pytest

from bot import render
from bot.cli import EXIT_ERROR, EXIT_OK, main
from bot.client import APOLOGY, Citebot, make_intents, serve, token_filter
from bot.config import ConfigError, Settings
from bot.redact import MASK
from bot.testing import ADMIN_ID, APP_ID, GUILD_A, TOKEN, FakeDiscord, Recorder, RecordingHTTP, running_bot
from embeddings import CorruptIndexError, Feedback, HashEncoder, Library, LocalStore

from .conftest import ROOT

COMMANDS = {
    "ask",
    "articles",
    "summary",
    "help",
    "ingest",
    "forget",
    "subscribe",
    "subscriptions",
    "unsubscribe",
    "config",
    "gaps",
    "pins",
    "export",
    "privacy",
    "Ask citebot",
}


@pytest.fixture
def hash_settings(tmp_path: Path) -> Settings:
    return Settings.load(environ={"CITEBOT_ASK_COOLDOWN": "off"}, env_file=None, data_dir=tmp_path / "data")


# ---------------------------------------------------------------------- startup


async def test_setup_hook_loads_cogs_and_syncs_globally(hash_settings: Settings):
    store = LocalStore(hash_settings.data_dir)
    async with running_bot(hash_settings, store, HashEncoder()) as fake:
        assert set(fake.bot.cogs) == {"Ask", "Articles", "Admin", "Subscriptions", "Community"}
        puts = [s for s in fake.startup if s.method == "PUT"]
        assert [s.path for s in puts] == ["/applications/{application_id}/commands"]
        synced = {c["name"]: c for c in puts[0].payload}
        assert set(synced) == COMMANDS
        manage_guild = discord.Permissions(manage_guild=True).value
        for name in (
            "ingest",
            "forget",
            "subscribe",
            "subscriptions",
            "unsubscribe",
            "config",
            "gaps",
            "pins",
            "export",
        ):
            assert synced[name]["default_member_permissions"] == manage_guild
            assert synced[name]["contexts"] == [0]  # servers only
        assert synced["ask"]["default_member_permissions"] is None
        assert synced["privacy"]["default_member_permissions"] is None  # every member's own data
        assert synced["Ask citebot"]["type"] == 3  # a message context menu
        assert all(len(c.get("description", "")) <= 100 for c in synced.values())
    store.close()


async def test_dev_guild_gets_the_commands_at_once(hash_settings: Settings):
    store = LocalStore(hash_settings.data_dir)
    async with running_bot(replace(hash_settings, dev_guild_id=GUILD_A), store, HashEncoder()) as fake:
        puts = [s for s in fake.startup if s.method == "PUT"]
        assert [s.url.split("/applications/")[1] for s in puts] == [f"{APP_ID}/guilds/{GUILD_A}/commands"]
        assert {c["name"] for c in puts[0].payload} == COMMANDS
    store.close()


async def test_shards_are_passed_through_and_only_shard_zero_syncs(hash_settings: Settings):
    store = LocalStore(hash_settings.data_dir)
    settings = replace(hash_settings, shard_count=4, shard_ids=(2, 3))
    async with running_bot(settings, store, HashEncoder()) as fake:
        assert isinstance(fake.bot, discord.AutoShardedClient)
        assert fake.bot.shard_count == 4 and fake.bot.shard_ids == [2, 3]
        assert [s for s in fake.startup if s.method == "PUT"] == []
        assert set(fake.bot.cogs) == {
            "Ask",
            "Articles",
            "Admin",
            "Subscriptions",
            "Community",
        }  # still serves its servers
    async with running_bot(replace(settings, shard_ids=(0, 1)), store, HashEncoder()) as fake:
        assert len([s for s in fake.startup if s.method == "PUT"]) == 1
    store.close()


def test_settings_for_shards_and_cooldown():
    s = Settings.load(
        environ={"SHARD_COUNT": "4", "SHARD_IDS": "0, 2", "CITEBOT_ASK_COOLDOWN": "2/15"}, env_file=None
    )
    assert (s.shard_count, s.shard_ids, s.ask_cooldown) == (4, (0, 2), (2, 15.0))
    assert Settings.load(environ={"CITEBOT_ASK_COOLDOWN": "10"}, env_file=None).ask_cooldown == (1, 10.0)
    assert Settings.load(environ={"CITEBOT_ASK_COOLDOWN": "off"}, env_file=None).ask_cooldown is None
    for bad in ({"SHARD_IDS": "1"}, {"SHARD_COUNT": "2", "SHARD_IDS": "2"}, {"CITEBOT_ASK_COOLDOWN": "fast"}):
        with pytest.raises(ConfigError):
            Settings.load(environ=bad, env_file=None)
    with pytest.raises(ConfigError, match="CITEBOT_DM_LIBRARY"):
        Settings.load(environ={"CITEBOT_DM_LIBRARY": "../etc"}, env_file=None)


def test_intents_and_mentions():
    intents = make_intents()
    assert not intents.message_content and not intents.members and not intents.presences
    assert intents.guilds and intents.guild_messages and intents.dm_messages
    bot = Citebot(Settings.load(environ={}, env_file=None), LocalStore("/nonexistent"), HashEncoder())
    assert bot.allowed_mentions is not None and bot.allowed_mentions.to_dict() == {"parse": []}
    assert bot.intents.value == intents.value
    # Reading unaddressed messages (threads, forum posts) is the operator's choice: privileged.
    assert make_intents(message_content=True).message_content
    settings = Settings.load(environ={"CITEBOT_MESSAGE_CONTENT": "1"}, env_file=None)
    assert Citebot(settings, LocalStore("/nonexistent"), HashEncoder()).intents.message_content


def test_the_fetcher_keeps_the_core_free_of_discord():
    code = "import sys, embeddings.fetch; assert 'discord' not in sys.modules, 'discord imported'"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )


# ---------------------------------------------------------------------- one error handler


async def test_unexpected_error_after_defer_is_logged_and_apologised(
    discord_bot: FakeDiscord, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    def boom(self: Library, question: str, **kw: object) -> None:
        raise RuntimeError("the index exploded")

    monkeypatch.setattr(Library, "ask", boom)
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        await discord_bot.slash("ask", question="Anything?")
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    reply = discord_bot.recorder.last("followup")
    assert reply.content == APOLOGY and reply.ephemeral
    assert "the index exploded" not in reply.content
    (record,) = [r for r in caplog.records if r.name == "bot.client"]
    assert record.getMessage().startswith("unexpected error in ask (guild 111111111111111111")
    assert record.exc_info and record.exc_info[0] is RuntimeError


async def test_unexpected_error_before_defer(
    discord_bot: FakeDiscord, monkeypatch: pytest.MonkeyPatch, caplog
):
    def boom(*args: object, **kw: object) -> None:
        raise ValueError("render failed")

    monkeypatch.setattr(render, "help_embed", boom)
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        await discord_bot.slash("help")
    assert discord_bot.recorder.kinds() == ["message"]
    assert discord_bot.recorder.sent[0].content == APOLOGY and discord_bot.recorder.sent[0].ephemeral
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)


async def test_button_errors_are_answered_too(
    discord_bot: FakeDiscord, monkeypatch: pytest.MonkeyPatch, caplog
):
    await discord_bot.slash("ask", question="What has the US seen in Ukraine?")
    answer = discord_bot.recorder.last("followup")
    # The module the running bot loaded (closing a bot unloads its extensions from sys.modules).
    ask_cog = sys.modules[type(discord_bot.bot.get_cog("Ask")).__module__]

    def boom(*args: object) -> None:
        raise KeyError("lost")

    monkeypatch.setattr(ask_cog, "recorded", boom)
    discord_bot.recorder.clear()
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        await discord_bot.click(answer, answer.custom_ids[1], user_id=ADMIN_ID)
    assert discord_bot.recorder.kinds() == ["defer", "followup"]
    assert discord_bot.recorder.last("followup").content == APOLOGY
    assert any("unexpected error in component" in r.getMessage() for r in caplog.records)


async def test_operator_problems_are_logged_but_not_shown(discord_bot: FakeDiscord, monkeypatch, caplog):
    def damaged(self: Library, question: str, **kw: object) -> None:
        raise CorruptIndexError(
            self.name,
            "passage vectors",
            "do not match the database",
            rebuildable=True,
            location="/srv/citebot/data/vectors.3.npy",
        )

    monkeypatch.setattr(Library, "ask", damaged)
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        await discord_bot.slash("ask", question="Anything?")
    reply = discord_bot.recorder.last("followup")
    assert reply.content == "This library needs maintenance by the bot's operator; it has been logged."
    assert "/srv" not in reply.content
    assert any(r.exc_info and r.exc_info[0] is CorruptIndexError for r in caplog.records)


async def test_mention_errors_get_a_reply(discord_bot: FakeDiscord, monkeypatch, caplog):
    def boom(self: Library, question: str, **kw: object) -> None:
        raise RuntimeError("nope")

    monkeypatch.setattr(Library, "ask", boom)
    with caplog.at_level(logging.ERROR, logger="bot.cogs.ask"):
        await discord_bot.say("What has the US seen?")
    assert discord_bot.recorder.last("channel").content == APOLOGY
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


# ---------------------------------------------------------------------- the token


async def test_token_never_reaches_logs_or_discord_payloads(
    bot_data, model, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.DEBUG):
        async with running_bot(bot_data.settings, bot_data.store, model) as fake:
            await fake.slash("ask", question="What has the US seen in Ukraine?")
            await fake.slash("ask", question="")
            await fake.say("What did Biden say?")
            assert fake.http.logins == [TOKEN]  # it was used to log in
            sent = fake.startup + fake.recorder.sent
    assert caplog.records and TOKEN not in caplog.text
    assert all(TOKEN not in json.dumps(s.payload) and TOKEN not in s.url for s in sent)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (discord.LoginFailure("Improper token has been passed."), "citebot: Discord refused DISCORD_TOKEN"),
        (OSError("Name or service not known"), "citebot: couldn't reach Discord (OSError: Name or service"),
    ],
)
def test_serve_fails_cleanly_without_printing_the_token(hash_settings: Settings, caplog, error, message):
    bot = Citebot(hash_settings, LocalStore(hash_settings.data_dir), HashEncoder())
    http = RecordingHTTP(Recorder(), login_error=error)
    bot.http = http
    bot._connection.http = http
    err = io.StringIO()
    with caplog.at_level(logging.DEBUG):
        code = serve(bot, TOKEN, err)
    assert code == 1
    assert err.getvalue().startswith(message)
    assert TOKEN not in err.getvalue() and TOKEN not in caplog.text
    assert http.logins == [TOKEN]


def test_redact_filter_scrubs_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(token_filter(TOKEN))
    logger = logging.getLogger("citebot.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("connecting with %s", TOKEN)
        try:
            raise RuntimeError(f"bad header Bot {TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert TOKEN not in out and out.count(MASK) == 2


# ---------------------------------------------------------------------- the command line


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env here
    return tmp_path


def test_run_without_a_token_fails_cleanly(cli_env: Path):
    out, err = io.StringIO(), io.StringIO()
    assert main(["run"], out=out, err=err) == EXIT_ERROR
    message = err.getvalue()
    assert "DISCORD_TOKEN is not set" in message
    assert "https://discord.com/developers/applications" in message
    assert "`citebot chat`" in message and "offline" in message


def test_python_dash_m_bot_runs_the_bot(cli_env: Path):
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"} | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=cli_env, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == EXIT_ERROR
    assert "DISCORD_TOKEN is not set" in result.stderr and result.stdout == ""


def test_feedback_lists_votes(cli_env: Path):
    store = LocalStore(cli_env / "data")
    store.add_feedback(
        "guild-1",
        Feedback(
            "Who said it?",
            7,
            "abc",
            1,
            "42",
            "2024-05-01T10:00:00+00:00",
            {"title": "Seals", "paragraph": "3"},
        ),
    )
    store.add_feedback("guild-1", Feedback("Why?", 8, "abc", -1, "43", "2024-05-02T10:00:00+00:00", {}))
    store.add_feedback("guild-2", Feedback("When?", 9, "def", 1, "44", "2024-05-03T10:00:00+00:00", {}))
    store.close()

    out, err = io.StringIO(), io.StringIO()
    assert main(["feedback", "--library", "guild-1"], out=out, err=err) == EXIT_OK
    lines = out.getvalue().splitlines()
    assert lines[0] == "2024-05-02T10:00:00  -1  guild-1  'Why?' -> “abc”"
    assert lines[1] == "2024-05-01T10:00:00  +1  guild-1  'Who said it?' -> “Seals” ¶ 3"
    assert lines[2] == "2 vote(s): 1 up, 1 down."

    out = io.StringIO()
    assert main(["feedback", "--all", "--json"], out=out, err=err) == EXIT_OK
    data = json.loads(out.getvalue())
    assert [(d["library"], d["vote"], d["question"]) for d in data] == [
        ("guild-2", 1, "When?"),
        ("guild-1", -1, "Why?"),
        ("guild-1", 1, "Who said it?"),
    ]

    out, err = io.StringIO(), io.StringIO()
    assert main(["feedback", "--library", "nothing-here"], out=out, err=err) == EXIT_ERROR
    assert "does not exist" in err.getvalue()


async def test_every_message_is_sent_with_mentions_disabled(discord_bot: FakeDiscord):
    await discord_bot.slash("ask", question="What has the US seen in Ukraine? @everyone")
    answer = discord_bot.recorder.last("followup")
    for custom_id in answer.custom_ids[:3]:
        await discord_bot.click(answer, custom_id)
    await discord_bot.slash("ask", question="banana bread <@&123> @here")
    await discord_bot.slash("ask", question="   ")  # refused before the defer
    await discord_bot.slash("help")
    await discord_bot.say("What did Biden say?")
    messages = [s for s in discord_bot.recorder.sent if s.body.get("content") or s.body.get("embeds")]
    assert {s.kind for s in messages} == {"followup", "message", "channel"} and len(messages) == 8
    for s in messages:
        assert s.body["allowed_mentions"]["parse"] == [], s.kind
        assert not s.body["allowed_mentions"].get("replied_user")


async def test_library_work_runs_off_the_event_loop(
    discord_bot: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    """A slow model (0.3 s a question) must not stall the loop that carries the heartbeat."""
    threads: list[str] = []
    real_ask = Library.ask

    def slow_ask(self: Library, question: str, **kw: object):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        time.sleep(0.3)
        return real_ask(self, question, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Library, "ask", slow_ask)
    lags: list[float] = []

    async def ticker() -> None:
        for _ in range(60):
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    questions = ["What did Biden say?", "Which weapons?", "What will the ICC look at?", "Who is Blinken?"]
    await asyncio.gather(ticker(), *(discord_bot.slash("ask", question=q) for q in questions))
    assert len(threads) == 4 and all(name.startswith("citebot-library") for name in threads)
    assert max(lags) < 0.2  # on the loop, one question alone would stall it for 0.3 s
    assert discord_bot.recorder.kinds().count("followup") == 4
