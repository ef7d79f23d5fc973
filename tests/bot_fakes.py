"""The bot tests' shared data: server A holds the seed article, server B a bread recipe.

The fake Discord itself is :mod:`bot.testing` (the benchmarks use it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.services import make_library
from bot.testing import GUILD_A, GUILD_B
from embeddings import LocalStore, load_bytes

from .conftest import SEED

SOURDOUGH = """Sourdough for beginners

By Jane Baker / 01. Feb 2023

A sourdough starter is a mix of flour and water that wild yeast and lactic acid bacteria have colonised. Feed it equal weights of flour and water every day and keep it at room temperature.

The dough should rise by about half during bulk fermentation, which takes four to six hours at 24 degrees Celsius.

Bake the loaf in a preheated Dutch oven at 250 degrees Celsius for twenty minutes with the lid on, then twenty more minutes without it.
"""
SEED_TITLE = (
    "Blinken says US has seen reports of Russian abuses in Ukraine that 'would constitute a war crime'"
)


@dataclass
class BotData:
    """A store shared by a test session: server A holds the seed article, server B a bread recipe."""

    settings: Settings
    store: LocalStore


def build_bot_data(root: Path, model: Any) -> BotData:
    """Fill the shared store (with the real model)."""
    seeds = root / "seeds"
    seeds.mkdir()
    (seeds / SEED.name).write_bytes(SEED.read_bytes())
    settings = Settings.load(
        environ={"CITEBOT_ASK_COOLDOWN": "off"},
        env_file=None,
        data_dir=root / "data",
        seeds_dir=seeds,
        dm_library="dm-demo",
    )
    store = LocalStore(settings.data_dir)
    make_library(settings, store, model, f"guild-{GUILD_A}").ingest_paths([SEED])
    make_library(settings, store, model, f"guild-{GUILD_B}").ingest(
        load_bytes(SOURDOUGH.encode(), name="sourdough.txt", key="sourdough")
    )
    return BotData(settings, store)
