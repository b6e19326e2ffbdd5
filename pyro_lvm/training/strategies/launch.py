"""``pyro-lvm train --nproc P``: torchrun started on this machine for P ranks, its failures said in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

from pyro_lvm.training.strategies.ddp import check, shards_rows


def check_config(cfg: Any, ranks: int) -> None:
    """``check`` for a config, before any rank starts (the launcher's one-line refusals)."""
    from pyro_lvm.data import load_dataset

    num_train = len(load_dataset(cfg.data).train)
    t = cfg.train
    check(t.batch_size, num_train, ranks, t.micro_batches, shards_rows(cfg.guide.name), t.device)


_TORCHRUN_LOG = re.compile(r"^([WIEF]\d{4} \d\d:\d\d:\d\d|\[[WIEF] |\*+$|Setting OMP_NUM_THREADS)")


def _failure(report: str) -> tuple[str, str] | None:
    """(rank, how it ended) of torchrun's root cause, from its failure report."""
    root = report.split("Root Cause", 1)[-1]
    rank, code = re.search(r"rank\s*:\s*(\d+)", root), re.search(r"exitcode\s*:\s*(-?\d+)", root)
    if rank is None or code is None:
        return None
    value = int(code.group(1))
    how = f"killed by {signal.Signals(-value).name}" if value < 0 else f"exit code {value}"
    return rank.group(1), how


def launch(nproc: int, argv: list[str], run_dir: Any) -> int:
    """Run ``pyro-lvm ARGV`` as ``nproc`` ranks under torchrun on this machine (one thread each unless
    OMP_NUM_THREADS says otherwise); returns the exit status. The ranks' output passes through; torchrun's own
    log and failure report are summed up in one line naming the rank that failed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([*cmd, "-m", "pyro_lvm", *argv], stderr=subprocess.PIPE, env=env)
    # a launcher told to stop passes it on as SIGTERM (torchrun has no SIGUSR1 handler): torchrun sends it to its
    # ranks, which finish their step and checkpoint it together (training/callbacks/signals.py), instead of being
    # orphaned; the launcher then ends as they did, with 128 + the signal's number
    stopped: list[int] = []

    def forward(signum, _frame) -> None:
        stopped.append(signum)
        proc.terminate()

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        errors, report = _relay(proc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
    code = proc.wait()
    if code == 0:
        return 0
    own = [e for e in errors if "lost contact with another rank" not in e]
    if stopped and not own:  # the ranks said where they stopped (rank 0's line passed through above)
        return 128 + stopped[0]
    if own:  # a rank's own one-line error (every rank refuses the same config: rank 0 says it)
        print(own[0], file=sys.stderr)
        return 2
    failed = _failure("".join(report))
    who = f"rank {failed[0]} failed ({failed[1]})" if failed else f"torchrun failed (exit code {code})"
    print(f"error: {who}; the job was stopped; the last checkpoint in {str(run_dir)!r} is intact", file=sys.stderr)
    return 2


def _relay(proc: subprocess.Popen) -> tuple[list[str], list[str]]:
    """Pass the ranks' stderr through; keep their ``error:`` lines and torchrun's own log and report apart."""
    errors, report, pending, in_report = [], [], b"", False
    while chunk := os.read(proc.stderr.fileno(), 65536):
        *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
        for raw in lines:
            line = raw.decode(errors="replace")
            in_report = in_report or line.startswith("Traceback")  # torchrun's report: ranks print no tracebacks
            if line.startswith("error: "):
                errors.append(line.strip())
            elif in_report or _TORCHRUN_LOG.match(line):
                report.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()
    return errors, report
