"""The core's few errors. Each carries facts; the front end that knows its user words the remedy.

``str(error)`` is a plain statement of what went wrong ("Library 'x' was built with other
settings (model: …)"). It never names a command, a setting or an environment variable: the
command line adds "run `citebot rebuild`", the Discord bot adds "ask a moderator to…". The
structured fields (which library, what differs, what is damaged, who holds a lock) are what a
front end reads to choose its wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal


class CitebotError(Exception):
    """Base class of every error the core raises on purpose. ``library`` names the library, if any."""

    def __init__(self, message: str, *, library: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.library = library


class InputError(CitebotError):
    """A question, file or argument the core cannot use (empty question, unreadable file...)."""


NotFoundKind = Literal["article", "library", "answer", "passage"]


class NotFoundError(CitebotError):
    """Something that does not exist (``kind``): an article, a library, a recorded answer.

    ``ref`` is what was asked for and ``suggestions`` lists close matches (article titles).
    """

    def __init__(
        self,
        message: str,
        suggestions: tuple[str, ...] = (),
        *,
        kind: NotFoundKind = "article",
        ref: str | None = None,
        library: str | None = None,
    ) -> None:
        super().__init__(message, library=library)
        self.suggestions = suggestions
        self.kind = kind
        self.ref = ref


class EmptyLibraryError(NotFoundError):
    """A library that does not exist yet (nothing was ever added to it): there is nothing to read."""

    def __init__(self, library: str) -> None:
        super().__init__(f"Library {library!r} does not exist yet.", kind="library", library=library)


class IndexStateError(CitebotError):
    """The index on disk (or in the database) is missing, corrupt or made with another model."""


class IndexMismatchError(IndexStateError):
    """The index was built with other settings (``differences``, one line each); it must be rebuilt."""

    def __init__(self, library: str, differences: Sequence[str]) -> None:
        self.differences = tuple(differences)
        super().__init__(
            f"Library {library!r} was built with other settings ({'; '.join(self.differences)}).",
            library=library,
        )


DamagedPart = Literal["database", "passage vectors", "sentence vectors", "schema"]


class CorruptIndexError(IndexStateError):
    """Part of the index (``part``) cannot be read or does not agree with the rest.

    ``rebuildable`` says whether the stored article texts are intact, so that re-embedding them
    repairs the damage; when False the articles must be ingested again from their sources.
    ``location`` is the file or folder involved, when there is one.
    """

    def __init__(
        self,
        library: str,
        part: DamagedPart,
        detail: str,
        *,
        rebuildable: bool,
        location: str | None = None,
    ) -> None:
        self.part = part
        self.detail = detail
        self.rebuildable = rebuildable
        self.location = location
        super().__init__(f"The {part} of library {library!r} {detail}.", library=library)


class CopyConflictError(CitebotError):
    """Copying a library would overwrite the target's copy: it was built with other settings
    (``differences``), or it holds articles the source lacks (``extra_titles``, ``extra_count``)."""

    def __init__(
        self,
        library: str,
        *,
        differences: Sequence[str] = (),
        extra_titles: Sequence[str] = (),
        extra_count: int = 0,
    ) -> None:
        self.differences = tuple(differences)
        self.extra_titles = tuple(extra_titles)
        self.extra_count = extra_count
        if self.differences:
            message = (
                f"Library {library!r} already exists in the target store with other settings "
                f"({'; '.join(self.differences)})."
            )
        else:
            titles = "; ".join(f"“{t}”" for t in self.extra_titles)
            message = (
                f"Library {library!r} in the target store has {extra_count} article(s) that the source "
                f"lacks ({titles})."
            )
        super().__init__(message, library=library)


class LibraryBusyError(CitebotError):
    """Another writer holds the library (``holder`` says who and since when, when known)."""

    def __init__(self, library: str, holder: str | None = None, *, locked_database: bool = False) -> None:
        self.holder = holder
        self.locked_database = locked_database
        who = f" ({holder})" if holder else ""
        if locked_database:
            message = f"Library {library!r} is busy: its database is locked by another process."
        else:
            message = f"Library {library!r} is being changed by another citebot process{who}."
        super().__init__(message, library=library)


AccessProblem = Literal["permission", "unreadable", "read_only", "disk_full"]


class LibraryAccessError(CitebotError):
    """The library's files are intact but cannot be written (or opened) here.

    ``problem`` is ``permission`` (the files or folder belong to someone else or deny this
    user writing), ``unreadable`` (they deny this user reading), ``read_only`` (a read-only file system or database) or ``disk_full`` (no space left;
    the change was not made and the library is as it was). ``location`` is the path concerned.
    """

    def __init__(self, library: str, problem: AccessProblem, location: str, detail: str = "") -> None:
        self.problem = problem
        self.location = location
        self.detail = detail
        what = {
            "permission": f"citebot is not allowed to write to library {library!r} ({location})",
            "unreadable": f"citebot is not allowed to read library {library!r} ({location})",
            "read_only": f"Library {library!r} is on a read-only file system or is a read-only database ({location})",
            "disk_full": f"The disk holding library {library!r} is full ({location}); nothing was changed",
        }[problem]
        super().__init__(f"{what}.", library=library)


Outage = Literal["unreachable", "lost", "lost_while_saving", "lost_while_indexing", "too_slow"]


class StoreUnavailableError(CitebotError):
    """The database behind the store cannot be reached.

    ``outage`` is ``unreachable`` (no connection could be made), ``lost`` (the connection
    dropped twice), ``lost_while_saving`` (dropped during a commit: the change may or may not
    be saved) or ``lost_while_indexing`` (the data is saved, an index build was cut short) or ``too_slow`` (a
    statement ran past the store's statement timeout: an overloaded server or a lock held
    elsewhere; nothing of it was applied). ``detail`` is the driver's first line, with no password in it.
    """

    def __init__(self, outage: Outage, detail: str) -> None:
        self.outage = outage
        self.detail = detail
        what = {
            "unreachable": "Cannot connect to the PostgreSQL database",
            "lost": "Lost the connection to the PostgreSQL database again after a retry",
            "lost_while_saving": "Lost the connection to the PostgreSQL database while saving, "
            "so the change may or may not be saved",
            "lost_while_indexing": "Lost the connection to the PostgreSQL database while building a "
            "search index; the data is saved and the index is built again on the next write",
            "too_slow": "The PostgreSQL database did not answer in time",
        }[outage]
        super().__init__(f"{what} ({detail}).")


class ModelLoadError(CitebotError):
    """The embedding model could not be loaded."""


class FetchError(CitebotError):
    """A URL could not be fetched (dead link, refused address, too large, timeout)."""


__all__ = [
    "CitebotError",
    "CopyConflictError",
    "CorruptIndexError",
    "EmptyLibraryError",
    "FetchError",
    "IndexMismatchError",
    "IndexStateError",
    "InputError",
    "LibraryAccessError",
    "LibraryBusyError",
    "ModelLoadError",
    "NotFoundError",
    "StoreUnavailableError",
]
