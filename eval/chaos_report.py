"""The chaos bench's analysis and report: which feedback was sent while a recommendation was in
flight, the timeline's phases and where the time went in each, the connection errors inside and
outside the server's down window, the percentiles, and the markdown table of a run's report.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from typing import Any

import numpy as np

Window = tuple[str, float, float]  # a phase of the timeline: (name, from s, to s)


def while_in_flight(
    feedback: list[tuple[float, float, float | None]], recommendations: list[tuple[float, float]]
) -> list[tuple[float, float, float | None]]:
    """The feedback sent while at least one recommendation (from any process) was in flight."""
    spans: list[list[float]] = []  # the union of the recommendations' intervals, sorted
    for a, b in sorted(recommendations):
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    starts = [a for a, _ in spans]
    out = []
    for sample in feedback:
        i = bisect.bisect_right(starts, sample[0]) - 1
        if i >= 0 and sample[0] < spans[i][1]:
            out.append(sample)
    return out


def phases(events: list[tuple[str, float]], t0: float, wait: float) -> list[Window]:
    """The timeline's windows as ``(name, from s, to s)``; a request started inside one may be
    held back by that fault (or, in the first 5 s, by every client starting at once). The DB
    window runs on for the store's ``wait`` (a request that took the lock's last second still
    waits that long), the restart window for 5 s after the server is back (every client
    reconnects at once)."""
    at = {what.split(" after ")[0]: t - t0 for what, t in events}
    out = [("start (first 5 s)", 0.0, 5.0)]  # every client's first requests, on a cold server
    for name, start, end, extra in [
        ("db locked", "db locked", "db unlocked", wait),
        ("server down or reconnecting", "server SIGKILLed", "server back", 5.0),
        ("LLM server down", "LLM server killed", "LLM server back", 0.0),
    ]:
        if start in at and end in at:
            out.append((name, at[start], at[end] + extra))
    return out


def phase_of(t: float, windows: list[Window]) -> str:
    return next((name for name, a, b in windows if a <= t < b), "no fault")


def where_time_went(
    samples: list[tuple[float, float, float | None]], windows: list[Window]
) -> dict[str, Any]:
    """Feedback while LLM requests were in flight, split by phase of the timeline: client and
    server p50/p99, so time in the server is told from time queued before or after it."""
    groups: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for started, client_s, server_s in samples:
        groups[phase_of(started, windows)].append((client_s, server_s))
    out = {}
    for name, rows in groups.items():
        server = [s for _, s in rows if s is not None]
        out[name] = {
            "requests": len(rows),
            "p50_ms": percentile([c for c, _ in rows], 50),
            "p99_ms": percentile([c for c, _ in rows], 99),
            "server_p50_ms": percentile(server, 50),
            "server_p99_ms": percentile(server, 99),
        }
    return out


def connection_errors(errors: list[tuple[str, float, str]], windows: list[Window]) -> dict:
    """Connection errors that ended inside the server's down window (expected: refused while it
    is down, or cut when it was killed) and outside it (not expected)."""
    down = [(a, b) for name, a, b in windows if name.startswith("server down")]
    inside, outside = Counter(), Counter()
    for name, ended, kind in errors:
        hit = any(a <= ended < b for a, b in down)
        (inside if hit else outside)[f"{name} {kind}"] += 1
    return {"in_down_window": dict(inside), "outside": dict(outside)}


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def table(report: dict[str, Any]) -> str:
    lines = [
        "| endpoint | requests | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|",
    ]
    for name, e in report["endpoints"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(e["status"].items()))
        lines.append(f"| {name} | {e['requests']} | {e['p50_ms']} | {e['p99_ms']} | {statuses} |")
    f = report["feedback_while_llm_in_flight"]
    e, lag = report["connection_errors"], report["load_generator_loop_lag_ms"]
    lines += [
        "",
        f"- 5xx other than the documented 503s: {report['n_unexpected_5xx']}"
        + (
            f" (server log kept at {report['server_log_kept']})"
            if report.get("server_log_kept")
            else ""
        ),
        f"- acknowledged events: {report['acknowledged_events']}, lost: "
        f"{report['lost_acknowledged_events']}",
        f"- idempotent events stored twice: {report['duplicated_idempotent_events']} "
        f"({report['retries_acknowledged_as_duplicates']} retries answered as duplicates)",
        f"- feedback while LLM requests were in flight: {f['requests']} requests, "
        f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms",
        f"- timeline (s): {report['timeline_s']}",
        f"- connection errors in the server's down window: {e['in_down_window']}; outside it: "
        f"{e['outside']}",
        f"- load generator: {report['load_processes']} processes, CPU s each "
        f"{report['load_generator_cpu_s']}; their event-loop lag p50 {lag['p50']} ms, "
        f"p99 {lag['p99']} ms, max {lag['max']} ms",
        f"- 1-min load average: {report['load_avg_1min_start']} before the fit, "
        f"{report['load_avg_1min_before_load']} before the load, {report['load_avg_1min_end']} "
        f"after it ({report['cpu_cores']} cores, shared with other work)",
        f"- item store: {report['item_store']}",
        "- checks: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in report["checks"].items()),
        "",
        "Feedback while LLM requests were in flight, by phase (client time, and the server's own",
        "time from its Server-Timing header):",
        "",
        "| phase | requests | p50 ms | p99 ms | server p50 ms | server p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in report["feedback_while_llm_in_flight_by_phase"].items():
        lines.append(
            f"| {name} | {g['requests']} | {g['p50_ms']} | {g['p99_ms']} | "
            f"{g['server_p50_ms']} | {g['server_p99_ms']} |"
        )
    return "\n".join(lines)
