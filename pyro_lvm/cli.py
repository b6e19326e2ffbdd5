"""``pyro-lvm train | evaluate | compare | diagnose | sample`` — thin: parse arguments, call the library, print tables.

Every user error is a ``PyroLVMError`` and is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from tabulate import tabulate

from pyro_lvm import __version__
from pyro_lvm.errors import PyroLVMError


def _train(args: argparse.Namespace) -> None:
    from pyro_lvm import config
    from pyro_lvm.infer import distributed, launch
    from pyro_lvm.studies.run import default_run_dir, run_config, train_run

    if args.resume:
        run_dir = Path(args.resume)
        if args.config is not None:
            raise PyroLVMError(
                f"--resume continues {str(run_dir)!r} with the config saved there; drop {args.config!r} "
                "(change what may change with --set, e.g. train.steps)"
            )
        cfg = run_config(run_dir, args.set)  # overrides may extend steps
    else:
        if args.config is None:
            raise PyroLVMError("give a config file (pyro-lvm train CONFIG) or --resume RUN_DIR")
        cfg = config.load(args.config, args.set, plugins=args.plugin)
        run_dir = default_run_dir(cfg, args.config)
    if args.nproc > 1 and not distributed.launched():  # this process becomes torchrun's parent
        launch.check_config(cfg, args.nproc)
        sys.exit(launch.launch(args.nproc, _argv_without_nproc(), run_dir))
    with distributed.session(cfg.train.device) as ranks:
        _, history = train_run(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if not ranks.lead:
        return
    last = history[-1]
    print(
        tabulate(
            [
                [
                    last["step"],
                    f"{last['train_elbo']:.3f}",
                    f"{last.get('val_elbo', float('nan')):.3f}",
                    f"{last['time_s']:.1f}",
                ]
            ],
            headers=["step", "train ELBO", "val ELBO", "time (s)"],
        )
    )
    print(f"run folder: {run_dir}")


def _evaluate(args: argparse.Namespace) -> None:
    from pyro_lvm.infer import distributed, launch
    from pyro_lvm.studies.report import evaluate_run, print_evaluation
    from pyro_lvm.studies.run import run_config

    overrides = list(args.set)
    if args.num_samples:
        overrides.append(f"eval.num_samples={args.num_samples}")
    if args.num_points:
        overrides.append(f"eval.num_points={args.num_points}")
    device = run_config(Path(args.run_dir), overrides).train.device
    if args.nproc > 1 and not distributed.launched():
        sys.exit(launch.launch(args.nproc, _argv_without_nproc(), args.run_dir))
    with distributed.session(device) as ranks:
        result = evaluate_run(args.run_dir, overrides)
    if not ranks.lead:
        return
    print_evaluation(result)
    print(f"saved {Path(args.run_dir) / 'evaluation.json'}")


def _sample(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.report import sample_run

    path = sample_run(args.run_dir, args.condition, args.num, args.set, args.rows, args.completions)
    print(f"wrote {path}")


def _compare(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.compare import compare

    compare(args.config, args.set, plugins=args.plugin)


def _diagnose(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.diagnose import DiagnoseOptions, diagnose, print_diagnosis

    opts = DiagnoseOptions(
        num_points=args.num_points,
        num_samples=args.num_samples,
        nuts_points=args.nuts_points,
        nuts_chains=args.nuts_chains,
        nuts_samples=args.nuts_samples,
        nuts_warmup=args.nuts_warmup,
    )
    print_diagnosis(diagnose(args.run_dirs, opts, args.out))


def _argv_without_nproc() -> list[str]:
    """This command's arguments for the ranks torchrun starts (``--nproc`` is the launcher's)."""
    argv, out, skip = sys.argv[1:], [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
        elif arg == "--nproc":
            skip = True
        else:
            out.append(arg)
    return out


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
        "named; train records it in the run's config (repeatable)",
    )

    p = sub.add_parser("train", parents=[common], help="train a model/guide pair from a TOML config")
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
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", parents=[common], help="test ELBO and importance-sampled log-likelihood")
    p.add_argument("run_dir")
    p.add_argument("--num-samples", type=_count(10**8), help="K importance samples per datapoint (eval.num_samples)")
    p.add_argument("--num-points", type=_count(10**9), help="evaluate the first n test points (eval.num_points)")
    p.add_argument("--nproc", type=_count(1024), default=1, metavar="P", help="split the points over P ranks")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("compare", parents=[common], help="amortized vs per-datapoint vs semi-amortized, with gaps")
    p.add_argument("config", help="TOML config; its [compare] section chooses guides and gap settings")
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "diagnose", parents=[common], help="PSIS k-hat per guide, NUTS reference posteriors with R-hat (ArviZ)"
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
    p.set_defaults(func=_diagnose)

    p = sub.add_parser(
        "sample",
        parents=[common],
        help="PNG grid of prior samples (label CVAE: of one class; quadrant CVAE: completions)",
    )
    p.add_argument("run_dir")
    p.add_argument("--condition", help="CVAE label to generate, e.g. 7")
    p.add_argument("--num", type=_count(10_000), default=100, help="number of samples (at most 10,000)")
    p.add_argument("--rows", type=_count(1000), default=8, help="quadrant CVAE: test images in the completion grid")
    p.add_argument("--completions", type=_count(100), default=6, help="quadrant CVAE: completions drawn per image")
    p.set_defaults(func=_sample)
    return parser


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"note: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pyro_lvm.context import scope
    from pyro_lvm.registry import load_plugins

    # A console script's sys.path starts at its bin folder; plugins are looked up where the user runs the command.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        with scope(), warnings.catch_warnings():
            warnings.showwarning = _one_line
            load_plugins(args.plugin)
            args.func(args)
    except PyroLVMError as err:
        if os.environ.get("RANK", "0") == "0" or str(err).startswith("rank "):  # ranks share their errors: one line
            print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact", file=sys.stderr)
        return 130
    except OSError as err:  # the machine's refusal (disk full, permissions) of a file we write or read
        print(f"error: {err.strerror or err}: {err.filename or ''}; free space or fix permissions", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the last resort: a bug of ours, reported in one line plus a log
        summary = str(err).splitlines()[0] if str(err) else ""
        try:
            fd, log = tempfile.mkstemp(prefix="pyro-lvm-error-", suffix=".log")
            with os.fdopen(fd, "w") as f:
                f.write("".join(traceback.format_exception(err)))
            where = f"traceback in {log}"
        except OSError:
            where = "no log could be written"
        print(f"error: unexpected {type(err).__name__}: {summary} (a bug; {where})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
