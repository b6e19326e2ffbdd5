"""Test accuracy against the number of labels: M2 with the auxiliary term, M2 without it, and the same classifier
trained on the labelled rows alone, over several draws of the labelled rows.

    python experiments/semi_supervised.py                       # digits: 50, 100, 300 labels, 3 draws
    python experiments/semi_supervised.py --dataset fashion_mnist   # Fashion-MNIST: 100, 1000 labels, 3 draws

Writes label_study.json and label_study.png into runs/label_study_<dataset>/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyro_lvm import config
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.studies.semi_supervised import label_study, print_label_study

HERE = Path(__file__).parent
SETTINGS = {  # config, label counts, the labels-only classifier's Adam steps
    "digits": (HERE / "digits_m2.toml", [50, 100, 300], 500),
    "fashion_mnist": (HERE / "fashion_mnist_m2.toml", [100, 1000], 500),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SETTINGS), default="digits")
    parser.add_argument("--counts", type=int, nargs="+", help="label counts (default: per dataset)")
    parser.add_argument("--draws", type=int, default=3, help="draws of the labelled rows per count")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/label_study_<dataset>)")
    args = parser.parse_args(argv)
    path, counts, baseline_steps = SETTINGS[args.dataset]
    try:
        cfg = config.load(path, args.set)
        out = args.out or Path("runs") / f"label_study_{args.dataset}"
        t0 = time.perf_counter()
        result = label_study(cfg, args.counts or counts, args.draws, cfg.model.aux_weight, baseline_steps, out)
    except Interrupted as stop:  # a signal: the study stops after the step in progress
        print(f"{stop}; this study trains in memory: nothing of it was saved", file=sys.stderr)
        return stop.exit_code
    except PyroLVMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_label_study(result)
    print(f"{time.perf_counter() - t0:.0f} s in all; wrote {out / 'label_study.json'} and {out / 'label_study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
