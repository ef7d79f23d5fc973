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
