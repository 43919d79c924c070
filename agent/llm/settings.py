"""Where hyrec finds its LLM: :class:`LLMSettings`, read from a TOML file and the environment.

Precedence, lowest first: the dataclass defaults, the ``[llm]`` section of a TOML config file, then
``HYREC_LLM_*`` environment variables. The config file is the explicit path given, else
``$HYREC_CONFIG``, else ``<platformdirs user config>/hyrec/config.toml``
(``~/.config/hyrec/config.toml`` on Linux); a missing default file is not an error, a missing
explicit one is. Example::

    [llm]
    base_url = "http://gpu-box:8000/v1"   # vLLM, llama.cpp's server, or any OpenAI-compatible API
    model = "Qwen/Qwen2.5-7B-Instruct"
    timeout = 20

With no ``base_url`` hyrec runs the packaged SmolLM2 model itself (``backend = "auto"``, the
default): llama.cpp's server when llama-cpp-python is installed (the ``hyrec[llamacpp]`` extra,
:mod:`agent.llm.embedded`), else in-process with transformers
(:mod:`agent.llm.transformers_backend`). See :func:`agent.llm.connect.choose_backend`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs
import pydantic

#: "auto": base_url if set, else the embedded llama.cpp server if installed, else transformers;
#: "openai": base_url, else the embedded llama.cpp server (never transformers);
#: "transformers": in-process, whatever base_url says.
Backend = Literal["auto", "openai", "transformers"]
JsonFormat = Literal["auto", "json_schema", "json_object"]

ENV_PREFIX = "HYREC_LLM_"
CONFIG_ENV = "HYREC_CONFIG"  # path of the TOML config file, overriding the default location


def default_config_path() -> Path:
    """``<platformdirs user config>/hyrec/config.toml``."""
    return Path(platformdirs.user_config_dir("hyrec")) / "config.toml"


@dataclass(frozen=True)
class LLMSettings:
    """How to reach the LLM. Every field has an ``HYREC_LLM_<FIELD>`` environment variable."""

    base_url: str | None = None  # OpenAI API root, e.g. http://host:8000/v1; None: embedded server
    model: str = "smollm2"  # model name sent to the server (transformers: HF name/path/"smollm2")
    api_key: str = "none"  # bearer token; local servers ignore it
    timeout: float = 30.0  # seconds per call, including the wait for a free concurrency slot
    # calls in flight: 1 for llama-cpp-python's server, which runs one request at a time and keeps
    # working on calls a client gave up on (queued timeouts pile up); raise it for vLLM (batches)
    max_concurrency: int = 1
    # seconds a call waits for a free slot (within its timeout) before it is skipped as "LLM
    # busy" and its stage falls back: past the LLM's capacity, a request gets its deterministic
    # answer at once instead of queueing behind the LLM for its whole budget
    slot_wait: float = 0.5
    # "auto", "openai" (HTTP: base_url or the embedded llama.cpp server) or "transformers"
    # (in-process); see Backend above and agent.llm.connect.choose_backend
    backend: Backend = "auto"
    json_format: JsonFormat = "auto"  # json_schema calls: response_format flavour (openai_backend)

    def __post_init__(self) -> None:
        _SettingsModel.model_validate(_as_dict(self))

    def for_batch(self, concurrency: int) -> LLMSettings:
        """These settings for a batch job with ``concurrency`` calls in flight: that many slots,
        and a call queues for one up to its timeout (a batch wants answers, not the fast
        fallback a server gives past ``slot_wait``)."""
        return replace(
            self, max_concurrency=max(self.max_concurrency, concurrency), slot_wait=self.timeout
        )

    @classmethod
    def from_env(
        cls, config_file: Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> LLMSettings:
        """Defaults, overridden by the config file's ``[llm]`` section, then by ``HYREC_LLM_*``.

        Args:
            config_file: TOML file to read; ``None`` uses ``$HYREC_CONFIG`` or the default path.
            environ: Environment to read (default ``os.environ``); tests pass a dict.

        Raises:
            FileNotFoundError: An explicitly named config file does not exist.
            ValueError: A value in the file or the environment is invalid (the message names it).
        """
        env = os.environ if environ is None else environ
        settings = cls()
        path, explicit = _config_path(config_file, env)
        if path.exists():
            settings = settings.merged(_read_file(path), source=str(path))
        elif explicit:
            raise FileNotFoundError(f"hyrec config file {path} does not exist")
        from_env = {
            f.name: env[ENV_PREFIX + f.name.upper()]
            for f in fields(cls)
            if env.get(ENV_PREFIX + f.name.upper(), "").strip()
        }
        return settings.merged(from_env, source="environment (HYREC_LLM_*)")

    def merged(self, values: Mapping[str, Any], *, source: str = "overrides") -> LLMSettings:
        """A copy with ``values`` (raw strings or typed values) validated and applied."""
        if not values:
            return self
        try:
            model = _SettingsModel.model_validate({**_as_dict(self), **values})
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'llm'}: {err['msg']}"
                for err in e.errors()
            )
            raise ValueError(f"invalid LLM settings from {source}: {problems}") from None
        return replace(self, **{k: getattr(model, k) for k in values})


class _SettingsModel(pydantic.BaseModel):
    """Validation of settings crossing the trust boundary (config file, environment)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    base_url: str | None
    model: str = pydantic.Field(min_length=1)
    api_key: str
    timeout: float = pydantic.Field(gt=0)
    max_concurrency: int = pydantic.Field(ge=1)
    slot_wait: float = pydantic.Field(ge=0)
    backend: Backend
    json_format: JsonFormat

    @pydantic.field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {value!r})")
        return value


def _as_dict(settings: LLMSettings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def _config_path(config_file: Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    if config_file is not None:
        return Path(config_file).expanduser(), True
    if env.get(CONFIG_ENV, "").strip():
        return Path(env[CONFIG_ENV]).expanduser(), True
    return default_config_path(), False


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"hyrec config file {path} is not valid TOML: {e}") from None
    section = data.get("llm", {})
    if not isinstance(section, dict):
        raise ValueError(f"hyrec config file {path}: [llm] must be a table")
    return section
