"""Copy a library from one store to another (``citebot migrate``), idempotent and resumable.

The copy moves what the model produced (passages, vectors, sentences, postings), so the model
is never run. Passage ids are kept, so feedback that names a passage still points at it.

* Idempotent: an article already in the target with the same metadata, content hash and
  passage ids is skipped; feedback already there is not added twice. Running the copy again
  changes nothing.
* Resumable: articles are committed in batches, each atomically. An interrupted copy keeps the
  batches it finished and the next run copies the rest.
* Exact: the target ends up with the source's articles and nothing else. Articles the target
  has and the source lacks are only removed with ``replace=True``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CopyConflictError, NotFoundError
from ..types import ArticleInfo
from . import ArticleWrite, Feedback, Store

_ALL_FEEDBACK = 2**62


def libraries_to_copy(source: Store, name: str | None) -> list[str]:
    """``[name]``, or every library of ``source`` when ``name`` is None."""
    return source.libraries() if name is None else [name]


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What one copy did: articles copied, skipped (already there) and removed, votes added."""

    library: str
    copied: int
    skipped: int
    removed: int
    feedback: int
    passages: int


def copy_library(
    source: Store,
    target: Store,
    library: str,
    *,
    replace: bool = False,
    batch_passages: int = 20_000,
    timeout: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Make ``library`` in ``target`` a copy of ``library`` in ``source``.

    Both libraries' write locks are held (waiting up to ``timeout`` seconds) so no ingest
    changes either side meanwhile. ``progress(done, total)`` counts passages to copy.
    Raises :class:`CopyConflictError` if the target library was built with other settings or
    holds articles the source lacks, unless ``replace`` (which empties it or removes them).
    """
    spec = source.spec(library)
    if spec is None:
        raise NotFoundError(
            f"Library {library!r} does not exist in the source store; nothing to copy.",
            kind="library",
            library=library,
        )
    with source.writer(library, timeout), target.writer(library, timeout):
        existing = target.spec(library)
        if existing is not None and existing != spec:
            if not replace:
                raise CopyConflictError(library, differences=existing.differences(spec))
            target.reset(library, spec, [])
        target.create(library, spec)

        wanted = source.list_articles(library)
        have = {a.id: a for a in target.list_articles(library)}
        wanted_ids = {a.id for a in wanted}
        extra = [aid for aid in have if aid not in wanted_ids]
        if extra and not replace:
            raise CopyConflictError(
                library, extra_titles=[have[aid].title for aid in extra[:3]], extra_count=len(extra)
            )
        todo = [a.id for a in wanted if not _same(source, target, library, a.id, have.get(a.id), a)]
        stale = [aid for aid in todo if aid in have]
        if extra or stale:
            # Removed before copying: a restored article keeps its passage ids, which must be free.
            target.write(library, [], delete=[*extra, *stale])
        todo_set = set(todo)
        total = sum(a.passage_count for a in wanted if a.id in todo_set)
        done = 0
        if progress is not None:
            progress(0, total)
        batch: list[ArticleWrite] = []
        size = 0
        for write in source.export(library, todo) if todo else ():
            batch.append(write)
            size += len(write.passages)
            if size >= batch_passages:
                target.restore(library, batch, more=True)
                done += size
                batch, size = [], 0
                if progress is not None:
                    progress(done, total)
        target.restore(library, batch)  # the last call: the target may build its index now
        done += size
        if progress is not None:
            progress(done, total)
        added = _copy_feedback(source, target, library)
    return CopyReport(library, len(todo), len(wanted) - len(todo), len(extra), added, done)


def _same(
    source: Store, target: Store, library: str, article_id: str, there: ArticleInfo | None, here: ArticleInfo
) -> bool:
    """True when the target already holds this article exactly (metadata, text hash, passage ids)."""
    if there is None or there != here:
        return False
    ids = [p.id for p in source.article_passages(library, article_id)]
    return ids == [p.id for p in target.article_passages(library, article_id)]


def _copy_feedback(source: Store, target: Store, library: str) -> int:
    """Add the votes the target lacks, oldest first, so that order and counts match the source."""
    theirs = Counter(_key(f) for f in target.list_feedback(library, _ALL_FEEDBACK))
    added = 0
    for f in reversed(source.list_feedback(library, _ALL_FEEDBACK)):
        key = _key(f)
        if theirs[key] > 0:
            theirs[key] -= 1
            continue
        target.add_feedback(library, f)
        added += 1
    return added


def _key(f: Feedback) -> tuple[object, ...]:
    return (
        f.question,
        f.answer_passage_id,
        f.article_id,
        f.vote,
        f.user,
        f.created_at,
        json.dumps(f.extra, sort_keys=True),
    )


__all__ = ["CopyReport", "copy_library"]
