"""Settings: environment over .env over defaults; every setting documented; clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, read_env_file

from .conftest import ROOT


def test_env_example_lists_every_setting():
    text = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.M))
    documented = {env for env, _ in Settings.documented()}
    assert documented <= names, f"missing from .env.example: {sorted(documented - names)}"
    assert names <= documented, f"unknown in .env.example: {sorted(names - documented)}"


def test_env_example_loads_as_the_defaults(tmp_path: Path):
    s = Settings.load(environ={}, env_file=ROOT / ".env.example")
    d = Settings.load(environ={}, env_file=None)
    assert s == d


def test_environment_beats_env_file(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text('CITEBOT_LIBRARY="from-file"\nexport CITEBOT_BATCH_SIZE=8  # comment\n')
    s = Settings.load(environ={"CITEBOT_LIBRARY": "from-env"}, env_file=env_file)
    assert s.library == "from-env"
    assert s.batch_size == 8


def test_defaults(tmp_path: Path):
    s = Settings.load(environ={}, env_file=tmp_path / "missing.env")
    assert s.model == "all-MiniLM-L6-v2" and s.precision == "auto" and s.library == "default"
    assert s.data_dir.name == "citebot"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CITEBOT_BATCH_SIZE": "0"}, "CITEBOT_BATCH_SIZE must be at least 1"),
        ({"CITEBOT_PRECISION": "fp8"}, "CITEBOT_PRECISION must be one of auto, fp32, bf16"),
        ({"CITEBOT_ABSTAIN_THRESHOLD": "high"}, "CITEBOT_ABSTAIN_THRESHOLD must be a number"),
    ],
)
def test_bad_values(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=env, env_file=None)


def test_malformed_env_file(tmp_path: Path):
    f = tmp_path / ".env"
    f.write_text("GOOD=1\nthis line is wrong\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=value"):
        read_env_file(f)


def test_token_is_not_in_repr():
    s = Settings.load(environ={"DISCORD_TOKEN": "secret-token-value"}, env_file=None)
    assert "secret-token-value" not in repr(s)


def test_core_never_imports_discord():
    code = (
        "import sys, embeddings, embeddings.store.local, embeddings.evaluate; print('discord' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_core_reads_no_environment():
    # The core takes explicit arguments: no os.environ / getenv anywhere in embeddings/.
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "embeddings").rglob("*.py")
        if re.search(r"os\.environ|getenv\(", p.read_text())
    ]
    assert offenders == []


def test_run_settings(tmp_path: Path):
    env = {
        "CITEBOT_DATA_DIR": str(tmp_path),
        "DISCORD_API_BASE": "http://127.0.0.1:8080/api/v10/",
        "CITEBOT_OPS_PORT": "9100",
        "CITEBOT_LOG_FORMAT": "JSON",
    }
    s = Settings.load(environ=env, env_file=None)
    assert s.discord_api_base == "http://127.0.0.1:8080/api/v10"  # discord.py appends "/users/@me"
    assert (s.ops_host, s.ops_port, s.log_format) == ("127.0.0.1", 9100, "json")
    defaults = Settings.load(environ={"DISCORD_API_BASE": "", "CITEBOT_OPS_HOST": ""}, env_file=None)
    assert defaults.discord_api_base == "https://discord.com/api/v10" and defaults.ops_host == "127.0.0.1"
    assert defaults.ops_port is None and defaults.shutdown_timeout == 15.0
    for bad in ({"DISCORD_API_BASE": "discord.com/api"}, {"CITEBOT_OPS_PORT": "70000"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.load(environ=bad, env_file=None)


def test_json_log_lines_carry_the_traceback():
    import json
    import logging

    from bot.ops import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("citebot", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == ("error", "citebot", "failed x")
    assert "ValueError: boom" in line["traceback"]
