"""NAB benchmark with honest validation: tune on half A, check on half B.

Usage: .venv/bin/python benchmarks/nab.py [--nab ../shared/nab] [--config FILE] [--out DIR]
       [--list]

Every file of ../shared/nab/data is backtested once, all files together in one engine, with
one configuration; the results are then scored by ``score.py`` on fixed halves:

- the continuous ``anomaly_score``: half A with the threshold optimised on A (the tuning
  half), half B with A's thresholds (the held-out figure), half B with its own optimum (for
  reference only: it is tuned on B), and all files with their optimum (the classic NAB
  figure);
- the ``flag`` column alone (fixed threshold 0.5): A, B and all files.

The split (``split``) is fixed by a rule chosen before any score was looked at: within each
NAB category (the data sub-folder), files are ordered by the SHA-256 of their relative path
(``realTweets/Twitter_volume_AAPL.csv``) and dealt alternately to A and B, the first to A.
The plain rule "first hash byte even -> A" was checked first on the category mix alone: it
put all four realKnownCause files and four of five realTweets files on one side, so the
deal is stratified by category. ``--list`` prints the two halves and exits.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from harness import Replayed, replay_folder, table

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
SHORT = {"standard": "std", "reward_low_FP_rate": "lowFP", "reward_low_FN_rate": "lowFN"}
SCORE, FLAG = "otel_anomaly", "otel_anomaly_flag"


def split(names: list[str]) -> dict[str, list[str]]:
    """Halves ``{"A": [...], "B": [...]}`` of relative paths, dealt per category by hash."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_category[name.split("/")[0]].append(name)
    halves: dict[str, list[str]] = {"A": [], "B": []}
    for category in sorted(by_category):
        ranked = sorted(by_category[category],
                        key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        halves["A"] += ranked[0::2]
        halves["B"] += ranked[1::2]
    return {half: sorted(files) for half, files in halves.items()}


def split_text(halves: dict[str, list[str]], windows: dict[str, list[object]]) -> str:
    """One line per half and category: the file names (without ``.csv``)."""
    lines = []
    for half, names in halves.items():
        count = sum(len(windows[n]) for n in names)
        lines.append(f"half {half}: {len(names)} files, {count} windows\n")
        for category in sorted({n.split("/")[0] for n in names}):
            mine = [Path(n).stem for n in names if n.startswith(f"{category}/")]
            lines.append(f"  {category}: {' '.join(mine)}\n")
    return "".join(lines)


def write_results(replayed: Replayed, out: Path) -> int:
    """NAB result CSVs for both columns; returns how many scores were infinite."""
    infinite = 0
    for detector, column in ((SCORE, "score"), (FLAG, "flag")):
        for series, res in zip(replayed.inputs, replayed.results, strict=True):
            name = Path(series.name)
            target = out / detector / name.parent / f"{detector}_{name.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            raw = getattr(res, column).astype(float)
            infinite += int(np.isinf(raw).sum())
            # NaN (missing value) scores 0; inf becomes the largest float, so that it stays
            # a detectable score rather than score.py's "detect nothing" threshold.
            scores = np.nan_to_num(raw, nan=0.0)
            with target.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["timestamp", "anomaly_score"])
                w.writerows(zip(series.stamps, scores.tolist(), strict=True))
    return infinite


def run_score(nab: Path, out: Path, detector: str, files: Path, *extra: str) -> dict[str, dict]:
    """One ``score.py --json`` run; returns its figures per profile."""
    cmd = [sys.executable, str(nab / "score.py"), "--data", str(nab / "data"),
           "--labels", str(nab / "labels" / "combined_windows.json"), "--profile", "all",
           "--results", str(out), "--detector", detector, "--files-list", str(files),
           "--json", *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    by_profile: dict[str, dict] = json.loads(done.stdout)["detectors"][detector]
    return by_profile


def row(label: str, by_profile: dict[str, dict]) -> list[object]:
    std = by_profile["standard"]
    hits = sum(f["windows_detected"] for f in std["per_file"].values())
    false_rows = sum(f["fp_rows"] for f in std["per_file"].values())
    thresholds = "/".join("none" if by_profile[p]["threshold"] is None
                          else f"{by_profile[p]['threshold']:.4g}" for p in PROFILES)
    return [label, std["files"], f"{hits}/{std['windows']}", false_rows,
            *(f"{by_profile[p]['normalized']:.1f}" for p in PROFILES), thresholds]


HEADER = ["", "files", "win hit", "FP rows", *(SHORT[p] for p in PROFILES),
          "threshold std/lowFP/lowFN"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default=str(ROOT / "out" / "nab"))
    parser.add_argument("--list", action="store_true", help="print the two halves and exit")
    args = parser.parse_args()
    nab, out = Path(args.nab), Path(args.out)
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    halves = split(sorted(windows))
    sys.stdout.write("split (A tunes, B checks):\n")
    sys.stdout.write(split_text(halves, windows))
    if args.list:
        return 0
    lists = {"all": sorted(windows), **halves}
    out.mkdir(parents=True, exist_ok=True)
    for half, names in lists.items():
        (out / f"files_{half}.txt").write_text("".join(f"{n}\n" for n in names))
    replayed = replay_folder(nab / "data", args.config)
    infinite = write_results(replayed, out)
    sys.stdout.write(f"\n{replayed.speed_line()}\n")
    if infinite:
        sys.stdout.write(f"note: {infinite} infinite scores (scored as the largest float)\n")

    def scored(detector: str, half: str, *extra: str) -> dict[str, dict]:
        return run_score(nab, out, detector, out / f"files_{half}.txt", *extra)

    tuned = scored(SCORE, "A")
    thresholds = out / "thresholds_A.json"
    thresholds.write_text(json.dumps({"detectors": {SCORE: tuned}}))
    rows = [row("A  optimised on A (tuning)", tuned),
            row("B  A's thresholds (held out)", scored(SCORE, "B", "--thresholds-json",
                                                      str(thresholds))),
            row("B  optimised on B (reference)", scored(SCORE, "B")),
            row("all optimised on all", scored(SCORE, "all"))]
    sys.stdout.write("\nanomaly_score column (NAB normalised scores; win hit, FP rows: std)\n")
    sys.stdout.write(table(HEADER, rows))
    flag = [row(f"{half}", scored(FLAG, half, "--threshold", "0.5")) for half in lists]
    sys.stdout.write("\nflag column alone (fixed threshold 0.5)\n")
    sys.stdout.write(table(HEADER[:-1], [r[:-1] for r in (flag[1], flag[2], flag[0])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
