"""``hyrec chat``: talk to a saved model, one message (``--message``) or an interactive session.

Registered by :mod:`agent.cli.main`; also runnable alone:
``python -m agent.cli.chat --model-dir DIR``.
The chat path follows ``HYREC_CHAT_TOOLS`` (rules / llm / auto, see :mod:`agent.chat.agent`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
log = logging.getLogger(__name__)

_QUIT = {"/quit", "/exit", "quit", "exit"}


def chat(
    model_dir: Annotated[Path, typer.Option(help="A folder written by `hyrec fit`.")],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Answer this one message and exit (else a session)."),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="User id; unknown or absent: the cold-start path.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Items per answer (unless the message asks).")] = 5,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm/--no-llm",
            help="Use the LLM stages (HYREC_LLM_* settings; embedded llama.cpp when no base URL). "
            "Without one, or if it cannot start, the rules and the hybrid answer alone.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print each reply as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Chat with the recommender: "something like Alien but funnier", "no horror, 90s, for kids",
    "more like the second one"."""
    from agent.chat.agent import ChatAgent
    from agent.llm import Message

    logging.basicConfig(  # fallbacks are printed with each reply; warnings would repeat them
        level=logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if k <= 0:
        _fail("-k must be a positive number of items")
    recommender, handle = _open(model_dir, llm)
    try:
        try:
            agent = ChatAgent.configured(
                recommender, base_url=handle.base_url if handle is not None else None, k=k
            )
        except (ValueError, ImportError) as e:
            _fail(str(e))
        messages: list[Message] = []
        if message is not None:
            _say(agent.reply([Message("user", message)], user_id=user), as_json)
            return
        console.print("[dim]hyrec chat — type a request; /reset starts over, /quit ends.[/]")
        while True:
            try:
                text = console.input("[bold]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not text:
                continue
            if text.lower() in _QUIT:
                return
            if text.lower() == "/reset":
                messages.clear()
                console.print("[dim](conversation cleared)[/]")
                continue
            messages.append(Message("user", text))
            reply = agent.reply(messages, user_id=user)
            messages.append(Message("assistant", reply.text))
            _say(reply, as_json)
    finally:
        recommender.close()
        if handle is not None:
            handle.close()


def _open(model_dir: Path, use_llm: bool) -> tuple[Any, Any]:
    """The recommender (with an LLM when asked for and reachable) and the handle to close."""
    from agent.api import Recommender
    from agent.llm import LLMError

    handle = None
    if use_llm:
        from agent.llm.connect import connect
        from agent.llm.settings import LLMSettings

        try:
            handle = connect(LLMSettings.from_env())
        except (LLMError, ValueError) as e:
            console.print(f"[yellow]LLM off:[/] {escape(str(e))}")
    try:
        return Recommender.load(model_dir, llm=handle.llm if handle is not None else None), handle
    except FileNotFoundError as e:
        if handle is not None:
            handle.close()
        _fail(str(e))
        raise  # unreachable: _fail exits


def _say(reply: Any, as_json: bool) -> None:
    if as_json:
        body = {
            "text": reply.text,
            "items": [
                {"item_id": r.item_id, "title": r.title, "score": r.score, "reason": r.reason}
                for r in reply.items
            ],
            "intent": {
                **{k: v for k, v in asdict(reply.intent).items() if k != "filters"},
                "filters": asdict(reply.intent.filters),
            },
            "used_llm_tools": reply.used_llm_tools,
            "fallbacks": list(reply.fallbacks),
        }
        print(json.dumps(body, ensure_ascii=False, default=list))
        return
    console.print(escape(reply.text), soft_wrap=True)  # keep "N. Title — reason" on one line
    for note in reply.fallbacks:
        console.print(f"[dim](fallback: {escape(note)})[/]", soft_wrap=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


if __name__ == "__main__":
    typer.run(chat)
