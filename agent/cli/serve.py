"""``hyrec serve``: the HTTP server over a saved model (registered by :mod:`agent.cli.main`).

Also runnable alone: ``HYREC_API_KEY=... python -m agent.cli.serve --model-dir DIR``.

The API key comes from ``HYREC_API_KEY`` or ``--api-key-file``, never from the command line,
where every local user could read it in ``ps``.
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
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token clients must send (or HYREC_API_KEY)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(hidden=True, help="Refused: use HYREC_API_KEY or a key file.")
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
    max_body: Annotated[
        int, typer.Option(help="Largest request body in bytes (413 above it).")
    ] = 1_000_000,
    queue_wait: Annotated[
        float,
        typer.Option(
            help="Seconds a recommendation, chat or similar-items request waits for a free "
            "thread before a 503 'overloaded' with Retry-After (load shedding)."
        ),
    ] = 5.0,
    docs: Annotated[
        bool, typer.Option("--docs", help="Serve /docs and /openapi.json (behind the key).")
    ] = False,
    feedback_url: Annotated[
        str | None,
        typer.Option(
            help="Feedback database: postgresql://user@host:port/db, shared by replicas (needs "
            "hyrec[postgres]), or a SQLite path. Default: HYREC_FEEDBACK_URL, then [feedback] url "
            "in the config file, then the model folder's feedback.sqlite3.",
        ),
    ] = None,
    chroma_url: Annotated[
        str | None,
        typer.Option(
            help="Item vectors on a chromadb server (http://host:port of `chroma run`), shared "
            "by replicas. Default: HYREC_CHROMA_URL, then [chroma] url, then <model-dir>/chroma.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve recommendations, chat, feedback and catalogue updates over HTTP (FastAPI)."""
    # the checks that need nothing imported come first: a bad flag is refused in a moment, not
    # after the seconds that importing the model's libraries takes
    try:
        given_key = read_api_key(api_key, api_key_file)
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    if not (model_dir / "hybrid.json").is_file():  # before starting an LLM for nothing
        console.print(f"[bold red]error:[/] {model_dir}: no saved model (run `hyrec fit` first)")
        raise typer.Exit(code=2)
    if not 0 < port < 65536:
        console.print(f"[bold red]error:[/] --port must be in 1-65535, got {port}")
        raise typer.Exit(code=2)
    import uvicorn

    from agent.feedback import StoreUnavailable
    from agent.serve.app import create_app
    from agent.serve.startup import StoreSettings, check_auth_settings, open_model

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        key = check_auth_settings(host, given_key, no_auth)
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    try:
        stores = StoreSettings.resolve(feedback_url, chroma_url)
        stores.item_store()  # a bad URL fails here, before an LLM starts
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    try:
        recommender, handle, chat = open_model(model_dir, use_llm=llm, stores=stores)
    except (FileNotFoundError, ValueError, ImportError, StoreUnavailable) as e:
        # open_model stopped the LLM it started
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None
    try:
        app = create_app(
            recommender,
            api_key=key,
            closing=(handle,),
            chat_agent=chat,
            threads=threads,
            max_body=max_body,
            docs=docs,
            queue_wait=queue_wait,
        )
    except BaseException:  # no orphaned LLM server when the app cannot even be built
        recommender.close()
        if handle is not None:
            handle.close()
        raise
    console.print(
        f"hyrec serving {model_dir} on http://{host}:{port} (chat page at /, dashboard at "
        f"/dashboard{', docs at /docs' if docs else ''}; "
        f"LLM {'on' if recommender.llm is not None else 'off'})"
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info" if verbose else "warning",
            access_log=False,  # its lines carry raw paths (user ids); agent.serve.metrics logs
            # each request by route template instead
            # longer than clients keep idle pooled connections, so the server does not close one
            # just as a client reuses it (uvicorn's 5 s default gave sporadic ReadErrors under load)
            timeout_keep_alive=75,
        )
    finally:  # also when uvicorn fails to start (port taken): the lifespan never ran
        if handle is not None:
            handle.close()


def read_api_key(given: str | None, key_file: Path | None) -> str | None:
    """The key from ``--api-key-file`` or ``HYREC_API_KEY``; a key given on the command line is
    refused, since any local user can read it in ``ps``.

    Raises:
        ValueError: ``--api-key`` was used, or the key file is unreadable or empty.
    """
    import os

    if given is not None:
        raise ValueError(
            "--api-key is refused: a key on the command line is visible to every local user in "
            "`ps`. Set HYREC_API_KEY, or pass --api-key-file with a file that holds the key."
        )
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as e:
            raise ValueError(f"--api-key-file {key_file}: {e.strerror or e}") from None
        if not key:
            raise ValueError(f"--api-key-file {key_file} is empty")
        return key
    return os.environ.get("HYREC_API_KEY") or None


if __name__ == "__main__":
    typer.run(serve)
