"""The spine's figures on the bundled digits competition, measured in one run.

    python benchmarks/digits.py [--root DIR]

Prints `kit --help` wall time, then runs `kit run` on a fresh copy of competitions/digits (all
1,797 images) and prints CV, CV with TTA, the public score and the pipeline's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kit(*args: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kit", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="work folder (default: a temp folder)")
    args = parser.parse_args()
    work = args.root or Path(tempfile.mkdtemp(prefix="kit-bench-"))
    env = {**os.environ, "KIT_HOME": str(work / "home"), "NO_ALBUMENTATIONS_UPDATE": "1"}

    runs = []
    for _ in range(5):
        started = time.perf_counter()
        kit("--help", env=env)
        runs.append(time.perf_counter() - started)
    print(f"kit_help_seconds={min(runs):.3f}")

    competition = work / "digits"
    shutil.rmtree(competition, ignore_errors=True)
    shutil.copytree(REPO / "competitions" / "digits", competition)
    started = time.perf_counter()
    out = kit("run", "-C", str(competition), "--quiet", "--name", "bench", env=env)
    seconds = time.perf_counter() - started
    summary = json.loads(out.stdout[out.stdout.index("{") :])
    print(f"cv={summary['cv']:.4f}")
    print(f"cv_tta={summary['cv_tta']:.4f}")
    print(f"public={summary['public_score']:.4f}")
    print(f"kit_run_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
