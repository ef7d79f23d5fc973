"""No secret is ever printed: the token, database passwords and secret-named settings are masked
in every output path (errors, logs with -v, tracebacks), including inside other libraries' text."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.redact import MASK, RedactingFilter, Redactor, secrets_in

from .conftest import ROOT

secret = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=8, max_size=40
)

# Every way DATABASE_URL can be wrong that makes the driver quote it back.
BAD_URLS = [
    "postgres//user:{pw}@localhost/db",
    "mysql://user:{pw}@127.0.0.1:1/db",
    "postgresql://user:{pw}@127.0.0.1:1/db?connect_timeout=2",
    "host=127.0.0.1 port=1 user=u password={pw} connect_timeout=2",
    "postgresql://user:{pw}@/db?host=/nonexistent&connect_timeout=2",
]


def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """``citebot ARGS`` in a real process: its exit status, stdout and stderr."""
    full = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
    full.update(env, PYTHONPATH=str(ROOT), CITEBOT_DATA_DIR=str(cwd / "data"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("template", BAD_URLS)
@pytest.mark.parametrize("verbose", [False, True])
def test_a_broken_database_url_never_prints_its_password(tmp_path: Path, template: str, verbose: bool):
    password, token = "Pw-s3cret-9f8e7d", "MTA5ODc2.secret-token-abcdef"
    env = {"DATABASE_URL": template.format(pw=password), "DISCORD_TOKEN": token}
    code, out, err = run(["articles", *(["-v"] if verbose else [])], env, tmp_path)
    assert code != 0 and err.strip(), "the user is told what went wrong"
    assert password not in out + err and token not in out + err


def test_a_malformed_env_line_is_not_echoed(tmp_path: Path):
    token, password = "MTA5ODc2.secret-token-abcdef", "Pw-s3cret-9f8e7d"
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=postgresql://u:{password}@127.0.0.1:1/db\nDISCORD_TOKEN: {token}\n"
    )
    code, out, err = run(["articles"], {}, tmp_path)
    assert code != 0 and ".env:2: expected KEY=value" in err and "DISCORD_TOKEN" in err
    assert token not in out + err and password not in out + err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=secret, password=secret, other=secret)
def test_the_redactor_masks_every_known_secret_wherever_it_appears(
    token: str, password: str, other: str
) -> None:
    env = {
        "DISCORD_TOKEN": token,
        "DATABASE_URL": f"postgresql://citebot:{password}@db.internal:5432/citebot",
        "SOME_API_KEY": other,
        "CITEBOT_LIBRARY": "default",
    }
    redact = Redactor(secrets_in(env))
    text = (
        f"connect failed: invalid dsn 'postgresql://citebot:{password}@db.internal' "
        f"Authorization: Bot {token} key={other} password={password}"
    )
    masked = redact(text)
    for value in (token, password, other):
        assert value not in masked
    assert MASK in masked and "db.internal" in masked  # the rest stays readable
    # Unknown passwords in URLs and keyword strings are masked too.
    assert "hunter22" not in redact("postgres://bob:hunter22@x/y and password=hunter22")


def test_log_records_and_tracebacks_are_masked(caplog: pytest.LogCaptureFixture):
    token = "MTA5ODc2.secret-token-abcdef"
    logger = logging.getLogger("citebot.test.secrets")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(Redactor([token])))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"gateway refused token {token}")
        except RuntimeError:
            logger.exception("login failed with %s", token)
    finally:
        logger.removeHandler(handler)
    assert token not in stream.getvalue() and MASK in stream.getvalue()


def test_in_process_errors_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    password = "Pw-s3cret-9f8e7d"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", f"postgres//user:{password}@localhost/db")
    out, err = io.StringIO(), io.StringIO()
    assert main(["feedback"], out=out, err=err) != 0
    assert password not in out.getvalue() + err.getvalue() and err.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    folder=st.text(
        alphabet=st.characters(categories=("L", "N"), include_characters="/._-"), min_size=4, max_size=40
    ),
    password=st.text(alphabet=st.characters(categories=("L", "N")), min_size=8, max_size=30),
)
def test_the_working_directory_is_not_a_secret_but_a_pwd_setting_is(folder: str, password: str):
    # PWD is named like a password but is the shell's current folder: masking it hid every
    # path printed from inside it ("Built library 'default' from [redacted]/seeds").
    assume(password not in folder)
    found = secrets_in({"PWD": folder, "OLDPWD": folder, "DB_PWD": password})
    assert found == {password}
    assert Redactor(found)(f"Built library 'default' from {folder}/seeds") == (
        f"Built library 'default' from {folder}/seeds"
    )
