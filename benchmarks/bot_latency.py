"""Event-loop lag of the Discord bot while 20 /ask run at once and an /ingest runs.

    python benchmarks/bot_latency.py [--data ../shared/eval/squad-dev] [--articles 4] [--asks 20] [--rounds 3]
                                     [--workers 4] [--keep DIR]

The gateway heartbeat is a task on the bot's event loop; if the loop stalls, the heartbeat is
late (discord.py warns "heartbeat blocked" and Discord eventually drops the connection). So
this measures the loop's worst stall: a ticker task sleeps 5 ms again and again and records
how late it wakes up, while the bot serves requests through its real command callbacks
(payload-built interactions, the real model, a real store, HTTP recorded instead of sent).

Scenarios:
1. bot: 20 /ask interactions delivered at once plus one /ingest of a new article (attachment).
2. serial reference: the same 20 questions asked one after another with no event loop.
3. control: the ticker alone on the idle bot, for as long as a round: the stalls that other
   processes on the machine cause by themselves.
4. blocking contrast: the 20 questions answered *on* the loop (no worker thread), to show
   what the ticker would report if the bot blocked.

Prints a Markdown table. The target is a worst lag under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from discord.webhook.async_ import async_context  # noqa: E402

from bot.client import WORKERS  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.services import make_library, quiet_model_loading  # noqa: E402
from bot.testing import (  # noqa: E402  (the offline Discord the tests use)
    ADMIN_ID,
    ADMIN_PERMISSIONS,
    GUILD_A,
    GUILD_B,
    FakeDiscord,
    attachment_payload,
    start_bot,
)
from embeddings import Document, LocalStore, SentenceTransformerEncoder  # noqa: E402
from embeddings.fetch import Fetcher  # noqa: E402

TICK = 0.005


def load_articles(folder: Path) -> list[dict]:
    with open(folder / "articles.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def pick_questions(folder: Path, article_ids: set[str], n: int) -> list[str]:
    with open(folder / "questions.jsonl", encoding="utf-8") as f:
        rows = [q for q in map(json.loads, f) if q["article_id"] in article_ids]
    step = max(1, len(rows) // n)
    return [rows[i * step]["question"] for i in range(n)]


def document(article: dict) -> Document:
    text = "\n\n".join(article["paragraphs"])
    spans, pos = [], 0
    for p in article["paragraphs"]:
        spans.append((pos, pos + len(p)))
        pos += len(p) + 2
    return Document(key=article["id"], title=article["title"], text=text, paragraphs=tuple(spans))


class GCWatch:
    """Durations of the garbage collector's passes: a pass holds the GIL, stopping every thread."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def __enter__(self) -> GCWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def worst(self) -> float:
        """The longest pass, in ms."""
        return max((d for _, d in self.pauses), default=0.0) * 1000


class Ticker:
    """Sleeps ``TICK`` in a loop and records how late each wake-up is."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(TICK)
            self.lags.append(time.perf_counter() - t - TICK)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    async def stopped(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def stats(self) -> tuple[float, float, float]:
        """Max, p99 and median lag in ms."""
        lags = sorted(self.lags) or [0.0]
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
        return max(lags) * 1000, p99 * 1000, statistics.median(lags) * 1000


async def timed(coro_factory) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    await coro_factory()
    return time.perf_counter() - t


async def scenario_bot(
    fake: FakeDiscord, questions: list[str], ingest_name: str, ingest_bytes: bytes
) -> dict[str, object]:
    """Deliver every /ask and one /ingest at once; measure the loop while they run."""
    attachment = attachment_payload(ingest_name, ingest_bytes)
    fake.http.cdn[attachment["url"]] = ingest_bytes
    fake.recorder.clear()
    ticker = Ticker()
    with ticker, GCWatch() as gcw:
        await asyncio.sleep(0.05)  # the ticker's first ticks run on an idle loop
        start = time.perf_counter()
        asks = [timed(lambda q=q: fake.slash("ask", question=q)) for q in questions]
        ingest = timed(
            lambda: fake.slash("ingest", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, file=attachment)
        )
        results = await asyncio.gather(*asks, ingest)
        wall = time.perf_counter() - start
    await ticker.stopped()
    defers = [s for s in fake.recorder.sent if s.kind == "defer"]
    answers = [s for s in fake.recorder.sent if s.kind == "followup"]
    assert fake.tree.errors == [], fake.tree.errors
    assert len(defers) == len(questions) + 1 and len(answers) == len(questions) + 1
    added = [a for a in answers if a.embeds and (a.embeds[0].title or "").startswith("Added 1 article")]
    assert len(added) == 1, "the /ingest did not add its article"
    return {
        "gc": gcw.worst(),
        "lag": ticker.stats(),
        "ticks": len(ticker.lags),
        "wall": wall,
        "ask": results[:-1],
        "ingest": results[-1],
        "defer_worst": max(d.at for d in defers) - start,
        "answered": sum(1 for a in answers if a.embeds and a not in added),
    }


async def scenario_idle(seconds: float) -> tuple[float, float, float]:
    """The ticker alone: what the machine itself (other processes) does to the loop."""
    ticker = Ticker()
    with ticker:
        await asyncio.sleep(seconds)
    await ticker.stopped()
    return ticker.stats()


def serial(library, questions: list[str]) -> float:  # type: ignore[no-untyped-def]
    """The same questions, one after another, no event loop: seconds in all."""
    t = time.perf_counter()
    for q in questions:
        library.ask(q)
    return time.perf_counter() - t


async def scenario_blocking(library, questions: list[str]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    ticker = Ticker()
    with ticker:
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        for q in questions:
            library.ask(q)  # deliberately on the loop
            await asyncio.sleep(0)
        wall = time.perf_counter() - start
    await ticker.stopped()
    return {"lag": ticker.stats(), "wall": wall}


async def scenario_crowd(fake: FakeDiscord, questions: list[str], n: int) -> dict[str, object]:
    """``n`` /ask at once (the arrival burst included) with an autocomplete after every fifth."""
    fake.recorder.clear()
    ticker = Ticker()
    autocompletes: list[float] = []

    async def complete(prefix: str) -> None:
        t = time.perf_counter()
        await fake.autocomplete("summary", "article", article=prefix)
        autocompletes.append(time.perf_counter() - t)

    with ticker:
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        jobs = []
        for i in range(n):
            jobs.append(fake.slash("ask", question=questions[i % len(questions)]))
            if i % 5 == 4:
                jobs.append(complete(questions[i % len(questions)][:3]))
        await asyncio.gather(*jobs)
        wall = time.perf_counter() - start
    await ticker.stopped()
    assert fake.tree.errors == [], fake.tree.errors
    return {"lag": ticker.stats(), "wall": wall, "autocomplete": autocompletes}


class SlowLinks:
    """An HTTP server on 127.0.0.1 whose pages take ``delay`` seconds: the slow links of a flood."""

    def __init__(self, delay: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Slow(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                time.sleep(delay)
                body = f"A slow page\n\nIt took {delay} seconds to arrive, on purpose.".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        import threading

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def scenario_flood(
    fake: FakeDiscord, flood: list[str], question: str, links: SlowLinks
) -> dict[str, float]:
    """Server A floods (its /ask and 4 slow /ingest links) while server B asks one question."""
    alone = await timed(lambda: fake.slash("ask", question=question, guild_id=GUILD_B))
    fake.recorder.clear()
    attack = [fake.slash("ask", question=q) for q in flood] + [
        fake.slash("ingest", user_id=ADMIN_ID, permissions=ADMIN_PERMISSIONS, url=f"{links.base}/page{i}.txt")
        for i in range(4)
    ]
    tasks = [asyncio.ensure_future(a) for a in attack]
    await asyncio.sleep(0.02)  # the flood is queued first
    during = await timed(lambda: fake.slash("ask", question=question, guild_id=GUILD_B))
    await asyncio.gather(*tasks)
    assert fake.tree.errors == [], fake.tree.errors
    return {"alone": alone, "during": during}


def article_text(article: dict) -> bytes:
    return (article["title"] + "\n\n" + "\n\n".join(article["paragraphs"])).encode()


async def run(args: argparse.Namespace) -> None:
    quiet_model_loading()
    load_before = os.getloadavg()[0]
    model = SentenceTransformerEncoder()
    articles = load_articles(args.data)
    library_articles = articles[: args.articles]
    # Each round ingests a new article during the asks: the smallest ones not in the library.
    extras = sorted(articles[args.articles :], key=lambda a: sum(map(len, a["paragraphs"])))[: args.rounds]
    questions = pick_questions(args.data, {a["id"] for a in library_articles}, args.asks)

    with tempfile.TemporaryDirectory(prefix="citebot-latency-") as tmp:
        settings = Settings.load(
            environ={"CITEBOT_ASK_COOLDOWN": "off"}, env_file=None, data_dir=Path(tmp), seeds_dir=Path(tmp)
        )
        build = 0.0
        if args.keep and (args.keep / "libraries" / f"guild-{GUILD_A}").is_dir():
            shutil.copytree(args.keep, tmp, dirs_exist_ok=True)  # a copy: each run ingests anew
        store = LocalStore(settings.data_dir)
        library = make_library(settings, store, model, f"guild-{GUILD_A}")
        if not library.exists():
            t = time.perf_counter()
            library.ingest([document(a) for a in library_articles])
            build = time.perf_counter() - t
            if args.keep:
                shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        passages = sum(a.passage_count for a in library.articles())
        library.ask(questions[0])  # warm caches for every scenario alike

        serial_before = serial(library, questions)
        # Server B: another library with one article, and its question.
        other = articles[args.articles + args.rounds + 1]
        make_library(settings, store, model, f"guild-{GUILD_B}").ingest([document(other)])
        other_question = pick_questions(args.data, {other["id"]}, 1)[0]
        links = SlowLinks(delay=2.0)
        fetcher = Fetcher(timeout=10, allowed_networks=["127.0.0.1/32"])
        fake, token = await start_bot(settings, store, model, workers=args.workers, fetcher=fetcher)
        try:
            await fake.slash("ask", question=questions[0])  # warm the bot's own library object
            rounds = []
            for extra in extras:
                rounds.append(await scenario_bot(fake, questions, f"{extra['id']}.txt", article_text(extra)))
            idle = await scenario_idle(max(float(r["wall"]) for r in rounds))  # type: ignore[arg-type]
            crowds = {n: await scenario_crowd(fake, questions, n) for n in (50, 150)}
            floods = [
                await scenario_flood(fake, questions, other_question, links) for _ in range(args.rounds)
            ]
        finally:
            async_context.reset(token)
            await fake.bot.close()
            links.close()
        serial_after = serial(library, questions)
        blocking = await scenario_blocking(library, questions)
        store.close()

    n = len(questions)
    print(
        f"Library: {len(library_articles)} SQuAD-dev articles, {passages} passages"
        + (f" (built in {build:.0f} s). " if build else " (reused). ")
        + f"{args.workers} worker threads. {os.cpu_count()} CPUs, shared: load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n"
    )
    rows = [
        (
            "scenario",
            "worst loop lag",
            "p99 lag",
            "median lag",
            "wall time",
            "per ask (median / max)",
            "/ingest",
            "longest GC pass",
        )
    ]
    for i, (extra, r) in enumerate(zip(extras, rounds, strict=True), start=1):
        mx, p99, med = r["lag"]  # type: ignore[misc]
        asks: list[float] = r["ask"]  # type: ignore[assignment]
        rows.append(
            (
                f"bot round {i}: {n} concurrent /ask + /ingest ({len(article_text(extra)) / 1000:.0f} kB)",
                f"**{mx:.1f} ms**",
                f"{p99:.1f} ms",
                f"{med:.2f} ms",
                f"{r['wall']:.2f} s",
                f"{statistics.median(asks):.2f} s / {max(asks):.2f} s",
                f"{r['ingest']:.2f} s",
                f"{r['gc']:.1f} ms",
            )
        )
    rows.append(
        (
            f"serial reference: {n} `Library.ask`, no loop (before / after)",
            "–",
            "–",
            "–",
            f"{serial_before:.2f} s / {serial_after:.2f} s",
            f"{serial_before / n:.3f} s / {serial_after / n:.3f} s",
            "–",
            "–",
        )
    )
    imx, ip99, imed = idle
    rows.append(
        (
            "control: the ticker alone, bot idle",
            f"{imx:.1f} ms",
            f"{ip99:.1f} ms",
            f"{imed:.2f} ms",
            "–",
            "–",
            "–",
            "–",
        )
    )
    bmx, bp99, bmed = blocking["lag"]  # type: ignore[misc]
    rows.append(
        (
            "contrast: the same asks run *on* the loop",
            f"{bmx:.1f} ms",
            f"{bp99:.1f} ms",
            f"{bmed:.2f} ms",
            f"{blocking['wall']:.2f} s",
            "–",
            "–",
            "–",
        )
    )
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    worst = max(r["lag"][0] for r in rounds)  # type: ignore[index]
    defer = max(r["defer_worst"] for r in rounds)  # type: ignore[type-var]
    answered = min(r["answered"] for r in rounds)  # type: ignore[type-var]
    print()
    print(
        f"Every interaction was deferred within {defer * 1000:.0f} ms of delivery (Discord allows 3 s); "
        f"at least {answered}/{n} questions per round were answered with a citation."
    )
    verdict = "meets" if worst < 100 else "MISSES"
    print(f"Worst event-loop lag {worst:.1f} ms {verdict} the 100 ms target.")

    print()
    print("Crowds: concurrent /ask (all delivered at once) with an autocomplete after every fifth.\n")
    print("| concurrent /ask | worst loop lag | p99 lag | wall time | autocompletes | slowest autocomplete |")
    print("|---|---|---|---|---|---|")
    for size, c in crowds.items():
        cmx, cp99, _ = c["lag"]  # type: ignore[misc]
        ac: list[float] = c["autocomplete"]  # type: ignore[assignment]
        print(
            f"| {size} | **{cmx:.1f} ms** | {cp99:.1f} ms | {c['wall']:.1f} s | {len(ac)} | "
            f"**{max(ac) * 1000:.0f} ms** |"
        )
    print()
    print(
        "Flood: server A sends 20 /ask and 4 /ingest links that take 2 s each; server B asks one "
        "question meanwhile.\n"
    )
    print("| round | B's question alone | B's question during A's flood | ratio |")
    print("|---|---|---|---|")
    for i, f in enumerate(floods, start=1):
        print(f"| {i} | {f['alone']:.2f} s | {f['during']:.2f} s | **{f['during'] / f['alone']:.1f}×** |")
    worst_ratio = max(f["during"] / f["alone"] for f in floods)
    crowd_lag = max(c["lag"][0] for c in crowds.values())  # type: ignore[index]
    slowest = max(max(c["autocomplete"]) for c in crowds.values())  # type: ignore[type-var, call-overload]
    print()
    print(
        f"Crowds: worst lag {crowd_lag:.1f} ms (target < 100 ms), slowest autocomplete "
        f"{slowest * 1000:.0f} ms (target < 3 s). Flood: worst ratio {worst_ratio:.1f}× (target ≤ 3×)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "squad-dev")
    parser.add_argument("--articles", type=int, default=4, help="articles in the server's library")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the concurrent scenario")
    parser.add_argument("--workers", type=int, default=WORKERS, help="the bot's worker threads")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the built library in DIR and reuse it")
    parser.add_argument("--asks", type=int, default=20, help="concurrent /ask interactions")
    args = parser.parse_args()
    if not (args.data / "articles.jsonl").exists():
        sys.exit(f"{args.data} has no articles.jsonl; pass --data DIR (a squad-dev folder)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
