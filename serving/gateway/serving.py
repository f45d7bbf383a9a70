"""The work of ``/v1/completions``: assign, render, cut, generate, post-process, log.

Every failure the client should see is returned as a ``GatewayError`` value; routes map values
to responses through ``errors.error_response``. Backends' exceptions stop here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from collector.config import CollectorSettings
from collector.parsing import accepted_window
from experiments.assignment.service import AssignmentRequest, AssignmentService
from experiments.variants import Variant
from serving import fim
from serving.backend import (
    Backend,
    BackendError,
    BackendUnavailable,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    UnknownModel,
)
from serving.budget import cut_to_budget, fit_to_context
from serving.event_logger import EventLogger
from serving.gateway.config import GatewaySettings
from serving.gateway.errors import (
    GatewayError,
    backend_failed,
    backend_unavailable,
    bad_request,
    unknown_model,
)
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.prepared import (
    Prepared,
    arms_header,
    chunk_event,
    line_count,
    openai_finish_reason,
    usage,
    usage_event,
)
from serving.gateway.protocol import CompletionRequest, ModelCard, ModelList
from serving.postprocess import Processed, StreamingPostprocessor, postprocess

log = logging.getLogger(__name__)

# The model name that means "whatever my arm serves"; any served model name is accepted too.
DEFAULT_MODEL_ALIAS = "codelift"
GATEWAY_PLUGIN_VERSION = "codelift-gateway"
# A trusted client_ts must fall in the window the collector accepts: max_event_age_days (a
# setting both share) back, and the collector's default clock skew ahead.
COLLECTOR_MAX_SKEW = dt.timedelta(
    seconds=CollectorSettings.model_fields["max_clock_skew_s"].get_default()
)
# The collector's limit on an event's error text (LongText).
MAX_ERROR_CHARS = 4000


def code_around_cursor(request: CompletionRequest) -> tuple[str, str]:
    """The code before and after the cursor; a prompt the client already rendered with a
    fill-in-the-middle template (Continue, llm-ls) is split back, never templated twice."""
    prefix, suffix = request.prompt_text, request.suffix
    if suffix is None:
        rendered = fim.split_rendered(prefix)
        if rendered is not None:
            # The preamble (repository or file markers of the client's family) is dropped: the
            # arm's own template and model may not know those tokens.
            return rendered.prefix, rendered.suffix
    return prefix, suffix or ""


class CompletionService:
    """Serves completions for the routes; holds no per-request state."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        backends: Mapping[str, Backend],
        assignment: AssignmentService | None,
        events: EventLogger,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.backends = dict(backends)
        self.assignment = assignment
        self.events = events
        self.metrics = metrics
        self._models_version: int | None = -1
        self._models: dict[str, ModelCard] = {}

    # --- models ---------------------------------------------------------------------------------

    def variants(self) -> list[Variant]:
        """The default variant and every running arm's variant."""
        default = self.default_variant
        variants = [default]
        if self.assignment is not None:
            for experiment in self.assignment.snapshot.experiments:
                for arm in experiment.arms:
                    variants.append(default.with_overrides(arm.overrides))
        return variants

    @property
    def default_variant(self) -> Variant:
        """What a request outside every experiment gets."""
        if self.assignment is not None:
            return self.assignment.default_variant
        return self.settings.default_variant

    def models(self) -> dict[str, ModelCard]:
        """Model and adapter names served, refreshed when the registry snapshot changes."""
        version = self.assignment.snapshot.version if self.assignment is not None else None
        if version != self._models_version:
            created = int(time.time())
            cards: dict[str, ModelCard] = {}
            for variant in self.variants():
                cards.setdefault(
                    variant.model,
                    ModelCard(
                        id=variant.model,
                        created=created,
                        backend=variant.backend,
                        root=variant.model,
                    ),
                )
                if variant.adapter:
                    cards.setdefault(
                        variant.adapter,
                        ModelCard(
                            id=variant.adapter,
                            created=created,
                            backend=variant.backend,
                            root=variant.model,
                            parent=variant.model,
                        ),
                    )
            self._models, self._models_version = cards, version
        return self._models

    def model_list(self) -> ModelList:
        """``GET /v1/models``."""
        return ModelList(data=list(self.models().values()))

    # --- preparing ------------------------------------------------------------------------------

    def prepare(
        self, request: CompletionRequest, *, request_id: str, started: float
    ) -> Prepared | GatewayError:
        """Assign an arm, check the request against it, and render the backend request."""
        if request.stream and request.n > 1:
            return bad_request("n must be 1 when stream is true", param="n")
        if request.user is None:
            # The route resolves the user from the key first; this guards other callers.
            return bad_request("user is required", param="user")
        if request.model != DEFAULT_MODEL_ALIAS and request.model not in self.models():
            return unknown_model(request.model)
        event_time = request.client_ts if self.settings.trust_client_time else None
        if event_time is not None and self.events.enabled and request.variant is None:
            # Checked before serving: the completion's events would be rejected, not stored.
            window = accepted_window(
                dt.datetime.now(dt.UTC),
                max_age=dt.timedelta(days=self.settings.max_event_age_days),
                max_skew=COLLECTOR_MAX_SKEW,
            )
            problem = window.problem(event_time)
            if problem is not None:
                return bad_request(f"client_ts {problem}", param="client_ts")
        if request.variant is not None:
            # Chosen by an evaluating key (checked by the route): no assignment, no exposure.
            variant, arms = self.default_variant.with_overrides(request.variant), {}
        elif self.assignment is not None:
            assignment = self.assignment.assign(
                AssignmentRequest(
                    user_id=request.user,
                    language=request.language_name,
                    org=request.org,
                    ide=request.ide.lower(),
                    session_id=request.session_id,
                    plugin_version=request.plugin_version,
                    served_at=event_time.timestamp() if event_time is not None else None,
                )
            )
            variant = assignment.variant
            arms = assignment.arm_names()
        else:
            variant, arms = self.settings.default_variant, {}
        backend = self.backends.get(variant.backend)
        if backend is None:
            return backend_unavailable(
                f"no {variant.backend!r} backend is configured for model {variant.model!r}",
                self.settings.retry_after_s,
            )
        decoding = variant.decoding
        stop = fim.stop_strings(variant.fim_template, (*decoding.stop, *request.stop_strings))
        max_tokens = decoding.max_tokens
        if request.max_tokens is not None:
            max_tokens = min(max_tokens, request.max_tokens)
        prefix, suffix = code_around_cursor(request)
        cut = cut_to_budget(
            prefix,
            suffix,
            budget=fit_to_context(
                variant.context_tokens,
                context_length=backend.context_length,
                template_tokens=backend.count_tokens(fim.render(variant.fim_template, "", "")),
                max_tokens=max_tokens,
            ),
            prefix_share=variant.prefix_share,
            count=backend.count_tokens,
        )
        generation = GenerationRequest(
            prompt=fim.render(variant.fim_template, cut.prefix, cut.suffix),
            model=variant.model,
            adapter=variant.adapter,
            max_tokens=max_tokens,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            stop=stop,
            seed=decoding.seed,
        )
        return Prepared(
            request=request,
            request_id=request_id,
            suggestion_id=f"cmpl-{uuid.uuid4().hex}",
            started=started,
            variant=variant,
            arms=arms,
            arms_header=arms_header(arms),
            backend=backend,
            generation=generation,
            prefix=cut.prefix,
            suffix=cut.suffix,
            prompt_tokens=cut.prefix_tokens + cut.suffix_tokens,
            event_time=event_time,
        )

    # --- generating -----------------------------------------------------------------------------

    async def complete(self, prepared: Prepared) -> dict[str, Any] | GatewayError:
        """The whole completion, as OpenAI's response body."""
        backend, generation = prepared.backend, prepared.generation
        backend_started = time.perf_counter()
        try:
            if prepared.request.n == 1:
                results = [await backend.generate(generation)]
            else:
                results = list(
                    await asyncio.gather(
                        *(backend.generate(generation) for _ in range(prepared.request.n))
                    )
                )
        except asyncio.CancelledError:
            self._served(prepared, finish_reason="cancelled", error="client disconnected")
            raise
        except BackendError as exc:
            error = self._backend_error(prepared, exc)
            self._served(prepared, finish_reason="error", error=error.message)
            return error
        backend_ms = max(r.backend_ms for r in results)
        if backend_ms <= 0:
            backend_ms = (time.perf_counter() - backend_started) * 1000
        choices, processed = self._choices(prepared, results)
        latency_ms = (time.perf_counter() - prepared.started) * 1000
        completion_tokens = sum(r.completion_tokens for r in results)
        prompt_tokens = results[0].prompt_tokens or prepared.prompt_tokens
        first = processed[0]
        self._served(
            prepared,
            text=first.text,
            finish_reason=choices[0]["finish_reason"],
            backend_ms=backend_ms,
            latency_ms=latency_ms,
            prompt_tokens=prompt_tokens,
        )
        return {
            "id": prepared.suggestion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": prepared.response_model,
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
            "codelift": self._codelift_field(
                prepared, latency_ms=latency_ms, backend_ms=backend_ms, dropped=first.dropped
            ),
        }

    def _choices(
        self, prepared: Prepared, results: list[GenerationResult]
    ) -> tuple[list[dict[str, Any]], list[Processed]]:
        rules = prepared.variant.postprocess
        choices: list[dict[str, Any]] = []
        processed: list[Processed] = []
        for index, result in enumerate(results):
            done = postprocess(
                result.text,
                prefix=prepared.prefix,
                suffix=prepared.suffix,
                stop=prepared.generation.stop,
                rules=rules,
            )
            processed.append(done)
            choices.append(
                {
                    "index": index,
                    "text": done.text,
                    "finish_reason": openai_finish_reason(done, result.finish_reason),
                    "logprobs": None,
                }
            )
        return choices, processed

    def _codelift_field(
        self, prepared: Prepared, *, latency_ms: float, backend_ms: float, dropped: bool
    ) -> dict[str, Any]:
        return {
            "suggestion_id": prepared.suggestion_id,
            "request_id": prepared.request_id,
            "arms": prepared.arms,
            "model": prepared.variant.model,
            "adapter": prepared.variant.adapter,
            "latency_ms": round(latency_ms, 3),
            "backend_ms": round(backend_ms, 3),
            "dropped": dropped,
        }

    def _backend_error(self, prepared: Prepared, exc: BackendError) -> GatewayError:
        if isinstance(exc, BackendUnavailable):
            return backend_unavailable(
                f"backend {prepared.backend.name!r} unavailable: {exc}", exc.retry_after_s
            )
        if isinstance(exc, UnknownModel):
            return unknown_model(prepared.response_model)
        log.warning(
            "backend %s failed request %s: %s", prepared.backend.name, prepared.request_id, exc
        )
        return backend_failed(f"backend {prepared.backend.name!r} failed: {exc}")

    async def open_stream(self, prepared: Prepared) -> AsyncIterator[bytes] | GatewayError:
        """Server-sent events of the completion; an error before the first chunk is a value."""
        chunks = prepared.backend.stream(prepared.generation)
        backend_started = time.perf_counter()
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = GenerationChunk(text="", finish_reason="stop")
        except asyncio.CancelledError:
            await _close(chunks)
            self._served(prepared, finish_reason="cancelled", error="client disconnected")
            raise
        except BackendError as exc:
            await _close(chunks)
            error = self._backend_error(prepared, exc)
            self._served(prepared, finish_reason="error", error=error.message)
            return error
        return self._events(prepared, chunks, first, backend_started)

    async def _events(
        self,
        prepared: Prepared,
        chunks: AsyncIterator[GenerationChunk],
        first: GenerationChunk,
        backend_started: float,
    ) -> AsyncIterator[bytes]:
        processor = StreamingPostprocessor(
            prefix=prepared.prefix,
            suffix=prepared.suffix,
            stop=prepared.generation.stop,
            rules=prepared.variant.postprocess,
        )
        created = int(time.time())
        backend_reason: str = "stop"
        prompt_tokens = prepared.prompt_tokens
        finish_reason = "cancelled"
        error: str | None = None
        backend_ms = 0.0
        try:
            chunk: GenerationChunk | None = first
            while chunk is not None:
                delta = processor.feed(chunk.text)
                if delta:
                    yield chunk_event(prepared, created, delta, None)
                if chunk.finish_reason is not None:
                    backend_reason = chunk.finish_reason
                    prompt_tokens = chunk.prompt_tokens or prompt_tokens
                if processor.done or chunk.finish_reason is not None:
                    break
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    chunk = None
            backend_ms = (time.perf_counter() - backend_started) * 1000
            rest = processor.finish()
            result = processor.result or Processed(processor.sent)
            finish_reason = openai_finish_reason(result, backend_reason)
            yield chunk_event(prepared, created, rest, finish_reason)
            if prepared.request.include_usage:
                completion_tokens = prepared.backend.count_tokens(processor.sent)
                yield usage_event(prepared, created, usage(prompt_tokens, completion_tokens))
            yield b"data: [DONE]\n\n"
        except BackendError as exc:
            gateway_error = self._backend_error(prepared, exc)
            error, finish_reason = gateway_error.message, "error"
            yield b"data: " + json.dumps(gateway_error.body()).encode() + b"\n\n"
        finally:
            await _close(chunks)
            latency_ms = (time.perf_counter() - prepared.started) * 1000
            if finish_reason == "cancelled":
                error = "client disconnected"
            self._served(
                prepared,
                text=processor.sent,
                finish_reason=finish_reason,
                backend_ms=backend_ms or None,
                latency_ms=latency_ms,
                prompt_tokens=prompt_tokens,
                error=error,
            )

    # --- logging --------------------------------------------------------------------------------

    def _served(
        self,
        prepared: Prepared,
        *,
        finish_reason: str,
        text: str = "",
        backend_ms: float | None = None,
        latency_ms: float | None = None,
        prompt_tokens: int | None = None,
        error: str | None = None,
    ) -> None:
        if latency_ms is None:
            latency_ms = (time.perf_counter() - prepared.started) * 1000
        arms_label = prepared.arms_header or "default"
        model_label = prepared.response_model
        self.metrics.latency.labels(arms_label, model_label).observe(latency_ms / 1000)
        if backend_ms is not None:
            self.metrics.backend_latency.labels(arms_label, model_label).observe(backend_ms / 1000)
        request = prepared.request
        if not self.events.enabled or request.variant is not None:
            # Evaluation traffic is no developer's: it stays out of the product's events.
            return
        self.events.offer(
            {
                "event_id": str(uuid.uuid4()),
                "type": "completion_served",
                "schema_version": 1,
                "client_ts": (prepared.event_time or dt.datetime.now(dt.UTC)).isoformat(),
                "user_id": request.user,
                "session_id": request.session_id or prepared.request_id,
                "ide": request.ide,
                "plugin_version": request.plugin_version or GATEWAY_PLUGIN_VERSION,
                "language": request.language_name,
                "suggestion_id": prepared.suggestion_id,
                "request_id": prepared.request_id,
                "arms": prepared.arms,
                "model": prepared.variant.model,
                "adapter": prepared.variant.adapter,
                "latency_ms": round(min(latency_ms, 3_600_000.0), 3),
                "backend_latency_ms": None
                if backend_ms is None
                else round(min(backend_ms, 3_600_000.0), 3),
                "prompt_tokens": prompt_tokens
                if prompt_tokens is not None
                else prepared.prompt_tokens,
                "completion_chars": len(text),
                "completion_lines": line_count(text),
                "finish_reason": finish_reason,
                "error": _event_text(error, MAX_ERROR_CHARS),
            }
        )


def _event_text(text: str | None, limit: int) -> str | None:
    """``text`` as the collector takes it in an event: no NUL, valid UTF-8, at most ``limit``."""
    if not text:
        return None
    # A backend's error can echo the prompt, which may hold anything.
    cleaned = text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned or None


async def _close(chunks: AsyncIterator[GenerationChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
