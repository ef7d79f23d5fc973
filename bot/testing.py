"""Offline Discord for the bot's tests and benchmarks: real ``discord.Interaction``/``Message``
objects built from gateway payloads, and recorded HTTP in place of Discord's API.

It lives in the package (not under ``tests/``) so that ``benchmarks/bot_latency.py`` drives the
same fake as the tests without importing from the test suite; nothing in the bot imports it.

This follows discord.py's own tests: interactions are built from payload dicts
(``tests/test_app_commands_invoke.py``) and the webhook adapter that carries interaction
responses is replaced through ``discord.webhook.async_.async_context``
(``tests/test_interactions.py``). The bot's REST client is a subclass of
``discord.http.HTTPClient`` whose ``request`` records the call and answers like Discord would.
These touch discord.py internals, which is why ``discord.py`` is pinned in pyproject.toml.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import discord
from discord import app_commands
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from bot import limits
from bot.client import Citebot, CitebotTree

APP_ID = 900000000000000001
BOT_ID = APP_ID
OWNER_ID = 900000000000000002
USER_ID = 900000000000000003
ADMIN_ID = 900000000000000004
GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
GUILD_EMPTY = 444444444444444444  # a server that never added anything
GUILDS = (GUILD_A, GUILD_B, GUILD_EMPTY)
DM_CHANNEL = 333333333333333334


def channel_of(guild_id: int) -> int:
    """The one text channel of a test server."""
    return guild_id + 1


TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.fake-token-for-tests-0123456789abcdef"

MEMBER_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, read_message_history=True, use_application_commands=True
)
ADMIN_PERMISSIONS = MEMBER_PERMISSIONS | discord.Permissions(manage_guild=True)
EPHEMERAL = 64

_snowflakes = itertools.count(500000000000000000)


def snowflake() -> int:
    """A fresh, increasing id."""
    return next(_snowflakes)


# ---------------------------------------------------------------------- payloads


def user_payload(user_id: int, name: str = "member", bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def member_payload(user_id: int, permissions: discord.Permissions, name: str = "member") -> dict[str, Any]:
    return {
        "user": user_payload(user_id, name),
        "roles": [],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "permissions": str(permissions.value),
    }


def forum_of(guild_id: int) -> int:
    """The one forum channel of a test server."""
    return guild_id + 2


def forum_payload(guild_id: int) -> dict[str, Any]:
    return {
        "id": str(forum_of(guild_id)),
        "type": 15,
        "guild_id": str(guild_id),
        "name": "questions",
        "position": 1,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "rate_limit_per_user": 0,
        "default_auto_archive_duration": 1440,
        "available_tags": [],
        "default_reaction_emoji": None,
        "flags": 0,
        "default_thread_rate_limit_per_user": 0,
        "default_sort_order": None,
        "default_forum_layout": 0,
    }


def thread_payload(
    guild_id: int, parent_id: int, owner_id: int, name: str, thread_id: int | None = None
) -> dict[str, Any]:
    """A THREAD_CREATE-shaped payload: a public thread, or a forum post when the parent is a forum."""
    return {
        "id": str(thread_id or snowflake()),
        "type": 11,
        "guild_id": str(guild_id),
        "parent_id": str(parent_id),
        "owner_id": str(owner_id),
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "applied_tags": [],
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": "2024-01-01T00:00:00+00:00",
            "locked": False,
        },
    }


def channel_payload(guild_id: int) -> dict[str, Any]:
    return {
        "id": str(channel_of(guild_id)),
        "type": 0,
        "guild_id": str(guild_id),
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
    }


def guild_payload(guild_id: int) -> dict[str, Any]:
    """A GUILD_CREATE payload: one text channel, the bot as a member."""
    return {
        "id": str(guild_id),
        "name": f"Server {guild_id % 1000}",
        "owner_id": str(OWNER_ID),
        "roles": [
            {
                "id": str(guild_id),
                "name": "@everyone",
                "permissions": str(MEMBER_PERMISSIONS.value),
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "channels": [channel_payload(guild_id), forum_payload(guild_id)],
        "members": [
            member_payload(BOT_ID, MEMBER_PERMISSIONS, "citebot")
            | {"user": user_payload(BOT_ID, "citebot", True)}
        ],
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
    }


def message_payload(
    *,
    content: str = "",
    author: dict[str, Any] | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    embeds: list[dict[str, Any]] | None = None,
    components: list[dict[str, Any]] | None = None,
    flags: int = 0,
    mentions: list[dict[str, Any]] | None = None,
    referenced: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """A MESSAGE_CREATE-shaped payload."""
    channel_id = channel_id or (channel_of(guild_id) if guild_id else DM_CHANNEL)
    data: dict[str, Any] = {
        "id": str(message_id or snowflake()),
        "channel_id": str(channel_id),
        "author": author or user_payload(USER_ID),
        "content": content,
        "timestamp": "2024-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [],
        "attachments": [],
        "embeds": embeds or [],
        "pinned": False,
        "type": 19 if referenced else 0,
        "flags": flags,
        "components": components or [],
    }
    if guild_id:
        data["guild_id"] = str(guild_id)
    if referenced:
        data["message_reference"] = {
            "message_id": referenced["id"],
            "channel_id": referenced["channel_id"],
            **({"guild_id": str(guild_id)} if guild_id else {}),
        }
        data["referenced_message"] = referenced
    return data


def interaction_payload(
    *,
    type: int,
    data: dict[str, Any],
    guild_id: int | None,
    user_id: int = USER_ID,
    permissions: discord.Permissions = MEMBER_PERMISSIONS,
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload from a server member, or from a user in a DM."""
    iid = snowflake()
    payload: dict[str, Any] = {
        "id": str(iid),
        "application_id": str(APP_ID),
        "type": type,
        "token": f"interaction-token-{iid}",
        "version": 1,
        "data": data,
        "attachment_size_limit": 10 * 1024 * 1024,
        "app_permissions": str(MEMBER_PERMISSIONS.value | discord.Permissions(embed_links=True).value),
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {},
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild_locale"] = "en-US"
        payload["member"] = member_payload(user_id, permissions)
        payload["channel"] = channel_payload(guild_id)
        payload["context"] = 0
    else:
        payload["user"] = user_payload(user_id)
        payload["channel"] = {"id": str(DM_CHANNEL), "type": 1, "recipients": [user_payload(user_id)]}
        payload["context"] = 1
    if message is not None:
        payload["message"] = message
    return payload


_OPTION_TYPES = {str: 3, int: 4, bool: 5}


def command_data(
    command: app_commands.Command[Any, ..., Any], focused: str | None = None, **options: Any
) -> dict[str, Any]:
    """The ``data`` of a slash-command (or autocomplete) interaction."""
    opts = []
    resolved: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, dict) and "filename" in value:  # an attachment payload
            resolved.setdefault("attachments", {})[value["id"]] = value
            opts.append({"name": name, "type": 11, "value": value["id"]})
        else:
            opt = {"name": name, "type": _OPTION_TYPES[type(value)], "value": value}
            if name == focused:
                opt["focused"] = True
            opts.append(opt)
    data: dict[str, Any] = {"id": str(snowflake()), "name": command.name, "type": 1, "options": opts}
    if resolved:
        data["resolved"] = resolved
    return data


def attachment_payload(filename: str, data: bytes) -> dict[str, Any]:
    aid = str(snowflake())
    return {
        "id": aid,
        "filename": filename,
        "size": len(data),
        "url": f"https://cdn.discordapp.com/attachments/1/{aid}/{filename}",
        "proxy_url": f"https://media.discordapp.net/attachments/1/{aid}/{filename}",
        "content_type": "text/plain",
    }


# ---------------------------------------------------------------------- recorded HTTP


@dataclass
class Sent:
    """One request the bot made to Discord."""

    method: str
    path: str  # the route template, e.g. /interactions/{webhook_id}/{webhook_token}/callback
    url: str
    payload: dict[str, Any]
    order: int
    at: float = field(default_factory=time.perf_counter)  # when it was sent (benchmarks)

    @property
    def kind(self) -> str:
        """defer, message (initial response), autocomplete, update, followup, edit, channel, ..."""
        if self.path.endswith("/callback"):
            kinds = {4: "message", 5: "defer", 6: "defer_update", 7: "update", 8: "autocomplete"}
            return kinds.get(int(self.payload.get("type") or 0), "callback")
        if self.path == "/webhooks/{webhook_id}/{webhook_token}" and self.method == "POST":
            return "followup"
        if self.path.endswith("/messages/@original") and self.method == "PATCH":
            return "edit"
        if self.path == "/channels/{channel_id}/messages" and self.method == "POST":
            return "channel"
        if self.path.endswith("/typing"):
            return "typing"
        return f"{self.method} {self.path}"

    @property
    def body(self) -> dict[str, Any]:
        """The message part of the request (callbacks nest it under ``data``)."""
        return self.payload.get("data", {}) if self.path.endswith("/callback") else self.payload

    @property
    def ephemeral(self) -> bool:
        return bool(self.body.get("flags", 0) & EPHEMERAL)

    @property
    def embeds(self) -> list[discord.Embed]:
        return [discord.Embed.from_dict(e) for e in self.body.get("embeds") or []]

    @property
    def content(self) -> str:
        return self.body.get("content") or ""

    @property
    def custom_ids(self) -> list[str]:
        return [
            c["custom_id"]
            for row in self.body.get("components") or []
            for c in row.get("components", [])
            if "custom_id" in c
        ]

    @property
    def text(self) -> str:
        """Everything a person would read: content and embed text."""
        parts = [self.content]
        for e in self.body.get("embeds") or []:
            parts += [e.get("title", ""), e.get("description", ""), e.get("author", {}).get("name", "")]
            parts += [e.get("footer", {}).get("text", "")]
            parts += [f["name"] + " " + f["value"] for f in e.get("fields", [])]
        return "\n".join(p for p in parts if p)


@dataclass
class Recorder:
    """Everything sent, in order, for assertions."""

    sent: list[Sent] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def add(self, method: str, path: str, url: str, payload: dict[str, Any] | None) -> Sent:
        s = Sent(method, path, url, payload or {}, next(self._order))
        self.sent.append(s)
        return s

    def kinds(self) -> list[str]:
        return [s.kind for s in self.sent]

    def of(self, kind: str) -> list[Sent]:
        return [s for s in self.sent if s.kind == kind]

    def last(self, kind: str) -> Sent:
        found = self.of(kind)
        assert found, f"nothing of kind {kind!r} was sent; sent: {self.kinds()}"
        return found[-1]

    def clear(self) -> None:
        self.sent.clear()


def _bot_message(
    body: dict[str, Any], channel_id: str, reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What Discord answers when the bot posts ``body``: the created message."""
    return message_payload(
        content=body.get("content") or "",
        author=user_payload(BOT_ID, "citebot", bot=True),
        channel_id=int(channel_id),
        embeds=body.get("embeds"),
        components=body.get("components"),
        flags=body.get("flags", 0),
        guild_id=None,
    ) | ({"message_reference": reference} if reference else {})


def payload_problems(body: dict[str, Any]) -> list[str]:
    """What Discord would refuse in a message or callback body (raw JSON), by :mod:`bot.limits`."""
    found = limits.problems(
        content=body.get("content"), embeds=[discord.Embed.from_dict(e) for e in body.get("embeds") or []]
    )
    rows = body.get("components") or []
    if len(rows) > 5:
        found.append(f"{len(rows)} rows > 5")
    custom_ids = []
    for row in rows:
        items = row.get("components", [])
        if len(items) > 5:
            found.append(f"{len(items)} components in a row > 5")
        for item in items:
            if len(item.get("label") or "") > limits.BUTTON_LABEL:
                found.append(f"button label {len(item['label'])} > {limits.BUTTON_LABEL}")
            if "custom_id" in item:
                custom_ids.append(item["custom_id"])
                if not 1 <= len(item["custom_id"]) <= limits.CUSTOM_ID:
                    found.append(f"custom_id of {len(item['custom_id'])} characters")
            if len(item.get("url") or "") > 512:
                found.append("button url > 512")
    if len(custom_ids) != len(set(custom_ids)):
        found.append("duplicate custom_id")
    choices = body.get("choices")
    if choices is not None:
        if len(choices) > limits.CHOICES:
            found.append(f"{len(choices)} choices > {limits.CHOICES}")
        for c in choices:
            if not 1 <= len(c["name"]) <= limits.CHOICE_NAME:
                found.append(f"choice name of {len(c['name'])} characters")
            if isinstance(c["value"], str) and len(c["value"]) > limits.CHOICE_VALUE:
                found.append(f"choice value of {len(c['value'])} characters")
    return found


def _refuse_invalid(body: dict[str, Any]) -> None:
    """Answer an over-limit body as Discord does: 400 Invalid Form Body (nothing is shown)."""
    found = payload_problems(body)
    if found:
        raise discord.HTTPException(
            _Response(400, "Bad Request"),
            {"code": 50035, "message": "Invalid Form Body: " + "; ".join(found)},
        )


class RecordingAdapter(AsyncWebhookAdapter):
    """The webhook adapter that carries interaction responses, recording instead of sending."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def request(
        self, route: Route, session: Any, *, payload: Any = None, multipart: Any = None, **_: Any
    ) -> Any:
        if multipart:
            payload = json.loads(next(p["value"] for p in multipart if p["name"] == "payload_json"))
        sent = self.recorder.add(route.method, route.path, route.url, payload)
        _refuse_invalid(sent.body)
        if route.path.endswith("/callback"):
            data = sent.payload.get("data") or {}
            response: dict[str, Any] = {
                "interaction": {
                    "id": str(route.webhook_id),
                    "type": 2,
                    "response_message_loading": sent.payload.get("type") == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL),
                }
            }
            if sent.payload.get("type") == 4:
                response["resource"] = {"type": 4, "message": _bot_message(data, "1")}
            return response
        if route.method in ("POST", "PATCH"):
            return _bot_message(sent.payload, "1")
        return None


class _Response:
    """Just enough of an aiohttp response for ``discord.HTTPException``."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


class RecordingHTTP(HTTPClient):
    """The bot's REST client, answering like Discord without a network."""

    def __init__(self, recorder: Recorder, *, login_error: Exception | None = None) -> None:
        super().__init__(loop=None)  # type: ignore[arg-type]  # set by Client._async_setup_hook
        self.recorder = recorder
        self.login_error = login_error
        self.cdn: dict[str, bytes] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.logins: list[str] = []
        self.threads: list[dict[str, Any]] = []  # threads the bot opened
        # The channels of each test server, so a thread opened on a message knows its server.
        self.guild_of_channel: dict[int, set[int]] = {g: {channel_of(g), forum_of(g)} for g in GUILDS}

    async def static_login(self, token: str) -> Any:
        self.logins.append(token)
        if self.login_error is not None:
            raise self.login_error
        self.token = token
        return user_payload(BOT_ID, "citebot", bot=True)

    async def close(self) -> None:
        pass

    async def get_from_cdn(self, url: str) -> bytes:
        self.recorder.add("GET", "cdn", url, None)
        return self.cdn[url]

    async def request(self, route: Route, *, files: Any = None, form: Any = None, **kwargs: Any) -> Any:
        payload = kwargs.get("json")
        if form:
            payload = json.loads(next(p["value"] for p in form if p["name"] == "payload_json"))
        sent = self.recorder.add(route.method, route.path, route.url, payload)
        path = route.path
        if "/messages" in path and route.method in ("POST", "PATCH"):
            _refuse_invalid(sent.payload)
        if path == "/channels/{channel_id}/messages" and route.method == "POST":
            created = _bot_message(sent.payload, str(route.channel_id), sent.payload.get("message_reference"))
            self.messages[int(created["id"])] = created
            return created
        if path == "/channels/{channel_id}/messages/{message_id}/threads" and route.method == "POST":
            parent = int(route.url.split("/channels/", 1)[1].split("/", 1)[0])
            guild_id = next((g for g in self.guild_of_channel if parent in self.guild_of_channel[g]), 0)
            thread = thread_payload(guild_id, parent, BOT_ID, (payload or {}).get("name", ""))
            self.threads.append(thread)
            return thread
        if path == "/channels/{channel_id}/messages/{message_id}" and route.method == "GET":
            message_id = int(route.url.rsplit("/", 1)[1])
            if message_id in self.messages:
                return self.messages[message_id]
            raise discord.NotFound(_Response(404, "Not Found"), {"message": "Unknown Message", "code": 10008})
        if path.endswith("/commands") and route.method == "PUT":
            return [
                {
                    "id": str(snowflake()),
                    "application_id": str(APP_ID),
                    "version": "1",
                    "type": 1,
                    "description": "",
                    **cmd,
                }
                for cmd in payload or []
            ]
        if path == "/oauth2/applications/@me":
            return {
                "id": str(APP_ID),
                "name": "citebot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user_payload(OWNER_ID, "owner"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        return None


# ---------------------------------------------------------------------- bot and calls


class RecordingTree(CitebotTree):
    """The bot's tree, also keeping every error it handled (like discord.py's MockTree)."""

    errors: list[app_commands.AppCommandError]

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /
    ) -> None:
        self.errors.append(error)
        await super().on_error(interaction, error)


@dataclass
class FakeDiscord:
    """A bot wired to recorded HTTP, with helpers to deliver payloads to it."""

    bot: Citebot
    recorder: Recorder
    http: RecordingHTTP
    startup: list[Sent] = field(default_factory=list)  # what login and setup_hook sent

    @property
    def tree(self) -> RecordingTree:
        return self.bot.tree  # type: ignore[return-value]

    def command(self, name: str) -> app_commands.Command[Any, ..., Any]:
        cmd = self.bot.tree.get_command(name)
        assert isinstance(cmd, app_commands.Command), name
        return cmd

    def interaction(self, payload: dict[str, Any]) -> discord.Interaction[Citebot]:
        return discord.Interaction(data=payload, state=self.bot._connection)  # type: ignore[arg-type]

    async def deliver(self, payload: dict[str, Any]) -> discord.Interaction[Citebot]:
        """Run an application-command or autocomplete interaction as the gateway would."""
        interaction = self.interaction(payload)
        try:  # what CommandTree._from_interaction does, awaited instead of scheduled
            await self.bot.tree._call(interaction)
        except app_commands.AppCommandError as exc:
            await self.bot.tree._dispatch_error(interaction, exc)
        return interaction

    async def slash(
        self,
        name: str,
        *,
        guild_id: int | None = GUILD_A,
        user_id: int = USER_ID,
        permissions: discord.Permissions = MEMBER_PERMISSIONS,
        **options: Any,
    ) -> discord.Interaction[Citebot]:
        data = command_data(self.command(name), **options)
        return await self.deliver(
            interaction_payload(
                type=2, data=data, guild_id=guild_id, user_id=user_id, permissions=permissions
            )
        )

    async def autocomplete(
        self,
        name: str,
        focused: str,
        *,
        guild_id: int | None = GUILD_A,
        permissions: discord.Permissions = MEMBER_PERMISSIONS,
        **options: Any,
    ) -> list[dict[str, Any]]:
        data = command_data(self.command(name), focused=focused, **options)
        self.recorder.clear()
        await self.deliver(interaction_payload(type=4, data=data, guild_id=guild_id, permissions=permissions))
        return self.recorder.last("autocomplete").payload["data"]["choices"]

    async def message_menu(
        self, message: dict[str, Any], *, guild_id: int | None = GUILD_A
    ) -> discord.Interaction[Citebot]:
        data = {
            "id": str(snowflake()),
            "name": "Ask citebot",
            "type": 3,
            "target_id": message["id"],
            "resolved": {"messages": {message["id"]: message}},
        }
        return await self.deliver(interaction_payload(type=2, data=data, guild_id=guild_id))

    async def click(
        self,
        sent: Sent,
        custom_id: str,
        *,
        guild_id: int | None = GUILD_A,
        user_id: int = USER_ID,
        permissions: discord.Permissions = MEMBER_PERMISSIONS,
    ) -> discord.Interaction[Citebot]:
        """Click a button of a message the bot sent, as the user of another interaction."""
        assert custom_id in sent.custom_ids, (custom_id, sent.custom_ids)
        message = message_payload(
            author=user_payload(BOT_ID, "citebot", bot=True),
            guild_id=guild_id,
            content=sent.body.get("content") or "",
            embeds=sent.body.get("embeds"),
            components=sent.body.get("components"),
            flags=sent.body.get("flags", 0),
        )
        payload = interaction_payload(
            type=3,
            data={"custom_id": custom_id, "component_type": 2},
            guild_id=guild_id,
            user_id=user_id,
            message=message,
            permissions=permissions,
        )
        interaction = self.interaction(payload)
        store = self.bot._connection._view_store
        # ViewStore.dispatch_dynamic_items, awaited instead of scheduled.
        matched = [(p, item) for p, item in store._dynamic_items.items() if p.fullmatch(custom_id)]
        assert matched, f"no dynamic item handles {custom_id!r}"
        for pattern, item in matched:
            match = pattern.fullmatch(custom_id)
            assert match is not None
            await store.schedule_dynamic_item_call(2, item, interaction, custom_id, match)
        return interaction

    def message(self, payload: dict[str, Any]) -> discord.Message:
        """A Message object as the gateway's MESSAGE_CREATE would build it."""
        state = self.bot._connection
        # discord.py reads only the ids of the payload here (typed as a message for its own callers).
        channel, _ = state._get_guild_channel(cast(Any, payload))
        return discord.Message(state=state, channel=channel, data=payload)  # type: ignore[arg-type]

    async def say(
        self,
        content: str,
        *,
        guild_id: int | None = GUILD_A,
        mention: bool = True,
        referenced: dict[str, Any] | None = None,
        user_id: int = USER_ID,
        channel_id: int | None = None,
    ) -> discord.Message:
        """A member posts a message (in the server's channel, or ``channel_id``: a thread); the
        Ask cog's listener handles it."""
        payload = message_payload(
            content=(f"<@{BOT_ID}> " if mention else "") + content,
            author=user_payload(user_id),
            guild_id=guild_id,
            channel_id=channel_id,
            mentions=[user_payload(BOT_ID, "citebot", bot=True)] if mention else [],
            referenced=referenced,
        )
        message = self.message(payload)
        await self.bot.get_cog("Ask").on_message(message)  # type: ignore[union-attr]
        return message

    def add_thread(self, payload: dict[str, Any]) -> discord.Thread:
        """A thread (or forum post) the gateway announced, in the server's cache."""
        guild = self.bot.get_guild(int(payload["guild_id"]))
        assert guild is not None
        thread = discord.Thread(guild=guild, state=self.bot._connection, data=payload)  # type: ignore[arg-type]
        guild._add_thread(thread)
        self.http.guild_of_channel.setdefault(guild.id, set()).add(thread.id)
        return thread

    async def forum_post(
        self, title: str, content: str, *, guild_id: int = GUILD_A, user_id: int = USER_ID
    ) -> discord.Thread:
        """A member opens a post in the server's forum channel; the Community cog sees THREAD_CREATE."""
        thread = self.add_thread(thread_payload(guild_id, forum_of(guild_id), user_id, title))
        # A forum post's first message has the post's id.
        self.http.messages[thread.id] = message_payload(
            content=content,
            author=user_payload(user_id),
            guild_id=guild_id,
            channel_id=thread.id,
            message_id=thread.id,
        )
        await self.bot.get_cog("Community").on_thread_create(thread)  # type: ignore[union-attr]
        return thread


async def start_bot(settings: Any, store: Any, encoder: Any, **options: Any) -> tuple[FakeDiscord, Any]:
    """A Citebot with recorded HTTP, set up as after login (cogs loaded, user known).

    Returns the fake and the async_context token to reset.
    """
    recorder = Recorder()
    bot = Citebot(settings, store, encoder, tree_cls=RecordingTree, **options)
    bot.tree.errors = []  # type: ignore[attr-defined]
    http = RecordingHTTP(recorder)
    bot.http = http
    bot._connection.http = http
    bot.tree._http = http  # the tree keeps its own reference for syncing
    token = async_context.set(RecordingAdapter(recorder))
    await bot.login(TOKEN)  # static login (recorded), application info, then setup_hook
    for guild_id in GUILDS:
        bot._connection._add_guild_from_data(guild_payload(guild_id))  # type: ignore[arg-type]
    startup = list(recorder.sent)
    recorder.clear()
    return FakeDiscord(bot, recorder, http, startup), token


# ---------------------------------------------------------------------- fixtures


@contextlib.asynccontextmanager
async def running_bot(settings: Any, store: Any, encoder: Any, **options: Any) -> AsyncIterator[FakeDiscord]:
    """A bot for one test, closed (and the webhook adapter restored) afterwards."""
    fake, token = await start_bot(settings, store, encoder, **options)
    try:
        yield fake
    finally:
        async_context.reset(token)
        await fake.bot.close()


class CountingStore:
    """Wraps a store and counts the calls made to it, by method name (tests and benchmarks)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted
