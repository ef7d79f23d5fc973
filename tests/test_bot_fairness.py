"""One server can never slow another: fair worker queues, downloads apart, autocomplete from memory."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import Settings
from bot.fairness import FairExecutor, TitleIndex
from bot.testing import (
    ADMIN_ID,
    ADMIN_PERMISSIONS,
    GUILD_A,
    GUILD_B,
    FakeDiscord,
    attachment_payload,
    running_bot,
)
from embeddings import Document, HashEncoder, LocalStore

HERONS = "Herons stand still in shallow water for a long time. They wait for fish to come close."


def test_a_flooding_server_delays_another_by_at_most_one_job_per_worker():
    pool = FairExecutor(workers=1)
    done: list[str] = []
    lock = threading.Lock()

    def job(name: str) -> None:
        time.sleep(0.02)
        with lock:
            done.append(name)

    flood = [pool.submit("server-a", job, f"a{i}") for i in range(20)]
    time.sleep(0.005)  # the first of the flood is running
    other = pool.submit("server-b", job, "b")
    other.result(timeout=5)
    # A FIFO queue would run all twenty first; in turn, b runs after at most two of them.
    assert done.index("b") <= 2
    for f in flood:
        f.result(timeout=5)
    assert [d for d in done if d != "b"] == [f"a{i}" for i in range(20)]  # a server's own order kept
    pool.shutdown(wait=True)


def test_a_flood_leaves_a_worker_free_for_another_server():
    pool = FairExecutor(workers=3)
    gate = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def hold() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(5)
        with lock:
            running -= 1

    flood = [pool.submit("a", hold) for _ in range(10)]
    time.sleep(0.1)
    start = time.monotonic()
    assert pool.submit("b", lambda: "b").result(timeout=5) == "b"
    assert time.monotonic() - start < 0.5  # it did not wait for the flood
    assert most == 2  # the flood never held all three workers
    gate.set()
    for f in flood:
        f.result(timeout=5)
    pool.shutdown(wait=True)


# Every kind of key a server id can be, None included (direct messages have no server).
_keys = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64), st.text(max_size=3), st.just(""))


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(_keys, min_size=1, max_size=30), workers=st.integers(min_value=1, max_value=4))
def test_every_job_finishes_whatever_its_key(keys: list[object], workers: int):
    # A key that looked like "nobody may start" (None) once left a direct message waiting forever.
    pool = FairExecutor(workers=workers)
    futures = [pool.submit(key, lambda i=i: i) for i, key in enumerate(keys)]
    assert [f.result(timeout=5) for f in futures] == list(range(len(keys)))
    pool.shutdown(wait=True)


def test_an_error_reaches_the_caller():
    pool = FairExecutor(workers=1)
    with pytest.raises(ZeroDivisionError):
        pool.submit("a", lambda: 1 / 0).result(timeout=5)
    pool.shutdown(wait=True)


def test_shutdown_cancels_what_waits_and_lets_the_running_job_finish():
    pool = FairExecutor(workers=1)
    gate = threading.Event()
    blocker = pool.submit("a", gate.wait, 5)
    deadline = time.monotonic() + 5
    while not blocker.running() and time.monotonic() < deadline:
        time.sleep(0.001)
    failing = pool.submit("a", lambda: 1 / 0)
    queued = pool.submit("b", lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert blocker.result(timeout=5) is True
    assert queued.cancelled() and failing.cancelled()


def test_title_index_is_stale_after_its_age():
    index = TitleIndex(max_age=0.05)
    assert index.get("lib") == (None, True)
    index.put("lib", [])
    assert index.get("lib") == ([], False)
    time.sleep(0.06)
    assert index.get("lib") == ([], True)


async def test_autocomplete_answers_while_every_worker_is_busy(discord_bot: FakeDiscord):
    bot = discord_bot.bot
    await bot.refresh_titles(GUILD_A)  # as after an ingest
    gate = threading.Event()
    # Another server floods every worker with slow jobs.
    busy = [asyncio.ensure_future(bot.in_library(GUILD_B, lambda lib: gate.wait(10))) for _ in range(8)]
    await asyncio.sleep(0.05)
    try:
        start = time.monotonic()
        choices = await discord_bot.autocomplete("summary", "article", article="blinken")
        assert time.monotonic() - start < 0.5
        assert choices and "Blinken" in choices[0]["name"]
    finally:
        gate.set()
        await asyncio.gather(*busy)


async def test_a_long_ingest_does_not_hold_up_the_servers_questions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Every worker held by this server's slow ingests once meant its own questions waited for them.
    settings = Settings.load(
        environ={"CITEBOT_ASK_COOLDOWN": "off", "CITEBOT_ABSTAIN_THRESHOLD": "0"},
        env_file=None,
        data_dir=tmp_path / "data",
        seeds_dir=tmp_path,
    )
    store = LocalStore(settings.data_dir)
    encoder = HashEncoder(dim=64, max_tokens=48)
    gate = threading.Event()
    async with running_bot(settings, store, encoder) as fake:
        fake.bot.libraries.ready(GUILD_A, create=True).ingest(
            [Document(key="herons", title="Herons", text=HERONS, paragraphs=((0, len(HERONS)),))]
        )
        # discord.py loads each cog as a fresh module: patch the one this bot runs.
        cog = sys.modules[type(fake.bot.get_cog("Admin")).__module__]
        real = cog.ingest_upload

        def slow_ingest(*args: object) -> object:
            gate.wait(10)
            return real(*args)

        monkeypatch.setattr(cog, "ingest_upload", slow_ingest)
        ingests = []
        for i in range(6):  # more ingests than there are worker threads of any kind
            data = f"Heron note {i}. Herons nest in colonies called heronries.".encode()
            attachment = attachment_payload(f"heron-{i}.txt", data)
            fake.http.cdn[attachment["url"]] = data
            ingests.append(
                asyncio.ensure_future(
                    fake.slash(
                        "ingest",
                        guild_id=GUILD_A,
                        user_id=ADMIN_ID,
                        permissions=ADMIN_PERMISSIONS,
                        file=attachment,
                    )
                )
            )
        await asyncio.sleep(0.2)
        try:
            await asyncio.wait_for(
                fake.slash("ask", guild_id=GUILD_A, question="How long do herons stand?"), 5
            )
            assert not gate.is_set()  # answered while every ingest still waits
            answer = fake.recorder.last("followup")
            assert "shallow water" in (answer.embeds[0].description or "")
        finally:
            gate.set()
            await asyncio.gather(*ingests)
        assert fake.tree.errors == []
        assert len(fake.bot.libraries.get(GUILD_A).articles()) == 7  # nothing was lost on the way
    store.close()
