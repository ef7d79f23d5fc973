"""Sources that stay fresh (Manage Server): /subscribe, /subscriptions, /unsubscribe, and the
background pass that syncs every server's subscriptions on a schedule.

The core (:mod:`embeddings.subscriptions`) does the work; this cog runs it off the event loop
(the feed or sitemap is read on the download pool, the pass itself in the server's write lane,
never in front of anybody's questions) and words the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import EmptyLibraryError, Library
from embeddings.fetch import Fetcher
from embeddings.subscriptions import (
    Subscription,
    SyncReport,
    discover,
    find_subscription,
    load_subscriptions,
    save_subscription,
    unsubscribe,
)

from .. import render
from ..client import Citebot, UserError, guild_only_check, manager_check, report_error
from ..config import Settings
from ..limits import fit
from ..services import sync_subscription

log = logging.getLogger(__name__)

LISTED = 8
"""Pages listed per kind of change in a report (the counts cover the rest)."""


def subscribe_new(
    library: Library, subscription: Subscription, fetcher: Fetcher, settings: Settings
) -> SyncReport | None:
    """Worker-thread: store a new subscription and run its first pass (None if it existed)."""
    if find_subscription(library, subscription.url) is not None:
        return None
    save_subscription(library, subscription)
    return sync_subscription(library, subscription, fetcher, settings)


def sync_all(library: Library, fetcher: Fetcher, settings: Settings) -> list[SyncReport]:
    """Worker-thread: one pass over every subscription of a library."""
    return [sync_subscription(library, sub, fetcher, settings) for sub in load_subscriptions(library)]


def url_token(url: str) -> str:
    """A short stand-in for a subscription's URL in a button's custom id (100 characters at most)."""
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def report_embed(report: SyncReport, kind: str) -> discord.Embed:
    """A sync pass: counts, then the pages that changed (cut to Discord's limits)."""
    counts = (
        f"{len(report.added)} added · {len(report.replaced)} replaced · {len(report.unchanged)} unchanged · "
        f"{len(report.forgotten)} forgotten · {len(report.failed)} failed"
        + (f" · {report.deferred} next time" if report.deferred else "")
    )
    embed = discord.Embed(
        title=render.shorten(f"Synced the {kind} {report.subscription}", render.EMBED_TITLE),
        description=counts,
        colour=render.COLOUR_HIGH if report.ok else render.COLOUR_MEDIUM,
    )
    for label, urls in (
        ("Added", report.added),
        ("Replaced", report.replaced),
        ("Forgotten", report.forgotten),
    ):
        if urls:
            lines = [render.plain(render.shorten(u, 180)) for u in urls[:LISTED]]
            more = f"\n… and {len(urls) - LISTED} more" if len(urls) > LISTED else ""
            embed.add_field(name=label, value=render.shorten("\n".join(lines) + more, 1000), inline=False)
    if report.failed:
        lines = [
            f"{render.plain(render.shorten(u, 120))}: {render.escape(render.shorten(reason, 200))}"
            for u, reason in report.failed[:LISTED]
        ]
        embed.add_field(name="Failed", value=render.shorten("\n".join(lines), 1000), inline=False)
    return embed


class UnsubscribeButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:unsub:(?P<token>[0-9a-f]{20})"
):
    """Confirms /unsubscribe, which forgets the subscription's articles (Manage Server only)."""

    def __init__(self, token: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Unsubscribe and forget its articles",
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=f"citebot:unsub:{token}",
            )
        )
        self.token = token

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> UnsubscribeButton:
        """Rebuild from a clicked button."""
        return cls(match["token"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Remove the subscription and its articles, if the clicker may."""
        try:
            if interaction.guild_id is None or not interaction.permissions.manage_guild:
                raise UserError("You need the Manage Server permission to remove subscriptions.")
            await interaction.response.defer(ephemeral=True, thinking=True)
            bot: Citebot = interaction.client

            def remove(library: Library) -> tuple[str, list[str]] | None:
                for sub in load_subscriptions(library):
                    if url_token(sub.url) == self.token:
                        return sub.url, unsubscribe(library, sub)
                return None

            done = await bot.in_library(interaction.guild_id, remove, write=True)
            if done is None:
                raise UserError("That subscription is already gone.")
            url, forgotten = done
            log.info("guild %s: user %s unsubscribed from %s", interaction.guild_id, interaction.user.id, url)
            await bot.refresh_titles(interaction.guild_id)
            await interaction.followup.send(
                **fit(
                    content=f"Unsubscribed from {render.plain(render.shorten(url, 300))} and forgot the "
                    f"{len(forgotten)} article(s) it had added.",
                    ephemeral=True,
                )
            )
        except Exception as exc:
            await report_error(interaction, exc)


class Subscriptions(commands.Cog):
    """Feeds and sitemaps a server follows, and the scheduled pass that keeps them fresh."""

    def __init__(self, bot: Citebot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        """Register the confirmation button and start the scheduled sync."""
        self.bot.add_dynamic_items(UnsubscribeButton)
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.remove_dynamic_items(UnsubscribeButton)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _schedule(self) -> None:
        """Every CITEBOT_SYNC_INTERVAL seconds, one pass over the subscriptions of this process's
        servers (a server belongs to one shard, so two processes never sync the same one)."""
        await self.bot.wait_until_ready()
        while not self.bot.is_closed():
            await asyncio.sleep(self.bot.settings.sync_interval)
            await self.sync_servers()

    async def sync_servers(self) -> None:
        """One pass over every server's subscriptions, one server after another."""
        for guild in list(self.bot.guilds):
            try:
                reports = await self.bot.in_library(
                    guild.id, sync_all, self.bot.fetcher, self.bot.settings, write=True
                )
            except EmptyLibraryError:
                continue  # a server without a library follows nothing
            except Exception:  # one server's trouble never stops the others' pass
                log.exception("guild %s: the scheduled sync failed", guild.id)
                continue
            for r in reports:
                log.info(
                    "guild %s: synced %s: %d added, %d replaced, %d forgotten, %d failed",
                    guild.id,
                    r.subscription,
                    len(r.added),
                    len(r.replaced),
                    len(r.forgotten),
                    len(r.failed),
                )
            if any(r.added or r.replaced or r.forgotten for r in reports):
                await self.bot.refresh_titles(guild.id)

    @app_commands.command(name="subscribe")
    @app_commands.describe(url="A feed (RSS/Atom), a sitemap, or a site whose page links its feed")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)
    async def subscribe(self, interaction: discord.Interaction[Citebot], url: str) -> None:
        """Follow a feed or sitemap: add what it lists now, and keep it current (Manage Server)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        bot = self.bot
        sub = await bot.download(guild_id, discover, bot.fetcher, url)
        report = await bot.in_library(
            guild_id, subscribe_new, sub, bot.fetcher, bot.settings, create=True, write=True
        )
        if report is None:
            raise UserError(f"This server already follows {render.plain(render.shorten(sub.url, 300))}.")
        log.info("guild %s: user %s subscribed to %s", guild_id, interaction.user.id, sub.url)
        await bot.refresh_titles(guild_id)
        await interaction.followup.send(**fit(embed=report_embed(report, sub.kind), ephemeral=True))

    @app_commands.command(name="subscriptions")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)
    async def subscriptions(self, interaction: discord.Interaction[Citebot]) -> None:
        """The feeds and sitemaps this server follows (Manage Server)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            subs = await self.bot.in_library(interaction.guild_id, load_subscriptions)
        except EmptyLibraryError:
            subs = []
        if not subs:
            await interaction.followup.send(
                "This server follows no feed or sitemap. Add one with /subscribe.", ephemeral=True
            )
            return
        lines = []
        for s in subs:
            state = f"synced {s.last_sync[:16].replace('T', ' ')} UTC" if s.last_sync else "never synced"
            error = f" ⚠️ {render.escape(render.shorten(s.last_error, 150))}" if s.last_error else ""
            lines.append(
                f"• {s.kind} {render.plain(render.shorten(s.url, 200))} · {len(s.pages)} pages · {state}{error}"
            )
        embed = discord.Embed(
            title="Subscriptions",
            description=render.shorten("\n".join(lines), 4000),
            colour=render.COLOUR_INFO,
        )
        await interaction.followup.send(**fit(embed=embed, ephemeral=True))

    @app_commands.command(name="unsubscribe")
    @app_commands.describe(url="The feed or sitemap address, as /subscriptions shows it")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)
    async def unsubscribe_command(self, interaction: discord.Interaction[Citebot], url: str) -> None:
        """Stop following a feed or sitemap; its articles are forgotten after you confirm."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            sub = await self.bot.in_library(interaction.guild_id, find_subscription, url)
        except EmptyLibraryError:
            sub = None
        if sub is None:
            raise UserError("This server follows no such feed or sitemap; /subscriptions lists them.")
        view = discord.ui.View(timeout=None)
        view.add_item(UnsubscribeButton(url_token(sub.url)))
        await interaction.followup.send(
            **fit(
                content=f"Unsubscribe from {render.plain(render.shorten(sub.url, 300))}? Its "
                f"{len(sub.pages)} article(s) will be forgotten.",
                view=view,
                ephemeral=True,
            )
        )


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Subscriptions(bot))
