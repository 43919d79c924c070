"""The interest-profile types: what the LLM must return (:class:`LLMProfile`, validated), what
callers get (:class:`InterestProfile`) and what a profile is built from (:class:`ProfileEvent`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.stages.privacy import prompt_text

FALLBACK_VERSION = "fallback@1"  # InterestProfile.prompt_version of deterministic profiles
_MAX_PHRASE = 80  # characters per like/dislike/constraint phrase
_MAX_SENTENCE = 300  # characters of summary / recent_shift


def _phrases(value: Any, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("must be a list of short phrases")
    out: list[str] = []
    for v in value:
        if not isinstance(v, str | int | float):
            raise ValueError("must be a list of short phrases")
        text = prompt_text(str(v), _MAX_PHRASE)
        if text and text.lower() not in {o.lower() for o in out}:
            out.append(text)
    return out[:limit]


class LLMProfile(BaseModel):
    """The JSON object the profile prompt asks for (validated at the LLM trust boundary).

    Lenient where it costs nothing (a single string for a list, extra keys, too many phrases are
    cut), strict where it matters: ``likes`` and ``summary`` must say something.
    """

    model_config = ConfigDict(extra="ignore")

    likes: list[str] = Field(min_length=1)
    dislikes: list[str] = Field(default_factory=list)
    recent_shift: str = ""
    constraints: list[str] = Field(default_factory=list)
    summary: str = Field(min_length=1)

    @field_validator("likes", mode="before")
    @classmethod
    def _likes(cls, v: Any) -> list[str]:
        return _phrases(v, 5)

    @field_validator("dislikes", "constraints", mode="before")
    @classmethod
    def _short_lists(cls, v: Any) -> list[str]:
        return _phrases(v, 3)

    @field_validator("recent_shift", "summary", mode="before")
    @classmethod
    def _sentence(cls, v: Any) -> str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError("must be a string")
        return prompt_text(v, _MAX_SENTENCE)


#: Sent as ``json_schema`` (llama.cpp and vLLM turn it into a grammar; others get a hint).
PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "likes": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "minItems": 1,
            "maxItems": 5,
        },
        "dislikes": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
        "recent_shift": {"type": "string", "maxLength": 120},
        "constraints": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "maxItems": 3,
        },
        "summary": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "required": ["likes", "dislikes", "recent_shift", "constraints", "summary"],
}


class InterestProfile(BaseModel):
    """A user's interest profile, from the LLM or the deterministic fallback.

    Attributes:
        source: ``"llm"`` or ``"fallback"``.
        prompt_version: The prompt id (``name@version+digest``), or ``FALLBACK_VERSION``.
        model: The LLM that wrote it ("none" for a fallback).
        fallback_reason: Why the LLM's profile was not used (``None`` when it was, or when no LLM
            was configured).
    """

    model_config = ConfigDict(frozen=True)

    likes: list[str]
    dislikes: list[str]
    recent_shift: str
    constraints: list[str]
    summary: str
    source: Literal["llm", "fallback"]
    prompt_version: str
    model: str
    fallback_reason: str | None = None

    def text(self) -> str:
        """What gets embedded: likes, dislikes, recent shift, constraints and the summary."""
        parts = []
        if self.likes:
            parts.append("Likes: " + ", ".join(self.likes))
        if self.dislikes:
            parts.append("Dislikes: " + ", ".join(self.dislikes))
        if self.recent_shift:
            parts.append("Recently: " + self.recent_shift)
        if self.constraints:
            parts.append("Constraints: " + ", ".join(self.constraints))
        if self.summary:
            parts.append(self.summary)
        return ". ".join(p.rstrip(".") for p in parts)


@dataclass(frozen=True)
class ProfileEvent:
    """One item in a user's history, as the profile prompt sees it."""

    title: str
    attributes: Mapping[str, Any]
    rating: float | None
    timestamp: int
