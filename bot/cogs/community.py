"""Running citebot for a community: /config, forum auto-replies, /gaps, /pins, /export,
/privacy, and what happens when the bot leaves a server.

The rules live in the core (:mod:`embeddings.community`, :class:`embeddings.Library`): when to
reply unasked, how questions are grouped, when a pin applies, what a quota allows. This cog reads
Discord's events and options, runs the core off the event loop and renders the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import EmptyLibraryError, Library, community
from embeddings.community import SETTING_HELP, Gap, MemberData, Pin, ServerSettings
from embeddings.exchange import export_lines

from .. import render
from ..client import Citebot, UserError, guild_only_check, manager_check, report_error
from ..limits import fit
from .ask import answer_message, asked_by

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 3600.0
"""Seconds between passes that delete the libraries of servers gone past their grace period and
the questions past their retention."""
GAPS_SHOWN = 8
PINS_SHOWN = 5


# ---------------------------------------------------------------------- worker-thread work


def export_bytes(library: Library) -> bytes:
    """Worker-thread: the library as a JSON Lines file."""
    return "".join(export_lines(library)).encode("utf-8")


def pins_and_dropped(library: Library) -> tuple[list[Pin], list[Pin]]:
    """Worker-thread: the pins, and those dropped since the last look."""
    return library.pins(), library.dropped_pins()


def erase(library: Library, user: str) -> tuple[int, int]:
    """Worker-thread: delete a member's questions and votes."""
    return library.erase_member(user)


# ---------------------------------------------------------------------- rendering


def config_embed(own: ServerSettings, effective: ServerSettings, only: str | None = None) -> discord.Embed:
    """The settings with what each does; "(default)" where the server changed nothing."""
    embed = discord.Embed(title="This server's settings", colour=render.COLOUR_INFO)
    for name, help_text in SETTING_HELP.items():
        if only is not None and name != only:
            continue
        value = getattr(effective, name)
        shown = community.describe_value(name, value)
        if name == "abstain_threshold" and value is None:
            shown = "the operator's (0.61 unless changed)"
        if getattr(own, name) is None:
            shown += " (default)"
        embed.add_field(name=name, value=render.shorten(f"**{shown}**\n{help_text}", 1000), inline=False)
    embed.set_footer(text="Change one: /config setting:<name> value:<value> (value default resets it)")
    return embed


def gaps_embed(gaps: list[Gap], period: str) -> discord.Embed:
    """The largest groups of unanswered questions."""
    embed = discord.Embed(title=f"Unanswered questions, last {period}", colour=render.COLOUR_MEDIUM)
    if not gaps:
        embed.description = "Nothing went unanswered in this period (or no questions were kept)."
        embed.colour = render.COLOUR_HIGH
        return embed
    total = sum(g.count for g in gaps)
    embed.description = f"{total} question(s) in {len(gaps)} group(s); the whole list is attached as CSV."
    for n, gap in enumerate(gaps[:GAPS_SHOWN], start=1):
        examples = "\n".join(f"• {render.escape(render.shorten(q, 150))}" for q in gap.examples)
        closest = (
            f"\nClosest article: “{render.escape(render.shorten(gap.closest_article, 100))}”"
            if gap.closest_article
            else ""
        )
        votes = f", {gap.downvoted} 👎" if gap.downvoted else ""
        embed.add_field(
            name=render.shorten(
                f"{n}. asked {gap.count}× ({gap.declined} declined{votes}), last {gap.last_asked[:10]}", 256
            ),
            value=render.shorten(examples + closest, 1000),
            inline=False,
        )
    return embed


def pins_embed(pins: list[Pin], dropped: list[Pin]) -> discord.Embed:
    """The moderators' pins, and those dropped because their passage changed."""
    embed = discord.Embed(title="Pinned answers", colour=render.COLOUR_INFO)
    if not pins:
        embed.description = (
            "No pins yet. Under an answer, “Other sources” shows moderators a 📌 button to make one "
            "of them the answer to questions like it."
        )
    for pin in pins[:20]:
        embed.add_field(
            name=render.shorten(f"{pin.id} · “{render.escape(render.shorten(pin.question, 200))}”", 256),
            value=render.shorten(
                f"→ “{render.escape(render.shorten(pin.title, 200))}”, ¶ {pin.paragraph}, pinned {pin.at[:10]}",
                1000,
            ),
            inline=False,
        )
    if dropped:
        lines = [
            f"• “{render.escape(render.shorten(p.question, 120))}” ({render.escape(render.shorten(p.title, 80))})"
            for p in dropped[:10]
        ]
        embed.add_field(
            name="Dropped: their passage changed or was removed",
            value=render.shorten("\n".join(lines), 1000),
            inline=False,
        )
    return embed


def privacy_text(data: MemberData, retention_days: int | None) -> str:
    """What the server's library holds about a member, in plain words."""
    kept = f"for {retention_days} days" if retention_days else "not at all (this server keeps no questions)"
    lines = [
        "**What this server's citebot keeps about you**",
        f"• Your questions, with whether they were answered, {kept}: {len(data.questions)} now.",
        f"• Your 👍/👎 votes with the question and answer they rate: {len(data.votes)}.",
        "Nothing else: no messages you didn't address to me, no profile.",
    ]
    for q in data.questions[-5:]:
        lines.append(f"-# {q.at[:10]} “{render.escape(render.shorten(q.question, 120))}”")
    for line in community.vote_lines(list(data.votes[:5])):
        lines.append(f"-# {render.escape(render.shorten(line, 150))}")
    return render.shorten("\n".join(lines), render.CONTENT_LIMIT)


# ---------------------------------------------------------------------- buttons


class UnpinButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:unpin:(?P<id>[0-9a-f]{4,40})"
):
    """Removes a pin (moderators)."""

    def __init__(self, pin_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Unpin {pin_id}",
                emoji="✖️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"citebot:unpin:{pin_id}",
            )
        )
        self.pin_id = pin_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> UnpinButton:
        """Rebuild from a clicked button."""
        return cls(match["id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Remove the pin, if the clicker may."""
        try:
            if interaction.guild_id is None:
                raise UserError("Pins belong to a server's library.")
            await manager_check(interaction)
            await interaction.response.defer(ephemeral=True, thinking=True)
            pin = await interaction.client.in_library(
                interaction.guild_id, Library.unpin, self.pin_id, write=True
            )
            await interaction.followup.send(
                **fit(
                    content=f"Unpinned “{render.escape(render.shorten(pin.question, 200))}”.", ephemeral=True
                )
            )
        except Exception as exc:
            await report_error(interaction, exc)


class EraseButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:erase:(?P<user>\d{1,20})"
):
    """Deletes the clicker's own questions and votes (only the member it was shown to)."""

    def __init__(self, user_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete my questions and votes",
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=f"citebot:erase:{user_id}",
            )
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> EraseButton:
        """Rebuild from a clicked button."""
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Erase, when the clicker is the member the button was shown to."""
        try:
            if interaction.user.id != self.user_id:
                raise UserError("This button deletes the data of the member it was shown to, not yours.")
            await interaction.response.defer(ephemeral=True, thinking=True)
            questions, votes = await interaction.client.in_library(
                interaction.guild_id, erase, str(self.user_id), write=True, create=True
            )
            await interaction.followup.send(
                **fit(
                    content=f"Deleted {questions} question(s) and {votes} vote(s) of yours.", ephemeral=True
                )
            )
        except Exception as exc:
            await report_error(interaction, exc)


# ---------------------------------------------------------------------- the cog


class Community(commands.Cog):
    """Per-server settings, forum auto-replies, the gap report, pins, export and privacy."""

    def __init__(self, bot: Citebot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        """Register the buttons and start the daily housekeeping (in one process only)."""
        self.bot.add_dynamic_items(UnpinButton, EraseButton)
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.remove_dynamic_items(UnpinButton, EraseButton)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ /config

    @app_commands.command(name="config")
    @app_commands.describe(setting="The setting to show or change", value="Its new value (default resets it)")
    @app_commands.choices(setting=[app_commands.Choice(name=n, value=n) for n in SETTING_HELP])
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)  # innermost, so it runs first
    async def config(
        self,
        interaction: discord.Interaction[Citebot],
        setting: str | None = None,
        value: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        """Show or change this server's settings (Manage Server)."""
        if value is not None and setting is None:
            raise UserError("Name the setting to change (the setting option).")
        parsed = (
            community.parse_setting(setting, value) if setting is not None and value is not None else None
        )
        await interaction.response.defer(ephemeral=True, thinking=True)

        def run(library: Library) -> tuple[ServerSettings, ServerSettings]:
            if setting is not None and value is not None:
                library.configure(**{setting: parsed})
            return library.own_settings(), library.settings()

        own, effective = await self.bot.in_library(
            interaction.guild_id, run, create=True, write=value is not None
        )
        if value is not None:
            log.info("guild %s: user %s set %s", interaction.guild_id, interaction.user.id, setting)
        await interaction.followup.send(**fit(embed=config_embed(own, effective, setting), ephemeral=True))

    # ------------------------------------------------------------------ forums

    @commands.Cog.listener()
    async def on_thread_create(self, thread: discord.Thread) -> None:
        """A new post in a forum channel the server chose: reply only when sure, never twice."""
        me = self.bot.user
        if me is None or thread.owner_id == me.id or not isinstance(thread.parent, discord.ForumChannel):
            return
        guild_id = thread.guild.id
        try:
            settings = await self.bot.server_settings(guild_id)
            if thread.parent_id not in (settings.forum_channels or ()):
                return
            starter = thread.starter_message
            if starter is None:
                with contextlib.suppress(discord.HTTPException):
                    # A forum post's first message has the post's id (its text needs the
                    # message-content intent; without it only the title is read).
                    starter = await thread.fetch_message(thread.id)
            body = starter.content.strip() if starter is not None else ""
            question = f"{thread.name}\n{body}".strip()
            answer = await self.bot.in_library(
                guild_id,
                Library.auto_reply,
                str(thread.id),
                question,
                asked_by=asked_by(guild_id, thread.owner_id or 0),
            )
            if answer is None:
                log.debug("guild %s: stayed silent in forum post %s", guild_id, thread.id)
                return
            await thread.send(**answer_message(answer, thread.id))
        except EmptyLibraryError:
            return  # nothing to answer from yet
        except discord.HTTPException:
            log.warning("guild %s: could not reply in forum post %s", guild_id, thread.id, exc_info=True)
        except Exception:
            log.exception("guild %s: forum auto-reply failed in %s", guild_id, thread.id)

    # ------------------------------------------------------------------ /gaps

    @app_commands.command(name="gaps")
    @app_commands.describe(period="How far back: 24h, 7d, 4w (default 30d)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)
    async def gaps(
        self, interaction: discord.Interaction[Citebot], period: app_commands.Range[str, 1, 10] = "30d"
    ) -> None:
        """What members asked that the library didn't answer, grouped (Manage Server)."""
        span = community.parse_period(period)
        await interaction.response.defer(ephemeral=True, thinking=True)
        since = community.utcnow() - span
        found = await self.bot.in_library(interaction.guild_id, Library.gaps, since, create=True)
        csv_text = community.gaps_csv(found)
        files = [discord.File(io.BytesIO(csv_text.encode("utf-8")), filename="gaps.csv")] if found else []
        await interaction.followup.send(
            **fit(embed=gaps_embed(found, period.strip()), ephemeral=True), files=files
        )

    # ------------------------------------------------------------------ /pins

    @app_commands.command(name="pins")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)
    async def pins(self, interaction: discord.Interaction[Citebot]) -> None:
        """The answers this server's moderators pinned, with buttons to remove them."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        pins, dropped = await self.bot.in_library(interaction.guild_id, pins_and_dropped, create=True)
        view = discord.ui.View(timeout=None)
        for pin in pins[:PINS_SHOWN]:
            view.add_item(UnpinButton(pin.id))
        await interaction.followup.send(
            **fit(
                embed=pins_embed(pins, dropped), ephemeral=True, **({"view": view} if view.children else {})
            )
        )

    # ------------------------------------------------------------------ /export

    @app_commands.command(name="export")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.check(guild_only_check)
    async def export(self, interaction: discord.Interaction[Citebot]) -> None:
        """This server's articles, settings, pins and votes as a file (Manage Server)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await self.bot.in_library(interaction.guild_id, export_bytes, create=True)
        limit = interaction.guild.filesize_limit if interaction.guild is not None else 10 * 1024 * 1024
        name = self.bot.libraries.name_for(interaction.guild_id)
        if len(data) > limit:
            await interaction.followup.send(
                **fit(
                    content=f"The export is {len(data) / 1e6:.1f} MB, over Discord's {limit / 1e6:.0f} MB "
                    f"upload limit. The bot's operator can make it with: "
                    f"`citebot export --library {name} {name}.jsonl`",
                    ephemeral=True,
                )
            )
            return
        await interaction.followup.send(
            content=f"This server's library ({len(data) / 1e6:.2f} MB). Import it with `citebot import`.",
            file=discord.File(io.BytesIO(data), filename=f"{name}.jsonl"),
            ephemeral=True,
        )

    # ------------------------------------------------------------------ /privacy

    @app_commands.command(name="privacy")
    @app_commands.guild_only()
    @app_commands.check(guild_only_check)
    async def privacy(self, interaction: discord.Interaction[Citebot]) -> None:
        """What this server's citebot keeps about you, and a button to delete it."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await self.bot.in_library(
            interaction.guild_id, Library.member_data, str(interaction.user.id), create=True
        )
        settings = await self.bot.server_settings(interaction.guild_id)
        view = discord.ui.View(timeout=None)
        if data.questions or data.votes:
            view.add_item(EraseButton(interaction.user.id))
        await interaction.followup.send(
            **fit(
                content=privacy_text(data, settings.retention_days),
                ephemeral=True,
                **({"view": view} if view.children else {}),
            )
        )

    # ------------------------------------------------------------------ leaving and housekeeping

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot was removed: keep the library for the grace period, then delete it."""
        await self._run_store(community.mark_left, guild.id)
        log.info(
            "guild %s removed the bot; its library is kept for %d days",
            guild.id,
            self.bot.settings.leave_grace_days,
        )

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        """Added (back): a library waiting out its grace period is kept."""
        if await self._run_store(community.clear_left, guild.id):
            log.info("guild %s added the bot back; its library is restored", guild.id)

    async def _run_store(self, work: Any, guild_id: int) -> Any:
        store, name = self.bot.store, self.bot.libraries.name_for(guild_id)
        if name not in await asyncio.get_running_loop().run_in_executor(self.bot.lookups, store.libraries):
            return None
        return await asyncio.get_running_loop().run_in_executor(self.bot.lookups, work, store, name)

    async def _schedule(self) -> None:
        await self.bot.wait_until_ready()
        while not self.bot.is_closed():
            if self.bot.syncs_commands:  # one process of a sharded bot does the housekeeping
                try:
                    await self.sweep()
                except Exception:
                    log.exception("housekeeping failed")
            await asyncio.sleep(SWEEP_INTERVAL)

    async def sweep(self) -> list[str]:
        """Delete the libraries of servers that left more than the grace period ago, and the
        questions past each server's retention; the names of the deleted libraries."""
        bot = self.bot
        grace = bot.settings.leave_grace_days
        loop = asyncio.get_running_loop()
        names = [
            n
            for n in await loop.run_in_executor(bot.lookups, bot.store.libraries)
            if re.fullmatch(r"guild-\d{1,20}", n)
        ]
        expired = await loop.run_in_executor(
            bot.lookups, community.expired_libraries, bot.store, names, grace
        )
        for name in expired:
            guild_id = int(name.removeprefix("guild-"))
            if bot.get_guild(guild_id) is not None:
                continue  # it came back while this process missed the event
            await loop.run_in_executor(bot.lookups, bot.store.drop, name)
            log.info("deleted library %s: its server removed the bot over %d days ago", name, grace)
        for name in names:
            if name in expired:
                continue
            library = bot.libraries.get(int(name.removeprefix("guild-")))

            def purge(library: Library = library) -> int:
                days = library.settings().retention_days
                return community.purge_questions(library.store, library.name, days or 0)

            await loop.run_in_executor(bot.lookups, purge)
        return expired


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Community(bot))
