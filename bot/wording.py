"""How the core's errors read to each kind of user.

The core's errors carry facts (which library, what differs, what is damaged, who holds a lock);
these functions add the remedy that fits the reader. Someone at the command line runs the
commands themselves; a Discord member cannot, so the bot points them to a moderator or the
bot's operator and never shows command-line advice or internal library names.
"""

from __future__ import annotations

from pathlib import Path

from embeddings import (
    CitebotError,
    CopyConflictError,
    CorruptIndexError,
    EmptyLibraryError,
    IndexMismatchError,
    IndexStateError,
    LibraryAccessError,
    LibraryBusyError,
    NotFoundError,
    StoreUnavailableError,
)

EMPTY_LIBRARY = (
    "This server's library is empty. Someone with the Manage Server permission can add "
    "articles with /ingest (a file or a link)."
)
ANSWER_GONE = (
    "That answer is no longer available: its article was changed or removed from the library. "
    "Ask again to get a fresh one."
)
OPERATOR = "This library needs maintenance by the bot's operator; it has been logged."
BUSY = "The library is busy with another update. Try again in a moment."
UNAVAILABLE = "I can't reach my database right now; it has been logged. Please try again in a few minutes."


def _library_option(error: CitebotError) -> str:
    return f" --library {error.library}" if error.library and error.library != "default" else ""


def for_cli(error: CitebotError) -> str:
    """The error with what to do next at the command line (one paragraph, no prefix)."""
    text = str(error)
    lib = _library_option(error)
    if isinstance(error, EmptyLibraryError):
        return f"{text} Add articles with `citebot ingest PATH{lib}`."
    if isinstance(error, IndexMismatchError):
        return (
            f"{text} Run `citebot rebuild{lib}` to rebuild it with the current settings, or change "
            "the settings back."
        )
    if isinstance(error, CorruptIndexError):
        # Name the damaged file: with several libraries and backups, "damaged" alone sends the
        # operator looking; the folder is what to move aside (its files only make sense together).
        missing = error.detail.startswith(("is missing", "are missing"))
        damaged = f" {'Missing' if missing else 'Damaged'} file: {error.location}." if error.location else ""
        if error.rebuildable:
            return f"{text}{damaged} Run `citebot rebuild{lib}` to re-embed it from the stored articles."
        if error.location:
            folder = str(Path(error.location).parent)
            return (
                f"{text}{damaged} Restore it from a backup, or move {folder} aside and ingest the "
                f"articles again (`citebot ingest PATH{lib}`)."
            )
        return f"{text} Ingest the articles again (`citebot ingest PATH{lib}`)."
    if isinstance(error, LibraryAccessError):
        if error.problem == "disk_full":
            return f"{text} Free some space and run this again; the library itself is intact."
        if error.problem == "unreadable":
            return (
                f"{text} The library is intact: run citebot as the user who owns it, or give this user "
                "read access to the folder."
            )
        if error.problem == "read_only":
            return f"{text} The library is intact: make it writable (or copy it somewhere writable) to change it."
        return (
            f"{text} The library is intact: run citebot as the user who owns it, or give this user "
            "write access to the folder."
        )
    if isinstance(error, LibraryBusyError):
        if error.locked_database:
            return f"{text} Try again in a moment."
        return f"{text} Wait for it to finish, then run this again."
    if isinstance(error, CopyConflictError):
        if error.differences:
            return f"{text} Run again with --replace to overwrite it with the source's copy."
        return (
            f"{text} Run again with --replace to make the target an exact copy (those articles will "
            "be removed there)."
        )
    if isinstance(error, StoreUnavailableError):
        if error.outage == "unreachable":
            return (
                f"{text} Check that the server is running and that DATABASE_URL points at it, then try again."
            )
        return f"{text} Check that the server is up and reachable, then try again."
    return text


def for_discord(error: CitebotError) -> tuple[str, bool]:
    """``(message for a Discord member, should it be logged as the operator's problem?)``."""
    if isinstance(error, EmptyLibraryError):
        return EMPTY_LIBRARY, False
    if isinstance(error, NotFoundError):
        if error.kind == "answer":
            return ANSWER_GONE, False
        if error.kind == "article" and error.ref is not None:
            hint = ""
            if error.suggestions:
                hint = " Did you mean: " + "; ".join(f"“{t}”" for t in error.suggestions) + "?"
            return f"No article matches {error.ref!r} in this library.{hint}", False
        return str(error), False
    if isinstance(error, LibraryBusyError):
        return BUSY, False
    if isinstance(error, StoreUnavailableError):
        return UNAVAILABLE, True
    if isinstance(error, LibraryAccessError):
        return OPERATOR, True
    if isinstance(error, IndexStateError):
        # A damaged index or a changed model is the operator's problem, not the member's.
        return OPERATOR, True
    return str(error), False


__all__ = ["ANSWER_GONE", "EMPTY_LIBRARY", "for_cli", "for_discord"]
