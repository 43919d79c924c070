"""The chat agent: rules path over a fake Recommender with a known answer, the LangChain tool path
with a scripted tool-calling model, fallbacks, and (integration) a real fitted tiny Recommender."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from langchain_core.messages import AIMessage

from agent.api import FeedbackReceipt, Recommendation, Recommendations
from agent.chat.agent import ChatAgent, ChatReply, chat_mode, make_chat_model
from agent.chat.answers import fuse, listed_items
from agent.chat.tools import ToolSession, make_tools
from agent.llm import Message
from agent.llm.settings import LLMSettings
from hyrec.data import Dataset
from retrieval.filters import Filter
from tests.test_intent import tiny_catalogue

LINE = re.compile(r"^(\d+)\. (.+) — (.+)$")


class FakeRecommender:
    """The Recommender contract over the tiny catalogue: filters honoured exactly, items ranked by
    how many query words their text holds, then by popularity; every call recorded."""

    def __init__(
        self, catalogue: Dataset, fail: Exception | None = None, failing: Sequence[str] = ()
    ) -> None:
        self.catalogue = catalogue
        self.fail = fail
        self.failing = set(failing) or {"recommend", "search", "similar_items"}
        self.calls: list[tuple[str, dict]] = []

    def last(self, name: str) -> dict:
        """The arguments of the latest call of ``name``."""
        return [args for n, args in self.calls if n == name][-1]

    def _maybe_fail(self, name: str) -> None:
        if self.fail is not None and name in self.failing:
            raise self.fail

    def _allowed(self, filters: Filter | None, exclude: Sequence[str]) -> list[int]:
        f = filters or Filter()
        out = []
        for pos, item in enumerate(self.catalogue.items):
            genres, year = set(item.genres), item.attributes.get("year")
            if f.genres_any and not genres & set(f.genres_any):
                continue
            if genres & set(f.genres_none):
                continue
            if f.year_min is not None and (year is None or year < f.year_min):
                continue
            if f.year_max is not None and (year is None or year > f.year_max):
                continue
            if item.item_id in set(exclude) | set(f.exclude_ids):
                continue
            out.append(pos)
        return out

    def _rank(self, query: str | None, positions: list[int], k: int) -> list[Recommendation]:
        words = set(re.findall(r"[a-z]+", (query or "").lower()))
        counts = {i: 0 for i in positions}
        for i in self.catalogue.interactions.item:
            if int(i) in counts:
                counts[int(i)] += 1

        def score(pos: int) -> float:
            text = set(re.findall(r"[a-z]+", self.catalogue.items[pos].text().lower()))
            return len(words & text) + 0.01 * counts[pos]

        ranked = sorted(positions, key=lambda p: (-score(p), p))[:k]
        return [
            Recommendation(
                self.catalogue.items[p].item_id,
                self.catalogue.items[p].title,
                score(p),
                ("fake",),
                {"fake": score(p)},
                None,
            )
            for p in ranked
        ]

    def recommend(
        self, user=None, *, history=None, k=10, context=None, query=None, filters=None,
        exclude=(), explain=True,
    ) -> Recommendations:  # fmt: skip
        args = {"user": user, "k": k, "query": query, "filters": filters, "explain": explain}
        self.calls.append(("recommend", {**args, "exclude": tuple(exclude)}))
        self._maybe_fail("recommend")
        items = self._rank(query, self._allowed(filters, exclude), k)
        return Recommendations(user, tuple(items), ("rerank: none in the fake",))

    def search(self, query: str, k: int = 10, filters: Filter | None = None):
        self.calls.append(("search", {"query": query, "k": k, "filters": filters}))
        self._maybe_fail("search")
        return self._rank(query, self._allowed(filters, ()), k)

    def similar_items(self, item_id: str, k: int = 10, filters: Filter | None = None):
        self.calls.append(("similar_items", {"item_id": item_id, "k": k, "filters": filters}))
        self._maybe_fail("similar_items")
        anchor = self.catalogue.items[self.catalogue.item_index[item_id]]
        query = " ".join(anchor.genres)
        return self._rank(query, self._allowed(filters, (item_id,)), k)

    def explain(self, user: str, item_id: str) -> str:
        self.calls.append(("explain", {"user": user, "item_id": item_id}))
        return "you rated similar films highly"

    def feedback(self, user: str, item_id: str, event: str, value: float | None = None):
        self.calls.append(("feedback", {"user": user, "item_id": item_id, "event": event}))
        return FeedbackReceipt(7, user, item_id, event, value, 0.0, event == "like")


@pytest.fixture
def cat() -> Dataset:
    return tiny_catalogue()


@pytest.fixture
def rec(cat) -> FakeRecommender:
    return FakeRecommender(cat)


def user(text: str) -> Message:
    return Message("user", text)


def lines(reply: ChatReply) -> list[re.Match]:
    return [m for m in (LINE.match(x) for x in reply.text.splitlines()) if m]


def test_like_alien_but_funnier(rec, cat):
    reply = ChatAgent(rec, k=3).reply([user("something like Alien but funnier, for tonight")])
    call = rec.last("recommend")
    assert call["query"] == reply.intent.query_text and "crowd-pleaser" in call["query"]
    assert call["filters"] == Filter(genres_any=("Comedy",))
    assert call["exclude"] == ("1",)
    assert rec.last("search")["query"] == call["query"]
    assert rec.last("similar_items")["item_id"] == "1"
    ids = [r.item_id for r in reply.items]
    assert ids == ["6", "5", "4"]  # comedies sharing most genres with Alien first
    assert [m.group(1) for m in lines(reply)] == ["1", "2", "3"]
    assert listed_items(reply.text, cat) == ids
    assert "Comedy as asked" in lines(reply)[0].group(3)
    assert not reply.used_llm_tools


def test_follow_up_resolves_the_second_one_and_keeps_constraints(rec, cat):
    agent = ChatAgent(rec, k=2)
    first = agent.reply([user("no horror, 90s, for kids")])
    assert [r.item_id for r in first.items] == ["4", "7"]
    convo = [user("no horror, 90s, for kids"), Message("assistant", first.text)]
    second = agent.reply([*convo, user("more like the second one")])
    assert second.intent.anchors == ("7",)
    f = second.intent.filters
    assert (f.genres_none, f.year_min, f.year_max) == (("Horror",), 1990, 1999)
    assert set(rec.last("recommend")["exclude"]) == {"4", "7"}
    assert [r.item_id for r in second.items] == ["13"]  # the only other 90s children's film


def test_pure_like_uses_similar_items(rec):
    reply = ChatAgent(rec, k=2).reply([user("like Aliens")])
    assert [name for name, _ in rec.calls] == ["similar_items"]
    assert "2" not in [r.item_id for r in reply.items]
    assert "close to" in reply.text or "like Aliens" in reply.text


def test_cold_start_user_gets_the_query_path(rec):
    reply = ChatAgent(rec).reply([user("I love clever space movies")], user_id="newcomer")
    call = rec.last("recommend")
    assert call["user"] == "newcomer"
    assert call["filters"] == Filter(genres_any=("Sci-Fi",))
    assert "new here" in reply.text.splitlines()[0]
    assert all("Sci-Fi" in rec.catalogue.items[rec.catalogue.item_index[r.item_id]].genres
               for r in reply.items)  # fmt: skip


def test_known_user_is_passed_through(rec):
    ChatAgent(rec).reply([user("something funny")], user_id="u1")
    assert rec.last("recommend")["user"] == "u1"


@pytest.mark.parametrize(
    ("user_id", "text", "explain"),
    [
        ("u1", "something funny", True),  # known: reasons grounded in their history
        (None, "something funny", False),
        ("newcomer", "something funny", False),  # no history to ground a reason in
        ("newcomer", "I loved Alien, something funnier", True),  # the liking said is a history
    ],
)
def test_reasons_only_when_there_is_a_history(rec, user_id, text, explain):
    ChatAgent(rec).reply([user(text)], user_id=user_id)
    assert rec.last("recommend")["explain"] is explain


def test_unsatisfiable_genre_is_relaxed_and_said(rec):
    reply = ChatAgent(rec, k=2).reply([user("a musical from the 70s")])
    assert len(reply.items) == 2
    assert all(1970 <= int(r.title[-5:-1]) <= 1979 for r in reply.items)
    assert "relaxed" in reply.text


def test_nothing_found_says_so(rec):
    reply = ChatAgent(rec).reply([user("a western before 1930")])
    assert reply.items == ()
    assert reply.text.startswith("I found nothing")


def test_count_in_the_request_wins(rec):
    assert len(ChatAgent(rec, k=5).reply([user("two comedies")]).items) == 2


def test_recommender_failure_never_crashes(cat):
    rec = FakeRecommender(cat, fail=RuntimeError("index is gone"))
    reply = ChatAgent(rec).reply([user("something funny")])
    assert reply.items == ()
    assert any("recommend: RuntimeError: index is gone" in f for f in reply.fallbacks)
    assert any("search: RuntimeError: index is gone" in f for f in reply.fallbacks)


def test_one_failing_voice_leaves_the_others(cat):
    rec = FakeRecommender(cat, fail=TimeoutError("slow"), failing=["search"])
    reply = ChatAgent(rec, k=2).reply([user("something funny")])
    assert len(reply.items) == 2
    assert "search: TimeoutError: slow" in reply.fallbacks


def test_a_failing_similar_items_falls_back_to_the_personal_list(cat):
    rec = FakeRecommender(cat, fail=RuntimeError("index is gone"), failing=["similar_items"])
    reply = ChatAgent(rec, k=2).reply([user("like Aliens")])
    assert [name for name, _ in rec.calls] == ["similar_items", "recommend"]
    assert len(reply.items) == 2
    assert reply.fallbacks[0] == "similar_items: RuntimeError: index is gone"


def test_fuse_prefers_anchor_genres_then_agreement(cat):
    def recs(*ids: str) -> list[Recommendation]:
        return [Recommendation(i, i, 0.0, (), {}) for i in ids]

    lists = [recs("12", "5", "8"), recs("5", "14", "6")]
    assert [r.item_id for r in fuse(lists, cat, set())] == ["5", "12", "14", "6", "8"]  # ties: id
    sci_fi = [r.item_id for r in fuse(lists, cat, {"Sci-Fi", "Action"})]
    assert sci_fi == ["6", "5", "12", "14", "8"]  # Men in Black shares both genres


def test_said_likes_become_feedback_for_signed_in_users(rec):
    prev = ChatAgent(rec, k=2).reply([user("something funny")])
    convo = [user("something funny"), Message("assistant", prev.text)]
    hated = prev.items[0]
    reply = ChatAgent(rec, k=2).reply([*convo, user("I hated the first one")], user_id="u1")
    assert ("feedback", {"user": "u1", "item_id": hated.item_id, "event": "dislike"}) in rec.calls
    assert reply.text.splitlines()[0] == f"Noted: you did not like {hated.title}."
    assert hated.item_id in rec.last("recommend")["exclude"]
    before = len(rec.calls)
    ChatAgent(rec).reply([user("I loved Alien")])  # anonymous: nothing is stored
    assert all(name != "feedback" for name, _ in rec.calls[before:])


def test_messages_must_end_with_the_user(rec):
    with pytest.raises(ValueError, match="end with the user"):
        ChatAgent(rec).reply([Message("assistant", "hi")])
    with pytest.raises(ValueError, match="k must be"):
        ChatAgent(rec, k=0)


# ---- tool path ------------------------------------------------------------------------------


class ScriptedChatModel:
    """A LangChain-style chat model: ``bind_tools`` returns itself; ``invoke`` replays a script."""

    def __init__(self, script: list[AIMessage | Exception]) -> None:
        self.script = list(script)
        self.seen: list[list] = []
        self.tools: list = []

    def bind_tools(self, tools):
        self.tools = list(tools)
        return self

    def invoke(self, messages):
        self.seen.append(list(messages))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def call(name: str, args: dict, id_: str = "c1") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id_, "type": "tool_call"}])


def test_tool_model_drives_search(rec, cat):
    model = ScriptedChatModel(
        [
            call("search_catalog", {"query": "funny space", "genres_any": ["Comedy"], "k": 3}),
            AIMessage("Here are funny space films."),
        ]
    )
    reply = ChatAgent(rec, chat_model=model).reply([user("funny space stuff")])
    assert reply.used_llm_tools and reply.fallbacks == ()
    assert {t.name for t in model.tools} == {
        "search_catalog", "recommend_for_user", "similar_items", "explain", "record_feedback"
    }  # fmt: skip
    assert rec.calls[-1] == (
        "search", {"query": "funny space", "k": 3, "filters": Filter(genres_any=("Comedy",))}
    )  # fmt: skip
    assert reply.text.splitlines()[0] == "Here are funny space films."
    assert listed_items(reply.text, cat) == [r.item_id for r in reply.items]
    tool_result = model.seen[1][-1].content
    assert json.loads(tool_result)[0]["item_id"] == reply.items[0].item_id


def test_tool_model_similar_by_title_and_feedback(rec):
    model = ScriptedChatModel(
        [
            call("record_feedback", {"item": "the godfather", "event": "like"}, "a"),
            call("similar_items", {"item": "Godfather, The (1972)", "k": 2}, "b"),
            AIMessage("Noted."),
        ]
    )
    reply = ChatAgent(rec, chat_model=model).reply([user("loved the godfather")], user_id="u1")
    assert ("feedback", {"user": "u1", "item_id": "3", "event": "like"}) in rec.calls
    assert rec.calls[-1][0] == "similar_items" and rec.calls[-1][1]["item_id"] == "3"
    assert len(reply.items) == 2 and reply.used_llm_tools


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([ConnectionError("server down")], "ConnectionError: server down"),
        ([AIMessage("I think you'd like Alien.")], "LookupError"),  # answered without tools
    ],
)
def test_tool_failures_fall_back_to_rules(rec, script, expected):
    reply = ChatAgent(rec, chat_model=ScriptedChatModel(script)).reply([user("something funny")])
    assert not reply.used_llm_tools
    assert any(expected in f and "used rules" in f for f in reply.fallbacks)
    assert reply.items and rec.last("recommend")["query"] == reply.intent.query_text


def test_tools_report_errors_instead_of_raising(rec):
    session = ToolSession()
    tools = {t.name: t for t in make_tools(rec, None, session)}
    out = json.loads(tools["similar_items"].invoke({"item": "No Such Film"}))
    assert "no catalogue item" in out["error"]
    assert (
        "user"
        in json.loads(tools["record_feedback"].invoke({"item": "1", "event": "like"}))["error"]
    )
    assert [ok for _, _, ok in session.calls] == [False, False]
    assert session.items == []


def test_chat_mode_and_model_selection():
    assert chat_mode({}) == "auto"
    assert chat_mode({"HYREC_CHAT_TOOLS": "LLM"}) == "llm"
    with pytest.raises(ValueError, match="HYREC_CHAT_TOOLS"):
        chat_mode({"HYREC_CHAT_TOOLS": "maybe"})
    packaged = LLMSettings()
    served = LLMSettings(base_url="http://gpu:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    assert make_chat_model(packaged, "auto") is None
    assert make_chat_model(served, "rules") is None
    with pytest.raises(ValueError, match="HYREC_LLM_BASE_URL"):
        make_chat_model(packaged, "llm")
    model = make_chat_model(served, "auto")
    assert model.model_name == "Qwen/Qwen2.5-7B-Instruct"
    assert model.extra_body == {"max_tokens": 512}
    assert str(model.openai_api_base).startswith("http://gpu:8000")


def test_chat_openai_over_http_drives_the_tools(rec):
    """The real ChatOpenAI client against a scripted OpenAI-compatible server."""
    import httpx

    requests: list[dict] = []
    arguments = json.dumps({"item": "Alien", "k": 2})
    answers = [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "similar_items", "arguments": arguments},
        }]},
        {"role": "assistant", "content": "Two films in the spirit of Alien."},
    ]  # fmt: skip

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(json.loads(request.content))
        message = answers[len(requests) - 1]
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
        })  # fmt: skip

    served = LLMSettings(base_url="http://llm.test/v1", model="served-model")
    client = httpx.Client(transport=httpx.MockTransport(handle))
    model = make_chat_model(served, "llm", http_client=client)
    reply = ChatAgent(rec, chat_model=model).reply([user("films like Alien")])
    assert reply.used_llm_tools and reply.fallbacks == ()
    assert [r.item_id for r in reply.items] == [r.item_id for r in rec.similar_items("1", 2)]
    assert reply.text.splitlines()[0] == "Two films in the spirit of Alien."
    first = requests[0]
    assert first["max_tokens"] == 512 and first["model"] == "served-model"
    assert {t["function"]["name"] for t in first["tools"]} >= {"search_catalog", "similar_items"}
    assert requests[1]["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_1", "content": requests[1]["messages"][-1]["content"]
    }  # fmt: skip


# ---- a real fitted Recommender (packaged MiniLM) ---------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """The tiny catalogue fitted with the cheap hybrid and the packaged text model, saved."""
    from agent.api import Recommender, RecommenderConfig
    from tests.conftest import cheap_hybrid

    config = RecommenderConfig(hybrid=cheap_hybrid())
    folder = tmp_path_factory.mktemp("chat") / "model"
    model = Recommender.fit(tiny_catalogue(), config)
    model.save(folder)
    model.close()
    return folder


def genres_of(model, item_id: str) -> list[str]:
    return list(model.catalogue.items[model.catalogue.item_index[item_id]].genres)


@pytest.mark.integration
def test_chat_on_a_real_fitted_model(fitted: Path, tmp_path: Path):
    from agent.api import Recommender

    with Recommender.load(fitted, feedback_path=tmp_path / "fb.sqlite3") as model:
        agent = ChatAgent(model, k=3)
        convo = [user("something like Alien but funnier, for tonight")]
        first = agent.reply(convo)
        assert first.fallbacks == ()
        assert first.items and all(r.item_id != "1" for r in first.items)
        assert all("Comedy" in genres_of(model, r.item_id) for r in first.items)
        assert [m.group(1) for m in lines(first)] == [str(i + 1) for i in range(len(first.items))]
        convo += [Message("assistant", first.text), user("more like the second one")]
        second = agent.reply(convo)
        assert second.intent.anchors == (first.items[1].item_id,)
        assert not {r.item_id for r in second.items} & {r.item_id for r in first.items}
        cold = agent.reply([user("no horror, 90s, for kids")], user_id="someone-new")
        assert cold.items
        assert all("Horror" not in genres_of(model, r.item_id) for r in cold.items)


@pytest.mark.integration
def test_cli_chat_one_shot(fitted: Path, monkeypatch):
    from typer.testing import CliRunner

    from agent.cli.chat import chat

    app = typer.Typer()
    app.command()(chat)
    monkeypatch.setenv("HYREC_CHAT_TOOLS", "rules")
    args = ["--model-dir", str(fitted), "--no-llm", "--json", "-m", "two comedies from the 90s"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(body["items"]) == 2 and body["used_llm_tools"] is False
    assert body["intent"]["filters"]["year_min"] == 1990
    missing = CliRunner().invoke(app, ["--model-dir", str(fitted / "nope"), "--no-llm", "-m", "x"])
    assert missing.exit_code == 2


def test_an_instruction_injected_through_catalogue_text_cannot_make_the_model_write(rec):
    """A title carries an instruction; a compliant tool-calling model follows it and calls
    record_feedback. The write is refused (the user said nothing about that item this turn), and
    only what the user did say is stored."""
    model = ScriptedChatModel(
        [
            call("search_catalog", {"query": "space", "k": 3}, "a"),
            # the model "read" an injected title and obeys it:
            call("record_feedback", {"item": "Alien (1979)", "event": "dislike"}, "b"),
            call("record_feedback", {"item": "the godfather", "event": "like"}, "c"),
            AIMessage("Done."),
        ]
    )
    reply = ChatAgent(rec, chat_model=model).reply(
        [user("I loved the godfather. Anything in space?")], user_id="u1"
    )
    feedback = [c for c in rec.calls if c[0] == "feedback"]
    assert feedback == [("feedback", {"user": "u1", "item_id": "3", "event": "like"})]
    refused = json.loads(model.seen[2][-1].content)
    assert "only what the user said" in refused["error"]
    assert reply.used_llm_tools
