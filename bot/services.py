"""Build the core's objects from :class:`Settings`; shared by the CLI and the Discord bot."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import replace
from typing import Any

from embeddings import (
    ChunkSpec,
    CrossEncoderReranker,
    Encoder,
    IngestReport,
    InputError,
    Library,
    LocalStore,
    Reranker,
    SentenceTransformerEncoder,
    Store,
    community,
)
from embeddings.community import ServerSettings
from embeddings.ingest import ProgressFn

from .config import Settings

log = logging.getLogger(__name__)


def quiet_model_loading() -> None:
    """Keep model loading offline and silent: no hub calls for local paths, no progress bars."""
    # The packaged model loads by path; these stop the libraries from reaching for the hub or
    # drawing bars on the user's terminal. A user who configures a hub model name can still
    # override HF_HUB_OFFLINE in the environment.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def make_encoder(settings: Settings) -> Encoder:
    """The configured sentence-transformers encoder."""
    quiet_model_loading()
    return SentenceTransformerEncoder(
        settings.model, precision=settings.precision, batch_size=settings.batch_size
    )


def make_store(settings: Settings) -> Store:
    """The configured store: PostgreSQL when ``DATABASE_URL`` is set, else the folder under ``data_dir``."""
    if settings.database_url:
        return make_postgres_store(settings)
    return LocalStore(settings.data_dir)


def make_postgres_store(settings: Settings) -> Store:
    """The PostgreSQL store at ``DATABASE_URL`` (migrations are applied as it opens)."""
    from embeddings.store.postgres import PostgresStore

    if not settings.database_url:
        raise InputError("DATABASE_URL is not set: point it at a PostgreSQL database with pgvector.")
    return PostgresStore(settings.database_url)


def make_reranker(settings: Settings) -> Reranker | None:
    """The configured cross-encoder (loaded once per process), or None for the built-in only."""
    if not settings.cross_encoder:
        return None
    return _cross_encoder(settings.cross_encoder)


@functools.cache
def _cross_encoder(model: str) -> CrossEncoderReranker:
    # Every library (one per Discord server) shares one loaded model.
    quiet_model_loading()
    return CrossEncoderReranker(model)


def server_defaults(settings: Settings) -> ServerSettings:
    """What a server gets until its moderators change it: the built-in defaults, with the
    operator's environment over them."""
    return replace(
        community.DEFAULTS,
        autoreply_threshold=(
            settings.autoreply_threshold
            if settings.autoreply_threshold is not None
            else community.DEFAULTS.autoreply_threshold
        ),
        cooldown=settings.ask_cooldown or (0, 0.0),
        questions_per_minute=settings.server_questions_per_minute,
        articles_per_day=settings.server_articles_per_day,
        megabytes_per_day=settings.server_megabytes_per_day,
        max_articles=settings.server_max_articles,
        retention_days=settings.question_retention_days,
    )


def make_library(
    settings: Settings,
    store: Store,
    encoder: Encoder,
    name: str | None = None,
    *,
    write_timeout: float = 0.0,
    reranker: Reranker | None = None,
) -> Library:
    """A :class:`Library` view named ``name`` (default: the configured library)."""
    tokens = settings.chunk_tokens or encoder.max_tokens
    if reranker is None:
        reranker = make_reranker(settings)
    return Library(
        store,
        encoder,
        name or settings.library,
        chunk=ChunkSpec(max_tokens=tokens, overlap=settings.chunk_overlap),
        reranker=reranker,
        write_timeout=write_timeout,
        max_article_chars=settings.max_article_chars,
        server_defaults=server_defaults(settings),
        sentence_vectors=settings.sentence_vectors,
        abstain_threshold=settings.abstain_threshold,
    )


def ensure_seeded(
    library: Library, settings: Settings, progress: ProgressFn | None = None
) -> IngestReport | None:
    """On first use, fill an empty library from the seeds folder; None when nothing to do."""
    if library.exists() or settings.seeds_dir is None or not settings.seeds_dir.is_dir():
        return None
    log.info("library %s is new: ingesting %s", library.name, settings.seeds_dir)
    return library.ingest_paths([settings.seeds_dir], progress=progress)


def sync_subscription(library: Library, subscription: Any, fetcher: Any, settings: Settings) -> Any:
    """Blocking: one sync pass over one subscription with the configured limits, its state stored
    afterwards (the command line and the bot's scheduled pass both run this)."""
    from embeddings.subscriptions import save_subscription, sync

    report = sync(
        library,
        fetcher,
        subscription,
        max_pages=settings.sync_max_pages,
        retention_days=settings.sync_retention_days,
        host_delay=settings.sync_host_delay,
    )
    save_subscription(library, subscription)
    return report
