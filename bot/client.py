"""The Discord bot: an ``AutoShardedBot`` built from injected services.

``setup_hook`` loads the feature cogs (``bot/cogs``) and syncs the slash commands. Every
server gets its own library (``guild-<id>``); direct messages use the demo library. Model and
store work always runs in a worker thread (:meth:`Citebot.in_library`), so the event loop, and
with it the gateway heartbeat, never waits for it.

Errors are handled in one place for every kind of interaction (:func:`report_error`): a user's
mistake gets an ephemeral explanation, anything unexpected is logged with its traceback and gets
a short apology, and no interaction is left unanswered.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import ArticleInfo, CitebotError, EmptyLibraryError, Encoder, Library, Store
from embeddings.community import ServerSettings
from embeddings.fetch import Fetcher

from . import wording
from .config import Settings
from .fairness import FairExecutor, TitleIndex
from .limits import fit
from .ops import Metrics
from .redact import RedactingFilter, Redactor
from .services import ensure_seeded, make_library

log = logging.getLogger(__name__)

T = TypeVar("T")

EXTENSIONS = (
    "bot.cogs.ask",
    "bot.cogs.articles",
    "bot.cogs.admin",
    "bot.cogs.subscriptions",
    "bot.cogs.community",
)
"""The feature cogs, loaded in this order by ``setup_hook``."""

INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    use_application_commands=True,
    create_public_threads=True,
    send_messages_in_threads=True,
)
"""What the bot asks for when invited: enough to answer, embed citations, read replies, attach
reports (/gaps, /export) and answer in threads and forum posts."""

APOLOGY = "Sorry, something went wrong on my side. It has been logged; please try again in a moment."
WRITE_TIMEOUT = 10.0
"""Seconds a write waits for another process (a CLI ingest) holding the library's lock."""
DOWNLOAD_WORKERS = 4
"""Threads for /ingest downloads (network-bound)."""
DOWNLOADS_PER_SERVER = 1
"""Downloads one server may run at once; its further links wait for them."""
TITLE_WAIT = 1.5
"""Seconds the first autocomplete of a library waits for its list (Discord allows 3)."""
WORKERS = max(2, os.cpu_count() or 2)
"""Worker threads for questions (model and store reads): one per CPU. The work is CPU-bound, so
more threads only share the same cores: measured on 2 CPUs (benchmarks/bot_latency.py), four
threads let a flooding server's three running questions slow another server's one by 4-5x,
two threads by 2-3x, with the same throughput."""
WRITE_WORKERS = 2
"""Worker threads for ingests and forgets: a lane of their own, so a moderator's long ingest
never holds up the server's questions, and two servers' ingests do not wait for each other."""


class UserError(app_commands.AppCommandError):
    """Something the user should be told, as is (and nothing to log)."""


def make_intents(message_content: bool = False) -> discord.Intents:
    """The gateway intents the bot needs; none of them privileged unless ``message_content``
    (CITEBOT_MESSAGE_CONTENT) asks to read messages that do not mention the bot."""
    intents = discord.Intents.none()
    intents.guilds = True  # servers, channels, threads: where interactions and forum posts come from
    # Message events, for mentions and replies. Their text comes without the privileged
    # message-content intent when the message mentions the bot, and always in DMs.
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content
    return intents


def invite_url(client_id: int) -> str:
    """The OAuth2 link that adds the bot to a server with the scopes and permissions it needs."""
    return discord.utils.oauth_url(client_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


# ---------------------------------------------------------------------- libraries


class Libraries:
    """One :class:`Library` per server, built once and shared by the worker threads.

    A server's library is ``guild-<id>``: a question, an autocomplete or a button only ever
    reads the library of the server it came from. Direct messages use ``settings.dm_library_name``,
    filled from the seeds folder on first use.
    """

    def __init__(self, settings: Settings, store: Store, encoder: Encoder) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self._libraries: dict[str, Library] = {}
        self._known: set[str] = set()  # libraries seen to exist (they are never deleted)
        self._lock = threading.Lock()  # get() is called from worker threads
        self._seed_lock = threading.Lock()  # seeding takes seconds; other servers must not wait

    def name_for(self, guild_id: int | None) -> str:
        """The library of a server, or the DM library for ``None``."""
        return f"guild-{guild_id}" if guild_id is not None else self.settings.dm_library_name

    def label(self, guild_id: int | None) -> str:
        """How the library is called in messages."""
        return "This server's library" if guild_id is not None else "The demo library"

    def get(self, guild_id: int | None) -> Library:
        """The library object of a server (no I/O beyond building it)."""
        name = self.name_for(guild_id)
        with self._lock:
            library = self._libraries.get(name)
            if library is None:
                library = make_library(
                    self.settings, self.store, self.encoder, name, write_timeout=WRITE_TIMEOUT
                )
                self._libraries[name] = library
        return library

    def ready(self, guild_id: int | None, *, create: bool = False) -> Library:
        """The library, ready to read. Blocking: call it from a worker thread.

        Seeds the DM library on first use. Raises :class:`~embeddings.EmptyLibraryError` for a
        server whose library was never filled, unless ``create`` (an ingest is about to fill it).
        """
        library = self.get(guild_id)
        if create or library.name in self._known:
            return library
        if guild_id is None:
            with self._seed_lock:  # one seeding at a time; the others then find it done
                ensure_seeded(library, self.settings)
        if not library.exists():
            raise EmptyLibraryError(library.name)
        self._known.add(library.name)
        return library


# ---------------------------------------------------------------------- cooldown


class UserCooldown:
    """A per-user rate limit shared by /ask, mentions and the message menu.

    ``setting`` is ``(uses, seconds)`` or None for no limit.
    """

    def __init__(self, setting: tuple[int, float] | None) -> None:
        self.setting = setting
        self._buckets: dict[int, app_commands.Cooldown] = {}

    def hit(
        self, user_id: int, setting: tuple[int, float] | bool | None = True
    ) -> tuple[app_commands.Cooldown, float] | None:
        """Count one use; ``(cooldown, retry_after)`` when the user must wait, else None.

        ``setting`` is the server's own ``(uses, seconds)`` (``(0, 0)`` or None: no limit);
        left out, the operator's applies.
        """
        if setting is True:
            setting = self.setting
        if not isinstance(setting, tuple) or not setting[0]:
            return None
        rate, per = setting
        now = time.time()
        if len(self._buckets) > 10_000:  # forget users whose window has passed
            self._buckets = {u: c for u, c in self._buckets.items() if now - c._window < c.per}
        bucket = self._buckets.get(user_id)
        if bucket is None or (bucket.rate, bucket.per) != (rate, per):  # new, or the server changed it
            bucket = self._buckets[user_id] = app_commands.Cooldown(rate, per)
        retry_after = bucket.update_rate_limit(now)
        return (bucket, retry_after) if retry_after else None


class ServerRate:
    """Questions per minute for a whole server (a sliding window per server)."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._asked: dict[int, collections.deque[float]] = {}

    def hit(self, guild_id: int, per_minute: int) -> float | None:
        """Count one question; the seconds to wait when the server is over its limit, else None."""
        if not per_minute:
            return None
        now = time.monotonic()
        asked = self._asked.setdefault(guild_id, collections.deque())
        while asked and now - asked[0] >= self.WINDOW:
            asked.popleft()
        if len(asked) >= per_minute:
            return self.WINDOW - (now - asked[0])
        asked.append(now)
        return None


def server_busy_text(per_minute: int, retry_after: float) -> str:
    """What a member reads when the server's questions-per-minute quota is reached."""
    return (
        f"This server has asked {per_minute} questions in the last minute, its limit. "
        f"Try again in {math.ceil(retry_after)} s."
    )


async def cooldown_check(interaction: discord.Interaction[Citebot]) -> bool:
    """An app-command check applying the per-user cooldown and the server's question quota."""
    bot = interaction.client
    settings = await bot.server_settings(interaction.guild_id)
    hit = bot.ask_cooldown.hit(interaction.user.id, settings.cooldown)
    if hit is not None:
        raise app_commands.CommandOnCooldown(*hit)
    if interaction.guild_id is not None:
        wait = bot.server_rate.hit(interaction.guild_id, settings.questions_per_minute or 0)
        if wait is not None:
            raise UserError(server_busy_text(settings.questions_per_minute or 0, wait))
    return True


async def manager_check(interaction: discord.Interaction[Citebot]) -> bool:
    """Manage Server, or the role the server's settings name (``manager_role``)."""
    if interaction.permissions.manage_guild:
        return True
    settings = await interaction.client.server_settings(interaction.guild_id)
    member = interaction.user
    if (
        settings.manager_role
        and isinstance(member, discord.Member)
        and any(role.id == settings.manager_role for role in member.roles)
    ):
        return True
    raise app_commands.MissingPermissions(["manage_guild"])


def guild_only_check(interaction: discord.Interaction[Any]) -> bool:
    """Refuse in DMs (Discord hides guild-only commands there, but a stale client may not)."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return True


# ---------------------------------------------------------------------- errors


def _permission_names(names: list[str]) -> str:
    return ", ".join(n.replace("guild", "server").replace("_", " ").title() for n in names)


def explain(error: BaseException) -> tuple[str, bool]:
    """``(message for the user, unexpected?)``; unexpected errors are logged with a traceback."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"You're asking quickly: try again in {math.ceil(error.retry_after)} s.", False
    if isinstance(error, app_commands.MissingPermissions):
        return (
            f"You need the {_permission_names(error.missing_permissions)} permission to use this.",
            False,
        )
    if isinstance(error, app_commands.BotMissingPermissions):
        return (
            f"I need the {_permission_names(error.missing_permissions)} permission in this channel.",
            False,
        )
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works only in a server, not in direct messages.", False
    if isinstance(error, (app_commands.CommandNotFound, app_commands.CommandSignatureMismatch)):
        log.warning("out-of-date command: %s", error)
        return (
            "This command changed since Discord last loaded it. Try again in a minute; if it "
            "keeps happening, ask the bot's owner to sync its commands.",
            False,
        )
    if isinstance(error, app_commands.TransformerError):
        return f"I couldn't use {str(error.value)[:100]!r} there: pick one of the suggestions.", False
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here.", False
    if isinstance(original, UserError):
        return str(original), False
    if isinstance(original, CitebotError):
        return wording.for_discord(original)
    return APOLOGY, True


async def reply_privately(interaction: discord.Interaction[Any], content: str) -> None:
    """Send ``content`` so only the user sees it, whatever state the interaction is in."""
    try:
        if interaction.response.is_done():
            # After a defer the first follow-up replaces "thinking…" (with the defer's visibility).
            await interaction.followup.send(**fit(content=content, ephemeral=True))
        else:
            await interaction.response.send_message(**fit(content=content, ephemeral=True))
    except discord.HTTPException:
        log.warning("could not answer interaction %s (expired?)", interaction.id, exc_info=True)


async def report_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """The one error handler: explain to the user, log what was unexpected, always answer."""
    message, unexpected = explain(error)
    if unexpected:
        original = getattr(error, "original", error)
        command = interaction.command.qualified_name if interaction.command else "component"
        log.error(
            "unexpected error in %s (guild %s, user %s)",
            command,
            interaction.guild_id,
            interaction.user.id if interaction.user else None,
            exc_info=(type(original), original, original.__traceback__),
        )
    await reply_privately(interaction, message)


class CitebotTree(app_commands.CommandTree["Citebot"]):
    """The command tree; its ``on_error`` is the single error handler for app commands."""

    async def on_error(
        self, interaction: discord.Interaction[Citebot], error: app_commands.AppCommandError, /
    ) -> None:
        """Answer the user (ephemerally) and log anything unexpected."""
        await report_error(interaction, error)


# ---------------------------------------------------------------------- the bot


class Citebot(commands.AutoShardedBot):
    """citebot on Discord. Services come in through the constructor; nothing is global.

    ``sync_on_start=False`` skips the command sync in ``setup_hook`` (tests, or a second
    process of a sharded deployment, which never syncs anyway). ``announce`` receives one
    line once the bot is connected (the CLI prints it).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        encoder: Encoder,
        *,
        fetcher: Fetcher | None = None,
        sync_on_start: bool = True,
        announce: Callable[[str], None] | None = None,
        tree_cls: type[CitebotTree] = CitebotTree,
        workers: int = WORKERS,
        metrics: Metrics | None = None,
        **options: Any,
    ) -> None:
        # citebot never joins voice channels: skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        if settings.shard_ids is not None:  # else discord.py runs every shard, its default
            options["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,  # only "@citebot sync" (owner)
            intents=make_intents(settings.message_content),
            allowed_mentions=discord.AllowedMentions.none(),  # article text must never ping
            tree_cls=tree_cls,
            help_command=None,
            shard_count=settings.shard_count,
            owner_ids=set(settings.owner_ids),
            **options,
        )
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.libraries = Libraries(settings, store, encoder)
        self.fetcher = fetcher or Fetcher(
            timeout=settings.fetch_timeout,
            max_bytes=settings.fetch_max_bytes,
            allowed_networks=settings.fetch_allow,  # the operator's intranet, if any
        )
        self.ask_cooldown = UserCooldown(settings.ask_cooldown)
        self.server_rate = ServerRate()
        self.sync_on_start = sync_on_start
        # Model and store work: one queue per server, served in turn (bot/fairness.py); writes
        # (ingest, forget) in a lane of their own, fair between servers in the same way.
        self.executor = FairExecutor(workers, name="citebot-library")
        self.writes = FairExecutor(WRITE_WORKERS, name="citebot-write")
        # Downloads wait on the network, not the CPU: a pool of their own, one at a time per
        # server, so slow links never take the threads that answer questions.
        self.downloads = ThreadPoolExecutor(
            max_workers=DOWNLOAD_WORKERS, thread_name_prefix="citebot-download"
        )
        self._download_slots: dict[int | None, asyncio.Semaphore] = {}
        # Autocomplete answers from memory; loads and refreshes run here, never behind questions.
        self.titles = TitleIndex()
        self.lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="citebot-lookup")
        self._announce = announce
        self._announced = False
        self._background: set[asyncio.Task[Any]] = set()
        self.metrics = metrics or Metrics()
        self.metrics.attach(self)

    @property
    def syncs_commands(self) -> bool:
        """Whether this process syncs commands: only one process of a sharded bot (shard 0's)."""
        return self.shard_ids is None or 0 in self.shard_ids

    async def setup_hook(self) -> None:
        """Load the cogs, then sync commands: to DEV_GUILD_ID at once if set, else globally."""
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        # The model and its libraries are loaded: move everything alive now out of the garbage
        # collector's way. A full collection holds the GIL, so walking the millions of objects
        # of torch and transformers would stall the event loop (and the heartbeat) each time.
        gc.freeze()
        if self.sync_on_start and self.syncs_commands:
            await self.sync_commands()

    async def sync_commands(
        self, guild: discord.abc.Snowflake | None = None
    ) -> list[app_commands.AppCommand]:
        """Push the command tree to Discord: to ``guild`` (or DEV_GUILD_ID), else globally."""
        if guild is None and self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
        if guild is not None:
            # A guild's commands update instantly: the development loop.
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
        return synced

    def command_summaries(self) -> list[tuple[str, str]]:
        """``(usage, description)`` of every app command, for /help."""
        out: list[tuple[str, str]] = []
        for command in self.tree.get_commands():
            if isinstance(command, app_commands.Command):
                params = " ".join(p.name if p.required else f"[{p.name}]" for p in command.parameters)
                out.append((f"/{command.name} {params}".strip(), command.description))
            elif isinstance(command, app_commands.ContextMenu):
                out.append(
                    (f"Apps → {command.name}", "On a message (right-click or long-press): ask its text.")
                )
        return out

    async def in_library(
        self,
        guild_id: int | None,
        work: Callable[..., T],
        /,
        *args: Any,
        create: bool = False,
        write: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run ``work(library, *args, **kwargs)`` in a worker thread on the server's library.

        Never on the event loop: the model and the store block for milliseconds to seconds.
        ``write=True`` (ingest, forget) runs it in the write lane, beside the server's questions
        rather than in front of them.
        """
        libraries = self.libraries

        def run() -> T:
            return work(libraries.ready(guild_id, create=create), *args, **kwargs)

        pool, name = (self.writes, "write") if write else (self.executor, "library")
        return await asyncio.wrap_future(pool.submit(guild_id, self.metrics.track(run, name)))

    async def server_settings(self, guild_id: int | None) -> ServerSettings:
        """A server's settings in force (read off the model's pool; cached by the library)."""
        if guild_id is None:
            return self.libraries.get(None).server_defaults
        library = self.libraries.get(guild_id)
        return await asyncio.get_running_loop().run_in_executor(self.lookups, library.settings)

    async def download(self, guild_id: int | None, work: Callable[..., T], /, *args: Any) -> T:
        """Run a download on the download pool, one at a time per server."""
        slot = self._download_slots.setdefault(guild_id, asyncio.Semaphore(DOWNLOADS_PER_SERVER))
        async with slot:
            return await asyncio.get_running_loop().run_in_executor(self.downloads, work, *args)

    async def article_titles(self, guild_id: int | None) -> list[ArticleInfo]:
        """A server's articles for autocomplete, from memory; never waits for the worker pool.

        The first request of a library waits at most :data:`TITLE_WAIT` seconds for the list to
        load (off the model's pool); a stale list is answered at once and refreshed behind it.
        """
        name = self.libraries.name_for(guild_id)
        articles, stale = self.titles.get(name)
        if articles is not None:
            if stale:
                self._refresh_titles_soon(guild_id)
            return articles
        try:
            return await asyncio.wait_for(self.refresh_titles(guild_id), TITLE_WAIT)
        except (TimeoutError, CitebotError, UserError):
            return []

    async def refresh_titles(self, guild_id: int | None) -> list[ArticleInfo]:
        """Load a server's article list into the title index (after an ingest or a forget too)."""
        library = self.libraries.get(guild_id)

        def load() -> list[ArticleInfo]:
            try:
                articles = library.articles()
            except EmptyLibraryError:
                articles = []
            self.titles.put(library.name, articles)
            return articles

        return await asyncio.get_running_loop().run_in_executor(self.lookups, load)

    def _refresh_titles_soon(self, guild_id: int | None) -> None:
        task = asyncio.get_running_loop().create_task(self.refresh_titles(guild_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Disconnect, then let the worker threads finish what they are doing."""
        await super().close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.writes.shutdown(wait=False, cancel_futures=True)
        self.downloads.shutdown(wait=False, cancel_futures=True)
        self.lookups.shutdown(wait=False, cancel_futures=True)

    async def on_ready(self) -> None:
        """Log (and announce once) who the bot is and how to invite it."""
        assert self.user is not None
        line = (
            f"Logged in as {self.user} (id {self.user.id}) in {len(self.guilds)} server(s)"
            + (f", shards {list(self.shard_ids)} of {self.shard_count}" if self.shard_ids else "")
            + f". Invite link: {invite_url(self.user.id)}"
        )
        log.info("%s", line)
        if self._announce is not None and not self._announced:
            self._announced = True
            self._announce(line)

    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError, /) -> None:
        """Errors of the owner's text commands; non-owners get no reply (the command is hidden)."""
        if isinstance(error, (commands.CommandNotFound, commands.NotOwner, commands.CheckFailure)):
            log.debug("ignored text command from %s: %s", ctx.author.id, error)
            return
        if isinstance(error, commands.UserInputError):
            await ctx.reply(**fit(content=str(error)))
            return
        original = getattr(error, "original", error)
        log.error(
            "error in text command %s",
            ctx.command,
            exc_info=(type(original), original, original.__traceback__),
        )
        await ctx.reply(APOLOGY)


# ---------------------------------------------------------------------- running


def token_filter(token: str) -> RedactingFilter:
    """A log filter that masks ``token`` (and any URL password) in every record that passes."""
    return RedactingFilter(Redactor([token]))


TOKEN_REFUSED = (
    "Discord refused DISCORD_TOKEN (it may have been reset). Copy a new token "
    "from the Bot page of your application at https://discord.com/developers/applications."
)


def serve(bot: Citebot, token: str, err: IO[str]) -> int:
    """Run ``bot`` until it is stopped; return an exit status (1 with a message on failure)."""
    redact = token_filter(token)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(redact)
    try:
        return asyncio.run(_serve(bot, token, err))
    except KeyboardInterrupt:
        print("citebot: stopped.", file=err)
        return 0
    finally:
        for handler in handlers:
            handler.removeFilter(redact)


async def _serve(bot: Citebot, token: str, err: IO[str]) -> int:
    import aiohttp

    from .ops import OpsServer
    from .runtime import GracefulShutdown, discover_gateway, use_api_base

    settings = bot.settings
    use_api_base(settings.discord_api_base)
    ops = None
    async with bot:
        GracefulShutdown(bot, settings.shutdown_timeout, err).install()
        try:
            if settings.ops_port is not None:
                ops = OpsServer(bot, settings.ops_host, settings.ops_port)
                print(f"citebot: health and metrics on {await ops.start()}", file=err)
            await bot.login(token)
            if not bot.is_closed():  # a signal during login has already stopped the bot
                await discover_gateway(bot)
                await bot.connect()
        except discord.LoginFailure:
            print(f"citebot: {TOKEN_REFUSED}", file=err)
            return 1
        except discord.ConnectionClosed as exc:
            if exc.code == 4004:  # the token was refused at the gateway (reset since login)
                print(f"citebot: {TOKEN_REFUSED}", file=err)
            else:
                print(f"citebot: Discord closed the gateway connection ({exc}).", file=err)
            return 1
        except discord.PrivilegedIntentsRequired as exc:  # pragma: no cover - we request none
            print(f"citebot: Discord refused the gateway intents: {exc}", file=err)
            return 1
        except (aiohttp.ClientError, OSError, discord.GatewayNotFound) as exc:
            print(f"citebot: couldn't reach Discord ({type(exc).__name__}: {exc}).", file=err)
            return 1
        finally:
            if ops is not None:
                await ops.stop()
    print("citebot: stopped.", file=err)
    return 0
