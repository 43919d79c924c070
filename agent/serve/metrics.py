"""What the server measures about itself: Prometheus metrics (``GET /metrics``) and the recent
latencies the dashboard's percentiles come from.

:class:`Metrics` owns one :class:`prometheus_client.CollectorRegistry` per app (never the global
one, so several apps in one process do not clash) with:

* ``hyrec_http_requests_total{method, route, status}`` and
  ``hyrec_http_request_duration_seconds{method, route}``: per endpoint, labelled with the route
  template (``/v1/users/{user_id}``), never a raw path; files under a mount are
  ``/static/{path}`` and requests that match no route ``route="unmatched"``. Measured by
  :class:`MetricsMiddleware` (plain ASGI, so a streamed answer is timed to its last byte).
* ``hyrec_llm_calls_total{outcome}`` and ``hyrec_llm_call_duration_seconds``: calls that reached
  the LLM backend, by :func:`outcome` (ok, timeout, unavailable, invalid, error), counted by
  :class:`MeteredLLM` inside the recommender's guard (calls the guard refuses never reach it).
* ``hyrec_fallbacks_total{stage, reason}``: every fallback line an answer carried, by stage and a
  short reason class (:func:`fallback_labels`), so the label set stays small and bounded.
* Read at scrape time from their owners (:class:`StateCollector`): catalogue items, snapshot users
  and users with feedback, stored feedback events by kind and impressions (the durable store, so
  they survive restarts), profile cache calls/hits/misses (``ProfileService.stats``), and whether
  the LLM is configured and reachable.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.llm import LLMBadOutput, LLMTimeout, LLMUnavailable

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The fallback stages a label may name (anything else is "other").
STAGES = ("profile", "rerank", "reasons", "llm_tools", "recommend", "search", "similar_items",
          "feedback")  # fmt: skip
REASONS = ("busy", "timeout", "unavailable", "invalid", "error")
_RECENT = 2048  # latencies kept per series for the dashboard's percentiles
_REASON_WORDS = (  # first match wins
    ("busy", re.compile(r"LLM busy", re.I)),  # every LLM slot taken (agent.llm.guard): not called
    ("timeout", re.compile(r"time(d)? ?out|budget", re.I)),
    ("unavailable", re.compile(r"unavailable|connect|refused|unreachable|down\b", re.I)),
    ("invalid", re.compile(r"invalid|not a sentence|unusable|pars|json|rejected|bad output|"
                           r"restat|label|validat|empty|must be|schema|expected", re.I)),
)  # fmt: skip

access = logging.getLogger("agent.serve.access")


def fallback_labels(line: str) -> tuple[str, str]:
    """``"rerank: LLM timeout: …; used mmr"`` → ``("rerank", "timeout")``: the stage before the
    first colon (one of :data:`STAGES`, else ``"other"``) and a reason class (:data:`REASONS`)."""
    stage, _, rest = line.partition(":")
    stage = stage.strip().lower().replace(" ", "_")
    reason = next((name for name, rx in _REASON_WORDS if rx.search(rest)), "error")
    return (stage if stage in STAGES else "other"), reason


def outcome(error: BaseException | None) -> str:
    """The outcome label of one LLM call."""
    if error is None:
        return "ok"
    if isinstance(error, LLMTimeout):
        return "timeout"
    if isinstance(error, LLMUnavailable):
        return "unavailable"
    if isinstance(error, LLMBadOutput):
        return "invalid"
    return "error"


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 and p99 of ``values`` (None when empty)."""
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values, dtype=float), [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


class Metrics:
    """The app's registry, its instruments, and the recent latencies per series."""

    def __init__(self, recommender: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hyrec_http_requests", "HTTP requests by route template and status",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "hyrec_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.llm_calls = Counter(
            "hyrec_llm_calls", "LLM backend calls by outcome", ["outcome"], registry=self.registry
        )
        self.llm_latency = Histogram(
            "hyrec_llm_call_duration_seconds", "LLM backend call latency", registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
        )  # fmt: skip
        self.fallbacks = Counter(
            "hyrec_fallbacks", "Stages that fell back, by stage and reason class",
            ["stage", "reason"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(StateCollector(recommender, self))
        self._lock = threading.Lock()
        self._routes: dict[str, deque[float]] = {}
        self._llm: deque[float] = deque(maxlen=_RECENT)
        self.llm_last: tuple[str, float] | None = None  # (outcome, wall time) of the latest call
        self._fallbacks: dict[tuple[str, str], int] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        with self._lock:
            self._routes.setdefault(f"{method} {route}", deque(maxlen=_RECENT)).append(seconds)

    def observe_llm(self, error: BaseException | None, seconds: float) -> None:
        label = outcome(error)
        self.llm_calls.labels(label).inc()
        self.llm_latency.observe(seconds)
        with self._lock:
            self._llm.append(seconds)
            self.llm_last = (label, time.time())

    def observe_fallbacks(self, lines: Sequence[str]) -> None:
        for line in lines:
            labels = fallback_labels(line)
            self.fallbacks.labels(*labels).inc()
            with self._lock:
                self._fallbacks[labels] = self._fallbacks.get(labels, 0) + 1

    def fallback_summary(self) -> dict[str, dict[str, int]]:
        """Fallbacks since start: stage → reason class → count."""
        with self._lock:
            counts = sorted(self._fallbacks.items())
        out: dict[str, dict[str, int]] = {}
        for (stage, reason), n in counts:
            out.setdefault(stage, {})[reason] = n
        return out

    def request_latency(self) -> dict[str, dict[str, Any]]:
        """Per ``"METHOD /route"``: requests seen and the p50/p99 of the recent ones (seconds)."""
        with self._lock:
            routes = {k: list(v) for k, v in self._routes.items()}
        counts: dict[tuple[str, str], float] = {}
        for metric in self.requests.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    key = (s.labels["method"], s.labels["route"])
                    counts[key] = counts.get(key, 0) + s.value
        return {
            f"{m} {r}": {"count": int(n), **percentiles(routes.get(f"{m} {r}", []))}
            for (m, r), n in sorted(counts.items())
        }

    def llm_summary(self) -> dict[str, Any]:
        """LLM calls by outcome and the p50/p99 of the recent ones (seconds)."""
        with self._lock:
            recent, last = list(self._llm), self.llm_last
        calls = {
            s.labels["outcome"]: int(s.value)
            for metric in self.llm_calls.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }
        return {"calls": calls, "last": last, **percentiles(recent)}

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class StateCollector:
    """Gauges and counters owned elsewhere, read when Prometheus scrapes."""

    def __init__(self, recommender: Any, metrics: Metrics) -> None:
        self.recommender = recommender
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # values are read at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        rec = self.recommender
        ds = rec.catalogue
        yield GaugeMetricFamily(
            "hyrec_catalogue_items", "Items in the served catalogue", ds.n_items
        )
        users = GaugeMetricFamily("hyrec_users", "Users by where they are known", labels=["kind"])
        users.add_metric(["snapshot"], ds.n_users)
        users.add_metric(["feedback"], rec.store.count_users())
        yield users
        events = CounterMetricFamily(
            "hyrec_feedback_events", "Stored feedback events by kind", labels=["event"]
        )
        for kind, n in sorted(rec.store.counts_by_event().items()):
            events.add_metric([kind], n)
        yield events
        yield CounterMetricFamily(
            "hyrec_impressions", "Items shown to signed-in users", rec.store.count_impressions()
        )
        stats = dict(rec.profiles.stats) if rec.profiles is not None else {}
        calls, hits = int(stats.get("calls", 0)), int(stats.get("cache_hits", 0))
        yield CounterMetricFamily("hyrec_profile_calls", "Interest profiles asked for", calls)
        yield CounterMetricFamily("hyrec_profile_cache_hits", "Profiles served from cache", hits)
        yield CounterMetricFamily(
            "hyrec_profile_cache_misses", "Profiles built (not cached)", calls - hits
        )
        up = llm_up(rec, self.metrics)
        yield GaugeMetricFamily("hyrec_llm_up", "1 when the LLM is reachable", up)


def llm_up(recommender: Any, metrics: Metrics) -> int:
    """1 when an LLM is configured, its circuit breaker is closed and the latest call did not
    find it unavailable."""
    guard = recommender.llm
    if guard is None or not getattr(guard, "available", True):
        return 0
    last = metrics.llm_last
    return 0 if last is not None and last[0] == "unavailable" else 1


class MeteredLLM:
    """An :class:`agent.llm.LLM` that records each call's outcome and latency."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = getattr(inner, "name", "llm")

    def complete(self, messages: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            answer = self.inner.complete(messages, **kwargs)
        except Exception as e:  # an LLMError, or a backend bug: counted either way
            self.metrics.observe_llm(e, time.perf_counter() - t0)
            raise
        self.metrics.observe_llm(None, time.perf_counter() - t0)
        return answer

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def meter_llm(recommender: Any, metrics: Metrics) -> None:
    """Put a :class:`MeteredLLM` inside the recommender's guard (once)."""
    guard = recommender.llm
    if guard is not None and hasattr(guard, "inner") and not isinstance(guard.inner, MeteredLLM):
        guard.inner = MeteredLLM(guard.inner, metrics)


class MetricsMiddleware:
    """Plain ASGI middleware: counts and times every HTTP request by its route template, and tells
    the client the server's time in a ``Server-Timing: app;dur=<ms>`` header."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                # the server's own time up to the answer (W3C Server-Timing), so a client can
                # tell time spent here from time spent queued in its own loop or the socket
                ms = (time.perf_counter() - t0) * 1000
                headers = [*message.get("headers", ()), (b"server-timing", b"app;dur=%.1f" % ms)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", None)
            if template is None:  # a mounted app (the static files) sets no route, only its root
                mounted = "endpoint" in scope and scope.get("root_path")
                template = f"{scope['root_path']}/{{path}}" if mounted else "unmatched"
            seconds = time.perf_counter() - t0
            self.metrics.observe_request(scope.get("method", ""), template, status[0], seconds)
            access.info(  # the access log: the route template, never the raw path with its ids
                "%s %s %d %.1f ms", scope.get("method", ""), template, status[0], seconds * 1000
            )
