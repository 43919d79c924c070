"""The in-process LLM backend: a Hugging Face transformers causal LM behind :class:`agent.llm.LLM`.

The embedded default when llama-cpp-python is not installed (a plain ``pip install`` needs no
compiler; see :func:`agent.llm.connect.choose_backend`), and for hosts with a GPU but no inference
server. It renders the
conversation with the model's chat template, generates greedily (``temperature=0``) or by sampling,
and returns per-token log-probabilities computed from the raw logits. ``json_schema`` is only a
hint here (a system-prompt instruction): there is no constrained decoding, callers validate anyway.

``model`` is a Hugging Face name or folder, a ``.gguf`` file, or ``"smollm2"`` for the packaged
SmolLM2-135M-Instruct GGUF. Loading a GGUF through transformers takes about 30 s (gguf's
pure-Python reader), so a GGUF is converted once to a plain safetensors folder cached under
``<platformdirs user cache>/hyrec/models/<name>-<sha256 prefix>`` and loaded from there afterwards
(about 0.3 s). Converting needs the ``gguf`` and ``accelerate`` packages;
``python -m agent.llm.transformers_backend`` converts ahead of time (``hyrec demo`` runs it in the
background while it fits). Loading and converting are quiet: no "Loading weights" progress bars
(they would land in the middle of a chat prompt).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import platformdirs

from agent.llm import (
    Completion,
    LLMBusy,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    check_arguments,
)
from agent.llm.embedded import packaged_gguf
from agent.llm.jsonparse import normalise_json

log = logging.getLogger(__name__)

PACKAGED_MODEL = "smollm2"  # TransformersConfig.model value meaning the packaged SmolLM2 GGUF
_JSON_HINT = "Reply with one JSON value only, no prose, that validates against this JSON schema:\n"


def default_model_cache() -> Path:
    """``<platformdirs user cache>/hyrec/models``."""
    return Path(platformdirs.user_cache_dir("hyrec")) / "models"


def cpu_threads() -> int:
    """torch threads for generating on CPU: all cores but one (hyrec's own work), 1 to 8 — the
    embedded llama.cpp server's rule (:meth:`agent.llm.embedded.EmbeddedServerConfig.threads`).
    On the 2-core machines one thread was the faster under load (eval/results/llm_backends.md)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No transformers / huggingface_hub progress bars or info chatter while a model loads."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from huggingface_hub.utils import enable_progress_bars as enable_hub_bars
    from transformers.utils import logging as hf_logging

    bars, hub_bars = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if hub_bars:
            enable_hub_bars()


@dataclass(frozen=True)
class TransformersConfig:
    """Which model to load in-process, and where it runs."""

    model: str = PACKAGED_MODEL  # HF name or folder, a .gguf file, or "smollm2" (packaged GGUF)
    device: str | None = None  # None: "cuda" when available, else "cpu"
    dtype: str | None = None  # torch dtype name; None: float32 on CPU, bfloat16 on CUDA
    timeout: float = 30.0  # default seconds per call (generation stops and LLMTimeout is raised)
    slot_wait: float = 0.5  # longest wait for the one generation slot, then LLMBusy
    num_threads: int | None = None  # torch CPU threads (process-wide); None: leave torch's setting
    cache_dir: Path | None = None  # converted GGUF models; None: default_model_cache()


def convert_gguf(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """A safetensors copy of a GGUF model, converted on first use and cached; returns its folder.

    Raises:
        LLMUnavailable: ``gguf``/``accelerate`` are missing or the file cannot be converted.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise LLMUnavailable(f"GGUF model file {gguf_path} does not exist")
    target = conversion_folder(gguf_path, cache_dir)
    if (target / "config.json").exists():
        return target
    with _lock(target):  # a second converter (e.g. the demo's background one) waits, then reuses
        if (target / "config.json").exists():
            return target
        # transformers' GGUF reader draws its own tqdm bar on stderr ("Converting and
        # de-quantizing GGUF tensors"), which no setting turns off; log handlers keep their stream
        with quiet_loading(), contextlib.redirect_stderr(io.StringIO()):
            return _convert(gguf_path, target)


@contextmanager
def _lock(target: Path) -> Iterator[None]:
    """An exclusive lock on converting into ``target`` (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: converters may race; the atomic rename keeps it safe
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def conversion_folder(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """Where :func:`convert_gguf` keeps (or will keep) the safetensors copy of ``gguf_path``."""
    digest = _sha256(Path(gguf_path))[:12]
    return (cache_dir or default_model_cache()) / f"{Path(gguf_path).stem}-{digest}"


def needs_conversion(model: str = PACKAGED_MODEL, cache_dir: Path | None = None) -> bool:
    """Whether loading ``model`` would first convert a GGUF (~30 s): no cached copy yet."""
    if model.lower() == PACKAGED_MODEL:
        try:
            path = packaged_gguf()
        except LLMUnavailable:
            return False  # nothing to convert; loading will say what is missing
    elif model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            return False
    else:
        return False
    return not (conversion_folder(path, cache_dir) / "config.json").exists()


def _convert(gguf_path: Path, target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors under %s (once, ~30 s)", gguf_path.name, target)
    start = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
    except (ImportError, ValueError) as e:
        raise LLMUnavailable(
            f"cannot load {gguf_path} with transformers ({e}); converting a GGUF file needs "
            "`pip install gguf accelerate`"
        ) from e
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain model.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        plain.save_pretrained(staging)
        staging.rename(target)  # atomic: a crash never leaves a half-written model folder
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s in %.1fs", gguf_path.name, time.perf_counter() - start)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    """What ``from_pretrained`` should load: GGUFs become their cached safetensors folder."""
    if model.lower() == PACKAGED_MODEL:
        return str(convert_gguf(packaged_gguf(), cache_dir))
    if model.lower().endswith(".gguf"):
        return str(convert_gguf(Path(model).expanduser(), cache_dir))
    return model


class TransformersLLM:
    """An :class:`agent.llm.LLM` running a transformers model in this process.

    Thread-safe: one generation at a time (a lock); a call waits for it at most ``slot_wait``
    (within its timeout), then is refused as :class:`LLMBusy`.
    """

    def __init__(self, config: TransformersConfig | None = None):
        self.config = config or TransformersConfig()
        self.name = self.config.model
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise LLMUnavailable(
                f"the transformers backend needs torch and transformers: {e}"
            ) from e
        start = time.perf_counter()
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = self.config.dtype or (
            "bfloat16" if self.device.startswith("cuda") else "float32"
        )
        source = resolve_model(self.config.model, self.config.cache_dir)
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(source)
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=getattr(torch, dtype_name)
                )
        except OSError as e:
            raise LLMUnavailable(f"cannot load model {self.config.model!r}: {e}") from e
        if self.tokenizer.chat_template is None:
            raise LLMUnavailable(f"model {self.config.model!r} has no chat template")
        self.model = model.to(self.device).eval()
        self._torch = torch
        self._lock = threading.Lock()
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s on %s in %.1fs", self.config.model, self.device, self.load_seconds)

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        logprobs: int = 0,
        timeout: float | None = None,
    ) -> Completion:
        """One assistant turn; see :meth:`agent.llm.LLM.complete`."""
        timeout = self.config.timeout if timeout is None else timeout
        check_arguments(messages, max_tokens, temperature, logprobs, timeout)
        start = time.perf_counter()
        wait = min(timeout, self.config.slot_wait)
        if not self._lock.acquire(timeout=wait):
            raise LLMBusy(
                f"LLM busy: the in-process model was generating for another call for {wait:.2f} s "
                "([llm] slot_wait)"
            )
        try:
            return self._generate(
                messages, max_tokens, temperature, json_schema, logprobs, start, timeout
            )
        except (LLMError, ValueError):
            raise
        except RuntimeError as e:  # CUDA out of memory and other torch failures
            raise LLMError(f"generation failed: {e}") from e
        except jinja2.TemplateError as e:  # e.g. a chat template that rejects system messages
            raise LLMError(f"the model's chat template rejected the conversation: {e}") from e
        finally:
            self._lock.release()

    def _generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        logprobs: int,
        start: float,
        timeout: float,
    ) -> Completion:
        from transformers import MaxTimeCriteria, StoppingCriteriaList

        torch = self._torch
        chat = _with_schema_hint(messages, json_schema)
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        ).to(self.device)
        prompt_len = int(inputs["input_ids"].shape[1])
        remaining = timeout - (time.perf_counter() - start)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        eos = self.model.generation_config.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                return_dict_in_generate=True,
                output_logits=logprobs > 0,
                stopping_criteria=StoppingCriteriaList([MaxTimeCriteria(max(remaining, 0.0))]),
                pad_token_id=self.tokenizer.pad_token_id or _first(eos),
                **sampling,
            )
        seconds = time.perf_counter() - start
        if seconds > timeout:
            raise LLMTimeout(f"generation ran past {timeout:.1f}s")
        ids = out.sequences[0, prompt_len:].tolist()
        stops = {eos} if isinstance(eos, int) else set(eos or ())
        n = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        ids = ids[:n]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if json_schema is not None:
            text = normalise_json(text)
        tokens = lps = top = None
        if logprobs > 0:
            tokens, lps, top = self._logprobs(out.logits[:n], ids, logprobs)
        return Completion(
            text=text,
            model=self.name,
            seconds=seconds,
            tokens=tokens,
            logprobs=lps,
            top_logprobs=top,
            usage={"prompt_tokens": prompt_len, "completion_tokens": len(ids)},
        )

    def _logprobs(
        self, logits: Sequence[Any], ids: list[int], k: int
    ) -> tuple[tuple[str, ...], tuple[float, ...], tuple[Mapping[str, float], ...]]:
        torch, decode = self._torch, self.tokenizer.decode
        tokens, values, tops = [], [], []
        for step, token_id in zip(logits, ids, strict=True):
            logp = torch.log_softmax(step[0].float(), dim=-1)  # (V,) raw logits: model's own dist.
            best = torch.topk(logp, k)
            tokens.append(decode([token_id]))
            values.append(float(logp[token_id]))
            alternatives: dict[str, float] = {}
            for value, alt in zip(best.values.tolist(), best.indices.tolist(), strict=True):
                alternatives.setdefault(decode([alt]), value)
            tops.append(alternatives)
        return tuple(tokens), tuple(values), tuple(tops)


def _first(token_ids: int | Sequence[int] | None) -> int | None:
    if token_ids is None or isinstance(token_ids, int):
        return token_ids
    return token_ids[0] if token_ids else None


def _with_schema_hint(
    messages: Sequence[Message], json_schema: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    if json_schema is None:
        return chat
    hint = _JSON_HINT + json.dumps(json_schema, separators=(",", ":"))
    if chat[0]["role"] == "system":
        chat[0] = {"role": "system", "content": f"{chat[0]['content']}\n\n{hint}"}
    else:
        chat.insert(0, {"role": "system", "content": hint})
    return chat


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.llm.transformers_backend [MODEL]``: convert (and cache) a GGUF model now,
    so the first LLM call does not wait for it; exit code 1 (with the reason) if it cannot."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(resolve_model(args[0] if args else PACKAGED_MODEL))
    except LLMUnavailable as e:
        print(f"cannot convert: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
