"""Multi-turn chat over the recommender: :class:`ChatAgent`.

Two ways to answer one user turn, same output:

* **rules** (always available; the only one with the packaged 135M model, which cannot call tools
  reliably): :func:`agent.chat.intent.parse_request` turns the message into an
  :class:`Intent`, which becomes one :meth:`Recommender.recommend` call (query text + filters;
  anchors and items shown earlier in the conversation excluded) or, for a bare "like X",
  :meth:`Recommender.similar_items`.
  A request whose constraints match nothing is retried with the genre filter relaxed, and says so.
* **LLM tools** (a capable model, e.g. one served by vLLM): a LangChain chat model bound to the
  tools of :mod:`agent.chat.tools` decides what to look up. Any error, or a model that calls no
  tool, falls back to the rules path and is named in :attr:`ChatReply.fallbacks`.

The agent is stateless over ``messages`` (OpenAI style). Answers are a numbered list,
``"1. Title (year) — reason"``, one item per line; that list is re-read from the last assistant
message to resolve "more like the second one", and every title shown earlier is not repeated
(writing and re-reading answers is :mod:`agent.chat.answers`).
A follow-up ("more like …", "another one") keeps the previous request's constraints.

Which path runs is configuration (:func:`chat_mode`, ``HYREC_CHAT_TOOLS``): ``rules``, ``llm``,
or ``auto`` (tools only when the configured model is not the packaged ``smollm2``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from agent.chat.answers import ITEM_LINE, Turns, format_answer, fuse, inherit, title_of
from agent.chat.intent import Intent, parse_request
from agent.chat.tools import ToolSession, make_tools
from agent.feedback import is_positive
from agent.llm import Message
from hyrec.data import Dataset
from retrieval.filters import Filter

if TYPE_CHECKING:
    from agent.api import Recommendation, Recommender
    from agent.llm.settings import LLMSettings

log = logging.getLogger(__name__)

MODE_ENV = "HYREC_CHAT_TOOLS"
Mode = Literal["auto", "llm", "rules"]
PACKAGED_MODEL = "smollm2"  # LLMSettings.model of the embedded default, which cannot call tools

_FOLLOW_UP = re.compile(r"^\s*(more|another|other|again|also|and|same|similar|ok|okay)\b", re.I)
_SYSTEM = (
    "You recommend movies from a catalogue. Use the tools to find items: never name an item "
    "that a tool did not return. For a request like 'X but funnier' use search_catalog or "
    "recommend_for_user with a query and genre filters; for 'like X' use similar_items. When the "
    "user says they liked or disliked an item, call record_feedback. Answer in one short sentence; "
    "the list of items is shown to the user separately."
)


@dataclass(frozen=True)
class ChatConfig:
    k: int = 5  # items per answer when the request names no count
    max_tool_rounds: int = 4  # model → tools round trips per turn before answering
    max_tokens: int = 512  # per model call (sent as max_tokens: llama.cpp ignores the newer name)
    reason_chars: int = 160  # a reason line is cut at this length
    candidates: int = 20  # items asked from each recommender call before fusing


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn.

    Attributes:
        text: The answer: a header line, then ``"N. Title — reason"`` lines, then notes.
        items: The recommended items, in the listed order.
        intent: What the rules parser read from the user's message.
        used_llm_tools: True when a tool-calling model chose the items.
        fallbacks: What degraded and how ("llm tools: timeout; used rules").
    """

    text: str
    items: tuple[Recommendation, ...]
    intent: Intent
    used_llm_tools: bool
    fallbacks: tuple[str, ...] = ()


def chat_mode(environ: dict[str, str] | None = None) -> Mode:
    """``HYREC_CHAT_TOOLS`` (default ``auto``).

    Raises:
        ValueError: The variable holds something other than auto, llm or rules.
    """
    value = (os.environ if environ is None else environ).get(MODE_ENV, "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("llm", "rules"):
        return value  # type: ignore[return-value]
    raise ValueError(f"{MODE_ENV} must be auto, llm or rules, got {value!r}")


def make_chat_model(
    settings: LLMSettings,
    mode: Mode = "auto",
    *,
    base_url: str | None = None,
    http_client: Any | None = None,
) -> Any | None:
    """The LangChain chat model for the tool path, or None for the rules path.

    Args:
        settings: Where the LLM is (H3's :class:`agent.llm.settings.LLMSettings`).
        mode: ``rules`` → None; ``auto`` → None for the packaged model; ``llm`` → always a model.
        base_url: The API root to use when ``settings.base_url`` is unset (e.g. the embedded
            server's, from :func:`agent.llm.openai_backend.connect`).
        http_client: An ``httpx.Client`` for the OpenAI client (custom transport, proxies, tests).

    Raises:
        ImportError: langchain-openai is not installed (the message names the package).
        ValueError: The tool path is asked for but no server URL is known.
    """
    if mode == "rules" or (mode == "auto" and settings.model == PACKAGED_MODEL):
        return None
    url = settings.base_url or base_url
    if url is None:
        if mode == "auto":
            return None
        raise ValueError(
            "chat tool calling needs an OpenAI-compatible server: set HYREC_LLM_BASE_URL "
            "(e.g. a vLLM endpoint) or use HYREC_CHAT_TOOLS=rules"
        )
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=url,
        model=settings.model,
        api_key=settings.api_key,
        timeout=settings.timeout,
        max_retries=0,
        temperature=0.0,
        extra_body={"max_tokens": ChatConfig().max_tokens},  # llama.cpp ignores the newer field
        http_client=http_client,
    )


class ChatAgent:
    """Answers chat turns with recommendations.

    Args:
        recommender: The :class:`agent.api.Recommender` (or anything with its methods).
        chat_model: A LangChain chat model with ``bind_tools`` for the tool path; None: rules.
        k: Items per answer when the request names no count.
        config: Other limits.
    """

    def __init__(
        self,
        recommender: Recommender,
        *,
        chat_model: Any | None = None,
        k: int = 5,
        config: ChatConfig | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.recommender = recommender
        self.chat_model = chat_model
        self.config = replace(config or ChatConfig(), k=k)

    @classmethod
    def configured(
        cls,
        recommender: Recommender,
        *,
        settings: LLMSettings | None = None,
        mode: Mode | None = None,
        base_url: str | None = None,
        k: int = 5,
    ) -> ChatAgent:
        """A ChatAgent whose path follows the configuration (``HYREC_CHAT_TOOLS``, ``HYREC_LLM_*``).

        Args:
            recommender: Serves the answers.
            settings: LLM settings (default: :meth:`LLMSettings.from_env`).
            mode: Overrides ``HYREC_CHAT_TOOLS``.
            base_url: The API root of an already started server (e.g. the embedded one), used
                when the settings name none.
            k: Items per answer.

        Raises:
            ValueError, ImportError: ``llm`` mode asked for but not possible (see
                :func:`make_chat_model`).
        """
        if settings is None:
            from agent.llm.settings import LLMSettings

            settings = LLMSettings.from_env()
        model = make_chat_model(settings, mode or chat_mode(), base_url=base_url)
        return cls(recommender, chat_model=model, k=k)

    @property
    def catalogue(self) -> Dataset:
        return self.recommender.catalogue

    def reply(self, messages: Sequence[Message], user_id: str | None = None) -> ChatReply:
        """Answer the last user message of ``messages``.

        Args:
            messages: The conversation, oldest first; the last one must be the user's.
            user_id: The signed-in user; ``None`` or an unknown id gets the cold-start path.

        Raises:
            ValueError: ``messages`` is empty or does not end with a user message.
        """
        if not messages or messages[-1].role != "user":
            raise ValueError("messages must end with the user's message")
        turns = Turns(messages, self.catalogue)
        intent = self._intent(turns)
        fallbacks: list[str] = []
        if self.chat_model is not None:
            try:
                return self._tool_reply(messages, user_id, intent, turns)
            except Exception as e:  # any model/transport failure: the rules path answers
                log.warning("chat tool path failed, using rules: %s", e)
                fallbacks.append(f"llm tools: {type(e).__name__}: {_short(e)}; used rules")
        return self._rules_reply(intent, user_id, turns, fallbacks)

    # ---- rules path ---------------------------------------------------------------------------
    def _intent(self, turns: Turns) -> Intent:
        intent = parse_request(turns.text, self.catalogue, turns.previous)
        follow_up = intent.references or _FOLLOW_UP.match(turns.text)
        if follow_up and turns.earlier_request is not None:
            before = parse_request(turns.earlier_request, self.catalogue, turns.earlier_previous)
            intent = inherit(intent, before)
        return intent

    def _rules_reply(
        self, intent: Intent, user_id: str | None, turns: Turns, fallbacks: list[str]
    ) -> ChatReply:
        k = intent.k or self.config.k
        noted = self._record_feelings(intent, user_id, fallbacks)
        disliked = self._stored_dislikes(user_id)
        exclude = tuple(dict.fromkeys((*intent.anchors, *intent.disliked, *disliked, *turns.shown)))
        items: list[Recommendation] = []
        notes = list(intent.notes)
        try:
            items = self._find(intent, user_id, k, exclude, fallbacks)
            if not items and intent.filters.genres_any:
                relaxed = replace(intent.filters, genres_any=())
                items = self._find(replace(intent, filters=relaxed), user_id, k, exclude, fallbacks)
                if items:
                    notes.append(
                        "nothing matched every constraint, so the genre wish ("
                        + ", ".join(intent.filters.genres_any)
                        + ") was relaxed"
                    )
        except Exception as e:  # the recommender failed: say so, never crash the conversation
            log.exception("chat recommendation failed")
            fallbacks.append(f"recommend: {type(e).__name__}: {_short(e)}")
        limit = self.config.reason_chars
        text = format_answer(
            self.catalogue, intent, items, notes, user_id, reason_chars=limit, noted=noted
        )
        return ChatReply(text, tuple(items), intent, False, tuple(fallbacks))

    def _stored_dislikes(self, user_id: str | None) -> list[str]:
        """The signed-in user's negative feedback: never offered again by any voice (search and
        similar items do not know the user; the personal list drops these itself)."""
        store = getattr(self.recommender, "store", None)
        if user_id is None or store is None:
            return []
        cut = self.recommender.config.positive_rating
        return [e.item_id for e in store.events(user_id) if not is_positive(e.event, e.value, cut)]

    def _record_feelings(
        self, intent: Intent, user_id: str | None, fallbacks: list[str]
    ) -> list[str]:
        """Store "I loved X" / "I hated X" as like/dislike feedback for a signed-in user."""
        if user_id is None:
            return []
        noted: list[str] = []
        for event, ids in (("like", intent.liked), ("dislike", intent.disliked)):
            for item_id in ids:
                try:
                    self.recommender.feedback(user_id, item_id, event)
                except Exception as e:  # feedback is a side channel: the answer still comes
                    log.warning("chat feedback failed: %s", e)
                    fallbacks.append(f"feedback: {type(e).__name__}: {_short(e)}")
                    continue
                verb = "liked" if event == "like" else "did not like"
                noted.append(f"you {verb} {title_of(self.catalogue, item_id)}")
        return noted

    def _find(
        self,
        intent: Intent,
        user_id: str | None,
        k: int,
        exclude: tuple[str, ...],
        fallbacks: list[str],
    ) -> list[Recommendation]:
        """Ask the recommender and fuse its answers (see :func:`fuse`).

        A bare "like X" asks ``similar_items`` alone. Otherwise the voices are the personal (or
        cold-start) list for the query, the semantic search for the query, and the neighbours of
        each anchor (at most two), all under the same filters; a voice that fails is named in
        ``fallbacks`` and the others still answer.
        """
        rec = self.recommender
        filters = None if intent.filters == Filter() else intent.filters
        n = max(self.config.candidates, k) + len(exclude)
        query = intent.query_text or None
        # a reason needs a history to ground it in: a known user, or a liking said just now
        grounded = user_id is not None and (
            user_id in self.catalogue.user_index or bool(intent.liked)
        )

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
                    fallbacks.append(f"{name}: {type(e).__name__}: {_short(e)}")
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
        ds = self.catalogue
        wanted = set(intent.genres) | {
            g for a in intent.anchors for g in ds.items[ds.item_index[a]].genres
        }
        wanted -= set(intent.filters.genres_none)
        return fuse(lists, ds, wanted if intent.anchors else set())[:k]

    # ---- tool path ----------------------------------------------------------------------------
    def _tool_reply(
        self, messages: Sequence[Message], user_id: str | None, intent: Intent, turns: Turns
    ) -> ChatReply:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        session = ToolSession()
        said = {**{i: "like" for i in intent.liked}, **{i: "dislike" for i in intent.disliked}}
        tools = {t.name: t for t in make_tools(self.recommender, user_id, session, said)}
        model = self.chat_model.bind_tools(list(tools.values()))
        role = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        genres = sorted({g for it in self.catalogue.items for g in it.genres})
        system = _SYSTEM + (" Genre names: " + ", ".join(genres) + "." if genres else "")
        history: list[Any] = [SystemMessage(system)]
        history += [role[m.role](m.content) for m in messages]
        final = ""
        for _ in range(self.config.max_tool_rounds):
            answer = model.invoke(history)
            history.append(answer)
            calls = getattr(answer, "tool_calls", None) or []
            if not calls:
                final = answer.content if isinstance(answer.content, str) else ""
                break
            for call in calls:
                tool = tools.get(call["name"])
                if tool is None:
                    result = f'{{"error": "no tool named {call["name"]}"}}'
                else:
                    result = tool.invoke(call.get("args") or {})
                history.append(ToolMessage(str(result), tool_call_id=call.get("id") or ""))
        k = intent.k or self.config.k
        hidden = {*turns.shown, *self._stored_dislikes(user_id)}
        items = [r for r in session.items if r.item_id not in hidden][:k]
        if not items and not session.feedback:
            raise LookupError("the model returned no items from any tool")
        header = final.strip().splitlines()[0] if final.strip() else None
        if header and ITEM_LINE.match(header):
            header = None
        limit = self.config.reason_chars
        notes = list(intent.notes)
        text = format_answer(
            self.catalogue, intent, items, notes, user_id, reason_chars=limit, header=header
        )
        if session.feedback and not items:
            text = "Noted: " + ", ".join(
                f"{e} for {title_of(self.catalogue, i)}" for i, e in session.feedback
            )
        return ChatReply(text, tuple(items), intent, True, ())


def _short(e: Exception, limit: int = 160) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:limit]
