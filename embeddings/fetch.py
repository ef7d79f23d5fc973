"""Fetch an article from a URL without letting the URL reach the host's own network.

A URL given to the bot by a server admin is untrusted input: pointed at ``127.0.0.1``,
``169.254.169.254`` or ``10.0.0.5`` it would turn the bot into a probe of the machine it runs
on. So every connection, including each redirect hop, goes through :class:`_GuardedBackend`,
which resolves the host name itself, refuses it unless *every* address it resolves to is a
public one, and then connects to the address it vetted. Connecting to the vetted address (not
resolving again) closes the DNS-rebinding gap between the check and the connect; TLS still
verifies the certificate against the host name.

Downloads are streamed and stopped at ``max_bytes``; the whole fetch has a time limit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpcore
import httpx

from .articles import KIND_BY_SUFFIX, load_bytes
from .errors import FetchError, InputError
from .types import Document

DEFAULT_TIMEOUT = 10.0
"""Seconds a whole fetch (every redirect and the download) may take."""
DEFAULT_MAX_BYTES = 5_000_000
"""Largest body downloaded, in bytes."""
MAX_REDIRECTS = 5
USER_AGENT = "citebot/0.1 (article fetcher; +https://github.com/)"

Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(host, port)`` -> the IP addresses ``host`` resolves to (strings)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Content types by the parser they need; anything else that is not text is refused.
_KIND_BY_MIME = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
}
_GENERIC_MIMES = ("", "text/plain", "application/octet-stream", "binary/octet-stream")


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves ``host`` to, in its order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(
            f"Couldn't find the site {host!r} ({exc}): check the link; the site may no longer exist."
        ) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from (private, loopback...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address inside are judged by that address.
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return refusal_reason(inner)
    for reason, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return reason
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "not public"
    return None


class AddressGuard:
    """Resolves host names and lets through only public addresses (or explicitly allowed ones)."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        allowed_networks: Iterable[str] = (),
    ) -> None:
        self.resolver = resolver or system_resolver
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]

    def vet(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` if every one is allowed; else raise :class:`FetchError`."""
        addresses = list(self.resolver(host, port))
        if not addresses:
            raise FetchError(f"Couldn't find the site {host!r}: check the link.")
        for raw in addresses:
            try:
                ip = ipaddress.ip_address(raw.split("%", 1)[0])  # drop an IPv6 zone id
            except ValueError:
                raise FetchError(f"{host!r} resolved to {raw!r}, which is not an IP address.") from None
            if any(ip in net for net in self.allowed):
                continue
            reason = refusal_reason(ip)
            if reason is not None:
                # One bad address refuses the host: a resolver that answers with a public and a
                # private address would otherwise let the connection land on the private one.
                raise FetchError(
                    f"Refusing to fetch from {host}: it points to a {reason} network address "
                    f"({ip}). Only public web sites can be added."
                )
        return addresses


class _Deadline:
    """One fetch's time limit, shared by its DNS look-ups, connections, reads, writes and redirects."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, timeout: float | None = None) -> float:
        """Seconds an operation may take: its own timeout, but never past the deadline."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout(f"the {self.seconds:g} s limit passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the fetch's deadline.

    httpx's timeouts are per operation, so a server trickling one byte of its headers every few
    seconds would keep a fetch open for ever; here each read gets only the time that is left.
    """

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read at most ``max_bytes``, by the deadline."""
        return self.inner.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write ``buffer``, by the deadline."""
        self.inner.write(buffer, self.deadline.left(timeout))

    def close(self) -> None:
        """Close the socket."""
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """The TLS handshake, by the deadline; the encrypted stream keeps the deadline."""
        inner = self.inner.start_tls(ssl_context, server_hostname, self.deadline.left(timeout))
        return _DeadlineStream(inner, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        """What the socket reports (peer address, TLS details)."""
        return self.inner.get_extra_info(info)


def _resolve_by(deadline: _Deadline, guard: AddressGuard, host: str, port: int) -> list[str]:
    """``guard.vet(host, port)``, given up when the deadline passes (getaddrinfo has no timeout)."""
    future = _DNS.submit(guard.vet, host, port)
    try:
        return future.result(timeout=deadline.left())
    except concurrent.futures.TimeoutError:
        raise httpcore.ConnectTimeout(f"looking up {host} took longer than the limit") from None


_DNS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="citebot-dns")
"""Look-ups that outlive their fetch finish here without holding it up."""


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the guard has vetted, by a deadline."""

    def __init__(self, guard: AddressGuard, deadline: _Deadline | None = None) -> None:
        self.guard = guard
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve and vet ``host``, then connect to the first vetted address that answers."""
        error: Exception | None = None
        deadline = self.deadline
        addresses = (
            self.guard.vet(host, port) if deadline is None else _resolve_by(deadline, self.guard, host, port)
        )
        for address in addresses:
            try:
                if deadline is None:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                stream = super().connect_tcp(
                    address, port, deadline.left(timeout), local_address, socket_options
                )
                return _DeadlineStream(stream, deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # vet() never returns an empty list
        raise error


def _transport(guard: AddressGuard, deadline: _Deadline | None = None) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx 0.28 has no public way to pass a network backend, so swap the (still unused)
    # connection pool for one that connects through the guard.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=4,
        network_backend=_GuardedBackend(guard, deadline),
    )
    return transport


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded page: its final URL (after redirects), parser kind and body.

    ``status`` is 304 (and ``data`` empty) when a conditional fetch found the page unchanged;
    ``etag`` and ``last_modified`` are the validators to send next time.
    """

    url: str
    kind: str
    content_type: str
    data: bytes
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None


def parse_fetched(page: Fetched) -> list[Document | InputError]:
    """A downloaded page parsed into articles (or per-record errors, for JSONL)."""
    path = urlsplit(page.url).path.rstrip("/")
    name = unquote(path.rsplit("/", 1)[-1]) or urlsplit(page.url).hostname or page.url
    return list(load_bytes(page.data, name=name, key=page.url, url=page.url, kind=page.kind))


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{max(1, n // 1000)} kB"


class Fetcher:
    """Downloads articles over HTTP(S) with a time limit, a size cap and an address guard.

    ``allow_private=True`` lets it reach loopback and private addresses (tests against a local
    server; an intranet deployment); ``allowed_networks`` opens only the listed networks.
    ``resolver`` replaces DNS (tests).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        networks = list(allowed_networks) + (["0.0.0.0/0", "::/0"] if allow_private else [])
        self.guard = AddressGuard(resolver, networks)

    # ------------------------------------------------------------------ public

    def load(self, url: str) -> list[Document | InputError]:
        """Fetch ``url`` and parse it into articles (or per-record errors, for JSONL)."""
        return parse_fetched(self.fetch(url))

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        raw: bool = False,
    ) -> Fetched:
        """Download ``url``; raise :class:`FetchError` with a readable reason when it fails.

        ``etag``/``last_modified`` make the request conditional: an unchanged page answers 304
        and comes back with ``status`` 304 and no body. ``raw`` accepts any content type (feeds,
        sitemaps, robots.txt) and leaves the body as it came (``kind`` "raw").
        """
        current = self._check_url(url)
        # One deadline for everything: DNS, connecting, TLS, every header and body byte, every
        # redirect hop. A per-operation timeout alone lets a trickling server hold a fetch open.
        limit = _Deadline(self.timeout)
        deadline = limit.end
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "text/html,application/xhtml+xml,text/plain,text/markdown;q=0.9,*/*;q=0.1",
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with httpx.Client(
            transport=_transport(self.guard, limit),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,  # each hop is checked here, then connected through the guard
            headers=headers,
            trust_env=False,
        ) as client:
            for _ in range(self.max_redirects + 1):
                try:
                    with client.stream("GET", current) as response:
                        location = response.headers.get("location")
                        if response.is_redirect and location:  # a 3xx with a Location header
                            current = self._check_url(urljoin(str(response.url), location))
                            continue
                        if response.status_code == 304 and (etag or last_modified):
                            return Fetched(
                                current,
                                "raw",
                                "",
                                b"",
                                304,
                                response.headers.get("etag") or etag,
                                response.headers.get("last-modified") or last_modified,
                            )
                        return self._read(response, current, deadline, raw=raw)
                except httpx.TimeoutException:
                    raise FetchError(
                        f"{current} took longer than {self.timeout:g} s to answer. Try again later, "
                        "or download the page and upload it as a file."
                    ) from None
                except httpx.ConnectError as exc:
                    raise FetchError(
                        f"Couldn't connect to {urlsplit(current).hostname} ({exc}). The site may be "
                        "down; check the link."
                    ) from None
                except httpx.HTTPError as exc:
                    raise FetchError(f"Downloading {current} failed: {exc}.") from None
        raise FetchError(f"{url} redirects more than {self.max_redirects} times; giving up.")

    # ------------------------------------------------------------------ steps

    @staticmethod
    def _check_url(url: str) -> str:
        raw = url.strip().strip("<>")  # Discord users wrap links in <> to hide the preview
        try:
            parsed = httpx.URL(raw)
        except httpx.InvalidURL as exc:
            raise FetchError(f"{url!r} is not a valid link ({exc}).") from None
        if parsed.scheme not in ("http", "https"):
            raise FetchError(f"{url!r} is not a web link: only http:// and https:// links can be added.")
        if not parsed.host:
            raise FetchError(f"{url!r} has no site name.")
        return str(parsed)

    def _kind(self, response: httpx.Response, url: str) -> str:
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        suffix = "." + urlsplit(url).path.rsplit(".", 1)[-1].lower() if "." in urlsplit(url).path else ""
        by_suffix = KIND_BY_SUFFIX.get(suffix)
        if mime in _GENERIC_MIMES and by_suffix:
            return by_suffix  # e.g. a .md file served as text/plain
        if mime in _KIND_BY_MIME:
            return _KIND_BY_MIME[mime]
        if mime.startswith("text/"):
            return "txt"
        raise FetchError(
            f"{url} is a {mime or 'file of unknown type'}, not a web page, text or PDF. Only HTML, "
            "plain text, Markdown, JSONL and PDF can be added."
        )

    def _read(self, response: httpx.Response, url: str, deadline: float, *, raw: bool = False) -> Fetched:
        status = response.status_code
        if status in (404, 410):
            raise FetchError(f"{url} was not found (HTTP {status}): check the link.")
        if status in (401, 403):
            raise FetchError(f"{url} refused access (HTTP {status}); only public pages can be added.")
        if status >= 400:
            raise FetchError(f"{url} answered with an error (HTTP {status}). Try again later.")
        if status >= 300:
            raise FetchError(f"{url} answered HTTP {status} without saying where the page is.")
        kind = "raw" if raw else self._kind(response, url)
        too_large = FetchError(
            f"{url} is larger than the {_size(self.max_bytes)} limit. Download it and upload a "
            "smaller file, or split it."
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > self.max_bytes:
                raise too_large  # stop reading: a lying or missing Content-Length cannot bypass the cap
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("deadline passed")  # reported like any other timeout
            chunks.append(chunk)
        data = b"".join(chunks)
        charset = response.charset_encoding
        if (
            kind not in ("pdf", "raw")
            and charset
            and charset.lower().replace("_", "-") not in ("utf-8", "utf8", "ascii", "us-ascii")
        ):
            # The parsers expect UTF-8 (or sniff it); honour the charset the server declared.
            with contextlib.suppress(LookupError, UnicodeDecodeError):  # else the parser sniffs
                data = data.decode(charset).encode("utf-8")
        return Fetched(
            str(response.url),
            kind,
            response.headers.get("content-type", ""),
            data,
            status,
            response.headers.get("etag"),
            response.headers.get("last-modified"),
        )


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "AddressGuard",
    "Fetched",
    "Fetcher",
    "refusal_reason",
    "system_resolver",
]
