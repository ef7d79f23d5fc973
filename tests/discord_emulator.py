"""A local Discord for end-to-end tests: the REST API and the gateway on 127.0.0.1.

The real ``citebot run`` process connects to it as to Discord (``DISCORD_API_BASE`` points at
:attr:`DiscordEmulator.api_base`; the gateway address comes from ``GET /gateway/bot``). It
speaks API v10 the way discord.py 2.7 uses it:

- **Gateway** (``/gateway``, JSON, optional ``zlib-stream`` compression): HELLO; IDENTIFY
  (token, intents, shard checked: close codes 4004, 4013, 4014, 4010; 4003 before identifying,
  4005 for a second identify); READY with the shard's guilds unavailable, then a GUILD_CREATE
  for each; heartbeats and their ACKs; RESUME with the missed events replayed, then RESUMED (or
  INVALID_SESSION for an unknown session); and, on a test's request, a dropped socket, RECONNECT
  (op 7) or INVALID_SESSION (op 9). Guild events go to the sessions of the guild's shard
  (``(guild_id >> 22) % shard_count``), DMs to shard 0. Without the message-content intent a
  message that does not mention the bot arrives with empty content, as on Discord.
- **REST** (``/api/v10``): gateway discovery, the bot user, the application, command sync
  (global and guild), interaction callbacks, webhook follow-ups and their edits, channel
  messages (send, fetch, edit, delete), typing, threads, and a CDN for attachments.
- **Validation** as Discord does it: the bot token on every bot route (401); command names
  (1-32 lower-case word characters or ``-``), descriptions (1-100, empty for context menus),
  at most 25 options with required ones first, 25 choices, 100 commands; an interaction answered
  within 3 s and only once (10062 Unknown interaction, 40060 already acknowledged); follow-ups
  only after the answer, within 15 minutes; message limits (2000 characters, 10 embeds, the
  embed field limits and 6000 characters in all, 5 rows of 5 components, custom ids up to 100
  and unique); allowed mentions (known ``parse`` values, not both ``parse: users`` and
  ``users``). A refused request gets Discord's status and JSON error and is kept in
  :attr:`DiscordEmulator.rejected`.
- **Rate limits**: :meth:`DiscordEmulator.rate_limit` makes the next matching requests fail with
  429, ``retry_after`` and the headers discord.py reads (including ``Via``, without which it
  takes a 429 for a Cloudflare ban).

Everything received is recorded (:attr:`requests`, :attr:`frames`, :attr:`interactions`,
:attr:`messages`) for the tests' assertions.

Not emulated: ETF encoding and zstd compression; voice; presences, member chunking and the
privileged intents' events; the gateway's send rate limit (120 per minute) and identify
concurrency (``max_concurrency``), session start limits; real rate-limit buckets (only the
429s a test asks for, and every response claims plenty remaining); permissions (the emulator
trusts the member permissions a test gives and never checks what the bot may do in a channel);
command localisations, subcommand groups, the 4000-character total of a command and per-guild
command limits; autocomplete and modal validation beyond the response type; file uploads
(multipart bodies are recorded, not parsed against the limits); stickers, polls, reactions,
pins, audit-log reasons; Discord's own timing (heartbeat intervals are short, the 15-minute
interaction token is not aged), and any server-side state beyond what citebot touches.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

API = "/api/v10"
_BODY = web.RequestKey("body", object)  # the request body, read once by the middleware
INTERACTION_DEADLINE = 3.0
TOKEN_LIFETIME = 15 * 60.0
EPHEMERAL = 64
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content
MESSAGE_CONTENT_INTENT = 1 << 15
ALL_INTENTS = (1 << 26) - 1
ADMIN_PERMISSIONS = (1 << 41) - 1
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 31)  # view, send, history, app commands
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
_ROUTE_PARAM = re.compile(r"\{(\w+)\}")


# ---------------------------------------------------------------------- records


@dataclass
class Request:
    """One REST request as received, with the answer given."""

    method: str
    route: str  # the template, e.g. /interactions/{id}/{token}/callback
    path: str
    params: dict[str, str]
    body: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class Interaction:
    """An interaction the emulator dispatched, and what the bot did with it."""

    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user_id: int
    payload: dict[str, Any]
    dispatched_at: float
    callback: dict[str, Any] | None = None
    callback_at: float | None = None
    original: dict[str, Any] | None = None  # the response message (or the "thinking" one)
    followups: list[dict[str, Any]] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        """A message reached the user: a reply, or a follow-up after a defer."""
        if self.callback is None:
            return False
        return self.callback["type"] in (4, 7, 8) or bool(self.followups or self.edits)

    @property
    def reply(self) -> dict[str, Any] | None:
        """The message the user finally sees (the last follow-up, edit or the reply)."""
        if self.followups:
            return self.followups[-1]
        if self.edits:
            return self.edits[-1]
        if self.callback is not None and self.callback["type"] in (4, 7):
            return self.callback.get("data") or {}
        return None


@dataclass
class Session:
    """A gateway session: survives its connection until it is invalidated."""

    id: str
    shard: tuple[int, int]
    intents: int
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # dispatches, for RESUME replay
    connection: Connection | None = None
    resumes: int = 0


@dataclass
class Connection:
    """One gateway WebSocket."""

    id: int
    ws: web.WebSocketResponse
    compress: Any | None  # a zlib compressobj for zlib-stream
    transport: Any = None  # to cut the socket without a close frame
    session: Session | None = None
    heartbeats: int = 0
    closed_code: int | None = None
    opened_at: float = field(default_factory=time.monotonic)


@dataclass
class Guild:
    """A test server: one text channel; its owner may manage it."""

    id: int
    owner_id: int
    name: str = "Test server"

    @property
    def channel_id(self) -> int:
        """The server's one text channel."""
        return self.id + 1


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's sharding formula."""
    return (guild_id >> 22) % shard_count


class Rejected(Exception):
    """A request Discord would refuse: its status and JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors is not None:
            self.body["errors"] = errors


# ---------------------------------------------------------------------- validation


def check_message(body: dict[str, Any], *, edit: bool = False) -> None:
    """Discord's limits on a message body (create or edit)."""
    problems: list[str] = []
    content = body.get("content")
    if content is not None and len(content) > 2000:
        problems.append(f"content: {len(content)} > 2000 characters")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        problems.append(f"embeds: {len(embeds)} > 10")
    total = 0
    for i, e in enumerate(embeds):
        for key, limit in (("title", 256), ("description", 4096)):
            n = len(e.get(key) or "")
            total += n
            if n > limit:
                problems.append(f"embeds.{i}.{key}: {n} > {limit}")
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            n = len((e.get(key) or {}).get(sub) or "")
            total += n
            if n > limit:
                problems.append(f"embeds.{i}.{key}.{sub}: {n} > {limit}")
        fields = e.get("fields") or []
        if len(fields) > 25:
            problems.append(f"embeds.{i}.fields: {len(fields)} > 25")
        for j, f in enumerate(fields):
            name, value = f.get("name") or "", f.get("value") or ""
            total += len(name) + len(value)
            if not name or len(name) > 256:
                problems.append(f"embeds.{i}.fields.{j}.name: {len(name)} not in 1..256")
            if not value or len(value) > 1024:
                problems.append(f"embeds.{i}.fields.{j}.value: {len(value)} not in 1..1024")
    if total > 6000:
        problems.append(f"embeds: {total} > 6000 characters in all")
    rows = body.get("components") or []
    if len(rows) > 5:
        problems.append(f"components: {len(rows)} > 5 rows")
    seen: set[str] = set()
    for i, row in enumerate(rows):
        children = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(children) <= 5:
            problems.append(f"components.{i}: an action row of 1 to 5 components")
        for c in children:
            cid = c.get("custom_id")
            if cid is not None:
                if len(cid) > 100 or cid in seen:
                    problems.append(f"components.{i}: custom_id {cid!r} too long or repeated")
                seen.add(cid)
            elif c.get("style") != 5:
                problems.append(f"components.{i}: a button without custom_id must be a link")
            if len(c.get("label") or "") > 80:
                problems.append(f"components.{i}: label > 80")
    mentions = body.get("allowed_mentions")
    if mentions is not None:
        parse = mentions.get("parse", [])
        if any(p not in ("users", "roles", "everyone") for p in parse):
            problems.append(f"allowed_mentions.parse: {parse}")
        for kind in ("users", "roles"):
            if kind in parse and mentions.get(kind):
                problems.append(f"allowed_mentions: parse:[{kind}] and {kind} are mutually exclusive")
            if len(mentions.get(kind) or []) > 100:
                problems.append(f"allowed_mentions.{kind}: more than 100")
    if not edit and not (content or embeds or rows or body.get("attachments") or body.get("poll")):
        raise Rejected(400, 50006, "Cannot send an empty message")
    if problems:
        raise Rejected(400, 50035, "Invalid Form Body", problems)


def check_commands(commands: list[dict[str, Any]]) -> None:
    """Discord's rules for a bulk command overwrite."""
    problems: list[str] = []
    if len(commands) > 100:
        problems.append(f"{len(commands)} > 100 commands")
    names: set[tuple[int, str]] = set()
    for i, cmd in enumerate(commands):
        kind = cmd.get("type", 1)
        name = cmd.get("name") or ""
        if (kind, name) in names:
            problems.append(f"{i}: duplicate name {name!r}")
        names.add((kind, name))
        desc = cmd.get("description") or ""
        if kind == 1:
            if not _COMMAND_NAME.match(name) or name != name.lower():
                problems.append(f"{i}: name {name!r} must be 1-32 lower-case word characters")
            if not 1 <= len(desc) <= 100:
                problems.append(f"{i} ({name}): description of {len(desc)} characters, not 1..100")
        else:
            if not 1 <= len(name) <= 32:
                problems.append(f"{i}: context menu name {name!r} not 1-32 characters")
            if desc:
                problems.append(f"{i} ({name}): context menus have no description")
        problems += _check_options(f"{i} ({name})", cmd.get("options") or [])
    if problems:
        raise Rejected(400, 50035, "Invalid Form Body", problems)


def _check_options(where: str, options: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    if len(options) > 25:
        problems.append(f"{where}: {len(options)} > 25 options")
    optional_seen = False
    for opt in options:
        name, desc = opt.get("name") or "", opt.get("description") or ""
        if not _COMMAND_NAME.match(name) or name != name.lower():
            problems.append(f"{where}: option name {name!r}")
        if not 1 <= len(desc) <= 100:
            problems.append(f"{where}.{name}: description of {len(desc)} characters, not 1..100")
        if opt.get("required"):
            if optional_seen:
                problems.append(f"{where}.{name}: required options must come before optional ones")
        else:
            optional_seen = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            problems.append(f"{where}.{name}: {len(choices)} > 25 choices")
        if choices and opt.get("autocomplete"):
            problems.append(f"{where}.{name}: choices and autocomplete are exclusive")
        if opt.get("type") in (1, 2):
            problems += _check_options(f"{where}.{name}", opt.get("options") or [])
    return problems


# ---------------------------------------------------------------------- the emulator


class DiscordEmulator:
    """Discord's REST API and gateway for one bot application, on 127.0.0.1."""

    def __init__(
        self,
        token: str,
        guilds: Iterable[Guild],
        *,
        app_id: int = 900_000_000_000_000_001,
        owner_id: int = 900_000_000_000_000_002,
        shards: int = 1,
        heartbeat_interval: float = 2.0,
        privileged_intents: int = 0,
    ) -> None:
        self.token = token
        self.app_id = app_id
        self.owner_id = owner_id
        self.guilds = {g.id: g for g in guilds}
        self.recommended_shards = shards
        self.heartbeat_interval = heartbeat_interval
        self.privileged_intents = privileged_intents  # what the Developer Portal enabled
        self.gateway_refuses_token = False  # the token was reset after login: 4004 at IDENTIFY

        self.requests: list[Request] = []
        self.rejected: list[tuple[Request, dict[str, Any]]] = []
        self.frames: list[tuple[int, str, dict[str, Any]]] = []  # (connection id, "in"/"out", payload)
        self.connections: list[Connection] = []
        self.sessions: dict[str, Session] = {}
        self.interactions: dict[int, Interaction] = {}
        self.messages: dict[int, dict[str, Any]] = {}  # every message, by id
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> synced
        self.attachments: dict[int, bytes] = {}
        self._limits: list[tuple[str, re.Pattern[str], float, int, bool]] = []
        self._ids = itertools.count((int(time.time() * 1000) - 1420070400000) << 22)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._attachment)
        for method, route, handler in self._routes():
            app.router.add_route(method, API + route, handler)
        app.router.add_route("*", API + "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every connection and stop serving."""
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """What ``DISCORD_API_BASE`` is set to."""
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        """What gateway discovery answers."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    def snowflake(self) -> int:
        """A fresh id."""
        return next(self._ids)

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Wait until ``predicate()`` is truthy (checked after every recorded change); return it."""

        async def wait() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}") from None

    # ------------------------------------------------------------------ test controls

    def rate_limit(
        self, method: str, route: str, retry_after: float, times: int = 1, *, is_global: bool = False
    ) -> None:
        """Answer the next ``times`` requests to ``route`` (a regex on the path) with 429."""
        self._limits.append((method, re.compile(route), retry_after, times, is_global))

    def sessions_of(self, shard_id: int) -> list[Session]:
        """Live sessions that IDENTIFYed for shard ``shard_id``."""
        return [s for s in self.sessions.values() if s.shard[0] == shard_id]

    def live_connections(self) -> list[Connection]:
        """Open gateway connections with a session."""
        return [c for c in self.connections if c.session is not None and not c.ws.closed]

    async def drop(self, shard_id: int = 0) -> None:
        """Cut the shard's sockets without a close frame (a network failure): it should RESUME."""
        for session in self.sessions_of(shard_id):
            conn = session.connection
            if conn is not None and not conn.ws.closed:
                if conn.transport is not None:
                    conn.transport.abort()
                conn.closed_code = 1006
                session.connection = None
        await self._notify()

    async def invalidate(self, shard_id: int = 0, resumable: bool = False) -> None:
        """Send INVALID_SESSION; the session is forgotten unless ``resumable``."""
        for session in self.sessions_of(shard_id):
            conn = session.connection
            if not resumable:
                del self.sessions[session.id]
            if conn is not None and not conn.ws.closed:
                await self._send(conn, {"op": 9, "d": resumable})

    async def request_reconnect(self, shard_id: int = 0) -> None:
        """Send RECONNECT (op 7): the client should close and RESUME."""
        for session in self.sessions_of(shard_id):
            if session.connection is not None and not session.connection.ws.closed:
                await self._send(session.connection, {"op": 7, "d": None})

    # ------------------------------------------------------------------ payloads

    def bot_user(self) -> dict[str, Any]:
        """The bot's user object."""
        return user(self.app_id, "citebot", bot=True)

    def member(self, user_id: int, permissions: int) -> dict[str, Any]:
        """A guild member as interactions carry it."""
        return {
            "user": user(user_id, f"user{user_id % 1000}"),
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }

    def channel(self, guild: Guild) -> dict[str, Any]:
        """The guild's text channel."""
        return {
            "id": str(guild.channel_id),
            "type": 0,
            "guild_id": str(guild.id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }

    def guild_create(self, guild: Guild) -> dict[str, Any]:
        """A GUILD_CREATE payload: the text channel, @everyone, the bot as a member."""
        bot = self.member(self.app_id, MEMBER_PERMISSIONS) | {"user": self.bot_user()}
        bot.pop("permissions")
        return {
            "id": str(guild.id),
            "name": guild.name,
            "owner_id": str(guild.owner_id),
            "roles": [
                {
                    "id": str(guild.id),
                    "name": "@everyone",
                    "permissions": str(MEMBER_PERMISSIONS | (1 << 14)),  # + embed links
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [self.channel(guild)],
            "threads": [],
            "members": [bot],
            "member_count": 2,
            "emojis": [],
            "stickers": [],
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "large": False,
            "unavailable": False,
            "joined_at": "2024-01-01T00:00:00+00:00",
        }

    def _message(
        self, body: dict[str, Any], channel_id: int, guild_id: int | None, **extra: Any
    ) -> dict[str, Any]:
        mid = self.snowflake()
        message: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": self.bot_user(),
            "content": body.get("content") or "",
            "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags") or 0,
            "allowed_mentions": body.get("allowed_mentions"),
        }
        if guild_id is not None:
            message["guild_id"] = str(guild_id)
        message.update(extra)
        self.messages[mid] = message
        return message

    # ------------------------------------------------------------------ dispatching events

    async def _dispatch(self, event: str, data: dict[str, Any], guild_id: int | None) -> list[Session]:
        """Send a dispatch to every session of the shard that owns ``guild_id`` (buffered if down)."""
        targets = []
        for session in list(self.sessions.values()):
            shard_id, count = session.shard
            if (shard_of(guild_id, count) if guild_id is not None else 0) != shard_id:
                continue
            targets.append(session)
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.sent.append(frame)
            if session.connection is not None and not session.connection.ws.closed:
                await self._send(session.connection, frame)
        return targets

    async def interact(
        self,
        guild: Guild | None,
        user_id: int,
        type: int,
        data: dict[str, Any],
        *,
        permissions: int = MEMBER_PERMISSIONS,
        message: dict[str, Any] | None = None,
    ) -> Interaction:
        """Dispatch an INTERACTION_CREATE from a member of ``guild`` (or a DM when None)."""
        iid = self.snowflake()
        token = f"aW50ZXJhY3Rpb24.{iid}.{uuid.uuid4().hex}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": type,
            "token": token,
            "version": 1,
            "data": data,
            "app_permissions": str(MEMBER_PERMISSIONS | (1 << 14)),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)} if guild else {"1": str(user_id)},
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild is not None:
            payload |= {
                "guild_id": str(guild.id),
                "guild_locale": "en-US",
                "member": self.member(user_id, permissions),
                "channel": self.channel(guild),
                "channel_id": str(guild.channel_id),
                "context": 0,
            }
            channel_id = guild.channel_id
        else:
            channel_id = user_id + 7
            payload |= {
                "user": user(user_id, f"user{user_id % 1000}"),
                "channel": {"id": str(channel_id), "type": 1, "recipients": [user(user_id, "u")]},
                "channel_id": str(channel_id),
                "context": 1,
            }
        if message is not None:
            payload["message"] = message
        record = Interaction(
            id=iid,
            token=token,
            type=type,
            guild_id=guild.id if guild else None,
            channel_id=channel_id,
            user_id=user_id,
            payload=payload,
            dispatched_at=time.monotonic(),
        )
        self.interactions[iid] = record
        if not await self._dispatch("INTERACTION_CREATE", payload, record.guild_id):
            raise AssertionError(f"no gateway session serves guild {record.guild_id}")
        return record

    def command(self, name: str, guild: Guild | None, type: int = 1) -> dict[str, Any]:
        """The synced command a user would pick in ``guild`` (guild commands first)."""
        for scope in ((guild.id,) if guild else ()) + (None,):
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == type:
                    return cmd
        raise AssertionError(f"/{name} was never synced: a user could not run it")

    async def slash(
        self,
        guild: Guild | None,
        user_id: int,
        name: str,
        *,
        permissions: int = MEMBER_PERMISSIONS,
        attachment: tuple[str, bytes] | None = None,
        **options: Any,
    ) -> Interaction:
        """A user runs ``/name`` with ``options``, typed by the synced command's definition."""
        cmd = self.command(name, guild)
        by_name = {o["name"]: o for o in cmd.get("options") or []}
        opts: list[dict[str, Any]] = []
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if guild is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        for key, value in options.items():
            if key not in by_name:
                raise AssertionError(f"/{name} has no option {key!r}")
            opts.append({"name": key, "type": by_name[key]["type"], "value": value})
        if attachment is not None:
            filename, content = attachment
            aid = self.snowflake()
            self.attachments[aid] = content
            opts.append({"name": "file", "type": 11, "value": str(aid)})
            data["resolved"] = {
                "attachments": {
                    str(aid): {
                        "id": str(aid),
                        "filename": filename,
                        "size": len(content),
                        "url": f"http://127.0.0.1:{self.port}/attachments/{aid}/{filename}",
                        "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{aid}/{filename}",
                        "content_type": "text/plain; charset=utf-8",
                    }
                }
            }
        missing = [o["name"] for o in by_name.values() if o.get("required") and o["name"] not in options]
        if missing:
            raise AssertionError(f"/{name} needs {missing}")
        return await self.interact(guild, user_id, 2, data, permissions=permissions)

    async def click(self, message: dict[str, Any], custom_id: str, user_id: int) -> Interaction:
        """A user clicks the button ``custom_id`` on ``message``."""
        ids = [c.get("custom_id") for row in message.get("components") or [] for c in row["components"]]
        if custom_id not in ids:
            raise AssertionError(f"no button {custom_id!r} on message {message['id']}: {ids}")
        guild_id = message.get("guild_id")
        guild = self.guilds[int(guild_id)] if guild_id else None
        data = {"custom_id": custom_id, "component_type": 2}
        return await self.interact(guild, user_id, 3, data, message=message)

    async def post_message(
        self, guild: Guild, user_id: int, content: str, *, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A member posts in the guild's channel (MESSAGE_CREATE), mentioning whoever ``content`` does."""
        mentioned = [int(m) for m in re.findall(r"<@!?(\d+)>", content)]
        extra: dict[str, Any] = {
            "author": user(user_id, f"user{user_id % 1000}"),
            "member": {k: v for k, v in self.member(user_id, MEMBER_PERMISSIONS).items() if k != "user"},
            "mentions": [
                user(m, "citebot" if m == self.app_id else "x", bot=m == self.app_id) for m in mentioned
            ],
        }
        if reply_to is not None:
            extra |= {
                "type": 19,
                "message_reference": {
                    "message_id": reply_to["id"],
                    "channel_id": reply_to["channel_id"],
                    "guild_id": str(guild.id),
                },
                "referenced_message": reply_to,
            }
        message = self._message({"content": content}, guild.channel_id, guild.id, **extra)
        message.pop("allowed_mentions")
        for session in self.sessions.values():
            if session.shard[0] != shard_of(guild.id, session.shard[1]):
                continue
            seen = dict(message)
            # Without the privileged intent, Discord blanks the text of messages not for the bot.
            if not session.intents & MESSAGE_CONTENT_INTENT and self.app_id not in mentioned:
                seen |= {"content": "", "embeds": [], "attachments": [], "components": []}
            session.seq += 1
            frame = {"op": 0, "t": "MESSAGE_CREATE", "s": session.seq, "d": seen}
            session.sent.append(frame)
            if session.connection is not None and not session.connection.ws.closed:
                await self._send(session.connection, frame)
        return message

    def replies_to(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The bot's messages that reply to ``message``."""
        return [
            m
            for m in self.messages.values()
            if str((m.get("message_reference") or {}).get("message_id")) == message["id"]
            and m["author"]["id"] == str(self.app_id)
        ]

    # ------------------------------------------------------------------ gateway

    async def _send(self, conn: Connection, payload: dict[str, Any]) -> None:
        self.frames.append((conn.id, "out", payload))
        text = json.dumps(payload)
        try:
            if conn.compress is not None:
                await conn.ws.send_bytes(
                    conn.compress.compress(text.encode()) + conn.compress.flush(zlib.Z_SYNC_FLUSH)
                )
            else:
                await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; the session keeps the event for RESUME

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        conn.closed_code = code
        await conn.ws.close(code=code, message=reason.encode())

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        conn = Connection(
            len(self.connections),
            ws,
            zlib.compressobj() if compress == "zlib-stream" else None,
            transport=request.transport,
        )
        self.connections.append(conn)
        if request.query.get("v") != "10":
            await self._close(conn, 4012, "Invalid API version")
            return ws
        if request.query.get("encoding", "json") != "json" or compress not in (None, "zlib-stream"):
            await self._close(conn, 4000, "Unsupported encoding or compression in this emulator")
            return ws
        await self._send(conn, {"op": 10, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    await self._close(conn, 4002, "Decode error")
                    break
                payload = json.loads(msg.data)
                self.frames.append((conn.id, "in", payload))
                await self._on_frame(conn, payload)
                await self._notify()
        finally:
            if conn.closed_code is None:
                conn.closed_code = ws.close_code
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            await self._notify()
        return ws

    async def _on_frame(self, conn: Connection, payload: dict[str, Any]) -> None:
        d: Any
        op, d = payload.get("op"), payload.get("d") or {}
        if op == 1:
            conn.heartbeats += 1
            await self._send(conn, {"op": 11})
        elif op == 2:
            await self._identify(conn, d)
        elif op == 6:
            await self._resume(conn, d)
        elif op in (3, 4, 8):
            if conn.session is None:
                await self._close(conn, 4003, "Not authenticated")
        else:
            await self._close(conn, 4001, "Unknown opcode")

    async def _identify(self, conn: Connection, d: dict[str, Any]) -> None:
        if conn.session is not None:
            await self._close(conn, 4005, "Already authenticated")
            return
        if d.get("token") != self.token or self.gateway_refuses_token:
            await self._close(conn, 4004, "Authentication failed")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents & ~ALL_INTENTS:
            await self._close(conn, 4013, "Invalid intent(s)")
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await self._close(conn, 4014, "Disallowed intent(s)")
            return
        shard_id, count = d.get("shard") or (0, 1)
        if not (isinstance(shard_id, int) and isinstance(count, int) and 0 <= shard_id < count):
            await self._close(conn, 4010, "Invalid shard")
            return
        session = Session(uuid.uuid4().hex, (shard_id, count), intents, connection=conn)
        self.sessions[session.id] = session
        conn.session = session
        mine = [g for g in self.guilds.values() if shard_of(g.id, count) == shard_id]
        ready = {
            "v": 10,
            "user": self.bot_user(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in mine],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "shard": [shard_id, count],
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._dispatch_to(session, "READY", ready)
        for guild in mine:
            await self._dispatch_to(session, "GUILD_CREATE", self.guild_create(guild))

    async def _dispatch_to(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.connection is not None:
            await self._send(session.connection, frame)

    async def _resume(self, conn: Connection, d: dict[str, Any]) -> None:
        session = self.sessions.get(d.get("session_id") or "")
        if d.get("token") != self.token:
            await self._close(conn, 4004, "Authentication failed")
            return
        if session is None:
            await self._send(conn, {"op": 9, "d": False})
            return
        old = session.connection
        if old is not None and old is not conn and not old.ws.closed:
            await self._close(old, 4000, "Session resumed elsewhere")
        session.connection = conn
        session.resumes += 1
        conn.session = session
        seq = d.get("seq") or 0
        for frame in session.sent:
            if frame["s"] > seq:
                await self._send(conn, frame)
        await self._dispatch_to(session, "RESUMED", {})

    # ------------------------------------------------------------------ REST plumbing

    def _routes(self) -> list[tuple[str, str, Callable[[web.Request], Any]]]:
        return [
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("GET", "/applications/{app}/commands", self._get_commands),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            ("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands),
            ("POST", "/interactions/{id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app}/{token}", self._followup),
            ("GET", "/webhooks/{app}/{token}/messages/{message}", self._get_webhook_message),
            ("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._edit_webhook_message),
            ("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._delete_webhook_message),
            ("POST", "/channels/{channel}/messages", self._create_message),
            ("GET", "/channels/{channel}/messages/{message}", self._get_message),
            ("PATCH", "/channels/{channel}/messages/{message}", self._edit_message),
            ("DELETE", "/channels/{channel}/messages/{message}", self._delete_message),
            ("POST", "/channels/{channel}/typing", self._typing),
            ("POST", "/channels/{channel}/threads", self._create_thread),
            ("POST", "/channels/{channel}/messages/{message}/threads", self._create_thread),
        ]

    _BOT_AUTH_FREE = ("/interactions/", "/webhooks/")

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith(API):
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical[len(API) :] if resource is not None else request.path
        body: Any = None
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
            elif request.content_type.startswith("multipart/"):
                body = await _read_multipart(request)
            else:
                body = await request.text()
        request[_BODY] = body
        record = Request(request.method, route, request.path[len(API) :], dict(request.match_info), body)
        self.requests.append(record)
        try:
            if (
                not route.startswith(self._BOT_AUTH_FREE)
                and request.headers.get("Authorization") != f"Bot {self.token}"
            ):
                raise Rejected(401, 0, "401: Unauthorized")
            limited = self._limited(request.method, record.path)
            if limited is not None:
                record.status = 429
                return limited
            response = await handler(request)
        except Rejected as exc:
            self.rejected.append((record, exc.body))
            response = _json(exc.body, status=exc.status)
        record.status = response.status
        response.headers.update(_ratelimit_headers(route))
        await self._notify()
        return response

    def _limited(self, method: str, path: str) -> web.Response | None:
        for i, (m, pattern, retry_after, times, is_global) in enumerate(self._limits):
            if m == method and pattern.search(path):
                if times <= 1:
                    del self._limits[i]
                else:
                    self._limits[i] = (m, pattern, retry_after, times - 1, is_global)
                headers = {
                    "Via": "1.1 google",  # discord.py treats a 429 without it as a Cloudflare ban
                    "Retry-After": str(max(1, round(retry_after))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                    "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                    "X-RateLimit-Bucket": hashlib.md5(pattern.pattern.encode()).hexdigest(),
                    "X-RateLimit-Scope": "shared" if not is_global else "user",
                }
                if is_global:
                    headers["X-RateLimit-Global"] = "true"
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": is_global,
                }
                return _json(body, status=429, headers=headers)
        return None

    async def _unknown(self, request: web.Request) -> web.Response:
        raise Rejected(404, 0, f"404: Not Found (the emulator has no {request.method} {request.path})")

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get(int(request.match_info["id"]))
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="text/plain")

    # ------------------------------------------------------------------ REST: identity

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return _json(
            {"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limit}
        )

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user())

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.app_id),
                "name": "citebot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(self.owner_id, "owner"),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "summary": "",
            }
        )

    # ------------------------------------------------------------------ REST: commands

    async def _put_commands(self, request: web.Request) -> web.Response:
        if int(request.match_info["app"]) != self.app_id:
            raise Rejected(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        if guild is not None and int(guild) not in self.guilds:
            raise Rejected(403, 50001, "Missing Access")
        commands = request[_BODY]
        if not isinstance(commands, list):
            raise Rejected(400, 50035, "Invalid Form Body", ["expected a list of commands"])
        check_commands(commands)
        synced = []
        for cmd in commands:
            full = {
                "id": str(self.snowflake()),
                "application_id": str(self.app_id),
                "version": str(self.snowflake()),
                "type": cmd.get("type", 1),
                "description": cmd.get("description") or "",
                "default_member_permissions": cmd.get("default_member_permissions"),
                "nsfw": bool(cmd.get("nsfw")),
            } | cmd
            if guild is not None:
                full["guild_id"] = guild
            synced.append(full)
        self.commands[int(guild) if guild is not None else None] = synced
        return _json(synced)

    async def _get_commands(self, request: web.Request) -> web.Response:
        guild = request.match_info.get("guild")
        return _json(self.commands.get(int(guild) if guild else None, []))

    # ------------------------------------------------------------------ REST: interactions

    def _interaction(self, iid: str, token: str) -> Interaction:
        record = self.interactions.get(int(iid))
        if record is None or record.token != token:
            raise Rejected(404, 10062, "Unknown interaction")
        return record

    def _metadata(self, record: Interaction) -> dict[str, Any]:
        """What a response message says about the interaction that caused it."""
        metadata: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "user": user(record.user_id, f"user{record.user_id % 1000}"),
            "authorizing_integration_owners": record.payload["authorizing_integration_owners"],
        }
        if record.type == 3 and "message" in record.payload:
            metadata["interacted_message_id"] = record.payload["message"]["id"]
        return metadata

    def _webhook(self, app: str, token: str) -> Interaction:
        if int(app) != self.app_id:
            raise Rejected(404, 10015, "Unknown Webhook")
        for record in self.interactions.values():
            if record.token == token:
                if record.callback is None:  # follow-ups need the interaction answered first
                    raise Rejected(404, 10015, "Unknown Webhook")
                if time.monotonic() - record.dispatched_at > TOKEN_LIFETIME:
                    raise Rejected(401, 50027, "Invalid Webhook Token")
                return record
        raise Rejected(404, 10015, "Unknown Webhook")

    async def _callback(self, request: web.Request) -> web.Response:
        record = self._interaction(request.match_info["id"], request.match_info["token"])
        body = await _json_body(request)
        if record.callback is not None:
            raise Rejected(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - record.dispatched_at > INTERACTION_DEADLINE:
            raise Rejected(404, 10062, "Unknown interaction")
        kind = body.get("type")
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}[record.type]
        if kind not in allowed:
            raise Rejected(
                400, 50035, "Invalid Form Body", [f"type {kind} for interaction type {record.type}"]
            )
        data = body.get("data") or {}
        if kind in (4, 7):
            check_message(data, edit=kind == 7)
        elif kind == 8 and len(data.get("choices") or []) > 25:
            raise Rejected(400, 50035, "Invalid Form Body", ["more than 25 choices"])
        record.callback = body
        record.callback_at = time.monotonic()
        ephemeral = bool((data.get("flags") or 0) & EPHEMERAL)
        result: dict[str, Any] = {
            "interaction": {
                "id": str(record.id),
                "type": record.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            },
            "resource": {"type": kind},
        }
        if kind in (4, 5):
            shown = data if kind == 4 else {"content": "", "flags": (data.get("flags") or 0) | 128}
            message = self._message(
                shown, record.channel_id, record.guild_id, interaction_metadata=self._metadata(record)
            )
            record.original = message
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"]["message"] = message
        if request.query.get("with_response") in ("1", "true", "True"):
            return _json(result)
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._webhook(request.match_info["app"], request.match_info["token"])
        body = await _json_body(request)
        check_message(body)
        if record.callback is not None and record.callback["type"] == 5 and not record.followups:
            # The first follow-up after a "thinking…" defer replaces that message.
            assert record.original is not None
            message = record.original
            message |= {k: body.get(k) for k in ("content", "embeds", "components") if k in body}
            message["flags"] = (message.get("flags") or 0) & ~128
            message["allowed_mentions"] = body.get("allowed_mentions")
        else:
            message = self._message(body, record.channel_id, record.guild_id, webhook_id=str(self.app_id))
        record.followups.append(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json(message)
        return web.Response(status=204)

    def _webhook_message(self, record: Interaction, mid: str) -> dict[str, Any]:
        if mid == "@original":
            if record.original is None:
                raise Rejected(404, 10008, "Unknown Message")
            return record.original
        message = self.messages.get(int(mid))
        if message is None:
            raise Rejected(404, 10008, "Unknown Message")
        return message

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request.match_info["app"], request.match_info["token"])
        return _json(self._webhook_message(record, request.match_info["message"]))

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request.match_info["app"], request.match_info["token"])
        message = self._webhook_message(record, request.match_info["message"])
        body = await _json_body(request)
        check_message(body, edit=True)
        message |= {k: body[k] for k in ("content", "embeds", "components", "allowed_mentions") if k in body}
        record.edits.append(message)
        return _json(message)

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        record = self._webhook(request.match_info["app"], request.match_info["token"])
        message = self._webhook_message(record, request.match_info["message"])
        self.messages.pop(int(message["id"]), None)
        return web.Response(status=204)

    # ------------------------------------------------------------------ REST: channels

    def _channel(self, channel: str) -> Guild:
        for guild in self.guilds.values():
            if guild.channel_id == int(channel):
                return guild
        raise Rejected(404, 10003, "Unknown Channel")

    async def _create_message(self, request: web.Request) -> web.Response:
        guild = self._channel(request.match_info["channel"])
        body = await _json_body(request)
        check_message(body)
        extra: dict[str, Any] = {}
        ref = body.get("message_reference")
        if ref is not None:
            target = self.messages.get(int(ref.get("message_id") or 0))
            if target is None and ref.get("fail_if_not_exists", True):
                raise Rejected(400, 50035, "Invalid Form Body", ["message_reference: Unknown message"])
            extra = {"type": 19, "message_reference": ref | {"channel_id": str(guild.channel_id)}}
        message = self._message(body, guild.channel_id, guild.id, **extra)
        return _json(message)

    async def _get_message(self, request: web.Request) -> web.Response:
        self._channel(request.match_info["channel"])
        message = self.messages.get(int(request.match_info["message"]))
        if message is None:
            raise Rejected(404, 10008, "Unknown Message")
        return _json(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message"]))
        if message is None:
            raise Rejected(404, 10008, "Unknown Message")
        body = await _json_body(request)
        check_message(body, edit=True)
        message |= {k: body[k] for k in ("content", "embeds", "components") if k in body}
        return _json(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        if self.messages.pop(int(request.match_info["message"]), None) is None:
            raise Rejected(404, 10008, "Unknown Message")
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel(request.match_info["channel"])
        return web.Response(status=204)

    async def _create_thread(self, request: web.Request) -> web.Response:
        guild = self._channel(request.match_info["channel"])
        body = await _json_body(request)
        name = body.get("name") or ""
        if not 1 <= len(name) <= 100:
            raise Rejected(400, 50035, "Invalid Form Body", ["name: 1 to 100 characters"])
        thread = {
            "id": str(self.snowflake()),
            "type": body.get("type", 11),
            "guild_id": str(guild.id),
            "parent_id": str(guild.channel_id),
            "name": name,
            "owner_id": str(self.app_id),
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False},
        }
        return _json(thread, status=201)


# ---------------------------------------------------------------------- helpers


def user(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    """A user object."""
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The JSON body the middleware read (from ``payload_json`` in a multipart upload)."""
    body = request.get(_BODY)
    if request.content_type.startswith("multipart/"):
        body = (body or {}).get("payload_json")
    if not isinstance(body, dict):
        raise Rejected(400, 50109, "The request body contains invalid JSON.")
    return body


async def _read_multipart(request: web.Request) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    reader = await request.multipart()
    async for part in reader:
        name = getattr(part, "name", None) or ""
        data = await part.read()  # type: ignore[union-attr]
        parts[name] = json.loads(data) if name == "payload_json" else len(data)
    return parts


def _ratelimit_headers(route: str) -> dict[str, str]:
    # Plenty left in every bucket: only the 429s a test asks for are emulated.
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset-After": "1.000",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
    }


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json", as Discord sends it: discord.py compares the whole header and
    # takes anything else (such as aiohttp's "; charset=utf-8") for a text body.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json"} | (headers or {}),
    )
