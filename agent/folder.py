"""The model folder: what :meth:`agent.api.Recommender.save` writes and
:meth:`~agent.api.Recommender.load` reads.

A folder holds the fitted hybrid (``hybrid.json`` and its components, see
:mod:`retrieval.saved`), the catalogue snapshot (``data/``), ``recommender.json`` (serving config
and the pseudonym salt) and, with the default SQLite store, ``feedback.sqlite3``. With a shared
PostgreSQL store the feedback stays in the database and the replicas follow its change log
(:mod:`agent.replica`).
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from agent import replica
from agent.config import RecommenderConfig
from agent.feedback import FeedbackStore, open_store
from encoders.text import TextEncoder, TextEncoderConfig
from retrieval.hybrid import HybridRecommender
from retrieval.store import ItemStore, StoreConfig

if TYPE_CHECKING:
    from agent.api import Recommender
    from agent.llm import LLM

log = logging.getLogger(__name__)

CONFIG_FILE = "recommender.json"
FEEDBACK_FILE = "feedback.sqlite3"


def save(model: Recommender, path: Path) -> None:
    """Write the model folder and move the feedback store into it (see
    :meth:`agent.api.Recommender.save`)."""
    path = Path(path)
    target = path / FEEDBACK_FILE
    if getattr(model.store, "shared", False):  # the feedback stays in the shared database
        with model._lock.write():
            model.hybrid.save(path)
            body = {"config": model.config.to_dict(), "salt": model._salt}
            (path / CONFIG_FILE).write_text(json.dumps(body, indent=2))
            model.model_dir = path
        return
    with model._lock.write():
        # A folder that was served already holds feedback: a refit into it keeps those events
        # (and the salt their pseudonyms were made with) instead of failing half-way through.
        adopt = target.exists() and (
            model.store.path is None or target.resolve() != model.store.path.resolve()
        )
        if adopt and (model.store.count() or model.store.items()):
            raise FileExistsError(
                f"{target}: the folder already holds feedback and so does this model; save "
                "to another folder (nothing was written)"
            )
        if adopt and (path / CONFIG_FILE).is_file():
            model._salt = json.loads((path / CONFIG_FILE).read_text()).get("salt", model._salt)
        model.hybrid.save(path)
        body = {"config": model.config.to_dict(), "salt": model._salt}
        (path / CONFIG_FILE).write_text(json.dumps(body, indent=2))
        if adopt:
            model.store.close()
            model.store = FeedbackStore(
                target, synchronous=model.config.synchronous, wait=model.config.store_wait
            )
        else:
            model.store.backup_to(target)
        model.model_dir = path


def load(
    cls: type[Recommender],
    path: Path,
    llm: LLM | None = None,
    *,
    encoder: TextEncoder | None = None,
    feedback_path: Path | None = None,
    feedback_url: str | None = None,
    item_store: StoreConfig | None = None,
) -> Recommender:
    """Open a model folder (see :meth:`agent.api.Recommender.load` for the arguments)."""
    path = Path(path)
    hybrid = HybridRecommender.load(path)
    file = path / CONFIG_FILE
    if file.is_file():
        body = json.loads(file.read_text())
        try:
            config = RecommenderConfig.from_dict(body.get("config", {}), hybrid.config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{file}: {e}") from None
        salt = body["salt"]
    else:  # a folder from `hyrec fit`: keep a salt so pseudonyms stay stable across restarts
        config, salt = RecommenderConfig(hybrid=hybrid.config), secrets.token_hex(16)
        file.write_text(json.dumps({"config": config.to_dict(), "salt": salt}, indent=2))
    encoder = encoder or TextEncoder(
        TextEncoderConfig(model=config.text_model, show_progress=False)
    )
    if item_store is not None and hybrid.facts.embeddings is not None:
        hybrid.store = ItemStore(item_store)
    store = open_store(
        feedback_url or feedback_path or path / FEEDBACK_FILE,
        synchronous=config.synchronous,  # type: ignore[arg-type]
        wait=config.store_wait,
        pool_size=config.store_pool,
    )
    try:
        model = cls(hybrid, encoder, config, store, salt=salt, llm=llm, model_dir=path)
        if getattr(store, "shared", False):
            model.sync_shared()  # every upsert and deletion so far, then follow the log
            store.follow(model.sync_shared, config.sync_interval)
        else:
            stored = store.items()
            if stored:
                added = model._apply_items(stored, strict=False)
                log.info("replayed %d catalogue upserts from %s", len(added), store.path)
        if item_store is not None and hybrid.store is not None:
            replica.sync_item_store(hybrid, item_store)
    except BaseException:
        store.close()
        raise
    return model
