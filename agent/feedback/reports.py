"""What the dashboard reads from the feedback store: events by kind and over time, and the online
metrics over recorded impressions (:meth:`Reports.online_rates`). A mixin of
:class:`agent.feedback.store.FeedbackStore`, whose read connection it uses."""

from __future__ import annotations

from agent.feedback.events import HIT_EVENTS


class Reports:
    """Read-only queries; ``self._read()`` yields the store's read connection."""

    def counts_by_event(self) -> dict[str, int]:
        """Stored events per kind (kinds without events are left out)."""
        with self._read() as conn:
            rows = conn.execute("SELECT event, COUNT(*) FROM events GROUP BY event")
            return {str(e): int(n) for e, n in rows}

    def timeline(self, bucket_seconds: float) -> list[tuple[float, str, int]]:
        """Events per time bucket and kind: ``(bucket start, event, count)``, oldest first."""
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT CAST(timestamp / ? AS INTEGER) AS b, event, COUNT(*) FROM events "
                "GROUP BY b, event ORDER BY b",
                (bucket_seconds,),
            ).fetchall()
        return [(b * bucket_seconds, str(e), int(n)) for b, e, n in rows]

    def span(self) -> tuple[float, float] | None:
        """The first and last event time, or None without events."""
        with self._read() as conn:
            lo, hi = conn.execute("SELECT MIN(timestamp), MAX(timestamp) FROM events").fetchone()
        return None if lo is None else (float(lo), float(hi))

    def count_impressions(self) -> int:
        """Stored impressions (one per item per answer)."""
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    def online_rates(self, horizon_seconds: float = 86_400.0) -> dict[str, float | int]:
        """Online metrics over the items shown: of the distinct (user, item) pairs shown, the
        share that got a like, click or purchase (``hit_rate``) and the share that got a
        dislike (``dislike_rate``) from that user within ``horizon_seconds`` after the item was
        first shown to them.

        Returns:
            ``shown`` (distinct pairs), ``hits``, ``dislikes``, ``hit_rate``, ``dislike_rate``
            (0.0 when nothing was shown).
        """
        marks = ",".join("?" * len(HIT_EVENTS))
        query = f"""
            WITH shown AS (
                SELECT user_id, item_id, MIN(timestamp) AS t FROM impressions
                GROUP BY user_id, item_id
            )
            SELECT COUNT(*),
                SUM(EXISTS (SELECT 1 FROM events e WHERE e.user_id = s.user_id
                    AND e.item_id = s.item_id AND e.event IN ({marks})
                    AND e.timestamp >= s.t AND e.timestamp <= s.t + ?)),
                SUM(EXISTS (SELECT 1 FROM events e WHERE e.user_id = s.user_id
                    AND e.item_id = s.item_id AND e.event = 'dislike'
                    AND e.timestamp >= s.t AND e.timestamp <= s.t + ?))
            FROM shown s
        """  # only the placeholders are interpolated
        with self._read() as conn:
            shown, hits, dislikes = conn.execute(
                query, (*HIT_EVENTS, horizon_seconds, horizon_seconds)
            ).fetchone()
        return online_rates(shown, hits, dislikes)


def online_rates(shown: int | None, hits: int | None, dislikes: int | None) -> dict[str, float]:
    """The online metrics from their counts (``None`` from SQL over no rows counts as 0)."""
    shown, hits, dislikes = int(shown or 0), int(hits or 0), int(dislikes or 0)
    return {
        "shown": shown,
        "hits": hits,
        "dislikes": dislikes,
        "hit_rate": hits / shown if shown else 0.0,
        "dislike_rate": dislikes / shown if shown else 0.0,
    }
