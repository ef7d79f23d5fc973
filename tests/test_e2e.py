"""``citebot run`` end to end: real bot processes against the Discord emulator on 127.0.0.1.

Each test starts :class:`~tests.discord_emulator.DiscordEmulator` in its own event loop and one
or more ``citebot run`` subprocesses pointed at it with ``DISCORD_API_BASE`` (the gateway comes
from discovery). The processes use the command line's encoder seam with the tiny hash encoder
(``tests/e2e_citebot.py``), so each starts in about a second; every test is bounded in time and
every process is killed if a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.runtime import RESTARTING
from bot.services import make_library, make_store

from .conftest import ROOT, SEED
from .discord_emulator import ADMIN_PERMISSIONS, DiscordEmulator, Guild, Interaction, shard_of
from .e2e_citebot import e2e_encoder

pytestmark = pytest.mark.slow

TOKEN = "OTAwMDAwMDAwMDAwMDAwMDAx.e2e.emulated-token-0123456789abcdefghij"
OWNER = 900_000_000_000_000_002
USERS = (900_000_000_000_000_010, 900_000_000_000_000_011, 900_000_000_000_000_012)
# Two servers, one per shard of two: (id >> 22) % 2 is 0 for A and 1 for B.
GUILD_A = Guild(id=(240_000_000_000 << 22) | 17, owner_id=OWNER, name="Server A")
GUILD_B = Guild(id=(240_000_000_001 << 22) | 17, owner_id=OWNER, name="Server B")
QUESTION = "What has the US seen in Ukraine?"
BREAD_QUESTION = "How many days does a sourdough starter ferment flour and water?"
BREAD = b"Sourdough bread\n\nA sourdough starter ferments flour and water for five days before the first loaf is baked.\n"


# ---------------------------------------------------------------------- processes


class BotProcess:
    """One ``citebot run`` subprocess, its stderr collected line by line."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> BotProcess:
        """Start ``citebot run`` (the worktree's code: PYTHONPATH points at it)."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e_citebot",
            "run",
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return "\n".join(self.lines)

    async def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            if self.proc is not None and self.proc.returncode is not None and self._reader is not None:
                await self._reader
                for line in self.lines:
                    if m := re.search(pattern, line):
                        return m
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"citebot never printed {pattern!r}; stderr:\n{self.stderr}")

    async def ready(self) -> BotProcess:
        """Wait for the bot's "Logged in as …" line (after its servers have arrived)."""
        await self.wait_line(r"Logged in as ")
        return self

    async def exit_code(self, timeout: float) -> int:
        """Wait for the process to end; its exit status."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM; the exit status, which must come within ``timeout``."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.exit_code(timeout)

    def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


class Harness:
    """The emulator, a data folder, and the bot processes of one test."""

    def __init__(self, emulator: DiscordEmulator, tmp: Path) -> None:
        self.emu = emulator
        self.tmp = tmp
        self.data = tmp / "data"
        self.procs: list[BotProcess] = []
        self.extra: dict[str, str] = {}

    def env(self, **settings: str) -> dict[str, str]:
        """The process environment: nothing of the developer's citebot or Discord settings."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CITEBOT_", "DISCORD_", "SHARD_", "DEV_GUILD", "DATABASE_URL"))
        }
        env |= {
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE": self.emu.api_base,
            "CITEBOT_DATA_DIR": str(self.data),
            "CITEBOT_SEEDS_DIR": str(SEED.parent),
            "CITEBOT_ASK_COOLDOWN": "off",
            "CITEBOT_LOG_LEVEL": "info",
            "CITEBOT_SHUTDOWN_TIMEOUT": "8",
            "HF_HUB_OFFLINE": "1",
        }
        return env | self.extra | settings

    def settings(self) -> Settings:
        """The bot's settings, as the processes will read them."""
        env = self.env()
        return Settings.load(environ=env, env_file=None)

    def seed(self, *guilds: Guild) -> None:
        """Fill each server's library with the seed article, with the processes' encoder."""
        settings = self.settings()
        store = make_store(settings)
        try:
            for guild in guilds:
                make_library(settings, store, e2e_encoder(), f"guild-{guild.id}").ingest_paths([SEED])
        finally:
            store.close()

    async def start(self, **settings: str) -> BotProcess:
        """Start a ``citebot run`` process (cwd: a temp folder, so no .env is read)."""
        proc = BotProcess(self.env(**settings), self.tmp)
        self.procs.append(proc)
        return await proc.start()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """An emulator with servers A and B, an empty data folder; processes killed at the end."""
    emulator = DiscordEmulator(TOKEN, [GUILD_A, GUILD_B], owner_id=OWNER)
    await emulator.start()
    h = Harness(emulator, tmp_path)
    try:
        yield h
    finally:
        for proc in h.procs:
            proc.kill()
        for n, proc in enumerate(h.procs):
            if proc.proc is not None:
                await proc.proc.wait()
            print(f"--- citebot process {n} stderr ---\n{proc.stderr}")  # shown when a test fails
        await emulator.stop()


# ---------------------------------------------------------------------- helpers


def embed_text(message: dict[str, Any] | None) -> str:
    """Everything a person reads in a message: content and embed text."""
    if message is None:
        return ""
    parts = [message.get("content") or ""]
    for e in message.get("embeds") or []:
        parts += [e.get("title") or "", e.get("description") or ""]
        parts += [(e.get("author") or {}).get("name") or "", (e.get("footer") or {}).get("text") or ""]
        parts += [f"{f['name']} {f['value']}" for f in e.get("fields") or []]
    return "\n".join(parts)


async def answered(emu: DiscordEmulator, interaction: Interaction, timeout: float = 10.0) -> dict[str, Any]:
    """Wait for the interaction's final message; checks it was acknowledged within 3 s."""
    await emu.wait_for(lambda: interaction.answered, timeout, f"an answer to interaction {interaction.id}")
    assert interaction.callback_at is not None
    assert interaction.callback_at - interaction.dispatched_at < 3.0
    reply = interaction.reply
    assert reply is not None
    return reply


def assert_cited(message: dict[str, Any]) -> None:
    """An answer from the seed article: an embed with its text and a citation footer."""
    assert message["embeds"], message
    embed = message["embeds"][0]
    assert "Blinken" in embed_text(message) or "war crime" in embed_text(message)
    assert (embed.get("footer") or {}).get("text"), "an answer without its citation"


def no_pings(emu: DiscordEmulator) -> None:
    """Every message the bot sent disallowed every mention, and Discord refused nothing."""
    assert emu.rejected == [], emu.rejected
    for request in emu.requests:
        body = request.body if isinstance(request.body, dict) else {}
        body = body.get("data", body) if request.route.endswith("/callback") else body
        if request.method in ("POST", "PATCH") and ("content" in body or "embeds" in body):
            assert body.get("allowed_mentions", {}).get("parse") == [], (request.route, body)


# ---------------------------------------------------------------------- 1. a session


async def test_run_logs_in_syncs_and_answers(harness: Harness) -> None:
    """Login, a valid command sync, a server, /ask in time with a cited embed, a mention, a button."""
    async with asyncio.timeout(60):
        emu = harness.emu
        harness.seed(GUILD_A)
        bot = await (await harness.start()).ready()
        assert "in 2 server(s)" in bot.stderr
        identify = next(f["d"] for _, way, f in emu.frames if way == "in" and f["op"] == 2)
        assert identify["intents"] & (1 << 15) == 0, "asks for the privileged message-content intent"
        names = {c["name"] for c in emu.commands[None]}
        assert {"ask", "ingest", "articles", "summary", "help", "Ask citebot"} <= names

        ask = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION, public=True)
        reply = await answered(emu, ask)
        assert ask.callback is not None and ask.callback["type"] == 5  # deferred first, then answered
        assert_cited(reply)

        mention = await emu.post_message(GUILD_A, USERS[1], f"<@{emu.app_id}> {QUESTION}")
        replies = await emu.wait_for(lambda: emu.replies_to(mention), 10, "a reply to the mention")
        assert_cited(replies[0])

        button = next(c["custom_id"] for row in reply["components"] for c in row["components"])
        click = await emu.click(reply, button, USERS[2])
        shown = await answered(emu, click)
        assert shown["embeds"] and shown["flags"] & 64, "the full passage, to the clicker only"
        assert "Blinken" in embed_text(shown)

        no_pings(emu)
        assert await bot.stop() == 0


# ---------------------------------------------------------------------- 2. reconnects


async def test_resumes_after_a_drop_and_identifies_after_invalid_session(harness: Harness) -> None:
    """A cut socket is RESUMEd (events kept), RECONNECT too; INVALID_SESSION makes it IDENTIFY."""
    async with asyncio.timeout(60):
        emu = harness.emu
        harness.seed(GUILD_A)
        bot = await (await harness.start()).ready()
        (session,) = emu.sessions.values()

        await emu.drop(0)
        # Sent while the bot is away: Discord keeps it for the RESUME, and so does the emulator.
        ask = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION)
        await emu.wait_for(lambda: session.resumes == 1, 10, "a RESUME")
        assert_cited(await answered(emu, ask))
        ask = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION)
        assert_cited(await answered(emu, ask))

        await emu.request_reconnect(0)
        await emu.wait_for(lambda: session.resumes == 2, 10, "a RESUME after RECONNECT")

        await emu.invalidate(0)
        await emu.wait_for(lambda: len(emu.sessions) == 1 and session.id not in emu.sessions, 15, "IDENTIFY")
        identifies = [f for _, way, f in emu.frames if way == "in" and f["op"] == 2]
        assert len(identifies) == 2
        ask = await emu.slash(GUILD_A, USERS[1], "ask", question=QUESTION)
        assert_cited(await answered(emu, ask))

        no_pings(emu)
        assert await bot.stop() == 0


# ---------------------------------------------------------------------- 3. rate limits


async def test_waits_out_429_and_loses_nothing(harness: Harness) -> None:
    """A 429 with retry_after on a follow-up and on a channel message: waited out, sent once."""
    async with asyncio.timeout(60):
        emu = harness.emu
        harness.seed(GUILD_A)
        bot = await (await harness.start()).ready()

        emu.rate_limit("POST", r"^/webhooks/", retry_after=1.0)
        emu.rate_limit("POST", r"^/channels/\d+/messages$", retry_after=1.0)
        ask = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION)
        mention = await emu.post_message(GUILD_A, USERS[1], f"<@{emu.app_id}> {QUESTION}")

        assert_cited(await answered(emu, ask))
        replies = await emu.wait_for(lambda: emu.replies_to(mention), 10, "a reply to the mention")
        assert len(ask.followups) == 1 and len(replies) == 1, "a message lost or sent twice"
        assert_cited(replies[0])
        for route in ("/webhooks/{app}/{token}", "/channels/{channel}/messages"):
            tries = [r for r in emu.requests if r.route == route and r.method == "POST"]
            assert [r.status for r in tries] == [429, 200], route
            assert tries[1].at - tries[0].at >= 0.95, "retried before retry_after"

        no_pings(emu)
        assert await bot.stop() == 0


# ---------------------------------------------------------------------- 4. shards


async def _sharded(harness: Harness) -> None:
    emu = harness.emu
    harness.seed(GUILD_A, GUILD_B)
    assert shard_of(GUILD_A.id, 2) == 0 and shard_of(GUILD_B.id, 2) == 1

    # Shard 1 first: it must connect without syncing commands.
    one = await (await harness.start(SHARD_COUNT="2", SHARD_IDS="1")).ready()
    assert "commands" not in {r.route.rsplit("/", 1)[-1] for r in emu.requests if r.method == "PUT"}
    zero = await (await harness.start(SHARD_COUNT="2", SHARD_IDS="0")).ready()
    assert [r.route for r in emu.requests if r.method == "PUT"] == ["/applications/{app}/commands"]
    assert sorted(s.shard for s in emu.sessions.values()) == [(0, 2), (1, 2)]

    def guilds_seen(shard: int) -> set[int]:
        (session,) = emu.sessions_of(shard)
        return {int(f["d"]["id"]) for f in session.sent if f["t"] == "GUILD_CREATE"}

    assert guilds_seen(0) == {GUILD_A.id} and guilds_seen(1) == {GUILD_B.id}
    assert "shards [0] of 2" in zero.stderr and "shards [1] of 2" in one.stderr

    # An admin of A adds an article through shard 0's process; B's library does not have it.
    ingest = await emu.slash(
        GUILD_A, OWNER, "ingest", permissions=ADMIN_PERMISSIONS, attachment=("bread.txt", BREAD)
    )
    assert "added" in embed_text(await answered(emu, ingest)).lower()
    ask_b = await emu.slash(GUILD_B, USERS[1], "ask", question=BREAD_QUESTION)
    assert "sourdough" not in embed_text(await answered(emu, ask_b)).lower()

    # The processes trade shards (a redeploy): A is now served by the other process.
    assert await zero.stop() == 0 and await one.stop() == 0
    zero = await (await harness.start(SHARD_COUNT="2", SHARD_IDS="1")).ready()
    one = await (await harness.start(SHARD_COUNT="2", SHARD_IDS="0")).ready()
    ask_a = await emu.slash(GUILD_A, USERS[0], "ask", question=BREAD_QUESTION)
    reply = await answered(emu, ask_a)
    assert "five days" in embed_text(reply), embed_text(reply)
    assert [r.route for r in emu.requests if r.method == "PUT"] == ["/applications/{app}/commands"] * 2
    no_pings(emu)
    assert await zero.stop() == 0 and await one.stop() == 0


async def test_two_shard_processes_share_a_data_folder(harness: Harness) -> None:
    """SHARD_COUNT=2 in two processes on one data folder: events by shard, one sync, one library."""
    async with asyncio.timeout(90):
        await _sharded(harness)


async def test_two_shard_processes_share_postgresql(harness: Harness, pg_dsn: str) -> None:
    """The same with DATABASE_URL: both processes on one PostgreSQL database."""
    async with asyncio.timeout(90):
        harness.extra["DATABASE_URL"] = pg_dsn
        await _sharded(harness)


# ---------------------------------------------------------------------- 5. stopping


async def test_sigterm_finishes_answers_in_flight(harness: Harness) -> None:
    """SIGTERM with three answers in flight: all three arrive, a new question is told to wait, exit 0."""
    async with asyncio.timeout(60):
        emu = harness.emu
        harness.seed(GUILD_A)
        bot = await (await harness.start()).ready()

        # Each answer is held up by a 429 (4 s), so all three are in flight at the signal and
        # still are when the late question comes (2 s was too close on a loaded machine: the
        # answers could finish, and the bot leave, before the late question reached it).
        emu.rate_limit("POST", r"^/webhooks/", retry_after=4.0, times=3)
        asks = [await emu.slash(GUILD_A, user, "ask", question=QUESTION) for user in USERS]
        await emu.wait_for(
            lambda: sum(r.status == 429 for r in emu.requests) == 3, 10, "three answers held by a 429"
        )
        assert not any(a.followups for a in asks)
        started = time.monotonic()
        assert bot.proc is not None
        bot.proc.send_signal(signal.SIGTERM)
        await bot.wait_line("stopping: finishing 3 answer")
        late = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION)

        assert await bot.exit_code(10) == 0
        assert time.monotonic() - started < 10
        for ask in asks:
            assert_cited(await answered(emu, ask, timeout=1))
        assert late.callback is not None and late.callback["data"]["content"] == RESTARTING
        assert "Traceback" not in bot.stderr
        no_pings(emu)


async def test_refused_token_exits_1_with_one_line(harness: Harness) -> None:
    """Close code 4004 (the token was reset after login): exit 1, one clear line, no traceback."""
    async with asyncio.timeout(30):
        harness.emu.gateway_refuses_token = True
        bot = await harness.start()
        assert await bot.exit_code(20) == 1
        said = [line for line in bot.lines if line.startswith("citebot:")]
        assert said[-1].startswith("citebot: Discord refused DISCORD_TOKEN"), bot.stderr
        assert len([line for line in said if "refused" in line]) == 1
        assert "Traceback" not in bot.stderr and TOKEN not in bot.stderr
        assert any(f["op"] == 2 for _, way, f in harness.emu.frames if way == "in")


# ---------------------------------------------------------------------- 6. operations


async def test_healthz_and_metrics_follow_the_bot(harness: Harness) -> None:
    """/healthz says connected; /metrics counts answers, declines, ingests; logs are JSON lines."""
    async with asyncio.timeout(60):
        emu = harness.emu
        harness.seed(GUILD_A)
        bot = await harness.start(CITEBOT_OPS_PORT="0", CITEBOT_LOG_FORMAT="json")
        base = (await bot.wait_line(r"health and metrics on (http://127\.0\.0\.1:\d+/)"))[1]
        await bot.ready()

        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> tuple[int, str]:
                async with http.get(base + path) as response:
                    return response.status, await response.text()

            async def healthy() -> dict[str, Any]:
                for _ in range(100):
                    status, body = await get("healthz")
                    if status == 200:
                        return dict(json.loads(body))
                    await asyncio.sleep(0.1)
                raise AssertionError(f"/healthz stayed {status}: {body}")

            report = await healthy()
            assert (
                report["gateway"] and report["store"] and report["model"] and report["shards"] == {"0": True}
            )

            ask = await emu.slash(GUILD_A, USERS[0], "ask", question=QUESTION)
            assert_cited(await answered(emu, ask))
            nonsense = await emu.slash(GUILD_A, USERS[0], "ask", question="zebra quantum marmalade")
            assert not (await answered(emu, nonsense))["embeds"]
            ingest = await emu.slash(
                GUILD_A, OWNER, "ingest", permissions=ADMIN_PERMISSIONS, attachment=("bread.txt", BREAD)
            )
            await answered(emu, ingest)
            empty = await emu.slash(GUILD_B, USERS[1], "ask", question=QUESTION)  # B has no library
            await answered(emu, empty)

            await emu.drop(0)
            await emu.wait_for(lambda: any(s.resumes for s in emu.sessions.values()), 10, "a RESUME")
            await healthy()

            status, text = await get("metrics")
            assert status == 200
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            assert samples[("citebot_questions_total", (("outcome", "answered"),))] == 1
            assert samples[("citebot_questions_total", (("outcome", "declined"),))] == 1
            assert samples[("citebot_answer_seconds_count", ())] == 2
            assert samples[("citebot_ingests_total", ())] == 1
            assert samples[("citebot_errors_total", (("kind", "EmptyLibraryError"),))] == 1
            assert samples[("citebot_worker_queue_depth", (("pool", "library"),))] == 0
            assert ("citebot_event_loop_lag_seconds", ()) in samples
            assert samples[("citebot_gateway_latency_seconds", (("shard", "0"),))] >= 0

        assert await bot.stop() == 0
        logs = [line for line in bot.lines if line.startswith("{")]
        assert logs and all(json.loads(line)["logger"] for line in logs)
        assert TOKEN not in bot.stderr
