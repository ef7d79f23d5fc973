"""The command line, run in-process with the real model injected (loaded once per session)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.cli import EXIT_ERROR, EXIT_OK, build_parser, main

from .conftest import ROOT, SEED


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the CLI at a temp data folder and a seeds folder holding the seed article."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / SEED.name).write_bytes(SEED.read_bytes())
    monkeypatch.setenv("CITEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITEBOT_SEEDS_DIR", str(seeds))
    monkeypatch.delenv("CITEBOT_LIBRARY", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(model, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv), out=out, err=err, encoder=model)
    finally:
        sys.stdin = old
    return code, out.getvalue(), err.getvalue()


def test_ask_builds_the_index_from_seeds_on_first_use(env: Path, model):
    code, out, err = run(model, "ask", "What has the US seen in Ukraine?")
    assert code == EXIT_OK, err
    assert "Built library 'default'" in err
    assert "**" in out  # the highlighted sentence (no TTY, so Markdown bold)
    assert "reports of Russian abuses in Ukraine" in out
    assert "Blinken says US has seen reports" in out and "Prof. Ahlam" in out and "2022-03-07" in out
    assert "¶ 1" in out
    # The second run reuses the index.
    code, out, err = run(model, "ask", "What did the American Embassy in Kyiv say?")
    assert code == EXIT_OK and "Built library" not in err
    assert "nuclear power plant" in out and "¶ 5" in out


def test_ask_json(env: Path, model):
    code, out, _ = run(model, "ask", "--json", "How many refugees have crossed into neighboring countries?")
    data = json.loads(out)
    assert code == EXIT_OK and data["answered"] is True
    assert "1.5 million" in data["sentence"]
    assert data["citation"]["paragraph"] == 11 and data["citation"]["byline"] == "Prof. Ahlam"


def test_unrelated_question_is_declined(env: Path, model):
    code, out, _ = run(model, "ask", "What is a good recipe for banana bread?")
    assert code == EXIT_OK
    assert "I couldn't find this in the library." in out
    assert "Closest articles:" in out
    assert "**" not in out  # nothing quoted as if it were the answer


def test_empty_question(env: Path, model):
    code, out, err = run(model, "ask", "   ")
    assert code == EXIT_ERROR and out == ""
    assert err.strip() == "citebot: The question is empty: type what you want to know."


def test_100kb_question_is_truncated_with_a_note(env: Path, model):
    question = "What did Blinken say about war crimes? " + "filler " * 15000
    assert len(question) > 100_000
    code, out, err = run(model, "ask", "-", stdin=question)
    assert code == EXIT_OK, err
    assert "only the first" in out and "characters" in out
    assert "war crime" in out


def test_ingest_articles_forget(env: Path, model):
    folder = env / "more"
    folder.mkdir()
    (folder / "bees.md").write_text("---\ntitle: Bees\nauthor: Ann\n---\n\nBees make honey from nectar.\n")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (folder / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    code, out, err = run(model, "ingest", str(folder))
    assert code == EXIT_OK
    assert "Built library 'default'" in err  # the seeds come first, whatever the first command
    assert "added" in out and "Bees" in out
    assert "blob.txt: looks like a binary file" in err
    assert "latin.txt: is not UTF-8 text" in err
    assert "1 added, 0 replaced, 0 unchanged, 2 skipped." in out
    code, out, _ = run(model, "ingest", str(folder / "bees.md"))
    assert "unchanged" in out
    code, out, _ = run(model, "articles")
    assert "Bees" in out and "2 article(s)" in out
    code, out, _ = run(model, "articles", "--json")
    assert "Bees" in [a["title"] for a in json.loads(out)]
    code, out, _ = run(model, "forget", "bees")
    assert code == EXIT_OK and "Forgot" in out
    code, _, err = run(model, "forget", "bees")
    assert code == EXIT_ERROR and "No article matches 'bees'" in err


def test_ingest_nothing_usable_fails(env: Path, model):
    empty = env / "empty"
    empty.mkdir()
    code, _, err = run(model, "ingest", str(empty))
    assert code == EXIT_ERROR
    assert "no files to ingest here" in err


def test_missing_library(env: Path, model):
    code, _, err = run(model, "ask", "--library", "nowhere", "hello?")
    assert code == EXIT_ERROR
    assert "Library 'nowhere'" in err and "citebot ingest" in err


def test_chat_loop(env: Path, model, monkeypatch: pytest.MonkeyPatch):
    # A blank line does not end the session; Ctrl-C cancels the line being typed or the
    # answer being worked out, not the session; Ctrl-D ends it.
    typed: list[object] = [
        "Who echoed Blinken on Sunday?",
        "",
        KeyboardInterrupt(),
        "interrupt this one",
        "Who echoed Blinken on Sunday?",
        EOFError(),
        "never reached",
    ]

    def fake_input(prompt: str = "") -> str:
        item = typed.pop(0)
        if isinstance(item, BaseException):
            raise item
        return str(item)

    from embeddings import Library

    real_ask = Library.ask

    def ask(self: Library, question: str, *a: object, **kw: object):
        if question == "interrupt this one":
            raise KeyboardInterrupt
        return real_ask(self, question, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(Library, "ask", ask)
    code, out, err = run(model, "chat")
    assert code == EXIT_OK
    assert out.count("Thomas-Greenfield") >= 2 and "(cancelled)" in err
    assert typed == ["never reached"]


def test_help_is_fast_and_lists_commands():
    # --help must not import torch or load the model.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bot.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.stdout.strip().endswith("False")
    for cmd in ("ingest", "articles", "forget", "ask", "chat", "rebuild"):
        assert cmd in proc.stdout


def test_bad_setting_is_reported(env: Path, model, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CITEBOT_CHUNK_TOKENS", "lots")
    code, _, err = run(model, "articles")
    assert code == EXIT_ERROR
    assert "CITEBOT_CHUNK_TOKENS must be a whole number, not 'lots'" in err


# ---------------------------------------------------------------------- the command line's own manners

_GLOBAL = {"--library": "other", "--data-dir": "/tmp/somewhere", "--quiet": None, "--verbose": None}


@settings(max_examples=60, deadline=None)
@given(
    command=st.sampled_from([["articles"], ["ask", "a question"], ["forget", "x"], ["ingest", "a.txt"]]),
    placement=st.dictionaries(st.sampled_from(sorted(_GLOBAL)), st.booleans()),
)
def test_global_options_work_before_or_after_the_command(command: list[str], placement: dict[str, bool]):
    def flags(before: bool) -> list[str]:
        out: list[str] = []
        for name, is_before in sorted(placement.items()):
            if is_before == before:
                out += [name] if _GLOBAL[name] is None else [name, str(_GLOBAL[name])]
        return out

    args = build_parser().parse_args([*flags(True), *command, *flags(False)])
    assert args.library == ("other" if "--library" in placement else None)
    assert args.data_dir == (Path("/tmp/somewhere") if "--data-dir" in placement else None)
    assert args.quiet is ("--quiet" in placement)
    assert args.verbose is ("--verbose" in placement)


def test_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("citebot ")


class _ClosedPipe(io.StringIO):
    """stdout whose reader went away after the first line (`| head -1`)."""

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_pipe_is_not_an_error(env: Path, hash_encoder):
    err = io.StringIO()
    for i in range(3):
        (env / f"a{i}.txt").write_text(f"Article {i}\n\nParagraph about topic number {i}.\n")
    assert main(["ingest", str(env)], out=io.StringIO(), err=io.StringIO(), encoder=hash_encoder) == EXIT_OK
    code = main(["articles"], out=_ClosedPipe(), err=err, encoder=hash_encoder)
    assert code == EXIT_OK and err.getvalue() == ""


def test_listing_and_forgetting_do_not_load_the_model(seed_library, tmp_path: Path):
    # `articles` used to take 9 s: every command loaded torch and the weights first.
    root = seed_library.store.root
    title = seed_library.articles()[0].title
    probe = textwrap.dedent(
        f"""
        import sys
        from bot.cli import main
        code = main(["articles", "--library", "seeds", "--data-dir", {str(root)!r}])
        print("loaded:", sorted(m for m in ("torch", "sentence_transformers") if m in sys.modules))
        sys.exit(code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert title in done.stdout and "loaded: []" in done.stdout


def test_verbose_ingest_lists_what_the_cleaner_dropped(
    env: Path, hash_encoder, caplog: pytest.LogCaptureFixture
):
    page = env / "page.txt"
    page.write_text(
        "A headline about tides\n\nThe tide rises twice a day along this coast.\n\nAdvertisement\n\n"
        "Fishermen plan their trips around the low tide.\n\nShare this article\n"
    )
    caplog.set_level("DEBUG", logger="embeddings.articles")  # pytest owns the root logger here
    code = main(["ingest", str(page), "-v"], out=io.StringIO(), err=io.StringIO(), encoder=hash_encoder)
    assert code == EXIT_OK
    log = caplog.text
    assert "dropped a paragraph as advertisement: 'Advertisement'" in log
    assert "dropped a paragraph as share buttons: 'Share this article'" in log


def test_community_commands_config_gaps_pins_export_import(env: Path, model):
    from bot.config import Settings
    from bot.services import make_library
    from embeddings import LocalStore

    assert run(model, "ask", "What did the American Embassy in Kyiv say?")[0] == EXIT_OK
    code, out, err = run(model, "config", "thread_mode", "on")
    assert code == EXIT_OK, err
    assert out.startswith("thread_mode  on\n") and "(default)" not in out.splitlines()[0]
    code, out, _ = run(model, "config", "--quiet")
    assert "retention_days" in out and "90 (default)" in out and "thread_mode" in out
    code, _, err = run(model, "config", "colour", "red")
    assert code == EXIT_ERROR and "There is no setting 'colour'" in err
    code, _, err = run(model, "config", "cooldown", "fast")
    assert code == EXIT_ERROR and "is not a cooldown" in err

    settings = Settings.load(env_file=None)
    store = LocalStore(settings.data_dir)
    lib = make_library(settings, store, model)
    lib.ask("How many moons does Neptune have?", asked_by="42")
    answer = lib.ask("What did the American Embassy in Kyiv say?", record_as="7", asked_by="42")
    assert answer.answered
    pin = lib.pin("7", 1, "mod")
    store.close()

    code, out, _ = run(model, "gaps", "--since", "7d")
    assert code == EXIT_OK and "1. asked 1x (1 declined)" in out and "Neptune" in out
    code, out, _ = run(model, "gaps", "--csv", "-")
    assert out.startswith("group,group_size") and "Neptune" in out
    code, _, err = run(model, "gaps", "--since", "yesterday")
    assert code == EXIT_ERROR and "is not a period" in err
    code, out, _ = run(model, "pins")
    assert out.startswith(pin.id) and "American Embassy" in out

    code, _, err = run(model, "export", "library.jsonl")
    assert code == EXIT_OK and "Exported library 'default'" in err
    code, _, err = run(model, "import", "--library", "copy", "library.jsonl")
    assert code == EXIT_OK, err
    assert "1 added" in err and "settings set" in err and "1 pin(s)" in err
    code, out, _ = run(model, "config", "thread_mode", "--library", "copy")
    assert out.startswith("thread_mode  on")
    code, out, _ = run(model, "ask", "--library", "copy", "What did the American Embassy in Kyiv say?")
    assert code == EXIT_OK and "moderators" in out

    (env / "bad.jsonl").write_text('{"type": "header", "format": "citebot-library", "version": 1}\n{oops\n')
    code, _, err = run(model, "import", "--library", "copy", "bad.jsonl")
    assert code == EXIT_ERROR and "line 2" in err and "nothing was changed" in err
    code, _, err = run(model, "import", "missing.jsonl")
    assert code == EXIT_ERROR and "can't read missing.jsonl" in err
    code, out, _ = run(model, "pins", "--remove", pin.id)
    assert code == EXIT_OK and out.startswith(f"Unpinned {pin.id}")
