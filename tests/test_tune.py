"""``hyrec tune`` on tiny data: the search spaces, the final check (the hybrid on the default
components against the tuned one), the leakage guarantee (scrambled test targets change nothing;
scrambled validation targets do), the saved files, and the CLI doors (``hyrec tune``, ``hyrec fit
--config``/``--tune``, ``hyrec eval --config``)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.cli.tune import parse_budget
from encoders.lightgcn import LightGCNConfig
from encoders.registry import SCORERS
from encoders.sasrec import SASRec, SASRecConfig, context_length
from encoders.search_space import Categorical, Fixed, Float, Int, check_space
from hyrec.data import Dataset
from retrieval.hybrid import HEAD_SEARCH_SPACE, HybridConfig, HybridRecommender
from retrieval.tuned import load_tuned, save_tuned
from retrieval.tuning import TuneConfig, stages, tune, tuning_data
from tests.conftest import checkerboard
from tests.test_api import fake_encoder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

runner = CliRunner()

BASE = HybridConfig(
    components=("als", "itemknn", "lightgcn", "pop"),
    sources=("als", "itemknn", "lightgcn", "pop"),
    params={"lightgcn": {"max_epochs": 8, "eval_every": 2, "dim": 32}},
    ranker="mlp",
)
SEARCH = TuneConfig(trials=3, warmup_epochs=2, prune_after=1, startup_trials=2)


def with_scrambled(ds: Dataset, from_end: int, seed: int = 1) -> Dataset:
    """``ds`` with each user's ``from_end``-th last event (1: the test target of leave-one-out,
    2: the validation target) moved to another random item at the same time."""
    inter = ds.interactions
    order = inter.chronological_order()
    users = inter.user[order]
    ends = np.cumsum(np.bincount(users, minlength=ds.n_users))
    pos_from_end = ends[users] - np.arange(len(order))
    rows = order[pos_from_end == from_end]
    rng = np.random.default_rng(seed)
    items = inter.item.copy()
    items[rows] = (items[rows] + rng.integers(1, ds.n_items, len(rows))) % ds.n_items
    events = [
        (ds.user_ids[u], ds.items[i].item_id, int(t), 4.0, "")
        for u, i, t in zip(inter.user, items, inter.timestamp, strict=True)
    ]
    return Dataset.from_records(ds.name, list(ds.items), events)


def search(ds: Dataset):
    return tune(tuning_data(ds), BASE, SEARCH)


@pytest.fixture(scope="module")
def board() -> Dataset:
    return checkerboard(n_users=60, n_items=30)


@pytest.fixture(scope="module")
def result(board):
    return search(board)


# ---- the search spaces
def test_space_entries_refuse_empty_ranges():
    for bad in (lambda: Float(1.0, 1.0), lambda: Float(0.0, 1.0, log=True), lambda: Int(3, 2)):
        with pytest.raises(ValueError, match="need"):
            bad()
    with pytest.raises(ValueError, match="at least two"):
        Categorical((1,))
    assert Int(10, 100, step=10).contains(50) and not Int(10, 100).contains(5.0)


def test_a_space_must_name_config_fields_and_hold_the_defaults():
    with pytest.raises(ValueError, match="does not have.*fields"):
        check_space({"width": Int(1, 4)}, LightGCNConfig)
    with pytest.raises(ValueError, match="outside its search space"):
        check_space({"dim": Categorical((8, 16))}, LightGCNConfig, LightGCNConfig())
    assert check_space({"dim": Fixed(8)}, LightGCNConfig, LightGCNConfig())["dim"].value == 8


def test_every_registered_space_fits_its_config():
    for name, entry in SCORERS.items():
        if entry.space:
            check_space(entry.space, type(entry.config))  # raises on a stale field
            for field in entry.space:
                assert hasattr(entry.config, field), (name, field)
    check_space(HEAD_SEARCH_SPACE, HybridConfig)
    assert "max_len" in SCORERS["sasrec"].space  # longer contexts are searched
    assert max(SCORERS["sasrec"].space["max_len"].choices) > 200


def test_stages_run_cheap_components_first_and_the_head_last():
    # pop has nothing to tune; the final check comes after the head
    assert stages(BASE) == ["itemknn", "als", "lightgcn", "head", "check"]


def test_budget_text_is_parsed_or_refused():
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400
    assert parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    for bad in ("30", "soon", "0m"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)
    with pytest.raises(ValueError, match="give a budget"):
        TuneConfig()


# ---- the data-shaped SASRec context
def test_context_length_follows_the_median_history():
    assert context_length(np.array([5, 7, 9]), 200) == 10  # at least 10
    assert context_length(np.array([30, 63, 400]), 200) == 70  # median 63, rounded up to 10
    assert context_length(np.full(9, 1000), 200) == 200  # capped by max_len
    assert context_length(np.array([], dtype=int), 200) == 10


def test_a_fitted_sasrec_records_the_context_it_used(board):
    data = tuning_data(board)
    model = SASRec(SASRecConfig(item_input="id", max_epochs=1, hidden=16, ffn=16)).fit(data)
    assert model.config.max_len == 10 and model.config.len_from_data is False  # 4 events each
    fixed = SASRecConfig(item_input="id", max_epochs=1, hidden=16, ffn=16, len_from_data=False)
    assert SASRec(replace(fixed, max_len=3)).fit(data).config.max_len == 3


# ---- the search
def test_the_search_starts_from_the_defaults_and_never_loses_on_validation(result):
    for stage, info in result.best.items():
        assert info["best_valid_ndcg@10"] >= info["default_valid_ndcg@10"], stage
        assert info["trials"] == 3 or stage == "check", stage
    check = result.best["check"]
    assert check["best_valid_ndcg@10"] >= check["tuned_valid_ndcg@10"]
    assert check["best_valid_ndcg@10"] == max(h["valid_ndcg@10"] for h in check["hybrids"])
    first = {r["stage"]: r for r in result.history if r["number"] == 0}
    assert first["als"]["params"]["factors"] == 32  # the ALSConfig default
    assert set(check["kept_tuned"]) <= set(result.config.params) <= {"als", "itemknn", "lightgcn"}
    assert result.config.params["lightgcn"]["max_epochs"] == 8  # base settings kept
    assert result.config.ranker in ("lightgbm", "mlp")
    states = {r["state"] for r in result.history}
    assert states <= {"COMPLETE", "PRUNED"}
    curves = [r["curve"] for r in result.history if r["stage"] == "lightgcn"]
    assert all(curves) and all(set(c) <= {"2", "4", "6", "8"} for c in curves)


def test_test_targets_never_reach_the_choice(board, result):
    """The leakage test: scrambling every test target gives the same search, trial for trial."""
    scrambled = search(with_scrambled(board, from_end=1))
    assert scrambled.config == result.config
    assert [(r["stage"], r["params"], r["value"]) for r in scrambled.history] == [
        (r["stage"], r["params"], r["value"]) for r in result.history
    ]
    assert any(r["stage"] == "check" for r in result.history)  # the final check fits too
    assert scrambled.best == result.best  # and it compares and keeps the same hybrids


def test_validation_targets_do_reach_it(board, result):
    """The same scramble one event earlier (the validation targets) changes what trials score:
    the leakage test above can fail."""
    scrambled = search(with_scrambled(board, from_end=2))
    assert [r["value"] for r in scrambled.history] != [r["value"] for r in result.history]


def test_a_wall_time_budget_ends_the_search(board):
    quick = tune(tuning_data(board), BASE, TuneConfig(budget_seconds=4, warmup_epochs=2))
    assert quick.seconds < 4 + 30  # the overrun is at most one trial per stage
    assert set(quick.best) == {"itemknn", "als", "lightgcn", "head", "check"}


def test_saved_files_round_trip(result, tmp_path):
    paths = save_tuned(result, tmp_path / "model", {"budget": None, "split": "validation"})
    assert load_tuned(paths["tuned"]) == result.config
    assert load_tuned(tmp_path / "model") == result.config  # the folder works too
    history = json.loads(paths["history"].read_text())
    assert len(history["trials"]) == sum(info["trials"] for info in result.best.values())
    for trial in history["trials"]:
        assert {"stage", "number", "state", "value", "params", "seconds"} <= set(trial)
    with pytest.raises(ValueError, match="not a tuned config"):
        (tmp_path / "other.json").write_text('{"kind": "hybrid"}')
        load_tuned(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="hyrec tune"):
        load_tuned(tmp_path / "nothing")


# ---- the final check
SMALL = HybridConfig(
    components=("als", "itemknn", "pop"), sources=("als", "itemknn", "pop"), ranker="mlp"
)
ONE = TuneConfig(trials=1)  # one trial a stage: the only setting a forced space allows


def force(monkeypatch, **settings) -> None:
    """Component searches that can pick only ``settings`` (each field ``Fixed``, so the first
    trial already sets it; ``{}``: the component is not searched)."""
    for name, values in settings.items():
        space = {k: Fixed(v) for k, v in values.items()}
        monkeypatch.setitem(SCORERS, name, replace(SCORERS[name], space=space))


def hybrid_valid(config: HybridConfig, data) -> float:
    report = HybridRecommender(config).fit(data).fit_report
    return float(report["ranker_valid_ndcg@10"][report["ranker"]])


def test_the_check_keeps_the_defaults_when_a_tuned_component_lowers_the_hybrid(board, monkeypatch):
    """ItemKNN forced to 1 neighbour (the only setting its stage may pick) lowers the hybrid: the
    check falls back to the default ItemKNN, and the config it writes scores what it measured."""
    force(monkeypatch, itemknn={"neighbours": 1}, als={})
    data = tuning_data(board)
    result = tune(data, SMALL, ONE)
    check = result.best["check"]
    assert check["tuned_valid_ndcg@10"] < check["default_valid_ndcg@10"]  # the trap is set
    assert check["reverted"] == ["itemknn"] and check["kept_tuned"] == []
    assert "itemknn" not in result.config.params  # back at its default
    assert check["best_valid_ndcg@10"] == max(h["valid_ndcg@10"] for h in check["hybrids"])
    assert check["best_valid_ndcg@10"] >= check["default_valid_ndcg@10"]
    # the default ItemKNN was never a trial: the check fitted it (the tuned hybrid's value is
    # the head stage's); the head's first trial wrote out the default depths, the same hybrid
    assert [h["fitted_here"] for h in check["hybrids"]] == [False, True]
    assert check["winner"] == "defaults" and check["trials"] == 1
    assert hybrid_valid(result.config, data) == check["best_valid_ndcg@10"]  # refit: the same


def test_the_check_keeps_tuned_components_that_help_the_hybrid(board, monkeypatch):
    """A bad default (1 neighbour) the search fixes is kept; each further tuned component is
    swapped in, cheapest first, and kept only if the hybrid does not lose."""
    force(monkeypatch, itemknn={"neighbours": 10}, als={"factors": 1, "iterations": 1})
    base = replace(SMALL, params={"itemknn": {"neighbours": 1}})
    result = tune(tuning_data(board), base, ONE)
    check = result.best["check"]
    assert check["best_valid_ndcg@10"] > check["default_valid_ndcg@10"]
    assert "itemknn" in check["kept_tuned"] and result.config.params["itemknn"] == {
        "neighbours": 10
    }
    steps = check["steps"]
    assert [s["component"] for s in steps] == ["itemknn", "als"] and check["not_tried"] == []
    running = max(h["valid_ndcg@10"] for h in check["hybrids"] if not h["tuned_components"])
    for step in steps:
        assert step["kept"] == (step["valid_ndcg@10"] >= running), step
        running = max(running, step["valid_ndcg@10"])
    assert check["best_valid_ndcg@10"] == max(h["valid_ndcg@10"] for h in check["hybrids"])
    als = result.config.params.get("als")
    assert als == ({"factors": 1, "iterations": 1} if "als" in check["kept_tuned"] else None)
    records = [r for r in result.history if r["stage"] == "check"]
    assert len(records) == check["trials"] == sum(h["fitted_here"] for h in check["hybrids"])


def test_the_check_swaps_components_only_while_its_time_lasts(board, monkeypatch):
    """With no time of its own the check still fits the default components (the guarantee), and
    tries no swap that would need a fit."""
    force(monkeypatch, itemknn={"neighbours": 10}, als={"factors": 1, "iterations": 1})
    base = replace(SMALL, params={"itemknn": {"neighbours": 1}})
    config = replace(ONE, budget_seconds=600, shares={**ONE.shares, "check": 0.0})
    check = tune(tuning_data(board), base, config).best["check"]
    assert check["steps"] == [] and check["not_tried"] == ["itemknn", "als"]
    assert check["trials"] == 1  # the defaults (the tuned head is the default one written out)
    assert check["winner"] == "tuned"  # the better of the hybrids it measured


def test_a_tuned_file_from_before_the_check_still_loads(result, tmp_path):
    from eval.tune import _check_lines

    body = json.loads(save_tuned(result, tmp_path, {"split": "validation"})["tuned"].read_text())
    assert body["best"]["check"]["winner"] in "\n".join(_check_lines(body["best"]["check"]))
    old = {**body, "version": 1, "best": {k: v for k, v in body["best"].items() if k != "check"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_tuned(tmp_path / "old.json") == result.config
    assert "predates" in "\n".join(_check_lines(old["best"].get("check")))


# ---- the command line
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A generic-format dataset folder (items.csv, events.csv) of 40 checkerboard users."""
    ds = checkerboard(n_users=40, n_items=24)
    folder = tmp_path_factory.mktemp("data") / "board"
    folder.mkdir()
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "genres"])
        for i, it in enumerate(ds.items):
            w.writerow([it.item_id, f"{'Alpha' if i < 12 else 'Beta'} story {i}", "A|B"[i >= 12]])
    with open(folder / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp"])
        inter = ds.interactions
        for u, i, t in zip(inter.user, inter.item, inter.timestamp, strict=True):
            w.writerow([ds.user_ids[u], ds.items[i].item_id, int(t)])
    return folder


@pytest.fixture
def fake_text(monkeypatch, tmp_path):
    """The CLI's text encoder replaced by a hashed bag of words (no model download or load)."""
    import encoders.text

    monkeypatch.setattr(encoders.text, "TextEncoder", lambda *a, **k: fake_encoder(tmp_path))


def test_tune_then_fit_with_the_saved_config(data_dir, tmp_path, fake_text):
    out = tmp_path / "model"
    common = ["--dataset", "board", "--data-dir", str(data_dir)]
    tuned = runner.invoke(
        app, ["tune", *common, "--out", str(out), "--trials", "1", "--profile", "quick"]
    )
    assert tuned.exit_code == 0, tuned.output
    for name in ("tuned.json", "tuning_history.json", "tuning_history.png"):
        assert (out / name).is_file(), name
    body = json.loads((out / "tuned.json").read_text())
    assert "test never read" in body["search"]["split"]
    assert set(body["best"]) == {"itemknn", "als", "sasrec", "head", "check"}
    assert body["version"] == 2 and body["best"]["check"]["winner"]
    fitted = runner.invoke(
        app, ["fit", *common, "--out", str(out), "--config", str(out / "tuned.json")]
    )
    assert fitted.exit_code == 0, fitted.output
    saved = json.loads((out / "hybrid.json").read_text())["config"]
    assert saved["params"] == body["hybrid"]["params"]  # the model is the tuned config


def test_cli_budget_errors_are_readable(data_dir, tmp_path):
    common = ["--dataset", "board", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    none = runner.invoke(app, ["tune", *common])
    assert none.exit_code == 2 and "give a budget" in none.output
    bad = runner.invoke(app, ["fit", *common, "--tune", "soon"])
    assert bad.exit_code == 2 and "write it as 90s, 30m" in bad.output
    both = runner.invoke(app, ["fit", *common, "--tune", "1m", "--config", str(tmp_path)])
    assert both.exit_code == 2 and "give one of them" in both.output


def test_eval_config_adds_the_tuned_hybrid(result, tmp_path, monkeypatch):
    from eval import harness
    from eval.cli import TUNED, _add_tuned

    monkeypatch.setattr(harness, "MODELS", dict(harness.MODELS))
    monkeypatch.setattr(harness, "TEXT_MODELS", harness.TEXT_MODELS)  # restored afterwards
    paths = save_tuned(result, tmp_path, {"budget": None, "split": "validation"})
    assert _add_tuned(paths["tuned"], ("hybrid",), jobs=1) == ("hybrid", TUNED)
    assert harness.MODELS[TUNED]().config == result.config
    assert TUNED in harness.TEXT_MODELS


def test_the_comparison_shares_unchanged_components_exactly(board):
    """eval.tune fits a component the search left alone once per seed for both hybrids; the
    tuned hybrid's numbers are the same as when it is fitted alone."""
    from eval.tune import compare, shared_components
    from hyrec.data import leave_one_out

    untuned = HybridConfig(
        components=("als", "itemknn", "pop"), sources=("als", "pop"), ranker="mlp"
    )
    tuned = replace(untuned, params={"als": {"factors": 16}}, per_source=30)
    assert shared_components(untuned, tuned, seed=1) == ["itemknn", "pop"]
    split = leave_one_out(board)
    both = compare(split, None, {"untuned": untuned, "tuned": tuned}, range(2))
    alone = compare(split, None, {"tuned": tuned}, range(2))
    assert both["tuned"]["per_seed"][0]["components_shared_with_untuned"] == ["itemknn", "pop"]
    assert [r["ndcg@10"] for r in both["tuned"]["per_seed"]] == [
        r["ndcg@10"] for r in alone["tuned"]["per_seed"]
    ]
    assert both["untuned"]["ndcg@10_sd"] is not None and len(both["untuned"]["per_seed"]) == 2
