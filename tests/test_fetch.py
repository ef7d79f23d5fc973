"""The URL fetcher against a real HTTP server on 127.0.0.1, and its address guard."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

from embeddings import Document, FetchError
from embeddings.fetch import Fetcher, refusal_reason

from .conftest import local_http
from .test_pdf import make_pdf

ARTICLE_HTML = b"""<!doctype html><html><head><title>Harbour seals return to the estuary</title>
<meta name="author" content="Mia Lund"></head><body><article>
<h1>Harbour seals return to the estuary</h1>
<p>Harbour seals have returned to the Thames estuary in numbers not seen for decades, a survey
by the Zoological Society found this spring.</p>
<p>Counters in light aircraft found 1,200 seals resting on sandbanks, up from 700 a decade ago,
which the researchers credit to cleaner water and more fish.</p>
</article></body></html>"""

NOTES_MD = b"""# Field notes on grey seals

Grey seals haul out on the outer sandbanks at low tide.

They are larger than harbour seals and have a longer, straighter nose.
"""


class Handler(BaseHTTPRequestHandler):
    """Routes for the tests; records the Host header of every request."""

    hosts: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the fetcher gave up first
            self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]
        path = self.path
        if path == "/article.html":
            self._send(200, ARTICLE_HTML, "text/html; charset=utf-8")
        elif path == "/notes.md":
            self._send(200, NOTES_MD, "text/plain")  # how raw file hosts serve Markdown
        elif path == "/latin1.txt":
            body = "Café society\n\nThe café on the quay sells crème brûlée to seal watchers.\n"
            self._send(200, body.encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif path == "/manual.pdf":
            # A binary type with a charset (some servers add one to everything): never re-encoded.
            self._send(200, MANUAL_PDF, "application/pdf; charset=iso-8859-1")
        elif path == "/missing":
            self._send(404, b"not here", "text/plain")
        elif path == "/image.png":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")
        elif path == "/big-declared":
            self._send(200, b"x" * 5000, "text/plain")
        elif path == "/big-streamed":
            # No Content-Length: the body ends when the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"seal " * 200)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the fetcher stopped reading at its cap, as it should
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, b"late", "text/plain")
        elif path == "/redirect-ok":
            self._send(302, b"", "text/plain", {"Location": "/article.html"})
        elif path == "/redirect-private":
            self._send(302, b"", "text/plain", {"Location": f"http://127.0.0.2:{port}/article.html"})
        elif path == "/trickle":
            # Headers one byte at a time, each well inside a per-read timeout.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: " + b"x" * 200:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
        elif path.startswith("/slow-hop/"):
            n = int(path.rsplit("/", 1)[1])
            time.sleep(0.3)
            self._send(
                302, b"", "text/plain", {"Location": f"/slow-hop/{n + 1}" if n < 4 else "/article.html"}
            )
        elif path == "/no-location":
            self._send(302, b"", "text/plain")
        elif path == "/loop":
            self._send(302, b"", "text/plain", {"Location": "/loop"})
        else:
            self._send(404, b"", "text/plain")


MANUAL_PDF = make_pdf(
    [["The harbour master rings the brass bell at noon, so that the crews know the tide is turning."]],
    header=None,
    title="Harbour Manual",
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with local_http(Handler) as url:
        yield url


@pytest.fixture
def local() -> Fetcher:
    """A fetcher allowed to reach the local test server (and only 127.0.0.1)."""
    return Fetcher(timeout=3, max_bytes=4000, allowed_networks=["127.0.0.1/32"])


def test_fetches_and_parses_html(server: str, local: Fetcher):
    docs = local.load(f"{server}/article.html")
    assert len(docs) == 1 and isinstance(docs[0], Document)
    doc = docs[0]
    assert doc.title == "Harbour seals return to the estuary"
    assert doc.url == f"{server}/article.html" and doc.key == doc.url
    assert "1,200 seals" in doc.text


def test_markdown_served_as_text_plain_is_parsed_as_markdown(server: str, local: Fetcher):
    page = local.fetch(f"{server}/notes.md")
    assert page.kind == "md"
    (doc,) = local.load(f"{server}/notes.md")
    assert isinstance(doc, Document) and doc.title == "Field notes on grey seals"
    assert "#" not in doc.text


def test_declared_charset_is_honoured(server: str, local: Fetcher):
    (doc,) = local.load(f"{server}/latin1.txt")
    assert isinstance(doc, Document) and "crème brûlée" in doc.text


def test_loopback_is_refused_by_default_before_any_request(server: str):
    before = len(Handler.hosts)
    with pytest.raises(FetchError, match="loopback network address"):
        Fetcher().fetch(f"{server}/article.html")
    assert len(Handler.hosts) == before  # nothing reached the server


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (["10.1.2.3"], "private"),
        (["192.168.1.20"], "private"),
        (["169.254.169.254"], "link-local"),  # cloud metadata service
        (["::1"], "loopback"),
        (["::ffff:127.0.0.1"], "loopback"),  # IPv4-mapped IPv6
        (["fe80::1"], "link-local"),
        (["100.64.0.1"], "not public"),  # carrier-grade NAT
        (["0.0.0.0"], "unspecified"),
        (["93.184.216.34", "127.0.0.1"], "loopback"),  # one bad answer refuses the host
    ],
)
def test_host_names_resolving_to_internal_addresses_are_refused(answer: list[str], reason: str):
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return answer

    fetcher = Fetcher(resolver=resolver)
    with pytest.raises(FetchError, match=f"Refusing to fetch from intranet.example: it points to a {reason}"):
        fetcher.fetch("https://intranet.example/wiki")
    assert calls == [("intranet.example", 443)]


def test_numeric_host_spellings_of_loopback_are_refused():
    # 2130706433 == 127.0.0.1; the system resolver turns it into the dotted address.
    with pytest.raises(FetchError, match="loopback"):
        Fetcher().fetch("http://2130706433/")
    with pytest.raises(FetchError, match="loopback"):
        Fetcher().fetch("http://[::1]:8080/")


def test_connects_to_the_vetted_address_and_keeps_the_host_name(server: str):
    """The name is resolved once, by the guard; the request still names the site."""
    port = int(server.rsplit(":", 1)[1])
    calls: list[str] = []

    def resolver(host: str, p: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    fetcher = Fetcher(resolver=resolver, allowed_networks=["127.0.0.1/32"])
    (doc,) = fetcher.load(f"http://news.test:{port}/article.html")
    assert isinstance(doc, Document) and doc.url == f"http://news.test:{port}/article.html"
    assert Handler.hosts[-1] == f"news.test:{port}"
    assert calls == ["news.test"]


def test_a_pdf_link_is_read_as_a_pdf(server: str, local: Fetcher):
    (doc,) = local.load(f"{server}/manual.pdf")
    assert isinstance(doc, Document)
    assert doc.title == "Harbour Manual" and doc.url == f"{server}/manual.pdf"
    assert "brass bell at noon" in doc.text and doc.layout.pages == (1,)


def test_redirects_are_followed_and_each_hop_is_checked(server: str, local: Fetcher):
    (doc,) = local.load(f"{server}/redirect-ok")
    assert isinstance(doc, Document) and doc.url == f"{server}/article.html"
    with pytest.raises(FetchError, match=r"Refusing to fetch from 127\.0\.0\.2: it points to a loopback"):
        local.fetch(f"{server}/redirect-private")
    with pytest.raises(FetchError, match="redirects more than 5 times"):
        local.fetch(f"{server}/loop")


def test_size_cap_holds_with_and_without_content_length(server: str, local: Fetcher):
    with pytest.raises(FetchError, match="larger than the 4 kB limit"):
        local.fetch(f"{server}/big-declared")
    with pytest.raises(FetchError, match="larger than the 4 kB limit"):
        local.fetch(f"{server}/big-streamed")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing", r"was not found \(HTTP 404\)"),
        ("/image.png", "is a image/png, not a web page, text or PDF"),
    ],
)
def test_http_errors_and_binary_files_are_explained(server: str, local: Fetcher, path: str, message: str):
    with pytest.raises(FetchError, match=message):
        local.fetch(server + path)


def test_timeout(server: str):
    fetcher = Fetcher(timeout=0.4, allowed_networks=["127.0.0.1/32"])
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 0\.4 s"):
        fetcher.fetch(f"{server}/slow")
    assert time.monotonic() - start < 1.4


@pytest.mark.parametrize("path", ["/trickle", "/slow-hop/0"])
def test_the_time_limit_covers_every_byte_and_every_redirect(server: str, path: str):
    # Each byte of /trickle and each hop of /slow-hop comes well inside any per-operation
    # timeout; only one deadline over the whole fetch stops them.
    fetcher = Fetcher(timeout=0.8, allowed_networks=["127.0.0.1/32"])
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 0\.8 s"):
        fetcher.fetch(f"{server}{path}")
    assert time.monotonic() - start < 1.5


def test_a_redirect_without_a_location_is_explained(server: str, local: Fetcher):
    with pytest.raises(FetchError, match="HTTP 302 without saying where the page is"):
        local.fetch(f"{server}/no-location")


def test_a_dns_lookup_that_hangs_is_bounded_too():
    def hanging(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["93.184.216.34"]

    fetcher = Fetcher(timeout=0.5, resolver=hanging)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 0\.5 s"):
        fetcher.fetch("http://slow-dns.example/page")
    assert time.monotonic() - start < 1.2


def test_dead_link_and_bad_schemes(local: Fetcher):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=r"Couldn't connect to 127\.0\.0\.1"):
        local.fetch(f"http://127.0.0.1:{port}/")
    with pytest.raises(FetchError, match="only http:// and https://"):
        local.fetch("ftp://example.com/file.txt")
    with pytest.raises(FetchError, match="only http:// and https://"):
        local.fetch("file:///etc/passwd")
    with pytest.raises(FetchError, match="Couldn't find the site"):
        Fetcher(resolver=lambda h, p: []).fetch("https://gone.example/")


def test_refusal_reason_accepts_public_addresses():
    for public in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"):
        assert refusal_reason(ipaddress.ip_address(public)) is None
    for internal in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "224.0.0.1", "fc00::1", "2002:7f00:1::"):
        assert refusal_reason(ipaddress.ip_address(internal)) is not None


def test_cli_ingests_urls_and_explains_dead_links(
    server: str, tmp_path, monkeypatch: pytest.MonkeyPatch, hash_encoder
):
    # The command line is the operator's own tool: it may fetch from this machine's network.
    import io

    from bot.cli import EXIT_OK, main

    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["ingest", f"{server}/article.html", f"{server}/missing"], out=out, err=err, encoder=hash_encoder
    )
    assert code == EXIT_OK, err.getvalue()
    assert "added" in out.getvalue()
    assert "1 added, 0 replaced, 0 unchanged, 1 skipped." in out.getvalue()
    assert "/missing" in err.getvalue() and "404" in err.getvalue()
