"""What may reach an LLM prompt: pseudonymous user keys and scrubbed free text.

Prompts never carry a raw user id: stages key caches and logs by :func:`pseudonymize` (a salted
HMAC-SHA256, so the mapping cannot be reversed without the salt), and every piece of free text that
goes into a prompt — catalogue titles and descriptions, a user's request — passes through
:func:`scrub`, which replaces e-mail addresses, phone numbers, URLs and long digit runs (card,
account or id numbers) with placeholders. :func:`prompt_text` adds the length cap and whitespace
clean-up the prompts use; the templates then quote the result as a JSON string (``prompts``'
``data`` filter).
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["pseudonymize", "prompt_text", "scrub"]

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s\"'<>]+", re.IGNORECASE)
# a phone number: optional country code, then groups of digits with separators, 7–15 digits
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,8}){1,4}(?!\w)"
)
_LONG_DIGITS = re.compile(r"\d{6,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACE = re.compile(r"\s+")


def pseudonymize(user_id: str, salt: str) -> str:
    """A stable pseudonym ``"u_<16 hex digits>"`` for ``user_id`` under ``salt``.

    The same (id, salt) always gives the same pseudonym; without the salt the id cannot be
    recovered (HMAC-SHA256). Use a secret, per-installation salt: with a known salt a small id space
    could be enumerated.

    Raises:
        ValueError: an empty salt.
    """
    if not salt:
        raise ValueError("pseudonymize needs a non-empty salt")
    digest = hmac.new(salt.encode("utf-8"), str(user_id).encode("utf-8"), hashlib.sha256)
    return "u_" + digest.hexdigest()[:16]


def _is_years(match: str) -> bool:
    """``"1977 1980"`` or ``"1995-1996"``: runs of plausible years, common in titles, not phones."""
    groups = re.findall(r"\d+", match)
    return all(len(g) == 4 and 1870 <= int(g) <= 2100 for g in groups)


def _is_small_numbers(match: str) -> bool:
    """``"10 20 30 40"``: a list of one- or two-digit numbers, not a phone number."""
    return all(len(g) <= 2 for g in re.findall(r"\d+", match))


def _phone(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or digits > 15 or _is_years(text) or _is_small_numbers(text):
        return text
    return "[phone]"


def scrub(text: str) -> str:
    """``text`` with e-mails, URLs, phone numbers and digit runs of 6+ replaced by placeholders.

    Placeholders are ``[email]``, ``[url]``, ``[phone]`` and ``[number]``. Years and short numbers
    ("Toy Story (1995)", "Se7en", "2001: A Space Odyssey") are kept.
    """
    text = _EMAIL.sub("[email]", text)
    text = _URL.sub("[url]", text)
    text = _PHONE.sub(_phone, text)
    return _LONG_DIGITS.sub("[number]", text)


def prompt_text(text: str | None, max_chars: int = 200) -> str:
    """Untrusted text made fit for a prompt: scrubbed, control characters and runs of whitespace
    collapsed to one space, cut to ``max_chars`` (with "…")."""
    if not text:
        return ""
    clean = _SPACE.sub(" ", _CONTROL.sub(" ", scrub(str(text)))).strip()
    if len(clean) > max_chars:
        clean = clean[: max_chars - 1].rstrip() + "…"
    return clean
