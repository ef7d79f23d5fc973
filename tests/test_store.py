"""The local store and the library: incremental, atomic, locked, and loud when damaged.

Uses the deterministic hash encoder: none of this depends on the model.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.wording import for_cli
from embeddings import (
    ChunkSpec,
    CorruptIndexError,
    Document,
    EmptyLibraryError,
    HashEncoder,
    IndexMismatchError,
    Library,
    LibraryAccessError,
    LibraryBusyError,
    LocalStore,
    NotFoundError,
)
from embeddings.articles import assemble
from embeddings.store import ArticleWrite, IndexSpec
from embeddings.store.common import text_md5
from embeddings.types import ArticleInfo, Passage

ROOT = Path(__file__).resolve().parent.parent


def doc(key: str, title: str, *paragraphs: str) -> Document:
    text, spans = assemble(paragraphs)
    return Document(key=key, title=title, text=text, paragraphs=spans, source=key)


CATS = doc("cats", "All about cats", "Cats purr when content.", "Cats sleep sixteen hours a day.")
DOGS = doc("dogs", "All about dogs", "Dogs bark at strangers.", "Dogs love long walks in the park.")


def integrity(store: LocalStore, library: str) -> None:
    """Every article has exactly its passages and vectors; raises if the index is damaged."""
    infos = store.list_articles(library)
    total = 0
    for info in infos:
        passages = store.article_passages(library, info.id)
        assert len(passages) == info.passage_count
        assert [p.ordinal for p in passages] == list(range(info.passage_count))
        total += len(passages)
        assert len(store.evidence(library, [p.id for p in passages])) == len(passages)
    assert store._matrix(library).vectors.shape[0] == total


def test_ingest_is_incremental(hash_library: Library):
    r1 = hash_library.ingest([CATS, DOGS])
    assert [r.status for r in r1.results] == ["added", "added"]
    r2 = hash_library.ingest([CATS, DOGS])
    assert [r.status for r in r2.results] == ["unchanged", "unchanged"]
    gen = hash_library.store.generation("test")
    changed = doc(
        "cats", "All about cats", "Cats purr when content.", "Cats can jump five times their height."
    )
    r3 = hash_library.ingest([changed])
    assert r3.results[0].status == "replaced"
    assert r3.results[0].article.id == r1.results[0].article.id  # same id across versions
    assert hash_library.store.generation("test") == gen + 1
    assert len(hash_library.articles()) == 2
    hit = hash_library.search("jump height", k=1)[0]
    assert "jump" in hit.passage.text
    assert not any("sixteen" in h.passage.text for h in hash_library.search("sleep sixteen hours", k=5))
    integrity(hash_library.store, "test")


def test_same_text_under_another_key_is_not_duplicated(hash_library: Library):
    hash_library.ingest([CATS])
    twin = replace(CATS, key="cats-copy")
    report = hash_library.ingest([twin])
    assert report.results[0].status == "unchanged"
    assert len(hash_library.articles()) == 1


def test_forget_by_title_and_id(hash_library: Library):
    hash_library.ingest([CATS, DOGS])
    info = hash_library.forget("all about cats")
    assert info.title == "All about cats"
    assert [a.title for a in hash_library.articles()] == ["All about dogs"]
    dogs_id = hash_library.articles()[0].id
    hash_library.forget(dogs_id[:5])
    assert hash_library.articles() == []
    integrity(hash_library.store, "test")


def test_unknown_article_suggests_close_titles(hash_library: Library):
    hash_library.ingest([CATS, DOGS])
    with pytest.raises(NotFoundError) as err:
        hash_library.resolve("All about catz and more")
    assert "All about cats" in str(err.value)
    assert "All about cats" in err.value.suggestions
    assert hash_library.resolve("all about dgos").title == "All about dogs"


def test_libraries_are_isolated(store: LocalStore, hash_encoder: HashEncoder):
    a = Library(store, hash_encoder, "guild-1")
    b = Library(store, hash_encoder, "guild-2")
    a.ingest([CATS])
    b.ingest([DOGS])
    assert [x.title for x in a.articles()] == ["All about cats"]
    assert all(h.article.title == "All about dogs" for h in b.search("cats purr", k=5))
    assert store.libraries() == ["guild-1", "guild-2"]


def test_missing_library_says_how_to_fill_it(hash_library: Library):
    with pytest.raises(EmptyLibraryError) as err:
        hash_library.ask("anything?")
    assert err.value.library == "test"
    assert for_cli(err.value).endswith("Add articles with `citebot ingest PATH --library test`.")


def test_invalid_library_name_is_refused(store: LocalStore, hash_encoder: HashEncoder):
    with pytest.raises(Exception, match="not a valid library name"):
        Library(store, hash_encoder, "../etc")


def test_other_model_refuses_to_load_and_rebuild_fixes_it(store: LocalStore):
    Library(store, HashEncoder(dim=64), "lib").ingest([CATS, DOGS])
    other = Library(store, HashEncoder(dim=32), "lib")
    with pytest.raises(IndexMismatchError) as err:
        other.ask("cats?")
    assert "hash-64" in str(err.value) and "hash-32" in str(err.value)
    assert "citebot rebuild --library lib" in for_cli(err.value)
    report = other.rebuild()
    assert len(report.results) == 2
    assert other.search("dogs bark", k=1)[0].article.title == "All about dogs"
    assert store.spec("lib").model == "hash-32"


def test_chunk_size_change_is_a_mismatch(store: LocalStore, hash_encoder: HashEncoder):
    Library(store, hash_encoder, "lib", chunk=ChunkSpec(40)).ingest([CATS])
    with pytest.raises(IndexMismatchError, match="max_tokens"):
        Library(store, hash_encoder, "lib", chunk=ChunkSpec(20)).articles()


def _vector_file(store: LocalStore, library: str) -> Path:
    (path,) = store.library_dir(library).glob("vectors.*.npy")
    return path


def test_corrupt_vectors_file_is_detected_and_rebuild_repairs_it(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS, DOGS])
    store.close()
    path = _vector_file(store, "lib")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last vector
    path.write_bytes(bytes(data))
    fresh = LocalStore(tmp_path)
    lib = Library(fresh, hash_encoder, "lib")
    with pytest.raises(CorruptIndexError, match=r"checksum") as err:
        lib.ask("cats?")
    assert err.value.part == "passage vectors" and err.value.rebuildable
    assert "citebot rebuild --library lib" in for_cli(err.value)
    lib.rebuild()
    assert lib.search("dogs bark", k=1)[0].article.title == "All about dogs"


def test_truncated_vectors_file_is_detected(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS, DOGS])
    store.close()
    path = _vector_file(store, "lib")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptIndexError, match=r"damaged|do not match"):
        Library(LocalStore(tmp_path), hash_encoder, "lib").search("cats")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(min_value=0, max_value=4 * 10**12), cols=st.integers(min_value=0, max_value=10**6))
def test_a_header_claiming_any_shape_is_refused_before_loading(
    tmp_path_factory: pytest.TempPathFactory, hash_encoder: HashEncoder, rows: int, cols: int
):
    # A header claiming 4e9 rows once made numpy try to allocate 5.6 TiB (MemoryError).
    root = tmp_path_factory.mktemp("lib")
    store = LocalStore(root)
    Library(store, hash_encoder, "lib").ingest([CATS, DOGS])
    store.close()
    path = _vector_file(store, "lib")
    real = np.load(path)
    if (rows, cols) == real.shape:
        return
    with open(path, "r+b") as f:  # rewrite the header only, as a flipped digit would
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)}
        )
    with pytest.raises(CorruptIndexError, match=r"do not match|damaged") as err:
        Library(LocalStore(root), hash_encoder, "lib").search("cats")
    assert err.value.part == "passage vectors" and err.value.rebuildable


def test_missing_vectors_file_is_detected(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS])
    store.close()
    _vector_file(store, "lib").unlink()
    with pytest.raises(CorruptIndexError, match="missing"):
        Library(LocalStore(tmp_path), hash_encoder, "lib").search("cats")


def test_corrupt_database_is_detected(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS])
    store.close()
    db = store.library_dir("lib") / "index.sqlite3"
    for extra in db.parent.glob("index.sqlite3-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CorruptIndexError, match="damaged") as err:
        Library(LocalStore(tmp_path), hash_encoder, "lib").articles()
    # The database holds the texts: a rebuild cannot help, so nobody is told to run one.
    assert err.value.part == "database" and not err.value.rebuildable
    assert "rebuild" not in for_cli(err.value) and "ingest the articles again" in for_cli(err.value)


def test_dense_search_breaks_ties_by_passage_order(store: LocalStore, hash_encoder: HashEncoder):
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([doc("a", "A", "same words here."), doc("b", "B", "same words here!")])
    # Same text in both: vectors identical, so the earlier passage must win.
    ids = [pid for pid, _ in store.nearest("lib", hash_encoder.encode(["same words"])[0], 2)[0]]
    assert ids == sorted(ids)


# ---------------------------------------------------------------------- other processes

_SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from embeddings import Document, HashEncoder, Library, LocalStore
    from embeddings.articles import assemble

    class SlowEncoder(HashEncoder):
        def encode(self, texts, *, kind="passage", progress=None):
            print("encoding", len(texts), flush=True)
            time.sleep({delay})
            return super().encode(texts, kind=kind, progress=progress)

    docs = []
    for i in range(40):
        text, spans = assemble([f"Article {{i}} talks about topic {{i}} at length.", f"More on {{i}}."])
        docs.append(Document(key=f"k{{i}}", title=f"Article {{i}}", text=text, paragraphs=spans))
    lib = Library(LocalStore({data!r}), SlowEncoder(dim=64, max_tokens=48), "lib")
    print("started", flush=True)
    report = lib.ingest(docs, batch_passages=4)
    print("finished", report.count("added"), flush=True)
    """
)


def _spawn(tmp_path: Path, delay: float) -> subprocess.Popen[str]:
    script = tmp_path / "slow_ingest.py"
    script.write_text(_SLOW_INGEST.format(root=str(ROOT), data=str(tmp_path / "data"), delay=delay))
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc: subprocess.Popen[str], word: str, count: int = 1) -> None:
    seen = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"process ended early: {proc.stderr.read()}")  # type: ignore[union-attr]
        if line.startswith(word):
            seen += 1
            if seen >= count:
                return
    raise AssertionError(f"timed out waiting for {word!r}")


def test_killed_ingest_keeps_previous_state_and_whole_articles(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path / "data")
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([CATS, DOGS])
    before = {a.id: a.content_hash for a in lib.articles()}
    proc = _spawn(tmp_path, delay=0.3)
    _wait_for(proc, "encoding", count=3)  # a few batches committed, one in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fresh = LocalStore(tmp_path / "data")
    after = {a.id: a for a in fresh.list_articles("lib")}
    for aid, digest in before.items():
        assert after[aid].content_hash == digest
    assert 2 < len(after) < 42  # some batches landed, the rest did not
    integrity(fresh, "lib")
    # And the library keeps working: the same ingest run again completes the rest.
    proc = _spawn(tmp_path, delay=0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(LocalStore(tmp_path / "data").list_articles("lib")) == 42


_KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from embeddings import Document, HashEncoder, Library, LocalStore
    from embeddings.articles import assemble
    from embeddings.store import local

    real_save = local._save_npy
    def save_then_die(path, array):
        real_save(path, array)
        if path.name.startswith("ids."):
            os.kill(os.getpid(), signal.SIGKILL)  # new files on disk, transaction not committed
    local._save_npy = save_then_die
    text, spans = assemble(["Birds sing at dawn."])
    lib = Library(LocalStore({data!r}), HashEncoder(dim=64, max_tokens=48), "lib")
    lib.ingest([Document(key="birds", title="Birds", text=text, paragraphs=spans)])
    """
)


def test_kill_between_vector_files_and_commit(tmp_path: Path, hash_encoder: HashEncoder):
    lib = Library(LocalStore(tmp_path / "data"), hash_encoder, "lib")
    lib.ingest([CATS, DOGS])
    script = tmp_path / "die.py"
    script.write_text(_KILL_MID_WRITE.format(root=str(ROOT), data=str(tmp_path / "data")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    fresh = Library(LocalStore(tmp_path / "data"), hash_encoder, "lib")
    assert sorted(a.title for a in fresh.articles()) == ["All about cats", "All about dogs"]
    integrity(fresh.store, "lib")
    # The next write cleans the orphaned files and works.
    fresh.ingest([doc("birds", "Birds", "Birds sing at dawn.")])
    assert len(list(fresh.store.library_dir("lib").glob("vectors.*.npy"))) == 1
    integrity(fresh.store, "lib")


def test_second_writer_gets_a_clear_message(tmp_path: Path, hash_encoder: HashEncoder):
    proc = _spawn(tmp_path, delay=0.5)
    try:
        _wait_for(proc, "encoding")
        lib = Library(LocalStore(tmp_path / "data"), hash_encoder, "lib")
        with pytest.raises(LibraryBusyError) as err:
            lib.ingest([CATS])
        message = str(err.value)
        assert "another citebot process" in message and f"pid {proc.pid}" in message
        assert "Wait for it to finish" in for_cli(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_during_cli_ingest(tmp_path: Path):
    folder = tmp_path / "articles"
    folder.mkdir()
    for i in range(30):
        (folder / f"a{i:02}.txt").write_text(
            f"Title {i}\n\n" + " ".join(f"Sentence {j} of {i}." for j in range(200))
        )
    env = {**os.environ, "CITEBOT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "ingest", str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    # Wait until the model is loaded and embedding has begun, then interrupt.
    data = tmp_path / "data" / "libraries" / "default"
    deadline = time.time() + 120
    while time.time() < deadline and not (data / "writer.json").exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "run the same command again" in err
    store = LocalStore(tmp_path / "data")
    if store.spec("default") is not None:
        integrity(store, "default")
    assert not (data / "writer.json").exists()  # the lock was released


def test_vectors_are_float32_normalised_and_ordered(store: LocalStore, hash_encoder: HashEncoder):
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([CATS, DOGS])
    m = store._matrix("lib")
    assert m.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m.vectors, axis=1), 1.0, rtol=1e-5)
    assert list(m.ids) == sorted(m.ids)
    with sqlite3.connect(store.library_dir("lib") / "index.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0] == len(m.ids)


# ------------------------------------------------------------------ access problems, truthfully


def _cats_library(factory: pytest.TempPathFactory, encoder: HashEncoder) -> tuple[Path, LocalStore, Library]:
    """A fresh folder with library "lib" holding CATS (hypothesis tests need one per example)."""
    root = factory.mktemp("lib")
    store = LocalStore(root)
    lib = Library(store, encoder, "lib")
    lib.ingest([CATS])
    return root, store, lib


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    code=st.sampled_from([errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM]),
    where=st.sampled_from(["vectors", "lock", "owner"]),
)
def test_a_full_disk_or_a_refused_write_is_said_as_such_and_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, hash_encoder: HashEncoder, code: int, where: str
):
    # These used to end in "unexpected error: OSError ..." or call an intact library damaged.
    import filelock

    from embeddings.store import local

    root, store, lib = _cats_library(tmp_path_factory, hash_encoder)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(root / "libraries" / "lib" / "x"))

    target = {
        "vectors": (local, "_save_npy"),
        "lock": (filelock.FileLock, "acquire"),
        "owner": (Path, "write_text"),
    }[where]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(*target, refuse)
        with pytest.raises(LibraryAccessError) as err:
            lib.ingest([DOGS])
    expected = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only"}
    assert err.value.problem == expected.get(code, "permission")
    advice = for_cli(err.value)
    assert "intact" in advice and "aside" not in advice and "rebuild" not in advice
    # Nothing was lost or half-written: the library answers as before.
    assert [a.title for a in lib.articles()] == ["All about cats"]
    assert lib.search("cats purr", k=1)[0].article.title == "All about cats"
    store.close()


def test_a_read_only_database_is_not_called_damaged(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([CATS])
    store._conn("lib").execute("PRAGMA query_only=ON")  # SQLite now refuses writes, as read-only
    with pytest.raises(LibraryAccessError) as err:
        lib.ingest([DOGS])
    assert err.value.problem in ("permission", "read_only")
    assert "damaged" not in str(err.value)
    assert lib.search("cats purr", k=1)[0].article.title == "All about cats"  # reading still works
    store.close()


def test_a_deleted_database_is_missing_not_an_empty_library(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS])
    store.close()
    (store.library_dir("lib") / "index.sqlite3").unlink()
    fresh = LocalStore(tmp_path)
    with pytest.raises(CorruptIndexError, match="missing") as err:
        Library(fresh, hash_encoder, "lib").articles()
    assert err.value.part == "database" and not err.value.rebuildable
    assert "Restore" in for_cli(err.value) and "from a backup" in for_cli(err.value)
    with pytest.raises(CorruptIndexError, match="missing"):  # and an ingest does not start afresh
        Library(fresh, hash_encoder, "lib").ingest([DOGS])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10_000), replacement=st.characters(codec="utf-8"))
def test_altered_passage_text_is_refused_never_quoted(
    tmp_path_factory: pytest.TempPathFactory, hash_encoder: HashEncoder, position: int, replacement: str
):
    # Text changed inside the database (same length: SQLite's integrity check still says ok)
    # was once quoted at confidence 0.98.
    _, store, lib = _cats_library(tmp_path_factory, hash_encoder)
    conn = store._conn("lib")
    pid, text = conn.execute("SELECT id, text FROM passages ORDER BY id LIMIT 1").fetchone()
    i = position % len(text)
    altered = text[:i] + replacement + text[i + 1 :]
    if altered == text:
        return
    conn.execute("UPDATE passages SET text=? WHERE id=?", (altered, pid))
    with pytest.raises(CorruptIndexError, match="no longer matches its checksum") as err:
        lib.ask("Do cats purr?")
    assert not err.value.rebuildable
    store.close()


def test_a_library_from_before_checksums_gets_them(tmp_path: Path, hash_encoder: HashEncoder):
    store = LocalStore(tmp_path)
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([CATS])
    conn = store._conn("lib")
    written = conn.execute("SELECT id, info_md5 FROM articles").fetchall()
    conn.execute("ALTER TABLE passages DROP COLUMN text_md5")  # as an older citebot made it
    conn.execute("ALTER TABLE articles DROP COLUMN info_md5")
    store.close()
    fresh = LocalStore(tmp_path)
    assert Library(fresh, hash_encoder, "lib").search("cats purr", k=1)[0].article.title == "All about cats"
    conn = fresh._conn("lib")
    (missing,) = conn.execute("SELECT count(*) FROM passages WHERE text_md5 IS NULL").fetchone()
    assert missing == 0
    assert conn.execute("SELECT id, info_md5 FROM articles").fetchall() == written
    # The checksums now guard the old library as they guard a new one.
    conn.execute("UPDATE articles SET title = 'Not about cats'")
    with pytest.raises(CorruptIndexError, match="no longer matches its checksum"):
        Library(fresh, hash_encoder, "lib").articles()
    fresh.close()


def test_passages_with_a_text_only_checksum_are_still_checked(tmp_path: Path, hash_encoder: HashEncoder):
    # Libraries written between the two checksum versions hold md5(text) alone.
    store = LocalStore(tmp_path)
    lib = Library(store, hash_encoder, "lib")
    lib.ingest([CATS])
    conn = store._conn("lib")
    for pid, text in conn.execute("SELECT id, text FROM passages").fetchall():
        conn.execute("UPDATE passages SET text_md5=? WHERE id=?", (text_md5(text), pid))
    assert lib.search("cats purr", k=1)[0].article.title == "All about cats"
    conn.execute("UPDATE passages SET text = upper(text)")
    with pytest.raises(CorruptIndexError, match="no longer matches its checksum"):
        lib.search("cats purr", k=1)
    store.close()


def _read_as_another_user(folder: Path) -> dict[str, object]:
    """Ask and try to ingest in a forked child that is not the folder's owner (root: nobody)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and exit, never return into pytest
        signal.alarm(60)  # a child stuck on a lock inherited through fork dies instead of hanging
        result: dict[str, object] = {}
        try:
            if os.geteuid() == 0:  # root may write anywhere
                os.setgid(65534)
                os.setuid(65534)
            lib = Library(LocalStore(folder), HashEncoder(dim=64, max_tokens=48), "lib")
            result["found"] = lib.search("cats purr", k=1)[0].article.title
            try:
                lib.ingest([DOGS])
                result["refused"] = None
            except LibraryAccessError as exc:
                result["refused"] = exc.problem
        except BaseException as exc:
            result["error"] = repr(exc)
        finally:
            os.write(write, json.dumps(result).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert answer, f"the reading child died without an answer (wait status {status})"
    return json.loads(answer)


@pytest.mark.parametrize("made_by", ["this version", "a version before checksums"])
def test_a_library_this_user_may_not_write_still_answers(hash_encoder: HashEncoder, made_by: str):
    # Once: "the library is damaged, move it aside" for a read-only folder; then: no answers at
    # all (SQLite cannot open a WAL database where it may not create its shared-memory file).
    folder = Path(tempfile.mkdtemp(prefix="citebot-ro-"))
    try:
        folder.chmod(0o755)  # another user must be able to reach it
        store = LocalStore(folder)
        Library(store, hash_encoder, "lib").ingest([CATS])
        if made_by != "this version":  # an old library cannot be given its checksums read-only
            conn = store._conn("lib")
            conn.execute("ALTER TABLE passages DROP COLUMN text_md5")
            conn.execute("ALTER TABLE articles DROP COLUMN info_md5")
        store.close()
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        assert _read_as_another_user(folder) == {"found": "All about cats", "refused": "permission"}
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_a_vectors_file_this_user_may_not_read_is_not_called_damaged(
    tmp_path: Path, hash_encoder: HashEncoder, monkeypatch: pytest.MonkeyPatch, code: int
):
    from embeddings.store import local

    store = LocalStore(tmp_path)
    Library(store, hash_encoder, "lib").ingest([CATS])
    store.close()

    def refuse(path: Path) -> None:
        raise PermissionError(code, os.strerror(code), str(path))

    monkeypatch.setattr(local, "_npy_header", refuse)
    fresh = LocalStore(tmp_path)
    with pytest.raises(LibraryAccessError) as caught:
        Library(fresh, hash_encoder, "lib").search("cats purr", k=1)
    assert caught.value.problem == "unreadable" and "read access" in for_cli(caught.value)
    fresh.close()


def _synthetic_write(article_id: str, count: int, dim: int, seed: int) -> ArticleWrite:
    """An article of ``count`` one-sentence passages with random unit vectors."""
    rng = np.random.default_rng(seed)
    texts = [f"passage {i} of {article_id}." for i in range(count)]
    text = "\n\n".join(texts)
    starts = np.cumsum([0] + [len(t) + 2 for t in texts[:-1]])
    passages = [
        Passage(article_id, i, i + 1, int(s), int(s) + len(t), t)
        for i, (s, t) in enumerate(zip(starts, texts, strict=True))
    ]
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    info = ArticleInfo(
        id=article_id,
        title=article_id,
        byline=None,
        date=None,
        url=None,
        source=None,
        key=article_id,
        content_hash=text_md5(text),
        passage_count=count,
        paragraph_count=count,
        added_at="2026-01-01T00:00:00+00:00",
    )
    return ArticleWrite(
        info=info,
        text=text,
        paragraphs=tuple((p.start, p.end) for p in passages),
        passages=passages,
        vectors=vectors,
        terms=[{"passage": 1, str(i): 1} for i in range(count)],
        sentences=[(i, p.start, p.end) for i, p in enumerate(passages)],
        sentence_vectors=vectors.copy(),
    )


def test_a_write_copies_the_library_vectors_at_most_once(tmp_path: Path):
    """A write builds the next generation's arrays beside the current ones; an add that removes
    nothing must not also copy the current ones (at 1,000,000 passages that copy is 8 GB, and
    it made the tenth 100,000-passage write of a 1M library run out of 24 GB)."""
    import tracemalloc

    dim = 256
    store = LocalStore(tmp_path / "data")
    store.create("big", IndexSpec(model="m", dim=dim, max_tokens=128, overlap=0, analyzer="a"))
    store.write("big", [_synthetic_write("a", 4_000, dim, 0)])
    current = store._matrix("big")
    held = current.vectors.nbytes + current.sentence_vectors.nbytes
    tracemalloc.start()
    try:
        store.write("big", [_synthetic_write("b", 10, dim, 1)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The new arrays (the old ones plus ten rows) and working memory; a copy of the old arrays
    # on top would make it about one and a half times the library's vectors here (the copy
    # of each array is freed once concatenated).
    assert peak < 1.25 * held, (peak, held)
    assert len(store._matrix("big").ids) == 4_010
    # Removing an article copies the rows kept, once.
    current = store._matrix("big")
    held = current.vectors.nbytes + current.sentence_vectors.nbytes
    tracemalloc.start()
    try:
        store.write("big", [], ["b"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * held, (peak, held)
    assert len(store._matrix("big").ids) == 4_000
    store.close()
