"""Reading the library: /articles (paginated), /summary, /help, and the article autocomplete."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import ArticleInfo, CitebotError, Library, Summary

from .. import render
from ..client import Citebot, UserError, report_error
from ..limits import fit, fit_choices

MAX_SUMMARY_SENTENCES = 10

log = logging.getLogger(__name__)


async def article_autocomplete(
    interaction: discord.Interaction[Citebot], current: str
) -> list[app_commands.Choice[str]]:
    """Titles of this server's articles matching what has been typed (at most 25).

    The choice's value is the article id, so the command gets an unambiguous reference. The
    titles come from memory (``Citebot.article_titles``): an autocomplete never waits behind
    questions in the worker pool, and Discord gives it only 3 seconds.
    """
    try:
        articles: list[ArticleInfo] = await interaction.client.article_titles(interaction.guild_id)
    except (UserError, CitebotError):
        return []  # an empty library has nothing to suggest
    except Exception:
        # Discord shows "Loading options failed" when an autocomplete sends nothing: answer empty.
        log.exception("autocomplete failed (guild %s)", interaction.guild_id)
        return []
    typed = " ".join(current.split()).casefold()
    newest_first = list(reversed(articles))
    if typed:
        starts = [a for a in newest_first if a.title.casefold().startswith(typed) or a.id.startswith(typed)]
        contains = [a for a in newest_first if typed in a.title.casefold() and a not in starts]
        matches = starts + contains
    else:
        matches = newest_first
    choices = []
    for a in matches[: render.CHOICES]:
        choices.append(app_commands.Choice(name=render.choice_label(a), value=a.id))
    return fit_choices(choices)


class PageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"citebot:articles:(?P<page>\d{1,6}):(?P<dir>prev|next)",
):
    """◀/▶ under /articles; the custom id holds the page it leads to."""

    def __init__(self, page: int, direction: str, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="Previous" if direction == "prev" else "Next",
                emoji="◀️" if direction == "prev" else "▶️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"citebot:articles:{max(0, page)}:{direction}",
                disabled=disabled,
            )
        )
        self.page = max(0, page)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        """Rebuild from a clicked button (also after a restart)."""
        return cls(int(match["page"]), match["dir"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Show the page this button leads to, in place."""
        try:
            await interaction.response.defer()  # an update of the message that holds the button
            articles = await interaction.client.in_library(interaction.guild_id, Library.articles)
            embed, view = articles_page(
                articles, self.page, interaction.client.libraries.label(interaction.guild_id)
            )
            await interaction.edit_original_response(**fit(embed=embed, view=view))
        except Exception as exc:
            await report_error(interaction, exc)


def articles_page(
    articles: list[ArticleInfo], page: int, label: str
) -> tuple[discord.Embed, discord.ui.View | None]:
    """One page of the article list and its ◀/▶ buttons (none when everything fits on one)."""
    pages = render.page_count(len(articles))
    page = max(0, min(page, pages - 1))
    embed = render.articles_embed(articles, page, title=label)
    if pages == 1:
        return embed, None
    view = discord.ui.View(timeout=None)
    view.add_item(PageButton(page - 1, "prev", disabled=page == 0))
    view.add_item(PageButton(page + 1, "next", disabled=page >= pages - 1))
    return embed, view


def summarize(library: Library, article: str, sentences: int) -> Summary:
    """Worker-thread call of the core summarizer."""
    return library.summarize(article, sentences)


class Articles(commands.Cog):
    """The library's contents."""

    def __init__(self, bot: Citebot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        """Register the page buttons (they survive restarts)."""
        self.bot.add_dynamic_items(PageButton)

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.remove_dynamic_items(PageButton)

    @app_commands.command(name="articles")
    async def articles(self, interaction: discord.Interaction[Citebot]) -> None:
        """List the articles in this server's library."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        infos = await self.bot.in_library(interaction.guild_id, Library.articles)
        embed, view = articles_page(infos, 0, self.bot.libraries.label(interaction.guild_id))
        if view is None:
            await interaction.followup.send(**fit(embed=embed, ephemeral=True))
        else:
            await interaction.followup.send(**fit(embed=embed, ephemeral=True, view=view))

    @app_commands.command(name="summary")
    @app_commands.describe(
        article="The article to summarise (start typing its title)",
        sentences=f"How many sentences (1 to {MAX_SUMMARY_SENTENCES}, default 3)",
    )
    @app_commands.autocomplete(article=article_autocomplete)
    async def summary(
        self,
        interaction: discord.Interaction[Citebot],
        article: str,
        sentences: app_commands.Range[int, 1, MAX_SUMMARY_SENTENCES] = 3,
    ) -> None:
        """Summarise an article in a few of its own sentences, each citing its paragraph."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await self.bot.in_library(interaction.guild_id, summarize, article, sentences)
        await interaction.followup.send(**fit(embed=render.summary_embed(result), ephemeral=True))

    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction[Citebot]) -> None:
        """How to use citebot: commands, mentions and follow-ups."""
        name = self.bot.user.name if self.bot.user else "citebot"
        await interaction.response.send_message(
            **fit(embed=render.help_embed(self.bot.command_summaries(), bot_name=name), ephemeral=True)
        )


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Articles(bot))
