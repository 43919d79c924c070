"""Unit tests for the LLM settings and the OpenAI-compatible HTTP backend (no model, no server
process): settings precedence, the request body, response parsing, error mapping, concurrency, and
the LLM contract (tests/llm_contract.py) on the scripted fake and on the HTTP backend over real
local sockets."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.cli.llm import choose_engine, vllm_command
from agent.llm import LLM, LLMBusy, LLMError, LLMTimeout, LLMUnavailable, Message, embedded
from agent.llm import connect as connect_module
from agent.llm.connect import LLMHandle, choose_backend, connect
from agent.llm.embedded import EmbeddedServer, EmbeddedServerConfig, free_port
from agent.llm.openai_backend import OpenAICompatibleLLM, api_root
from agent.llm.settings import LLMSettings
from agent.llm.transformers_backend import _with_schema_hint
from tests.fakes import ScriptedLLM
from tests.llm_contract import (
    GARBAGE,
    LLMContract,
    MakeLLM,
    ScriptedHTTPServer,
    http_answer,
    http_backend,
    structured_completion,
)
from tests.llm_contract import chat_reply as reply

HI = [Message("user", "hi")]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


class Recorder:
    """An httpx MockTransport handler that records request bodies and answers from a script.

    Args:
        answers: Responses, exceptions to raise, or chat-completion bodies; the last one repeats.
        delay: Seconds each answer takes.
    """

    def __init__(self, *answers: httpx.Response | Exception | dict, delay: float = 0.0):
        self.answers = list(answers)
        self.delay = delay
        self.bodies: list[dict] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content) if request.content else {})
        self.headers.append(request.headers)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        time.sleep(self.delay)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, dict):
            return httpx.Response(200, json=answer)
        return answer


def client(handler: Recorder, **settings: object) -> OpenAICompatibleLLM:
    config = LLMSettings(base_url="http://llm.test/v1", model="m1", **settings)  # type: ignore[arg-type]
    return OpenAICompatibleLLM(config, transport=httpx.MockTransport(handler))


# --- the LLM contract ---------------------------------------------------------------------------


def scripted_backend(kind: str, *, logprobs: bool = True) -> ScriptedLLM:
    """The scripted fake playing a contract kind (see tests/llm_contract.py)."""
    working = structured_completion() if logprobs else structured_completion().text
    return {
        "working": lambda: ScriptedLLM([working], repeat_last=True),
        "slow": lambda: ScriptedLLM(["late"], delay=1.5),
        "down": lambda: ScriptedLLM([LLMUnavailable("nothing listens on 127.0.0.1:1")]),
        "garbage": lambda: ScriptedLLM(["<html>oops</html>", "Sure! {mood: dark", ""]),
    }[kind]()


class TestScriptedLLMContract(LLMContract):
    """The scripted fake keeps the contract, so stage tests written against it hold for backends."""

    tokens_spell_text = True
    garbage_calls = 3

    @pytest.fixture
    def make_llm(self) -> MakeLLM:
        return lambda kind: scripted_backend(kind, logprobs=self.supports_logprobs)


class TestScriptedLLMWithoutLogprobsContract(TestScriptedLLMContract):
    """Plain-text replies: the fake has no logprobs and says so (all three fields ``None``)."""

    supports_logprobs = False


class TestOpenAICompatibleContract(LLMContract):
    """OpenAICompatibleLLM over real sockets: scripted, slow and garbage servers, a dead port."""

    tokens_spell_text = True
    garbage_calls = len(GARBAGE)

    @pytest.fixture
    def make_llm(self) -> Iterator[MakeLLM]:
        with contextlib.ExitStack() as stack:
            yield lambda kind: http_backend(kind, stack)


# --- settings ---------------------------------------------------------------------------------


@pytest.fixture
def no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "default" / "config.toml"
    monkeypatch.setattr("agent.llm.settings.default_config_path", lambda: path)
    return path


def test_settings_defaults_without_file_or_env(no_default_file: Path) -> None:
    assert LLMSettings.from_env(environ={}) == LLMSettings()


def test_settings_env_overrides_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[llm]\nbase_url = "http://file:1/v1"\nmodel = "file-model"\ntimeout = 7\n')
    env = {"HYREC_LLM_MODEL": "env-model", "HYREC_LLM_MAX_CONCURRENCY": "4"}
    settings = LLMSettings.from_env(path, environ=env)
    assert settings.base_url == "http://file:1/v1"  # file only
    assert settings.model == "env-model"  # env beats file
    assert settings.timeout == 7.0 and settings.max_concurrency == 4
    assert settings.api_key == "none"  # default


def test_settings_file_from_hyrec_config_env_and_default_path(
    tmp_path: Path, no_default_file: Path
) -> None:
    named = tmp_path / "named.toml"
    named.write_text('[llm]\nmodel = "named"\n')
    assert LLMSettings.from_env(environ={"HYREC_CONFIG": str(named)}).model == "named"
    no_default_file.parent.mkdir()
    no_default_file.write_text('[llm]\nmodel = "default-file"\nbackend = "transformers"\n')
    settings = LLMSettings.from_env(environ={})
    assert (settings.model, settings.backend) == ("default-file", "transformers")


def test_settings_empty_env_var_is_unset(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[llm]\nbase_url = "http://file:1"\n')
    settings = LLMSettings.from_env(path, environ={"HYREC_LLM_BASE_URL": "  "})
    assert settings.base_url == "http://file:1"


@pytest.mark.parametrize(
    ("content", "env", "words"),
    [
        ("", {"HYREC_LLM_TIMEOUT": "soon"}, ["timeout", "environment"]),
        ("", {"HYREC_LLM_MAX_CONCURRENCY": "0"}, ["max_concurrency"]),
        ("", {"HYREC_LLM_BACKEND": "ollama"}, ["backend"]),
        ('[llm]\nmodle = "x"\n', {}, ["modle", "c.toml"]),
        ('[llm]\nbase_url = "localhost:8000"\n', {}, ["base_url", "http://"]),
        ("[llm\n", {}, ["not valid TOML"]),
    ],
)
def test_settings_invalid_values_name_the_problem(
    tmp_path: Path, content: str, env: dict, words: list[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        LLMSettings.from_env(path, environ=env)
    for word in words:
        assert word in str(info.value)


def test_settings_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        LLMSettings.from_env(tmp_path / "nope.toml", environ={})
    with pytest.raises(FileNotFoundError):
        LLMSettings.from_env(environ={"HYREC_CONFIG": str(tmp_path / "nope.toml")})


def test_settings_constructor_validates() -> None:
    with pytest.raises(ValueError, match="timeout"):
        LLMSettings(timeout=0)


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://h:1", "http://h:1/v1"),
        ("http://h:1/", "http://h:1/v1"),
        ("http://h:1/v1/", "http://h:1/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
    ],
)
def test_api_root(url: str, root: str) -> None:
    assert api_root(url) == root


# --- request body and response parsing ----------------------------------------------------------


def test_request_body_sends_max_tokens_and_parses_reply() -> None:
    handler = Recorder(reply("hello there"), delay=0.05)
    llm = client(handler, api_key="sk-test")
    assert isinstance(llm, LLM)
    start = time.perf_counter()
    out = llm.complete([Message("system", "be brief"), *HI], max_tokens=12, temperature=0.5)
    wall = time.perf_counter() - start
    body = handler.bodies[0]
    assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
    assert body["model"] == "m1" and body["temperature"] == 0.5
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert "response_format" not in body and "logprobs" not in body
    assert handler.headers[0]["authorization"] == "Bearer sk-test"
    assert out.text == "hello there" and out.model == "m1"
    assert out.usage == {"prompt_tokens": 5, "completion_tokens": 2} and out.tokens is None
    assert 0.05 <= out.seconds <= wall  # the call's own wall time, the server's delay included


def test_logprobs_are_requested_and_mapped() -> None:
    logprobs = {
        "content": [
            {
                "token": "Hel",
                "logprob": -0.1,
                "top_logprobs": [
                    {"token": "Hel", "logprob": -0.1},
                    {"token": "Hi", "logprob": -2.5},
                ],
            },
            {"token": "lo", "logprob": -0.3, "top_logprobs": [{"token": "lo", "logprob": -0.3}]},
        ]
    }
    handler = Recorder(reply("Hello", logprobs=logprobs))
    out = client(handler).complete(HI, logprobs=2)
    assert handler.bodies[0]["logprobs"] is True and handler.bodies[0]["top_logprobs"] == 2
    assert out.tokens == ("Hel", "lo") and out.logprobs == (-0.1, -0.3)
    assert out.top_logprobs == ({"Hel": -0.1, "Hi": -2.5}, {"lo": -0.3})


@pytest.mark.parametrize("fmt", ["json_schema", "json_object"])
def test_json_schema_request_formats(fmt: str) -> None:
    handler = Recorder(reply('{"a": 1}'))
    client(handler, json_format=fmt).complete(HI, json_schema=SCHEMA)
    sent = handler.bodies[0]["response_format"]
    assert sent["type"] == fmt
    schema = sent["json_schema"]["schema"] if fmt == "json_schema" else sent["schema"]
    assert schema == SCHEMA


def test_auto_json_format_falls_back_to_json_object_once() -> None:
    rejected = httpx.Response(
        500, json={"error": {"message": "loc ('body','response_format','type'): literal_error"}}
    )
    handler = Recorder(rejected, reply('{"a": 1}'), reply('{"a": 2}'))
    llm = client(handler)  # json_format="auto"
    assert llm.complete(HI, json_schema=SCHEMA).text == '{"a": 1}'
    assert llm.complete(HI, json_schema=SCHEMA).text == '{"a": 2}'
    kinds = [b["response_format"]["type"] for b in handler.bodies]
    assert kinds == ["json_schema", "json_object", "json_object"]


def test_fixed_json_format_does_not_retry() -> None:
    rejected = httpx.Response(400, json={"error": {"message": "bad response_format"}})
    handler = Recorder(rejected)
    with pytest.raises(LLMError, match="HTTP 400"):
        client(handler, json_format="json_schema").complete(HI, json_schema=SCHEMA)
    assert len(handler.bodies) == 1


def test_null_content_is_empty_text() -> None:
    out = client(Recorder(reply(None))).complete(HI)  # type: ignore[arg-type]
    assert out.text == ""


# --- error mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.ConnectError("refused"), LLMUnavailable),
        (httpx.ConnectTimeout("no route"), LLMUnavailable),
        (httpx.RemoteProtocolError("server disconnected"), LLMUnavailable),
        (httpx.ReadTimeout("slow"), LLMTimeout),
        (httpx.WriteTimeout("slow"), LLMTimeout),
        (httpx.Response(503, json={"error": {"message": "loading"}}), LLMUnavailable),
        (httpx.Response(502, text="bad gateway"), LLMUnavailable),
        (httpx.Response(504, text="gateway timeout"), LLMTimeout),
        (httpx.Response(408, text="timeout"), LLMTimeout),
        (httpx.Response(400, json={"error": {"message": "context too long"}}), LLMError),
        (httpx.Response(500, text="boom"), LLMError),
        (httpx.Response(200, text="<html>not json</html>"), LLMError),
        (httpx.Response(200, json={"choices": []}), LLMError),
        (httpx.Response(200, json={"id": "x"}), LLMError),
    ],
)
def test_error_mapping(answer: httpx.Response | Exception, error: type[LLMError]) -> None:
    with pytest.raises(LLMError) as info:
        client(Recorder(answer)).complete(HI)
    assert type(info.value) is error


def test_error_messages_say_what_to_fix() -> None:
    with pytest.raises(LLMError, match="HYREC_LLM_API_KEY"):
        client(Recorder(httpx.Response(401, json={"error": "bad key"}))).complete(HI)
    with pytest.raises(LLMError, match="HYREC_LLM_MODEL"):
        client(Recorder(httpx.Response(404, json={"error": "no model"}))).complete(HI)
    with pytest.raises(LLMError, match="context too long"):
        answer = httpx.Response(400, json={"error": {"message": "context too long"}})
        client(Recorder(answer)).complete(HI)


@pytest.mark.parametrize(
    "kwargs", [{"max_tokens": 0}, {"temperature": -1.0}, {"logprobs": -1}, {"timeout": 0.0}]
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    handler = Recorder(reply())
    with pytest.raises(ValueError):
        client(handler).complete(HI, **kwargs)
    with pytest.raises(ValueError, match="messages"):
        client(handler).complete([])
    assert handler.bodies == []


def test_requires_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatibleLLM(LLMSettings())


# --- concurrency --------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_thread_safe() -> None:
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return httpx.Response(
            200, json=reply(json.loads(request.content)["messages"][0]["content"])
        )

    config = LLMSettings(base_url="http://llm.test/v1", max_concurrency=2, timeout=10)
    llm = OpenAICompatibleLLM(config, transport=httpx.MockTransport(slow))
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = llm.complete([Message("user", f"q{i}")]).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"q{i}" for i in range(8)}  # each caller got its own answer
    assert state["peak"] == 2


@pytest.mark.parametrize(
    ("slot_wait", "timeout", "error", "message"),
    [
        (30.0, 0.2, LLMTimeout, "slot"),  # the wait for a slot counts toward the timeout
        (0.2, 10.0, LLMBusy, "LLM busy: no free slot within 0.20 s"),  # slot_wait bounds it
    ],
)
def test_a_call_waits_for_a_slot_at_most_its_timeout_and_slot_wait(
    slot_wait: float, timeout: float, error: type, message: str
) -> None:
    release = threading.Event()

    def blocked(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return httpx.Response(200, json=reply())

    config = LLMSettings(
        base_url="http://llm.test/v1", max_concurrency=1, timeout=10, slot_wait=slot_wait
    )
    llm = OpenAICompatibleLLM(config, transport=httpx.MockTransport(blocked))
    first = threading.Thread(target=llm.complete, args=(HI,))
    first.start()
    time.sleep(0.05)
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        llm.complete(HI, timeout=timeout)
    assert time.perf_counter() - start < 1.0
    release.set()
    first.join()
    assert llm.complete(HI).text  # the slot came back


def test_batch_settings_queue_for_a_slot_instead_of_falling_back() -> None:
    settings = LLMSettings(base_url="http://llm.test/v1", timeout=40, slot_wait=0.5)
    batch = settings.for_batch(6)
    assert (batch.max_concurrency, batch.slot_wait) == (6, 40)
    assert settings.for_batch(0).max_concurrency == 1


# --- real sockets: a tiny local HTTP server ---------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A server answering "late" after 0.3 s; its root URL without ``/v1``."""
    with ScriptedHTTPServer([http_answer(reply("late"))], delay=0.3, models=["slow-model"]) as srv:
        yield srv.url.removesuffix("/v1")


def test_real_server_answers_and_lists_models(slow_server: str) -> None:
    llm = OpenAICompatibleLLM(LLMSettings(base_url=slow_server, timeout=5))
    start = time.perf_counter()
    out = llm.complete(HI)
    assert out.text == "late" and 0.3 <= out.seconds <= time.perf_counter() - start
    assert llm.models() == ["slow-model"]
    llm.close()


# --- connect() without a model --------------------------------------------------------------------


def test_connect_probes_a_configured_server(slow_server: str) -> None:
    with connect(LLMSettings(base_url=slow_server)) as handle:
        assert not handle.embedded and handle.base_url == slow_server + "/v1"
    down = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMUnavailable, match="does not answer"):
        connect(LLMSettings(base_url=down))


def test_connect_without_url_or_embedded_is_unavailable() -> None:
    with pytest.raises(LLMUnavailable, match="HYREC_LLM_BASE_URL"):
        connect(LLMSettings(), start_embedded=False)


def test_connect_with_bad_settings_is_unavailable_and_names_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYREC_LLM_MAX_CONCURRENCY", "0")
    with pytest.raises(LLMUnavailable, match="max_concurrency"):
        connect(start_embedded=False)


def test_embedded_without_llama_cpp_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "llama_cpp_installed", lambda: False)
    with pytest.raises(LLMUnavailable, match="llama-cpp-python"):
        connect(LLMSettings(backend="openai"))  # the llama.cpp server, nothing else


# --- which backend connect() runs (nothing started) -----------------------------------------------


def _without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Make ``missing`` top-level packages look uninstalled to importlib.util.find_spec."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name.split(".")[0] in missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_auto_without_llama_cpp_runs_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "llama_cpp")
    choice = choose_backend(LLMSettings())
    assert choice.kind == "transformers"
    assert (
        "llama-cpp-python is not installed" in choice.reason and "hyrec[llamacpp]" in choice.reason
    )


def test_auto_with_llama_cpp_runs_its_server_then_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "llama_cpp_installed", lambda: True)
    choice = choose_backend(LLMSettings())
    assert (choice.kind, choice.fallback) == ("llama.cpp", "transformers")


def test_auto_with_neither_backend_is_unavailable_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without(monkeypatch, "llama_cpp", "transformers")
    assert choose_backend(LLMSettings()).kind is None
    with pytest.raises(LLMUnavailable) as info:
        connect(LLMSettings())
    for words in ("transformers", "hyrec[llamacpp]", "HYREC_LLM_BASE_URL"):
        assert words in str(info.value)


def test_explicit_settings_win_over_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "llama_cpp")
    assert choose_backend(LLMSettings(base_url="http://h:1/v1")).kind == "http"
    assert choose_backend(LLMSettings(backend="openai")).kind == "llama.cpp"  # says it's missing
    assert choose_backend(LLMSettings(backend="transformers", base_url="http://h:1")).kind == (
        "transformers"
    )
    assert choose_backend(LLMSettings(), start_embedded=False).kind is None


def test_connect_without_llama_cpp_loads_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "llama_cpp")
    loaded = []
    monkeypatch.setattr(
        connect_module,
        "_transformers",
        lambda settings, notes=(): (
            loaded.append(settings)
            or LLMHandle(ScriptedLLM(["hi"]), backend="transformers", notes=notes)
        ),
    )
    handle = connect(LLMSettings(timeout=7))
    assert handle.backend == "transformers" and loaded[0].timeout == 7
    assert "in-process transformers" in handle.description and handle.base_url is None


def test_a_llama_cpp_server_that_fails_to_start_falls_back_to_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "llama_cpp_installed", lambda: True)

    def broken(self):
        raise LLMUnavailable("the embedded LLM server exited with code -4 while starting")

    monkeypatch.setattr(EmbeddedServer, "start", broken)
    monkeypatch.setattr(
        connect_module,
        "_transformers",
        lambda settings, notes=(): LLMHandle(
            ScriptedLLM(["hi"]), backend="transformers", notes=notes
        ),
    )
    handle = connect(LLMSettings())
    assert handle.backend == "transformers"
    assert "llama.cpp server failed to start" in handle.notes[0] and "code -4" in handle.notes[0]


def test_embedded_with_missing_model_file(tmp_path: Path) -> None:
    server = EmbeddedServer(EmbeddedServerConfig(model_path=tmp_path / "none.gguf"))
    with pytest.raises(LLMUnavailable, match="does not exist"):
        server.command(8000)
    assert not server.running()


def test_embedded_command_passes_threads_and_context() -> None:
    config = EmbeddedServerConfig(model_path=Path(__file__), n_threads=2, n_ctx=1024, port=9)
    argv = EmbeddedServer(config).command(9)
    flags = dict(zip(argv[::2], argv[1::2], strict=True))
    assert flags["--n_threads"] == "2"
    assert flags["--n_threads_batch"] == str(min(8, os.cpu_count() or 2))  # prompts: every core
    assert flags["--n_ctx"] == "1024"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "9"
    assert flags["--model_alias"] == "smollm2"
    config = EmbeddedServerConfig(model_path=Path(__file__), n_threads=1, n_threads_batch=3)
    argv = EmbeddedServer(config).command(9)
    flags = dict(zip(argv[::2], argv[1::2], strict=True))
    assert flags["--n_threads"] == "1" and flags["--n_threads_batch"] == "3"


# --- transformers prompt hint and CLI helpers -----------------------------------------------------


def test_schema_hint_goes_into_the_system_message() -> None:
    chat = _with_schema_hint([Message("system", "be brief"), *HI], SCHEMA)
    assert len(chat) == 2 and chat[0]["content"].startswith("be brief")
    assert json.dumps(SCHEMA, separators=(",", ":")) in chat[0]["content"]
    chat = _with_schema_hint(HI, SCHEMA)
    assert [m["role"] for m in chat] == ["system", "user"]
    assert _with_schema_hint(HI, None) == [{"role": "user", "content": "hi"}]


def test_cli_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.cli.llm.vllm_available", lambda: False)
    assert choose_engine("auto") == "llama.cpp"
    monkeypatch.setattr("agent.cli.llm.vllm_available", lambda: True)
    assert choose_engine("auto") == "vllm" and choose_engine("llama.cpp") == "llama.cpp"
    argv = vllm_command("org/model", "127.0.0.1", 8001, "model")
    assert argv[argv.index("--port") + 1] == "8001"
    assert argv[argv.index("--served-model-name") + 1] == "model"


def test_closed_client_is_unavailable() -> None:
    llm = client(Recorder(reply()))
    llm.close()
    with pytest.raises(LLMUnavailable, match="closed"):
        llm.complete(HI)


def test_json_replies_are_made_strict() -> None:
    raw = '{"likes": ["space\nopera"], "score": 3}'  # a raw newline inside a string
    handler = Recorder(reply(raw), reply("not json {"), reply('{"a": 1}'))
    llm = client(handler, json_format="json_object")
    assert json.loads(llm.complete(HI, json_schema=SCHEMA).text)["likes"] == ["space\nopera"]
    assert llm.complete(HI, json_schema=SCHEMA).text == "not json {"  # left for the caller
    assert llm.complete(HI, json_schema=SCHEMA).text == '{"a": 1}'  # strict JSON untouched
    assert client(Recorder(reply(raw))).complete(HI).text == raw  # no schema: no rewriting
