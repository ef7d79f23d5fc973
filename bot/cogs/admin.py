"""Changing the library (Manage Server only): /ingest, /forget; and the owner's ``sync``."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import CitebotError, Document, FetchError, IngestReport, Library, load_bytes
from embeddings.articles import SUPPORTED_SUFFIXES
from embeddings.fetch import Fetcher

from .. import render
from ..client import Citebot, UserError, guild_only_check, manager_check, report_error
from ..limits import fit
from .articles import article_autocomplete

log = logging.getLogger(__name__)


_GENERIC_NAME = re.compile(r"^(message|untitled|unknown|file|document|paste|text)([-_ ]?\d+)?\.[a-z]+$", re.I)


def upload_key(filename: str, data: bytes) -> str:
    """The article key of an uploaded file.

    A real file name identifies the document, so uploading a changed file of that name replaces
    its earlier version. Names Discord or an editor makes up (every long paste is
    ``message.txt``) identify nothing: those uploads are keyed by their content, so two
    different pastes are two articles and the same paste again is unchanged.
    """
    if _GENERIC_NAME.match(filename):
        return f"upload:{filename}:{hashlib.sha256(data).hexdigest()[:16]}"
    return f"upload:{filename}"


def ingest_upload(library: Library, data: bytes, filename: str) -> IngestReport:
    """Worker-thread: parse an uploaded file and add its articles (keyed by :func:`upload_key`),
    within the server's quotas."""
    library.check_ingest_quota()
    report = library.ingest(load_bytes(data, name=filename, key=upload_key(filename, data)))
    library.record_usage(report)
    return report


def download(url: str, fetcher: Fetcher) -> list[Document | CitebotError]:
    """Download-thread: fetch a URL (guarded, capped, one deadline) and parse it into articles."""
    try:
        return list(fetcher.load(url))
    except FetchError as exc:
        return [exc]


def ingest_documents(library: Library, items: list[Document | CitebotError]) -> IngestReport:
    """Worker-thread: add downloaded articles (a failed download is reported as skipped),
    within the server's quotas."""
    library.check_ingest_quota()
    report = library.ingest(items)
    library.record_usage(report)
    return report


def _source_label(url: str) -> str:
    parts = urlsplit(url.strip().strip("<>"))
    return render.shorten((parts.hostname or "") + parts.path, 80) or "the link"


async def forget_and_report(interaction: discord.Interaction[Citebot], article_id: str) -> None:
    """Forget an article by its id (an exact reference), refresh autocomplete, say what went."""
    bot = interaction.client
    info = await bot.in_library(interaction.guild_id, Library.forget, article_id, write=True)
    log.info("guild %s: user %s forgot %s", interaction.guild_id, interaction.user.id, info.id)
    await bot.refresh_titles(interaction.guild_id)
    await interaction.followup.send(
        **fit(
            content=f"Removed “{render.escape(render.shorten(info.title, 200))}” "
            f"({info.passage_count} passages) from this server's library.",
            ephemeral=True,
        )
    )


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:forget:(?P<id>[0-9a-f-]{4,90})"
):
    """Confirms the removal of a close match of /forget; only Manage Server members may press it."""

    def __init__(self, article_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Remove it",
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=f"citebot:forget:{article_id}",
            )
        )
        self.article_id = article_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ForgetButton:
        """Rebuild from a clicked button."""
        return cls(match["id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Remove the article, if the clicker may."""
        try:
            if interaction.guild_id is None:
                raise UserError("This works only in a server.")
            await manager_check(interaction)
            await interaction.response.defer(ephemeral=True, thinking=True)
            await forget_and_report(interaction, self.article_id)
        except Exception as exc:
            await report_error(interaction, exc)


class Admin(commands.Cog):
    """Library management for moderators, and command sync for the bot's owner."""

    def __init__(self, bot: Citebot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        """Register the /forget confirmation button (it works after a restart too)."""
        self.bot.add_dynamic_items(ForgetButton)

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.remove_dynamic_items(ForgetButton)

    @app_commands.command(name="ingest")
    @app_commands.describe(
        file="A .txt, .md, .html, .jsonl or .pdf file to add",
        url="A link to a web page or text file to add",
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)  # innermost, so it runs first
    async def ingest(
        self,
        interaction: discord.Interaction[Citebot],
        file: discord.Attachment | None = None,
        url: str | None = None,
    ) -> None:
        """Add an article to this server's library from a file or a link (Manage Server)."""
        if (file is None) == (url is None):
            raise UserError("Give me either a file or a url (one of them, not both).")
        limit = self.bot.settings.fetch_max_bytes
        if file is not None:
            suffix = Path(file.filename).suffix.lower()
            if suffix not in SUPPORTED_SUFFIXES:
                raise UserError(
                    f"I can't read {suffix or 'files without an extension'}: upload a .txt, .md, .pdf, "
                    ".html or .jsonl file."
                )
            if file.size > limit:
                raise UserError(
                    f"{file.filename} is {file.size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB. "
                    "Split it into smaller files."
                )
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        # Over a quota, say so before a download or an upload is read.
        await self.bot.in_library(guild_id, Library.check_ingest_quota, create=True)
        if file is not None:
            data = await file.read()
            report = await self.bot.in_library(
                guild_id, ingest_upload, data, file.filename, create=True, write=True
            )
            source = file.filename
        else:
            assert url is not None
            # The download runs on its own pool, one per server at a time: a slow link never holds
            # a thread that answers questions, here or in another server.
            items = await self.bot.download(guild_id, download, url, self.bot.fetcher)
            if len(items) == 1 and isinstance(items[0], FetchError):
                raise items[0]
            report = await self.bot.in_library(guild_id, ingest_documents, items, create=True, write=True)
            source = _source_label(url)
        log.info(
            "guild %s: user %s ingested %s: %d added, %d replaced, %d skipped",
            guild_id,
            interaction.user.id,
            source,
            report.count("added"),
            report.count("replaced"),
            report.count("skipped"),
        )
        await self.bot.refresh_titles(guild_id)  # autocomplete shows the new titles at once
        await interaction.followup.send(**fit(embed=render.ingest_embed(report, source), ephemeral=True))

    @app_commands.command(name="forget")
    @app_commands.describe(article="The article to remove (start typing its title)")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(manager_check)
    @app_commands.check(guild_only_check)  # innermost, so it runs first
    @app_commands.autocomplete(article=article_autocomplete)
    async def forget(self, interaction: discord.Interaction[Citebot], article: str) -> None:
        """Remove an article from this server's library (Manage Server)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        info, exact = await self.bot.in_library(interaction.guild_id, Library.match, article)
        if not exact:
            # A close match (a typo, part of a title) is never deleted without asking.
            view = discord.ui.View(timeout=None)
            view.add_item(ForgetButton(info.id))
            await interaction.followup.send(
                **fit(
                    content=f"No article is called {render.escape(render.shorten(article, 200))!r}. "
                    f"Did you mean “{render.escape(render.shorten(info.title, 200))}” "
                    f"({info.passage_count} passages)? Press the button to remove it.",
                    view=view,
                    ephemeral=True,
                )
            )
            return
        await forget_and_report(interaction, info.id)

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(
        self, ctx: commands.Context[Citebot], scope: Literal["global", "here", "clear"] = "global"
    ) -> None:
        """Owner only, after an upgrade: ``@citebot sync`` (global), ``sync here``, ``sync clear``.

        ``here`` copies the commands to this server (instant); ``clear`` removes this server's
        copies again, leaving the global ones.
        """
        if scope != "global" and ctx.guild is None:
            await ctx.reply("`sync here` and `sync clear` work only in a server.")
            return
        if scope == "global":
            synced = await self.bot.tree.sync()
            await ctx.reply(f"Synced {len(synced)} global command(s).")
        elif scope == "here":
            synced = await self.bot.sync_commands(guild=ctx.guild)
            await ctx.reply(f"Synced {len(synced)} command(s) to this server.")
        else:
            self.bot.tree.clear_commands(guild=ctx.guild)
            await self.bot.tree.sync(guild=ctx.guild)
            await ctx.reply("Removed this server's copies of the commands; the global ones remain.")


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Admin(bot))
