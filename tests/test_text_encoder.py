"""TextEncoder (template, normalisation, on-disk cache, query side) with a scripted fake model,
and SemanticScorer on designed embeddings whose right answer is known. One integration test loads
the real packaged MiniLM."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import encoders.text as text_mod
from encoders.base import FitData, NotFittedError, Scorer
from encoders.semantic import SemanticConfig, SemanticScorer
from encoders.text import TextEncoder, TextEncoderConfig, render
from hyrec.data import Dataset, History, Item

DIM = 16


class FakeModel:
    """Bag of hashed words → a DIM-d vector, deliberately not unit norm; records its calls."""

    def __init__(self, prompts: dict[str, str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.kwargs: list[dict] = []
        if prompts is not None:
            self.prompts = prompts

    @property
    def seen(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def encode(self, sentences: list[str], **kwargs) -> np.ndarray:
        self.calls.append(list(sentences))
        self.kwargs.append(kwargs)
        prefix = kwargs.get("prompt") or ""
        out = np.zeros((len(sentences), DIM), dtype=np.float32)
        for row, s in enumerate(sentences):
            for word in (prefix + s).lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[row, h % DIM] += 1.0 + (h >> 8) % 3
        return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def movies() -> list[Item]:
    return [
        Item("1", "Toy Story (1995)", "", {"genres": ["Animation", "Comedy"], "year": 1995}),
        Item("2", "Alien (1979)", "A crew meets a creature.", {"genres": ["Horror", "Sci-Fi"]}),
        Item("3", "Heat (1995)", "", {"genres": ["Crime"], "year": 1995}),
        Item("4", "Fargo (1996)", "", {"genres": ["Crime", "Drama"], "year": 1996}),
    ]


def encoder(tmp_path: Path, model: FakeModel | None = None, **config) -> TextEncoder:
    cfg = TextEncoderConfig(
        cache_dir=tmp_path / "cache", show_progress=False, batch_size=3, **config
    )
    return TextEncoder(cfg, model=model or FakeModel(), model_id="fake")


# --- template ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        Item("a", "Toy Story (1995)", "", {"genres": ["Animation", "Comedy"], "year": 1995}),
        Item("b", "Plain", ""),
        Item("c", "Shoe", "Comfortable.", {"category": "Shoes", "brand": "Acme", "genres": ["X"]}),
        Item("d", "Book", "About things", {"year": 2001, "release_date": "01-Jan-2001"}),
    ],
)
def test_default_template_reproduces_item_text(item):
    assert render(item, TextEncoderConfig(cache_dir=None).template) == item.text()


def test_custom_template_and_empty_segments():
    item = Item("a", "Heat", "", {"genres": ["Crime", "Drama"], "tags": ["heist", "LA"]})
    assert render(item, "{genres} | {title} ({year})") == "Crime, Drama | Heat ()"
    rendered = render(item, "{title}. About: {description}. {attributes}", ("tags",))
    assert rendered == "Heat. Tags: heist, LA"


def test_unknown_template_field_is_rejected():
    with pytest.raises(ValueError, match="unknown field"):
        TextEncoderConfig(template="{title} {plot}")


# --- encoding and cache --------------------------------------------------------------------------


def test_items_are_unit_norm_float32(tmp_path):
    emb = encoder(tmp_path).encode_items(movies())
    assert emb.shape == (4, DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)


def test_model_sees_rendered_text(tmp_path):
    fake = FakeModel()
    encoder(tmp_path, fake, template="{title}").encode_items(movies()[:2])
    assert sorted(fake.seen) == ["Alien (1979)", "Toy Story (1995)"]


def test_second_run_embeds_nothing(tmp_path):
    fake = FakeModel()
    enc = encoder(tmp_path, fake)
    first = enc.encode_items(movies())
    assert enc.last_encoded == 4
    n_calls = len(fake.calls)
    second = enc.encode_items(movies())
    assert enc.last_encoded == 0 and len(fake.calls) == n_calls
    np.testing.assert_array_equal(first, second)


def test_changed_title_reembeds_only_that_item(tmp_path):
    fake = FakeModel()
    enc = encoder(tmp_path, fake)
    before = enc.encode_items(movies())
    changed = movies()
    changed[2] = Item("3", "Heat (1995, director's cut)", "", changed[2].attributes)
    fake.calls.clear()
    after = enc.encode_items(changed)
    assert enc.last_encoded == 1
    assert fake.seen == [enc.render(changed[2])]
    np.testing.assert_array_equal(np.delete(after, 2, 0), np.delete(before, 2, 0))


def test_cache_survives_a_new_encoder(tmp_path):
    first = encoder(tmp_path).encode_items(movies())
    fresh_model = FakeModel()
    enc = encoder(tmp_path, fresh_model)
    np.testing.assert_array_equal(enc.encode_items(movies()), first)
    assert enc.last_encoded == 0 and fresh_model.calls == []


def test_cache_is_per_model(tmp_path):
    encoder(tmp_path).encode_items(movies())
    cfg = TextEncoderConfig(cache_dir=tmp_path / "cache", show_progress=False)
    other = TextEncoder(cfg, model=FakeModel(), model_id="another-model")
    other.encode_items(movies())
    assert other.last_encoded == 4


def test_repeated_texts_embed_once(tmp_path):
    enc = encoder(tmp_path)
    emb = enc.encode_items(movies() + movies()[:2])
    assert enc.last_encoded == 4
    np.testing.assert_array_equal(emb[4:], emb[:2])


def test_no_cache_dir_always_embeds(tmp_path):
    enc = TextEncoder(TextEncoderConfig(cache_dir=None, show_progress=False), model=FakeModel())
    enc.encode_items(movies())
    enc.encode_items(movies())
    assert enc.last_encoded == 4


def test_failed_write_leaves_no_partial_shard(tmp_path, monkeypatch):
    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    enc = encoder(tmp_path)
    monkeypatch.setattr(text_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        enc.encode_items(movies())
    monkeypatch.undo()
    assert list((tmp_path / "cache").rglob("*.npz")) == []
    fresh = encoder(tmp_path)
    fresh.encode_items(movies())
    assert fresh.last_encoded == 4


def test_many_shards_are_merged_without_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "_MAX_SHARDS", 3)
    items = [Item(str(i), f"movie number {i}") for i in range(10)]
    enc = encoder(tmp_path)
    expected = np.concatenate([enc.encode_items([it]) for it in items])
    shards = list((tmp_path / "cache").rglob("shard-*.npz"))
    assert 1 <= len(shards) <= 4
    fresh = encoder(tmp_path)
    np.testing.assert_array_equal(fresh.encode_items(items), expected)
    assert fresh.last_encoded == 0


def test_queries_use_the_model_query_prompt(tmp_path):
    fake = FakeModel(prompts={"query": "query: ", "document": "passage: "})
    enc = encoder(tmp_path, fake)
    q = enc.encode_queries(["space horror", "crime drama"])
    assert q.shape == (2, DIM) and enc.last_encoded == 2
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-6)
    assert fake.kwargs[-1]["prompt"] == "query: "
    enc.encode_queries(["space horror"])
    assert enc.last_encoded == 1  # queries are not cached


def test_queries_without_a_prompt_are_plain(tmp_path):
    fake = FakeModel()
    enc = encoder(tmp_path, fake)
    np.testing.assert_allclose(
        enc.encode_queries(["Heat (1995)"])[0], enc.encode_texts(["Heat (1995)"])[0], rtol=1e-6
    )
    assert "prompt" not in fake.kwargs[0]


# --- SemanticScorer ------------------------------------------------------------------------------


def clustered(rng: np.random.Generator, per_cluster: int = 5) -> np.ndarray:
    """Items 0..4 near axis 0, items 5..9 near axis 1, in 8 dims."""
    centres = np.eye(8, dtype=np.float32)[:2]
    emb = np.repeat(centres, per_cluster, axis=0) + 0.1 * rng.standard_normal((2 * per_cluster, 8))
    return emb.astype(np.float32)


def fit_data(embeddings: np.ndarray | None, n_items: int = 10) -> FitData:
    items = [Item(str(i), f"item {i}") for i in range(n_items)]
    ds = Dataset.from_records("toy", items, [("u0", "0", 1, 1.0, ""), ("u1", "5", 2, 1.0, "")])
    return FitData(ds, ds.interactions, item_embeddings=embeddings)


def test_semantic_is_a_scorer(rng):
    assert isinstance(SemanticScorer().fit(fit_data(clustered(rng))), Scorer)


def test_semantic_recommends_the_users_cluster(rng):
    scorer = SemanticScorer().fit(fit_data(clustered(rng)))
    history = History(np.array([0, -1]), (np.array([0, 1, 2]), np.array([6, 7])), 10)
    scores = scorer.score(history)
    assert scores.shape == (2, 10) and scores.dtype == np.float32
    assert set(np.argsort(-scores[0])[:5]) == {0, 1, 2, 3, 4}
    assert set(np.argsort(-scores[1])[:5]) == {5, 6, 7, 8, 9}


def test_semantic_follows_the_latest_items(rng):
    scorer = SemanticScorer(SemanticConfig(recent=3, decay=0.5)).fit(fit_data(clustered(rng)))
    # an old taste for cluster A beyond the window, then two B items and one A item, B latest
    history = History.of_items([0, 1, 2, 3, 4, 0, 5, 6], 10)
    assert set(np.argsort(-scorer.score(history)[0])[:5]) == {5, 6, 7, 8, 9}


def test_semantic_matches_a_reference_computation(rng):
    emb = rng.standard_normal((10, 8)).astype(np.float32)
    config = SemanticConfig(recent=4, decay=0.8)
    scorer = SemanticScorer(config).fit(fit_data(emb))
    seq = np.array([9, 3, 3, 7, 1, 2])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    recent = seq[-4:][::-1]
    q = sum(0.8**k * unit[i] for k, i in enumerate(recent))
    expected = unit @ (q / np.linalg.norm(q))
    scores = scorer.score(History.of_items(seq, 10))[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_semantic_empty_history_scores_zero(rng):
    scorer = SemanticScorer().fit(fit_data(clustered(rng)))
    scores = scorer.score(History(np.array([-1, 1]), (np.zeros(0, np.int32), np.array([5])), 10))
    np.testing.assert_array_equal(scores[0], 0.0)
    assert scores[1].max() > 0


def test_semantic_needs_embeddings():
    with pytest.raises(ValueError, match="TextEncoder"):
        SemanticScorer().fit(fit_data(None))
    with pytest.raises(ValueError, match="one row per item"):
        SemanticScorer().fit(fit_data(np.ones((3, 4), np.float32)))
    with pytest.raises(NotFittedError):
        SemanticScorer().score(History.of_items([0], 10))


def test_semantic_save_load_round_trip(tmp_path, rng):
    scorer = SemanticScorer(SemanticConfig(recent=5, decay=0.7)).fit(fit_data(clustered(rng)))
    scorer.save(tmp_path / "semantic")
    loaded = SemanticScorer.load(tmp_path / "semantic")
    assert loaded.config == scorer.config
    history = History(np.array([0, -1]), (np.array([0, 1, 6]), np.array([9, 2, 2])), 10)
    np.testing.assert_array_equal(loaded.score(history), scorer.score(history))


# --- the real model ------------------------------------------------------------------------------


@pytest.mark.integration
def test_packaged_minilm(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    enc = TextEncoder(TextEncoderConfig(cache_dir=tmp_path, show_progress=False))
    docs = [
        Item("1", "Alien (1979)", "", {"genres": ["Horror", "Sci-Fi"]}),
        Item("2", "Toy Story (1995)", "", {"genres": ["Animation", "Children's", "Comedy"]}),
    ]
    items = enc.encode_items(docs)
    assert [enc.render(it) for it in docs] == [
        "Alien (1979). Genres: Horror, Sci-Fi",
        "Toy Story (1995). Genres: Animation, Children's, Comedy",
    ]
    assert items.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
    query = enc.encode_queries(["space alien horror"])[0]
    alien, toy_story = items @ query
    assert alien > toy_story
    enc.encode_items(docs)
    assert enc.last_encoded == 0


class _SlowModel:
    """Sleeps like a forward pass (releasing the GIL), so that threads interleave."""

    def encode(self, texts, **kwargs):
        time.sleep(0.002)
        return np.ones((len(texts), 4), np.float32)


def test_concurrent_encodes_share_one_cache(tmp_path):
    """Concurrent upserts encode outside the model lock, each adding a shard; a compaction in one
    thread must not iterate the shard set while another adds to it (a sporadic 500 on
    ``PUT /v1/items`` in the chaos bench: "Set changed size during iteration")."""
    config = TextEncoderConfig(cache_dir=tmp_path, show_progress=False)
    encoder = TextEncoder(config, model=_SlowModel())
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def upserts(n: int) -> None:
        start.wait()
        for r in range(60):
            try:
                encoder.encode_items([Item(f"{n}-{r}", f"item {n}-{r}")])
            except Exception as e:  # collected and asserted below
                errors.append(e)

    threads = [threading.Thread(target=upserts, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} failed, first: {errors[0]!r}"
    again = TextEncoder(config, model=_SlowModel())
    again.encode_items([Item(f"{n}-{r}", f"item {n}-{r}") for n in range(8) for r in range(60)])
    assert again.last_encoded == 0  # every vector reached the disk cache
