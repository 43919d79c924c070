"""Chat: the deterministic request parser (:mod:`agent.chat.intent`), the chat agent
(:mod:`agent.chat.agent`, which picks a path for each turn: the rules path in
:mod:`agent.chat.rules` or the tool-calling loop in :mod:`agent.chat.tool_path`; what a turn is in
:mod:`agent.chat.turn`) and the LangChain tools a tool-calling model drives
(:mod:`agent.chat.tools`)."""
