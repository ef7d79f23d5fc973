"""Asking: /ask, the "Ask citebot" message menu, mentions, reply follow-ups, and answer buttons.

Each answer gets an id (the snowflake of the interaction or message that asked). The core
records what its buttons need under that id (:meth:`embeddings.Library.recorded`), and the
buttons' custom ids carry only the id, so they keep working after a restart. A button reads the
library of the server it is clicked in, so an id from another server finds nothing. Follow-ups
and votes are the core's rules too (:meth:`~embeddings.Library.follow_up`,
:meth:`~embeddings.Library.vote`): this cog only parses, calls and renders.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import replace
from typing import Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import Answer, Library, RecordedAnswer, clean_question
from embeddings.community import ServerSettings
from embeddings.library import VOTE_REASONS, is_small_talk

from .. import render
from ..client import (
    Citebot,
    UserError,
    cooldown_check,
    explain,
    manager_check,
    report_error,
    server_busy_text,
)
from ..limits import fit

log = logging.getLogger(__name__)

OTHER_SOURCES = 3
PRIVATE_NOTE = "You can't post messages in this channel, so this answer is shown only to you."
_ANSWER_ID = re.compile(r"^citebot:(?:full|more|vote):(\d{1,20})(?::|$)")


# ---------------------------------------------------------------------- buttons


def recorded(library: Library, answer_id: int) -> RecordedAnswer:
    """The recorded answer behind a button (runs in a worker thread)."""
    return library.recorded(str(answer_id))


class _Answers:
    """Shared by the answer buttons: run the click, and route any error to the one handler.

    A plain button names its ``ACTION`` (the custom id is ``citebot:<action>:<answer id>``),
    ``LABEL`` and ``EMOJI``; everything it needs later is looked up by the answer id, so it
    works after a restart.
    """

    answer_id: int
    ACTION = ""
    LABEL = ""
    EMOJI = ""

    def __init__(self, answer_id: int) -> None:
        # A mixin: the next class in the MRO is discord.ui.DynamicItem, which takes the button.
        cast(Any, super()).__init__(
            discord.ui.Button(
                label=self.LABEL,
                emoji=self.EMOJI,
                style=discord.ButtonStyle.secondary,
                custom_id=f"citebot:{self.ACTION}:{answer_id}",
            )
        )
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        """Rebuild from a clicked button (also after a restart)."""
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Run the click; any error goes to the one error handler."""
        try:
            await self.clicked(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """What the button does."""
        raise NotImplementedError


class FullPassageButton(
    _Answers, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:full:(?P<id>\d{1,20})"
):
    """Shows the whole passage behind an answer, to the clicker only."""

    ACTION, LABEL, EMOJI = "full", "Full passage", "📄"

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """Reply with the passage, ephemerally."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        answer = await interaction.client.in_library(interaction.guild_id, recorded, self.answer_id)
        await interaction.followup.send(
            **fit(embed=render.passage_embed(answer.best, answer.record.highlight), ephemeral=True)
        )


class OtherSourcesButton(
    _Answers, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:more:(?P<id>\d{1,20})"
):
    """Shows the next passages that matched the question."""

    ACTION, LABEL, EMOJI = "more", "Other sources", "📚"

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """Reply with up to three more passages, ephemerally."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        answer = await interaction.client.in_library(interaction.guild_id, recorded, self.answer_id)
        others = list(answer.hits[1 : 1 + OTHER_SOURCES])
        view = render.sources_view(others) or discord.ui.View(timeout=None)
        if others and interaction.guild_id is not None and await is_manager(interaction):
            # Moderators may make one of these the answer to questions like this one.
            for hit in others:
                view.add_item(PinButton(self.answer_id, hit.rank))
        await interaction.followup.send(
            **fit(
                embed=render.sources_embed(others),
                ephemeral=True,
                **({"view": view} if view.children else {}),
            )
        )


async def is_manager(interaction: discord.Interaction[Any]) -> bool:
    """Whether the member may change the library (Manage Server or the configured role)."""
    try:
        return await manager_check(interaction)
    except app_commands.MissingPermissions:
        return False


class PinButton(
    _Answers,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"citebot:pin:(?P<id>\d{1,20}):(?P<rank>\d{1,2})",
):
    """ "Use this passage" under one of "Other sources": pins it as the answer (moderators)."""

    def __init__(self, answer_id: int, rank: int) -> None:
        discord.ui.DynamicItem.__init__(
            self,
            discord.ui.Button(
                label=f"Use source {rank}",
                emoji="📌",
                style=discord.ButtonStyle.primary,
                custom_id=f"citebot:pin:{answer_id}:{rank}",
            ),
        )
        self.answer_id = answer_id
        self.rank = rank

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PinButton:
        """Rebuild from a clicked button."""
        return cls(int(match["id"]), int(match["rank"]))

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """Pin the passage, if the clicker may."""
        if interaction.guild_id is None:
            raise UserError("Pins belong to a server's library.")
        await manager_check(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        pin = await interaction.client.in_library(
            interaction.guild_id,
            Library.pin,
            str(self.answer_id),
            self.rank,
            str(interaction.user.id),
            write=True,
        )
        await interaction.followup.send(**fit(content=render.pinned_text(pin), ephemeral=True))


class VoteButton(
    _Answers,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"citebot:vote:(?P<id>\d{1,20}):(?P<vote>up|down)",
):
    """👍 or 👎: stored with the question and the answer (see ``citebot feedback``)."""

    def __init__(self, answer_id: int, up: bool) -> None:
        discord.ui.DynamicItem.__init__(
            self,
            discord.ui.Button(
                emoji="👍" if up else "👎",
                style=discord.ButtonStyle.secondary,
                custom_id=f"citebot:vote:{answer_id}:{'up' if up else 'down'}",
            ),
        )
        self.answer_id = answer_id
        self.up = up

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        """Rebuild from a clicked button."""
        return cls(int(match["id"]), match["vote"] == "up")

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """Store the vote once per user and answer; thank the user privately."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        stored = await interaction.client.in_library(
            interaction.guild_id,
            Library.vote,
            str(self.answer_id),
            str(interaction.user.id),
            self.up,
            {"guild": str(interaction.guild_id or "")},
        )
        if not stored:
            await interaction.followup.send(
                **fit(content="You already rated this answer; thanks!", ephemeral=True)
            )
            return
        if self.up:
            text = "Thanks! Your 👍 is noted; it helps improve the answers."
            await interaction.followup.send(**fit(content=text, ephemeral=True))
            return
        view = discord.ui.View(timeout=None)
        for reason in VOTE_REASONS:
            view.add_item(ReasonButton(self.answer_id, reason))
        text = "Your 👎 is noted. What was wrong? One click tells the moderators (optional)."
        await interaction.followup.send(**fit(content=text, view=view, ephemeral=True))


class ReasonButton(
    _Answers,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"citebot:why:(?P<id>\d{1,20}):(?P<reason>[a-z]{1,20})",
):
    """Why a 👎 was given: stored with the vote (see /gaps and ``citebot feedback``)."""

    def __init__(self, answer_id: int, reason: str) -> None:
        discord.ui.DynamicItem.__init__(
            self,
            discord.ui.Button(
                label=VOTE_REASONS.get(reason, reason).capitalize(),
                style=discord.ButtonStyle.secondary,
                custom_id=f"citebot:why:{answer_id}:{reason}",
            ),
        )
        self.answer_id = answer_id
        self.reason = reason

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReasonButton:
        """Rebuild from a clicked button."""
        return cls(int(match["id"]), match["reason"])

    async def clicked(self, interaction: discord.Interaction[Any]) -> None:
        """Store the reason with the clicker's vote and show it was counted."""
        if self.reason not in VOTE_REASONS:
            raise UserError("That button is out of date; vote again from the answer.")
        stored = await interaction.client.in_library(
            interaction.guild_id,
            Library.explain_vote,
            str(self.answer_id),
            str(interaction.user.id),
            self.reason,
        )
        text = (
            f"Your 👎 is counted, with the reason “{VOTE_REASONS[self.reason]}”. Thanks!"
            if stored
            else "I couldn't find your vote on that answer any more (its article may have changed)."
        )
        await interaction.response.edit_message(content=text, view=None)


ANSWER_ITEMS = (FullPassageButton, OtherSourcesButton, VoteButton, ReasonButton, PinButton)


def answer_view(answer_id: int, url: str | None = None) -> discord.ui.View:
    """The buttons under an answer; they carry only the answer id (and the article's checked link)."""
    view = discord.ui.View(timeout=None)
    view.add_item(FullPassageButton(answer_id))
    view.add_item(OtherSourcesButton(answer_id))
    view.add_item(VoteButton(answer_id, up=True))
    view.add_item(VoteButton(answer_id, up=False))
    link = render.link_button(url)
    if link is not None:
        view.add_item(link)
    return view


def answer_message(answer: Answer, answer_id: int) -> dict[str, Any]:
    """Keyword arguments of the message that carries an answer (or the refusal)."""
    if answer.best is None:
        return fit(content=render.not_found_text(answer))
    return fit(embed=render.answer_embed(answer), view=answer_view(answer_id, answer.best.article.url))


def answer_id_in(message: discord.Message) -> int | None:
    """The answer id carried by the buttons of one of the bot's answers."""
    for row in message.components:
        for child in getattr(row, "children", []):
            match = _ANSWER_ID.match(getattr(child, "custom_id", None) or "")
            if match:
                return int(match[1])
    return None


# ---------------------------------------------------------------------- the cog


class Ask(commands.Cog):
    """Answers questions from the server's library."""

    def __init__(self, bot: Citebot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Ask citebot", callback=self.ask_about_message)
        self.menu.add_check(cooldown_check)

    async def cog_load(self) -> None:
        """Register the message menu and the answer buttons."""
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(*ANSWER_ITEMS)

    async def cog_unload(self) -> None:
        """Undo :meth:`cog_load`."""
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        self.bot.remove_dynamic_items(*ANSWER_ITEMS)

    async def _answer(
        self, interaction: discord.Interaction[Citebot], question: str, public: bool | None
    ) -> None:
        if public is None:  # the server's default visibility (/config public_answers)
            public = bool((await self.bot.server_settings(interaction.guild_id)).public_answers)
        # A public answer is a message in the channel: only for members who may post there.
        refused = public and interaction.guild_id is not None and not interaction.permissions.send_messages
        public = public and not refused
        await interaction.response.defer(thinking=True, ephemeral=not public)
        answer = await self.bot.in_library(
            interaction.guild_id,
            Library.follow_up,
            question,
            None,
            record_as=str(interaction.id),
            asked_by=asked_by(interaction.guild_id, interaction.user.id),
        )
        if refused:
            answer = replace(answer, notes=(*answer.notes, PRIVATE_NOTE))
        await interaction.followup.send(**answer_message(answer, interaction.id), ephemeral=not public)

    @app_commands.command(name="ask")
    @app_commands.describe(
        question="What you want to know",
        public="Show the answer to everyone in the channel (default: the server's setting)",
    )
    @app_commands.check(cooldown_check)
    async def ask(
        self,
        interaction: discord.Interaction[Citebot],
        question: app_commands.Range[str, 1, 1000],
        public: bool | None = None,
    ) -> None:
        """Ask a question: I quote the passage that answers it and say where it comes from."""
        clean_question(question)  # an empty question fails before the defer, ephemerally
        await self._answer(interaction, question, public)

    async def ask_about_message(
        self, interaction: discord.Interaction[Citebot], message: discord.Message
    ) -> None:
        """The "Ask citebot" message menu: the message's text is the question."""
        text = message.content.strip()
        if not text:
            raise UserError("That message has no text I can use as a question.")
        await self._answer(interaction, text, public=False)

    # ------------------------------------------------------------------ mentions

    def _in_bot_thread(self, message: discord.Message) -> bool:
        """A thread the bot opened on a question (thread mode): no mention needed there."""
        me = self.bot.user
        channel = message.channel
        return me is not None and isinstance(channel, discord.Thread) and channel.owner_id == me.id

    def _question(self, message: discord.Message) -> str | None:
        """The question in a message addressed to the bot, or None if it isn't for the bot."""
        me = self.bot.user
        if me is None or message.author.bot:
            return None
        # A direct mention (not @everyone or a role), any message in a DM, or a message in a
        # thread the bot opened (its text is readable only with the message-content intent).
        mentioned = message.guild is None or any(u.id == me.id for u in message.mentions)
        if not mentioned and not self._in_bot_thread(message):
            return None
        question = re.sub(rf"<@!?{me.id}>", " ", message.content).strip()
        if not mentioned and not question:
            return None  # unreadable without the intent, or an image: not a question
        return question

    async def _previous_answer(self, message: discord.Message) -> int | None:
        """The answer id of the bot's message this one replies to, if any."""
        ref = message.reference
        me = self.bot.user
        if ref is None or ref.message_id is None or me is None:
            return None
        target = ref.resolved if isinstance(ref.resolved, discord.Message) else None
        if target is None:
            try:  # needs Read Message History
                target = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                return None
        return answer_id_in(target) if target.author.id == me.id else None

    @staticmethod
    def _allowed_here(message: discord.Message, settings: ServerSettings) -> bool:
        """Whether mentions are answered in this channel (or in threads of it)."""
        if message.guild is None or not settings.mention_channels:
            return True
        channel = message.channel
        parent = channel.parent_id if isinstance(channel, discord.Thread) else None
        return channel.id in settings.mention_channels or parent in settings.mention_channels

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer a mention (or a DM); a reply to one of the bot's answers is a follow-up, and
        so is any message in a thread the bot opened. In thread mode an answer opens a thread."""
        question = self._question(message)
        if question is None:
            return
        ctx = await self.bot.get_context(message)
        if ctx.valid and await self.bot.is_owner(message.author):
            return  # the owner's text command "@citebot sync"; for anyone else it is a question
        guild_id = message.guild.id if message.guild else None
        try:
            settings = await self.bot.server_settings(guild_id)
            if not self._allowed_here(message, settings):
                channels = ", ".join(f"<#{c}>" for c in (settings.mention_channels or ())[:5])
                await message.reply(
                    **fit(content=f"Here I answer mentions only in {channels}; /ask works in every channel."),
                    mention_author=False,
                    delete_after=15,
                )
                return
            if not question or question.lower() in ("help", "?"):
                me_name = self.bot.user.name if self.bot.user else "citebot"
                await message.reply(
                    **fit(embed=render.help_embed(self.bot.command_summaries(), bot_name=me_name)),
                    mention_author=False,
                )
                return
            if is_small_talk(question):
                # "thanks!" under an answer is not a question: acknowledge it, or stay quiet.
                with contextlib.suppress(discord.HTTPException):
                    await message.add_reaction("👍")
                return
            hit = self.bot.ask_cooldown.hit(message.author.id, settings.cooldown)
            if hit is not None:
                text, _ = explain(app_commands.CommandOnCooldown(*hit))
                await message.reply(**fit(content=text), mention_author=False, delete_after=10)
                return
            if guild_id is not None:
                wait = self.bot.server_rate.hit(guild_id, settings.questions_per_minute or 0)
                if wait is not None:
                    text = server_busy_text(settings.questions_per_minute or 0, wait)
                    await message.reply(**fit(content=text), mention_author=False, delete_after=15)
                    return
            in_thread = self._in_bot_thread(message)
            previous = await self._previous_answer(message)
            if previous is None and isinstance(message.channel, discord.Thread):
                # In a thread the bot answered in (its own, or a forum post it replied to), a
                # question follows up the latest answer there.
                previous = await self.bot.in_library(guild_id, thread_answer, message.channel.id)
            async with message.channel.typing():
                answer = await self.bot.in_library(
                    guild_id,
                    Library.follow_up,
                    question,
                    None if previous is None else str(previous),
                    record_as=str(message.id),
                    asked_by=asked_by(guild_id, message.author.id),
                )
            await self._send(message, answer, settings, in_thread)
        except Exception as exc:
            text, unexpected = explain(exc)
            if unexpected:
                log.error("unexpected error answering message %s", message.id, exc_info=exc)
            try:
                await message.reply(**fit(content=text), mention_author=False)
            except discord.HTTPException:
                log.warning("could not reply to message %s", message.id, exc_info=True)

    async def _send(
        self, message: discord.Message, answer: Answer, settings: ServerSettings, in_thread: bool
    ) -> None:
        """Reply in place, or (thread mode, in a channel) open a thread on the question."""
        guild_id = message.guild.id if message.guild else None
        body = answer_message(answer, message.id)
        thread: discord.Thread | None = None
        if settings.thread_mode and isinstance(message.channel, discord.TextChannel):
            try:
                thread = await message.create_thread(name=thread_name(answer.question))
            except discord.HTTPException:
                # No Create Public Threads permission here (or the message is gone): answer in place.
                log.info("could not open a thread on message %s", message.id, exc_info=True)
        if thread is not None:
            await thread.send(**body)
        else:
            await message.reply(**body, mention_author=False)
        where = thread.id if thread is not None else (message.channel.id if in_thread else None)
        if where is not None and answer.best is not None:
            # The thread's next message is a follow-up of this answer.
            await self.bot.in_library(guild_id, remember_thread, where, message.id)


def asked_by(guild_id: int | None, user_id: int) -> str | None:
    """Whose question to log for the gap report: members of a server (DMs are not logged)."""
    return str(user_id) if guild_id is not None else None


def thread_name(question: str) -> str:
    """A thread's name from its question (Discord allows 1-100 characters)."""
    return render.shorten(" ".join(question.split()), 90) or "Question"


def remember_thread(library: Library, thread_id: int, answer_id: int) -> None:
    """Worker-thread: the latest answer in a thread the bot answers in."""
    library.remember_conversation(str(thread_id), str(answer_id))


def thread_answer(library: Library, thread_id: int) -> int | None:
    """Worker-thread: the latest answer in a thread, for a follow-up without a reply."""
    found = library.latest_answer(str(thread_id))
    return int(found) if found is not None and found.isdigit() else None


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Ask(bot))
