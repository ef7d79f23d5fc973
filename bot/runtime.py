"""Running ``citebot run``: where Discord is, and stopping cleanly.

Where Discord is: the REST base is a setting (``DISCORD_API_BASE``: an HTTP proxy shared by
several processes, or a local emulator); the gateway address comes from the REST API's gateway
discovery, as Discord asks. discord.py only asks for it when it picks the shard count itself:
with ``SHARD_COUNT`` set, and after a session is invalidated, it connects to its built-in
``wss://gateway.discord.gg``. :func:`discover_gateway` makes that built-in the discovered one.

Stopping: on SIGTERM or Ctrl-C, :class:`GracefulShutdown` stops taking new questions (an
interaction gets a short "restarting" reply, a mention is left for the next process), waits a
bounded time for the work already started, then closes the gateway and the HTTP session, so
``citebot run`` exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

if TYPE_CHECKING:
    from .client import Citebot

log = logging.getLogger(__name__)

RESTARTING = "citebot is restarting; please ask again in a minute."
EPHEMERAL = 64
_REPLY_TYPES = (2, 3, 5)  # application command, component (button), modal submit


def use_api_base(url: str) -> None:
    """Send every REST call (webhooks and interaction callbacks too) to ``url``."""
    # Route.BASE is the one place discord.py builds REST URLs from, for the bot's HTTPClient and
    # for the webhook adapter that carries interaction responses.
    Route.BASE = url.rstrip("/")


async def discover_gateway(bot: discord.Client) -> str:
    """Ask the REST API where the gateway is, and make it discord.py's default gateway."""
    _, url, _ = await bot.http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    log.debug("gateway: %s", url)
    return url


class GracefulShutdown:
    """Stop taking work, finish what is in flight (bounded), then close the bot.

    What is "in flight" is known exactly: the tasks discord.py creates while it parses an
    INTERACTION_CREATE or MESSAGE_CREATE (the command invoker, button callbacks, ``on_message``
    listeners). Parsing is synchronous, so the tasks that appear during it are that event's.
    """

    def __init__(self, bot: Citebot, timeout: float, err: IO[str] | None = None) -> None:
        self.bot = bot
        self.timeout = timeout
        self.err = err
        self.draining = False
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._force = asyncio.Event()

    # ------------------------------------------------------------------ wiring

    def install(self) -> None:
        """Watch the work-creating events and handle SIGTERM / SIGINT in the running loop."""
        parsers = self.bot._connection.parsers  # shared with every gateway connection
        for event in ("INTERACTION_CREATE", "MESSAGE_CREATE"):
            parsers[event] = self._wrap(event, parsers[event])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not on Windows: Ctrl-C then raises KeyboardInterrupt, which serve() handles.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request, sig)

    def _wrap(self, event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
        def parse_tracked(data: Any) -> None:
            if self.draining:
                self._refuse(event, data)
                return
            before = asyncio.all_tasks()
            parse(data)
            for task in asyncio.all_tasks() - before:
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

        return parse_tracked

    def _refuse(self, event: str, data: dict[str, Any]) -> None:
        if event == "INTERACTION_CREATE" and data.get("type") in _REPLY_TYPES:
            task = asyncio.create_task(self._reply_restarting(data))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        # A mention gets no reply: the message stays in the channel for the next process.
        log.debug("shutting down: ignored %s", event)

    async def _reply_restarting(self, data: dict[str, Any]) -> None:
        try:
            await self.bot.http.request(
                Route(
                    "POST",
                    "/interactions/{interaction_id}/{interaction_token}/callback",
                    interaction_id=data["id"],
                    interaction_token=data["token"],
                ),
                # Sent raw (the interaction object is never built): the bot's no-pings rule by hand.
                json={
                    "type": 4,
                    "data": {"content": RESTARTING, "flags": EPHEMERAL, "allowed_mentions": {"parse": []}},
                },
            )
        except discord.HTTPException:
            log.debug("could not tell interaction %s that the bot is restarting", data.get("id"))

    # ------------------------------------------------------------------ stopping

    def request(self, sig: signal.Signals | None = None) -> None:
        """Begin shutting down (a signal handler); a second request stops waiting at once."""
        if self._task is not None:
            log.warning("second stop request: not waiting for answers in flight")
            self._force.set()
            return
        name = sig.name if sig is not None else "stop request"
        log.info("%s: stopping (%d answer(s) in flight)", name, len(self.in_flight))
        if self.err is not None:
            print(f"citebot: stopping: finishing {len(self.in_flight)} answer(s) in flight...", file=self.err)
        self._task = asyncio.create_task(self.shutdown(), name="citebot-shutdown")

    async def shutdown(self) -> None:
        """Drain for at most ``timeout`` seconds, then close the bot."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        force = asyncio.create_task(self._force.wait())
        try:
            while True:
                # Re-read each time: "restarting" replies sent while draining are waited for too.
                pending = {t for t in self.in_flight if not t.done()}
                remaining = deadline - loop.time()
                if not pending or remaining <= 0 or self._force.is_set():
                    break
                await asyncio.wait(pending | {force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        if pending:
            log.warning("stopping with %d answer(s) unfinished after %.0f s", len(pending), self.timeout)
        await self.bot.close()

    @property
    def stopping(self) -> bool:
        """Whether a shutdown was requested."""
        return self._task is not None
