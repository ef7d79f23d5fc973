"""Settings: the one place that reads the environment and ``.env``.

Every setting has a default that works on a fresh machine with no Discord token and no
database. ``.env.example`` lists them all with a comment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from embeddings.errors import InputError
from embeddings.library import DEFAULT_MAX_ARTICLE_CHARS
from embeddings.search import SENTENCE_VECTORS
from embeddings.store import check_library_name

from .redact import secrets_in

_PROJECT_ROOT = Path(__file__).resolve().parent.parent

DISCORD_API = "https://discord.com/api/v10"
"""Discord's REST API, the default of ``DISCORD_API_BASE`` (discord.py's ``Route.BASE``)."""


DM_DEMO_LIBRARY = "dm-demo"
"""The library of direct messages by default: filled from the seeds folder on first use."""


class ConfigError(InputError):
    """A setting has a value citebot cannot use."""


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("citebot", appauthor=False))


def _default_seeds() -> Path | None:
    for candidate in (Path.cwd() / "seeds", _PROJECT_ROOT / "seeds"):
        if candidate.is_dir():
            return candidate
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes/``export``."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return values
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the settings file ({exc}).") from exc
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if not m:
            # Never echo the line: a mistyped "DISCORD_TOKEN: MTA…" is still a secret.
            start = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)", raw)
            shown = f"it starts with {start.group(1)!r}" if start else "its text is not shown"
            raise ConfigError(f"{path}:{n}: expected KEY=value ({shown}; the rest is hidden).")
        key, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)  # trailing comment on an unquoted value
        values[key] = value
    return values


def _int(name: str, lo: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            v = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
        if lo is not None and v < lo:
            raise ConfigError(f"{name} must be at least {lo}, not {v}.")
        return v

    return parse


def _float(name: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}.") from None

    return parse


def _choice(name: str, options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, not {raw!r}.")
        return v

    return parse


def _bool(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        v = raw.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}.")

    return parse


def _positive(name: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        v = _float(name)(raw)
        if v <= 0:
            raise ConfigError(f"{name} must be more than 0, not {raw!r}.")
        return v

    return parse


def _ids(name: str) -> Callable[[str], tuple[int, ...]]:
    """A comma-separated list of whole numbers (Discord ids, shard numbers)."""

    def parse(raw: str) -> tuple[int, ...]:
        parts = [p for p in re.split(r"[\s,]+", raw.strip()) if p]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"{name} must be whole numbers separated by commas, not {raw!r}.") from None
        if any(v < 0 for v in values):
            raise ConfigError(f"{name} cannot hold negative numbers: {raw!r}.")
        return values

    return parse


def _cooldown(name: str) -> Callable[[str], tuple[int, float] | None]:
    """``"3/30"`` (3 uses per 30 seconds), ``"10"`` (one per 10 seconds) or ``"off"``."""

    def parse(raw: str) -> tuple[int, float] | None:
        v = raw.strip().lower()
        if v in ("", "0", "off", "none", "no"):
            return None
        m = re.fullmatch(r"(?:(\d+)\s*/\s*)?(\d+(?:\.\d+)?)\s*s?", v)
        if not m or (m.group(1) is not None and int(m.group(1)) < 1) or float(m.group(2)) <= 0:
            raise ConfigError(
                f"{name} must look like 3/30 (3 questions per 30 seconds), 10 (one per 10 seconds) "
                f"or off, not {raw!r}."
            )
        return (int(m.group(1) or 1), float(m.group(2)))

    return parse


def _http_url(name: str) -> Callable[[str], str]:
    """An http(s) URL without a trailing slash (discord.py appends paths such as ``/users/@me``).

    Empty means Discord's own API.
    """

    def parse(raw: str) -> str:
        v = raw.strip().rstrip("/")
        if not v:
            return DISCORD_API
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ConfigError(
                f"{name} must be an http:// or https:// URL such as {DISCORD_API}, not {raw!r}."
            )
        return v

    return parse


def _port(name: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        v = _int(name, 0)(raw)
        if v > 65535:
            raise ConfigError(f"{name} must be a port number from 0 to 65535, not {v}.")
        return v

    return parse


def _networks(name: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated networks or addresses ("10.0.0.0/8, 192.168.1.20"), checked as such."""

    def parse(raw: str) -> tuple[str, ...]:
        out = []
        for part in (p for p in re.split(r"[\s,]+", raw.strip()) if p):
            try:
                out.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise ConfigError(
                    f"{name}: {part!r} is not a network or an address (write 10.0.0.0/8 or 192.168.1.20)."
                ) from None
        return tuple(out)

    return parse


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _opt(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda raw: parse(raw) if raw.strip() else None


def _setting(env: str, parse: Callable[[str], Any], default: Any = None, **kw: Any) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse}, **kw)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of citebot. Build it with :meth:`load`."""

    data_dir: Path = _setting("CITEBOT_DATA_DIR", _opt(_path), None)
    library: str = _setting("CITEBOT_LIBRARY", str, "default")
    seeds_dir: Path | None = _setting("CITEBOT_SEEDS_DIR", _opt(_path), None)
    model: str = _setting("CITEBOT_MODEL", str, "all-MiniLM-L6-v2")
    precision: str = _setting(
        "CITEBOT_PRECISION", _choice("CITEBOT_PRECISION", ("auto", "fp32", "bf16")), "auto"
    )
    batch_size: int = _setting("CITEBOT_BATCH_SIZE", _int("CITEBOT_BATCH_SIZE", 1), 16)
    chunk_tokens: int | None = _setting("CITEBOT_CHUNK_TOKENS", _opt(_int("CITEBOT_CHUNK_TOKENS", 8)), None)
    chunk_overlap: int = _setting("CITEBOT_CHUNK_OVERLAP", _int("CITEBOT_CHUNK_OVERLAP", 0), 1)
    sentence_vectors: str = _setting(
        "CITEBOT_SENTENCE_VECTORS", _choice("CITEBOT_SENTENCE_VECTORS", SENTENCE_VECTORS), "late"
    )
    abstain_threshold: float | None = _setting(
        "CITEBOT_ABSTAIN_THRESHOLD", _opt(_float("CITEBOT_ABSTAIN_THRESHOLD")), None
    )
    cross_encoder: str | None = _setting("CITEBOT_CROSS_ENCODER", _opt(str), None)
    log_level: str = _setting(
        "CITEBOT_LOG_LEVEL",
        _choice("CITEBOT_LOG_LEVEL", ("debug", "info", "warning", "error")),
        "warning",
    )
    discord_token: str | None = _setting("DISCORD_TOKEN", _opt(str), None, repr=False)
    # The Discord front end (``citebot run``).
    dev_guild_id: int | None = _setting("DEV_GUILD_ID", _opt(_int("DEV_GUILD_ID", 1)), None)
    owner_ids: tuple[int, ...] = _setting("CITEBOT_OWNER_IDS", _ids("CITEBOT_OWNER_IDS"), ())
    dm_library: str | None = _setting("CITEBOT_DM_LIBRARY", _opt(str), None)
    ask_cooldown: tuple[int, float] | None = _setting(
        "CITEBOT_ASK_COOLDOWN", _cooldown("CITEBOT_ASK_COOLDOWN"), (3, 30.0)
    )
    # Community defaults: what a server gets until its moderators change it with /config.
    autoreply_threshold: float | None = _setting(
        "CITEBOT_AUTOREPLY_THRESHOLD", _opt(_float("CITEBOT_AUTOREPLY_THRESHOLD")), None
    )
    server_questions_per_minute: int = _setting(
        "CITEBOT_SERVER_QUESTIONS_PER_MINUTE", _int("CITEBOT_SERVER_QUESTIONS_PER_MINUTE", 0), 30
    )
    server_articles_per_day: int = _setting(
        "CITEBOT_SERVER_ARTICLES_PER_DAY", _int("CITEBOT_SERVER_ARTICLES_PER_DAY", 0), 500
    )
    server_megabytes_per_day: float = _setting(
        "CITEBOT_SERVER_MEGABYTES_PER_DAY", _float("CITEBOT_SERVER_MEGABYTES_PER_DAY"), 50.0
    )
    server_max_articles: int = _setting(
        "CITEBOT_SERVER_MAX_ARTICLES", _int("CITEBOT_SERVER_MAX_ARTICLES", 0), 10_000
    )
    question_retention_days: int = _setting(
        "CITEBOT_QUESTION_RETENTION_DAYS", _int("CITEBOT_QUESTION_RETENTION_DAYS", 0), 90
    )
    leave_grace_days: int = _setting("CITEBOT_LEAVE_GRACE_DAYS", _int("CITEBOT_LEAVE_GRACE_DAYS", 0), 30)
    message_content: bool = _setting("CITEBOT_MESSAGE_CONTENT", _bool("CITEBOT_MESSAGE_CONTENT"), False)
    fetch_timeout: float = _setting("CITEBOT_FETCH_TIMEOUT", _positive("CITEBOT_FETCH_TIMEOUT"), 10.0)
    fetch_max_bytes: int = _setting(
        "CITEBOT_FETCH_MAX_BYTES", _int("CITEBOT_FETCH_MAX_BYTES", 1024), 5_000_000
    )
    fetch_allow: tuple[str, ...] = _setting("CITEBOT_FETCH_ALLOW", _networks("CITEBOT_FETCH_ALLOW"), ())
    # Subscriptions (citebot subscribe / sync; /subscribe in Discord).
    sync_interval: float = _setting("CITEBOT_SYNC_INTERVAL", _positive("CITEBOT_SYNC_INTERVAL"), 3600.0)
    sync_max_pages: int = _setting("CITEBOT_SYNC_MAX_PAGES", _int("CITEBOT_SYNC_MAX_PAGES", 1), 50)
    sync_retention_days: int = _setting(
        "CITEBOT_SYNC_RETENTION_DAYS", _int("CITEBOT_SYNC_RETENTION_DAYS", 1), 90
    )
    sync_host_delay: float = _setting("CITEBOT_SYNC_HOST_DELAY", _float("CITEBOT_SYNC_HOST_DELAY"), 1.0)
    max_article_chars: int = _setting(
        "CITEBOT_MAX_ARTICLE_CHARS", _int("CITEBOT_MAX_ARTICLE_CHARS", 1000), DEFAULT_MAX_ARTICLE_CHARS
    )
    shard_count: int | None = _setting("SHARD_COUNT", _opt(_int("SHARD_COUNT", 1)), None)
    shard_ids: tuple[int, ...] | None = _setting("SHARD_IDS", _opt(_ids("SHARD_IDS")), None)
    # Running ``citebot run`` in production: where Discord is, stopping, health, metrics, logs.
    discord_api_base: str = _setting("DISCORD_API_BASE", _http_url("DISCORD_API_BASE"), DISCORD_API)
    shutdown_timeout: float = _setting(
        "CITEBOT_SHUTDOWN_TIMEOUT", _positive("CITEBOT_SHUTDOWN_TIMEOUT"), 15.0
    )
    ops_port: int | None = _setting("CITEBOT_OPS_PORT", _opt(_port("CITEBOT_OPS_PORT")), None)
    ops_host: str = _setting("CITEBOT_OPS_HOST", lambda raw: raw.strip() or "127.0.0.1", "127.0.0.1")
    log_format: str = _setting("CITEBOT_LOG_FORMAT", _choice("CITEBOT_LOG_FORMAT", ("text", "json")), "text")

    def __post_init__(self) -> None:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ConfigError("SHARD_IDS needs SHARD_COUNT: the total number of shards of the bot.")
            bad = [i for i in self.shard_ids if i >= self.shard_count]
            if bad or not self.shard_ids:
                raise ConfigError(
                    f"SHARD_IDS must be shard numbers from 0 to {self.shard_count - 1} "
                    f"(SHARD_COUNT={self.shard_count}), not {list(self.shard_ids)}."
                )
        for name in ("autoreply_threshold", "abstain_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                env = "CITEBOT_" + name.upper()
                raise ConfigError(f"{env} must be a confidence from 0 to 1, not {value}.")
        if self.dm_library is not None:
            try:
                check_library_name(self.dm_library)
            except InputError as exc:
                raise ConfigError(f"CITEBOT_DM_LIBRARY: {exc}") from None

    @property
    def dm_library_name(self) -> str:
        """The library that answers in direct messages: its own demo library (the seeds) unless
        configured, never the command line's library, which may hold an operator's own notes."""
        return self.dm_library or DM_DEMO_LIBRARY

    # A URL may hold a password: kept out of repr.
    database_url: str | None = _setting("DATABASE_URL", _opt(str), None, repr=False)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: Path | None = Path(".env"),
        **overrides: Any,
    ) -> Settings:
        """Read settings: explicit ``overrides`` > environment > ``.env`` > defaults."""
        env = dict(read_env_file(env_file)) if env_file is not None else {}
        env.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides and overrides[f.name] is not None:
                values[f.name] = overrides[f.name]
                continue
            raw = env.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = f.metadata["parse"](raw)
        if values.get("data_dir") is None:
            values["data_dir"] = _default_data_dir()
        if values.get("seeds_dir") is None:
            values["seeds_dir"] = _default_seeds()
        return cls(**values)

    @staticmethod
    def secrets(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> set[str]:
        """The secret values in the environment and ``.env`` (tokens, passwords), to mask in output.

        Reads leniently: a ``.env`` that cannot be parsed contributes the values of the lines
        that can, so even the error about a bad line cannot print a secret from another.
        """
        env: dict[str, str] = {}
        if env_file is not None:
            try:
                lines = env_file.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            for raw in lines:
                m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(.*)$", raw)
                if m:
                    env[m.group(1)] = m.group(2).strip().strip("\"'")
        env.update(os.environ if environ is None else environ)
        return secrets_in(env)

    @staticmethod
    def documented() -> list[tuple[str, str]]:
        """``(ENV_NAME, field name)`` of every setting, for docs and tests."""
        return [(f.metadata["env"], f.name) for f in fields(Settings)]
