"""The web pages (``/`` the chat, ``/dashboard``, their files under ``/static``: package data in
``agent/serve/static``, no build step, nothing from a CDN) and the dashboard's data
(``GET /v1/dashboard``): one JSON document the page at ``/dashboard`` draws.

The pages load without a token (they hold no data); every API call they make carries the bearer
token the user typed (kept in ``sessionStorage``, never in a URL). They are served with a strict
Content-Security-Policy: scripts, styles and connections from this origin only.

Sections:

* ``model``: the components, the head and the validation NDCG@10 it was chosen by (the fit report
  in ``hybrid.json``), the dataset fingerprint (the snapshot's ``dataset.json``), and the fit date
  (``fitted_at`` in the fit report; for folders saved before it was recorded, the modification
  time of ``hybrid.json``, marked ``"fitted_at_source": "file time"``).
* ``catalogue``: items, snapshot users, users with stored feedback.
* ``feedback``: stored events by kind, and a timeline of events per bucket and kind (the bucket
  grows with the span so the chart has at most :data:`MAX_BUCKETS` bars).
* ``online``: from impressions (the items answers showed signed-in users) and the events that
  followed them (:meth:`agent.feedback.FeedbackStore.online_rates`): hit rate (like, click or
  purchase within the horizon) and dislike rate.
* ``llm``: configured, reachable, model name, calls by outcome, p50/p99 latency, fallbacks by
  stage and reason (since the server started).
* ``requests``: per endpoint, requests and the p50/p99 latency of the recent ones.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from agent.serve.metrics import Metrics, llm_up

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

#: Bucket sizes the feedback timeline picks from (seconds).
BUCKETS = (60, 300, 900, 3600, 4 * 3600, 86_400, 7 * 86_400, 30 * 86_400)
MAX_BUCKETS = 48
MIN_BUCKETS = 12
HORIZON_SECONDS = 86_400.0  # an event counts for an impression within a day of it


def add_pages(app: FastAPI) -> None:
    """Serve the chat page at ``/``, the dashboard at ``/dashboard`` and their files."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers=PAGE_HEADERS)


def model_info(recommender: Any) -> dict[str, Any]:
    """What model is served: components, head, validation NDCG, dataset, fit date."""
    hybrid = recommender.hybrid
    report = dict(getattr(hybrid, "fit_report", {}) or {})
    head = report.get("ranker")
    ndcgs = report.get("ranker_valid_ndcg@10") or {}
    folder: Path | None = recommender.model_dir
    dataset: dict[str, Any] = {}
    if folder is not None and (folder / "data" / "dataset.json").is_file():
        dataset = json.loads((folder / "data" / "dataset.json").read_text())
    if not dataset:
        dataset = recommender.catalogue.fingerprint()
    fitted_at, source = report.get("fitted_at"), "saved"
    if fitted_at is None and folder is not None and (folder / "hybrid.json").is_file():
        mtime = (folder / "hybrid.json").stat().st_mtime
        fitted_at = datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")
        source = "file time"
    return {
        "folder": folder.name if folder is not None else None,
        "components": list(hybrid.config.components),
        "head": head,
        "valid_ndcg@10": ndcgs.get(head) if head else None,
        "valid_ndcg_by_head": ndcgs,
        "candidate_recall_valid": report.get("candidate_recall_valid"),
        "fit_seconds": report.get("seconds"),
        "fitted_at": fitted_at,
        "fitted_at_source": source if fitted_at is not None else None,
        "uses_profile": bool(getattr(hybrid, "uses_profile", False)),
        "dataset": dataset,
        "text_model": recommender.config.text_model,
    }


def timeline(store: Any, now: float | None = None) -> dict[str, Any]:
    """Feedback events per time bucket and kind, every bucket (empty ones too) from the first event
    to now: at least :data:`MIN_BUCKETS` of them, at most :data:`MAX_BUCKETS` (the bucket grows
    with the span; past the largest bucket, the oldest events are left out)."""
    span = store.span()
    if span is None:
        return {"bucket_seconds": BUCKETS[0], "kinds": [], "buckets": []}
    lo, hi = span[0], max(span[1], time.time() if now is None else now)
    size = next((b for b in BUCKETS if (hi - lo) / b < MAX_BUCKETS), BUCKETS[-1])
    last = math.floor(hi / size) * size
    first = max(math.floor(lo / size) * size, last - (MAX_BUCKETS - 1) * size)
    first = min(first, last - (MIN_BUCKETS - 1) * size)
    n = int(round((last - first) / size)) + 1
    buckets: list[dict[str, Any]] = [{"start": first + i * size, "counts": {}} for i in range(n)]
    kinds: set[str] = set()
    for start, event, count in store.timeline(size):
        i = int(round((start - first) / size))
        if 0 <= i < n:
            buckets[i]["counts"][event] = count
            kinds.add(event)
    return {"bucket_seconds": size, "kinds": sorted(kinds), "buckets": buckets}


def llm_info(recommender: Any, metrics: Metrics) -> dict[str, Any]:
    guard = recommender.llm
    summary = metrics.llm_summary()
    last = summary.pop("last")
    return {
        "configured": guard is not None,
        "reachable": bool(llm_up(recommender, metrics)),
        "model": getattr(guard, "name", None) if guard is not None else None,
        "last_call": {"outcome": last[0], "at": last[1]} if last else None,
        **summary,
        "fallbacks": metrics.fallback_summary(),
    }


def dashboard_data(recommender: Any, metrics: Metrics) -> dict[str, Any]:
    """The whole document (see the module doc)."""
    store = recommender.store
    ds = recommender.catalogue
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_info(recommender),
        "catalogue": {
            "n_items": ds.n_items,
            "n_users": ds.n_users,
            "feedback_users": store.count_users(),
        },
        "feedback": {
            "total": store.count(),
            "by_event": store.counts_by_event(),
            "timeline": timeline(store),
        },
        "online": {
            "impressions": store.count_impressions(),
            "horizon_seconds": HORIZON_SECONDS,
            **store.online_rates(HORIZON_SECONDS),
        },
        "llm": llm_info(recommender, metrics),
        "requests": metrics.request_latency(),
    }
