"""The rules path of a chat turn (see :mod:`agent.chat.agent`): the :class:`Intent` the request
parser read becomes recommender calls whose lists are fused into the answer.

:func:`rules_reply` first stores what the user said they liked or disliked (a signed-in user,
:func:`record_feelings`), then asks the recommender (:func:`find`): a bare "like X" asks for the
neighbours of X alone; anything else asks the personal (or cold-start) list for the query, the
semantic search for the query and the neighbours of each anchor, all under the same filters. A
request whose constraints match nothing is retried with the genre filter relaxed, and says so.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agent.chat.answers import Turns, format_answer, fuse, title_of
from agent.chat.turn import ChatConfig, ChatReply, short, stored_dislikes
from retrieval.filters import Filter

if TYPE_CHECKING:
    from agent.api import Recommendation, Recommender
    from agent.chat.intent import Intent

log = logging.getLogger(__name__)


def rules_reply(
    recommender: Recommender,
    config: ChatConfig,
    intent: Intent,
    user_id: str | None,
    turns: Turns,
    fallbacks: list[str],
) -> ChatReply:
    """The answer to ``intent``; a recommender failure is named in ``fallbacks``, never raised."""
    k = intent.k or config.k
    noted = record_feelings(recommender, intent, user_id, fallbacks)
    disliked = stored_dislikes(recommender, user_id)
    exclude = tuple(dict.fromkeys((*intent.anchors, *intent.disliked, *disliked, *turns.shown)))
    items: list[Recommendation] = []
    notes = list(intent.notes)
    try:
        items = find(recommender, config, intent, user_id, k, exclude, fallbacks)
        if not items and intent.filters.genres_any:
            relaxed = replace(intent, filters=replace(intent.filters, genres_any=()))
            items = find(recommender, config, relaxed, user_id, k, exclude, fallbacks)
            if items:
                notes.append(
                    "nothing matched every constraint, so the genre wish ("
                    + ", ".join(intent.filters.genres_any)
                    + ") was relaxed"
                )
    except Exception as e:  # the recommender failed: say so, never crash the conversation
        log.exception("chat recommendation failed")
        fallbacks.append(f"recommend: {type(e).__name__}: {short(e)}")
    limit = config.reason_chars
    text = format_answer(
        recommender.catalogue, intent, items, notes, user_id, reason_chars=limit, noted=noted
    )
    return ChatReply(text, tuple(items), intent, False, tuple(fallbacks))


def record_feelings(
    recommender: Recommender, intent: Intent, user_id: str | None, fallbacks: list[str]
) -> list[str]:
    """Store "I loved X" / "I hated X" as like/dislike feedback for a signed-in user."""
    if user_id is None:
        return []
    noted: list[str] = []
    for event, ids in (("like", intent.liked), ("dislike", intent.disliked)):
        for item_id in ids:
            try:
                recommender.feedback(user_id, item_id, event)
            except Exception as e:  # feedback is a side channel: the answer still comes
                log.warning("chat feedback failed: %s", e)
                fallbacks.append(f"feedback: {type(e).__name__}: {short(e)}")
                continue
            verb = "liked" if event == "like" else "did not like"
            noted.append(f"you {verb} {title_of(recommender.catalogue, item_id)}")
    return noted


def find(
    recommender: Recommender,
    config: ChatConfig,
    intent: Intent,
    user_id: str | None,
    k: int,
    exclude: tuple[str, ...],
    fallbacks: list[str],
) -> list[Recommendation]:
    """Ask the recommender and fuse its answers (see :func:`agent.chat.answers.fuse`).

    A bare "like X" asks ``similar_items`` alone. Otherwise the voices are the personal (or
    cold-start) list for the query, the semantic search for the query, and the neighbours of
    each anchor (at most two), all under the same filters; a voice that fails is named in
    ``fallbacks`` and the others still answer.
    """
    rec = recommender
    filters = None if intent.filters == Filter() else intent.filters
    n = max(config.candidates, k) + len(exclude)
    query = intent.query_text or None
    # a reason needs a history to ground it in: a known user, or a liking said just now
    grounded = user_id is not None and (user_id in rec.catalogue.user_index or bool(intent.liked))

    def personal() -> list[Recommendation]:
        got = rec.recommend(
            user_id, k=n, query=query, filters=filters, exclude=exclude, explain=grounded,
        )  # fmt: skip
        fallbacks.extend(f for f in got.fallbacks if f not in fallbacks)
        return list(got.items)

    def ask(voices: list[tuple[str, Any]]) -> list[list[Recommendation]]:
        lists = []
        for name, call in voices:
            try:
                lists.append([r for r in call() if r.item_id not in exclude])
            except Exception as e:  # one voice failing leaves the others
                log.warning("chat: %s failed: %s", name, e)
                fallbacks.append(f"{name}: {type(e).__name__}: {short(e)}")
        return lists

    if intent.is_pure_similarity and len(intent.anchors) == 1:
        anchor = intent.anchors[0]
        lists = ask([("similar_items", lambda: rec.similar_items(anchor, n, filters))])
        if not lists:  # the neighbours failed: the personal list still answers
            lists = ask([("recommend", personal)])
    else:
        voices: list[tuple[str, Any]] = [("recommend", personal)]
        if query:
            voices.append(("search", lambda: rec.search(query, n, filters)))
        for anchor in intent.anchors[:2]:
            voices.append(("similar_items", lambda a=anchor: rec.similar_items(a, n, filters)))
        lists = ask(voices)
    if not lists:
        raise RuntimeError("every recommender call failed")
    ds = rec.catalogue
    wanted = set(intent.genres) | {
        g for a in intent.anchors for g in ds.items[ds.item_index[a]].genres
    }
    wanted -= set(intent.filters.genres_none)
    return fuse(lists, ds, wanted if intent.anchors else set())[:k]
