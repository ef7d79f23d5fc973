"""What only the PostgreSQL store has: several processes, lost connections, migrations, copying.

Runs against the pgserver-started server of the session (see ``conftest.postgres``).
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from bot.cli import EXIT_ERROR, EXIT_OK, main
from bot.wording import for_cli
from embeddings import Feedback, HashEncoder, Library, LocalStore
from embeddings.errors import CopyConflictError, CorruptIndexError, IndexStateError, StoreUnavailableError
from embeddings.store.postgres import Migration, PostgresStore, load_migrations
from embeddings.store.transfer import copy_library

from .conftest import ROOT
from .test_store_contract import (
    CATS,
    DOCS,
    DOGS,
    QUESTIONS,
    assert_exports_equal,
    doc,
    hit_keys,
    stats,
    vectors,
)


@pytest.fixture
def enc() -> HashEncoder:
    return HashEncoder(dim=64, max_tokens=48)


@pytest.fixture
def pg(pg_dsn: str):
    store = PostgresStore(pg_dsn, index_threshold=0)
    yield store
    store.close()


def check_integrity(store: PostgresStore, library: str) -> None:
    """Counters, ids and rows agree: nothing duplicated, nothing orphaned."""
    with psycopg.connect(store._dsn) as conn:
        lib_id, count, total, next_pid = conn.execute(
            "SELECT id, passage_count, total_length, next_passage_id FROM libraries WHERE name = %s",
            (library,),
        ).fetchone()
        n, length, max_id = conn.execute(
            "SELECT count(*), COALESCE(sum(length), 0), COALESCE(max(id), 0) FROM passages WHERE library_id = %s",
            (lib_id,),
        ).fetchone()
        assert (count, total) == (n, length)
        assert next_pid > max_id
        per_article = conn.execute(
            "SELECT a.passage_count, count(p.id) FROM articles a LEFT JOIN passages p "
            "ON p.library_id = a.library_id AND p.article_id = a.id WHERE a.library_id = %s "
            "GROUP BY a.id, a.passage_count",
            (lib_id,),
        ).fetchall()
        assert all(expected == found for expected, found in per_article)
        keys = conn.execute("SELECT key FROM articles WHERE library_id = %s", (lib_id,)).fetchall()
        assert len(keys) == len(set(keys))
        postings, packed = conn.execute(
            "SELECT (SELECT count(*) FROM postings WHERE library_id = %s), "
            "(SELECT COALESCE(sum(length(offsets)), 0) / 2 FROM term_blocks WHERE library_id = %s)",
            (lib_id, lib_id),
        ).fetchone()
        assert postings == packed  # every posting in exactly one block


# ---------------------------------------------------------------------- indexes and queries


def test_hnsw_index_is_used_and_filtered_queries_are_exact(pg: PostgresStore, enc: HashEncoder):
    Library(pg, enc, "lib").ingest(DOCS)
    q = enc.encode(["cats"])[0]
    with pg._pool.connection() as conn, conn.transaction():
        # A tiny table: steer the planner off the plans it would rightly prefer, to see that the
        # HNSW index can serve the query (in a large library it is the cheap plan).
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_sort = off")
        lib = pg._lib(conn, "lib")
        for article_ids, sentences in ((None, False), (None, True), (["x"], False)):
            sql, params, ef = pg._nearest_query(lib, q, 10, article_ids, sentences)
            plan = "\n".join(r[0] for r in conn.cursor(binary=True).execute("EXPLAIN " + sql, params))
            index = f"{'sentences' if sentences else 'passages'}_hnsw_{lib.id}_64"
            assert (index in plan) == (article_ids is None), plan
            assert (ef is None) == (article_ids is not None)


def test_index_waits_for_the_threshold_and_follows_the_dimension(pg_dsn: str):
    store = PostgresStore(pg_dsn, index_threshold=6)

    def indexes() -> list[str]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%hnsw%' ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    lib = Library(store, HashEncoder(dim=64, max_tokens=48), "lib")
    lib.ingest(DOCS[:2])  # 4 passages: exact scans are enough
    assert indexes() == []
    assert lib.search("dogs bark", k=1)[0].article.title == "All about dogs"
    lib.ingest(DOCS[2:])  # 8 passages
    assert indexes() == ["passages_hnsw_1_64", "sentences_hnsw_1_64"]
    other = Library(store, HashEncoder(dim=32, max_tokens=48), "lib")
    other.rebuild()
    assert indexes() == ["passages_hnsw_1_32", "sentences_hnsw_1_32"]
    assert other.search("dogs bark", k=1)[0].article.title == "All about dogs"
    store.close()


# ---------------------------------------------------------------------- several processes

_INGEST = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from embeddings import Document, HashEncoder, Library
    from embeddings.articles import assemble
    from embeddings import Ingester
    from embeddings.store.postgres import PostgresStore

    docs = []
    for i in range({first}, {last}):
        text, spans = assemble([f"Article {{i}} talks about topic {{i}}.", f"More on {{i}} here."])
        docs.append(Document(key=f"k{{i}}", title=f"Article {{i}}", text=text, paragraphs=spans))
    store = PostgresStore({dsn!r}, index_threshold=0)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    if {raw}:
        # Straight to the store, one article per transaction, without the writer lock.
        lib = Library(store, HashEncoder(dim=64, max_tokens=48), "lib")
        ingester = Ingester(store, lib.encoder, "lib", lib.spec, lib.chunk, lib.analyzer)
        for d in docs:
            w = ingester.embed([ingester.prepare(d, "id-" + d.key, "hash-" + d.key)], None)
            store.write("lib", w)
    else:
        lib = Library(store, HashEncoder(dim=64, max_tokens=48), "lib", write_timeout=120)
        report = lib.ingest(docs, batch_passages=4)
        print("added", report.count("added"), "unchanged", report.count("unchanged"), flush=True)
    """
)


def _run_together(dsn: str, tmp_path: Path, ranges: list[tuple[int, int]], raw: bool) -> list[str]:
    procs = []
    for n, (first, last) in enumerate(ranges):
        script = tmp_path / f"ingest{n}.py"
        script.write_text(
            _INGEST.format(root=str(ROOT), dsn=dsn, first=first, last=last, raw=raw), encoding="utf-8"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def test_two_processes_ingesting_at_once_neither_duplicate_nor_lose(pg_dsn: str, tmp_path: Path):
    # Overlapping sets (k10..k19 in both): the second to write finds them unchanged.
    outs = _run_together(pg_dsn, tmp_path, [(0, 20), (10, 30)], raw=False)
    # Whichever went second found the shared ten unchanged.
    assert sorted(tuple(int(x) for x in o.split()[1::2]) for o in outs) == [(10, 10), (20, 0)]
    store = PostgresStore(pg_dsn)
    infos = store.list_articles("lib")
    assert sorted(a.key for a in infos) == sorted(f"k{i}" for i in range(30))
    assert stats(store, "lib", [])[0] == sum(a.passage_count for a in infos) == 60
    check_integrity(store, "lib")
    store.close()


def test_concurrent_writes_without_the_lock_are_serialised(pg_dsn: str, tmp_path: Path, enc: HashEncoder):
    Library(PostgresStore(pg_dsn), enc, "lib").ingest([CATS])  # creates the library
    # Both processes write k10..k14 (same ids) and five of their own, article by article.
    _run_together(pg_dsn, tmp_path, [(0, 15), (10, 25)], raw=True)
    store = PostgresStore(pg_dsn)
    infos = store.list_articles("lib")
    assert sorted(a.key for a in infos) == sorted(["cats", *(f"k{i}" for i in range(25))])
    ids = [p.id for a in infos for p in store.article_passages("lib", a.id)]
    assert len(ids) == len(set(ids)) == 2 + 25 * 2
    assert store.generation("lib") == 1 + 15 + 15
    check_integrity(store, "lib")
    store.close()


# ---------------------------------------------------------------------- lost connections


def _terminate_when_waiting(dsn: str, count: int, release: psycopg.Connection) -> threading.Thread:
    """Kill the backend of the next ``count`` queries that wait for the table lock, then release."""

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as watcher:
            for _ in range(count):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    row = watcher.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()
                    if row:
                        watcher.execute("SELECT pg_terminate_backend(%s)", row)
                        time.sleep(0.2)
                        break
                    time.sleep(0.02)
        release.execute("ROLLBACK")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_connection_dropped_mid_query_is_retried_once(pg: PostgresStore, enc: HashEncoder, pg_dsn: str):
    lib = Library(pg, enc, "lib")
    lib.ingest(DOCS)
    q = enc.encode(["cats sleep"])[0]
    expected = pg.nearest("lib", q, 3)[0]
    blocker = psycopg.connect(pg_dsn, autocommit=True)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE passages IN ACCESS EXCLUSIVE MODE")  # the search waits here...
    killer = _terminate_when_waiting(pg_dsn, 1, blocker)  # ...and its backend is terminated
    assert pg.nearest("lib", q, 3)[0] == expected  # the retry on a new connection answers
    killer.join()
    blocker.close()


def test_connection_dropped_twice_gives_a_clear_error(pg: PostgresStore, enc: HashEncoder, pg_dsn: str):
    lib = Library(pg, enc, "lib")
    lib.ingest(DOCS)
    blocker = psycopg.connect(pg_dsn, autocommit=True)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE passages IN ACCESS EXCLUSIVE MODE")
    killer = _terminate_when_waiting(pg_dsn, 2, blocker)
    with pytest.raises(StoreUnavailableError) as err:
        lib.search("cats sleep", k=3)
    killer.join()
    blocker.close()
    message = for_cli(err.value)
    assert err.value.outage == "lost"
    assert "Lost the connection to the PostgreSQL database again after a retry" in message
    assert "Check that the server is up" in message and "password" not in message
    assert lib.search("cats sleep", k=1)[0].article.title == "All about cats"  # and it recovers


def test_unreachable_server_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StoreUnavailableError, match=r"Cannot connect to the PostgreSQL database") as err:
        PostgresStore(f"postgresql://nobody:secret@/none?host={tmp_path}&connect_timeout=1")
    assert err.value.outage == "unreachable" and "DATABASE_URL" in for_cli(err.value)
    assert "secret" not in for_cli(err.value)


# ---------------------------------------------------------------------- schema migrations

_MIGRATE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from embeddings.store.postgres import Migration, PostgresStore, load_migrations

    extra = Migration(len(load_migrations()) + 1, "two_tables", {sql!r})
    PostgresStore({dsn!r}, migrations=[*load_migrations(), extra]).close()
    print("migrated", flush=True)
    """
)
SHIPPED = [m.version for m in load_migrations()]
NEXT = SHIPPED[-1] + 1  # a test migration after every shipped one
_TWO_TABLES = "CREATE TABLE first_half (x int); SELECT pg_sleep({sleep}); CREATE TABLE second_half (x int);"


def _versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migration_killed_halfway_runs_again_and_finishes(pg_dsn: str, tmp_path: Path):
    script = tmp_path / "migrate.py"
    script.write_text(_MIGRATE.format(root=str(ROOT), dsn=pg_dsn, sql=_TWO_TABLES.format(sleep=60)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    with psycopg.connect(pg_dsn, autocommit=True) as watcher:
        # Wait until the first statement ran and the migration sleeps before the second.
        while not watcher.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CREATE TABLE first_half%%'"
        ).fetchone():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    script.write_text(_MIGRATE.format(root=str(ROOT), dsn=pg_dsn, sql=_TWO_TABLES.format(sleep=0)))
    # The next start waits for the dead one's transaction to be rolled back, then applies it all.
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "migrated" in done.stdout, done.stderr
    assert _versions(pg_dsn) == [*SHIPPED, NEXT]
    assert {"first_half", "second_half"} <= _tables(pg_dsn)


def test_migration_failing_after_its_first_statement_leaves_nothing(pg_dsn: str):
    broken = Migration(NEXT, "broken", "CREATE TABLE first_half (x int); SELECT 1 / 0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        PostgresStore(pg_dsn, migrations=[*load_migrations(), broken])
    assert _versions(pg_dsn) == SHIPPED and "first_half" not in _tables(pg_dsn)
    fixed = Migration(NEXT, "fixed", "CREATE TABLE first_half (x int); SELECT 1;")
    PostgresStore(pg_dsn, migrations=[*load_migrations(), fixed]).close()
    assert _versions(pg_dsn) == [*SHIPPED, NEXT] and "first_half" in _tables(pg_dsn)
    PostgresStore(pg_dsn, migrations=[*load_migrations(), fixed]).close()  # nothing to do
    changed = Migration(NEXT, "fixed", "CREATE TABLE first_half (y int);")
    with pytest.raises(IndexStateError, match="was changed after it was applied"):
        PostgresStore(pg_dsn, migrations=[*load_migrations(), changed])
    with pytest.raises(IndexStateError, match="newer than this citebot knows"):
        PostgresStore(pg_dsn)


# ---------------------------------------------------------------------- migrate between stores


def _filled_local(path: Path, enc: HashEncoder) -> LocalStore:
    store = LocalStore(path)
    lib = Library(store, enc, "lib")
    lib.ingest([*DOCS, *(doc(f"k{i}", f"Note {i}", f"Cats and dogs, note {i}.") for i in range(8))])
    lib.forget("Note 2")  # a gap in the passage ids
    cats = lib.resolve("All about cats").id
    for i, vote in enumerate((1, -1, 1)):
        store.add_feedback(
            "lib", Feedback(f"q{i}?", 2, cats, vote, user="u", created_at="2024-05-01T00:00:00")
        )
    return store


def test_migrate_round_trip_is_identical_idempotent_and_resumable(tmp_path: Path, pg: PostgresStore, enc):
    local = _filled_local(tmp_path / "a", enc)
    source = list(local.export("lib"))
    # Interrupted after the first batch...
    real_restore = pg.restore
    calls = 0

    def restore_then_stop(library, add, *, more=False):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        real_restore(library, add, more=more)

    pg.restore = restore_then_stop  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        copy_library(local, pg, "lib", batch_passages=6)
    del pg.restore
    partial = len(pg.list_articles("lib"))
    assert 0 < partial < len(source)
    # ...resumed: only the rest is copied.
    report = copy_library(local, pg, "lib", batch_passages=6)
    assert (report.skipped, report.copied, report.feedback) == (partial, len(source) - partial, 3)
    assert_exports_equal(source, list(pg.export("lib")))
    gen = pg.generation("lib")
    again = copy_library(local, pg, "lib")
    assert (again.copied, again.removed, again.feedback) == (0, 0, 0) and pg.generation("lib") == gen
    # And back into an empty local store: identical to where it started.
    back = LocalStore(tmp_path / "b")
    copy_library(pg, back, "lib")
    assert_exports_equal(source, list(back.export("lib")))
    assert back.list_feedback("lib", 10) == local.list_feedback("lib", 10)
    libs = [Library(s, enc, "lib") for s in (local, pg, back)]
    for question in QUESTIONS:
        first, *others = (hit_keys(lib.search(question, k=5)) for lib in libs)
        assert all(first == o for o in others)


def test_migrate_refuses_to_drop_target_articles_unless_replace(tmp_path: Path, pg: PostgresStore, enc):
    local = _filled_local(tmp_path / "a", enc)
    Library(pg, enc, "lib").ingest([doc("only-here", "Only in PostgreSQL", "Penguins waddle.")])
    with pytest.raises(
        CopyConflictError, match=r"1 article\(s\) that the source lacks.*Only in PostgreSQL"
    ) as err:
        copy_library(local, pg, "lib")
    assert err.value.extra_count == 1 and "--replace" in for_cli(err.value)
    report = copy_library(local, pg, "lib", replace=True)
    assert report.removed == 1
    assert_exports_equal(list(local.export("lib")), list(pg.export("lib")))
    other = Library(pg, HashEncoder(dim=32, max_tokens=48), "other")
    other.ingest([DOGS])
    Library(local, enc, "other").ingest([CATS])
    with pytest.raises(CopyConflictError, match=r"other settings") as err:
        copy_library(local, pg, "other")
    assert err.value.differences and "--replace" in for_cli(err.value)


def test_cli_migrate_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, enc):
    _filled_local(tmp_path / "data", enc).close()
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, encoder=enc)
        return code, out.getvalue(), err.getvalue()

    code, out, err = run("migrate", "--to", "postgres", "--library", "lib")
    assert code == EXIT_OK, err
    assert "Library 'lib' copied to PostgreSQL: 11 article(s) (" in out and "0 already there" in out
    code, out, _ = run("migrate", "--to", "postgres", "--all")
    assert code == EXIT_OK and "0 article(s) (0 passages) copied, 11 already there" in out
    # With DATABASE_URL set, the other commands use PostgreSQL.
    code, out, _ = run("articles", "--library", "lib")
    assert code == EXIT_OK and "11 article(s) in library 'lib'" in out
    code, out, _ = run("migrate", "--to", "local", "--data-dir", str(tmp_path / "copy"), "--all")
    assert code == EXIT_OK and "copied to the local store" in out
    assert len(LocalStore(tmp_path / "copy").list_articles("lib")) == 11
    code, _, err = run("migrate", "--to", "postgres", "--library", "missing")
    assert code == EXIT_ERROR and "does not exist in the source store" in err
    monkeypatch.delenv("DATABASE_URL")
    code, _, err = run("migrate", "--to", "postgres")
    assert code == EXIT_ERROR and "DATABASE_URL is not set" in err


def test_database_url_selects_the_store_and_stays_out_of_repr(pg_dsn: str, tmp_path: Path):
    from bot.config import Settings
    from bot.services import make_store

    settings = Settings.load(
        environ={"DATABASE_URL": pg_dsn, "CITEBOT_DATA_DIR": str(tmp_path)}, env_file=None
    )
    assert "postgresql" not in repr(settings)
    store = make_store(settings)
    assert isinstance(store, PostgresStore)
    store.close()
    local = make_store(Settings.load(environ={"CITEBOT_DATA_DIR": str(tmp_path)}, env_file=None))
    assert isinstance(local, LocalStore)


def test_vectors_round_trip_exactly(pg: PostgresStore, enc: HashEncoder):
    lib = Library(pg, enc, "lib")
    lib.ingest([CATS])
    ids = [p.id for p in pg.article_passages("lib", lib.articles()[0].id)]
    stored = vectors(pg, "lib", ids)
    assert stored.dtype == np.float32 and stored.flags.c_contiguous
    np.testing.assert_array_equal(stored, enc.encode([p.text for p in pg.passages("lib", ids)]))


def test_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ImportError, match=r"pip install 'citebot\[postgres\]'"):
        PostgresStore("postgresql:///unused")


def test_a_server_that_accepts_and_never_answers_is_reported_in_seconds():
    # It accepts the TCP connection and says nothing: libpq would wait forever without a limit.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            PostgresStore(f"postgresql://citebot:secret@127.0.0.1:{port}/citebot", connect_timeout=2)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert caught.value.outage == "unreachable"
    assert elapsed < 10  # two tries of 2 s, not forever
    assert "secret" not in for_cli(caught.value)
    assert "Check that the server is running" in for_cli(caught.value)


def test_a_statement_past_the_timeout_is_too_slow_not_unexpected(pg_dsn: str):
    store = PostgresStore(pg_dsn, statement_timeout=0.3)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            store._run(lambda conn: conn.execute("SELECT pg_sleep(3)"))
        assert caught.value.outage == "too_slow"
        assert "did not answer in time" in for_cli(caught.value)
        # The connection is usable afterwards, with the same limit.
        assert store._run(lambda conn: conn.execute("SHOW statement_timeout").fetchone())[0] == "300ms"
    finally:
        store.close()


def test_altered_passage_text_is_refused_on_postgresql(pg: PostgresStore, enc: HashEncoder):
    lib = Library(pg, enc, "lib")
    lib.ingest([CATS])
    with psycopg.connect(pg._dsn, autocommit=True) as conn:
        conn.execute("UPDATE passages SET text = upper(text) WHERE id = (SELECT min(id) FROM passages)")
    with pytest.raises(CorruptIndexError, match="no longer matches its checksum"):
        lib.ask("Do cats purr?")


def test_articles_from_before_metadata_checksums_get_the_same_ones_citebot_computes(
    pg: PostgresStore, enc: HashEncoder
):
    # Migration 0003 computes the checksums in SQL; they must equal what citebot computes on
    # insert, or every article of an upgraded library would read as altered.
    lib = Library(pg, enc, "lib")
    lib.ingest([CATS, replace(DOGS, byline="By Ann Lee", url="https://dogs.example")])
    (migration,) = [m for m in load_migrations() if m.name.endswith("article_checksums")]
    with psycopg.connect(pg._dsn, autocommit=True) as conn:
        written = dict(conn.execute("SELECT id, info_md5 FROM articles").fetchall())
        conn.execute("UPDATE articles SET info_md5 = NULL")
        conn.execute(migration.sql)
        migrated = dict(conn.execute("SELECT id, info_md5 FROM articles").fetchall())
    assert migrated == written and None not in written.values()
    assert [a.title for a in Library(pg, enc, "lib").articles()] == ["All about cats", "All about dogs"]


def test_postings_blocks_built_by_the_migration_are_those_writes_keep(pg: PostgresStore, enc: HashEncoder):
    # Migration 0007 packs the postings of existing libraries in SQL; questions must read the
    # same postings from those blocks as from the blocks that writes append to and prune.
    lib = Library(pg, enc, "lib")
    lib.ingest([*DOCS, doc("k1", "Note 1", "Cats and dogs by the water.")])
    lib.forget("All about dogs")
    lib.ingest([doc("k1", "Note 1", "Dogs, crows and cats.")])
    terms = ["cat", "dog", "water", "crow", "sleep"]
    written = pg.lexical("lib", terms)
    (migration,) = [m for m in load_migrations() if m.name == "term_blocks"]
    with psycopg.connect(pg._dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM term_blocks")
        conn.execute(migration.sql)
    migrated = pg.lexical("lib", terms)
    assert migrated.tuples() == written.tuples() and written.tuples()
    assert migrated.df == written.df
    check_integrity(pg, "lib")
