"""The tool path of a chat turn (see :mod:`agent.chat.agent`): a LangChain chat model bound to the
tools of :mod:`agent.chat.tools` decides what to look up, for at most
:attr:`ChatConfig.max_tool_rounds` model → tools round trips; the items the tools returned (never
a title the model wrote) make the answer. A model that returns no item from any tool raises, so
the caller falls back to the rules path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.chat.answers import ITEM_LINE, Turns, format_answer, title_of
from agent.chat.tools import ToolSession, make_tools
from agent.chat.turn import ChatConfig, ChatReply, stored_dislikes
from agent.llm import Message

if TYPE_CHECKING:
    from agent.api import Recommender
    from agent.chat.intent import Intent

SYSTEM = (
    "You recommend movies from a catalogue. Use the tools to find items: never name an item "
    "that a tool did not return. For a request like 'X but funnier' use search_catalog or "
    "recommend_for_user with a query and genre filters; for 'like X' use similar_items. When the "
    "user says they liked or disliked an item, call record_feedback. Answer in one short sentence; "
    "the list of items is shown to the user separately."
)


def tool_reply(
    recommender: Recommender,
    chat_model: Any,
    config: ChatConfig,
    messages: Sequence[Message],
    user_id: str | None,
    intent: Intent,
    turns: Turns,
) -> ChatReply:
    """The answer the tool-calling ``chat_model`` chose for the last message of ``messages``.

    Raises:
        LookupError: the model returned no items from any tool (and recorded no feedback).
        Exception: whatever the model or its transport raised.
    """
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    catalogue = recommender.catalogue
    session = ToolSession()
    said = {**{i: "like" for i in intent.liked}, **{i: "dislike" for i in intent.disliked}}
    tools = {t.name: t for t in make_tools(recommender, user_id, session, said)}
    model = chat_model.bind_tools(list(tools.values()))
    role = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    genres = sorted({g for it in catalogue.items for g in it.genres})
    system = SYSTEM + (" Genre names: " + ", ".join(genres) + "." if genres else "")
    history: list[Any] = [SystemMessage(system)]
    history += [role[m.role](m.content) for m in messages]
    final = ""
    for _ in range(config.max_tool_rounds):
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
    k = intent.k or config.k
    hidden = {*turns.shown, *stored_dislikes(recommender, user_id)}
    items = [r for r in session.items if r.item_id not in hidden][:k]
    if not items and not session.feedback:
        raise LookupError("the model returned no items from any tool")
    header = final.strip().splitlines()[0] if final.strip() else None
    if header and ITEM_LINE.match(header):
        header = None
    limit = config.reason_chars
    notes = list(intent.notes)
    text = format_answer(
        recommender.catalogue, intent, items, notes, user_id, reason_chars=limit, header=header
    )
    if session.feedback and not items:
        text = "Noted: " + ", ".join(
            f"{e} for {title_of(recommender.catalogue, i)}" for i, e in session.feedback
        )
    return ChatReply(text, tuple(items), intent, True, ())
