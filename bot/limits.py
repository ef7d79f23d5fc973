"""Every outgoing message within Discord's limits, errors included: one validator for all sends.

Discord rejects a message that breaks any limit, and the user then sees nothing at all (an
interaction stays "thinking…" forever). :func:`fit` takes the keyword arguments of a send,
reply or edit and returns them cut to size: text on a sentence or word boundary with "…",
surplus fields, embeds and components dropped, the whole message under 6,000 characters of
embeds. Every send in ``bot/`` goes through it (:func:`fit` is cheap and pure).

Limits: https://discord.com/developers/docs/resources/message#embed-object-embed-limits and
https://discord.com/developers/docs/interactions/message-components.
"""

from __future__ import annotations

import re
from typing import Any

import discord

CONTENT = 2000
EMBEDS = 10
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
EMBED_TOTAL = 6000
URL = 2048
BUTTON_LABEL = 80
CUSTOM_ID = 100
COMPONENTS = 25
CHOICES = 25
CHOICE_NAME = 100
CHOICE_VALUE = 100
ELLIPSIS = "…"

_SENTENCE_END = re.compile(r"[.!?。！？](?=\s)")


def cut(text: str, limit: int) -> str:
    """``text`` whole if it fits, else cut on a sentence, then a word boundary, ending in "…".

    Never returns more than ``limit`` characters; never leaves a Markdown escape or a bold
    marker dangling at the cut (a trailing backslash or an odd ``**``).
    """
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    room = text[: limit - 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(room)]
    if ends and ends[-1] >= limit // 2:
        room = room[: ends[-1]]
    else:
        space = room.rfind(" ")
        if space >= limit // 2:
            room = room[:space]
    room = room.rstrip(" ,;:-\n")
    while room.endswith("\\"):
        room = room[:-1]
    if room.count("**") % 2:  # a bold span was cut open: close it
        room = room[: max(0, limit - 3)].rstrip("\\") + "**"
        if room.count("**") % 2:
            room = room.replace("**", "")
    return room + ELLIPSIS


def fit_embed(embed: discord.Embed, budget: int = EMBED_TOTAL) -> discord.Embed:
    """A copy of ``embed`` within every per-embed limit and within ``budget`` characters in all."""
    data = embed.to_dict()
    if "title" in data:
        data["title"] = cut(data["title"], EMBED_TITLE)
    if "description" in data:
        data["description"] = cut(data["description"], EMBED_DESCRIPTION)
    if "author" in data:
        data["author"]["name"] = cut(data["author"].get("name", ""), EMBED_AUTHOR) or "…"
        if len(data["author"].get("url") or "") > URL:
            data["author"].pop("url")
    if "footer" in data:
        data["footer"]["text"] = cut(data["footer"].get("text", ""), EMBED_FOOTER)
    if len(data.get("url") or "") > URL:
        data.pop("url")
    fields: list[Any] = []
    for f in data.get("fields", [])[:EMBED_FIELDS]:
        name = cut(f.get("name") or "", EMBED_FIELD_NAME) or "\u200b"
        value = cut(f.get("value") or "", EMBED_FIELD_VALUE) or "\u200b"
        fields.append({**f, "name": name, "value": value})
    if "fields" in data:
        data["fields"] = fields
    out = discord.Embed.from_dict(data)
    # Over the total: shorten the description first, then drop fields from the end.
    while len(out) > budget:
        excess = len(out) - budget
        desc = out.description or ""
        if len(desc) > 200:
            out.description = cut(desc, max(200, len(desc) - excess))
            continue
        if out.fields:
            out.remove_field(len(out.fields) - 1)
            continue
        out.description = cut(desc, max(1, len(desc) - excess)) if desc else None
        if len(out) > budget:
            out.set_footer(text=None)
            out.title = cut(out.title or "", 50) if out.title else None
        break
    return out


def fit_view(view: discord.ui.View) -> discord.ui.View:
    """``view`` with labels and custom ids within limits and at most 25 components."""
    for item in list(view.children)[COMPONENTS:]:
        view.remove_item(item)
    for item in view.children:
        if isinstance(item, discord.ui.Button):
            if item.label and len(item.label) > BUTTON_LABEL:
                item.label = cut(item.label, BUTTON_LABEL)
            if item.url and len(item.url) > URL:
                view.remove_item(item)
        custom_id = getattr(item, "custom_id", None)
        if custom_id and len(custom_id) > CUSTOM_ID:
            raise ValueError(f"custom_id longer than {CUSTOM_ID}: a bug in the bot, not the input")
    return view


def fit(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments of a send, reply or edit, cut to Discord's limits."""
    out = dict(kwargs)
    content = out.get("content")
    if isinstance(content, str):
        out["content"] = cut(content, CONTENT) or ELLIPSIS
    embeds = list(out.pop("embeds", None) or [])
    if out.get("embed") is not None:
        embeds.insert(0, out.pop("embed"))
    else:
        out.pop("embed", None)
    if embeds:
        left = EMBED_TOTAL
        fitted = []
        for e in embeds[:EMBEDS]:
            if left <= 50:
                break
            f = fit_embed(e, left)
            left -= len(f)
            fitted.append(f)
        if len(fitted) == 1 and "embeds" not in kwargs:
            out["embed"] = fitted[0]
        else:
            out["embeds"] = fitted
    if isinstance(out.get("view"), discord.ui.View):
        out["view"] = fit_view(out["view"])
    return out


def fit_choices(choices: list[Any]) -> list[Any]:
    """At most 25 autocomplete choices, each name 1-100 characters and value at most 100."""
    out = []
    for c in choices[:CHOICES]:
        name = cut(c.name, CHOICE_NAME) or "…"
        value = c.value if not isinstance(c.value, str) else c.value[:CHOICE_VALUE]
        out.append(type(c)(name=name, value=value))
    return out


def problems(**kwargs: Any) -> list[str]:
    """Every limit a message breaks (empty when Discord accepts it): for tests."""
    found: list[str] = []
    content = kwargs.get("content")
    if isinstance(content, str) and len(content) > CONTENT:
        found.append(f"content {len(content)} > {CONTENT}")
    embeds = list(kwargs.get("embeds") or []) + ([kwargs["embed"]] if kwargs.get("embed") is not None else [])
    if len(embeds) > EMBEDS:
        found.append(f"{len(embeds)} embeds > {EMBEDS}")
    total = 0
    for e in embeds:
        d = e.to_dict()
        total += len(e)
        checks = [
            ("title", len(d.get("title", "")), EMBED_TITLE),
            ("description", len(d.get("description", "")), EMBED_DESCRIPTION),
            ("fields", len(d.get("fields", [])), EMBED_FIELDS),
            ("footer", len(d.get("footer", {}).get("text", "")), EMBED_FOOTER),
            ("author", len(d.get("author", {}).get("name", "")), EMBED_AUTHOR),
            ("url", len(d.get("url", "") or ""), URL),
            ("author url", len(d.get("author", {}).get("url", "") or ""), URL),
        ]
        for f in d.get("fields", []):
            checks.append(("field name", len(f["name"]), EMBED_FIELD_NAME))
            checks.append(("field value", len(f["value"]), EMBED_FIELD_VALUE))
            if not f["name"] or not f["value"]:
                found.append("empty field")
        found.extend(f"{what} {n} > {limit}" for what, n, limit in checks if n > limit)
    if total > EMBED_TOTAL:
        found.append(f"embeds total {total} > {EMBED_TOTAL}")
    view = kwargs.get("view")
    if isinstance(view, discord.ui.View):
        if len(view.children) > COMPONENTS:
            found.append("too many components")
        for item in view.children:
            label = getattr(item, "label", None) or ""
            if len(label) > BUTTON_LABEL:
                found.append(f"button label {len(label)} > {BUTTON_LABEL}")
            custom_id = getattr(item, "custom_id", None) or ""
            if len(custom_id) > CUSTOM_ID:
                found.append(f"custom_id {len(custom_id)} > {CUSTOM_ID}")
    return found


__all__ = ["cut", "fit", "fit_choices", "fit_embed", "fit_view", "problems"]
