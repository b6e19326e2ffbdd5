"""``pyro-lvm train | evaluate | compare | diagnose | sample | encode | runs | sweep | latents`` — thin: parse arguments, call the
library, print tables.

Every user error is a ``PyroLVMError`` and is printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path

from tabulate import tabulate

from pyro_lvm.cli.parser import build_parser
from pyro_lvm.errors import Interrupted, PyroLVMError


def _train(args: argparse.Namespace) -> None:
    from pyro_lvm import config
    from pyro_lvm.runs.identity import default_run_dir, run_config
    from pyro_lvm.studies.run import train_run
    from pyro_lvm.training.strategies import ddp as distributed
    from pyro_lvm.training.strategies import launch

    if args.resume:
        run_dir = Path(args.resume)
        if args.config is not None:
            raise PyroLVMError(
                f"--resume continues {str(run_dir)!r} with the config saved there; drop {args.config!r} "
                "(change what may change with --set, e.g. train.steps)"
            )
        cfg = run_config(run_dir, args.set, args.trust_plugins)  # overrides may extend steps
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
                    f"{last['val_elbo']:.3f}" if "val_elbo" in last else "n/a",  # none per-datapoint
                    f"{last['time_s']:.1f}",
                ]
            ],
            headers=["step", "train ELBO", "val ELBO", "time (s)"],
        )
    )
    print(f"run folder: {run_dir}")


def _evaluate(args: argparse.Namespace) -> None:
    from pyro_lvm.runs.identity import run_config
    from pyro_lvm.studies.report import evaluate_run, print_evaluation
    from pyro_lvm.training.strategies import ddp as distributed
    from pyro_lvm.training.strategies import launch

    overrides = list(args.set)
    if args.num_samples:
        overrides.append(f"eval.num_samples={args.num_samples}")
    if args.num_points:
        overrides.append(f"eval.num_points={args.num_points}")
    if args.ais:
        overrides.append("eval.estimator=ais")
    device = run_config(Path(args.run_dir), overrides, args.trust_plugins).train.device
    if args.nproc > 1 and not distributed.launched():
        sys.exit(launch.launch(args.nproc, _argv_without_nproc(), args.run_dir))
    with distributed.session(device) as ranks:
        result = evaluate_run(args.run_dir, overrides, args.trust_plugins)
    if not ranks.lead:
        return
    print_evaluation(result)
    print(f"saved {Path(args.run_dir) / 'evaluation.json'}")


def _sample(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.export import sample_file
    from pyro_lvm.studies.report import sample_run

    if args.out:
        sample_file(args.run_dir, args.num, args.out, args.what, args.condition, args.set, args.trust_plugins)
    path = args.out or sample_run(
        args.run_dir, args.condition, args.num, args.set, args.rows, args.completions, args.trust_plugins
    )
    print(f"wrote {path}")


def _encode(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.export import encode_run

    n = encode_run(args.run_dir, args.split, args.out, args.num_points, args.set, args.trust_plugins)
    print(f"wrote {args.out} ({n} rows of {args.split})")


def _runs(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.runs_table import format_table, runs_table

    print(format_table(runs_table(args.dirs), args.format))


def _latents(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.latent_figures import latent_figures

    pairs = [tuple(pair) for pair in args.interpolate or []]
    for path in latent_figures(
        args.run_dir, args.split, pairs, args.traverse, args.steps, args.span, args.set, args.trust_plugins
    ):
        print(f"wrote {path}")


def _sweep(args: argparse.Namespace) -> None:
    from pyro_lvm.studies.runs_table import format_table
    from pyro_lvm.studies.sweep import sweep

    rows = sweep(args.config, args.grid, args.seeds, args.set, args.out, args.plugin)
    print(format_table(rows, args.format))


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
        trust_plugins=args.trust_plugins,
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


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "compare": _compare,
    "diagnose": _diagnose,
    "sample": _sample,
    "encode": _encode,
    "runs": _runs,
    "sweep": _sweep,
    "latents": _latents,
}


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"note: {message}", file=sys.stderr)


class _Terminated(BaseException):  # noqa: N818 - SIGTERM like KeyboardInterrupt: no `except Exception` takes it
    pass


def _terminate(signum, frame) -> None:
    raise _Terminated


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pyro_lvm.context import scope
    from pyro_lvm.registry import load_plugins

    # A console script's sys.path starts at its bin folder; plugins are looked up where the user runs the command.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None  # None: set outside Python
    try:
        with scope(), warnings.catch_warnings():
            warnings.showwarning = _one_line
            load_plugins(args.plugin)
            COMMANDS[args.func](args)
    except Interrupted as err:  # a signal: the step finished and a checkpoint was written at it
        if os.environ.get("RANK", "0") == "0":
            print(str(err), file=sys.stderr)
        return err.exit_code
    except PyroLVMError as err:
        if os.environ.get("RANK", "0") == "0" or str(err).startswith("rank "):  # ranks share their errors: one line
            print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as err:  # outside a training loop (which stops at its step's end)
        name, code = ("SIGTERM", 143) if isinstance(err, _Terminated) else ("SIGINT", 130)
        print(f"stopped by {name}; files already written are whole (they are written atomically)", file=sys.stderr)
        return code
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
    finally:
        if _main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
