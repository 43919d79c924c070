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
message to resolve "more like the second one", and every title shown earlier is not repeated.
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

from agent.chat.intent import Intent, find_title, parse_request
from agent.chat.tools import ToolSession, make_tools
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

_LINE = re.compile(r"^\s*(\d{1,2})[.)]\s+(.+?)\s*$", re.MULTILINE)
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
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as e:
        raise ImportError(
            "chat tool calling needs langchain-openai: pip install langchain-openai"
        ) from e
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
        turns = _Turns(messages, self.catalogue)
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
    def _intent(self, turns: _Turns) -> Intent:
        intent = parse_request(turns.text, self.catalogue, turns.previous)
        follow_up = intent.references or _FOLLOW_UP.match(turns.text)
        if follow_up and turns.earlier_request is not None:
            before = parse_request(turns.earlier_request, self.catalogue, turns.earlier_previous)
            intent = _inherit(intent, before)
        return intent

    def _rules_reply(
        self, intent: Intent, user_id: str | None, turns: _Turns, fallbacks: list[str]
    ) -> ChatReply:
        k = intent.k or self.config.k
        exclude = tuple(dict.fromkeys((*intent.anchors, *intent.disliked, *turns.shown)))
        items: list[Recommendation] = []
        noted = self._record_feelings(intent, user_id, fallbacks)
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
        text = self._format(intent, items, notes, user_id, noted=noted)
        return ChatReply(text, tuple(items), intent, False, tuple(fallbacks))

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
                noted.append(f"you {verb} {self._title(item_id)}")
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
        self, messages: Sequence[Message], user_id: str | None, intent: Intent, turns: _Turns
    ) -> ChatReply:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        session = ToolSession()
        tools = {t.name: t for t in make_tools(self.recommender, user_id, session)}
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
        items = [r for r in session.items if r.item_id not in turns.shown][:k]
        if not items and not session.feedback:
            raise LookupError("the model returned no items from any tool")
        header = final.strip().splitlines()[0] if final.strip() else None
        if header and _LINE.match(header):
            header = None
        text = self._format(intent, items, list(intent.notes), user_id, header=header)
        if session.feedback and not items:
            text = "Noted: " + ", ".join(f"{e} for {self._title(i)}" for i, e in session.feedback)
        return ChatReply(text, tuple(items), intent, True, ())

    # ---- answer text --------------------------------------------------------------------------
    def _format(
        self,
        intent: Intent,
        items: Sequence[Recommendation],
        notes: Sequence[str],
        user_id: str | None,
        *,
        header: str | None = None,
        noted: Sequence[str] = (),
    ) -> str:
        known = user_id is not None and user_id in self.catalogue.user_index
        if not items:
            lines = [f"Noted: {n}." for n in noted]
            lines.append(f"I found nothing in the catalogue for: {self._summary(intent, known)}.")
            lines += [f"Note: {n}." for n in notes]
            lines.append("Try fewer constraints (another decade, or without a genre).")
            return "\n".join(lines)
        header = header or self._header(intent, len(items), known, user_id)
        lines = [f"Noted: {n}." for n in noted] + [header]
        for n, rec in enumerate(items, start=1):
            lines.append(f"{n}. {rec.title} — {self._reason(rec, intent)}")
        lines += [f"Note: {n}." for n in notes]
        return "\n".join(lines)

    def _header(self, intent: Intent, n: int, known: bool, user_id: str | None) -> str:
        who = "" if known or user_id is None else " (new here, so going by what you asked)"
        return f"{n} picks — {self._summary(intent, known)}{who}:"

    def _summary(self, intent: Intent, known: bool = False) -> str:
        f = intent.filters
        parts: list[str] = []
        if intent.anchors:
            parts.append("like " + " and ".join(self._title(a) for a in intent.anchors))
        if intent.genres:
            parts.append(", ".join(intent.genres))
        if intent.audience == "kids":
            parts.append("for kids")
        if f.year_min is not None or f.year_max is not None:
            parts.append(_years(f.year_min, f.year_max))
        if f.genres_none:
            parts.append("no " + ", ".join(f.genres_none))
        parts += [_SITUATION_LABEL.get(s, s) for s in intent.situations]
        if intent.free_text:
            parts.append(f"“{intent.free_text}”")
        return "; ".join(parts) or ("picked for you" if known else "popular picks")

    def _reason(self, rec: Recommendation, intent: Intent) -> str:
        ds = self.catalogue
        index = ds.item_index.get(rec.item_id)
        genres = ds.items[index].genres if index is not None else []
        bits: list[str] = []
        anchor_genres = {g for a in intent.anchors for g in ds.items[ds.item_index[a]].genres}
        asked = [g for g in genres if g in intent.genres or g in intent.filters.genres_any]
        shared = [g for g in genres if g in anchor_genres and g not in asked]
        if asked:
            bits.append(", ".join(asked) + " as asked")
        if intent.anchors and shared:
            bits.append(
                ", ".join(shared[:3]) + " like " + self._title(intent.anchors[0], year=False)
            )
        elif intent.anchors and not asked:
            bits.append("close to " + self._title(intent.anchors[0], year=False))
        if not bits and genres:
            bits.append(", ".join(genres[:3]))
        if rec.reason:
            bits.append(rec.reason.strip().rstrip("."))
        reason = "; ".join(bits) or "a strong match for you"
        limit = self.config.reason_chars
        return reason if len(reason) <= limit else reason[: limit - 1].rstrip() + "…"

    def _title(self, item_id: str, *, year: bool = True) -> str:
        index = self.catalogue.item_index.get(item_id)
        if index is None:
            return item_id
        title = self.catalogue.items[index].title
        return title if year else re.sub(r"\s*\(\d{4}\)\s*$", "", title)


_SITUATION_LABEL = {
    "tonight": "for tonight",
    "date night": "date night",
    "friends": "with friends",
    "short": "something short",
    "cozy": "cozy",
    "relax": "to relax",
    "holiday": "holiday",
}


class _Turns:
    """The conversation as the rules path needs it."""

    def __init__(self, messages: Sequence[Message], catalogue: Dataset) -> None:
        self.text = messages[-1].content
        answers = [i for i, m in enumerate(messages) if m.role == "assistant"]
        lists = [listed_items(messages[i].content, catalogue) for i in answers]
        self.previous: list[str] = lists[-1] if lists else []
        self.shown: tuple[str, ...] = tuple(dict.fromkeys(i for lst in lists for i in lst))
        asks = [i for i, m in enumerate(messages[:-1]) if m.role == "user"]
        self.earlier_request = messages[asks[-1]].content if asks else None
        before = [
            listed_items(messages[i].content, catalogue) for i in answers if asks and i < asks[-1]
        ]
        self.earlier_previous: list[str] = before[-1] if before else []


def listed_items(text: str, catalogue: Dataset) -> list[str]:
    """Item ids of the numbered ``"N. Title — reason"`` lines of an answer, in order."""
    out: list[str] = []
    for match in _LINE.finditer(text):
        title = match.group(2).split(" — ", 1)[0].strip()
        item_id = find_title(catalogue, title)
        if item_id is not None and item_id not in out:
            out.append(item_id)
    return out


def fuse(
    lists: Sequence[Sequence[Recommendation]], catalogue: Dataset, anchor_genres: set[str]
) -> list[Recommendation]:
    """Reciprocal rank fusion of ``lists`` (Cormack, Clarke & Büttcher, SIGIR 2009: score
    Σ 1/(60 + rank)); with ``anchor_genres`` ("like X but funnier"), items sharing more of them
    come first and fusion orders the ties. Each item keeps its first list's record (the
    personal list's carries the reason)."""
    score: dict[str, float] = {}
    first: dict[str, Recommendation] = {}
    for lst in lists:
        for rank, rec in enumerate(lst, start=1):
            score[rec.item_id] = score.get(rec.item_id, 0.0) + 1.0 / (_RRF_K + rank)
            first.setdefault(rec.item_id, rec)

    def shared(item_id: str) -> int:
        index = catalogue.item_index.get(item_id)
        if index is None or not anchor_genres:
            return 0
        return len(anchor_genres & set(catalogue.items[index].genres))

    order = sorted(score, key=lambda i: (-shared(i), -score[i], i))
    return [first[i] for i in order]


_RRF_K = 60  # reciprocal rank fusion's constant (the paper's value)


def _inherit(intent: Intent, before: Intent) -> Intent:
    """A follow-up keeps the earlier request's filters and audience where it sets none itself."""
    f, b = intent.filters, before.filters
    year_min, year_max = f.year_min, f.year_max
    if year_min is None and year_max is None:
        year_min, year_max = b.year_min, b.year_max
    genres_none = tuple(dict.fromkeys(f.genres_none + b.genres_none))
    filters = Filter(
        genres_any=tuple(g for g in f.genres_any or b.genres_any if g not in genres_none),
        genres_none=genres_none,
        year_min=year_min,
        year_max=year_max,
    )
    return replace(
        intent,
        filters=filters,
        audience=intent.audience or before.audience,
        genres=intent.genres or before.genres,
        situations=intent.situations or before.situations,
        k=intent.k or before.k,
    )


def _years(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return str(low) if low == high else f"{low}–{high}"
    return f"from {low}" if low is not None else f"up to {high}"


def _short(e: Exception, limit: int = 160) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:limit]
