"""Feeds and sitemaps against a real HTTP server on 127.0.0.1 whose content changes between
passes: pages added, changed and deleted, 304s, gzip, a sitemap index, broken XML, a feed of
10,000 items, a redirect loop, a page that never answers, robots.txt."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings import FetchError, HashEncoder, InputError, Library, LocalStore
from embeddings.fetch import Fetcher
from embeddings.subscriptions import (
    FEED,
    SITEMAP,
    discover,
    find_subscription,
    load_subscriptions,
    save_subscription,
    sync,
    unsubscribe,
)

from .conftest import local_http


def article(title: str, body: str) -> bytes:
    paragraphs = "".join(f"<p>{body} Paragraph {i} says more about {title.lower()}.</p>" for i in range(4))
    return (
        f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>{paragraphs}"
        "</article></body></html>"
    ).encode()


class Site(BaseHTTPRequestHandler):
    """Serves ``pages`` (path -> (content type, body)); honours If-None-Match; counts requests."""

    pages: ClassVar[dict[str, tuple[str, bytes]]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []  # (path, status)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        if path == "/loop":
            self._send(302, b"", "text/plain", {"Location": "/loop"})
            return
        if path == "/slow":
            time.sleep(2.5)
        if path not in Site.pages:
            self._send(404, b"not here", "text/plain")
            return
        ctype, body = Site.pages[path]
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", ctype, {"ETag": etag})
            return
        self._send(200, body, ctype, {"ETag": etag})

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        Site.requests.append((self.path, str(status)))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@pytest.fixture
def site() -> Iterator[str]:
    Site.pages, Site.requests = {}, []
    with local_http(Site) as url:
        yield url


@pytest.fixture
def fetcher() -> Fetcher:
    # The operator's allow-list for private hosts is what lets the tests reach 127.0.0.1.
    return Fetcher(timeout=2, max_bytes=5_000_000, allowed_networks=["127.0.0.1/32"])


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    return Library(LocalStore(tmp_path), HashEncoder(), "news")


def rss(base: str, items: list[tuple[str, str]]) -> bytes:
    """An RSS 2.0 feed of ``(path, pubDate)`` items."""
    entries = "".join(
        f"<item><title>{p}</title><link>{base}{p}</link><pubDate>{d}</pubDate></item>" for p, d in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour news</title>{entries}</channel></rss>'.encode()


def urlset(base: str, pages: list[tuple[str, str]]) -> bytes:
    urls = "".join(f"<url><loc>{base}{p}</loc><lastmod>{m}</lastmod></url>" for p, m in pages)
    return f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'.encode()


def pass_(lib: Library, fetcher: Fetcher, url: str, **kwargs):
    sub = find_subscription(lib, url)
    assert sub is not None
    report = sync(lib, fetcher, sub, host_delay=0, **kwargs)
    save_subscription(lib, sub)
    return report


def test_a_sitemap_is_followed_added_changed_and_deleted_pages_propagate(
    site: str, lib: Library, fetcher: Fetcher
):
    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/b": ("text/html", article("Cranes", "Cranes lift the containers.")),
        "/c": ("text/html", article("Pilots", "Pilots board at the buoy.")),
        "/sitemap.xml": (
            "application/xml",
            urlset(site, [("/a", "2026-01-01"), ("/b", "2026-01-01"), ("/c", "2026-01-01")]),
        ),
    }
    sub = discover(fetcher, f"{site}/sitemap.xml")
    assert sub.kind == SITEMAP
    save_subscription(lib, sub)
    first = pass_(lib, fetcher, sub.url)
    assert sorted(first.added) == [f"{site}/a", f"{site}/b", f"{site}/c"] and first.ok
    assert {a.url for a in lib.articles()} == {f"{site}/a", f"{site}/b", f"{site}/c"}

    # Second pass, nothing changed: the sitemap answers 304 and no page is fetched at all.
    Site.requests.clear()
    second = pass_(lib, fetcher, sub.url)
    assert sorted(second.unchanged) == [f"{site}/a", f"{site}/b", f"{site}/c"]
    assert [r for r in Site.requests if r[0] != "/robots.txt"] == [("/sitemap.xml", "304")]

    # Third pass: /b changed (new lastmod), /c deleted, /d added.
    Site.pages["/b"] = ("text/html", article("Cranes", "Cranes now lift twice as many containers."))
    Site.pages["/d"] = ("text/html", article("Buoys", "Buoys mark the channel."))
    del Site.pages["/c"]
    Site.pages["/sitemap.xml"] = (
        "application/xml",
        urlset(site, [("/a", "2026-01-01"), ("/b", "2026-02-01"), ("/d", "2026-02-01")]),
    )
    third = pass_(lib, fetcher, sub.url)
    assert (third.added, third.replaced, third.unchanged, third.forgotten) == (
        [f"{site}/d"],
        [f"{site}/b"],
        [f"{site}/a"],
        [f"{site}/c"],
    )
    assert {a.url for a in lib.articles()} == {f"{site}/a", f"{site}/b", f"{site}/d"}
    assert "twice as many" in lib.ask("How many containers do the cranes lift?").hits[0].passage.text


def test_a_gzipped_sitemap_index_is_read(site: str, lib: Library, fetcher: Fetcher):
    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/b": ("text/html", article("Cranes", "Cranes lift the containers.")),
        "/one.xml.gz": ("application/gzip", gzip.compress(urlset(site, [("/a", "2026-01-01")]))),
        "/two.xml": ("application/xml", urlset(site, [("/b", "2026-01-01")])),
        "/index.xml": (
            "application/xml",
            f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{site}/one.xml.gz</loc></sitemap><sitemap><loc>{site}/two.xml</loc></sitemap>"
            "</sitemapindex>".encode(),
        ),
    }
    save_subscription(lib, discover(fetcher, f"{site}/index.xml"))
    report = pass_(lib, fetcher, f"{site}/index.xml")
    assert sorted(report.added) == [f"{site}/a", f"{site}/b"]


def test_a_feed_found_through_its_page_and_old_items_leave_with_the_retention_window(
    site: str, lib: Library, fetcher: Fetcher
):
    Site.pages = {
        "/": (
            "text/html",
            b'<html><head><link rel="alternate" type="application/rss+xml" href="/feed.xml"></head></html>',
        ),
        "/new": ("text/html", article("Ferries", "The ferry sails at dawn.")),
        "/old": ("text/html", article("Lighthouse", "The lighthouse was built long ago.")),
        "/feed.xml": (
            "application/rss+xml",
            rss(site, [("/new", "Mon, 30 Nov 2026 10:00:00 GMT"), ("/old", "Mon, 02 Nov 2026 10:00:00 GMT")]),
        ),
    }
    sub = discover(fetcher, f"{site}/")
    assert (sub.kind, sub.url, sub.title) == (FEED, f"{site}/feed.xml", "Harbour news")
    save_subscription(lib, sub)
    from datetime import UTC, datetime

    report = pass_(lib, fetcher, sub.url, retention_days=60, today=datetime(2026, 12, 4, tzinfo=UTC))
    assert sorted(report.added) == [f"{site}/new", f"{site}/old"]
    # A week later with a 30-day window: the old item is past it and is forgotten.
    report = pass_(lib, fetcher, sub.url, retention_days=30, today=datetime(2026, 12, 11, tzinfo=UTC))
    assert report.forgotten == [f"{site}/old"] and report.unchanged == [f"{site}/new"]
    assert [a.url for a in lib.articles()] == [f"{site}/new"]


def test_a_huge_feed_is_capped_per_pass_and_the_rest_waits(site: str, lib: Library, fetcher: Fetcher):
    items = [(f"/p{i}", "Mon, 30 Nov 2026 10:00:00 GMT") for i in range(10_000)]
    Site.pages = {"/feed.xml": ("application/rss+xml", rss(site, items))}
    for i in range(8):
        Site.pages[f"/p{i}"] = ("text/html", article(f"Note {i}", f"Note number {i} about the quay."))
    save_subscription(lib, discover(fetcher, f"{site}/feed.xml"))
    report = pass_(lib, fetcher, f"{site}/feed.xml", max_pages=10, retention_days=3650)
    assert len(report.added) == 8 and len(report.failed) == 2 and report.deferred == 10_000 - 10
    assert all("not found" in reason for _, reason in report.failed)


def test_one_bad_page_never_stops_the_pass(site: str, lib: Library, fetcher: Fetcher):
    Site.pages = {
        "/good": ("text/html", article("Tides", "The tide turns at noon.")),
        "/robots.txt": ("text/plain", b"User-agent: citebot\nDisallow: /private\n"),
        "/private": ("text/html", article("Secret", "Not for bots.")),
        "/sitemap.xml": (
            "application/xml",
            urlset(site, [("/loop", ""), ("/slow", ""), ("/private", ""), ("/good", ""), ("/gone", "")]),
        ),
    }
    Site.pages["/slow"] = ("text/html", article("Slow", "Too late."))
    save_subscription(lib, discover(fetcher, f"{site}/sitemap.xml"))
    report = pass_(lib, fetcher, f"{site}/sitemap.xml")
    assert report.added == [f"{site}/good"]
    reasons = dict(report.failed)
    assert "redirects more than" in reasons[f"{site}/loop"]
    assert "took longer than" in reasons[f"{site}/slow"]
    assert "robots.txt" in reasons[f"{site}/private"]
    assert "not found" in reasons[f"{site}/gone"]
    assert ("/private", "200") not in Site.requests  # robots.txt was honoured before fetching


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<?xml version='1.0'?><urlset><url><loc>broken", "not well-formed XML"),
        (b"<?xml version='1.0'?><catalog/>", "not a sitemap"),
    ],
)
def test_a_broken_sitemap_is_a_failure_that_changes_nothing(
    site: str, lib: Library, fetcher: Fetcher, body: bytes, message: str
):
    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/sitemap.xml": ("application/xml", urlset(site, [("/a", "2026-01-01")])),
    }
    save_subscription(lib, discover(fetcher, f"{site}/sitemap.xml"))
    pass_(lib, fetcher, f"{site}/sitemap.xml")
    Site.pages["/sitemap.xml"] = ("application/xml", body)
    report = pass_(lib, fetcher, f"{site}/sitemap.xml")
    assert not report.ok and message in report.failed[0][1]
    assert [a.url for a in lib.articles()] == [f"{site}/a"]  # nothing forgotten on a bad read
    assert find_subscription(lib, f"{site}/sitemap.xml").last_error  # type: ignore[union-attr]


def test_discover_says_why_a_url_cannot_be_followed(site: str, fetcher: Fetcher):
    Site.pages = {"/page": ("text/html", b"<html><head><title>No feed</title></head><body>Hi</body></html>")}
    with pytest.raises(InputError, match="without a feed"):
        discover(fetcher, f"{site}/page")
    with pytest.raises(FetchError, match="not found"):
        discover(fetcher, f"{site}/missing.xml")
    with pytest.raises(FetchError, match="network address"):
        discover(Fetcher(timeout=2), f"{site}/sitemap.xml")  # private hosts need the allow-list


def test_unsubscribing_forgets_what_the_subscription_brought(site: str, lib: Library, fetcher: Fetcher):
    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/sitemap.xml": ("application/xml", urlset(site, [("/a", "2026-01-01")])),
    }
    save_subscription(lib, discover(fetcher, f"{site}/sitemap.xml"))
    pass_(lib, fetcher, f"{site}/sitemap.xml")
    sub = find_subscription(lib, f"{site}/sitemap.xml")
    assert sub is not None
    assert unsubscribe(lib, sub) == [f"{site}/a"]
    assert lib.articles() == [] and load_subscriptions(lib) == []


def test_the_command_line_subscribes_syncs_lists_and_unsubscribes(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hash_encoder
):
    import io

    from bot.cli import EXIT_ERROR, EXIT_OK, main

    from .conftest import SEED

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / SEED.name).write_bytes(SEED.read_bytes())
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITEBOT_SEEDS_DIR", str(seeds))
    monkeypatch.setenv("CITEBOT_SYNC_HOST_DELAY", "0")
    monkeypatch.delenv("CITEBOT_LIBRARY", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), out=out, err=err, encoder=hash_encoder)
        return code, out.getvalue(), err.getvalue()

    Site.pages = {
        "/a": ("text/html", article("Tides", "The tide turns at noon.")),
        "/sitemap.xml": ("application/xml", urlset(site, [("/a", "2026-01-01")])),
    }
    code, out, _ = run("subscribe", f"{site}/sitemap.xml")
    assert code == EXIT_OK
    assert f"Subscribed to the sitemap {site}/sitemap.xml." in out and f"added      {site}/a" in out
    code, out, _ = run("subscriptions")
    assert code == EXIT_OK and f"sitemap  {site}/sitemap.xml  [1 pages, last synced" in out
    # A page that fails makes `citebot sync` exit 1 (cron notices); the rest is reported.
    Site.pages["/sitemap.xml"] = ("application/xml", urlset(site, [("/a", "2026-01-01"), ("/gone", "")]))
    code, out, _ = run("sync")
    assert code == EXIT_ERROR and f"failed     {site}/gone" in out and "1 unchanged" in out
    code, out, _ = run("unsubscribe", f"{site}/sitemap.xml")
    assert code == EXIT_OK and "forgot 1 article(s)" in out
    code, out, err = run("unsubscribe", f"{site}/sitemap.xml")
    assert code == EXIT_ERROR and "No subscription to" in err
    code, out, _ = run("subscriptions", "--json")
    assert code == EXIT_OK and out.strip() == "[]"


def test_broken_links_and_undated_pages_never_starve_the_rest(site: str, lib: Library, fetcher: Fetcher):
    # Ten broken links listed first, then five good pages without a lastmod, two fetches a pass.
    listed = [(f"/broken{i}", "") for i in range(10)] + [(f"/p{i}", "") for i in range(5)]
    Site.pages = {
        f"/p{i}": ("text/html", article(f"Note {i}", f"Note number {i} about the quay.")) for i in range(5)
    }
    Site.pages["/sitemap.xml"] = ("application/xml", urlset(site, listed))
    save_subscription(lib, discover(fetcher, f"{site}/sitemap.xml"))
    added: list[str] = []
    for _ in range(8):  # 15 pages, 2 a pass: every page has had its turn after 8 passes
        report = pass_(lib, fetcher, f"{site}/sitemap.xml", max_pages=2)
        added += report.added
    assert sorted(added) == sorted(f"{site}/p{i}" for i in range(5))
    # Once every page was tried, undated known pages are re-checked (conditionally) before
    # the broken links are retried.
    Site.requests.clear()
    pass_(lib, fetcher, f"{site}/sitemap.xml", max_pages=5)
    fetched = [path for path, _ in Site.requests if path.startswith(("/p", "/broken"))]
    assert all(path.startswith("/p") for path in fetched)


def test_an_item_that_slides_out_of_the_feed_stays_until_the_retention_window_ends(
    site: str, lib: Library, fetcher: Fetcher
):
    from datetime import UTC, datetime

    Site.pages = {
        "/one": ("text/html", article("Ferries", "The ferry sails at dawn.")),
        "/two": ("text/html", article("Tugs", "Tugs push the tankers.")),
        "/feed.xml": (
            "application/rss+xml",
            rss(site, [("/two", "Tue, 01 Dec 2026 10:00:00 GMT"), ("/one", "Mon, 30 Nov 2026 10:00:00 GMT")]),
        ),
    }
    save_subscription(lib, discover(fetcher, f"{site}/feed.xml"))
    pass_(lib, fetcher, f"{site}/feed.xml", retention_days=30, today=datetime(2026, 12, 4, tzinfo=UTC))
    # The feed now shows only its latest item: /one slid out of its window but is recent.
    Site.pages["/feed.xml"] = ("application/rss+xml", rss(site, [("/two", "Tue, 01 Dec 2026 10:00:00 GMT")]))
    report = pass_(
        lib, fetcher, f"{site}/feed.xml", retention_days=30, today=datetime(2026, 12, 5, tzinfo=UTC)
    )
    assert report.forgotten == [] and f"{site}/one" in report.unchanged
    assert len(lib.articles()) == 2
    # On 31 December it is past the 30-day window and goes; /two (1 December) is not yet.
    report = pass_(
        lib, fetcher, f"{site}/feed.xml", retention_days=30, today=datetime(2026, 12, 31, tzinfo=UTC)
    )
    assert report.forgotten == [f"{site}/one"]
    assert [a.url for a in lib.articles()] == [f"{site}/two"]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(lambda b: gzip.compress(b), st.binary(max_size=200)),
        st.builds(
            lambda body: f'<?xml version="1.0"?><urlset><url><loc>{body}</loc></url></urlset>'.encode(),
            st.text(max_size=50),
        ),
        st.builds(
            lambda body: f"<rss><channel><item>{body}</item></channel></rss>".encode(), st.text(max_size=80)
        ),
    )
)
def test_any_feed_or_sitemap_bytes_give_entries_or_a_reason(data: bytes):
    from embeddings.fetch import Fetched
    from embeddings.subscriptions import feed_entries, kind_of, sitemap_entries

    for read in (
        feed_entries,
        sitemap_entries,
        lambda d: kind_of(Fetched("https://x.example/", "raw", "", d)),
    ):
        with contextlib.suppress(InputError):  # a reason is fine; any other exception fails
            read(data)
