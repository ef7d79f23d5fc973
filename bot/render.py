"""Core results -> Discord messages, always within Discord's limits. Pure: no I/O, no state.

Article text is untrusted: it is Markdown-escaped before it is shown (so a passage cannot
format itself as a heading or a masked link) and cut on sentence boundaries with "…" where a
limit would be crossed. Mentions in article text cannot ping anyone because the client sends
every message with ``AllowedMentions.none()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import discord
from discord.utils import escape_markdown

from embeddings import Answer, ArticleInfo, Citation, Hit, IngestReport, Summary, split_sentences

# Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
CONTENT_LIMIT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
EMBED_TOTAL = 6000
CUSTOM_ID = 100
CHOICE_NAME = 100
CHOICES = 25
URL_LIMIT = 2048

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


def escape(text: str) -> str:
    """Markdown-escape untrusted text so it shows as written."""
    return escape_markdown(text, ignore_links=False)


def _web_url(url: str | None) -> str | None:
    """``url`` if Discord accepts it as a link target, else None."""
    if url and url.startswith(("http://", "https://")) and len(url) <= URL_LIMIT and " " not in url:
        return url
    return None


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
    """Byline, date and paragraph: the part of a citation that goes below the passage."""
    parts = []
    if citation.byline:
        parts.append(f"by {citation.byline}")
    if citation.date:
        parts.append(citation.date)
    parts.append(f"¶ {citation.paragraph}")
    return shorten(" · ".join(parts), EMBED_FOOTER)


def confidence_label(confidence: float) -> str:
    """A five-step bar, the number and a word: how sure the answer is."""
    filled = max(0, min(5, round(confidence * 5)))
    word = "high" if confidence >= 0.7 else "medium" if confidence >= 0.5 else "low"
    return f"{'▰' * filled}{'▱' * (5 - filled)} {confidence:.2f} ({word})"


def _colour(confidence: float) -> discord.Colour:
    return COLOUR_HIGH if confidence >= 0.7 else COLOUR_MEDIUM if confidence >= 0.5 else COLOUR_LOW


def _author(embed: discord.Embed, title: str, url: str | None) -> None:
    embed.set_author(name=shorten(title, EMBED_AUTHOR), url=_web_url(url))


# ---------------------------------------------------------------------- answers


def answer_embed(answer: Answer, *, budget: int = ANSWER_BUDGET, note: str | None = None) -> discord.Embed:
    """The answer: passage with its best sentence in bold, the citation, a confidence bar."""
    best = answer.best
    if best is None:
        raise ValueError("answer_embed needs an answered question; use not_found_text")
    shown = excerpt(best.passage.text, min(budget, EMBED_DESCRIPTION), answer.highlight)
    embed = discord.Embed(
        title=shorten(escape(answer.question), EMBED_TITLE),
        description=shown.text,
        colour=_colour(answer.confidence),
    )
    citation = best.citation
    _author(embed, citation.title, citation.url)
    embed.set_footer(text=citation_footer(citation))
    embed.add_field(name="Confidence", value=confidence_label(answer.confidence), inline=True)
    link = _web_url(citation.url)
    if link:
        embed.add_field(name="Source", value=f"[Open the article]({link})", inline=True)
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
    shown = excerpt(hit.passage.text, EMBED_DESCRIPTION, highlight)
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
        link = _web_url(citation.url)
        tail = f"\n— {citation_footer(citation)}" + (f" · [link]({link})" if link else "")
        room = EMBED_FIELD_VALUE - len(tail)
        if room < 80:  # a monstrous link: drop it rather than the passage
            tail = f"\n— {shorten(citation_footer(citation), 200)}"
            room = EMBED_FIELD_VALUE - len(tail)
        body = excerpt(hit.passage.text, min(budget, room)).text
        name = shorten(f"{hit.rank}. {escape(citation.title)}", EMBED_FIELD_NAME)
        if len(embed) + len(name) + len(body) + len(tail) > EMBED_TOTAL:
            break
        embed.add_field(name=name, value=body + tail, inline=False)
    return embed


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
        line = f"• {escape(s.text)} (¶ {s.paragraph})"
        if len(line) > EMBED_DESCRIPTION // 2:
            line = f"• {escape(shorten(s.text, EMBED_DESCRIPTION // 2 - 20))} (¶ {s.paragraph})"
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
        parts.append(f"by {info.byline}")
    if info.date:
        parts.append(info.date)
    embed.set_footer(text=shorten(" · ".join(parts), EMBED_FOOTER))
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
    for n, a in enumerate(articles[page * page_size : (page + 1) * page_size], start=page * page_size + 1):
        name = escape(shorten(a.title, 200))
        link = _web_url(a.url)
        head = f"{n}. [{name}]({link})" if link and len(link) < 300 else f"{n}. **{name}**"
        meta = [f"`{a.id}`"]
        if a.byline:
            meta.append(f"by {escape(shorten(a.byline, 80))}")
        if a.date:
            meta.append(a.date)
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
    added = report.count("added") + report.count("replaced")
    ok = any(r.status != "skipped" for r in report.results)
    embed = discord.Embed(
        title=shorten(
            f"Added {added} article(s) from {source}" if added else f"Nothing new from {source}", EMBED_TITLE
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
    embed.set_footer(text=f"{report.passages_added} passage(s) embedded")
    return embed


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
    problems = []
    data = embed.to_dict()
    checks = [
        ("title", len(data.get("title", "")), EMBED_TITLE),
        ("description", len(data.get("description", "")), EMBED_DESCRIPTION),
        ("fields", len(data.get("fields", [])), EMBED_FIELDS),
        ("footer", len(data.get("footer", {}).get("text", "")), EMBED_FOOTER),
        ("author", len(data.get("author", {}).get("name", "")), EMBED_AUTHOR),
        ("total", len(embed), EMBED_TOTAL),
    ]
    for f in data.get("fields", []):
        checks.append(("field name", len(f["name"]), EMBED_FIELD_NAME))
        checks.append(("field value", len(f["value"]), EMBED_FIELD_VALUE))
        if not f["name"] or not f["value"]:
            problems.append("empty field")
    problems.extend(f"{what} {n} > {limit}" for what, n, limit in checks if n > limit)
    return problems
