"""The ELBO identity on the linear-Gaussian LVM: for the exact posterior, a trained amortized encoder, a trained
per-datapoint guide, a trained amortized flow and the prior used as a guide, log p(x) = ELBO + KL(q || p(z|x)).

    python experiments/elbo_identity.py [--config experiments/elbo_identity.toml] [--set train.steps=200]

Prints a table, writes runs/elbo_identity/{identity.json, elbo_identity.png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.data.datasets import linear_gaussian_truth
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.runs.files import finished_runs
from pyro_lvm.studies.identity import best_diagonal_kl, elbo_identity_study
from pyro_lvm.studies.theory_plots import elbo_identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_suffix(".toml")))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default="runs/elbo_identity")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config, args.set)
        out = Path(args.out)
        terms = elbo_identity_study(cfg, out, cfg.eval.num_points or 200, cfg.eval.num_samples)
    except Interrupted as stop:  # a signal: the run in progress checkpointed its step
        finished = ", ".join(finished_runs(Path(args.out))) or "none"
        print(f"{stop}; finished runs (reused by a rerun): {finished}", file=sys.stderr)
        return stop.exit_code
    except PyroLVMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [t.summary() for t in terms]
    print(
        tabulate(
            [
                [r["guide"], r["log_px"], r["elbo"], r["kl"], r["elbo_sampled"], r["identity_error"], r["max_mc_z"]]
                for r in rows
            ],
            headers=["guide", "log p(x)", "ELBO", "KL(q‖p(z|x))", "sampled ELBO", "max |id. error|", "max |z| MC"],
            floatfmt=(None, ".4f", ".4f", ".4f", ".4f", ".1e", ".2f"),
            missingval="n/a",
        )
    )
    floor = best_diagonal_kl(linear_gaussian_truth(cfg.data))
    print(f"smallest KL(q‖p(z|x)) of any diagonal Gaussian q (closed form): {floor:.4f}; the flow's KL is sampled,")
    print("log p(x) − sampled ELBO (its analytic columns are n/a)")
    (out / "identity.json").write_text(json.dumps({"rows": rows, "best_diagonal_kl": floor}, indent=2))
    elbo_identity(terms, out / "elbo_identity.png")
    print(f"wrote {out / 'identity.json'} and {out / 'elbo_identity.png'}")
    return 0


if __name__ == "__main__":
    with scope():
        sys.exit(main())
