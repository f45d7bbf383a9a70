"""The local engine: the FIM model behind the ``Backend`` protocol, batching concurrent requests.

One worker thread owns the model and a KV cache of ``max_batch`` slots. Requests wait in a bounded
queue; the worker admits them into free slots as soon as there are any (continuous batching),
prefills each one, then steps every running sequence together, one token per step. Torch releases
the GIL while it computes, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Literal

import torch

from serving.backend import (
    BackendError,
    BackendUnavailable,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    UnknownModel,
)
from serving.local import tokenizer
from serving.local.lora import (
    AdapterBank,
    AdapterMismatch,
    Deltas,
    LoraAdapter,
    RowDeltas,
    base_hash,
    find_adapters,
    load_adapter,
)
from serving.local.model import FimTransformer, KVCache, load_checkpoint

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "fim-small"
# Every adapter found here is offered when it was trained on the loaded base.
DEFAULT_ADAPTERS = Path(__file__).parent / "checkpoints" / "adapters"
LoraMode = Literal["gathered", "grouped"]
# Below this temperature decoding is greedy (dividing by it would overflow the logits).
MIN_TEMPERATURE = 1e-4


@dataclasses.dataclass(frozen=True, slots=True)
class EngineStats:
    """What the engine is doing now (for health checks and tests)."""

    running: int
    waiting: int
    completed: int
    cancelled: int
    max_batch: int
    max_queue: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Final:
    chunk: GenerationChunk
    text: str


_Event = GenerationChunk | _Final | BaseException


class _Job:
    """One request's state; fields from ``slot`` on are touched by the worker thread only."""

    def __init__(
        self,
        request: GenerationRequest,
        ids: list[int],
        *,
        streaming: bool,
        loop: asyncio.AbstractEventLoop,
        tok: tokenizer.Tokenizer,
        adapter_index: int,
        healed: bytes = b"",
    ) -> None:
        self.request = request
        self.adapter_index = adapter_index
        # Bytes of the prompt's last token, removed by token healing: the completion owes them.
        self.healed = healed
        self.ids = ids
        self.streaming = streaming
        self.loop = loop
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        # Set by the event loop when the awaiting task goes away; read by the worker each step.
        self.cancelled = threading.Event()
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        self.slot = -1
        self.admitted_at = 0.0
        self.position = 0
        self.logits: torch.Tensor | None = None
        self.token = 0
        self.decoder = tokenizer.StreamDecoder(tok)
        self.text = ""
        self.emitted = 0
        self.completion_tokens = 0
        self.max_stop = max((len(s) for s in request.stop), default=0)

    def send(self, event: _Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the caller's event loop is closed: nobody is listening
            self.cancelled.set()


class LocalEngine:
    """The local torch FIM model as a ``Backend`` (name ``local``)."""

    name = "local"

    def __init__(
        self,
        model: FimTransformer,
        *,
        model_name: str,
        max_batch: int = 8,
        max_queue: int = 32,
        tok: tokenizer.Tokenizer = tokenizer.BYTES,
        adapters: dict[str, LoraAdapter] | None = None,
        lora_mode: LoraMode = "gathered",
    ) -> None:
        self.model = model.eval()
        self.tok = tok
        self.adapters = AdapterBank(model, adapters or {})
        self.lora_mode = lora_mode
        self._healing_masks: dict[bytes, torch.Tensor] = {}
        self.model_name = model_name
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._cache = KVCache(model.config, max_batch)
        self._waiting: collections.deque[_Job] = collections.deque()
        self._running: list[_Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._completed = 0
        self._cancelled = 0
        # Rough service time of one request, for Retry-After when the queue is full.
        self._mean_request_s = 0.2
        self._thread = threading.Thread(target=self._work, name="local-engine", daemon=True)
        self._thread.start()

    @classmethod
    def load(
        cls,
        path: Path = DEFAULT_CHECKPOINT,
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        threads: int = 2,
        adapter_paths: Sequence[Path] = (),
        adapter_root: Path = DEFAULT_ADAPTERS,
        lora_mode: LoraMode = "gathered",
    ) -> LocalEngine:
        """Load a checkpoint and its adapters; ``threads`` sets torch's intra-op thread count.

        Adapters are the directories under ``adapter_root`` (those trained on another base are
        skipped with a warning) and ``adapter_paths`` (an adapter directory, or a directory of
        them, where a mismatch raises ``AdapterMismatch``).
        """
        torch.set_num_threads(threads)
        model, name = load_checkpoint(Path(path))
        tok = tokenizer.Tokenizer.for_checkpoint(Path(path))
        base = base_hash(Path(path))
        adapters: dict[str, LoraAdapter] = {}
        for directory in find_adapters([adapter_root]):
            try:
                adapter_name, adapter = load_adapter(directory, model, base=base)
            except AdapterMismatch as exc:
                log.warning("adapter %s skipped: %s", directory, exc)
                continue
            adapters[adapter_name] = adapter
        for directory in find_adapters([Path(p) for p in adapter_paths]):
            adapter_name, adapter = load_adapter(directory, model, base=base)
            adapters[adapter_name] = adapter
        return cls(
            model,
            model_name=name,
            max_batch=max_batch,
            max_queue=max_queue,
            tok=tok,
            adapters=adapters,
            lora_mode=lora_mode,
        )

    @property
    def adapter_names(self) -> list[str]:
        """The LoRA adapters requests may name (besides the base model)."""
        return list(self.adapters.names)

    @property
    def context_length(self) -> int:
        """Tokens of prompt plus completion the model attends to."""
        return self.model.config.context

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the checkpoint's tokenizer (sentinels count one each)."""
        return self.tok.count(text)

    def stats(self) -> EngineStats:
        """Running and waiting requests, and totals."""
        with self._cond:
            return EngineStats(
                running=len(self._running),
                waiting=len(self._waiting),
                completed=self._completed,
                cancelled=self._cancelled,
                max_batch=self.max_batch,
                max_queue=self.max_queue,
            )

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole completion; cancelling the awaiting task removes the request from the batch."""
        started = time.perf_counter()
        job = self._submit(request, streaming=False)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, _Final):
                    assert event.chunk.finish_reason is not None
                    return GenerationResult(
                        text=event.text,
                        finish_reason=event.chunk.finish_reason,
                        prompt_tokens=event.chunk.prompt_tokens,
                        completion_tokens=event.chunk.completion_tokens,
                        backend_ms=(time.perf_counter() - started) * 1000.0,
                    )
        finally:
            self._cancel(job)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """The completion in pieces of whole characters; the last one has the finish reason."""
        job = self._submit(request, streaming=True)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, _Final):
                    yield event.chunk
                    return
                yield event
        finally:
            self._cancel(job)

    async def aclose(self) -> None:
        """Stop the worker; requests still queued or running fail with ``BackendUnavailable``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join)

    # -- event-loop side ----------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        if request.model != self.model_name:
            raise UnknownModel(f"model {request.model!r} is not served here ({self.model_name!r})")
        if request.adapter is not None and request.adapter not in self.adapters.index:
            served = ", ".join(self.adapters.names) or "none"
            raise UnknownModel(f"adapter {request.adapter!r} is not loaded (loaded: {served})")
        if request.max_tokens < 1:
            raise BackendError(f"max_tokens must be at least 1, got {request.max_tokens}")
        if request.temperature < 0 or not 0 < request.top_p <= 1:
            raise BackendError("temperature must be >= 0 and top_p in (0, 1]")

    def _prompt_ids(self, request: GenerationRequest) -> tuple[list[int], bytes]:
        ids, healed = self.tok.heal(self.tok.encode(request.prompt))
        ids = ids or [tokenizer.EOT_ID]
        # Room for the completion: at most half the context is reserved for it.
        budget = self.context_length - min(request.max_tokens, self.context_length // 2)
        if len(ids) > budget:
            # Cut the oldest context, keeping a leading <fim_prefix> so the template stays valid.
            keep_head = ids[:1] if ids[0] == tokenizer.FIM_PREFIX_ID else []
            ids = keep_head + ids[len(ids) - (budget - len(keep_head)) :]
        return ids, healed

    def _submit(self, request: GenerationRequest, *, streaming: bool) -> _Job:
        self._validate(request)
        ids, healed = self._prompt_ids(request)
        job = _Job(
            request,
            ids,
            healed=healed,
            streaming=streaming,
            loop=asyncio.get_running_loop(),
            tok=self.tok,
            adapter_index=self.adapters.index.get(request.adapter or "", 0),
        )
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise BackendUnavailable("the local engine is stopped", retry_after_s=5.0)
            if len(self._waiting) >= self.max_queue:
                backlog = len(self._waiting) + len(self._running)
                retry = max(0.1, round(backlog * self._mean_request_s / self.max_batch, 2))
                raise BackendUnavailable("the local engine's queue is full", retry_after_s=retry)
            self._waiting.append(job)
            self._cond.notify()
        return job

    def _cancel(self, job: _Job) -> None:
        """Withdraw ``job`` if it is still queued or running (no-op once it finished)."""
        job.cancelled.set()
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                self._cancelled += 1

    # -- worker thread -------------------------------------------------------------------------

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = []
                    while self._waiting and len(self._running) < self.max_batch:
                        job = self._waiting.popleft()
                        job.slot = len(self._running)
                        job.admitted_at = time.monotonic()
                        self._running.append(job)
                        admitted.append(job)
                try:
                    self._step(admitted)
                except Exception as exc:  # a bug or out of memory: fail the batch, keep serving
                    log.exception("local engine step failed")
                    with self._cond:
                        failed, self._running = self._running, []
                    for job in failed:
                        job.send(BackendError(f"local engine failed: {exc}"))
        with self._cond:
            leftover = list(self._waiting) + self._running
            self._waiting.clear()
            self._running = []
        for job in leftover:
            job.send(BackendUnavailable("the local engine was closed", retry_after_s=5.0))

    def _step(self, admitted: list[_Job]) -> None:
        """Prefill the newly admitted, sample one token for every job, decode the survivors."""
        for job in admitted:
            if not job.cancelled.is_set():
                lora = self._single(job.adapter_index)
                job.logits = self.model.prefill(torch.tensor(job.ids), self._cache, job.slot, lora)
                job.position = len(job.ids)
        going: list[_Job] = []
        cancelled = completed = 0
        for job in self._running:
            if job.cancelled.is_set():
                cancelled += 1
            elif self._advance(job):
                going.append(job)
            else:
                completed += 1
        # Keep the running sequences packed in slots 0..B-1 (order kept, so every move is down).
        for index, job in enumerate(going):
            if job.slot != index:
                self._cache.move(job.slot, index, job.position)
                job.slot = index
        with self._cond:
            self._running = going
            self._cancelled += cancelled
            self._completed += completed
        if going:
            logits = self.model.decode(
                torch.tensor([j.token for j in going]),
                self._cache,
                torch.tensor([j.position for j in going]),
                self._rows([j.adapter_index for j in going]),
            )
            for job, row in zip(going, logits, strict=True):
                job.logits = row
                job.position += 1

    def _healing_mask(self, healed: bytes) -> torch.Tensor:
        """0 for the tokens ``Tokenizer.candidates`` allows while ``healed`` is owed, else -inf."""
        mask = self._healing_masks.get(healed)
        if mask is None:
            mask = torch.full((self.model.config.vocab_size,), float("-inf"))
            mask[self.tok.candidates(healed)] = 0.0
            self._healing_masks[healed] = mask
        return mask

    def _single(self, index: int) -> Deltas | None:
        """The adapter of one sequence (prefill), None for the base model."""
        return self.adapters.adapters[self.adapters.names[index - 1]] if index else None

    def _rows(self, indices: list[int]) -> Deltas | None:
        """Per-row adapters of a decode step; None when every row is on the base model."""
        if not any(indices):
            return None
        if len(set(indices)) == 1:
            return self._single(indices[0])
        return RowDeltas(self.adapters, torch.tensor(indices), grouped=self.lora_mode == "grouped")

    def _advance(self, job: _Job) -> bool:
        """Sample ``job``'s next token and emit text; False once the job has finished."""
        assert job.logits is not None
        request = job.request
        logits = job.logits
        if job.healed:
            logits = logits + self._healing_mask(job.healed)
        token = _sample(logits, request.temperature, request.top_p, job.generator)
        job.token = token
        job.completion_tokens += 1
        finish: FinishReason | None = None
        if tokenizer.is_special(token):
            finish = "stop"
            job.text += job.decoder.flush()
        else:
            data = self.tok.token_bytes(token)
            owed = min(len(job.healed), len(data))
            job.healed = job.healed[owed:]
            job.text += job.decoder.push_bytes(data[owed:])
            if (
                job.completion_tokens >= request.max_tokens
                or job.position + 1 >= self.context_length
            ):
                finish = "length"
                job.text += job.decoder.flush()
        cut = _find_stop(job.text, request.stop, job.emitted)
        if cut is not None:
            job.text = job.text[:cut]
            finish = "stop"
        if finish is None:
            if job.streaming:
                safe = len(job.text) - _held_back(job.text, request.stop, job.max_stop)
                if safe > job.emitted:
                    job.send(GenerationChunk(text=job.text[job.emitted : safe]))
                    job.emitted = safe
            return True
        elapsed = time.monotonic() - job.admitted_at
        self._mean_request_s = 0.9 * self._mean_request_s + 0.1 * elapsed
        chunk = GenerationChunk(
            text=job.text[job.emitted :],
            finish_reason=finish,
            prompt_tokens=len(job.ids),
            completion_tokens=job.completion_tokens,
        )
        job.send(_Final(chunk, job.text))
        return False


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Greedy when ``temperature`` is 0, else nucleus sampling from ``logits / temperature``."""
    if temperature < MIN_TEMPERATURE:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        keep = (sorted_probs.cumsum(0) - sorted_probs) < top_p
        sorted_probs = sorted_probs * keep
        choice = int(torch.multinomial(sorted_probs, 1, generator=gen))
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=gen))


def _find_stop(text: str, stops: tuple[str, ...], emitted: int) -> int | None:
    """Index of the earliest stop string in ``text`` (none can start before ``emitted``)."""
    found = [i for s in stops if s and (i := text.find(s, emitted)) >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...], max_stop: int) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    for n in range(min(max_stop - 1, len(text)), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
