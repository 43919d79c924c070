"""Starting a server: the auth settings it may run with, opening the model folder with its LLM
(never leaving an LLM server behind when anything after its start fails), and the environment
factory for ``uvicorn --factory``."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from agent.api import Recommender
from agent.llm import LLMError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth_settings(host: str, api_key: str | None, no_auth: bool) -> str | None:
    """The API key to require, or None when auth is explicitly off on a loopback address.

    Raises:
        ValueError: no key and auth not disabled, or auth disabled on a non-loopback address.
    """
    if api_key:
        return api_key
    if not no_auth:
        raise ValueError(
            "no API key: set HYREC_API_KEY or pass --api-key-file FILE, or --no-auth on a "
            "loopback address"
        )
    if not is_loopback(host):
        raise ValueError(f"--no-auth is only allowed on a loopback address, not {host!r}")
    return None


def app_from_env() -> FastAPI:
    """An app factory for ``uvicorn --factory agent.serve.startup:app_from_env``.

    Reads ``HYREC_MODEL_DIR`` (required), ``HYREC_API_KEY``, ``HYREC_NO_AUTH=1`` with
    ``HYREC_HOST`` (loopback only) and ``HYREC_LLM=0`` (serve without an LLM).
    """
    model_dir = os.environ.get("HYREC_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("set HYREC_MODEL_DIR to a folder written by `hyrec fit`")
    key = check_auth_settings(
        os.environ.get("HYREC_HOST", "127.0.0.1"),
        os.environ.get("HYREC_API_KEY") or None,
        os.environ.get("HYREC_NO_AUTH", "") == "1",
    )
    recommender, handle, chat = open_model(
        Path(model_dir), use_llm=os.environ.get("HYREC_LLM") != "0"
    )
    from agent.serve.app import create_app

    return create_app(recommender, api_key=key, closing=(handle,), chat_agent=chat)


def open_model(
    model_dir: Path, *, use_llm: bool
) -> tuple[Recommender, Any, Callable[[Recommender], Any]]:
    """Load the model folder, with an LLM when ``use_llm`` and one can be reached or started.

    Returns:
        The recommender, the LLM handle to close at shutdown (None without an LLM), and the chat
        agent factory (tool calling only for a capable model, per ``HYREC_CHAT_TOOLS``).
    """
    from agent.chat.agent import ChatAgent, chat_mode, make_chat_model

    handle, chat_model = None, None
    try:  # whatever fails after the LLM started (a bad chat mode, a bad model folder) stops it
        if use_llm:
            from agent.llm.connect import connect
            from agent.llm.settings import LLMSettings

            settings = LLMSettings.from_env()
            try:
                handle = connect(settings)
            except LLMError as e:
                log.warning("serving without an LLM: %s", e)
            else:
                chat_model = make_chat_model(settings, chat_mode(), base_url=handle.base_url)
        llm = handle.llm if handle is not None else None
        recommender = Recommender.load(model_dir, llm=llm)
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    return recommender, handle, lambda r: ChatAgent(r, chat_model=chat_model)
