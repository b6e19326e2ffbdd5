"""The CVAE tables of the README: quadrant completion (NN baseline vs CVAE priors) and label generation per prior.

    python experiments/cvae_study.py quadrants experiments/digits_cvae_quadrants.toml
    python experiments/cvae_study.py quadrants experiments/fashion_mnist_cvae_quadrants.toml
    python experiments/cvae_study.py labels experiments/fashion_mnist_cvae_label.toml

Runs go to runs/<config stem>_study/ (or --out); finished runs and evaluations are reused, so an interrupted study
continues where it stopped. --set overrides apply to every run (e.g. --set train.steps=500 for a quick look).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyro_lvm.context import scope
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.runs.files import finished_runs
from pyro_lvm.studies.cvae_study import LABEL_VARIANTS, QUADRANT_VARIANTS, label_study, quadrant_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=["quadrants", "labels"])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", help="study folder (default runs/<config stem>_study)")
    parser.add_argument("--quadrants", type=int, nargs="+", default=[1, 2, 3], help="observed quadrants")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted({*QUADRANT_VARIANTS, *LABEL_VARIANTS}),
        help=f"quadrants: {', '.join(QUADRANT_VARIANTS)} (default all); labels: {', '.join(LABEL_VARIANTS)} "
        "(default all)",
    )
    args = parser.parse_args(argv)
    table = QUADRANT_VARIANTS if args.study == "quadrants" else LABEL_VARIANTS
    variants = args.variants or list(table)
    if unknown := [v for v in variants if v not in table]:
        parser.error(f"{args.study} variants are {', '.join(table)}; not {', '.join(unknown)}")
    out = Path(args.out or Path("runs") / f"{Path(args.config).stem}_study")
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.study == "quadrants":
            quadrant_study(args.config, args.set, out, args.quadrants, variants)
        else:
            label_study(args.config, args.set, out, variants)
    except Interrupted as stop:  # a signal: the run in progress checkpointed its step
        finished = ", ".join(finished_runs(out)) or "none"
        print(f"{stop}; finished runs (reused by a rerun): {finished}", file=sys.stderr)
        return stop.exit_code
    except PyroLVMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"tables and runs in {out}")
    return 0


if __name__ == "__main__":
    with scope():
        sys.exit(main())
