"""A campaign of bad inputs and faults through the real CLI, as a new user would meet them: every case of
``bad_input_cases.py`` runs ``python -m pyro_lvm ...`` as a subprocess (OMP_NUM_THREADS=1, one case at a time, each
in its own folder of a temporary directory), and is scored against its expected outcome:

- refused: exit status 2 and exactly one stderr line, ``error: ...`` (with the expected words, where given);
- noted: exit status 0 and exactly one ``note: ...`` line with the expected words (a value changed or assumed);
- runs: exit status 0.

A traceback (or the last-resort ``error: unexpected ...`` line of a bug) is a traceback; exit 0 where a refusal
was expected, or without a note where one was expected, is a silent acceptance; anything else (a refusal of a valid
input, two lines, a failed post-condition, a timeout) is other. Prints one table per category and the cases that
missed.

    python benchmarks/bad_input_campaign.py [--only CATEGORY] [--name TEXT ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_cases import all_cases  # noqa: E402
from bad_input_corpus import BASE_RUN, CATEGORIES, Case, toml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
COLUMNS = ["refused", "noted", "runs", "traceback", "silent", "other"]


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def cli(argv: list[str], cwd: Path, preexec_fn=None, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyro_lvm", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env(),
        preexec_fn=preexec_fn,
        timeout=timeout,
    )


def background(argv: list[str], cwd: Path, ready: Path) -> subprocess.Popen:
    """Start ``pyro-lvm ARGV`` and wait until ``ready`` exists (e.g. the run folder's lock or checkpoint)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_lvm", *argv],
        cwd=cwd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not (ready.exists() and ready.stat().st_size > 0) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


def score(case: Case, done: subprocess.CompletedProcess | None, problem: str | None) -> tuple[str, str]:
    """(column, detail) of one case's result."""
    if done is None:
        return "other", f"timed out after {TIMEOUT_S} s"
    err = done.stderr
    lines = err.splitlines()
    detail = f"exit {done.returncode}: {err.strip()[-300:]}"
    if "Traceback" in err or (done.returncode == 1 and "error: unexpected" in err):
        return "traceback", detail
    if done.returncode == 0:
        if case.expect == "refuse":
            return "silent", detail or "exit 0"
        if problem:
            return "other", f"{problem}; {detail}"
        if case.expect == "note":
            notes = [line for line in lines if line.startswith("note: ")]
            if not notes:
                return "silent", detail or "exit 0 without a note"
            if len(notes) != 1 or case.contains.lower() not in notes[0].lower():
                return "other", f"expected one note {case.contains!r}; {detail}"
            return "noted", ""
        return "runs", ""
    one_line = done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    if case.expect == "refuse" and one_line and case.contains.lower() in lines[0].lower() and not problem:
        return "refused", ""
    return "other", f"{problem + '; ' if problem else ''}expected {case.expect} {case.contains!r}; {detail}"


def run_case(case: Case, folder: Path, base_run: Path) -> tuple[str, str]:
    folder.mkdir(parents=True)
    (folder / "c.toml").write_text(toml({}))
    if case.with_run:
        shutil.copytree(base_run, folder / "run", ignore=shutil.ignore_patterns(".lock"))
    if case.setup is not None:
        case.setup(folder)
    holder = None
    if case.background is not None:
        argv, ready = case.background
        holder = background(argv, folder, folder / ready)
    try:
        done = cli(case.argv, folder, preexec_fn=case.preexec)
    except subprocess.TimeoutExpired:
        done = None
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    problem = case.check(folder) if case.check is not None and done is not None else None
    return score(case, done, problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=CATEGORIES, help="run one category")
    parser.add_argument("--name", action="append", help="run the cases whose name holds TEXT (repeatable)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pyro-lvm-campaign-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    base = root / "base"
    base.mkdir(exist_ok=True)
    (base / "c.toml").write_text(toml({}))
    if not (base / BASE_RUN / "checkpoint.pt").exists():
        made = cli(["train", "c.toml", "--set", f"train.out_dir={BASE_RUN}"], base)
        if made.returncode != 0:
            sys.exit(f"the base run failed: {made.stderr}")
    corpus = [c for c in all_cases() if args.only in (None, c.category)]
    if args.name:
        corpus = [c for c in corpus if any(text in c.name for text in args.name)]
    results: dict[str, Counter] = {cat: Counter() for cat in CATEGORIES}
    misses = []
    for i, case in enumerate(corpus):
        began = time.time()
        column, detail = run_case(case, root / f"{i:03d}", base / BASE_RUN)
        results[case.category][column] += 1
        mark = "" if column in ("refused", "noted", "runs") else f"  <-- {column}: {detail}"
        took = time.time() - began
        print(f"[{i + 1:3d}/{len(corpus)}] {took:5.1f} s  {case.category:12s} {case.name}{mark}", flush=True)
        if mark:
            misses.append((case.category, case.name, column, detail))
    rows = [[cat, sum(c.values()), *(c[k] for k in COLUMNS)] for cat, c in results.items() if c]
    total = Counter()
    for c in results.values():
        total.update(c)
    rows.append(["all", sum(total.values()), *(total[k] for k in COLUMNS)])
    headers = [
        "category", "cases", "one-line refusals", "one-line notices", "runs as expected", "tracebacks",
        "silent acceptances",
    ]  # fmt: skip
    print()
    print(tabulate(rows, headers=[*headers, "other"], tablefmt="github"))
    print(f"\n{len(corpus)} cases in {time.time() - start:.0f} s")
    for miss in misses:
        print(" | ".join(miss))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
