"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order on start.

Each migration runs in its own transaction together with its row in ``schema_migrations``,
under an advisory lock so that processes starting together apply it once. PostgreSQL's DDL is
transactional, so a migration interrupted halfway leaves nothing behind and the next start
applies it again from the beginning. An applied file must not change (its checksum is kept).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import IndexStateError
from .pool import psycopg_module

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# Advisory lock key (bigint): "citebot1" in ASCII.
_MIGRATION_LOCK = int.from_bytes(b"citebot1", "big")


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the SQL, recorded when applied: applied files must not change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def load_migrations(directory: str | os.PathLike[str] | None = None) -> list[Migration]:
    """The migrations shipped with citebot (or those in ``directory``), oldest first."""
    folder: Any = Path(directory) if directory is not None else resources.files(__package__) / "migrations"
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise IndexStateError(f"Two migrations share a version number in {folder}.")
    return found


def apply_migrations(conn: psycopg.Connection[Any], migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction; return their versions.

    Runs under an advisory lock, so processes starting together apply each migration once.
    ``conn`` must be in autocommit mode.
    """
    psycopg = psycopg_module()
    applied_now: list[int] = []
    # If this process dies mid-migration the server notices within a second, rolls the
    # migration back and frees the lock for the next start (instead of when the query ends).
    if conn.info.server_version >= 140000:  # the setting is new in PostgreSQL 14
        conn.execute("SET client_connection_check_interval = 1000")
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        known = {m.version for m in migrations}
        newer = sorted(set(applied) - known)
        if newer:
            raise IndexStateError(
                f"The database has schema version {newer[-1]}, newer than this citebot knows "
                f"({max(known, default=0)}). Upgrade citebot before using this database."
            )
        for m in migrations:
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise IndexStateError(
                        f"Migration {m.version:04d}_{m.name}.sql was changed after it was applied "
                        "to this database. Restore the file as released; put changes in a new migration."
                    )
                continue
            try:
                with conn.transaction():
                    conn.execute(m.sql.encode())  # several statements: no parameters
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported) as exc:
                raise IndexStateError(
                    f"Could not apply database migration {m.version:04d}_{m.name} ({exc}). If the "
                    "pgvector extension is missing, install it on the server and have an "
                    "administrator run `CREATE EXTENSION vector;` in this database."
                ) from exc
            except psycopg.errors.UndefinedFile as exc:
                raise IndexStateError(
                    f"The PostgreSQL server lacks the pgvector extension ({exc}). Install pgvector "
                    "on the server, then start citebot again."
                ) from exc
            log.info("applied migration %04d_%s", m.version, m.name)
            applied_now.append(m.version)
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


__all__ = ["Migration", "apply_migrations", "load_migrations"]
