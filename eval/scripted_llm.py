"""A scripted OpenAI-compatible LLM server for benchmarks and fault tests: it answers every chat
completion after a delay with a schema-valid answer, so what is measured is the serving path,
not a model. The delay can be changed while the server runs (:class:`Delay`).

The answer follows the JSON schema the request asks for (``response_format`` or llama.cpp's
``extra_body`` form): a re-ranking (``ranking``), a reason (``because``/``reason``) or an interest
profile; without a schema, a short sentence. ``GET /v1/models`` lists one model.

Usage::

    python -m eval.scripted_llm --port 8011 --delay 2.0
    HYREC_LLM_BASE_URL=http://127.0.0.1:8011/v1 hyrec serve ...
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "scripted"


def answer_for(body: dict[str, Any]) -> str:
    """The text a schema-following model would write for this request."""
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    props = schema.get("properties") or {}
    if "ranking" in props:
        labels = props["ranking"].get("items", {}).get("enum") or ["A"]
        return json.dumps({"ranking": list(reversed(labels))})
    if "because" in props:
        return json.dumps({"because": 1, "reason": "It matches what you watched recently."})
    if "likes" in props:
        return json.dumps(
            {
                "likes": ["clever plots"],
                "dislikes": [],
                "recent_shift": "lighter films lately",
                "constraints": [],
                "summary": "Enjoys clever, well-made films.",
            }
        )
    return "A fine choice."


class Delay:
    """Seconds each answer waits, changeable while the server runs: ``seconds`` is read by every
    new request, and :meth:`cut` makes the requests waiting now answer at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._cut = threading.Event()

    def wait(self) -> None:
        cut = self._cut  # an event per generation: a cut ends only the waits begun before it
        cut.wait(self.seconds)

    def cut(self, seconds: float | None = None) -> None:
        """Answer every waiting request now; later ones wait ``seconds`` (default: unchanged)."""
        cut, self._cut = self._cut, threading.Event()
        if seconds is not None:
            self.seconds = seconds
        cut.set()


def make_handler(delay: float | Delay) -> type[BaseHTTPRequestHandler]:
    pause = delay if isinstance(delay, Delay) else Delay(delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout): nothing to answer

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "bad JSON"}})
                return
            pause.wait()
            text = answer_for(body)
            self._send(
                200,
                {
                    "id": "cmpl-scripted",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                },
            )

    return Handler


def serve(port: int, delay: float, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the server in a background thread; ``.shutdown()`` stops it, ``.delay`` is its
    :class:`Delay`."""
    pause = Delay(delay)
    server = ThreadingHTTPServer((host, port), make_handler(pause))
    server.delay = pause  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=1.0, help="seconds before each answer")
    a = p.parse_args()
    server = ThreadingHTTPServer((a.host, a.port), make_handler(a.delay))
    server.daemon_threads = True
    print(f"scripted LLM on http://{a.host}:{a.port}/v1 (delay {a.delay}s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
