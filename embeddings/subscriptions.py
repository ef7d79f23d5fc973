"""Sources that stay fresh: RSS/Atom feeds and sitemaps a library follows.

A subscription is a feed or a sitemap (a page's own feed is found through its
``<link rel="alternate">``). :func:`sync` runs one pass: it fetches the feed or sitemap
conditionally (ETag, Last-Modified: an unchanged one costs a 304), fetches only the pages that
are new or changed (a feed item's date, a sitemap's ``lastmod``, then the page's own
validators), lets the library's content hash tell a changed text from an unchanged one, and
forgets what went away: a page gone from its sitemap, a feed item older than the retention
window (an item that merely slid out of the feed's window stays until then). Every request
goes through the guarded :class:`~embeddings.fetch.Fetcher`; the pass is polite (robots.txt, a
delay between requests to one host, a cap of pages) and one page's failure never stops it.

Feeds are parsed by feedparser, sitemaps by lxml (hardened: no entities, no network), each fed
with the bytes the guarded fetcher downloaded.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import time
import urllib.robotparser
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

from .errors import EmptyLibraryError, FetchError, InputError
from .fetch import Fetched, Fetcher, parse_fetched
from .library import Library
from .types import Document

FEED, SITEMAP = "feed", "sitemap"
DEFAULT_MAX_PAGES = 50
"""Pages fetched per subscription per pass (the rest wait for the next pass)."""
DEFAULT_RETENTION_DAYS = 90
"""Feed items older than this are forgotten."""
DEFAULT_HOST_DELAY = 1.0
"""Seconds between two requests to one host."""
MAX_SITEMAPS = 20
"""Child sitemaps read from one sitemap index per pass."""
MAX_XML_BYTES = 20_000_000
"""Largest feed or sitemap read after decompression (a gzip bomb stops here)."""


@dataclass(slots=True)
class Subscription:
    """A followed feed or sitemap and what the last passes learnt about it.

    ``pages`` maps each page URL the subscription brought in to what is known of it: its
    ``stamp`` (a feed item's date or a sitemap's lastmod, as given), its validators, when it
    was published (feed items, for the retention window) and when it was last ``checked``.
    ``failures`` holds the pages whose last fetch failed, with the reason: they are retried
    after every other page has had its turn, so a run of broken links cannot use up a pass.
    ``listing`` is what the feed or sitemap listed when last read (``[url, stamp, published]``):
    when it answers 304, the pages still to fetch are taken from there.
    """

    url: str
    kind: str
    added_at: str
    title: str = ""
    etag: str | None = None
    last_modified: str | None = None
    pages: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    listing: list[list[str | None]] = field(default_factory=list)
    last_sync: str | None = None
    last_error: str | None = None

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, value: str) -> Subscription:
        """Read :meth:`to_json`'s form."""
        data = json.loads(value)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class SyncReport:
    """What one pass over one subscription did, page by page."""

    subscription: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    deferred: int = 0  # pages left for the next pass (the per-pass cap)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


@dataclass(frozen=True, slots=True)
class _Entry:
    """A page a feed or sitemap lists."""

    url: str
    stamp: str  # what tells a change: the item's updated date or the sitemap's lastmod
    published: str | None = None  # feed items: ISO date, for the retention window


# --------------------------------------------------------------------------- reading feeds and sitemaps


def _xml_bytes(data: bytes, head: int | None = None) -> bytes:
    """The body, gunzipped when it is gzip (``sitemap.xml.gz``), capped when decompressed;
    ``head`` decompresses only that many bytes (enough to tell a feed from a sitemap)."""
    if data[:2] != b"\x1f\x8b":
        return data if head is None else data[:head]
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(MAX_XML_BYTES + 1 if head is None else head)
    except (OSError, EOFError, zlib.error):
        raise InputError("the file is gzip-compressed but damaged") from None
    if len(out) > MAX_XML_BYTES:
        raise InputError(f"it is larger than {MAX_XML_BYTES // 1_000_000} MB once decompressed")
    return out


def _parse_xml(data: bytes) -> Any:
    from lxml import etree  # lazy: lxml comes with trafilatura

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"it is not well-formed XML ({exc})") from None


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def kind_of(page: Fetched) -> str:
    """``feed``, ``sitemap`` or ``page`` (HTML, whose feed may be linked) for a download.

    Raises :class:`InputError` for a gzip body that cannot be decompressed.
    """
    head = _xml_bytes(page.data, head=2000).lstrip().lower()
    if b"<urlset" in head or b"<sitemapindex" in head:
        return SITEMAP
    if b"<rss" in head or b"<feed" in head or b"<rdf:rdf" in head:
        return FEED
    return "page"


_ALTERNATE = re.compile(r"<link\b[^>]*>", re.I)
_ATTR = re.compile(r"""([a-z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


def feed_links(html: str, base: str) -> list[str]:
    """The feeds a page declares (``<link rel="alternate" type="application/rss+xml">``)."""
    out = []
    for tag in _ALTERNATE.findall(html[:500_000]):
        attrs = {
            m.group(1).lower(): m.group(2) or m.group(3) or m.group(4) or "" for m in _ATTR.finditer(tag)
        }
        rel = attrs.get("rel", "").lower().split()
        kind = attrs.get("type", "").lower()
        if (
            "alternate" in rel
            and kind in ("application/rss+xml", "application/atom+xml")
            and attrs.get("href")
        ):
            out.append(urljoin(base, attrs["href"]))
    return out


def feed_entries(data: bytes) -> tuple[str, list[_Entry]]:
    """A feed's title and items (feedparser reads RSS 0.9x-2.0, RSS 1.0 and Atom)."""
    import feedparser  # lazy: only subscriptions need it

    parsed = feedparser.parse(data)
    if parsed.get("bozo") and not parsed.entries:
        raise InputError(f"it is not a feed that can be read ({parsed.get('bozo_exception')})")
    entries = []
    for item in parsed.entries:
        link = item.get("link")
        if not link:
            continue
        # dict.get: feedparser's own get maps a missing "updated" to "published" with a warning.
        when = dict.get(item, "updated_parsed") or dict.get(item, "published_parsed")
        published = dict.get(item, "published_parsed") or when
        entries.append(
            _Entry(
                str(link),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", when) if when else str(item.get("id") or link),
                time.strftime("%Y-%m-%d", published) if published else None,
            )
        )
    return str(parsed.feed.get("title") or ""), entries


def sitemap_entries(data: bytes) -> tuple[list[_Entry], list[str]]:
    """A sitemap's pages, or a sitemap index's child sitemaps (``([], children)``)."""
    root = _parse_xml(_xml_bytes(data))
    name = _local(root.tag)
    if name not in ("urlset", "sitemapindex"):
        raise InputError(f"it is XML but not a sitemap (its root is <{name}>)")
    pages, children = [], []
    for node in root:
        fields = {_local(child.tag): (child.text or "").strip() for child in node}
        loc = fields.get("loc")
        if not loc:
            continue
        if name == "sitemapindex":
            children.append(loc)
        else:
            pages.append(_Entry(loc, fields.get("lastmod", "")))
    return pages, children


# --------------------------------------------------------------------------- politeness


class _Polite:
    """One pass's manners: robots.txt per host, a delay between requests to one host."""

    def __init__(self, fetcher: Fetcher, delay: float, sleep: Callable[[float], None]) -> None:
        self.fetcher, self.delay, self.sleep = fetcher, delay, sleep
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._last: dict[str, float] = {}

    def _wait(self, url: str) -> None:
        host = urlsplit(url).netloc
        last = self._last.get(host)
        if last is not None and self.delay > 0:
            pause = self.delay - (time.monotonic() - last)
            if pause > 0:
                self.sleep(pause)
        self._last[host] = time.monotonic()

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            rules: urllib.robotparser.RobotFileParser | None = None
            try:
                self._wait(origin)
                got = self.fetcher.fetch(f"{origin}/robots.txt", raw=True)
                rules = urllib.robotparser.RobotFileParser()
                rules.parse(got.data.decode("utf-8", "replace").splitlines())
            except FetchError:
                rules = None  # no robots.txt (or none readable): everything is allowed
            self._robots[origin] = rules
        rules = self._robots[origin]
        return rules is None or rules.can_fetch(USER_AGENT_TOKEN, url)

    def fetch(self, url: str, **kwargs: Any) -> Fetched:
        if not self.allowed(url):
            raise FetchError(f"{url}: the site's robots.txt asks bots not to fetch it.")
        self._wait(url)
        return self.fetcher.fetch(url, **kwargs)


USER_AGENT_TOKEN = "citebot"
"""The name robots.txt rules are matched against (the fetcher's User-Agent starts with it)."""


# --------------------------------------------------------------------------- the pass


def now_iso() -> str:
    """The current UTC time, as stored."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def discover(fetcher: Fetcher, url: str) -> Subscription:
    """A new subscription for ``url``: a feed, a sitemap, or a page whose feed it links.

    Raises :class:`InputError` or :class:`FetchError` saying why ``url`` cannot be followed.
    """
    page = fetcher.fetch(url, raw=True)
    try:
        kind = kind_of(page)
    except InputError as exc:
        raise InputError(f"{page.url}: {exc}") from None
    if kind == "page":
        links = feed_links(page.data.decode("utf-8", "replace"), page.url)
        if not links:
            raise InputError(
                f'{url} is a web page without a feed (no <link rel="alternate"> to RSS or Atom). '
                "Give the address of its feed or of the site's sitemap."
            )
        page = fetcher.fetch(links[0], raw=True)
        if kind_of(page) != FEED:
            raise InputError(f"{url} links a feed at {links[0]}, but that is not RSS or Atom.")
        kind = FEED
    try:
        title = feed_entries(page.data)[0] if kind == FEED else ""
        if kind == SITEMAP:
            sitemap_entries(page.data)
    except InputError as exc:
        raise InputError(f"{page.url}: {exc}") from None
    return Subscription(url=page.url, kind=kind, added_at=now_iso(), title=title)


def sync(
    library: Library,
    fetcher: Fetcher,
    subscription: Subscription,
    *,
    max_pages: int = DEFAULT_MAX_PAGES,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    host_delay: float = DEFAULT_HOST_DELAY,
    sleep: Callable[[float], None] = time.sleep,
    today: datetime | None = None,
) -> SyncReport:
    """One pass over one subscription; ``subscription`` is updated in place (the caller stores it).

    A failure to read the feed or sitemap itself is reported as the subscription's failure and
    changes nothing (no page is forgotten because a sitemap could not be read).
    """
    report = SyncReport(subscription.url)
    polite = _Polite(fetcher, host_delay, sleep)
    today = today or datetime.now(UTC)
    subscription.last_sync = now_iso()
    try:
        entries = _list_entries(polite, subscription)
    except (FetchError, InputError) as exc:
        subscription.last_error = str(exc)
        report.failed.append((subscription.url, str(exc)))
        return report
    subscription.last_error = None
    if entries is None:  # 304: the feed or sitemap lists what it listed last time
        entries = [_Entry(str(url), stamp or "", published) for url, stamp, published in subscription.listing]
    else:
        subscription.listing = [[e.url, e.stamp, e.published] for e in entries]
    cutoff = (today - timedelta(days=retention_days)).date().isoformat()
    keep: dict[str, _Entry] = {}
    for entry in entries:
        if subscription.kind == FEED and entry.published and entry.published < cutoff:
            continue  # past the retention window: forgotten below if it was stored
        keep.setdefault(entry.url, entry)
    # A feed is a window on the latest items: an item that slid out of it stays until it is
    # past the retention window (its publication date, else when it was last checked).
    retained = {
        url
        for url, info in subscription.pages.items()
        if subscription.kind == FEED
        and url not in keep
        and (info.get("published") or str(info.get("checked", ""))[:10] or "0") >= cutoff
    }
    report.unchanged.extend(sorted(retained))
    gone = [url for url in subscription.pages if url not in keep and url not in retained]
    if gone:
        forgotten = library.forget_keys(gone)
        report.forgotten.extend(a.url or a.key for a in forgotten)
        for url in gone:
            subscription.pages.pop(url, None)
    for url in [u for u in subscription.failures if u not in keep]:
        del subscription.failures[url]  # no longer listed: nothing to retry
    # Pages due a fetch, in the order they get the pass's budget: new pages, then changed ones,
    # then known pages without a date (re-checked conditionally, the longest unchecked first),
    # then pages that failed before. A big sitemap without dates, or one full of broken
    # links, so cannot starve the rest: each pass moves on through the list.
    due: list[tuple[tuple[int, str], str, _Entry]] = []
    for url, entry in keep.items():
        known = subscription.pages.get(url)
        failed = subscription.failures.get(url)
        if known is not None and entry.stamp and known.get("stamp") == entry.stamp:
            report.unchanged.append(url)
            continue
        if failed is not None and failed.get("stamp") == entry.stamp:
            rank = 3
        elif known is None:
            rank = 0
        elif known.get("stamp") != entry.stamp:
            rank = 1
        else:
            rank = 2
        due.append(((rank, (known or failed or {}).get("checked", "")), url, entry))
    due.sort(key=lambda item: item[0])
    report.deferred = max(0, len(due) - max_pages)
    for _, url, entry in due[:max_pages]:
        known = subscription.pages.get(url)
        checked = now_iso()
        try:
            page = polite.fetch(
                url,
                etag=(known or {}).get("etag"),
                last_modified=(known or {}).get("last_modified"),
            )
        except FetchError as exc:
            _failed(subscription, report, url, entry, str(exc), checked)
            continue
        record = {
            "stamp": entry.stamp,
            "checked": checked,
            **({"published": entry.published} if entry.published else {}),
        }
        if page.status == 304:
            subscription.pages[url] = {**(known or {}), **record}
            subscription.failures.pop(url, None)
            report.unchanged.append(url)
            continue
        result = library.ingest(_with_key(parse_fetched(page), url))
        statuses = {r.status for r in result.results}
        if "skipped" in statuses and not statuses & {"added", "replaced", "unchanged"}:
            reasons = "; ".join(r.reason or "" for r in result.results if r.status == "skipped")
            _failed(subscription, report, url, entry, reasons or "nothing in it could be read", checked)
            continue
        subscription.failures.pop(url, None)
        subscription.pages[url] = {
            **record,
            **({"etag": page.etag} if page.etag else {}),
            **({"last_modified": page.last_modified} if page.last_modified else {}),
        }
        if "added" in statuses:
            report.added.append(url)
        elif "replaced" in statuses:
            report.replaced.append(url)
        else:
            report.unchanged.append(url)
    return report


def _failed(
    subscription: Subscription, report: SyncReport, url: str, entry: _Entry, reason: str, checked: str
) -> None:
    """Note a page that could not be fetched or read: reported now, retried after the others."""
    report.failed.append((url, reason))
    subscription.failures[url] = {"stamp": entry.stamp, "reason": reason, "checked": checked}


def _with_key(items: list[Document | InputError], url: str) -> Iterator[Document | InputError]:
    """Articles keyed by the URL the subscription lists (a redirect does not make a new one)."""
    for item in items:
        yield replace(item, key=url) if isinstance(item, Document) else item


def _list_entries(polite: _Polite, subscription: Subscription) -> list[_Entry] | None:
    """The pages the feed or sitemap lists now, or None when it answered 304 (unchanged)."""
    got = polite.fetch(
        subscription.url, etag=subscription.etag, last_modified=subscription.last_modified, raw=True
    )
    if got.status == 304:
        return None
    subscription.etag, subscription.last_modified = got.etag, got.last_modified
    if subscription.kind == FEED:
        title, entries = feed_entries(got.data)
        subscription.title = title or subscription.title
        return entries
    pages, children = sitemap_entries(got.data)
    for child in children[:MAX_SITEMAPS]:
        try:
            more, _ = sitemap_entries(polite.fetch(child, raw=True).data)
        except (FetchError, InputError) as exc:
            raise InputError(f"{child} (listed in the sitemap index): {exc}") from None
        pages.extend(more)
    return pages


def load_subscriptions(library: Library) -> list[Subscription]:
    """The library's subscriptions, oldest first."""
    try:
        stored = library.store.subscriptions(library.name)
    except EmptyLibraryError:
        return []
    subs = [Subscription.from_json(v) for v in stored.values()]
    return sorted(subs, key=lambda s: (s.added_at, s.url))


def save_subscription(library: Library, subscription: Subscription) -> None:
    """Store a subscription's state."""
    library.store.put_subscription(library.name, subscription.url, subscription.to_json())


def find_subscription(library: Library, url: str) -> Subscription | None:
    """The subscription with this URL (as given or as stored), or None."""
    for sub in load_subscriptions(library):
        if sub.url == url or sub.url.rstrip("/") == url.strip().rstrip("/"):
            return sub
    return None


def unsubscribe(library: Library, subscription: Subscription) -> list[str]:
    """Remove a subscription and forget the articles it brought in; returns their URLs."""
    forgotten = library.forget_keys(list(subscription.pages))
    library.store.delete_subscription(library.name, subscription.url)
    return [a.url or a.key for a in forgotten]


__all__ = [
    "FEED",
    "SITEMAP",
    "Subscription",
    "SyncReport",
    "discover",
    "feed_entries",
    "feed_links",
    "find_subscription",
    "kind_of",
    "load_subscriptions",
    "save_subscription",
    "sitemap_entries",
    "sync",
    "unsubscribe",
]
