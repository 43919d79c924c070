"""Fit profiles (agent.config) and the fit's progress lines (agent.cli.progress)."""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent.cli.progress import PROGRESS_LOGGERS, FitProgress, fit_summary
from agent.config import FIT_PROFILES, fit_profile, profile_of
from encoders.registry import SCORERS
from retrieval.hybrid import HybridConfig
from tests.conftest import cheap_hybrid

LINE = re.compile(r"^\[\s*\d+\.\d s\] [\w.-]+: .+$")


# ---- profiles ----------------------------------------------------------------------------------


def test_profiles_are_named_and_typed() -> None:
    assert FIT_PROFILES == ("quick", "full")
    for name in FIT_PROFILES:
        profile = fit_profile(name)
        assert profile.name == name and isinstance(profile.hybrid, HybridConfig)
        assert profile.about
    assert fit_profile("full").hybrid == HybridConfig()  # full = every validated default


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="quick, full"):
        fit_profile("fast")


def test_quick_profile_trains_less_than_full() -> None:
    quick, full = fit_profile("quick").hybrid, fit_profile("full").hybrid
    assert set(quick.components) < set(full.components)  # the cheap parts, not new ones
    assert "sasrec" in quick.components  # the best single component stays
    sasrec = SCORERS["sasrec"].config
    assert quick.params["sasrec"]["max_epochs"] < sasrec.max_epochs
    assert quick.params["sasrec"]["max_len"] < sasrec.max_len
    assert quick.ranker != "auto"  # one head, not both


def test_profile_of_recognises_saved_configs() -> None:
    for name in FIT_PROFILES:
        config = fit_profile(name).hybrid
        # what a saved model reads back: tuples become lists, mappings plain dicts
        loaded = replace(
            config,
            components=list(config.components),
            params=json.loads(json.dumps(config.params)),
        )
        assert profile_of(loaded) == name
    assert profile_of(replace(HybridConfig(), seed=3)) is None


def test_cli_rejects_an_unknown_profile(tmp_path) -> None:
    from agent.cli.main import app

    done = CliRunner().invoke(app, ["fit", "--out", str(tmp_path / "m"), "--profile", "fast"])
    assert done.exit_code == 2 and "unknown fit profile 'fast'" in done.output


# ---- progress lines (not a terminal) ------------------------------------------------------------


def _plain(every: float = 0.0) -> tuple[FitProgress, io.StringIO]:
    stream = io.StringIO()
    console = Console(file=io.StringIO(), force_terminal=False)
    return FitProgress(console, every=every, stream=stream), stream


def _record(logger: str, **info) -> None:
    logging.getLogger(logger).info("message %s", "x", extra={"progress": info})


def test_plain_lines_show_what_how_far_and_the_validation_score() -> None:
    progress, stream = _plain()
    with progress:
        _record("encoders.sasrec", stage="sasrec", label="component 1/6: sasrec", total=3)
        for epoch, ndcg in enumerate((0.05, 0.07, 0.06), 1):
            _record("encoders.sasrec", stage="sasrec", step=epoch, total=3, valid=ndcg, best=0.07)
        _record("retrieval.hybrid", stage="sasrec", done=True, seconds=4.2, valid=0.07)
    lines = stream.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert "sasrec: component 1/6: sasrec" in lines[0]
    assert any("2/3, valid NDCG@10 0.0700 (best 0.0700)" in line for line in lines)
    assert "sasrec: done in 4.2 s — 3/3, valid NDCG@10 0.0700" in lines[-1]


def test_plain_lines_are_periodic_not_one_per_step() -> None:
    progress, stream = _plain(every=60.0)
    with progress:
        _record("encoders.lightgcn", stage="lightgcn", label="component 2/6: lightgcn")
        for epoch in range(1, 50):
            _record("encoders.lightgcn", stage="lightgcn", step=epoch, total=50, valid=0.01)
        _record("encoders.lightgcn", stage="lightgcn", done=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the start and the end; steps only every 60 s
    assert "done in" in lines[1] and "49/50" in lines[1]


def test_warnings_show_and_other_info_records_do_not() -> None:
    progress, stream = _plain()
    with progress:
        logging.getLogger("retrieval.hybrid").info("hybrid fitted: {...a big dict...}")
        logging.getLogger("agent.api").warning("feedback stored late")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "warning: agent.api: feedback stored late" in lines[0]


def test_loggers_are_restored_after_the_fit() -> None:
    before = {
        n: (logging.getLogger(n).level, logging.getLogger(n).propagate) for n in PROGRESS_LOGGERS
    }
    progress, _ = _plain()
    with progress:
        assert all(not logging.getLogger(n).propagate for n in PROGRESS_LOGGERS)
    after = {
        n: (logging.getLogger(n).level, logging.getLogger(n).propagate) for n in PROGRESS_LOGGERS
    }
    assert after == before
    assert all(not logging.getLogger(n).handlers for n in PROGRESS_LOGGERS)


def test_a_terminal_gets_a_live_display_and_no_plain_lines() -> None:
    stream = io.StringIO()
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with FitProgress(console, stream=stream) as progress:
        assert progress.live
        _record("encoders.sasrec", stage="sasrec", label="component 1/6: sasrec", total=2)
        _record("encoders.sasrec", stage="sasrec", step=1, total=2, valid=0.05)
        _record("encoders.sasrec", stage="sasrec", done=True)
    assert stream.getvalue() == ""
    assert "sasrec: component 1/6: sasrec" in screen.getvalue()


def test_a_real_fit_reports_every_stage(board) -> None:
    """The hybrid's own records: the store, each component with its validation score, the lists
    and the head — and its report holds each component's validation NDCG@10."""
    from encoders.base import FitData
    from hyrec.data import leave_one_out
    from retrieval.hybrid import HybridRecommender

    split = leave_one_out(board)
    vectors = np.eye(board.n_items, 8, dtype=np.float32) + 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = FitData(board, split.train, split.task("valid"), vectors)
    progress, stream = _plain()
    with progress:
        model = HybridRecommender(cheap_hybrid()).fit(data)
    text = stream.getvalue()
    for stage in (
        "store",
        "als",
        "itemknn",
        "semantic",
        "pop",
        "valid-lists",
        "train-lists",
        "head",
    ):
        assert f"{stage}: done in" in text, text
    assert re.search(r"als: done in [\d.]+ s — valid NDCG@10 0\.\d{4}", text)
    report = model.fit_report
    assert set(report["component_valid_ndcg@10"]) == {"als", "itemknn", "semantic", "pop"}
    table = fit_summary(report, profile="quick", seconds=1.0)
    shown = io.StringIO()
    Console(file=shown, width=120).print(table)
    assert "profile quick" in shown.getvalue() and "hybrid" in shown.getvalue()
    for name in report["component_valid_ndcg@10"]:
        assert name in shown.getvalue()
