"""Asking: /ask, the "Ask citebot" message menu, mentions, reply follow-ups, and answer buttons.

Each answer gets an id (the snowflake of the interaction or message that asked). What its
buttons need (the question, the passages that matched, the highlight) is kept in the library's
cache under that id, and the buttons' custom ids carry only the id, so they keep working after
a restart. A button reads the library of the server it is clicked in, so an id from another
server finds nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from embeddings import Answer, Feedback, Hit, Library, clean_question

from .. import render
from ..client import Citebot, UserError, cooldown_check, explain, report_error

log = logging.getLogger(__name__)

ANSWER_KIND = "answer"
"""Store cache kind of answer records."""
VOTE_KIND = "vote"
"""Store cache kind of "this user already voted on this answer" markers."""
OTHER_SOURCES = 3
GONE = (
    "That answer is no longer available: its article was changed or removed from the library. "
    "Ask again to get a fresh one."
)
_ANSWER_ID = re.compile(r"^citebot:(?:full|more|vote):(\d{1,20})(?::|$)")
_vote_lock = threading.Lock()  # check-then-write of a vote, across worker threads


# ---------------------------------------------------------------------- answer records


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """What an answer's buttons need, stored as JSON in the library's cache."""

    question: str
    article_id: str
    passage_ids: tuple[int, ...]
    scores: tuple[float, ...]
    highlight: tuple[int, int] | None
    sentence: str | None
    confidence: float

    @classmethod
    def of(cls, answer: Answer) -> AnswerRecord:
        """The record of an answered question."""
        assert answer.best is not None
        return cls(
            question=answer.question,
            article_id=answer.best.article.id,
            passage_ids=tuple(h.passage.id for h in answer.hits),
            scores=tuple(round(h.score, 6) for h in answer.hits),
            highlight=answer.highlight,
            sentence=answer.sentence,
            confidence=answer.confidence,
        )

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(
            {
                "q": self.question,
                "a": self.article_id,
                "p": list(self.passage_ids),
                "s": list(self.scores),
                "h": list(self.highlight) if self.highlight else None,
                "t": self.sentence,
                "c": self.confidence,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str) -> AnswerRecord:
        """Parse :meth:`to_json` output."""
        d = json.loads(raw)
        return cls(
            question=d["q"],
            article_id=d["a"],
            passage_ids=tuple(d["p"]),
            scores=tuple(d["s"]),
            highlight=tuple(d["h"]) if d["h"] else None,  # type: ignore[arg-type]
            sentence=d["t"],
            confidence=d["c"],
        )


# These run in worker threads (Citebot.in_library): they block on the model and the store.


def ask_and_record(
    library: Library, question: str, answer_id: int, previous_id: int | None = None
) -> tuple[Answer, str | None]:
    """Answer ``question``; a follow-up (``previous_id``) first searches the previous answer's article.

    Returns the answer and a note for the user (or None). An answered question is recorded
    under ``answer_id`` for its buttons.
    """
    note = None
    answer = None
    previous = load_record(library, previous_id) if previous_id is not None else None
    if previous is not None:
        within = library.ask(question, article_ids=[previous.article_id])
        if within.answered:
            answer = within
            note = "Follow-up: searched the article of the previous answer."
        else:
            note = "Follow-up: the previous answer's article doesn't cover this, so I searched the whole library."
    if answer is None:
        answer = library.ask(question)
    if answer.best is not None:
        library.store.put_cached(
            library.name,
            ANSWER_KIND,
            str(answer_id),
            answer.best.article.id,
            AnswerRecord.of(answer).to_json(),
        )
    return answer, note


def load_record(library: Library, answer_id: int) -> AnswerRecord | None:
    """The stored record of an answer in this library, or None."""
    raw = library.store.get_cached(library.name, ANSWER_KIND, str(answer_id))
    return AnswerRecord.from_json(raw) if raw else None


def record_hits(library: Library, answer_id: int) -> tuple[AnswerRecord, list[Hit]]:
    """An answer's record and its passages as hits, in their original order.

    Raises :class:`UserError` when the answer is unknown in this library (another server's
    answer, or its article was changed or removed).
    """
    record = load_record(library, answer_id)
    if record is None:
        raise UserError(GONE)
    passages = {p.id: p for p in library.store.passages(library.name, list(record.passage_ids))}
    hits: list[Hit] = []
    infos: dict[str, Any] = {}
    for rank, (pid, score) in enumerate(zip(record.passage_ids, record.scores, strict=True), start=1):
        passage = passages.get(pid)
        if passage is None:
            continue
        if passage.article_id not in infos:
            article = library.store.get_article(library.name, passage.article_id)
            infos[passage.article_id] = article.info if article else None
        info = infos[passage.article_id]
        if info is not None:
            hits.append(Hit(passage=passage, article=info, score=score, rank=rank))
    if not hits or hits[0].passage.id != record.passage_ids[0]:
        raise UserError(GONE)
    return record, hits


def record_vote(library: Library, answer_id: int, user_id: int, vote: int, guild_id: int | None) -> bool:
    """Store a 👍/👎 with the question and answer; False if this user already voted on it."""
    record, hits = record_hits(library, answer_id)
    key = f"{answer_id}:{user_id}"
    with _vote_lock:
        if library.store.get_cached(library.name, VOTE_KIND, key) is not None:
            return False
        library.store.add_feedback(
            library.name,
            Feedback(
                question=record.question,
                answer_passage_id=record.passage_ids[0],
                article_id=record.article_id,
                vote=vote,
                user=str(user_id),
                extra={
                    "answer_id": str(answer_id),
                    "sentence": record.sentence or "",
                    "title": hits[0].article.title,
                    "paragraph": str(hits[0].passage.paragraph),
                    "guild": str(guild_id or ""),
                },
            ),
        )
        library.store.put_cached(library.name, VOTE_KIND, key, record.article_id, str(vote))
    return True


# ---------------------------------------------------------------------- buttons


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
        super().__init__(  # type: ignore[call-arg]
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

    async def callback(self, interaction: discord.Interaction[Citebot]) -> None:  # type: ignore[override]
        try:
            await self.clicked(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def clicked(self, interaction: discord.Interaction[Citebot]) -> None:
        raise NotImplementedError


class FullPassageButton(
    _Answers, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:full:(?P<id>\d{1,20})"
):
    """Shows the whole passage behind an answer, to the clicker only."""

    ACTION, LABEL, EMOJI = "full", "Full passage", "📄"

    async def clicked(self, interaction: discord.Interaction[Citebot]) -> None:
        """Reply with the passage, ephemerally."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        record, hits = await interaction.client.in_library(interaction.guild_id, record_hits, self.answer_id)
        await interaction.followup.send(embed=render.passage_embed(hits[0], record.highlight), ephemeral=True)


class OtherSourcesButton(
    _Answers, discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"citebot:more:(?P<id>\d{1,20})"
):
    """Shows the next passages that matched the question."""

    ACTION, LABEL, EMOJI = "more", "Other sources", "📚"

    async def clicked(self, interaction: discord.Interaction[Citebot]) -> None:
        """Reply with up to three more passages, ephemerally."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, hits = await interaction.client.in_library(interaction.guild_id, record_hits, self.answer_id)
        await interaction.followup.send(
            embed=render.sources_embed(hits[1 : 1 + OTHER_SOURCES]), ephemeral=True
        )


class VoteButton(
    _Answers,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"citebot:vote:(?P<id>\d{1,20}):(?P<vote>up|down)",
):
    """👍 or 👎: stored with the question and the answer (see ``citebot feedback``)."""

    def __init__(self, answer_id: int, up: bool) -> None:  # type: ignore[override]
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

    async def clicked(self, interaction: discord.Interaction[Citebot]) -> None:
        """Store the vote once per user and answer; thank the user privately."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        stored = await interaction.client.in_library(
            interaction.guild_id,
            record_vote,
            self.answer_id,
            interaction.user.id,
            1 if self.up else -1,
            interaction.guild_id,
        )
        if stored:
            text = f"Thanks! Your {'👍' if self.up else '👎'} is noted; it helps improve the answers."
        else:
            text = "You already rated this answer; thanks!"
        await interaction.followup.send(text, ephemeral=True)


ANSWER_ITEMS = (FullPassageButton, OtherSourcesButton, VoteButton)


def answer_view(answer_id: int) -> discord.ui.View:
    """The buttons under an answer; they carry only the answer id."""
    view = discord.ui.View(timeout=None)
    view.add_item(FullPassageButton(answer_id))
    view.add_item(OtherSourcesButton(answer_id))
    view.add_item(VoteButton(answer_id, up=True))
    view.add_item(VoteButton(answer_id, up=False))
    return view


def answer_message(answer: Answer, answer_id: int, note: str | None = None) -> dict[str, Any]:
    """Keyword arguments of the message that carries an answer (or the refusal)."""
    if answer.best is None:
        return {"content": render.not_found_text(answer, note=note)}
    return {"embed": render.answer_embed(answer, note=note), "view": answer_view(answer_id)}


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

    async def _answer(self, interaction: discord.Interaction[Citebot], question: str, public: bool) -> None:
        await interaction.response.defer(thinking=True, ephemeral=not public)
        answer, note = await self.bot.in_library(
            interaction.guild_id, ask_and_record, question, interaction.id
        )
        await interaction.followup.send(**answer_message(answer, interaction.id, note), ephemeral=not public)

    @app_commands.command(name="ask")
    @app_commands.describe(
        question="What you want to know",
        public="Show the answer to everyone in the channel (default: only you)",
    )
    @app_commands.check(cooldown_check)
    async def ask(
        self,
        interaction: discord.Interaction[Citebot],
        question: app_commands.Range[str, 1, 1000],
        public: bool = False,
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

    def _question(self, message: discord.Message) -> str | None:
        """The question in a message addressed to the bot, or None if it isn't for the bot."""
        me = self.bot.user
        if me is None or message.author.bot:
            return None
        # A direct mention (not @everyone or a role), or any message in a DM.
        if message.guild is not None and not any(u.id == me.id for u in message.mentions):
            return None
        return re.sub(rf"<@!?{me.id}>", " ", message.content).strip()

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

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer a mention (or a DM); a reply to one of the bot's answers is a follow-up."""
        question = self._question(message)
        if question is None:
            return
        if (await self.bot.get_context(message)).valid:
            return  # an owner's text command such as "@citebot sync"
        try:
            if not question or question.lower() in ("help", "?"):
                await message.reply(
                    embed=render.help_embed(self.bot.command_summaries(), bot_name=self.bot.user.name),  # type: ignore[union-attr]
                    mention_author=False,
                )
                return
            hit = self.bot.ask_cooldown.hit(message.author.id)
            if hit is not None:
                text, _ = explain(app_commands.CommandOnCooldown(*hit))
                await message.reply(text, mention_author=False, delete_after=10)
                return
            previous = await self._previous_answer(message)
            async with message.channel.typing():
                answer, note = await self.bot.in_library(
                    message.guild.id if message.guild else None,
                    ask_and_record,
                    question,
                    message.id,
                    previous,
                )
            await message.reply(**answer_message(answer, message.id, note), mention_author=False)
        except Exception as exc:
            text, unexpected = explain(exc)
            if unexpected:
                log.error("unexpected error answering message %s", message.id, exc_info=exc)
            try:
                await message.reply(text, mention_author=False)
            except discord.HTTPException:
                log.warning("could not reply to message %s", message.id, exc_info=True)


async def setup(bot: Citebot) -> None:
    """Extension entry point."""
    await bot.add_cog(Ask(bot))
