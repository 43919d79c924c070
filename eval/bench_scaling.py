"""Fit cost as the data grows: wall seconds and peak RSS per stage of ``hyrec fit`` (every
component + the ranking head, default settings) on synthetic data of 10⁵, 10⁶ and 10⁷
interactions and on ML-100K (``python -m eval.bench_scaling``; writes
``eval/results/scaling.json`` and ``scaling.md``).

Each size runs in its own process, so its peak RSS is its own. Inside it, a thread samples the
process's resident set (``/proc/self/statm``) every 50 ms and the hybrid's progress records
(the ``extra={"progress": ...}`` log records :mod:`retrieval.hybrid` and the components write)
mark where each stage starts and ends; a stage's peak RSS is the largest sample taken while it
ran (``ru_maxrss`` is the whole run's). The stages are those of ``hyrec fit``
(``agent.cli.main._fit_recommender`` → ``Recommender.fit``): data, text, split, item store,
each component, ANN indexes, head-training lists, validation lists, the head, save.

Shapes (interactions are what scale; users and items grow slower, as in real logs):
see :data:`SHAPES`. Item text is encoded with MiniLM on a sample of each catalogue
(:data:`TEXT_SAMPLE` items) and the full catalogue's encoding time is that rate × items (the
cost is linear in items: one forward pass per text); the fit itself uses synthetic 384-d vectors
clustered by genre. ML-100K is encoded whole (through the on-disk cache when it is warm: the
``text`` row says which). SASRec and LightGCN bound their own epochs by a work cap
(``max_work``: epochs × training users, epochs × training pairs;
:func:`encoders.base.epoch_budget`), so the default settings run every size; each row reports
the caps (``epoch_caps``), the epochs run and the seconds per epoch. ``--epoch-cap-1e7 N``
caps 10⁷ further.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
TEXT_SAMPLE = 300  # items whose text is encoded with MiniLM to measure the rate
#: size label → (interactions, users, items)
SHAPES = {
    "1e5": (100_000, 1_000, 2_000),  # ML-100K's shape (943 × 1,682)
    "1e6": (1_000_000, 10_000, 5_000),  # ML-1M's (6,040 × 3,706)
    "1e7": (10_000_000, 100_000, 20_000),  # between ML-10M (70k × 10.7k) and ML-20M (138k × 27k)
}


class StageClock(logging.Handler):
    """Stage spans from the fit's progress records, and peak RSS within each from a sampler."""

    def __init__(self) -> None:
        super().__init__()
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.samples: list[tuple[float, int]] = []
        self.open: dict[str, float] = {}
        self.spans: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._rss()))
            time.sleep(0.05)

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "progress", None)
        if not isinstance(info, dict) or "stage" not in info:
            return
        self.mark(str(info["stage"]), done=bool(info.get("done")))

    def mark(self, stage: str, done: bool) -> None:
        now = time.perf_counter()
        if not done:
            self.open.setdefault(stage, now)
        elif stage in self.open:
            self.spans[stage] = [self.open.pop(stage), now]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def table(self) -> dict[str, dict[str, float]]:
        times = np.array([t for t, _ in self.samples])
        rss = np.array([r for _, r in self.samples])
        out = {}
        for stage, (start, end) in sorted(self.spans.items(), key=lambda kv: kv[1][0]):
            inside = (times >= start) & (times <= end)
            peak = rss[inside].max() if inside.any() else rss[np.searchsorted(times, end) - 1]
            out[stage] = {"seconds": round(end - start, 2), "peak_rss_mb": round(peak / 2**20, 1)}
        return out


def _stage(clock: StageClock, name: str, work):
    clock.mark(name, done=False)
    result = work()
    clock.mark(name, done=True)
    return result


def _text_rate(items) -> dict[str, Any]:
    """MiniLM seconds per item on a sample of the catalogue (no cache)."""
    from encoders.text import TextEncoder, TextEncoderConfig

    encoder = TextEncoder(TextEncoderConfig(cache_dir=None, show_progress=False))
    encoder.encode_items(items[:8])  # load the model outside the timing
    sample = items[: min(TEXT_SAMPLE, len(items))]
    t0 = time.perf_counter()
    encoder.encode_items(sample)
    per_item = (time.perf_counter() - t0) / len(sample)
    words = float(np.mean([len(encoder.render(it).split()) for it in sample]))
    return {"sample_items": len(sample), "seconds_per_item": per_item, "words_per_item": words}


def run_one(size: str, epoch_cap: int | None = None) -> dict[str, Any]:
    """One size's fit, stage by stage (module doc)."""
    from encoders.base import FitData
    from hyrec.data import Interactions, leave_one_out, load_dataset
    from retrieval.hybrid import HybridConfig, HybridRecommender

    clock = StageClock()
    logging.getLogger().addHandler(clock)
    logging.getLogger().setLevel(logging.INFO)
    t_start = time.perf_counter()
    text: dict[str, Any]
    if size == "ml-100k":
        from encoders.text import TextEncoder

        ds = _stage(clock, "data", lambda: load_dataset("ml-100k"))
        vectors = _stage(clock, "text", lambda: TextEncoder().encode_items(ds.items))
        text = {"measured": "whole catalogue, through the on-disk cache"}
    else:
        from eval.synthetic import SyntheticConfig, generate, synthetic_vectors

        n, users, items = SHAPES[size]
        config = SyntheticConfig(interactions=n, users=users, items=items)
        ds = _stage(clock, "data", lambda: generate(config))
        text = _stage(clock, "text", lambda: _text_rate(ds.items))
        text["projected_seconds"] = round(text["seconds_per_item"] * ds.n_items, 1)
        text["measured"] = f"{text['sample_items']} items; full catalogue = rate × items"
        vectors = synthetic_vectors(ds)

    def split():
        s = leave_one_out(ds)  # as Recommender.fit: the last event early-stops
        return FitData(ds, Interactions.concat([s.train, s.valid]), s.task("test"), vectors)

    data = _stage(clock, "split", split)
    params = {}
    if epoch_cap is not None:
        params = {"sasrec": {"max_epochs": epoch_cap}, "lightgcn": {"max_epochs": epoch_cap}}
    model = HybridRecommender(HybridConfig(params=params))
    model.fit(data)
    with tempfile.TemporaryDirectory() as folder:
        _stage(clock, "save", lambda: model.save(Path(folder) / "model"))
    clock.stop()
    stages = clock.table()
    if size != "ml-100k":
        stages["text"]["projected_seconds"] = text["projected_seconds"]
    return {
        "size": size,
        "interactions": len(ds.interactions),
        "users": ds.n_users,
        "items": ds.n_items,
        "epoch_cap": epoch_cap,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stages": stages,
        "text": text,
        "epochs": _epochs(model),
        "epoch_caps": _caps(model, data),
        "fit_report": _plain(model.fit_report),
    }


def _epochs(model) -> dict[str, dict[str, float]]:
    """Epochs run and seconds per epoch of the epoch-trained components."""
    out = {}
    for name, scorer in model.components.items():
        epochs = getattr(scorer, "epochs_run", None)
        seconds = model.fit_report.get("component_seconds", {}).get(name)
        if epochs:
            out[name] = {"epochs": int(epochs), "seconds_per_epoch": round(seconds / epochs, 2)}
    return out


def _caps(model, data) -> dict[str, int]:
    """Each neural component's epoch cap under its work cap (encoders.base.epoch_budget), on the
    inner split it was fitted on (each user's last training event held out)."""
    from encoders.base import epoch_budget
    from hyrec.data.dataset import interaction_matrix
    from hyrec.data.splits import inner_split

    inner, _ = inner_split(data.train)
    users = int((np.bincount(inner.user) >= 2).sum())
    # LightGCN's work is its graph's edges: the fit's deduplicated matrix, not events (repeats)
    pairs = interaction_matrix(inner, data.n_users, data.n_items).nnz
    out = {}
    for name, scorer in model.components.items():
        c = getattr(scorer, "config", None)
        if name == "sasrec":
            out[name] = epoch_budget(c.max_epochs, c.patience, users, c.max_work)[0]
        elif name == "lightgcn":
            out[name] = epoch_budget(c.max_epochs, c.patience, pairs, c.max_work)[0]
    return out


def _plain(value: Any) -> Any:
    """JSON-safe copy (NumPy scalars → float)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, np.floating | np.integer) else value


def table(rows: list[dict[str, Any]]) -> str:
    """Seconds / peak RSS MB per stage, one column per size (markdown)."""
    stages: list[str] = []
    for r in rows:
        stages += [s for s in r["stages"] if s not in stages]
    head = "| stage | " + " | ".join(
        f"{r['size']} ({r['interactions']:,} ev, {r['users']:,} u, {r['items']:,} i)" for r in rows
    )
    lines = [head + " |", "|---" * (len(rows) + 1) + "|"]
    for s in stages:
        cells = []
        for r in rows:
            v = r["stages"].get(s)
            if v is None:
                cells.append("")
                continue
            cell = f"{v['seconds']} s / {v['peak_rss_mb']} MB"
            if "projected_seconds" in v:
                cell += f" (full catalogue: {v['projected_seconds']} s)"
            cells.append(cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append(
        "| **total** | "
        + " | ".join(f"**{r['wall_seconds']} s / {r['peak_rss_mb']} MB**" for r in rows)
        + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["ml-100k", "1e5", "1e6", "1e7"])
    parser.add_argument(
        "--epoch-cap-1e7", type=int, default=None, help="epochs at 10⁷ (default: the work caps)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: run this size
    parser.add_argument("--epoch-cap", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.epoch_cap)))
        return
    rows = json.loads(args.out.read_text()).get("rows", []) if args.out.exists() else []
    for size in args.sizes:
        cmd = [sys.executable, "-m", "eval.bench_scaling", "--one", size]
        if size == "1e7" and args.epoch_cap_1e7 is not None:
            cmd += ["--epoch-cap", str(args.epoch_cap_1e7)]
        load = os.getloadavg()[0]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"the {size} fit failed ({done.returncode})")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["load_average_1min"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
        rows = [r for r in rows if r["size"] != size] + [row]
        order = ["ml-100k", *SHAPES]
        rows.sort(key=lambda r: order.index(r["size"]) if r["size"] in order else 99)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table(rows))
        print(table(rows))


if __name__ == "__main__":
    main()
