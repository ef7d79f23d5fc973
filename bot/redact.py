"""One redaction layer for everything citebot prints or logs: no secret ever reaches output.

A :class:`Redactor` knows the secret values of the running process (the Discord token, the
database password, any setting named like a secret) and masks them wherever they appear,
including inside third-party exception text (psycopg quotes the connection string it could not
parse; aiohttp quotes headers). It also masks any password written in a URL
(``scheme://user:PASSWORD@host``) or in a libpq keyword string (``password=…``), known or not.

The command line wraps its stderr (and so the log handler that writes there) in a
:class:`RedactingStream`; the bot's log records pass the same :class:`RedactingFilter`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

MASK = "[redacted]"

SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|PWD|API_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH)(?:_|$)",
    re.IGNORECASE,
)
"""Setting names whose values are secrets (DISCORD_TOKEN, DB_PASSWORD; not CITEBOT_CHUNK_TOKENS)."""

_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*:/*[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE
)
_USERINFO_PASSWORD = re.compile(r"[:=]([^\s:@/]{3,})@")
_MIN_SECRET = 4  # shorter values would mask ordinary words
# Named like secrets, but the shell's working directories: masking them hid every path printed
# from inside the current folder ("Built library 'default' from [redacted]/seeds").
_NOT_SECRETS = frozenset({"PWD", "OLDPWD"})


def secrets_in(environ: Mapping[str, str]) -> set[str]:
    """The secret values among ``environ``: values of secret-named variables and URL passwords."""
    found: set[str] = set()
    for name, value in environ.items():
        if not value:
            continue
        if SECRET_NAME.search(name) and name.upper() not in _NOT_SECRETS:
            found.add(value.strip().strip("\"'"))
        if "URL" in name.upper() or "DSN" in name.upper():
            # Even a malformed URL ("postgres//user:PW@host") has its password before the "@".
            found.update(m.group(1) for m in _USERINFO_PASSWORD.finditer(value))
            found.update(m.group("pw").strip("\"'") for m in _KEYWORD_PASSWORD.finditer(value))
    return {s for s in found if len(s) >= _MIN_SECRET}


class Redactor:
    """Masks known secrets and any password written in a URL or a keyword string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        """Mask these values too."""
        self.secrets = sorted(
            {*self.secrets, *(s for s in secrets if len(s) >= _MIN_SECRET)}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked.

        Every span to mask is found in the original text first, known secrets and passwords in
        URLs or keyword strings alike, and then masked together: masking one kind first could
        hide what finds the other (a known secret that is the word "password" would unmask the
        keyword's value).
        """
        spans: list[tuple[int, int]] = []
        for secret in self.secrets:
            at = text.find(secret)
            while at != -1:
                spans.append((at, at + len(secret)))
                at = text.find(secret, at + 1)
        for pattern in (_URL_PASSWORD, _KEYWORD_PASSWORD):
            spans.extend(m.span("pw") for m in pattern.finditer(text))
        if not spans:
            return text
        out: list[str] = []
        done = 0
        for start, end in sorted(spans):
            if end <= done:
                continue
            if start >= done:
                out.append(text[done:start])
                out.append(MASK)
            done = end
        out.append(text[done:])
        return "".join(out)


class RedactingStream:
    """A text stream that masks secrets in everything written to it."""

    def __init__(self, inner: TextIO, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def write(self, text: str) -> int:
        """Write ``text`` with secrets masked."""
        self.inner.write(self.redactor(text))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.inner.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal."""
        return self.inner.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message and traceback before any handler formats it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message and traceback text with secrets masked."""
        message = record.getMessage()
        masked = self.redactor(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True


__all__ = ["MASK", "SECRET_NAME", "RedactingFilter", "RedactingStream", "Redactor", "secrets_in"]
