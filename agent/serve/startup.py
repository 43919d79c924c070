"""Starting a server: the auth settings it may run with, where its shared state lives
(:class:`StoreSettings`: the feedback database and the item store, for replicas), opening the
model folder with its LLM (never leaving an LLM server behind when anything after its start
fails), and the environment factory for ``uvicorn --factory``."""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

from agent.api import Recommender
from agent.llm import LLMError
from agent.llm.settings import CONFIG_ENV, default_config_path
from agent.serve.warm import freeze_heap, warm_up
from retrieval.store import PROCESS_ENV, StoreConfig, own_process_default

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


@dataclass(frozen=True)
class StoreSettings:
    """Where a server keeps what replicas share. Precedence, lowest first: these defaults, the
    TOML config file (``[feedback] url``, ``[chroma] url`` and ``process``; the file of
    :mod:`agent.llm.settings`), ``HYREC_FEEDBACK_URL`` / ``HYREC_CHROMA_URL`` /
    ``HYREC_CHROMA_PROCESS``, then the command line."""

    # postgresql://user@host:port/db (replicas share it) or a SQLite path; None: the model
    # folder's feedback.sqlite3 (one process)
    feedback_url: str | None = None
    # http(s)://host:port of a `chroma run` server; None: the model folder's embedded chroma/
    chroma_url: str | None = None
    # the embedded chroma/ in a child process of the server, so that its writes (which hold the
    # GIL for their whole length, 30-230 ms an upsert) never freeze the event loop
    # (retrieval.store); False (HYREC_CHROMA_PROCESS=0): in the server's own process
    chroma_process: bool = True

    @classmethod
    def resolve(
        cls,
        feedback_url: str | None = None,
        chroma_url: str | None = None,
        *,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> StoreSettings:
        """The settings from the flags given, the environment and the config file.

        Raises:
            FileNotFoundError: an explicitly named config file (``HYREC_CONFIG``) is missing.
            ValueError: a section of the config file is not a table with a string ``url``.
        """
        env = os.environ if environ is None else environ
        explicit = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        path = explicit or default_config_path()
        body: dict[str, Any] = {}
        if path.is_file():
            body = tomllib.loads(path.read_text())
        elif explicit is not None:
            raise FileNotFoundError(f"hyrec config file {path} does not exist")

        def pick(flag: str | None, env_name: str, section: str) -> str | None:
            if flag:
                return flag
            if env.get(env_name, "").strip():
                return env[env_name].strip()
            table = body.get(section, {})
            url = table.get("url") if isinstance(table, dict) else None
            if url is not None and not isinstance(url, str):
                raise ValueError(f"{path}: [{section}] url must be a string")
            return url or None

        chroma = body.get("chroma", {})
        process = chroma.get("process", True) if isinstance(chroma, dict) else True
        if env.get(PROCESS_ENV, "").strip():
            process = env[PROCESS_ENV].strip().lower() not in ("0", "false", "no", "off")
        elif not isinstance(process, bool):
            raise ValueError(f"{path}: [chroma] process must be true or false")
        return cls(
            pick(feedback_url, "HYREC_FEEDBACK_URL", "feedback"),
            pick(chroma_url, "HYREC_CHROMA_URL", "chroma"),
            process,
        )

    def item_store(self) -> StoreConfig | None:
        """The chromadb server's :class:`StoreConfig`, or None for the embedded store.

        Raises:
            ValueError: the URL is not ``http(s)://host[:port]``.
        """
        if not self.chroma_url:
            return None
        parts = urlsplit(self.chroma_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"chroma URL {self.chroma_url!r}: use http://host:port of a `chroma run` server"
            )
        port = parts.port or (443 if parts.scheme == "https" else 8000)
        return StoreConfig(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", show_progress=False
        )


def app_from_env() -> FastAPI:
    """An app factory for ``uvicorn --factory agent.serve.startup:app_from_env``.

    Reads ``HYREC_MODEL_DIR`` (required), ``HYREC_API_KEY``, ``HYREC_NO_AUTH=1`` with
    ``HYREC_HOST`` (loopback only), ``HYREC_LLM=0`` (serve without an LLM), and
    ``HYREC_FEEDBACK_URL`` / ``HYREC_CHROMA_URL`` / ``HYREC_CHROMA_PROCESS``
    (:class:`StoreSettings`).
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
        Path(model_dir),
        use_llm=os.environ.get("HYREC_LLM") != "0",
        stores=StoreSettings.resolve(),
    )
    from agent.serve.app import create_app

    return create_app(recommender, api_key=key, closing=(handle,), chat_agent=chat)


def open_model(
    model_dir: Path, *, use_llm: bool, stores: StoreSettings | None = None
) -> tuple[Recommender, Any, Callable[[Recommender], Any]]:
    """Load the model folder, with an LLM when ``use_llm`` and one can be reached or started,
    and the feedback database and item store of ``stores`` (default: the model folder's own; its
    embedded item store in a child process unless ``stores.chroma_process`` is False).

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
        stores = stores or StoreSettings()
        with own_process_default(stores.chroma_process):
            recommender = Recommender.load(
                model_dir, llm=llm, feedback_url=stores.feedback_url, item_store=stores.item_store()
            )
        warm_up(recommender)  # every path's one-time costs, before the server answers
        log.info("%d objects frozen out of the garbage collector", freeze_heap())
    except BaseException:
        if handle is not None:
            handle.close()
        raise
    return recommender, handle, lambda r: ChatAgent(r, chat_model=chat_model)
