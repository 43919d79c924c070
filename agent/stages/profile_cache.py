"""The interest-profile cache: bounded (LRU), in memory and on disk, erasable per user.

An entry is one profile *variant* of one pseudonymous user (the user's own history, or that
history plus items a request named) and is keyed by (pseudonym, variant, history fingerprint,
prompt id, model); a lookup with any other key misses, so a profile is recomputed only when the
history, the prompt or the model changed. The pseudonym is a salted HMAC of the user key
(:func:`agent.stages.privacy.pseudonymize`); the salt is a random secret kept in
``<cache_dir>/.salt`` (created once, atomically), so raw user ids never reach a file name or a
prompt. Files are ``<pseudonym>.<variant>.json``, written to a temporary name and renamed into
place; a cache that cannot be read or written costs a recomputation, never a request.

* **Bounded**: at most ``max_entries`` profiles in memory and ``max_files`` on disk; the least
  recently used go first.
* **Erasure**: :meth:`ProfileCache.forget` drops every variant of the user, in memory and on disk,
  and bumps the user's generation: a profile that was being computed while the user was forgotten
  is not written back (:meth:`put` with the generation read before the computation).
* **Staleness**: a feedback event drops the user's profiles this process holds
  (:meth:`ProfileCache.drop_stale`, in O(the user's variants)); an entry built from an older
  history is never served anyway, since its key holds the history's fingerprint.
* **Shared** (``entries=``, server replicas on one PostgreSQL): entries are kept in the shared
  store (:class:`SharedEntries`, e.g. :class:`agent.feedback.postgres.PostgresFeedbackStore`)
  instead of files, so a profile computed by one replica is served by all; files already in
  ``cache_dir`` (written by a batch job) are still read. The store refuses an entry for a user
  forgotten moments ago on any replica, and a store that cannot answer costs a recomputation,
  never a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError

from agent.stages.privacy import pseudonymize

if TYPE_CHECKING:
    from agent.stages.profiles import InterestProfile

log = logging.getLogger(__name__)

Key = tuple[str, ...]  # (pseudonym, variant, fingerprint, prompt id, model)
MAX_ENTRIES = 10_000  # profiles kept in memory (~2 KB each)
MAX_FILES = 100_000  # profile files kept on disk


class SharedEntries(Protocol):
    """Where replicas keep profile entries (:class:`agent.feedback.protocol.SharedStore`)."""

    def get_profile(self, pseudonym: str, variant: str) -> tuple[str, str] | None: ...

    def put_profile(self, pseudonym: str, variant: str, key: str, body: str) -> bool: ...

    def drop_profiles(self, pseudonym: str) -> int: ...


class ProfileCache:
    """Profiles by key (module doc); ``cache_dir=None`` keeps them in memory only (or in
    ``entries``, the store replicas share)."""

    def __init__(
        self,
        cache_dir: Path | None,
        salt: str | None = None,
        *,
        max_entries: int = MAX_ENTRIES,
        max_files: int = MAX_FILES,
        entries: SharedEntries | None = None,
    ) -> None:
        if max_entries < 1 or max_files < 1:
            raise ValueError("ProfileCache: max_entries and max_files must be at least 1")
        self.cache_dir = cache_dir
        self.entries = entries
        self.max_entries = max_entries
        self.max_files = max_files
        self._salt = salt or self._load_salt()
        self._memory: OrderedDict[tuple[str, str], tuple[Key, InterestProfile]] = OrderedDict()
        self._variants: dict[str, set[str]] = {}  # pseudonym → its variants in _memory
        self._generation: dict[str, int] = {}
        self._files: OrderedDict[str, None] | None = None  # file names, least recently used first
        self._lock = threading.Lock()

    def pseudonym(self, user_key: str) -> str:
        return pseudonymize(user_key, self._salt)

    def generation(self, pseudonym: str) -> int:
        """Bumped by every :meth:`forget` of the user."""
        with self._lock:
            return self._generation.get(pseudonym, 0)

    def get(self, key: Key) -> InterestProfile | None:
        slot = key[:2]
        with self._lock:
            held = self._memory.get(slot)
            if held is not None and held[0] == key:
                self._memory.move_to_end(slot)
                return held[1]
        found = self._read_shared(key)
        if found is None:
            found = self._read_disk(key)
        if found is not None:
            self._remember(key, found)
        return found

    def put(self, key: Key, profile: InterestProfile, generation: int | None = None) -> bool:
        """Store ``profile``; with ``generation``, only if the user was not forgotten since it
        was read (here, or — with shared entries — moments ago on any replica). Returns whether
        it was stored."""
        with self._lock:
            if generation is not None and self._generation.get(key[0], 0) != generation:
                return False
        if self.entries is not None:
            if self._write_shared(key, profile) is False:  # refused: forgotten moments ago
                return False
        else:
            self._write_disk(key, profile)
        self._remember(key, profile)
        return True

    def forget(self, pseudonym: str) -> int:
        """Drop every variant of the user, in memory and on disk; returns how many were dropped."""
        dropped = len(self._drop_from_memory(pseudonym))
        if self.entries is not None:
            try:
                dropped += self.entries.drop_profiles(pseudonym)
            except Exception as e:  # the user's deletion itself drops them in its transaction
                log.warning("could not drop shared profile entries: %s", e)
        if self.cache_dir is not None and self.cache_dir.is_dir():
            dropped += sum(self._remove_file(p) for p in self.cache_dir.glob(f"{pseudonym}.*json"))
        return dropped

    def drop_stale(self, pseudonym: str) -> None:
        """After the user's history changed (a feedback event): drop the user's profiles from
        memory and the files of those variants and of the user's own history, so the next
        request rebuilds them, in O(the user's variants); :meth:`forget` scans the whole cache.
        Not an erasure: a file of another variant that another process wrote, or a replica's
        shared entry, stays until it is overwritten or evicted, and is never served, since its
        key holds the old history's fingerprint.

        Raises:
            OSError: a file could not be removed (the caller's event is stored already).
        """
        variants = self._drop_from_memory(pseudonym)
        if self.cache_dir is None or self.entries is not None:
            return
        for variant in variants | {""}:
            self._remove_file(self._path((pseudonym, variant)))

    def __len__(self) -> int:
        return len(self._memory)

    # ---- internals ------------------------------------------------------------------------------
    def _drop_from_memory(self, pseudonym: str) -> set[str]:
        """Bump the user's generation and drop their profiles from memory; their variants."""
        with self._lock:
            self._generation[pseudonym] = self._generation.get(pseudonym, 0) + 1
            variants = self._variants.pop(pseudonym, set())
            for variant in variants:
                del self._memory[(pseudonym, variant)]
        return variants

    def _remove_file(self, path: Path) -> bool:
        """Delete one profile file and its place in the LRU; whether it was there. Raises
        OSError (other than a missing file)."""
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            removed = False
        with self._lock:
            if self._files is not None:
                self._files.pop(path.name, None)
        return removed

    def _remember(self, key: Key, profile: InterestProfile) -> None:
        with self._lock:
            self._memory[key[:2]] = (key, profile)
            self._memory.move_to_end(key[:2])
            self._variants.setdefault(key[0], set()).add(key[1])
            while len(self._memory) > self.max_entries:
                (pseudonym, variant), _ = self._memory.popitem(last=False)
                held = self._variants[pseudonym]
                held.discard(variant)
                if not held:
                    del self._variants[pseudonym]

    def _path(self, key: Key) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{key[0]}.{key[1] or 'own'}.json"

    def _load_salt(self) -> str:
        if self.cache_dir is None:
            return secrets.token_hex(16)
        path = self.cache_dir / ".salt"
        if not path.is_file():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_text(secrets.token_hex(16))
            try:
                os.link(tmp, path)  # atomic, and never replaces a salt another process wrote
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def _read_shared(self, key: Key) -> InterestProfile | None:
        from agent.stages.profiles import InterestProfile

        if self.entries is None:
            return None
        try:
            found = self.entries.get_profile(key[0], key[1] or "own")
            if found is None or tuple(json.loads(found[0])) != key:
                return None
            return InterestProfile.model_validate_json(found[1])
        except Exception as e:  # unavailable or unreadable: recompute
            log.warning("ignoring the shared profile cache: %s", e)
            return None

    def _write_shared(self, key: Key, profile: InterestProfile) -> bool | None:
        """Whether the store took the entry; None when it could not answer (memory only)."""
        assert self.entries is not None
        try:
            return self.entries.put_profile(
                key[0], key[1] or "own", json.dumps(list(key)), profile.model_dump_json()
            )
        except Exception as e:  # a cache that cannot be written costs a recomputation
            log.warning("could not write the shared profile cache: %s", e)
            return None

    def _read_disk(self, key: Key) -> InterestProfile | None:
        from agent.stages.profiles import InterestProfile

        if self.cache_dir is None:
            return None
        path = self._path(key)
        try:
            body = json.loads(path.read_text())
            if tuple(body["key"]) != key:
                return None  # the history, prompt or model changed: refresh
            return InterestProfile.model_validate(body["profile"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, ValidationError) as e:
            log.warning("ignoring unreadable profile cache %s: %s", path.name, e)
            return None

    def _write_disk(self, key: Key, profile: InterestProfile) -> None:
        if self.cache_dir is None:
            return
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": list(key), "profile": profile.model_dump()}))
            tmp.replace(path)
            self._evict_files(path.name)
        except OSError as e:  # a cache that cannot be written costs a recomputation, not a request
            log.warning("could not write the profile cache %s: %s", path.name, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _evict_files(self, written: str) -> None:
        """Keep at most ``max_files`` profile files, removing the least recently written."""
        with self._lock:
            if self._files is None:  # first write of this process: what is there, oldest first
                found = sorted(self.cache_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
                self._files = OrderedDict((p.name, None) for p in found)
            self._files[written] = None
            self._files.move_to_end(written)
            doomed = []
            while len(self._files) > self.max_files:
                doomed.append(self._files.popitem(last=False)[0])
        for name in doomed:
            with contextlib.suppress(OSError):
                (self.cache_dir / name).unlink()
