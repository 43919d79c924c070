"""The contract every LLM backend keeps, as a pytest mixin, and the scripted HTTP server that the
HTTP backend is checked against.

A backend's test class subclasses :class:`LLMContract` (``class TestMine(LLMContract)``) and
provides the ``make_llm`` fixture: a function of a *kind* returning an :class:`agent.llm.LLM`:

* ``"working"`` answers normally;
* ``"slow"`` takes longer than :attr:`LLMContract.slow_timeout` to answer the contract's calls;
* ``"down"`` cannot be reached or started: making it or calling it raises ``LLMUnavailable``;
* ``"garbage"`` answers, but with something that is not what was asked (a body that is not a chat
  completion, text that is not JSON, bytes that are not HTTP), one kind per call.

The contract: a structured (``json_schema``) answer parses with
:func:`~agent.llm.jsonparse.parse_json_object`; logprobs come back as ``top_logprobs`` or are
honestly absent (``None``); a timeout raises ``LLMTimeout``; a server that is down raises
``LLMUnavailable``; garbage is an ``LLMError`` or unparseable, never a crash of another type.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from agent.llm import LLM, Completion, LLMError, LLMTimeout, LLMUnavailable, Message
from agent.llm.jsonparse import parse_json_object

MakeLLM = Callable[[str], LLM]

ASK = [
    Message("system", "You summarise a movie watcher's taste."),
    Message(
        "user",
        "The user watched Toy Story, Aladdin, The Lion King, Star Wars and Alien, and rated "
        "Alien highest. Describe their interests.",
    ),
]
MOODS = ("light", "dark", "mixed")
SCHEMA = {
    "type": "object",
    "properties": {
        "likes": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
        "mood": {"type": "string", "enum": list(MOODS)},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["likes", "mood", "score"],
}


class LLMContract:
    """Checks every :class:`agent.llm.LLM` backend must pass; subclasses provide ``make_llm``.

    Attributes:
        enforces_json_schema: The backend constrains output to the schema (a grammar, guided
            decoding). ``False`` for hint-only backends: their structured answer must still be a
            string that ``parse_json_object`` reads or rejects with ``ValueError``.
        supports_logprobs: The backend returns logprobs when asked; ``False``: it must say so by
            returning ``None`` for all three logprob fields.
        tokens_spell_text: The returned tokens concatenate to the text.
        structured_max_tokens: ``max_tokens`` of the structured call.
        slow_timeout: The timeout the timeout check passes to the ``"slow"`` backend.
        slow_max_tokens: ``max_tokens`` of that call (enough work to overrun the timeout).
        timeout_grace: Seconds a timed-out call may run past its timeout.
        garbage_calls: Calls made to the ``"garbage"`` backend (one per kind of garbage).
        garbage_max_tokens: ``max_tokens`` of those calls.
    """

    enforces_json_schema: ClassVar[bool] = True
    supports_logprobs: ClassVar[bool] = True
    tokens_spell_text: ClassVar[bool] = False
    structured_max_tokens: ClassVar[int] = 96
    slow_timeout: ClassVar[float] = 0.2
    slow_max_tokens: ClassVar[int] = 48
    timeout_grace: ClassVar[float] = 1.0
    garbage_calls: ClassVar[int] = 1
    garbage_max_tokens: ClassVar[int] = 8

    @pytest.fixture
    def make_llm(self) -> MakeLLM:
        raise NotImplementedError("an LLMContract subclass provides the make_llm fixture")

    def test_is_an_llm_and_answers_within_the_measured_time(self, make_llm: MakeLLM) -> None:
        llm = make_llm("working")
        assert isinstance(llm, LLM) and isinstance(llm.name, str) and llm.name
        start = time.perf_counter()
        out = llm.complete(ASK, max_tokens=8)
        wall = time.perf_counter() - start
        assert isinstance(out, Completion) and isinstance(out.text, str), out
        assert 0 <= out.seconds <= wall, f"seconds={out.seconds} but the call took {wall:.3f}s"
        if "completion_tokens" in out.usage:
            assert 1 <= out.usage["completion_tokens"] <= 8, out.usage

    def test_structured_answer_parses(self, make_llm: MakeLLM) -> None:
        llm = make_llm("working")
        out = llm.complete(ASK, max_tokens=self.structured_max_tokens, json_schema=SCHEMA)
        assert isinstance(out.text, str), out
        if not self.enforces_json_schema:
            with contextlib.suppress(ValueError):  # a hint only: the caller validates
                assert isinstance(parse_json_object(out.text), dict)
            return
        value = parse_json_object(out.text)
        assert json.loads(out.text) == value, f"not strict JSON: {out.text!r}"
        assert set(SCHEMA["required"]) <= set(value), f"missing keys in {out.text!r}"
        assert value["mood"] in MOODS and isinstance(value["score"], int), out.text
        assert isinstance(value["likes"], list) and len(value["likes"]) <= 3, out.text
        assert all(isinstance(x, str) and len(x) <= 24 for x in value["likes"]), out.text

    def test_logprobs_come_back_or_are_honestly_absent(self, make_llm: MakeLLM) -> None:
        out = make_llm("working").complete(ASK, max_tokens=6, logprobs=2)
        if not self.supports_logprobs:
            assert (out.tokens, out.logprobs, out.top_logprobs) == (None, None, None), out
            return
        assert out.tokens and out.logprobs and out.top_logprobs, f"no logprobs in {out}"
        assert len(out.tokens) == len(out.logprobs) == len(out.top_logprobs) <= 6, out
        for token, lp, top in zip(out.tokens, out.logprobs, out.top_logprobs, strict=True):
            assert isinstance(token, str) and lp <= 0, (token, lp)
            assert 1 <= len(top) <= 2 and all(v <= 0 for v in top.values()), top
            assert math.isclose(lp, max(top.values()), abs_tol=1e-3), (lp, top)  # greedy
        if self.tokens_spell_text:
            assert "".join(out.tokens) == out.text, (out.tokens, out.text)

    def test_timeout_raises_llm_timeout(self, make_llm: MakeLLM) -> None:
        llm = make_llm("slow")
        start = time.perf_counter()
        with pytest.raises(LLMTimeout):
            llm.complete(ASK, max_tokens=self.slow_max_tokens, timeout=self.slow_timeout)
        took = time.perf_counter() - start
        assert took < self.slow_timeout + self.timeout_grace, f"the timed-out call took {took:.2f}s"

    def test_down_raises_llm_unavailable(self, make_llm: MakeLLM) -> None:
        with pytest.raises(LLMUnavailable):
            make_llm("down").complete(ASK, max_tokens=4, timeout=5.0)

    def test_garbage_is_an_error_or_unparseable(self, make_llm: MakeLLM) -> None:
        llm = make_llm("garbage")
        for _ in range(self.garbage_calls):
            try:
                out = llm.complete(
                    ASK, max_tokens=self.garbage_max_tokens, json_schema=SCHEMA, timeout=5.0
                )
            except LLMError:
                continue
            assert isinstance(out.text, str), out
            with pytest.raises(ValueError):
                parse_json_object(out.text)


# --- scripted answers ---------------------------------------------------------------------------


def chat_reply(text: str | None = "hello", *, model: str = "m1", **choice: Any) -> dict:
    """An OpenAI chat-completion body with ``text`` as the answer."""
    body: dict[str, Any] = {
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    body["choices"][0].update(choice)
    return body


# A structured answer as four tokens, each the most likely of its two alternatives (greedy).
STRUCTURED_TOKENS = ('{"likes": ["space opera"], ', '"mood": "dark", ', '"score": 4', "}")
STRUCTURED_LOGPROBS = (-0.1, -0.25, -0.05, -0.01)


def structured_completion(model: str = "scripted") -> Completion:
    """:data:`STRUCTURED_TOKENS` as a :class:`Completion` with logprobs (for scripted fakes)."""
    return Completion(
        text="".join(STRUCTURED_TOKENS),
        model=model,
        tokens=STRUCTURED_TOKENS,
        logprobs=STRUCTURED_LOGPROBS,
        top_logprobs=tuple({t: lp, "<alt>": lp - 2.0} for t, lp in _structured()),
        usage={"prompt_tokens": 40, "completion_tokens": len(STRUCTURED_TOKENS)},
    )


def structured_reply(model: str = "m1") -> dict:
    """:data:`STRUCTURED_TOKENS` as an OpenAI chat-completion body with logprobs."""
    content = [
        {
            "token": t,
            "logprob": lp,
            "top_logprobs": [{"token": t, "logprob": lp}, {"token": "<alt>", "logprob": lp - 2.0}],
        }
        for t, lp in _structured()
    ]
    body = chat_reply("".join(STRUCTURED_TOKENS), model=model, logprobs={"content": content})
    body["usage"]["completion_tokens"] = len(STRUCTURED_TOKENS)
    return body


def _structured() -> zip[tuple[str, float]]:
    return zip(STRUCTURED_TOKENS, STRUCTURED_LOGPROBS, strict=True)


# --- a scripted HTTP server on a real socket ---------------------------------------------------


def http_answer(body: bytes | dict, *, status: int = 200, content_type: str = "") -> bytes:
    """A whole HTTP/1.1 response (``dict`` bodies become JSON), for :class:`ScriptedHTTPServer`."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    kind = content_type or ("application/json" if isinstance(body, dict) else "text/plain")
    head = (
        f"HTTP/1.1 {status} Scripted\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


GARBAGE: tuple[bytes, ...] = (
    http_answer(b"<html>502 from a proxy</html>", content_type="text/html"),  # not JSON
    http_answer({"id": "x", "object": "chat.completion"}),  # JSON, not a chat completion
    http_answer({"choices": []}),  # no choice
    http_answer(chat_reply("Sure! The user {likes: space, mood: dark")),  # not JSON text
    http_answer(b'{"model": "m1", "choices": [{"message": ', content_type="application/json"),
    http_answer(chat_reply("x"))[:40],  # cut off inside the headers
    http_answer(chat_reply("x"))[:-5],  # cut off inside the body
    b"\x00\xffnot http at all\r\n\r\n",
)


class ScriptedHTTPServer:
    """An HTTP server on ``127.0.0.1`` in a thread that answers POSTs from a script.

    Each POST gets the next raw answer (see :func:`http_answer`; the last one repeats), written
    as-is, after ``delay`` seconds; then the connection closes. ``GET /v1/models`` lists ``models``.
    A context manager; ``url`` is the ``/v1`` root.

    Attributes:
        bodies: The JSON body of every POST received.
    """

    def __init__(
        self, answers: Sequence[bytes], *, delay: float = 0.0, models: Sequence[str] = ("m1",)
    ) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.models = list(models)
        self.bodies: list[Any] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next_answer(self, body: Any) -> bytes:
        with self._lock:
            self.bodies.append(body)
            return self.answers[min(len(self.bodies), len(self.answers)) - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                listing = {"object": "list", "data": [{"id": m} for m in scripted.models]}
                self._write(http_answer(listing))

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                answer = scripted._next_answer(body)
                time.sleep(scripted.delay)
                self._write(answer)

            def _write(self, data: bytes) -> None:
                self.close_connection = True
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                    self.wfile.write(data)
                    self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> ScriptedHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def http_backend(kind: str, stack: contextlib.ExitStack) -> LLM:
    """An ``OpenAICompatibleLLM`` of a contract kind, over real sockets on ``127.0.0.1``.

    ``"working"`` is a scripted server answering :func:`structured_reply`, ``"slow"`` one that
    answers after 1.5 s, ``"garbage"`` one answering :data:`GARBAGE`, ``"down"`` a port nobody
    listens on. Servers and clients are closed when ``stack`` closes.
    """
    from agent.llm.embedded import free_port
    from agent.llm.openai_backend import OpenAICompatibleLLM
    from agent.llm.settings import LLMSettings

    if kind == "down":
        url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        answers, delay = {
            "working": ([http_answer(structured_reply())], 0.0),
            "slow": ([http_answer(chat_reply("late"))], 1.5),
            "garbage": (GARBAGE, 0.0),
        }[kind]
        url = stack.enter_context(ScriptedHTTPServer(answers, delay=delay)).url
    llm = OpenAICompatibleLLM(LLMSettings(base_url=url, model="m1", timeout=5.0))
    stack.callback(llm.close)
    return llm
