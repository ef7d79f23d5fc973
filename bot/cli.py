"""The ``citebot`` command line: ask, chat, ingest, articles, forget, summary, rebuild, eval,
run, feedback, migrate.

Errors from the core become one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from embeddings import (
    Answer,
    ArticleInfo,
    CitebotError,
    Encoder,
    IngestReport,
    Library,
    NotFoundError,
    Store,
    Summary,
    summarize_text,
)
from embeddings.ingest import SHORT_ID
from embeddings.library import clean_question, short_ids

from .config import Settings
from .redact import RedactingStream, Redactor
from .wording import for_cli

log = logging.getLogger("citebot")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Terminal:
    """Formats core results for a terminal (bold highlight when it is a TTY)."""

    def __init__(self, out: TextIO, color: bool | None = None) -> None:
        self.out = out
        self.color = out.isatty() if color is None else color

    def bold(self, text: str) -> str:
        """Bold on a terminal, Markdown-style asterisks elsewhere."""
        return f"\033[1m{text}\033[0m" if self.color else f"**{text}**"

    def dim(self, text: str) -> str:
        """Faint text on a terminal."""
        return f"\033[2m{text}\033[0m" if self.color else text

    def answer(self, answer: Answer) -> str:
        """The answer passage with its sentence highlighted, then the citation."""
        lines = [self.dim(f"note: {n}") for n in answer.notes]
        best = answer.best
        if best is None:
            lines.append("I couldn't find this in the library.")
            titles = list(dict.fromkeys(h.article.title for h in answer.hits))[:3]
            if titles:
                lines.append("Closest articles: " + "; ".join(f"“{t}”" for t in titles))
            return "\n".join(lines)
        text = best.passage.text
        if best.passage.is_code:
            # Code is quoted as it is, fenced, never bolded.
            text = f"```\n{text}\n```"
        elif answer.highlight:
            a, b = answer.highlight
            text = text[:a] + self.bold(text[a:b]) + text[b:]
        lines.append(text)
        lines.append("")
        lines.append("— " + best.citation.format())
        if best.article.source and not best.article.url:
            lines.append(self.dim(f"  source: {best.article.source}"))
        lines.append(self.dim(f"  confidence {answer.confidence:.2f}"))
        return "\n".join(lines)

    def summary(self, summary: Summary) -> str:
        """Each summary sentence with its paragraph, then the article's citation line."""
        lines = [self.dim(f"note: {n}") for n in summary.notes]
        lines.extend(f"{s.text} [{s.place}]" for s in summary.sentences)
        lines.append("")
        lines.append("— " + _article_line(summary.article))
        return "\n".join(lines)


def _article_line(info: ArticleInfo) -> str:
    """Title, byline, date and link of an article (a citation without a paragraph)."""
    parts = [f"“{info.title}”"]
    if info.byline:
        parts.append(f"by {info.byline}")
    if info.date:
        parts.append(info.date)
    line = ", ".join(parts)
    if info.url:
        line += f" <{info.url}>"
    return line


def _answer_json(answer: Answer) -> dict[str, object]:
    best = answer.best
    return {
        "question": answer.question,
        "answered": answer.answered,
        "confidence": round(answer.confidence, 4),
        "sentence": answer.sentence,
        "passage": best.passage.text if best else None,
        "code": best.passage.is_code if best else None,
        "citation": None
        if best is None
        else {
            "article_id": best.article.id,
            "title": best.article.title,
            "byline": best.article.byline,
            "date": best.article.date,
            "paragraph": best.passage.paragraph,
            "section": best.passage.section or None,
            "page": best.passage.page or None,
            "page_paragraph": best.passage.page_paragraph or None,
            "url": best.article.url,
        },
        "closest_articles": list(dict.fromkeys(h.article.title for h in answer.hits)),
        "notes": list(answer.notes),
    }


def _summary_json(summary: Summary) -> dict[str, object]:
    a = summary.article
    return {
        "article": {"id": a.id, "title": a.title, "byline": a.byline, "date": a.date, "url": a.url},
        "sentences": [
            {
                "text": s.text,
                "paragraph": s.paragraph,
                "start": s.start,
                "end": s.end,
                "section": s.section or None,
                "page": s.page or None,
                "page_paragraph": s.page_paragraph or None,
            }
            for s in summary.sentences
        ],
        "whole": summary.whole,
        "notes": list(summary.notes),
    }


class _Progress:
    """A tqdm bar on stderr for ingests; silent when stderr is not a terminal or quiet."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit="passage", file=sys.stderr, leave=False)
        self.bar.total = total  # grows as the articles of a long ingest are read and chunked
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class App:
    """Lazily built services for one CLI run, so ``--help`` never loads the model."""

    def __init__(
        self,
        settings: Settings,
        out: TextIO,
        err: TextIO,
        quiet: bool = False,
        encoder: Encoder | None = None,
    ) -> None:
        self.settings = settings
        self.out = out
        self.err = err
        self.quiet = quiet
        self._store: Store | None = None
        self._encoder = encoder

    @property
    def store(self) -> Store:
        """The configured store, opened on first use."""
        if self._store is None:
            from .services import make_store

            self._store = make_store(self.settings)
        return self._store

    @property
    def encoder(self) -> Encoder:
        """The configured model, loaded on first use."""
        if self._encoder is None:
            from .services import make_encoder

            self._encoder = make_encoder(self.settings)
        return self._encoder

    def library(self, name: str | None = None) -> Library:
        from .services import make_library

        return make_library(self.settings, self.store, self.encoder, name)

    def reading_library(self, name: str | None, *, seeded: bool = False) -> Library:
        """The library for a command that never embeds (listing, forgetting).

        When its index was built with the configured model, the model is not loaded at all
        (it loads on first use, which such a command never reaches): the command answers in
        well under a second. Otherwise, or on first use, it is :meth:`library` (or
        :meth:`seeded_library`), so that a mismatch is reported as usual.
        """
        from embeddings.encoder import LazyEncoder, resolve_model

        from .services import make_library

        wanted = name or self.settings.library
        if self._encoder is None:
            spec = self.store.spec(wanted)
            if spec is not None:
                identity, _ = resolve_model(self.settings.model)
                if spec.model == identity and self.settings.chunk_tokens in (None, spec.max_tokens):
                    lazy = LazyEncoder(spec.model, spec.dim, spec.max_tokens, lambda: self.encoder)
                    return make_library(self.settings, self.store, lazy, wanted)
        return self.seeded_library(name) if seeded else self.library(name)

    def progress(self, label: str) -> _Progress:
        return _Progress(label, enabled=not self.quiet and self.err.isatty())

    def seeded_library(self, name: str | None) -> Library:
        """The library, filled from the seeds folder on first use of the default library."""
        from .services import ensure_seeded

        lib = self.library(name)
        if lib.name == self.settings.library and not lib.exists():
            bar = self.progress("Building the index from seeds")
            try:
                report = ensure_seeded(lib, self.settings, bar)
            finally:
                bar.close()
            if report is not None and not self.quiet:
                print(
                    f"Built library {lib.name!r} from {self.settings.seeds_dir}: "
                    f"{report.count('added')} article(s), {report.passages_added} passages.",
                    file=self.err,
                )
            elif report is None and not self.quiet and self.settings.seeds_dir is not None:
                print(
                    f"No seed articles: {self.settings.seeds_dir} is not a folder, so library "
                    f"{lib.name!r} starts empty.",
                    file=self.err,
                )
        return lib

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


# ---------------------------------------------------------------------- commands


def cmd_ingest(app: App, args: argparse.Namespace) -> int:
    """citebot ingest PATH..."""
    fetcher = _cli_fetcher(app)
    bar = app.progress("Embedding")
    try:
        # The seeds come first on first use, whatever the first command is.
        lib = app.seeded_library(args.library)
        report = lib.ingest_paths(args.paths, progress=bar, fetcher=fetcher)
    except KeyboardInterrupt:
        bar.close()
        print(
            "Interrupted. Articles finished before the interruption are saved and nothing "
            "half-written was kept; run the same command again to finish (saved files are skipped).",
            file=app.err,
        )
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    return _print_report(app, report)


def _print_report(app: App, report: IngestReport) -> int:
    for r in report.results:
        if r.status == "skipped":
            print(f"skipped: {r.reason}", file=app.err)
        elif r.article is not None and not app.quiet:
            extra = f" ({r.reason})" if r.reason else ""
            print(
                f"{r.status:9} {r.article.id[:SHORT_ID]}  {r.article.title}  "
                f"[{r.article.passage_count} passages]{extra}",
                file=app.out,
            )
    summary = (
        f"{report.count('added')} added, {report.count('replaced')} replaced, "
        f"{report.count('unchanged')} unchanged, {report.count('skipped')} skipped."
    )
    print(summary, file=app.err if app.quiet else app.out)
    ok = any(r.status != "skipped" for r in report.results)
    return EXIT_OK if ok else EXIT_ERROR


def _cli_fetcher(app: App) -> Any:
    """The command line's fetcher: it runs on the operator's own machine, so intranet addresses
    are allowed (Discord refuses them unless CITEBOT_FETCH_ALLOW lists them); time and size
    limits still apply."""
    from embeddings.fetch import Fetcher

    return Fetcher(
        timeout=app.settings.fetch_timeout, max_bytes=app.settings.fetch_max_bytes, allow_private=True
    )


def _sync_one(app: App, lib: Library, sub: Any, fetcher: Any) -> bool:
    """One sync pass over one subscription, printed; True when nothing failed."""
    from .services import sync_subscription

    report = sync_subscription(lib, sub, fetcher, app.settings)
    print(format_sync_report(report, sub.kind), file=app.out)
    return report.ok


def format_sync_report(report: Any, kind: str) -> str:
    """A sync pass as lines: the counts, then every page that was not unchanged."""
    counts = (
        f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
        f"{len(report.forgotten)} forgotten, {len(report.failed)} failed"
        + (f", {report.deferred} left for the next pass" if report.deferred else "")
    )
    lines = [f"{report.subscription} ({kind}): {counts}"]
    for label, urls in (
        ("added", report.added),
        ("replaced", report.replaced),
        ("forgotten", report.forgotten),
    ):
        lines.extend(f"  {label:9}  {u}" for u in urls)
    lines.extend(f"  failed     {u}: {reason}" for u, reason in report.failed)
    return "\n".join(lines)


def cmd_subscribe(app: App, args: argparse.Namespace) -> int:
    """citebot subscribe URL"""
    from embeddings.subscriptions import discover, find_subscription, save_subscription

    fetcher = _cli_fetcher(app)
    lib = app.seeded_library(args.library)
    sub = discover(fetcher, args.url)
    if find_subscription(lib, sub.url) is not None:
        print(f"Already subscribed to {sub.url}; `citebot sync` fetches what is new.", file=app.out)
        return EXIT_OK
    save_subscription(lib, sub)
    print(
        f"Subscribed to the {sub.kind} {sub.url}" + (f" ({sub.title})" if sub.title else "") + ".",
        file=app.out,
    )
    return EXIT_OK if _sync_one(app, lib, sub, fetcher) else EXIT_ERROR


def cmd_subscriptions(app: App, args: argparse.Namespace) -> int:
    """citebot subscriptions"""
    from embeddings.subscriptions import load_subscriptions

    subs = load_subscriptions(app.reading_library(args.library))
    if args.json:
        rows = [
            {
                "url": s.url,
                "kind": s.kind,
                "title": s.title or None,
                "pages": len(s.pages),
                "added_at": s.added_at,
                "last_sync": s.last_sync,
                "last_error": s.last_error,
            }
            for s in subs
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False), file=app.out)
        return EXIT_OK
    if not subs:
        print(
            "No subscriptions. Add one with `citebot subscribe URL` (a feed, a sitemap or a site).",
            file=app.out,
        )
    for s in subs:
        state = f"last synced {s.last_sync}" if s.last_sync else "never synced"
        if s.last_error:
            state += f"; last error: {s.last_error}"
        print(f"{s.kind:8} {s.url}  [{len(s.pages)} pages, {state}]", file=app.out)
    return EXIT_OK


def cmd_unsubscribe(app: App, args: argparse.Namespace) -> int:
    """citebot unsubscribe URL"""
    from embeddings.subscriptions import find_subscription, unsubscribe

    lib = app.reading_library(args.library)
    sub = find_subscription(lib, args.url)
    if sub is None:
        raise NotFoundError(f"No subscription to {args.url}; `citebot subscriptions` lists them.")
    forgotten = unsubscribe(lib, sub)
    print(f"Unsubscribed from {sub.url}; forgot {len(forgotten)} article(s) it had added.", file=app.out)
    return EXIT_OK


def cmd_sync(app: App, args: argparse.Namespace) -> int:
    """citebot sync: one pass over every subscription of every library (cron-friendly)."""
    from embeddings.subscriptions import load_subscriptions

    names = [args.library] if args.only_library else app.store.libraries()
    fetcher = _cli_fetcher(app)
    ok, passes = True, 0
    for name in names:
        reading = app.reading_library(name)
        subs = load_subscriptions(reading)
        if not subs:
            continue
        lib = app.library(name)
        for sub in subs:
            passes += 1
            ok = _sync_one(app, lib, sub, fetcher) and ok
    if not passes:
        print("No subscriptions to sync.", file=app.out)
    return EXIT_OK if ok else EXIT_ERROR


def cmd_articles(app: App, args: argparse.Namespace) -> int:
    """citebot articles"""
    lib = app.reading_library(args.library, seeded=True)
    articles = lib.articles()
    if args.json:
        rows = [
            {
                "id": a.id,
                "title": a.title,
                "byline": a.byline,
                "date": a.date,
                "url": a.url,
                "passages": a.passage_count,
                "paragraphs": a.paragraph_count,
                "source": a.source,
            }
            for a in articles
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False), file=app.out)
        return EXIT_OK
    if not articles:
        print(
            f"Library {lib.name!r} has no articles. Add some with `citebot ingest PATH`.",
            file=app.out,
        )
        return EXIT_OK
    shown = short_ids([a.id for a in articles])
    width = max(10, *(len(v) + 2 for v in shown.values()))
    print(f"{'id':{width}} {'date':10} {'passages':>8}  title", file=app.out)
    for a in articles:
        print(f"{shown[a.id]:{width}} {a.date or '-':10} {a.passage_count:>8}  {a.title}", file=app.out)
    print(f"{len(articles)} article(s) in library {lib.name!r}.", file=app.out)
    return EXIT_OK


def cmd_forget(app: App, args: argparse.Namespace) -> int:
    """citebot forget ARTICLE"""
    lib = app.reading_library(args.library, seeded=True)
    info = lib.forget(args.article)
    print(f"Forgot {info.id}  {info.title} ({info.passage_count} passages).", file=app.out)
    return EXIT_OK


def cmd_ask(app: App, args: argparse.Namespace) -> int:
    """citebot ask QUESTION"""
    question = " ".join(args.question)
    if question.strip() == "-":
        question = sys.stdin.read()
    clean_question(question)  # an empty question fails before any model or index work
    lib = app.seeded_library(args.library)
    answer = lib.ask(question)
    if args.json:
        print(json.dumps(_answer_json(answer), indent=2, ensure_ascii=False), file=app.out)
    else:
        print(Terminal(app.out).answer(answer), file=app.out)
    return EXIT_OK


def cmd_chat(app: App, args: argparse.Namespace) -> int:
    """citebot chat: a question loop that loads the model once.

    Line editing and history come from readline where Python has it. Ctrl-C cancels the
    question being typed or answered, not the session; Ctrl-D (or quit/exit) ends it, and a
    blank line is simply ignored.
    """
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 (input() gains line editing and history)
    lib = app.seeded_library(args.library)
    term = Terminal(app.out)
    print(
        f"citebot: asking library {lib.name!r} ({len(lib.articles())} articles). "
        "Ctrl-D or 'quit' to leave; Ctrl-C cancels a question.",
        file=app.out,
    )
    while True:
        try:
            line = input("? ")
        except EOFError:
            print(file=app.out)
            return EXIT_OK
        except KeyboardInterrupt:
            print(file=app.out)  # a fresh prompt, as a shell does
            continue
        if not line.strip():
            continue
        if line.strip().lower() in ("quit", "exit", ":q"):
            return EXIT_OK
        try:
            print(term.answer(lib.ask(line)), file=app.out)
        except CitebotError as exc:
            print(f"citebot: {for_cli(exc)}", file=app.err)
        except KeyboardInterrupt:
            print("(cancelled)", file=app.err)
        print(file=app.out)


def cmd_summary(app: App, args: argparse.Namespace) -> int:
    """citebot summary ARTICLE [--sentences N]"""
    if args.sentences < 1:
        print("citebot: --sentences must be at least 1.", file=app.err)
        return EXIT_USAGE
    if args.article.strip() == "-":
        summary = summarize_text(sys.stdin.read(), app.encoder, args.sentences)
    else:
        summary = app.seeded_library(args.library).summarize(args.article, args.sentences)
    if args.json:
        print(json.dumps(_summary_json(summary), indent=2, ensure_ascii=False), file=app.out)
    elif args.article.strip() == "-":
        # One sentence per line and nothing else on stdout, so other tools can score it.
        for note in summary.notes:
            print(f"note: {note}", file=app.err)
        for s in summary.sentences:
            print(" ".join(s.text.split()), file=app.out)
    else:
        print(Terminal(app.out).summary(summary), file=app.out)
    return EXIT_OK


def cmd_rebuild(app: App, args: argparse.Namespace) -> int:
    """citebot rebuild"""
    lib = app.library(args.library)
    bar = app.progress("Re-embedding")
    try:
        report = lib.rebuild(progress=bar)
    finally:
        bar.close()
    print(
        f"Rebuilt library {lib.name!r}: {len(report.results)} article(s), "
        f"{report.passages_added} passages, model {lib.spec.model}, sentence vectors {lib.sentence_vectors}.",
        file=app.out,
    )
    return EXIT_OK


def cmd_eval(app: App, args: argparse.Namespace) -> int:
    """citebot eval DIR"""
    import tempfile

    from embeddings import LocalStore
    from embeddings.evaluate import format_result, is_document_set, load_eval_set, run_eval

    from .services import make_library

    if is_document_set(args.folder):
        return _eval_documents(app, args)
    data = load_eval_set(args.folder)
    bars: list[_Progress] = []

    def progress(label: str) -> _Progress:
        if bars:
            bars[-1].close()
        bars.append(app.progress(label))
        return bars[-1]

    with tempfile.TemporaryDirectory(prefix="citebot-eval-") as tmp:
        store = LocalStore(args.keep or tmp)
        try:
            result = run_eval(
                data,
                lambda name: make_library(app.settings, store, app.encoder, name),
                limit=args.limit,
                progress=progress,
                source=str(args.folder),
            )
        finally:
            for b in bars:
                b.close()
            store.close()
    print(
        f"citebot eval {args.folder}: all articles in one library; declining uses a fixed half", file=app.out
    )
    print(format_result(result, curve=args.curve), file=app.out)
    return EXIT_OK


def _eval_documents(app: App, args: argparse.Namespace) -> int:
    """citebot eval DIR, for a folder of real files with questions naming them."""
    import tempfile

    from embeddings import LocalStore
    from embeddings.evaluate import (
        DOCUMENT_QUESTIONS,
        ask_document_questions,
        format_document_results,
        load_document_questions,
    )

    from .services import make_library

    questions = load_document_questions(args.folder)
    files = sorted({args.folder / q["file"] for q in questions})
    with tempfile.TemporaryDirectory(prefix="citebot-eval-") as tmp:
        store = LocalStore(args.keep or tmp)
        try:
            library = make_library(app.settings, store, app.encoder, "documents")
            bar = app.progress("Embedding")
            try:
                report = library.ingest_paths(files, progress=bar)
            finally:
                bar.close()
            for r in report.results:
                if r.status == "skipped":
                    print(f"skipped: {r.reason}", file=app.err)
            results = ask_document_questions(library, questions[: args.limit or None])
        finally:
            store.close()
    print(
        f"citebot eval {args.folder}: {len(files)} files, questions from {DOCUMENT_QUESTIONS}", file=app.out
    )
    print(format_document_results(results), file=app.out)
    return EXIT_OK


NO_TOKEN = (
    "DISCORD_TOKEN is not set, so the Discord bot cannot log in.\n"
    "To get one: open https://discord.com/developers/applications, create an application, open "
    "its Bot page and press Reset Token. Put the token in .env as DISCORD_TOKEN=... (or in the "
    "environment); the README's 'Discord bot' section walks through it, with the invite link.\n"
    "Without Discord, `citebot chat` and `citebot ask` work offline on the same library."
)


def cmd_run(app: App, args: argparse.Namespace) -> int:
    """citebot run: the Discord bot, until Ctrl-C."""
    token = app.settings.discord_token
    if not token:
        print(f"citebot: {NO_TOKEN}", file=app.err)
        return EXIT_ERROR
    from dataclasses import replace

    from .client import Citebot, serve

    if args.library:  # in the bot, --library names the library that answers direct messages
        app.settings = replace(app.settings, dm_library=args.library)
    bot = Citebot(
        app.settings,
        app.store,
        app.encoder,
        announce=lambda line: print(f"citebot: {line}", file=app.err),
    )
    if not app.quiet:
        print("citebot: connecting to Discord (Ctrl-C to stop)...", file=app.err)
    return serve(bot, token, app.err)


def cmd_feedback(app: App, args: argparse.Namespace) -> int:
    """citebot feedback: the 👍/👎 votes given to answers, newest first."""
    from embeddings import list_votes

    names = None if args.all else [args.library or app.settings.library]
    rows = list_votes(app.store, names, limit=args.limit)
    if args.json:
        data = [
            {
                "library": name,
                "vote": f.vote,
                "question": f.question,
                "article_id": f.article_id,
                "passage_id": f.answer_passage_id,
                "user": f.user,
                "created_at": f.created_at,
                **{k: v for k, v in f.extra.items() if k not in ("guild",)},
            }
            for name, f in rows
        ]
        print(json.dumps(data, indent=2, ensure_ascii=False), file=app.out)
        return EXIT_OK
    if not rows:
        where = "any library" if names is None else f"library {names[0]!r}"
        print(f"No votes in {where} yet.", file=app.out)
        return EXIT_OK
    for name, f in rows:
        answer = f.extra.get("title") or f.article_id or "?"
        paragraph = f" ¶ {f.extra['paragraph']}" if f.extra.get("paragraph") else ""
        print(
            f"{f.created_at[:19]:19}  {'+1' if f.vote > 0 else '-1'}  {name}  "
            f"{f.question!r} -> “{answer}”{paragraph}",
            file=app.out,
        )
    up = sum(1 for _, f in rows if f.vote > 0)
    print(f"{len(rows)} vote(s): {up} up, {len(rows) - up} down.", file=app.out)
    return EXIT_OK


def cmd_config(app: App, args: argparse.Namespace) -> int:
    """citebot config [NAME [VALUE]]"""
    from embeddings.community import SETTING_HELP, describe_value, parse_setting

    lib = app.reading_library(args.library)
    if args.value is not None:
        lib.configure(**{args.name: parse_setting(args.name, args.value)})
    elif args.name is not None:
        parse_setting(args.name, "default")  # an unknown name fails with the list of names
    own, effective = lib.own_settings(), lib.settings()
    names = [args.name.strip().lower().replace("-", "_")] if args.name else list(SETTING_HELP)
    if args.json:
        data = {n: {"value": getattr(effective, n), "default": getattr(own, n) is None} for n in names}
        print(json.dumps(data, indent=2), file=app.out)
        return EXIT_OK
    width = max(len(n) for n in names)
    for n in names:
        value = describe_value(n, getattr(effective, n)) + (" (default)" if getattr(own, n) is None else "")
        print(f"{n:<{width}}  {value}", file=app.out)
        if not app.quiet:
            print(f"{'':<{width}}  {SETTING_HELP[n]}", file=app.out)
    return EXIT_OK


def cmd_gaps(app: App, args: argparse.Namespace) -> int:
    """citebot gaps [--since PERIOD] [--csv FILE]"""
    from embeddings import community

    lib = app.reading_library(args.library)
    gaps = lib.gaps(community.utcnow() - community.parse_period(args.since))
    if args.csv is not None:
        text = community.gaps_csv(gaps)
        if str(args.csv) == "-":
            app.out.write(text)
        else:
            args.csv.write_text(text, encoding="utf-8")
            print(f"Wrote {sum(g.count for g in gaps)} question(s) to {args.csv}.", file=app.err)
        return EXIT_OK
    if not gaps:
        print(f"Nothing went unanswered in the last {args.since} (or no questions were kept).", file=app.out)
        return EXIT_OK
    for n, g in enumerate(gaps, start=1):
        down = f", {g.downvoted} voted down" if g.downvoted else ""
        print(f"{n}. asked {g.count}x ({g.declined} declined{down}), last {g.last_asked[:16]}", file=app.out)
        for q in g.examples:
            print(f"   - {q}", file=app.out)
        if g.closest_article:
            print(f"   closest article: {g.closest_article}", file=app.out)
    return EXIT_OK


def cmd_pins(app: App, args: argparse.Namespace) -> int:
    """citebot pins [--remove ID]"""
    lib = app.reading_library(args.library)
    if args.remove:
        pin = lib.unpin(args.remove)
        print(f"Unpinned {pin.id}: {pin.question!r}.", file=app.out)
        return EXIT_OK
    pins, dropped = lib.pins(), lib.dropped_pins()
    if args.json:
        rows = [
            {
                "id": p.id,
                "question": p.question,
                "title": p.title,
                "paragraph": p.paragraph,
                "by": p.by,
                "at": p.at,
            }
            for p in pins
        ]
        gone = [{"id": p.id, "question": p.question, "title": p.title} for p in dropped]
        print(json.dumps({"pins": rows, "dropped": gone}, indent=2, ensure_ascii=False), file=app.out)
        return EXIT_OK
    if not pins:
        print("No pins. Moderators pin a passage from an answer's “Other sources” in Discord.", file=app.out)
    for p in pins:
        print(
            f"{p.id}  {p.question!r} -> “{p.title}” ¶ {p.paragraph}  (by {p.by}, {p.at[:10]})", file=app.out
        )
    for p in dropped:
        print(
            f"dropped {p.id}  {p.question!r}: its passage in “{p.title}” changed or was removed", file=app.out
        )
    return EXIT_OK


def cmd_export(app: App, args: argparse.Namespace) -> int:
    """citebot export FILE"""
    from embeddings.exchange import export_library

    lib = app.reading_library(args.library)
    if str(args.file) == "-":
        lines = export_library(lib, app.out)
    else:
        tmp = args.file.with_name(args.file.name + ".part")
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                lines = export_library(lib, handle)
            tmp.replace(args.file)  # a half-written export never takes the file's name
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            print(f"citebot: can't write {args.file}: {exc.strerror or exc}.", file=app.err)
            return EXIT_ERROR
        print(f"Exported library {lib.name!r} to {args.file} ({lines} lines).", file=app.err)
    return EXIT_OK


def cmd_import(app: App, args: argparse.Namespace) -> int:
    """citebot import FILE"""
    from embeddings.exchange import import_library

    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"citebot: can't read {args.file}: {getattr(exc, 'strerror', None) or exc}.", file=app.err)
        return EXIT_ERROR
    lib = app.library(args.library)
    bar = app.progress("Embedding")
    try:
        report = import_library(lib, text.splitlines(), source=str(args.file), progress=bar)
    finally:
        bar.close()
    status = _print_report(app, report.ingest)
    print(
        f"Imported into {lib.name!r}: {report.ingest.count('added')} added, {report.ingest.count('replaced')} "
        f"replaced, {report.ingest.count('unchanged')} unchanged; settings {'set' if report.settings else 'none'}, "
        f"{report.pins} pin(s), {report.votes} vote(s), {report.subscriptions} subscription(s).",
        file=app.err,
    )
    for q in report.pins_dropped:
        print(f"pin dropped (its passage is not in the imported articles): {q!r}", file=app.err)
    return status


def cmd_migrate(app: App, args: argparse.Namespace) -> int:
    """citebot migrate --to postgres|local [--library NAME | --all]"""
    from embeddings import LocalStore
    from embeddings.store.transfer import copy_library, libraries_to_copy

    from .services import make_postgres_store

    if args.all and args.library:
        print("citebot: give --library NAME or --all, not both.", file=app.err)
        return EXIT_USAGE
    local = LocalStore(app.settings.data_dir)
    postgres = make_postgres_store(app.settings)
    source, target = (local, postgres) if args.to == "postgres" else (postgres, local)
    where = {"postgres": "PostgreSQL", "local": f"the local store ({app.settings.data_dir})"}
    try:
        names = libraries_to_copy(source, None if args.all else args.library or app.settings.library)
        if not names:
            print("citebot: the source store has no libraries; nothing to copy.", file=app.err)
            return EXIT_ERROR
        for name in names:
            bar = app.progress(f"Copying {name}")
            try:
                report = copy_library(source, target, name, replace=args.replace, progress=bar)
            except KeyboardInterrupt:
                print(
                    "Interrupted. The articles copied so far are kept; run the same command again "
                    "to copy the rest.",
                    file=app.err,
                )
                return EXIT_INTERRUPTED
            finally:
                bar.close()
            print(
                f"Library {name!r} copied to {where[args.to]}: {report.copied} article(s) "
                f"({report.passages} passages) copied, {report.skipped} already there, "
                f"{report.removed} removed, {report.feedback} vote(s) added.",
                file=app.out,
            )
    finally:
        local.close()
        postgres.close()
    return EXIT_OK


# ---------------------------------------------------------------------- parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("citebot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _add_common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--library, --data-dir, --quiet, --verbose; ``default`` None on the main parser (real
    defaults), SUPPRESS on the commands' copy (so an absent option keeps the main's value)."""
    main = default is None
    parser.add_argument(
        "--library",
        "-l",
        metavar="NAME",
        default=None if main else argparse.SUPPRESS,
        help="library to use (default: CITEBOT_LIBRARY or 'default')",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        default=None if main else argparse.SUPPRESS,
        help="where indexes live (default: CITEBOT_DATA_DIR)",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=False if main else argparse.SUPPRESS,
        help="print only results and errors",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=False if main else argparse.SUPPRESS,
        help="log what happens, with tracebacks",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands register themselves here)."""
    parser = argparse.ArgumentParser(
        prog="citebot",
        description="Answer questions about a library of articles, always with a citation.",
    )
    # The global options work before or after the command: the main parser holds their
    # defaults, and the copy every command inherits leaves them alone unless given there.
    _add_common_options(parser, None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="add files, folders or URLs of articles",
        description="Add .txt, .md, .html, .jsonl and .pdf articles (files, folders or http(s) URLs). "
        "Unchanged articles are skipped, changed ones replaced.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "subscribe",
        parents=[common],
        help="follow a feed, a sitemap or a site",
        description="Follow an RSS/Atom feed, a sitemap (or sitemap index, gzip too) or a site's page "
        '(its feed is found through <link rel="alternate">), and add what it lists now. '
        "`citebot sync` (or `citebot run`, on a schedule) keeps it current.",
    )
    p.add_argument("url", metavar="URL")
    p.set_defaults(func=cmd_subscribe)

    p = sub.add_parser(
        "subscriptions",
        parents=[common],
        help="list the library's subscriptions",
        description="Each subscription: kind, address, pages it brought in, last sync and last error.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_subscriptions)

    p = sub.add_parser(
        "unsubscribe",
        parents=[common],
        help="stop following a feed or sitemap and forget its articles",
        description="Remove a subscription and the articles it added.",
    )
    p.add_argument("url", metavar="URL")
    p.set_defaults(func=cmd_unsubscribe)

    p = sub.add_parser(
        "sync",
        parents=[common],
        help="fetch what is new in every subscription (for cron)",
        description="One pass over every subscription of every library: prints what was added, "
        "replaced, unchanged, forgotten and failed; exits 1 when something failed.",
    )
    p.add_argument("--only-library", action="store_true", help="sync only the library named by --library")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser(
        "articles",
        parents=[common],
        help="list the library's articles",
        description="List id, date, passage count and title of every article.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_articles)

    p = sub.add_parser(
        "forget",
        parents=[common],
        help="remove an article",
        description="Remove an article, by id or title, with all its passages.",
    )
    p.add_argument("article", metavar="ARTICLE", help="article id (or a unique prefix) or title")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser(
        "ask",
        parents=[common],
        help="ask one question",
        description="Answer a question with the closest passage, its best sentence "
        "highlighted, and a citation. Use '-' to read the question from stdin.",
    )
    p.add_argument("question", nargs="+", metavar="QUESTION")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser(
        "chat",
        parents=[common],
        help="ask questions in a loop (model loaded once)",
        description="An interactive loop: type a question, get a cited answer.",
    )
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "summary",
        parents=[common],
        help="summarize an article in a few of its own sentences",
        description="An extractive summary: sentences of the article, in article order, each "
        "citing its paragraph. ARTICLE is an id or a title; '-' summarizes text read from "
        "stdin and prints one sentence per line.",
    )
    p.add_argument("article", metavar="ARTICLE", help="article id (or a unique prefix), title, or '-'")
    p.add_argument(
        "--sentences", "-n", type=int, default=3, metavar="N", help="how many sentences (default 3)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "rebuild",
        parents=[common],
        help="re-embed a library with the current settings",
        description="Re-chunk and re-embed every stored article with the configured "
        "model, chunk size and way of making sentence vectors (CITEBOT_SENTENCE_VECTORS). "
        "Needed after changing the model or chunk size, or to repair damaged vectors. "
        "The old index stays in place until the new one is complete.",
    )
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser(
        "eval",
        parents=[common],
        help="measure retrieval and declining on a question set",
        description="Evaluate on a folder with articles.jsonl and questions.jsonl (and optionally "
        "questions_unanswerable.jsonl): Recall@1/5, MRR@10, the answering-sentence rate, and how "
        "often questions about articles outside the library are declined. Builds temporary "
        "libraries; your own library is not touched.",
        epilog=textwrap.dedent(
            """\
            input format (JSON Lines, one object per line):
              articles.jsonl       {"id": "a1", "title": "...", "paragraphs": ["...", "..."]}
                                   (or "text" with paragraphs separated by blank lines; "author",
                                   "date" and "url" are read too)
              questions.jsonl      {"id": "q1", "question": "...", "article_id": "a1",
                                    "paragraph": 0, "answers": ["..."]}
                                   paragraph: the 0-based index of the paragraph that answers;
                                   answers: strings the answering sentence should contain
              questions_unanswerable.jsonl
                                   the same fields with "answers": []: questions the library
                                   cannot answer; they should be declined

            or a folder of real files (any format citebot ingests) beside a questions.jsonl of
              {"id": "q1", "file": "licence.txt", "question": "...", "expect": "words"}
                                   right when a passage of that file holds the expected words
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--limit", type=int, default=0, help="ask only N questions, spread over the set")
    p.add_argument("--curve", action="store_true", help="print the whole declining trade-off curve")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the evaluation index in DIR")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the Discord bot (needs DISCORD_TOKEN)",
        description="Connect to Discord and answer /ask, mentions and the other commands, "
        "one library per server. Reads DISCORD_TOKEN and the other settings from the "
        "environment or .env. --library names the library used in direct messages.",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "feedback",
        parents=[common],
        help="list the 👍/👎 votes given to answers",
        description="List the votes people gave answers, newest first, with the question and "
        "the article that answered. A Discord server's library is named guild-<server id>.",
    )
    p.add_argument("--all", action="store_true", help="every library in the store")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N votes (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser(
        "config",
        parents=[common],
        help="show or change a library's community settings",
        description="Show the settings a Discord server's library runs with (guild-<server id>), "
        "or change one: `citebot config thread_mode on`. The value default resets a setting.",
    )
    p.add_argument("name", nargs="?", help="a setting's name")
    p.add_argument("value", nargs="?", help="its new value")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "gaps",
        parents=[common],
        help="questions the library did not answer, grouped",
        description="Declined and voted-down questions, grouped by meaning, largest group first.",
    )
    p.add_argument("--since", default="30d", metavar="PERIOD", help="how far back: 24h, 7d, 4w (default 30d)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write every question as CSV (- for stdout)")
    p.set_defaults(func=cmd_gaps)

    p = sub.add_parser(
        "pins",
        parents=[common],
        help="list or remove the moderators' pinned answers",
        description="Passages moderators chose as answers, and pins dropped because their passage changed.",
    )
    p.add_argument("--remove", metavar="ID", help="remove the pin with this id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_pins)

    p = sub.add_parser(
        "export",
        parents=[common],
        help="write a library (articles, settings, pins, votes) to a JSON Lines file",
        description="Everything people made: articles' cleaned text and metadata, settings, pins, "
        "votes and subscriptions. Not the vectors: `citebot import` embeds again.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="where to write (- for stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        parents=[common],
        help="add a `citebot export` file (or a Discord /export) to a library",
        description="Checks the whole file first (a bad line changes nothing), then embeds its "
        "articles, and restores settings, pins, votes and subscriptions.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the file to read (- for stdin)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy libraries between the local store and PostgreSQL",
        description="Copy a library (articles, passages, vectors, sentences, postings, feedback) "
        "from the local store to the PostgreSQL database at DATABASE_URL, or back. The model is "
        "not run. Running it again copies only what is missing, so an interrupted copy resumes.",
    )
    p.add_argument("--to", required=True, choices=("postgres", "local"), help="the store to copy into")
    p.add_argument("--all", action="store_true", help="copy every library of the source store")
    p.add_argument(
        "--replace",
        action="store_true",
        help="make the target an exact copy: remove its articles that the source lacks",
    )
    p.set_defaults(func=cmd_migrate)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    encoder: Encoder | None = None,
) -> int:
    """Entry point of the ``citebot`` command. ``encoder`` replaces the configured model (tests)."""
    out = out or sys.stdout
    # Everything on stderr (errors, logs, tracebacks) passes the one redaction layer.
    redactor = Redactor(Settings.secrets())
    stderr: TextIO = cast(TextIO, RedactingStream(err or sys.stderr, redactor))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(data_dir=args.data_dir)
    except CitebotError as exc:
        print(f"citebot: {for_cli(exc)}", file=stderr)
        return EXIT_ERROR
    level = logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper())
    from .ops import configure_logging

    configure_logging(level, settings.log_format, stderr)
    app = App(settings, out, stderr, quiet=args.quiet, encoder=encoder)
    try:
        return int(args.func(app, args))
    except CitebotError as exc:
        print(f"citebot: {for_cli(exc)}", file=stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("citebot: interrupted.", file=stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`citebot ask --json … | head`): that is not an error. Point
        # stdout at /dev/null so that Python's flush at exit does not complain either.
        if out is sys.stdout:
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.verbose:
            log.exception("unexpected error")
        print(
            f"citebot: unexpected error: {type(exc).__name__}: {exc} (run with --verbose for details)",
            file=stderr,
        )
        return EXIT_ERROR
    finally:
        app.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
