"""Prompt templates as data: versioned YAML files rendered strictly with Jinja2.

Each ``prompts/<name>.yaml`` holds::

    name: profile            # must match the file name
    version: "1"             # bump when the wording changes; caches key on it
    description: what the prompt is for
    system: |                # Jinja2 template of the system message
      ...
    user: |                  # Jinja2 template of the user message
      ...

Templates render with :class:`jinja2.StrictUndefined`, so a missing variable is an error rather than
an empty string, and without HTML autoescaping (the output is a chat prompt, not a web page). The
``data`` filter turns untrusted text (catalogue titles and descriptions, user text) into a JSON
string literal, so it reaches the model as quoted data that cannot close the quotes around it or
forge a section header (as smolagents does, prompts live in YAML beside the code and ship as
package data; see ``[tool.setuptools.package-data]``).

This package depends on nothing else in hyrec; ``agent`` turns a :class:`RenderedPrompt` into
chat messages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import yaml

__all__ = ["PromptError", "PromptTemplate", "RenderedPrompt", "available", "load"]

_REQUIRED = ("name", "version", "system", "user")


class PromptError(ValueError):
    """A template file is missing or malformed, or rendering it lacked a variable."""


def _data(value: Any) -> str:
    """Untrusted text as a JSON string literal: quotes, newlines and control characters escaped."""
    return json.dumps("" if value is None else str(value), ensure_ascii=False)


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - chat prompts, not HTML; untrusted text goes through |data
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["data"] = _data


@dataclass(frozen=True)
class RenderedPrompt:
    """The two messages of a rendered template."""

    system: str
    user: str


@dataclass(frozen=True, eq=False)
class PromptTemplate:
    """One loaded template.

    Attributes:
        name: File stem, e.g. ``"profile"``.
        version: The declared version string.
        digest: sha256 (first 12 hex digits) of the file's bytes: changes whenever the text does,
            even if someone forgets to bump ``version``.
        description: What the prompt is for.
    """

    name: str
    version: str
    digest: str
    description: str
    _system: jinja2.Template
    _user: jinja2.Template

    @property
    def id(self) -> str:
        """``name@version+digest``: what caches and reports key on."""
        return f"{self.name}@{self.version}+{self.digest}"

    def render(self, **variables: Any) -> RenderedPrompt:
        """Both messages with ``variables`` filled in.

        Raises:
            PromptError: a variable the template uses was not given.
        """
        try:
            return RenderedPrompt(
                self._system.render(**variables).strip(), self._user.render(**variables).strip()
            )
        except jinja2.UndefinedError as e:
            raise PromptError(f"prompt {self.id}: {e.message}") from e


def available() -> list[str]:
    """Names of the templates shipped in this package."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


@cache
def load(name: str) -> PromptTemplate:
    """The template ``prompts/<name>.yaml`` (cached per process).

    Raises:
        PromptError: no such template, or the file is not a valid template.
    """
    resource = resources.files(__name__).joinpath(f"{name}.yaml")
    if not resource.is_file():
        raise PromptError(f"no prompt template {name!r}; available: {available()}")
    raw = resource.read_bytes()
    try:
        body = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PromptError(f"prompts/{name}.yaml is not valid YAML: {e}") from e
    if not isinstance(body, dict):
        raise PromptError(f"prompts/{name}.yaml must be a mapping with keys {list(_REQUIRED)}")
    missing = [k for k in _REQUIRED if not body.get(k)]
    if missing:
        raise PromptError(f"prompts/{name}.yaml lacks {missing}")
    if body["name"] != name:
        raise PromptError(f"prompts/{name}.yaml declares name {body['name']!r}; expected {name!r}")
    try:
        system, user = _ENV.from_string(body["system"]), _ENV.from_string(body["user"])
    except jinja2.TemplateSyntaxError as e:
        raise PromptError(f"prompts/{name}.yaml line {e.lineno}: {e.message}") from e
    return PromptTemplate(
        name=name,
        version=str(body["version"]),
        digest=hashlib.sha256(raw).hexdigest()[:12],
        description=str(body.get("description", "")),
        _system=system,
        _user=user,
    )
