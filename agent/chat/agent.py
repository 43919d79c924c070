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
or ``auto`` (tools only when the configured model is not the packaged ``smollm2``). This module
owns that choice and :class:`ChatAgent`, which reads the turn's intent and dispatches; the paths
themselves are :mod:`agent.chat.rules` and :mod:`agent.chat.tool_path`, and what they share (the
limits :class:`ChatConfig`, the answer :class:`ChatReply`) is :mod:`agent.chat.turn`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from agent.chat.answers import Turns, inherit
from agent.chat.intent import Intent, parse_request
from agent.chat.rules import rules_reply
from agent.chat.tool_path import tool_reply
from agent.chat.turn import ChatConfig, ChatReply, short
from agent.llm import Message
from hyrec.data import Dataset

if TYPE_CHECKING:
    from agent.api import Recommender
    from agent.llm.settings import LLMSettings

__all__ = [
    "MODE_ENV",
    "PACKAGED_MODEL",
    "ChatAgent",
    "ChatConfig",
    "ChatReply",
    "Mode",
    "chat_mode",
    "make_chat_model",
]

log = logging.getLogger(__name__)

MODE_ENV = "HYREC_CHAT_TOOLS"
Mode = Literal["auto", "llm", "rules"]
PACKAGED_MODEL = "smollm2"  # LLMSettings.model of the embedded default, which cannot call tools

_FOLLOW_UP = re.compile(r"^\s*(more|another|other|again|also|and|same|similar|ok|okay)\b", re.I)


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
                return tool_reply(
                    self.recommender, self.chat_model, self.config, messages, user_id, intent, turns
                )
            except Exception as e:  # any model/transport failure: the rules path answers
                log.warning("chat tool path failed, using rules: %s", e)
                fallbacks.append(f"llm tools: {type(e).__name__}: {short(e)}; used rules")
        return rules_reply(self.recommender, self.config, intent, user_id, turns, fallbacks)

    def _intent(self, turns: Turns) -> Intent:
        """The request of the last turn; a follow-up keeps the earlier request's constraints."""
        intent = parse_request(turns.text, self.catalogue, turns.previous)
        follow_up = intent.references or _FOLLOW_UP.match(turns.text)
        if follow_up and turns.earlier_request is not None:
            before = parse_request(turns.earlier_request, self.catalogue, turns.earlier_previous)
            intent = inherit(intent, before)
        return intent
