"""Rerun the studies behind the result tables of README.md and docs/results/, and rewrite those tables in place.

A page marks each generated block with ``<!-- generated: NAME -->`` ... ``<!-- end generated: NAME -->``; this
script reruns study NAME (its command below, into a fresh folder under runs/reproduce/) and replaces the block with
one provenance line (command, machine, date, versions, wall time) and the command's report, so a table is never
copied by hand. Prose around a block interprets its numbers; reread it after a rerun.

    python experiments/reproduce.py --list                     # the studies, their pages and rough times
    python experiments/reproduce.py digits_flows cvae_labels_digits
    python experiments/reproduce.py --all                      # every study: hours on 2 CPU cores
    python experiments/reproduce.py NAME --quick --root COPY   # a tiny budget, rewriting the pages under COPY

``--quick`` gives a study a budget of seconds (a smoke test of the pipeline, not a result), and therefore refuses
to write the repository's own pages: it needs ``--root`` pointing at a copy.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import date
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["train.steps=30", "train.progress=false", "data.max_train=120", "eval.num_samples=20"]
TINY_COMPARE = [*TINY_TRAIN, "eval.num_points=20", "compare.gap_points=10", "compare.qstar_max_steps=50"]
TINY_COMPARE += ["compare.elbo_samples=10"]
# report lines that say where the files went or what is running, not what was measured
NOISE = re.compile(
    r"^(== |run folder:|table, JSON, CSV and figures in|tables and runs in|\d+ s in all; wrote|wrote |saved )"
)


@dataclass(frozen=True)
class Study:
    """One command and the pages that show its report. ``out`` is how the command is told its output folder;
    ``markdown``: the report is already Markdown (tables in GitHub format), else it goes in a text block."""

    command: list[str]
    pages: list[str]
    minutes: float  # on a 2-core CPU, for --list
    out: str  # "set" (--set compare.out_dir=DIR), "flag" (--out DIR) or "" ("{out}" in the commands)
    quick: list[str] = field(default_factory=list)  # extra arguments for --quick
    markdown: bool = False
    figures: dict[str, str] = field(default_factory=dict)  # file in the output folder -> path in the repository
    before: list[list[str]] = field(default_factory=list)  # commands whose output is not shown (a training run)
    shown: str = ""  # the commands as a reader types them, where they differ from ``command``


def _compare(config: str, pages: list[str], minutes: float) -> Study:
    quick = [f"--set={s}" for s in TINY_COMPARE]
    return Study(["pyro-lvm", "compare", config], pages, minutes, "set", quick)


def _cvae(kind: str, config: str, minutes: float) -> Study:
    page = "docs/results/cvae-label.md" if kind == "labels" else "docs/results/cvae-quadrants.md"
    quick = [f"--set={s}" for s in [*TINY_TRAIN, "eval.num_points=20", "baseline.steps=30"]]
    quick += ["--variants", "conditional"] if kind == "labels" else ["--quadrants", "1", "--variants", "conditional"]
    return Study(["python", "experiments/cvae_study.py", kind, config], [page], minutes, "flag", quick, True)


def _labels(dataset: str, extra: list[str], minutes: float) -> Study:
    quick = ["--counts", "20", "--draws", "1", *(f"--set={s}" for s in TINY_TRAIN)]
    command = ["python", "experiments/semi_supervised.py", "--dataset", dataset, *extra]
    figures = {"label_study.png": f"docs/figures/label_study_{dataset}.png"}
    return Study(command, ["docs/results/semi-supervised.md"], minutes, "flag", quick, False, figures)


def _single_model() -> Study:
    train = [
        "pyro-lvm",
        "train",
        "experiments/digits_vae.toml",
        "--set=train.out_dir={out}",
        "--set=train.progress=false",
    ]
    shown = "pyro-lvm train experiments/digits_vae.toml && pyro-lvm evaluate runs/digits_vae"
    quick = [f"--set={s}" for s in TINY_TRAIN]
    return Study(
        ["pyro-lvm", "evaluate", "{out}"], ["docs/howto/single-model.md"], 0.5, "", quick, before=[train], shown=shown
    )


STUDIES: dict[str, Study] = {
    "main_job": _compare("experiments/digits_compare.toml", ["README.md", "docs/quickstart.md"], 5),
    "digits_flows": _compare("experiments/digits_flows.toml", ["docs/results/gaps.md"], 2),
    "cremer_cpu": _compare("experiments/fashion_mnist_cremer_cpu.toml", ["docs/results/gaps.md"], 60),
    "conv_vs_mlp": Study(
        ["python", "experiments/conv_vs_mlp.py", "--minutes", "3"],
        ["docs/results/gaps.md"],
        9,
        "flag",
        ["--minutes", "0.02", "--set=eval.num_points=20", "--set=eval.num_samples=20"],
    ),
    "cvae_labels_digits": _cvae("labels", "experiments/digits_cvae_label.toml", 3),
    "cvae_labels_fashion_mnist": _cvae("labels", "experiments/fashion_mnist_cvae_label.toml", 20),
    "cvae_quadrants_digits": _cvae("quadrants", "experiments/digits_cvae_quadrants.toml", 3),
    "cvae_quadrants_fashion_mnist": _cvae("quadrants", "experiments/fashion_mnist_cvae_quadrants.toml", 40),
    "label_study_digits": _labels("digits", [], 18),
    "single_model": _single_model(),
    "elbo_identity": Study(
        ["python", "experiments/elbo_identity.py"], ["docs/concepts.md"], 0.6, "flag", [f"--set={TINY_TRAIN[0]}"]
    ),
    "kl_directions": Study(
        ["python", "experiments/kl_directions.py"], ["docs/concepts.md"], 0.4, "flag", ["--steps", "20"]
    ),
    "label_study_fashion_mnist": _labels("fashion_mnist", ["--set", "train.steps=1500"], 30),
}


def machine() -> str:
    """What ran it: cores, CPU architecture and OS (the studies run on the CPU)."""
    return f"{os.cpu_count()}-core {platform.machine()} CPU, {platform.system()}"


def provenance(command: str, seconds: float, today: str) -> str:
    versions = f"Python {platform.python_version()}, torch {version('torch')}, pyro-ppl {version('pyro-ppl')}"
    return f"`{command}` · {machine()} · {today} · {versions} · {seconds / 60:.1f} min"


def report(stdout: str) -> str:
    """The measured part of a command's output (progress and file locations dropped)."""
    lines = [line.rstrip() for line in stdout.splitlines() if not NOISE.match(line)]
    return "\n".join(lines).strip("\n")  # leading spaces are a table's alignment


def block(name: str, study: Study, stdout: str, seconds: float, today: str) -> str:
    body = report(stdout) if study.markdown else f"```text\n{report(stdout)}\n```"
    return f"<!-- generated: {name} -->\n{provenance(study.shown or ' '.join(study.command), seconds, today)}\n\n{body}\n<!-- end generated: {name} -->"


def markers(name: str) -> re.Pattern:
    return re.compile(rf"<!-- generated: {re.escape(name)} -->.*?<!-- end generated: {re.escape(name)} -->", re.S)


def rewrite(page: Path, name: str, text: str) -> None:
    """Replace study ``name``'s block in ``page``; a page without the block is an error, not a silent skip."""
    old = page.read_text()
    if len(markers(name).findall(old)) != 1:
        raise SystemExit(f"error: {page} has no single '<!-- generated: {name} -->' block; add one where it belongs")
    page.write_text(markers(name).sub(lambda _: text, old))


def check_pages(name: str, quick: bool, root: Path) -> None:
    """Before a study runs (an hour, for some): each of its pages holds its block once, and a quick run writes
    no page of this repository (a symlinked or hard-linked copy included)."""
    for page in STUDIES[name].pages:
        path = root / page
        if quick and path.samefile(REPO / page):  # the same file, through a link or not
            raise SystemExit(f"error: {path} is this repository's page; --quick writes only a copy (--root)")
        if len(markers(name).findall(path.read_text())) != 1:
            raise SystemExit(
                f"error: {path} has no single '<!-- generated: {name} -->' block; add one where it belongs"
            )


def run(name: str, quick: bool, root: Path, runs: Path) -> None:
    study = STUDIES[name]
    check_pages(name, quick, root)
    out = runs / name
    shutil.rmtree(out, ignore_errors=True)  # a fresh folder: the studies reuse finished runs they find
    where = {"set": [f"--set=compare.out_dir={out}"], "flag": ["--out", str(out)], "": []}[study.out]
    t0 = time.perf_counter()
    ran = []
    for i, command in enumerate([*study.before, [*study.command, *where]]):
        argv = [a.replace("{out}", str(out)) for a in command]
        argv += study.quick if quick and i == 0 else []  # the small budget goes to the first (training) command
        ran.append(" ".join(argv[:1] + [a.replace(str(out), "RUN") for a in argv[1:] if a not in where]))
        exe = [sys.executable, "-m", "pyro_lvm"] if argv[0] == "pyro-lvm" else [sys.executable]
        print(f"== {name}: {' '.join(argv)}", flush=True)
        done = subprocess.run([*exe, *argv[1:]], cwd=REPO, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: study {name} exited with {done.returncode}; its pages are left as they were")
    seconds = time.perf_counter() - t0
    if not report(done.stdout):
        raise SystemExit(f"error: study {name} printed no report; its pages are left as they were")
    missing = [src for src in study.figures if not (out / src).is_file()]
    if missing:
        raise SystemExit(f"error: study {name} wrote no {', '.join(missing)}; its pages are left as they were")
    shown = replace(study, shown=" && ".join(ran)) if quick else study  # a quick run says what it ran
    text = block(name, shown, done.stdout, seconds, date.today().isoformat())
    for page in study.pages:
        rewrite(root / page, name, text)
    for src, dest in study.figures.items():
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / src, root / dest)
    print(f"== {name}: {seconds / 60:.1f} min; rewrote {', '.join(study.pages)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="studies to rerun (see --list)")
    parser.add_argument("--all", action="store_true", help="rerun every study")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument("--quick", action="store_true", help="a budget of seconds (needs --root)")
    parser.add_argument("--root", type=Path, default=REPO, help="where the pages are (default: this repository)")
    parser.add_argument("--runs", type=Path, help="output folders (default: ROOT/runs/reproduce)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    runs = (args.runs or root / "runs" / "reproduce").resolve()  # studies run in the repository: absolute paths
    if args.list:
        for name, s in STUDIES.items():
            print(f"{name:30s} ~{s.minutes:>3g} min  {' '.join(s.command):70s} -> {', '.join(s.pages)}")
        return 0
    names = list(STUDIES) if args.all else args.names
    if unknown := [n for n in names if n not in STUDIES]:
        parser.error(f"unknown studies {', '.join(unknown)}; see --list")
    if not names:
        parser.error("name studies to rerun, or --all (see --list)")
    if args.quick and root == REPO:
        parser.error("--quick results are not results: give --root a copy of the pages")
    for name in names:
        run(name, args.quick, root, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
