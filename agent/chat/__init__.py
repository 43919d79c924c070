"""Chat: the deterministic request parser (:mod:`agent.chat.intent`), the chat agent
(:mod:`agent.chat.agent`) and the LangChain tools a tool-calling model drives
(:mod:`agent.chat.tools`)."""
