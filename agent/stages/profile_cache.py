"""The interest-profile cache: one entry per pseudonymous user, in memory and on disk.

An entry is keyed by (pseudonym, history fingerprint, prompt id, model); a lookup with any other
key misses, so a profile is recomputed only when the history, the prompt or the model changed.
The pseudonym is a salted HMAC of the user key (:func:`agent.stages.privacy.pseudonymize`); the
salt is a random secret kept in ``<cache_dir>/.salt`` (created once, atomically), so raw user ids
never reach a file name or a prompt. Files are written to a temporary name and renamed into place;
a cache that cannot be read or written costs a recomputation, never a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agent.stages.privacy import pseudonymize

if TYPE_CHECKING:
    from agent.stages.profiles import InterestProfile

log = logging.getLogger(__name__)

Key = tuple[str, ...]  # (pseudonym, fingerprint, prompt id, model)


class ProfileCache:
    """Profiles by key (module doc); ``cache_dir=None`` keeps them in memory only."""

    def __init__(self, cache_dir: Path | None, salt: str | None = None) -> None:
        self.cache_dir = cache_dir
        self._salt = salt or self._load_salt()
        self._memory: dict[str, tuple[Key, InterestProfile]] = {}  # pseudonym -> (key, profile)
        self._lock = threading.Lock()

    def pseudonym(self, user_key: str) -> str:
        return pseudonymize(user_key, self._salt)

    def get(self, key: Key) -> InterestProfile | None:
        with self._lock:
            held = self._memory.get(key[0])
        if held is not None and held[0] == key:
            return held[1]
        found = self._read_disk(key)
        if found is not None:
            with self._lock:
                self._memory[key[0]] = (key, found)
        return found

    def put(self, key: Key, profile: InterestProfile) -> None:
        with self._lock:
            self._memory[key[0]] = (key, profile)
        self._write_disk(key, profile)

    def forget(self, pseudonym: str) -> None:
        """Drop the user's entry, in memory and on disk."""
        with self._lock:
            self._memory.pop(pseudonym, None)
        if self.cache_dir is not None:
            (self.cache_dir / f"{pseudonym}.json").unlink(missing_ok=True)

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

    def _read_disk(self, key: Key) -> InterestProfile | None:
        from agent.stages.profiles import InterestProfile

        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key[0]}.json"
        try:
            body = json.loads(path.read_text())
            if tuple(body["key"]) != key:
                return None  # the history, prompt or model changed: refresh
            return InterestProfile.model_validate(body["profile"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, ValidationError) as e:
            log.warning("ignoring unreadable profile cache %s: %s", path, e)
            return None

    def _write_disk(self, key: Key, profile: InterestProfile) -> None:
        if self.cache_dir is None:
            return
        path = self.cache_dir / f"{key[0]}.json"
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": list(key), "profile": profile.model_dump()}))
            tmp.replace(path)
        except OSError as e:  # a cache that cannot be written costs a recomputation, not a request
            log.warning("could not write the profile cache %s: %s", path, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
