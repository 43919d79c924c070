"""The dashboard's queries on PostgreSQL: the answers of :class:`agent.feedback.reports.Reports`
(events by kind and over time, the online rates over impressions) in PostgreSQL's SQL. A mixin of
:class:`agent.feedback.postgres.PostgresFeedbackStore`, whose pooled connection it reads with."""

from __future__ import annotations

from agent.feedback.events import HIT_EVENTS
from agent.feedback.reports import online_rates


class PgReports:
    """Read-only queries; ``self._conn(what)`` yields a pooled connection (autocommit)."""

    def counts_by_event(self) -> dict[str, int]:
        """Stored events per kind (kinds without events are left out)."""
        with self._conn("reading feedback") as conn:
            rows = conn.execute("SELECT event, COUNT(*) FROM events GROUP BY event").fetchall()
        return {str(e): int(n) for e, n in rows}

    def timeline(self, bucket_seconds: float) -> list[tuple[float, str, int]]:
        """Events per time bucket and kind: ``(bucket start, event, count)``, oldest first."""
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
        with self._conn("reading feedback") as conn:
            rows = conn.execute(
                "SELECT floor(timestamp / %s)::bigint AS b, event, COUNT(*) FROM events "
                "GROUP BY b, event ORDER BY b, event",
                (bucket_seconds,),
            ).fetchall()
        return [(float(b * bucket_seconds), str(e), int(n)) for b, e, n in rows]

    def span(self) -> tuple[float, float] | None:
        """The first and last event time, or None without events."""
        with self._conn("reading feedback") as conn:
            lo, hi = conn.execute("SELECT MIN(timestamp), MAX(timestamp) FROM events").fetchone()
        return None if lo is None else (float(lo), float(hi))

    def count_impressions(self) -> int:
        """Stored impressions (one per item per answer)."""
        with self._conn("reading feedback") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    def online_rates(self, horizon_seconds: float = 86_400.0) -> dict[str, float | int]:
        """Of the distinct (user, item) pairs shown, the share that got a like, click or purchase
        (``hit_rate``) and the share that got a dislike (``dislike_rate``) within
        ``horizon_seconds`` after the item was first shown (as
        :meth:`agent.feedback.reports.Reports.online_rates`)."""
        query = """
            WITH shown AS (
                SELECT user_id, item_id, MIN(timestamp) AS t FROM impressions
                GROUP BY user_id, item_id
            )
            SELECT COUNT(*),
                COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e
                    WHERE e.user_id = s.user_id AND e.item_id = s.item_id
                    AND e.event = ANY(%s) AND e.timestamp >= s.t AND e.timestamp <= s.t + %s)),
                COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e
                    WHERE e.user_id = s.user_id AND e.item_id = s.item_id
                    AND e.event = 'dislike' AND e.timestamp >= s.t AND e.timestamp <= s.t + %s))
            FROM shown s
        """
        with self._conn("reading feedback") as conn:
            shown, hits, dislikes = conn.execute(
                query, (list(HIT_EVENTS), horizon_seconds, horizon_seconds)
            ).fetchone()
        return online_rates(shown, hits, dislikes)
