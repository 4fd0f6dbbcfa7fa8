"""Start-up cost: ``import scgf`` and ``scgf --help`` against ``import anndata``, same run.

Run: ``python -m benchmarks.import_time [--repeats 5]``

Each measurement is a fresh interpreter (``python -X importtime`` is not used: it slows
imports down). Runs are interleaved (anndata, scgf, scgf --help, anndata, …) so that disk
cache and CPU frequency affect all three alike; the median of the repeats is reported.
Goals: ``import scgf`` within 0.5 s of ``import anndata`` (which scgf needs anyway), and
``scgf --help`` under 3 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import anndata": [sys.executable, "-c", "import anndata"],
    "import scgf": [
        sys.executable,
        "-c",
        "import sys, scgf; heavy = [m for m in ('torch', 'transformers', 'scanpy') "
        "if m in sys.modules]; assert not heavy, heavy",
    ],
    "scgf --help": [shutil.which("scgf") or "scgf", "--help"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the disk cache
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        spread = f"{min(times[name]):.2f}–{max(times[name]):.2f}"
        print(f"{name:16s} {value:6.2f} s  (range {spread} s, {args.repeats} runs)")
    extra = median["import scgf"] - median["import anndata"]
    print(f"import scgf - import anndata: {extra:+.2f} s (goal ≤ 0.5 s)")
    print(f"scgf --help: {median['scgf --help']:.2f} s (goal < 3 s)")


if __name__ == "__main__":
    main()
