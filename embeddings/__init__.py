"""citebot's retrieval core: articles in, cited passages out.

No Discord, no environment reads, no logging setup: front ends (``bot/``) do those.
"""

from __future__ import annotations

from .articles import clean_article, expand_paths, load_bytes, load_file, parse_html, parse_markdown
from .chunking import ChunkSpec, chunk_document
from .encoder import DEFAULT_MODEL, CrossEncoderReranker, Encoder, HashEncoder, SentenceTransformerEncoder
from .errors import (
    CitebotError,
    CopyConflictError,
    CorruptIndexError,
    EmptyLibraryError,
    FetchError,
    IndexMismatchError,
    IndexStateError,
    InputError,
    LibraryAccessError,
    LibraryBusyError,
    ModelLoadError,
    NotFoundError,
    StoreUnavailableError,
)
from .ingest import Ingester
from .lexical import BM25, Analyzer
from .library import MAX_QUESTION_CHARS, Library, clean_question
from .records import AnswerRecord, RecordedAnswer, list_votes
from .search import Reranker, SearchConfig, fitted_config
from .sentences import split_sentences
from .store import ArticleWrite, Feedback, IndexSpec, Store
from .store.local import LocalStore
from .summarize import SummaryConfig, summarize_document, summarize_text
from .types import (
    CODE,
    Answer,
    Article,
    ArticleInfo,
    Citation,
    Document,
    Hit,
    IngestReport,
    IngestResult,
    Layout,
    Passage,
    Summary,
    SummarySentence,
)

__all__ = [
    "BM25",
    "CODE",
    "DEFAULT_MODEL",
    "MAX_QUESTION_CHARS",
    "Analyzer",
    "Answer",
    "AnswerRecord",
    "Article",
    "ArticleInfo",
    "ArticleWrite",
    "ChunkSpec",
    "Citation",
    "CitebotError",
    "CopyConflictError",
    "CorruptIndexError",
    "CrossEncoderReranker",
    "Document",
    "EmptyLibraryError",
    "Encoder",
    "Feedback",
    "FetchError",
    "HashEncoder",
    "Hit",
    "IndexMismatchError",
    "IndexSpec",
    "IndexStateError",
    "IngestReport",
    "IngestResult",
    "Ingester",
    "InputError",
    "Layout",
    "Library",
    "LibraryAccessError",
    "LibraryBusyError",
    "LocalStore",
    "ModelLoadError",
    "NotFoundError",
    "Passage",
    "RecordedAnswer",
    "Reranker",
    "SearchConfig",
    "SentenceTransformerEncoder",
    "Store",
    "StoreUnavailableError",
    "Summary",
    "SummaryConfig",
    "SummarySentence",
    "chunk_document",
    "clean_article",
    "clean_question",
    "expand_paths",
    "fitted_config",
    "list_votes",
    "load_bytes",
    "load_file",
    "parse_html",
    "parse_markdown",
    "split_sentences",
    "summarize_document",
    "summarize_text",
]
