"""The command line's arguments: one parser, each command with its flags; ``func`` names the command that
``pyro_lvm.cli.main`` runs."""

from __future__ import annotations

import argparse
import sys

from pyro_lvm import __version__


class _Parser(argparse.ArgumentParser):
    """argparse with our error format: one line, exit status 2 (argparse's own prints the usage as well)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _count(limit: int, low: int = 1):
    """An argparse type: an integer in low..limit."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= limit:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {limit:,}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-lvm", description="Latent variable models on Pyro.")
    parser.add_argument("--version", action="version", version=f"pyro-lvm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set guide.name=per_datapoint (repeatable)",
    )
    common.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (from the current folder or PYTHONPATH) so that the components it registers can be "
        "named; train records it in the run's config; opening a run imports the plugins its config names only "
        "when given here, installed elsewhere, or with --trust-plugins (repeatable)",
    )
    # Opening a run (evaluate, sample, diagnose, train --resume) imports the plugin modules its config names only as
    # pyro_lvm/config/trust.py allows: a run folder from someone else could name a module sitting beside it.
    opening = _Parser(add_help=False)
    opening.add_argument(
        "--trust-plugins",
        action="store_true",
        help="import every plugin module the run's saved config names, even one in the current folder or beside "
        "the run folder (that runs its code: only for runs you trust)",
    )

    p = sub.add_parser("train", parents=[common, opening], help="train a model/guide pair from a TOML config")
    p.add_argument("config", nargs="?", help="TOML config (see experiments/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument(
        "--nproc",
        type=_count(1024),
        default=1,
        metavar="P",
        help="train with P ranks on this machine (runs torchrun --nproc-per-node P; gloo on CPU, nccl on CUDA)",
    )
    p.set_defaults(func="train")

    p = sub.add_parser("evaluate", parents=[common, opening], help="test ELBO and importance-sampled log-likelihood")
    p.add_argument("run_dir")
    p.add_argument("--num-samples", type=_count(10**8), help="K importance samples per datapoint (eval.num_samples)")
    p.add_argument("--num-points", type=_count(10**9), help="evaluate the first n test points (eval.num_points)")
    p.add_argument("--nproc", type=_count(1024), default=1, metavar="P", help="split the points over P ranks")
    p.add_argument(
        "--ais",
        action="store_true",
        help="also annealed importance sampling and the BDMC bracket (eval.estimator = 'ais'; eval.ais.* settings)",
    )
    p.set_defaults(func="evaluate")

    p = sub.add_parser("compare", parents=[common], help="amortized vs per-datapoint vs semi-amortized, with gaps")
    p.add_argument("config", help="TOML config; its [compare] section chooses guides and gap settings")
    p.set_defaults(func="compare")

    p = sub.add_parser(
        "diagnose", parents=[common, opening], help="PSIS k-hat per guide, NUTS reference posteriors with R-hat (ArviZ)"
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; NUTS uses the first one's decoder")
    p.add_argument("--num-points", type=_count(10**6), default=20, help="training rows for PSIS k-hat")
    p.add_argument(
        "--num-samples", type=_count(10**7), default=2000, help="importance samples per row for k-hat (30 or more)"
    )
    p.add_argument(
        "--nuts-points", type=_count(1000, low=0), default=4, help="rows with a NUTS reference (0: skip NUTS)"
    )
    p.add_argument("--nuts-chains", type=_count(64), default=4)
    p.add_argument("--nuts-samples", type=_count(10**6), default=1000, help="NUTS draws per chain")
    p.add_argument("--nuts-warmup", type=_count(10**6, low=0), default=500)
    p.add_argument("--out", help="output folder (default: the first run folder)")
    p.set_defaults(func="diagnose")

    p = sub.add_parser(
        "sample",
        parents=[common, opening],
        help="PNG grid of prior samples (label CVAE: of one class; quadrant CVAE: completions)",
    )
    p.add_argument("run_dir")
    p.add_argument("--condition", help="CVAE label to generate, e.g. 7")
    p.add_argument("--num", type=_count(10_000), default=100, help="number of samples (at most 10,000)")
    p.add_argument("--rows", type=_count(1000), default=8, help="quadrant CVAE: test images in the completion grid")
    p.add_argument("--completions", type=_count(100), default=6, help="quadrant CVAE: completions drawn per image")
    p.add_argument("--out", help="write the draws to OUT (.npz or .csv) instead of a PNG")
    p.add_argument("--what", choices=["mean", "draws", "latents"], default="mean", help="with --out: what to draw")
    p.set_defaults(func="sample")

    p = sub.add_parser("encode", parents=[common, opening], help="latent means and scales of a split, to .npz or .csv")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--out", required=True, help="output file, .npz or .csv")
    p.add_argument("--num-points", type=_count(10**9), help="encode the first n rows of the split")
    p.set_defaults(func="encode")

    p = sub.add_parser(
        "runs", parents=[common], help="one table of many run folders (differing config keys, ELBO, log p(x), time)"
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, or folders holding run folders")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.set_defaults(func="runs")

    p = sub.add_parser(
        "latents", parents=[common, opening], help="interpolation and traversal figures of a VAE's latent space"
    )
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument(
        "--interpolate", nargs=2, type=_count(10**9, low=0), action="append", metavar=("I", "J"),
        help="rows I and J of the split: decoder means along the line between their posterior means (repeatable)",
    )  # fmt: skip
    p.add_argument("--traverse", type=_count(10**9, low=0), metavar="I", help="row I: each latent dimension in turn")
    p.add_argument("--steps", type=_count(100, low=2), default=8, help="images per row")
    p.add_argument("--span", type=float, default=3.0, help="traversal values from -SPAN to SPAN")
    p.set_defaults(func="latents")

    p = sub.add_parser(
        "sweep", parents=[common], help="train and evaluate every combination of a grid of config values, then tabulate"
    )
    p.add_argument("config", help="TOML config: the values every run shares")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2",
        help="values of one key (repeatable: the runs are every combination), e.g. --grid model.latent_dim=2,4,8",
    )
    p.add_argument("--seeds", type=_count(1000), default=1, help="seeds per combination (train.seed + 0 .. S-1)")
    p.add_argument("--out", help="sweep folder (default runs/<config stem>_sweep)")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.set_defaults(func="sweep")
    return parser
