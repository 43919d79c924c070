"""``hyrec serve``: the HTTP server over a saved model (registered by :mod:`agent.cli.main`).

Also runnable alone: ``python -m agent.cli.serve --model-dir DIR --api-key KEY``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def serve(
    model_dir: Annotated[Path, typer.Option(help="A folder written by `hyrec fit`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="HYREC_API_KEY", help="Bearer token clients must send."),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without a key (loopback addresses only).")
    ] = False,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm/--no-llm",
            help="Use the LLM stages (HYREC_LLM_* settings; embedded llama.cpp when no base URL). "
            "Without one, or if it cannot start, the hybrid answers alone.",
        ),
    ] = True,
    threads: Annotated[
        int, typer.Option(help="Requests computed at once (more only shares the CPU thinner).")
    ] = 8,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve recommendations, chat, feedback and catalogue updates over HTTP (FastAPI)."""
    import uvicorn

    from agent.serve.app import check_auth_settings, create_app, open_model

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        key = check_auth_settings(host, api_key, no_auth)
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    if not (model_dir / "hybrid.json").is_file():  # before starting an LLM for nothing
        console.print(f"[bold red]error:[/] {model_dir}: no saved model (run `hyrec fit` first)")
        raise typer.Exit(code=2)
    if not 0 < port < 65536:
        console.print(f"[bold red]error:[/] --port must be in 1-65535, got {port}")
        raise typer.Exit(code=2)
    try:
        recommender, handle, chat = open_model(model_dir, use_llm=llm)
    except FileNotFoundError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    app = create_app(recommender, api_key=key, closing=(handle,), chat_agent=chat, threads=threads)
    console.print(
        f"hyrec serving {model_dir} on http://{host}:{port} (docs at /docs; "
        f"LLM {'on' if recommender.llm is not None else 'off'})"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info" if verbose else "warning",
        # longer than clients keep idle pooled connections, so the server does not close one
        # just as a client reuses it (uvicorn's 5 s default gave sporadic ReadErrors under load)
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    typer.run(serve)
