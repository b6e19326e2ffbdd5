"""The training loop: SVI steps with one torch optimiser, progress, validation, metrics and atomic checkpoints.

Resume is exact on CPU: a checkpoint holds parameters, optimiser state, the torch RNG states (CPU, and CUDA when
in use) and the step; batch order depends only on (seed, epoch); evaluations draw from their own RNG stream. So N
steps + resume to 2N steps gives the same parameters as 2N steps in one go. On CUDA the streams are restored too,
but some CUDA kernels (e.g. index backward) are not bit-deterministic.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch

from pyro_lvm import config, progress
from pyro_lvm.context import scope
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer import checkpoint, tensorboard
from pyro_lvm.infer import steps as steps_mod
from pyro_lvm.infer.distributed import Ranks
from pyro_lvm.infer.experiment import Experiment
from pyro_lvm.infer.lock import LOCK, clear, run_lock
from pyro_lvm.models.baseline import fit_baseline
from pyro_lvm.seeding import cuda_devices

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"


def kl_beta(step: int, warmup: int) -> float:
    """KL annealing weight: rises linearly from ~0 to 1 over ``warmup`` steps."""
    return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)


# What a run *is*: an evaluation (or a resume) with any of these changed would silently be another run. Not: where
# files are (data.root), test-time settings (the semi-amortized guide's refinement), what may change on resume.
NOT_IDENTITY = {"data.root", "data.download", "guide.refine_steps", "guide.refine_lr", "guide.refine_backprop"}
IDENTITY_SECTIONS = ("data", "model", "prior", "likelihood", "guide")
# train.*: the trajectory, for resumes only
RESUME_IDENTITY = ("seed", "batch_size", "dtype", "kl_warmup_steps", "micro_batches")


def identity(cfg) -> dict:
    raw = config.to_dict(cfg)
    keys = {f"{s}.{k}": v for s in IDENTITY_SECTIONS for k, v in raw[s].items() if f"{s}.{k}" not in NOT_IDENTITY}
    return keys | {f"train.{k}": raw["train"].get(k) for k in RESUME_IDENTITY}


def _state(exp: Experiment, step: int, history: list[dict], summary: dict) -> dict:
    return {
        "identity": identity(exp.cfg) if exp.configured else {},
        "step": step,
        "model": exp.model.state_dict(),
        "guide": exp.guide.state_dict(),
        "optim": exp.optim.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": [torch.cuda.get_rng_state(d) for d in cuda_devices()],
        "history": history,
        "summary": summary,  # e.g. the baseline's fit
    }


def restore(exp: Experiment, run_dir: Path, resuming: bool = False, local=None) -> tuple[int, list[dict], dict]:
    """Load ``run_dir``'s checkpoint into ``exp``; returns (step, history, summary). The run's identity (keys both
    configs have) must match; ``resuming`` also checks the training trajectory, the step and the optimiser state.
    ``local`` cuts the state to what this rank holds (its per-datapoint rows)."""
    state = checkpoint.load(run_dir / CHECKPOINT, map_location=exp.device)
    state = local(state) if local is not None else state
    saved, now = state.get("identity") or {}, identity(exp.cfg) if exp.configured else {}
    for key in sorted(set(saved) & set(now)):
        if (resuming or not key.startswith("train.")) and saved[key] != now[key]:
            raise PyroLVMError(
                f"{key} is {now[key]!r} here but the checkpoint in {str(run_dir)!r} was trained with "
                f"{saved[key]!r}; a run continues with its own config: start a new run to change it"
            )
    try:
        exp.model.load_state_dict(state["model"])
        exp.guide.load_state_dict(state["guide"])
        exp.optim.load_state_dict(state["optim"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise PyroLVMError(
            f"checkpoint in {str(run_dir)!r} does not fit this config ({str(err).splitlines()[0]}); "
            "resume with the config saved in that run folder"
        ) from None
    step = int(state["step"])
    bad = checkpoint.first_nonfinite(checkpoint.tensors(state["optim"])) if resuming else None
    if bad is not None:
        raise PyroLVMError(
            f"the checkpoint in {str(run_dir)!r} holds a non-finite optimiser state ({bad}); it "
            "cannot be resumed (its parameters can still be evaluated)"
        )
    if resuming and step > exp.cfg.train.steps:
        raise PyroLVMError(
            f"the checkpoint in {str(run_dir)!r} is at step {step}, beyond train.steps = {exp.cfg.train.steps}; "
            f"resume with --set train.steps=N for some N >= {step}"
        )
    torch.set_rng_state(state["rng"].cpu())
    for device, rng in enumerate(state.get("cuda_rng", [])[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(rng.cpu(), device)
    return step, list(state["history"]), dict(state.get("summary", {}))


def write_metrics(run_dir: Path, history: list[dict], summary: dict) -> None:
    (run_dir / "metrics.json").write_text(json.dumps({"history": history, **summary}, indent=2))
    if history:
        keys = sorted({k for row in history for k in row})
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def gradient_check(exp: Experiment) -> Callable[[], str | None]:
    """A per-step test of the gradients: one sum per tensor and one synchronisation, ~2% of a digits step
    (benchmarks/nonfinite_check.py). Returns the name of a non-finite gradient, or None."""
    params = [
        (f"{prefix}.{name}", p)
        for prefix, module in (("model", exp.model), ("guide", exp.guide))
        for name, p in module.named_parameters()
        if p.requires_grad
    ]

    def check() -> str | None:
        grads = [(name, p.grad) for name, p in params if p.grad is not None]
        sums = [(g._values() if g.is_sparse else g).sum() for _, g in grads]  # sparse rows: their values
        if not sums or bool(torch.isfinite(torch.stack(sums)).all()):
            return None
        return checkpoint.first_nonfinite(grads)  # None where finite values merely summed to infinity

    return check


def _stop(step: int, what: str, bad: str, run_dir: Path | None, saved_step: int | None) -> NoReturn:
    """A NaN or infinite gradient (checked every step, before the update) or parameter / optimiser moment (checked
    before each checkpoint) stops the run, naming the step and the tensor; the last checkpoint stays as it was."""
    kept = "nothing was saved"
    if run_dir is not None and saved_step is not None:
        kept = f"the last good checkpoint (step {saved_step}) in {str(run_dir)!r} is intact"
    raise PyroLVMError(
        f"non-finite {what} {bad} at step {step}; stopped without saving: {kept}; lower optim.lr or set optim.clip_norm"
    )


def train(
    exp: Experiment,
    run_dir: str | Path | None = None,
    resume: bool = False,
    validate: Callable[[Experiment], float] | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Train ``exp`` for ``train.steps`` steps in total (or until ``train.max_seconds``), checkpointing into
    ``run_dir`` (nothing written without one); returns the history. ``overwrite``: empty ``run_dir`` first, under
    its lock. Runs inside ``pyro_lvm.scope`` with Pyro's validation set to ``train.pyro_validation``.

    The loss is the negative ELBO of the whole training set estimated from a batch (plate scaling N/B). Each
    history row averages, per datapoint and in nats, over the steps since the previous row:
    - ``train_objective`` = −loss / N, what the optimiser minimised (β-weighted during KL warm-up);
    - ``train_elbo`` = the configured bound at β = 1 (the ELBO; IWAE/Rényi for ``renyi``) on the same batches and
      draws: equal to ``train_objective`` once β = 1, one extra forward pass per step while β < 1;
    - ``beta`` at the row's last step, and ``val_elbo = validate(exp)`` (amortized guides; the caller passes the
      estimator, e.g. ``pyro_lvm.evaluation.validation_elbo``: this layer does not evaluate) at the row's step.
    """
    if resume and run_dir is None:
        raise PyroLVMError("resume needs the run folder to resume from: pass run_dir")
    if Ranks().size > 1 and exp.cfg.train.micro_batches == 1:  # the run's record: each step in P chunks
        exp.cfg = config.with_overrides(exp.cfg, [f"train.micro_batches={Ranks().size}"])
    if exp.cfg.train.tensorboard:
        tensorboard.require(run_dir)  # before the run folder is made
    with scope(validation=exp.cfg.train.pyro_validation):
        if run_dir is None:
            return _train(exp, None, resume, validate)
        run_dir = Path(run_dir)
        if not Ranks().lead:  # rank 0 holds the folder and writes; the others read a resumed checkpoint only
            return _train(exp, run_dir, resume, validate)
        with run_lock(run_dir):  # one writer per folder (infer/lock.py); the checks below hold under it
            if not resume and ((run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists()):
                if not overwrite:
                    raise PyroLVMError(
                        f"{str(run_dir)!r} already holds a run; pass --resume {run_dir} to continue it, "
                        "--overwrite to start again, or --set train.out_dir=OTHER"
                    )
                clear(run_dir)
            elif not resume and any(p.name != LOCK for p in run_dir.iterdir()):
                raise PyroLVMError(
                    f"{str(run_dir)!r} is not empty and holds no run (no {CHECKPOINT} or {CONFIG}); train into a "
                    "new or empty folder (--set train.out_dir=OTHER): pyro_lvm never clears other files"
                )
            return _train(exp, run_dir, resume, validate)


def _train(exp: Experiment, run_dir: Path | None, resume: bool, validate) -> list[dict]:
    cfg = exp.cfg.train
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    train_split = exp.data.training_rows
    stepper = steps_mod.build(exp)  # plain, or in chunks (micro-batches, ranks)
    n, ranks, batches = stepper.num_data, stepper.ranks, stepper.batches
    out = run_dir if ranks.lead else None  # what this rank writes to
    eval_every = cfg.eval_every or batches.steps_per_epoch
    step, history, summary = 0, [], {}
    if resume:
        step, history, summary = restore(exp, run_dir, resuming=True, local=stepper.restorable)
    summary["optimiser"] = exp.optim.description  # this run's, even where a resume's config changed it
    if exp.data.dynamic:
        summary["evaluation_data"] = (
            "dynamic binarization: training batches are fresh Bernoulli draws of the grey images; every evaluation "
            f"uses one fixed Bernoulli draw of each split (seed data.seed + 7 = {exp.cfg.data.seed + 7})"
        )
    if out is not None and exp.configured:
        config.save(exp.cfg, run_dir / CONFIG)  # the resolved config (with any resume overrides) beside its checkpoint
    if not resume:
        if exp.model.baseline is not None:  # quadrant CVAE: fit the frozen NN baseline first (it is checkpointed)
            b = exp.cfg.baseline
            summary |= fit_baseline(
                exp.model.baseline,
                train_split,
                exp.data.val,
                exp.condition,
                b.steps,
                b.batch_size,
                b.lr,
                cfg.seed,
                exp.data.dynamic,
                cfg.progress,
            )
        torch.manual_seed(cfg.seed)
    saved_step = step if resume else None  # the step of the checkpoint on disk
    elapsed = history[-1]["time_s"] if history else 0.0
    window: list[tuple[float, float]] = []  # (objective, bound at beta = 1) per step
    t0 = time.perf_counter() - elapsed
    grads_finite = gradient_check(exp)
    scalars = tensorboard.ScalarLog(out if cfg.tensorboard else None, step, elapsed, resume)
    show = cfg.progress and ranks.lead  # one bar for a job of several ranks
    bar = progress.bar(cfg.steps, step, "train", "step", enabled=show)  # a bar on a terminal, lines in a log
    try:
        while step < cfg.steps:
            exp.optim.zero_grad()
            beta = kl_beta(step, cfg.kl_warmup_steps)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Encountered NaN")
                value, bound = stepper(step, beta)  # the loss, and the bound at beta = 1 per datapoint
            if not math.isfinite(value):
                last = f"step {saved_step}" if saved_step is not None else "none written yet"
                raise PyroLVMError(
                    f"loss became {value} at step {step + 1}; stopped without updating. The last good checkpoint "
                    f"({last}) in {str(run_dir)!r} is intact; lower optim.lr or set optim.clip_norm"
                )
            bad = grads_finite()
            if bad is not None:
                _stop(step + 1, "gradient", bad, run_dir, saved_step)
            exp.optim.step()
            step += 1
            window.append((-value / n, bound))
            bar.update(1)
            over = cfg.max_seconds is not None and ranks.any(time.perf_counter() - t0 >= cfg.max_seconds)
            done = step == cfg.steps or over
            if step % eval_every == 0 or done:
                row = {
                    "step": step,
                    "epoch": step / batches.steps_per_epoch,
                    "train_elbo": sum(b for _, b in window) / len(window),
                    "train_objective": sum(o for o, _ in window) / len(window),
                    "beta": beta,
                    "time_s": time.perf_counter() - t0,
                }
                window = []
                if exp.amortized and validate is not None and ranks.lead:
                    row["val_elbo"] = validate(exp)
                history.append(row)
                scalars.add(row)
                val = {"val": f"{row['val_elbo']:.2f}"} if "val_elbo" in row else {}  # none per-datapoint
                bar.set_postfix(elbo=f"{row['train_elbo']:.2f}", **val)
            if run_dir is not None and (step % cfg.checkpoint_every == 0 or done):
                # compiled or plain, and why (set every time: a resume may have changed elbo.jit)
                summary["elbo_path"] = getattr(exp.elbo, "path", f"{exp.cfg.elbo.name}, plain")
                state = stepper.gather(_state(exp, step, history, summary))  # rank 0: all rows; others: None
                bad = state and checkpoint.first_nonfinite(checkpoint.tensors(state))
                if bad:  # never save a poisoned state over the last good one
                    _stop(step, "state", bad, run_dir, saved_step)
                if state is not None:
                    checkpoint.save(state, run_dir / CHECKPOINT)
                    write_metrics(run_dir, history, summary)
                saved_step = step
            if done:
                break
    finally:
        bar.close()
        scalars.close()
    return history
