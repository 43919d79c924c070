"""The Python API on the checkerboard: typed results, cold start, context, similar items, save/load,
and the LLM stages with scripted models (failures become named fallbacks, never exceptions)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from agent.api import (
    Recommendation,
    Recommendations,
    Recommender,
    RecommenderConfig,
    UnknownItemError,
)
from agent.llm import LLMTimeout, LLMUnavailable
from agent.stages.rerank import RerankConfig
from encoders.text import TextEncoder, TextEncoderConfig
from hyrec.data import Dataset, Item
from retrieval.filters import Filter
from tests.conftest import cheap_hybrid, checkerboard
from tests.fakes import ScriptedLLM

DIM = 32
N_ITEMS = 24  # items 0-11 have genre "A", 12-23 genre "B"; even users like A, odd users B


class BagOfWords:
    """A deterministic stand-in for MiniLM: hashed words → a DIM-d vector."""

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        out = np.zeros((len(sentences), DIM), dtype=np.float32)
        for row, s in enumerate(sentences):
            for word in s.lower().replace(".", " ").replace(",", " ").split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
            out[row, -1] += 0.01  # never all zeros
        return out


def fake_encoder(cache: Path) -> TextEncoder:
    config = TextEncoderConfig(cache_dir=cache, show_progress=False)
    return TextEncoder(config, model=BagOfWords(), model_id="bag-of-words")


def tiny_dataset() -> Dataset:
    ds = checkerboard(n_users=40, n_items=N_ITEMS)
    items = tuple(
        Item(it.item_id, f"{'Alpha' if i < 12 else 'Beta'} story {i}", "", it.attributes)
        for i, it in enumerate(ds.items)
    )
    return Dataset(ds.name, items, ds.user_ids, ds.interactions)


CHEAP = RecommenderConfig(
    hybrid=cheap_hybrid(),
    rerank=RerankConfig(window=10),
    llm_reasons=2,
)


def build_model(
    folder: Path,
    cache: Path,
    encoder: TextEncoder | None = None,
    config: RecommenderConfig = CHEAP,
) -> Path:
    """Fit the tiny hybrid and save it to ``folder`` (seconds)."""
    model = Recommender.fit(tiny_dataset(), config, encoder=encoder or fake_encoder(cache))
    model.save(folder)
    model.close()
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model")
    return build_model(root / "model", root / "cache"), root / "cache"


@pytest.fixture
def model(saved, tmp_path):
    folder, cache = saved
    with Recommender.load(
        folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    ) as m:
        yield m


def block(item_id: str) -> str:
    return "A" if int(item_id) < 12 else "B"


def test_known_user_gets_typed_results_from_their_block(model):
    recs = model.recommend("u0", k=5)  # even user: block A
    assert isinstance(recs, Recommendations) and recs.user_id == "u0"
    assert len(recs.items) == 5 and recs.fallbacks == () and recs.profile is None
    seen = {model.catalogue.items[i].item_id for i in model._state("u0", None).sequence}
    for rec in recs.items:
        assert isinstance(rec, Recommendation)
        assert rec.item_id not in seen
        assert rec.title == model.catalogue.items[int(rec.item_id)].title
        assert rec.sources and set(rec.contributions) == {"als", "itemknn", "semantic", "pop"}
        assert isinstance(rec.reason, str) and rec.reason
    assert [block(r.item_id) for r in recs.items].count("A") >= 4
    scores = [r.score for r in recs.items]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_the_cold_start_path_not_an_exception(model):
    recs = model.recommend("nobody-ever", k=6, explain=False)
    assert recs.user_id == "nobody-ever" and len(recs.items) == 6
    assert len({r.item_id for r in recs.items}) == 6
    anonymous = model.recommend(None, k=6, explain=False)
    assert [r.item_id for r in anonymous.items] == [r.item_id for r in recs.items]


def test_history_alone_steers_an_anonymous_user(model):
    recs = model.recommend(history=["12", "13", "14", "15"], k=5, explain=False)
    assert [block(r.item_id) for r in recs.items].count("B") >= 4
    assert not {"12", "13", "14", "15"} & {r.item_id for r in recs.items}


def test_unknown_history_item_and_bad_k_are_clear_errors(model):
    with pytest.raises(UnknownItemError, match="'nope'"):
        model.recommend(history=["nope"])
    with pytest.raises(ValueError, match="k must be at least 1"):
        model.recommend("u0", k=0)


def test_filters_and_exclusions_hold(model):
    recs = model.recommend("u0", k=5, filters=Filter(genres_any=("B",)), explain=False)
    assert recs.items and all(block(r.item_id) == "B" for r in recs.items)
    first = model.recommend("u0", k=3, explain=False).items[0].item_id
    again = model.recommend("u0", k=3, exclude=[first], explain=False)
    assert first not in {r.item_id for r in again.items}


def test_query_text_shifts_a_cold_start_list(model):
    if "query_vectors" not in model.hybrid.recommend_batch.__code__.co_varnames:
        pytest.skip("HybridRecommender.recommend_batch has no query_vectors yet (H1)")
    recs = model.recommend(None, k=5, query="beta story", explain=False)
    assert [block(r.item_id) for r in recs.items].count("B") >= 4


def test_context_is_parsed_into_filters_and_query_text(model):
    recs = model.recommend("u0", k=5, context="something from before 1995", explain=False)
    assert recs.items and all(int(r.item_id) <= 4 for r in recs.items)  # year = 1990 + id
    recs = model.recommend("u0", k=5, context="a beta story, no genre A", explain=False)
    assert len(recs.items) == 5 and all(block(r.item_id) == "B" for r in recs.items)
    assert all("query" in r.contributions for r in recs.items)  # the query text was embedded
    cold = model.recommend("someone-new", k=4, context="tonight with the kids", explain=False)
    assert len(cold.items) == 4


def test_search_finds_text_matches(model):
    hits = model.search("beta story 17", k=3)
    assert hits[0].item_id == "17" and hits[0].sources == ("query",)
    with pytest.raises(ValueError, match="empty"):
        model.search("  ")


def test_similar_items_come_from_the_same_block(model):
    if not hasattr(model.hybrid, "similar"):
        pytest.skip("HybridRecommender.similar is not there yet (H1)")
    sims = model.similar_items("3", k=5)
    assert len(sims) == 5 and "3" not in {s.item_id for s in sims}
    assert [block(s.item_id) for s in sims].count("A") >= 4
    with pytest.raises(UnknownItemError, match="not in the catalogue"):
        model.similar_items("999")


def test_explain_returns_a_reason_and_names_unknown_items(model):
    assert isinstance(model.explain("u0", "5"), str) and model.explain("u0", "5")
    with pytest.raises(UnknownItemError):
        model.explain("u0", "999")


def test_an_item_the_user_liked_is_not_explained_by_itself(model):
    model.feedback("u0", "20", "like")  # u0 likes block A; item 20 is in block B
    reason = model.explain("u0", "20")
    assert reason and "Beta story 20" not in reason


def test_save_load_round_trip_keeps_config_and_answers(saved, model, tmp_path):
    folder, cache = saved
    body = json.loads((folder / "recommender.json").read_text())
    assert body["config"]["rerank"]["window"] == 10 and len(body["salt"]) == 32
    with Recommender.load(
        folder, encoder=fake_encoder(cache), feedback_path=tmp_path / "other.sqlite3"
    ) as again:
        a = model.recommend("u3", k=5, explain=False)
        b = again.recommend("u3", k=5, explain=False)
        assert [r.item_id for r in a.items] == [r.item_id for r in b.items]
        assert again.config.llm_reasons == 2


def test_out_of_range_settings_are_refused_naming_them(saved, tmp_path):
    with pytest.raises(ValueError, match=r"profile_share=1\.5.*llm_budget > 0"):
        RecommenderConfig(profile_share=1.5)
    folder, cache = saved
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    body = json.loads((copy / "recommender.json").read_text())
    body["config"]["llm_budget"] = 0
    (copy / "recommender.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match=r"recommender\.json: RecommenderConfig: llm_budget=0"):
        Recommender.load(copy, encoder=fake_encoder(cache))


def test_load_of_a_missing_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved hybrid model"):
        Recommender.load(tmp_path)


# ---- the LLM path, scripted ----------
def llm_model(saved, tmp_path, llm) -> Recommender:
    folder, cache = saved
    return Recommender.load(
        folder, llm=llm, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    )


def test_a_dead_llm_degrades_every_stage_and_says_so(saved, tmp_path):
    with llm_model(saved, tmp_path, ScriptedLLM([LLMUnavailable("down")], repeat_last=True)) as m:
        recs = m.recommend("u1", k=4)
    assert len(recs.items) == 4 and all(r.reason for r in recs.items)
    assert any(f.startswith("rerank:") for f in recs.fallbacks)
    assert any(f.startswith("profile:") for f in recs.fallbacks)
    assert recs.profile is not None and recs.profile.source == "fallback"
    assert [block(r.item_id) for r in recs.items].count("B") >= 3


def test_a_slow_llm_times_out_into_fallbacks(saved, tmp_path):
    llm = ScriptedLLM([LLMTimeout("slow")], repeat_last=True)
    with llm_model(saved, tmp_path, llm) as m:
        recs = m.recommend("u2", k=3)
    assert len(recs.items) == 3 and recs.fallbacks


def test_prompts_never_carry_the_raw_user_id(saved, tmp_path):
    llm = ScriptedLLM(["not json"], repeat_last=True)
    with llm_model(saved, tmp_path, llm) as m:
        m.recommend("u7", k=3)
    assert llm.calls
    for call in llm.calls:
        text = " ".join(msg.content for msg in call["messages"])
        assert "u7" not in text.split() and '"u7"' not in text


UNIVERSAL = json.dumps(  # one answer that fits the profile, re-rank (listwise) and reason prompts
    {
        "likes": ["beta stories"],
        "dislikes": [],
        "recent_shift": "more beta stories lately",
        "constraints": [],
        "summary": "Enjoys beta stories.",
        "ranking": ["B", "A"],
        "because": 1,
        "reason": "it continues a story you liked",
    }
)


def test_a_working_llm_reranks_profiles_and_explains_without_fallbacks(saved, tmp_path):
    llm = ScriptedLLM([UNIVERSAL], repeat_last=True)
    with llm_model(saved, tmp_path, llm) as m:
        plain = m.recommend("u1", k=4, explain=False)
        recs = m.recommend("u1", k=4)
    assert recs.fallbacks == (), recs.fallbacks
    assert recs.profile is not None and recs.profile.source == "llm"
    assert [r.score for r in recs.items] == sorted((r.score for r in recs.items), reverse=True)
    assert all(r.reason for r in recs.items)
    assert "it continues a story you liked" in recs.items[0].reason  # the LLM wrote the top reasons
    assert "it continues a story you liked" not in (recs.items[-1].reason or "")  # llm_reasons=2
    assert [block(r.item_id) for r in recs.items].count("B") >= 3
    assert [r.item_id for r in plain.items] != [] and plain.fallbacks == ()


def test_one_request_spends_at_most_its_llm_budget(saved, tmp_path):
    folder, cache = saved
    llm = ScriptedLLM([UNIVERSAL], repeat_last=True, delay=0.4)  # every call takes 0.4 s
    config = json.loads((folder / "recommender.json").read_text())
    with llm_model(saved, tmp_path, llm) as m:
        m.config = dataclasses.replace(m.config, llm_budget=1.0)
        t0 = time.perf_counter()
        recs = m.recommend("u1", k=4)
        seconds = time.perf_counter() - t0
    assert len(recs.items) == 4 and all(r.reason for r in recs.items)
    assert seconds < 1.0 + 0.5  # without the budget: profile, 1-2 re-rank calls, 2 reasons
    assert recs.fallbacks and config["config"]["llm_budget"] == 30.0


def test_a_nested_budget_never_extends_the_outer_one():
    from agent.llm.guard import GuardedLLM

    seen = []
    llm = GuardedLLM(ScriptedLLM([lambda messages: seen.append(1) or "ok"], repeat_last=True))
    with llm.budget(0.2):
        with llm.budget(5.0):
            llm.complete([], timeout=None)
        time.sleep(0.25)
        with pytest.raises(LLMTimeout, match="budget is spent"), llm.budget(5.0):
            llm.complete([])
    llm.complete([])  # no budget outside a request
    assert len(seen) == 2


def test_a_request_that_finds_every_llm_slot_taken_answers_at_once_with_fallbacks(saved, tmp_path):
    """One request holds the backend's only slot for 3 s a call; another request does not queue
    behind it: it gets its deterministic answer within a second, its LLM stages saying why."""
    import threading

    import httpx

    from agent.llm.openai_backend import OpenAICompatibleLLM
    from agent.llm.settings import LLMSettings

    calls = []
    done = threading.Event()  # set once the second request is answered: no more waiting

    def slow(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        done.wait(3.0)
        message = {"role": "assistant", "content": UNIVERSAL}
        return httpx.Response(200, json={"choices": [{"message": message}], "model": "m"})

    settings = LLMSettings(base_url="http://llm.test/v1", max_concurrency=1, slot_wait=0.1)
    llm = OpenAICompatibleLLM(settings, transport=httpx.MockTransport(slow))
    with llm_model(saved, tmp_path, llm) as m:
        first = threading.Thread(target=m.recommend, args=("u1",), kwargs={"k": 4})
        first.start()
        end = time.monotonic() + 5
        while not calls and time.monotonic() < end:
            time.sleep(0.01)
        t0 = time.perf_counter()
        recs = m.recommend("u2", k=4)
        seconds = time.perf_counter() - t0
        done.set()
        first.join()
    assert len(recs.items) == 4 and all(r.reason for r in recs.items)
    assert seconds < 1.5, seconds
    assert any("LLM busy" in f for f in recs.fallbacks), recs.fallbacks


def test_once_a_request_finds_the_llm_busy_its_later_calls_do_not_wait_again():
    from agent.llm import LLMBusy
    from agent.llm.guard import GuardedLLM

    inner = ScriptedLLM([LLMBusy("LLM busy: no free slot"), "ok"], repeat_last=True)
    llm = GuardedLLM(inner)
    with llm.budget(5.0):
        with pytest.raises(LLMBusy):
            llm.complete([])
        with pytest.raises(LLMBusy, match="earlier call of this request"), llm.budget(1.0):
            llm.complete([])  # a nested stage's budget: still the same request
        assert len(inner.calls) == 1  # the second call never reached the backend
    with llm.budget(5.0):  # the next request tries again
        assert llm.complete([]).text == "ok"
    assert len(inner.calls) == 2


def test_forgetting_a_user_after_an_upsert_leaves_a_model_that_reloads(saved, tmp_path):
    import shutil

    folder, cache = saved
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    with Recommender.load(copy, encoder=fake_encoder(cache)) as m:
        assert m.upsert_items([Item("new-1", "Alpha story new", "", {"genres": ["A"]})]) == 1
        assert m.forget_user("u2") > 0
    with Recommender.load(copy, encoder=fake_encoder(cache)) as again:  # replays the upsert
        assert again.n_items == N_ITEMS + 1
        assert len(again.recommend("u0", k=5).items) == 5
        assert "u2" not in again.catalogue.user_index


def test_refitting_into_a_served_folder_keeps_its_feedback_and_salt(tmp_path):
    folder, cache = tmp_path / "model", tmp_path / "cache"
    build_model(folder, cache)
    with Recommender.load(folder, encoder=fake_encoder(cache)) as served:
        served.feedback("u0", "3", "like")
    salt = json.loads((folder / "recommender.json").read_text())["salt"]
    build_model(folder, cache)  # a second fit saved into the same folder
    assert json.loads((folder / "recommender.json").read_text())["salt"] == salt
    with Recommender.load(folder, encoder=fake_encoder(cache)) as again:
        assert again.store.count("u0") == 1


def test_a_retried_upsert_stores_what_a_failed_store_write_had_served(model, monkeypatch):
    item = Item("new-2", "Beta story new", "", {"genres": ["B"]})
    real = model.store.upsert_items

    def disk_full(items):
        raise OSError("disk full")

    monkeypatch.setattr(model.store, "upsert_items", disk_full)
    with pytest.raises(OSError):
        model.upsert_items([item])  # served, not stored: the client sees an error
    monkeypatch.setattr(model.store, "upsert_items", real)
    assert model.upsert_items([item]) == 0  # the retry adds nothing new to the catalogue …
    assert "new-2" in {it.item_id for it in model.store.items()}  # … but stores the item


def test_feedback_never_waits_behind_a_slow_llm_request_or_a_catalogue_writer(saved, tmp_path):
    """A recommendation whose LLM takes 10 s, then an upsert (which needs the write lock), then
    feedback for another user: the feedback is acknowledged at once, and the upsert does not
    wait for the LLM either (the model lock covers state reading and scoring, not LLM calls)."""
    import threading

    folder, cache = saved
    slow = ScriptedLLM(["{}"], delay=10.0, repeat_last=True)
    with Recommender.load(
        folder, llm=slow, encoder=fake_encoder(cache), feedback_path=tmp_path / "fb.sqlite3"
    ) as m:
        m.config = dataclasses.replace(m.config, llm_budget=12.0)
        request = threading.Thread(target=m.recommend, args=("u1",), kwargs={"k": 4})
        request.start()
        deadline = time.monotonic() + 5
        while not slow.calls and time.monotonic() < deadline:  # the LLM call is under way
            time.sleep(0.01)
        assert slow.calls, "the slow request never reached its LLM call"
        upsert = threading.Thread(target=m.upsert_items, args=([Item("new-1", "A new one")],))
        t0 = time.perf_counter()
        upsert.start()
        upsert.join(timeout=5)
        upsert_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        receipt = m.feedback("u2", "3", "like")
        feedback_seconds = time.perf_counter() - t0
        assert request.is_alive()  # the slow LLM call is still running
        slow.release()  # shown: no need to wait out the other 9 s
        request.join(timeout=30)
    assert receipt.event_id > 0
    assert feedback_seconds < 0.2, f"feedback took {feedback_seconds:.3f} s"
    assert not upsert.is_alive() and upsert_seconds < 2.0, f"upsert took {upsert_seconds:.1f} s"


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"category": 5}, "genres must be a string or a list of strings"),
        ({"genres": ["Comedy", 3]}, "genres must be a string or a list of strings"),
        ({"year": 1e29}, "is not a whole year"),
        ({"year": "soon"}, "is not a whole year"),
        ({"rating": float("nan")}, "not a finite number"),
        ({"nested": {"a": 1}}, "dict values are not allowed"),
        ({f"k{i}": 1 for i in range(65)}, "at most 64"),
        ({"tags": ["x"] * 101}, "at most 100"),
        ({"blurb": "x" * 2001}, "over 2000 characters"),
    ],
)
def test_an_upsert_with_attributes_no_stage_can_read_is_refused(model, attributes, message):
    before = model.catalogue.n_items
    with pytest.raises(ValueError, match=message):
        model.upsert_items([Item("bad-1", "Bad", attributes=attributes)])
    assert model.catalogue.n_items == before and not model.store.items()


def test_an_upserted_item_with_a_category_is_served_with_the_llm_on(saved, tmp_path):
    """A string category is the item's genre for every stage (one reading): with the LLM
    stages on, a user who liked it gets an answer, not a TypeError."""
    folder, cache = saved
    with llm_model(saved, tmp_path, ScriptedLLM(["{}"], repeat_last=True)) as m:
        m.upsert_items([Item("cat-1", "Catted", attributes={"category": "Gadgets"})])
        m.feedback("u5", "cat-1", "like")
        recs = m.recommend("u5", k=3)
    assert len(recs.items) == 3
    assert m.catalogue.items[m.catalogue.item_index["cat-1"]].genres == ("Gadgets",)
