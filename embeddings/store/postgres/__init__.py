"""The PostgreSQL + pgvector store: many libraries in one database, shared by several processes.

Select it with ``DATABASE_URL`` (see ``bot/services.py``); it answers exactly like
:class:`~embeddings.store.local.LocalStore`: same ids, same scores, same tie order, same errors.

Files
    ``migrations.py`` applies the versioned schema (``migrations/NNNN_name.sql``) on start;
    ``pool.py`` keeps the connections; ``store.py`` is :class:`PostgresStore`.

Dimensions
    Libraries may use models of different dimensions, so ``embedding`` is an untyped ``vector``
    column and each library gets its own *partial* HNSW indexes (cosine), typed by a cast::

        CREATE INDEX passages_hnsw_<library id>_<dim> ON passages
        USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops)
        WHERE library_id = <library id> AND vector_dims(embedding) = <dim>

    A per-library index also means a search walks only that library's graph, so it always
    finds ``k`` results (a shared index filtered afterwards can come back short, and pgvector
    0.6 has no iterative scan). The ``vector_dims`` predicate lets a rebuild with a model of
    another dimension insert its rows while the old index still exists.

Index lifecycle
    A library's indexes are built with ``CREATE INDEX CONCURRENTLY`` (other libraries keep
    writing) once it holds ``index_threshold`` passages; below that an exact scan of its rows
    is as fast. A bulk copy (:meth:`PostgresStore.restore` with ``more=True``) postpones the build
    to its last batch: building once is several times faster than inserting into the graph.

Search
    Candidates come from the HNSW index (``SET LOCAL hnsw.ef_search``) and are rescored with
    numpy, exactly as the local store scores, so both stores give the same numbers and break
    ties by passage id. Searches limited to some articles (small sets) scan those rows exactly.

Several processes
    Nothing is cached between calls, so another process's write is seen by the next query.
    :meth:`PostgresStore.writer` holds ``pg_try_advisory_lock`` keyed by the library on its own
    connection; on top of it every write locks its library's row, so even writers that skip the
    lock serialise, and passage ids (numbered per library) are never handed out twice.

Connections
    A small pool; a connection lost during a call is replaced and the call retried once, then
    :class:`~embeddings.errors.StoreUnavailableError` says what happened.
"""

from __future__ import annotations

from .migrations import Migration, apply_migrations, load_migrations
from .pool import INSTALL_HINT
from .store import PostgresStore

__all__ = ["INSTALL_HINT", "Migration", "PostgresStore", "apply_migrations", "load_migrations"]
