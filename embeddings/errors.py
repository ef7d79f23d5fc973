"""The core's few errors. Each message speaks to a person: what went wrong, what to do next."""

from __future__ import annotations


class CitebotError(Exception):
    """Base class of every error the core raises on purpose."""


class InputError(CitebotError):
    """A question, file or argument the core cannot use (empty question, unreadable file...)."""


class NotFoundError(CitebotError):
    """An article or library that does not exist. ``suggestions`` lists close matches."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions


class IndexStateError(CitebotError):
    """The index on disk (or in the database) is missing, corrupt or made with another model."""


class IndexMismatchError(IndexStateError):
    """The index was built with another model or chunking; it must be rebuilt."""


class CorruptIndexError(IndexStateError):
    """Part of the index cannot be read or does not agree with the rest."""


class LibraryBusyError(CitebotError):
    """Another process is writing to the same library."""


class StoreUnavailableError(CitebotError):
    """The database behind the store cannot be reached (server down, connection lost twice)."""


class ModelLoadError(CitebotError):
    """The embedding model could not be loaded."""


class FetchError(CitebotError):
    """A URL could not be fetched (dead link, refused address, too large, timeout)."""


__all__ = [
    "CitebotError",
    "CorruptIndexError",
    "FetchError",
    "IndexMismatchError",
    "IndexStateError",
    "InputError",
    "LibraryBusyError",
    "ModelLoadError",
    "NotFoundError",
    "StoreUnavailableError",
]
