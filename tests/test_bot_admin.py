"""/ingest, /forget, the article autocomplete and the owner's sync command.

These use the hash encoder on a fresh store per test: they test permissions, isolation,
limits and plumbing, not answer quality.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from discord import app_commands

from bot import render
from bot.config import Settings
from bot.services import make_library
from bot.testing import (
    ADMIN_ID,
    ADMIN_PERMISSIONS,
    BOT_ID,
    GUILD_A,
    GUILD_B,
    MEMBER_PERMISSIONS,
    OWNER_ID,
    USER_ID,
    FakeDiscord,
    attachment_payload,
    message_payload,
    running_bot,
    user_payload,
)
from embeddings import Document, HashEncoder, LocalStore
from embeddings.fetch import Fetcher

from .conftest import local_http
from .test_pdf import PAGES, make_pdf
from .test_subscriptions import site  # noqa: F401  (the fixture)

PAGE = b"""<!doctype html><html><head><title>Otters in the city canals</title></head><body><article>
<h1>Otters in the city canals</h1>
<p>Otters have been seen in the city canals for the first time in forty years, according to the
river trust, which counted nine animals along the old towpath.</p>
<p>The trust says cleaner water brought back the fish that otters feed on.</p>
</article></body></html>"""

NOTES = b"""Heron nesting season

By Sam Reed / 02. Apr 2024

Grey herons return to the island colony in February and lay three to five eggs.

The chicks fledge after about fifty days on the nest. Volunteers, tell @everyone and <@&123456> to keep away.
"""


class _Page(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with local_http(_Page) as url:
        yield f"{url}/otters"


@pytest.fixture
def admin_settings(tmp_path: Path) -> Settings:
    return Settings.load(
        # The hash encoder is not a semantic model: answer whatever ranks first.
        environ={
            "CITEBOT_ASK_COOLDOWN": "off",
            "CITEBOT_FETCH_MAX_BYTES": "100000",
            "CITEBOT_ABSTAIN_THRESHOLD": "0",
        },
        env_file=None,
        data_dir=tmp_path / "data",
        seeds_dir=tmp_path,
    )


@pytest.fixture
def encoder() -> HashEncoder:
    return HashEncoder(dim=64, max_tokens=48)


@pytest.fixture
async def admin_bot(admin_settings: Settings, encoder: HashEncoder) -> AsyncIterator[FakeDiscord]:
    """A bot whose fetcher may reach the local test server (127.0.0.1 only)."""
    store = LocalStore(admin_settings.data_dir)
    fetcher = Fetcher(timeout=3, max_bytes=admin_settings.fetch_max_bytes, allowed_networks=["127.0.0.1/32"])
    async with running_bot(admin_settings, store, encoder, fetcher=fetcher) as fake:
        yield fake
    store.close()


def fill(fake: FakeDiscord, guild_id: int, titles: list[str]) -> None:
    library = fake.bot.libraries.get(guild_id)
    docs = []
    for i, title in enumerate(titles):
        body = f"Paragraph {i} about {title.split()[0].lower()} and other things."
        docs.append(Document(key=f"doc-{i}", title=title, text=body, paragraphs=((0, len(body)),)))
    library.ingest(docs)


async def ingest(
    fake: FakeDiscord, *, permissions=ADMIN_PERMISSIONS, guild_id: int | None = GUILD_A, **options
):
    fake.recorder.clear()
    await fake.slash("ingest", guild_id=guild_id, user_id=ADMIN_ID, permissions=permissions, **options)
    return fake.recorder.sent


# ---------------------------------------------------------------------- /ingest


async def test_ingest_an_attachment(admin_bot: FakeDiscord):
    attachment = attachment_payload("herons.txt", NOTES)
    admin_bot.http.cdn[attachment["url"]] = NOTES
    sent = await ingest(admin_bot, file=attachment)
    assert [s.kind for s in sent] == ["defer", "GET cdn", "followup"]
    defer, _, reply = sent
    assert defer.ephemeral and reply.ephemeral
    (embed,) = reply.embeds
    assert embed.title == "Added 1 article(s) from herons.txt"
    assert "✅ Added “Heron nesting season”" in (embed.description or "")
    assert render.embed_problems(embed) == []
    (info,) = admin_bot.bot.libraries.get(GUILD_A).articles()
    assert (info.title, info.byline, info.date) == ("Heron nesting season", "Sam Reed", "2024-04-02")
    assert f"({info.passage_count} passages)" in (embed.description or "")
    # The same file again changes nothing; the other server's library is untouched.
    sent = await ingest(admin_bot, file=attachment)
    assert "➖ Already here" in (sent[-1].embeds[0].description or "")
    assert not admin_bot.bot.libraries.get(GUILD_B).exists()


async def test_ingest_a_url_through_the_real_http_client(admin_bot: FakeDiscord, web: str):
    sent = await ingest(admin_bot, url=web)
    assert [s.kind for s in sent] == ["defer", "followup"]
    (embed,) = sent[-1].embeds
    assert "✅ Added “Otters in the city canals”" in (embed.description or "")
    (info,) = admin_bot.bot.libraries.get(GUILD_A).articles()
    assert info.url == web


async def test_ingest_refuses_urls_into_the_hosts_network(
    admin_settings: Settings, encoder: HashEncoder, web: str
):
    """The default fetcher (the one `citebot run` builds) refuses loopback, private and link-local."""
    store = LocalStore(admin_settings.data_dir)
    async with running_bot(admin_settings, store, encoder) as fake:
        for url in (web, "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]/"):
            sent = await ingest(fake, url=url)
            assert [s.kind for s in sent] == ["defer", "followup"]
            reply = sent[-1]
            assert reply.ephemeral and reply.content.startswith("Refusing to fetch from")
            assert "network address" in reply.content
            assert fake.tree.errors[-1].__class__.__name__ == "CommandInvokeError"
        assert not fake.bot.libraries.get(GUILD_A).exists()
    store.close()


async def test_ingest_explains_bad_input_before_deferring(admin_bot: FakeDiscord, web: str):
    cases = [
        ({}, "Give me either a file or a url"),
        ({"url": web, "file": attachment_payload("a.txt", b"x")}, "Give me either a file or a url"),
        ({"file": attachment_payload("report.docx", b"PK")}, "I can't read .docx"),
        ({"file": attachment_payload("huge.txt", b"x" * 200_000)}, "the limit is 0.1 MB"),
    ]
    for options, message in cases:
        sent = await ingest(admin_bot, **options)
        assert [s.kind for s in sent] == ["message"], options
        assert sent[0].ephemeral and message in sent[0].content
    # Too large is refused without downloading anything.
    assert all(s.kind != "GET cdn" for s in admin_bot.recorder.sent)


async def test_ingest_and_forget_need_manage_server(admin_bot: FakeDiscord, web: str):
    fill(admin_bot, GUILD_A, ["Kestrels hover over the motorway verge"])
    sent = await ingest(admin_bot, url=web, permissions=MEMBER_PERMISSIONS)
    assert [s.kind for s in sent] == ["message"]
    assert sent[0].ephemeral and sent[0].content == "You need the Manage Server permission to use this."
    assert isinstance(admin_bot.tree.errors[-1], app_commands.MissingPermissions)
    admin_bot.recorder.clear()
    await admin_bot.slash("forget", article="Kestrels hover over the motorway verge")  # a plain member
    assert admin_bot.recorder.sent[0].content == "You need the Manage Server permission to use this."
    assert len(admin_bot.bot.libraries.get(GUILD_A).articles()) == 1
    # Discord hides both commands from members without the permission, and in DMs.
    for name in ("ingest", "forget"):
        command = admin_bot.command(name)
        assert command.default_permissions is not None and command.default_permissions.manage_guild
        assert command.guild_only


async def test_ingest_in_a_dm_is_refused(admin_bot: FakeDiscord, web: str):
    sent = await ingest(admin_bot, url=web, guild_id=None)
    assert sent[0].content == "This command works only in a server, not in direct messages."


# ---------------------------------------------------------------------- /forget and autocomplete


async def test_forget_with_autocomplete(admin_bot: FakeDiscord):
    fill(admin_bot, GUILD_A, ["Kestrels hover over the motorway verge", "Swifts sleep on the wing"])
    fill(admin_bot, GUILD_B, ["Kestrel numbers fall in server B's county"])
    choices = await admin_bot.autocomplete("forget", "article", article="kest", permissions=ADMIN_PERMISSIONS)
    assert [c["name"] for c in choices] == ["Kestrels hover over the motorway verge"]
    article_id = choices[0]["value"]
    admin_bot.recorder.clear()
    await admin_bot.slash("forget", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, article=article_id)
    assert admin_bot.recorder.kinds() == ["defer", "followup"]
    reply = admin_bot.recorder.last("followup")
    assert reply.ephemeral and reply.content.startswith("Removed “Kestrels hover over the motorway verge”")
    assert [a.title for a in admin_bot.bot.libraries.get(GUILD_A).articles()] == ["Swifts sleep on the wing"]
    assert len(admin_bot.bot.libraries.get(GUILD_B).articles()) == 1


async def test_forget_asks_before_removing_a_close_match(admin_bot: FakeDiscord):
    fill(admin_bot, GUILD_A, ["Swifts sleep on the wing", "Kestrels hover over the motorway verge"])
    await admin_bot.slash(
        "forget", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, article="Swifts slep on the wing"
    )
    ask = admin_bot.recorder.last("followup")
    assert ask.ephemeral and "Did you mean “Swifts sleep on the wing”" in ask.content
    assert len(admin_bot.bot.libraries.get(GUILD_A).articles()) == 2  # nothing removed yet
    (button,) = [c for c in ask.custom_ids if c.startswith("citebot:forget:")]
    admin_bot.recorder.clear()
    await admin_bot.click(ask, button, user_id=USER_ID)  # a plain member may not
    assert "Manage Server" in admin_bot.recorder.last("message").content
    assert len(admin_bot.bot.libraries.get(GUILD_A).articles()) == 2
    await admin_bot.click(ask, button, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    assert admin_bot.recorder.last("followup").content.startswith("Removed “Swifts sleep on the wing”")
    assert [a.title for a in admin_bot.bot.libraries.get(GUILD_A).articles()] == [
        "Kestrels hover over the motorway verge"
    ]


async def test_forget_an_unknown_article_explains_after_the_defer(admin_bot: FakeDiscord):
    fill(admin_bot, GUILD_A, ["Swifts sleep on the wing"])
    await admin_bot.slash("forget", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, article="Swallows")
    assert admin_bot.recorder.kinds() == ["defer", "followup"]
    reply = admin_bot.recorder.last("followup")
    assert reply.ephemeral and reply.content.startswith("No article matches 'Swallows'")


async def test_autocomplete_is_per_server_and_within_limits(admin_bot: FakeDiscord):
    long_titles = [f"Article {i:02d} " + "about a very long subject " * 12 for i in range(30)]
    fill(admin_bot, GUILD_A, long_titles)
    fill(admin_bot, GUILD_B, ["Only in server B"])
    choices = await admin_bot.autocomplete("forget", "article", article="", permissions=ADMIN_PERMISSIONS)
    assert len(choices) == 25
    assert all(1 <= len(c["name"]) <= 100 and len(c["value"]) <= 100 for c in choices)
    assert all(c["name"].startswith("Article ") and c["name"].endswith("…") for c in choices)
    assert choices[0]["name"].startswith("Article 29")  # newest first
    assert not any("server B" in c["name"] for c in choices)
    choices = await admin_bot.autocomplete("summary", "article", article="article 07")
    assert [c["name"][:10] for c in choices] == ["Article 07"]
    b = await admin_bot.autocomplete("summary", "article", article="", guild_id=GUILD_B)
    assert [c["name"] for c in b] == ["Only in server B"]
    # A server with no library, and a DM with an empty demo library, suggest nothing.
    assert await admin_bot.autocomplete("summary", "article", article="a", guild_id=444444444444444444) == []


# ---------------------------------------------------------------------- owner sync


async def test_owner_sync_command(admin_bot: FakeDiscord):
    def said(content: str, author: int):
        return admin_bot.message(
            message_payload(
                content=f"<@{BOT_ID}> {content}",
                guild_id=GUILD_A,
                author=user_payload(author),
                mentions=[user_payload(BOT_ID, "citebot", bot=True)],
            )
        )

    await admin_bot.bot.process_commands(said("sync", USER_ID))
    await admin_bot.bot.get_cog("Ask").on_message(said("sync", USER_ID))  # type: ignore[union-attr]
    assert [s for s in admin_bot.recorder.sent if s.method == "PUT"] == []
    # Not the owner: not a command (nothing synced) but a question like any other, answered.
    assert len(admin_bot.recorder.of("channel")) == 1
    admin_bot.recorder.clear()

    await admin_bot.bot.process_commands(said("sync", OWNER_ID))
    put = [s for s in admin_bot.recorder.sent if s.method == "PUT"]
    assert [s.path for s in put] == ["/applications/{application_id}/commands"]
    assert {c["name"] for c in put[0].payload} >= {"ask", "summary", "articles", "ingest", "forget", "help"}
    assert admin_bot.recorder.last("channel").content.startswith("Synced 15 global command(s)")

    admin_bot.recorder.clear()
    await admin_bot.bot.process_commands(said("sync here", OWNER_ID))
    put = [s for s in admin_bot.recorder.sent if s.method == "PUT"]
    assert [s.url.rsplit("/guilds/", 1)[1] for s in put] == [f"{GUILD_A}/commands"]
    assert admin_bot.recorder.last("channel").content == "Synced 15 command(s) to this server."


async def test_a_pdf_attachment_is_ingested_and_answers_cite_its_page(admin_bot: FakeDiscord):
    data = make_pdf(PAGES, title="Harbour Manual")
    attachment = attachment_payload("manual.pdf", data)
    admin_bot.http.cdn[attachment["url"]] = data
    sent = await ingest(admin_bot, file=attachment)
    assert "✅ Added “Harbour Manual”" in (sent[-1].embeds[0].description or "")
    admin_bot.recorder.clear()
    await admin_bot.slash("ask", question="When does the harbour master ring the brass bell?")
    (embed,) = admin_bot.recorder.last("followup").embeds
    assert embed.author.name == "Harbour Manual" and (embed.footer.text or "").endswith(" · p. 3, ¶ 2")
    assert "brass bell at noon" in (embed.description or "")


async def test_ingested_library_answers(admin_bot: FakeDiscord):
    """After /ingest, /ask in that server reads the new article (hash encoder: shared words)."""
    attachment = attachment_payload("herons.txt", NOTES)
    admin_bot.http.cdn[attachment["url"]] = NOTES
    await ingest(admin_bot, file=attachment)
    admin_bot.recorder.clear()
    await admin_bot.slash("ask", question="When do grey herons return to the island colony?")
    reply = admin_bot.recorder.last("followup")
    assert reply.embeds and reply.embeds[0].author.name == "Heron nesting season"
    # Mentions in article text are shown as text and can never ping.
    await admin_bot.slash("ask", question="How long until the chicks fledge from the nest?")
    reply = admin_bot.recorder.last("followup")
    description = reply.embeds[0].description or ""
    # Shown as text (a zero-width space keeps Discord from drawing a pill), never as a mention.
    assert "@\u200beveryone" in description and "<\u200b@&123456>" in description
    assert "@everyone" not in description and "<@&" not in description
    assert reply.body["allowed_mentions"] == {"parse": []}
    assert make_library(
        admin_bot.bot.settings, admin_bot.bot.store, admin_bot.bot.encoder, f"guild-{GUILD_A}"
    ).exists()


async def test_huge_passage_and_300_character_title_stay_within_discords_limits(admin_settings: Settings):
    """A model window of 2,000 words makes one passage of ~10,000 characters."""
    store = LocalStore(admin_settings.data_dir)
    async with running_bot(admin_settings, store, HashEncoder(dim=64, max_tokens=2000)) as fake:
        title = "The longest title " + "that keeps going " * 17 + "and finally stops"
        assert len(title) >= 300
        body = " ".join(f"Kingfisher fact number {i} concerns the riverbank burrow." for i in range(150))
        body += " The kingfisher dives from a perch at thirty kilometres per hour."
        doc = Document(
            key="big", title=title, text=body, paragraphs=((0, len(body)),), url="https://example.org/k"
        )
        fake.bot.libraries.get(GUILD_A).ingest([doc])
        await fake.slash("ask", question="How fast does the kingfisher dive from a perch?")
        answer = fake.recorder.last("followup")
        (embed,) = answer.embeds
        assert render.embed_problems(embed) == [] and len(embed) <= 6000
        assert len(embed.description or "") <= render.ANSWER_BUDGET
        assert "**The kingfisher dives from a perch at thirty kilometres per hour.**" in (
            embed.description or ""
        )
        assert (embed.description or "").startswith("… ")
        assert (embed.author.name or "").endswith("…") and len(embed.author.name or "") <= 256
        fake.recorder.clear()
        await fake.click(answer, answer.custom_ids[0])
        (full,) = fake.recorder.last("followup").embeds
        assert render.embed_problems(full) == []
        assert len(full.description or "") > 3 * render.ANSWER_BUDGET  # the rest, as much as Discord allows
    store.close()


# ---------------------------------------------------------------------- subscriptions


async def test_subscribe_list_sync_and_unsubscribe_in_discord(admin_bot: FakeDiscord, site: str):  # noqa: F811
    from bot.cogs.subscriptions import Subscriptions

    from .test_subscriptions import Site, article, urlset

    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/sitemap.xml": ("application/xml", urlset(site, [("/a", "2026-01-01")])),
    }
    await admin_bot.slash(
        "subscribe", user_id=ADMIN_ID, permissions=MEMBER_PERMISSIONS, url=f"{site}/sitemap.xml"
    )
    assert "Manage Server" in admin_bot.recorder.last("message").content
    await admin_bot.slash(
        "subscribe", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, url=f"{site}/sitemap.xml"
    )
    (embed,) = admin_bot.recorder.last("followup").embeds
    assert embed.title == f"Synced the sitemap {site}/sitemap.xml"
    assert (embed.description or "").startswith("1 added") and render.embed_problems(embed) == []
    assert [a.title for a in admin_bot.bot.libraries.get(GUILD_A).articles()] == ["Tides"]
    assert not admin_bot.bot.libraries.get(GUILD_B).exists()  # per server
    await admin_bot.slash(
        "subscribe", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, url=f"{site}/sitemap.xml"
    )
    assert "already follows" in admin_bot.recorder.last("followup").content

    # The scheduled pass (run here at once): a new page arrives, the old one leaves.
    Site.pages["/b"] = ("text/html", article("Cranes", "Cranes lift the containers."))
    Site.pages["/sitemap.xml"] = ("application/xml", urlset(site, [("/b", "2026-02-01")]))
    cog = admin_bot.bot.get_cog("Subscriptions")
    assert isinstance(cog, Subscriptions)
    await cog.sync_servers()
    await admin_bot.slash("subscriptions", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    (embed,) = admin_bot.recorder.last("followup").embeds
    shown = site.replace("://", ":\u200b//")  # addresses are shown as text, never as links
    assert f"sitemap {shown}/sitemap.xml · 1 pages · synced" in (embed.description or "")

    await admin_bot.slash(
        "unsubscribe", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, url=f"{site}/sitemap.xml"
    )
    ask = admin_bot.recorder.last("followup")
    assert "will be forgotten" in ask.content
    (button,) = [c for c in ask.custom_ids if c.startswith("citebot:unsub:")]
    await admin_bot.click(ask, button, user_id=USER_ID)  # a plain member may not
    assert "Manage Server" in admin_bot.recorder.last("message").content
    await admin_bot.click(ask, button, user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    assert "forgot the 1 article(s)" in admin_bot.recorder.last("followup").content
    await admin_bot.slash("subscriptions", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS)
    assert "follows no feed or sitemap" in admin_bot.recorder.last("followup").content
