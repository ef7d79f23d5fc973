"""Operations: Prometheus metrics, the local ``/healthz`` + ``/metrics`` port, JSON log lines.

:class:`Metrics` is always there (one registry per bot, so tests can build many bots in one
process); :class:`OpsServer` serves it only when ``CITEBOT_OPS_PORT`` is set. Library work is
measured where it runs, in the worker pool (:meth:`Metrics.track`), so /ask, mentions and the
message menu are all counted the same way without the cogs knowing about metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from embeddings import Answer, IngestReport

if TYPE_CHECKING:
    from aiohttp import web

    from .client import Citebot

log = logging.getLogger(__name__)

T = TypeVar("T")

LAG_INTERVAL = 0.5
"""Seconds between two event-loop lag samples."""
HEALTH_TIMEOUT = 5.0
"""Seconds the store may take to answer a health check before it counts as unreachable."""


class _GatewayLatency(Collector):
    """Reads each shard's heartbeat round trip when scraped (discord.py measures it already)."""

    def __init__(self) -> None:
        self.bot: Citebot | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per shard of this process; none before the bot is attached."""
        family = GaugeMetricFamily(
            "citebot_gateway_latency_seconds",
            "Time between a gateway heartbeat and Discord's acknowledgement, per shard.",
            labels=["shard"],
        )
        if self.bot is not None:
            for shard_id, latency in self.bot.latencies:
                if latency == latency and latency != float("inf"):  # NaN/inf before the first ACK
                    family.add_metric([str(shard_id)], latency)
        yield family


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.questions = Counter(
            "citebot_questions",
            "Questions handled by the library: answered with a passage, or declined.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("answered", "declined"):  # exported at 0 from the start, for rate()
            self.questions.labels(outcome)
        self.answer_seconds = Histogram(
            "citebot_answer_seconds",
            "Seconds from queuing a question for a worker to its answer (queue wait included).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
            registry=r,
        )
        self.queue_depth = Gauge(
            "citebot_worker_queue_depth", "Library jobs waiting for a worker thread.", ["pool"], registry=r
        )
        self.loop_lag = Gauge(
            "citebot_event_loop_lag_seconds",
            f"How late the event loop ran a {LAG_INTERVAL}s timer, at the last sample.",
            registry=r,
        )
        self.ingests = Counter("citebot_ingests", "Ingests finished (files or links added).", registry=r)
        self.errors = Counter(
            "citebot_errors",
            "Library jobs that raised, by error class (EmptyLibraryError, FetchError, ...).",
            ["kind"],
            registry=r,
        )
        self._gateway = _GatewayLatency()
        r.register(self._gateway)

    def attach(self, bot: Citebot) -> None:
        """Read gateway latency from ``bot`` from now on."""
        self._gateway.bot = bot

    def track(self, fn: Callable[[], T], pool: str = "library") -> Callable[[], T]:
        """Wrap a worker-thread job: counted as queued until it starts, then its outcome.

        Call it on the event loop when submitting; the returned callable runs in the worker.
        """
        submitted = time.perf_counter()
        depth = self.queue_depth.labels(pool)
        depth.inc()

        def run() -> T:
            depth.dec()
            try:
                result = fn()
            except Exception as exc:
                self.errors.labels(type(exc).__name__).inc()
                raise
            self.observe(result, time.perf_counter() - submitted)
            return result

        return run

    def observe(self, result: object, seconds: float) -> None:
        """Count a finished job by what it returned: an answer, or an ingest."""
        if isinstance(result, Answer):
            self.questions.labels("answered" if result.answered else "declined").inc()
            self.answer_seconds.observe(seconds)
        elif isinstance(result, IngestReport):
            self.ingests.inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    async def watch_loop_lag(self, interval: float = LAG_INTERVAL) -> None:
        """Sample forever how late a timer fires: the time the loop was blocked by something."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, loop.time() - start - interval))


# ---------------------------------------------------------------------- health


async def health(bot: Citebot) -> dict[str, Any]:
    """What ``/healthz`` reports: each check's result, and ``ok`` when all pass."""
    shards = bot.shards
    gateway = bool(shards) and bot.is_ready() and not bot.is_closed()
    gateway = gateway and all(not s.is_closed() for s in shards.values())

    library = bot.libraries.get(None)
    try:
        # Through the core, in a thread: a slow database must not stall the loop.
        await asyncio.wait_for(asyncio.to_thread(library.exists), HEALTH_TIMEOUT)
        store, store_error = True, None
    except Exception as exc:  # any failure means unreachable; the kind goes in the report
        store, store_error = False, type(exc).__name__
    model = bot.encoder is not None and bot.encoder.dim > 0
    report: dict[str, Any] = {
        "ok": gateway and store and model,
        "gateway": gateway,
        "shards": {str(i): not s.is_closed() for i, s in shards.items()},
        "store": store,
        "model": model,
    }
    if store_error:
        report["store_error"] = store_error
    return report


class OpsServer:
    """``/healthz`` and ``/metrics`` on a local port, next to the bot in its event loop."""

    def __init__(self, bot: Citebot, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._lag: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Bind and serve; returns the base URL (with the real port when ``port`` is 0)."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._lag = asyncio.create_task(self.bot.metrics.watch_loop_lag(), name="citebot-loop-lag")
        url = f"http://{host}:{port}/"
        log.info("serving /healthz and /metrics on %s", url)
        return url

    async def stop(self) -> None:
        """Stop serving."""
        if self._lag is not None:
            self._lag.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        report = await health(self.bot)
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = self.bot.metrics.exposition()
        content_type, _, charset = CONTENT_TYPE_LATEST.partition("; charset=")
        return web.Response(body=body, content_type=content_type, charset=charset or None)


# ---------------------------------------------------------------------- logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (the token filter has already run on ``msg``)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int, fmt: str, stream: Any) -> None:
    """The entry point's logging: text lines, or JSON lines for ``CITEBOT_LOG_FORMAT=json``."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
