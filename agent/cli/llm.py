"""``hyrec llm``: serve an OpenAI-compatible LLM in the foreground, or check the configured one.

``hyrec llm serve`` runs llama.cpp's server (llama-cpp-python) with a GGUF model, by default the
packaged SmolLM2-135M-Instruct; on a host with a CUDA GPU and vLLM installed (``hyrec[vllm]``) it
runs ``vllm serve`` instead. Either way it prints the ``HYREC_LLM_BASE_URL`` to use.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Serve or check the LLM hyrec talks to."
)
console = Console()

Engine = Literal["llama.cpp", "vllm"]
PACKAGED = "smollm2"


def vllm_available() -> bool:
    """vLLM is installed and a CUDA GPU is visible."""
    if shutil.which("vllm") is None and importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_engine(engine: str) -> Engine:
    """``auto`` → vLLM when :func:`vllm_available`, else llama.cpp."""
    if engine == "auto":
        return "vllm" if vllm_available() else "llama.cpp"
    if engine in ("llama.cpp", "vllm"):
        return engine  # type: ignore[return-value]
    raise typer.BadParameter(f"unknown engine {engine!r}: use auto, llama.cpp or vllm")


def vllm_command(model: str, host: str, port: int, served_name: str) -> list[str]:
    """The ``vllm serve`` argv; the api_server module when the ``vllm`` script is missing."""
    if shutil.which("vllm"):
        head = ["vllm", "serve", model]
    else:
        head = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    return [*head, "--host", host, "--port", str(port), "--served-model-name", served_name]


def _gguf_for(model: str) -> Path | None:
    """The GGUF file llama.cpp should serve for ``model``; ``None`` for the packaged one."""
    if model.lower() == PACKAGED:
        return None
    path = Path(model).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise typer.BadParameter(
            f"llama.cpp serves GGUF files: {model!r} is not one. Give --model path/to/model.gguf, "
            "or --engine vllm for a Hugging Face model on a GPU host"
        )
    return path


def _print_usage(base_url: str, name: str) -> None:
    console.print(f"[bold green]LLM server[/] base_url: [bold]{base_url}[/]  model: {name}")
    console.print(f"  export HYREC_LLM_BASE_URL={base_url} HYREC_LLM_MODEL={name}")


@app.command("serve")
def serve(
    model: Annotated[
        str,
        typer.Option(
            help="'smollm2' (packaged), a .gguf file, or (vLLM) a Hugging Face name or folder."
        ),
    ] = PACKAGED,
    host: Annotated[
        str, typer.Option(help="Interface to bind; the server has no auth, keep it local.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    engine: Annotated[str, typer.Option(help="auto, llama.cpp or vllm.")] = "auto",
    n_ctx: Annotated[int, typer.Option(help="llama.cpp context window (tokens).")] = 2048,
    threads: Annotated[
        int | None, typer.Option(help="llama.cpp CPU threads (default: all cores up to 8).")
    ] = None,
) -> None:
    """Run an OpenAI-compatible LLM server in the foreground until Ctrl-C."""
    chosen = choose_engine(engine)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] serving on {host} without authentication")
    if chosen == "vllm":
        _serve_vllm(model, host, port)
    else:
        _serve_llama_cpp(model, host, port, n_ctx, threads)


def _serve_llama_cpp(model: str, host: str, port: int, n_ctx: int, threads: int | None) -> None:
    from agent.llm import LLMUnavailable
    from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig

    gguf = _gguf_for(model)
    alias = PACKAGED if gguf is None else gguf.stem
    config = EmbeddedServerConfig(
        model_path=gguf, alias=alias, host=host, port=port, n_ctx=n_ctx, n_threads=threads
    )
    server = EmbeddedServer(config)
    try:
        base_url = server.start()
    except LLMUnavailable as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    _print_usage(base_url, alias)
    console.print(f"  llama.cpp server pid {server.pid}; Ctrl-C stops it")
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    if code:
        console.print(f"[bold red]error:[/] the llama.cpp server exited with code {code}")
        raise typer.Exit(code=1)


def _serve_vllm(model: str, host: str, port: int) -> None:
    name = model
    if model.lower() == PACKAGED or model.lower().endswith(".gguf"):
        from agent.llm import LLMUnavailable
        from agent.llm.transformers_backend import resolve_model

        name = PACKAGED if model.lower() == PACKAGED else Path(model).stem
        try:
            model = resolve_model(model)  # vLLM loads the converted safetensors folder
        except LLMUnavailable as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(code=2) from None
    argv = vllm_command(model, host, port, name)
    _print_usage(f"http://{host}:{port}/v1", name)
    console.print(f"  running: {' '.join(argv)}  (ready when GET /v1/models answers)")
    process = subprocess.Popen(argv)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    if code not in (0, -15):
        raise typer.Exit(code=1)


@app.command("check")
def check(
    config: Annotated[
        Path | None, typer.Option(help="TOML config file with an [llm] section.")
    ] = None,
) -> None:
    """Connect to the configured LLM (or start the embedded one) and time one short completion."""
    from agent.llm import LLMError, Message
    from agent.llm.connect import connect
    from agent.llm.settings import LLMSettings

    try:
        settings = LLMSettings.from_env(config)
        with connect(settings) as handle:
            where = handle.base_url or "in-process"
            reply = handle.llm.complete([Message("user", "Say hello.")], max_tokens=16)
    except (LLMError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    kind = "embedded llama.cpp server" if handle.embedded else settings.backend
    console.print(f"[bold green]ok[/] {kind} at {where}, model {reply.model!r}")
    console.print(f"  {reply.seconds:.2f}s, {reply.usage.get('completion_tokens', '?')} tokens")
    console.print(f"  reply: {reply.text!r}")
