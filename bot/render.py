"""Core results -> Discord messages, always within Discord's limits. Pure: no I/O, no state.

Everything that comes from an article (text, title, byline, date, URL) is untrusted. It reaches
Discord only through :func:`escape` (Markdown text) or :func:`plain` (footers and author names,
which Discord shows as written): Markdown is escaped, and mention syntax (``<@id>``, ``<@&id>``,
``<#id>``, ``@everyone``, ``@here``) and link schemes (``https://``) are broken with an invisible
zero-width space, so nothing from an article becomes a pill or a link the bot did not write.
An article's URL is shown only as an embed's or a link button's target, after :func:`safe_url`
checked it, never inside ``[text](url)``. Mentions could not ping anyone anyway: the client
sends every message with ``AllowedMentions.none()``. Sizes are kept by :mod:`bot.limits`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import discord
from discord.utils import escape_markdown

from embeddings import Answer, ArticleInfo, Citation, Hit, IngestReport, Passage, Summary, split_sentences
from embeddings.community import Pin
from embeddings.library import short_ids

# Discord's limits, kept in one place (bot/limits.py, which also enforces them on every send).
from .limits import (  # noqa: F401  (CHOICES, CUSTOM_ID: read by the cogs and tests as render.X)
    CHOICE_NAME,
    CHOICES,
    CUSTOM_ID,
    EMBED_AUTHOR,
    EMBED_DESCRIPTION,
    EMBED_FIELD_NAME,
    EMBED_FIELD_VALUE,
    EMBED_FIELDS,
    EMBED_FOOTER,
    EMBED_TITLE,
    EMBED_TOTAL,
    problems,
)
from .limits import CONTENT as CONTENT_LIMIT
from .limits import URL as URL_LIMIT  # noqa: F401

ANSWER_BUDGET = 1200
"""Characters of a passage shown in an answer; "Full passage" shows all of it."""
SOURCE_BUDGET = 400
"""Characters of each passage under "Other sources"."""
PAGE_SIZE = 10
"""Articles per page of /articles."""
ELLIPSIS = "…"

COLOUR_HIGH = discord.Colour.green()
COLOUR_MEDIUM = discord.Colour.gold()
COLOUR_LOW = discord.Colour.orange()
COLOUR_INFO = discord.Colour.blurple()

NOT_FOUND = "I couldn't find this in the library."


# ---------------------------------------------------------------------- text helpers


def shorten(text: str, limit: int) -> str:
    """``text`` whole if it fits, else cut at a word boundary and ended with "…"."""
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + ELLIPSIS


ZWSP = "\u200b"
_FENCE = re.compile(r"`{3,}")
# Mention and channel syntax (<@id>, <@!id>, <@&id>, <#id>, </command:id>, custom emoji, timestamps)
_ANGLE = re.compile(r"<(?=[@#/:at]|a:)", re.IGNORECASE)
_EVERYONE = re.compile(r"@(?=everyone|here)", re.IGNORECASE)
_SCHEME = re.compile(r"(?<=:)(?=//)")  # "https://x" becomes "https:\u200b//x": no longer a link
_BRACKET = re.compile(r"(?<!\\)\[")
_INVITE = re.compile(r"(?<=discord)(?=\.gg/)|(?<=discord)(?=\.com/invite)", re.IGNORECASE)

URL_CAP = 512
"""Longest article URL the bot links to; a longer one is shown nowhere rather than cut."""


def plain(text: str) -> str:
    """Untrusted text for places Discord shows as written (footer, author): mentions and links defused."""
    text = _ANGLE.sub("<" + ZWSP, text)
    text = _EVERYONE.sub("@" + ZWSP, text)
    text = _SCHEME.sub(ZWSP, text)
    return _INVITE.sub(ZWSP, text)


def escape(text: str) -> str:
    """Untrusted text for Markdown: escaped so it shows as written, mentions and links defused.

    The one escaping function of the bot: every article-derived string that reaches a message
    or an embed's Markdown goes through it.
    """
    escaped = escape_markdown(text, ignore_links=False)
    # escape_markdown escapes a masked link only when "[text](url)" is whole in one call; text is
    # escaped in pieces around the bold sentence, so escape every "[" that is not escaped yet.
    return plain(_BRACKET.sub(r"\\[", escaped))


def safe_url(url: str | None) -> str | None:
    """A well-formed http(s) article URL, percent-encoded, or None.

    Refused: other schemes, whitespace or control characters, a user name or password in the
    address (``https://discord.com@evil.example``), no host, and anything over
    :data:`URL_CAP` characters.
    """
    if not url or len(url) > URL_CAP or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host or "@" in parts.netloc:
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    netloc = host if port is None else f"{host}:{port}"
    keep = "/%:@!$&'()*+,;=-._~"
    encoded = urlunsplit(
        (
            parts.scheme.lower(),
            netloc,
            quote(parts.path, safe=keep),
            quote(parts.query, safe=keep + "?"),
            quote(parts.fragment, safe=keep + "?"),
        )
    )
    return encoded if len(encoded) <= URL_CAP else None


def _web_url(url: str | None) -> str | None:
    """``url`` if it may be a link target (:func:`safe_url`), else None."""
    return safe_url(url)


def link_button(
    url: str | None, label: str = "Open the article"
) -> discord.ui.Button[discord.ui.View] | None:
    """A link button to an article's checked URL, or None when it has no usable one."""
    link = safe_url(url)
    if link is None:
        return None
    return discord.ui.Button(style=discord.ButtonStyle.link, label=label, url=link, emoji="🔗")


@dataclass(frozen=True, slots=True)
class Excerpt:
    """A passage shown within a budget: the Markdown text and whether anything was left out."""

    text: str
    cut: bool


def excerpt(text: str, limit: int, highlight: tuple[int, int] | None = None) -> Excerpt:
    """``text`` escaped, with ``highlight`` in bold, cut on sentence boundaries to ``limit``.

    The highlighted sentence is always kept; sentences around it are added, the next one
    first, while they fit. A cut is marked with "…" at that end. A single sentence too long
    for ``limit`` is cut at a word boundary.
    """
    spans = split_sentences(text) or [(0, len(text))]
    if highlight is not None:
        a, b = highlight
        keep = [i for i, (s, e) in enumerate(spans) if s < b and e > a] or [0]
    else:
        keep = [0]
    lo, hi = keep[0], keep[-1]

    def render(lo: int, hi: int) -> str:
        start, end = spans[lo][0], spans[hi][1]
        if highlight is not None:
            a, b = max(highlight[0], start), min(highlight[1], end)
        else:
            a = b = start
        body = escape(text[start:a]) + (f"**{escape(text[a:b])}**" if b > a else "") + escape(text[b:end])
        return (ELLIPSIS + " " if lo > 0 else "") + body + (" " + ELLIPSIS if hi < len(spans) - 1 else "")

    shown = render(lo, hi)
    if len(shown) > limit:
        # Even the highlighted sentence alone is too long: show its start, cut at a word.
        start = spans[lo][0] if highlight is None else max(spans[lo][0], highlight[0])
        end = spans[hi][1] if highlight is None else min(spans[hi][1], highlight[1])
        return Excerpt(_fit(text[start:end], limit, bold=highlight is not None, lead=start > 0), True)
    grow_after = True
    while lo > 0 or hi < len(spans) - 1:
        options = [(lo, hi + 1), (lo - 1, hi)] if grow_after else [(lo - 1, hi), (lo, hi + 1)]
        for nlo, nhi in options:
            if nlo < 0 or nhi >= len(spans):
                continue
            candidate = render(nlo, nhi)
            if len(candidate) <= limit:
                lo, hi, shown = nlo, nhi, candidate
                break
        else:
            break
        grow_after = not grow_after
    return Excerpt(shown, lo > 0 or hi < len(spans) - 1)


def code_excerpt(text: str, limit: int) -> Excerpt:
    """A code passage as a fenced block within ``limit`` characters, cut between lines.

    Code is shown as written (no escaping, no bold: nothing inside a fence is Markdown); a
    fence inside it (any run of three or more backticks) is broken with zero-width spaces between
    its backticks, so no three stay together to close the block early.
    """
    body = _FENCE.sub(lambda m: ZWSP.join(m.group()), text)
    room = limit - len("```\n\n```") - len(ELLIPSIS) - 1
    cut = False
    if len(body) > room:
        cut = True
        body = body[: max(0, room)]
        if "\n" in body:
            body = body[: body.rfind("\n")]
    return Excerpt(f"```\n{body}\n```" + (f"\n{ELLIPSIS}" if cut else ""), cut)


def passage_excerpt(passage: Passage, limit: int, highlight: tuple[int, int] | None = None) -> Excerpt:
    """A passage within ``limit``: code as a code block, prose as :func:`excerpt` shows it."""
    if passage.is_code:
        return code_excerpt(passage.text, limit)
    return excerpt(passage.text, limit, highlight)


def _fit(raw: str, limit: int, *, bold: bool, lead: bool) -> str:
    """The start of ``raw``, escaped (and bold), in at most ``limit`` characters."""
    n = limit
    while n > 1:
        piece = escape(shorten(raw, n))
        out = (ELLIPSIS + " " if lead else "") + (f"**{piece}**" if bold else piece)
        if len(out) <= limit:
            return out
        n -= max(1, len(out) - limit)  # escaping lengthens the text; try a shorter cut
    return ELLIPSIS


def citation_footer(citation: Citation) -> str:
    """Byline, date, section and paragraph: the part of a citation that goes below the passage."""
    parts = []
    if citation.byline:
        parts.append(f"by {shorten(citation.byline, 300)}")
    if citation.date:
        parts.append(shorten(citation.date, 60))
    parts.append(citation.place)
    return plain(shorten(" · ".join(parts), EMBED_FOOTER - 100))


def confidence_label(confidence: float) -> str:
    """A five-step bar, the number and a word: how sure the answer is."""
    filled = max(0, min(5, round(confidence * 5)))
    word = "high" if confidence >= 0.7 else "medium" if confidence >= 0.5 else "low"
    return f"{'▰' * filled}{'▱' * (5 - filled)} {confidence:.2f} ({word})"


def _colour(confidence: float) -> discord.Colour:
    return COLOUR_HIGH if confidence >= 0.7 else COLOUR_MEDIUM if confidence >= 0.5 else COLOUR_LOW


def _author(embed: discord.Embed, title: str, url: str | None) -> None:
    embed.set_author(name=plain(shorten(title, EMBED_AUTHOR - 20)), url=_web_url(url))


# ---------------------------------------------------------------------- answers


def answer_embed(answer: Answer, *, budget: int = ANSWER_BUDGET, note: str | None = None) -> discord.Embed:
    """The answer: passage with its best sentence in bold, the citation, a confidence bar."""
    best = answer.best
    if best is None:
        raise ValueError("answer_embed needs an answered question; use not_found_text")
    shown = passage_excerpt(best.passage, min(budget, EMBED_DESCRIPTION), answer.highlight)
    embed = discord.Embed(
        title=shorten(escape(answer.question), EMBED_TITLE),
        description=shown.text,
        colour=_colour(answer.confidence),
    )
    citation = best.citation
    _author(embed, citation.title, citation.url)
    embed.set_footer(text=citation_footer(citation))
    embed.add_field(name="Confidence", value=confidence_label(answer.confidence), inline=True)
    # The article's link is the author line's target and a link button (answer_view), never
    # Markdown: a crafted URL cannot render as a link text of its choosing.
    notes = [*answer.notes, *([note] if note else [])]
    if notes:
        embed.add_field(name="Note", value=shorten("\n".join(notes), EMBED_FIELD_VALUE), inline=False)
    return embed


def not_found_text(answer: Answer, *, note: str | None = None) -> str:
    """The refusal: no quote, only the titles of the closest articles."""
    lines = [NOT_FOUND]
    titles = list(dict.fromkeys(h.article.title for h in answer.hits))[:3]
    if titles:
        lines.append("Closest articles: " + "; ".join(f"“{escape(shorten(t, 120))}”" for t in titles))
    lines.extend(f"-# {escape(shorten(n, 300))}" for n in [*answer.notes, *([note] if note else [])])
    return shorten("\n".join(lines), CONTENT_LIMIT)


def passage_embed(hit: Hit, highlight: tuple[int, int] | None = None) -> discord.Embed:
    """The whole passage behind an answer (cut only past Discord's description limit)."""
    shown = passage_excerpt(hit.passage, EMBED_DESCRIPTION, highlight)
    embed = discord.Embed(description=shown.text, colour=COLOUR_INFO)
    _author(embed, hit.article.title, hit.article.url)
    embed.set_footer(text=citation_footer(hit.citation))
    return embed


def sources_embed(hits: Sequence[Hit], *, budget: int = SOURCE_BUDGET) -> discord.Embed:
    """ "Other sources": the next passages that matched, one field each."""
    embed = discord.Embed(title="Other sources", colour=COLOUR_INFO)
    if not hits:
        embed.description = "No other passage in the library matched this question."
        return embed
    for hit in hits[: EMBED_FIELDS - 1]:
        citation = hit.citation
        tail = f"\n— {escape(shorten(citation_footer(citation), 300))}"
        room = EMBED_FIELD_VALUE - len(tail)
        body = passage_excerpt(hit.passage, min(budget, room)).text
        name = shorten(f"{hit.rank}. {escape(citation.title)}", EMBED_FIELD_NAME)
        if len(embed) + len(name) + len(body) + len(tail) > EMBED_TOTAL:
            break
        embed.add_field(name=name, value=body + tail, inline=False)
    return embed


def choice_label(article: ArticleInfo) -> str:
    """An article as an autocomplete choice: its title and date, plain, at most 100 characters."""
    label = shorten(article.title, 80) + (f" ({shorten(article.date, 15)})" if article.date else "")
    return plain(label)[:CHOICE_NAME] or article.id


def sources_view(hits: Sequence[Hit]) -> discord.ui.View | None:
    """Link buttons to the articles of "Other sources" that have a usable URL (None if none)."""
    view = discord.ui.View(timeout=None)
    for hit in hits[: EMBED_FIELDS - 1]:
        button = link_button(hit.article.url, label=f"Source {hit.rank}")
        if button is not None and len(view.children) < 5:
            view.add_item(button)
    return view if view.children else None


# ---------------------------------------------------------------------- summaries and lists


def summary_embed(summary: Summary) -> discord.Embed:
    """An extractive summary: each sentence quoted with the paragraph it comes from."""
    info = summary.article
    embed = discord.Embed(colour=COLOUR_INFO)
    _author(embed, info.title, info.url)
    lines: list[str] = []
    used = 0
    left_out = 0
    for s in summary.sentences:
        line = f"• {escape(s.text)} ({escape(s.place)})"
        if len(line) > EMBED_DESCRIPTION // 2:
            line = f"• {escape(shorten(s.text, EMBED_DESCRIPTION // 2 - 20))} ({escape(s.place)})"
        if used + len(line) + 1 > EMBED_DESCRIPTION - 40:
            left_out += 1
            continue
        lines.append(line)
        used += len(line) + 1
    if left_out:
        lines.append(f"{ELLIPSIS} {left_out} more sentence(s) did not fit.")
    embed.description = "\n".join(lines) or "This article has no sentences to summarise."
    parts = [f"Summary: {len(summary.sentences)} sentence(s) quoted from the article"]
    if info.byline:
        parts.append(f"by {shorten(info.byline, 300)}")
    if info.date:
        parts.append(shorten(info.date, 60))
    embed.set_footer(text=plain(shorten(" · ".join(parts), EMBED_FOOTER - 100)))
    notes = list(summary.notes)
    if summary.whole:
        notes.insert(0, "The article is short: this is all of it.")
    if notes:
        embed.add_field(name="Note", value=shorten("\n".join(notes), EMBED_FIELD_VALUE), inline=False)
    return embed


def page_count(total: int, page_size: int = PAGE_SIZE) -> int:
    """Pages needed for ``total`` items (at least one)."""
    return max(1, -(-total // page_size))


def articles_embed(
    articles: Sequence[ArticleInfo], page: int, *, title: str, page_size: int = PAGE_SIZE
) -> discord.Embed:
    """One page of a library's article list; ``page`` is 0-based and clamped."""
    pages = page_count(len(articles), page_size)
    page = max(0, min(page, pages - 1))
    embed = discord.Embed(title=shorten(title, EMBED_TITLE), colour=COLOUR_INFO)
    lines = []
    shown = short_ids([a.id for a in articles])
    for n, a in enumerate(articles[page * page_size : (page + 1) * page_size], start=page * page_size + 1):
        name = escape(shorten(a.title, 200))
        head = f"{n}. **{name}**"
        meta = [f"`{shown[a.id]}`"]
        if a.byline:
            meta.append(f"by {escape(shorten(a.byline, 80))}")
        if a.date:
            meta.append(escape(shorten(a.date, 40)))
        meta.append(f"{a.passage_count} passage(s)")
        lines.append(f"{head}\n{' · '.join(meta)}")
    embed.description = shorten("\n".join(lines), EMBED_DESCRIPTION) if lines else "No articles yet."
    embed.set_footer(text=f"Page {page + 1} of {pages} · {len(articles)} article(s)")
    return embed


_STATUS = {
    "added": "✅ Added",
    "replaced": "🔁 Updated",
    "unchanged": "➖ Already here",
    "skipped": "⚠️ Skipped",
}


def ingest_embed(report: IngestReport, source: str) -> discord.Embed:
    """What an /ingest added, updated or skipped, and why."""
    new, updated = report.count("added"), report.count("replaced")
    added = new + updated
    ok = any(r.status != "skipped" for r in report.results)
    what = ", ".join(
        part for part in (f"added {new}" if new else "", f"updated {updated}" if updated else "") if part
    )
    embed = discord.Embed(
        title=shorten(
            f"{what[0].upper() + what[1:]} article(s) from {escape(shorten(source, 150))}"
            if added
            else f"Nothing new from {escape(shorten(source, 150))}",
            EMBED_TITLE,
        ),
        colour=COLOUR_HIGH if added else COLOUR_MEDIUM if ok else COLOUR_LOW,
    )
    lines = []
    for r in report.results:
        label = _STATUS.get(r.status, r.status)
        if r.article is not None:
            line = f"{label} “{escape(shorten(r.article.title, 150))}” ({r.article.passage_count} passages)"
            if r.reason:
                line += f": {escape(shorten(r.reason, 200))}"
        else:
            line = f"{label}: {escape(shorten(r.reason or 'no reason given', 300))}"
        lines.append(line)
    shown: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > EMBED_DESCRIPTION - 40:
            shown.append(f"{ELLIPSIS} and {len(lines) - i} more.")
            break
        shown.append(line)
        used += len(line) + 1
    embed.description = "\n".join(shown) or "The source held no articles."
    if report.dropped_pins:
        questions = "\n".join(f"• “{escape(shorten(q, 150))}”" for q in report.dropped_pins[:5])
        embed.add_field(
            name="Pins dropped: their passage changed",
            value=shorten(questions + "\nSee /pins; pin the new passage again if it still answers.", 1000),
            inline=False,
        )
    embed.set_footer(text=f"{report.passages_added} passage(s) embedded")
    return embed


def pinned_text(pin: Pin) -> str:
    """The confirmation of a new pin."""
    return shorten(
        f"📌 Pinned: questions like “{escape(shorten(pin.question, 200))}” now get ¶ {pin.paragraph} of "
        f"“{escape(shorten(pin.title, 150))}” first, marked as chosen by this server's moderators. "
        f"/pins lists and removes pins.",
        CONTENT_LIMIT,
    )


def help_embed(commands: Sequence[tuple[str, str]], *, bot_name: str) -> discord.Embed:
    """/help: every command with its description, and how mentions work."""
    embed = discord.Embed(
        title=shorten(f"{bot_name}: answers from this server's library, with the source", EMBED_TITLE),
        description=(
            "Ask a question and I quote the passage that answers it, with the best sentence in "
            "bold and where it comes from (article, author, date, paragraph). If the library "
            "doesn't cover it, I say so instead of guessing.\n\n"
            f"You can also mention me with a question (@{escape(bot_name)} who said …?), reply to "
            "one of my answers to ask a follow-up about the same article, or right-click a "
            "message → Apps → **Ask citebot**."
        ),
        colour=COLOUR_INFO,
    )
    for name, description in commands[: EMBED_FIELDS - 1]:
        embed.add_field(
            name=shorten(name, EMBED_FIELD_NAME), value=shorten(description, EMBED_FIELD_VALUE), inline=False
        )
    embed.set_footer(text="Each server has its own library; direct messages use the demo library.")
    return embed


def embed_problems(embed: discord.Embed) -> list[str]:
    """Every Discord limit ``embed`` breaks (empty when it can be sent)."""
    return problems(embed=embed)
