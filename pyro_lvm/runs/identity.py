"""What a run *is*: the config keys a checkpoint must agree on before it is evaluated or resumed, and reopening a
run folder's saved config."""

from __future__ import annotations

from pathlib import Path

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import CONFIG

# An evaluation (or a resume) with any of these changed would silently be another run. Not: where files are
# (data.root), test-time settings (the semi-amortized guide's refinement), what may change on resume.
NOT_IDENTITY = {"data.root", "data.download", "guide.refine_steps", "guide.refine_lr", "guide.refine_backprop"}
IDENTITY_SECTIONS = ("data", "model", "prior", "likelihood", "guide")
# train.*: the trajectory, for resumes only
RESUME_IDENTITY = ("seed", "batch_size", "dtype", "kl_warmup_steps", "micro_batches", "step")


def identity(cfg: Config) -> dict:
    """The keys that make a run what it is (see ``NOT_IDENTITY``), flattened as ``section.key``."""
    raw = config_mod.to_dict(cfg)
    keys = {f"{s}.{k}": v for s in IDENTITY_SECTIONS for k, v in raw[s].items() if f"{s}.{k}" not in NOT_IDENTITY}
    return keys | {f"train.{k}": raw["train"].get(k) for k in RESUME_IDENTITY}


def check_identity(saved: dict, now: dict, run_dir: Path, resuming: bool) -> None:
    """Refuse a checkpoint trained with another value of a key both identities hold (``train.*`` on resume only)."""
    for key in sorted(set(saved) & set(now)):
        if (resuming or not key.startswith("train.")) and saved[key] != now[key]:
            raise PyroLVMError(
                f"{key} is {now[key]!r} here but the checkpoint in {str(run_dir)!r} was trained with "
                f"{saved[key]!r}; a run continues with its own config: start a new run to change it"
            )


def default_run_dir(cfg: Config, config_path: str | Path) -> Path:
    return Path(cfg.train.out_dir) if cfg.train.out_dir else Path("runs") / Path(config_path).stem


def run_config(run_dir: Path, overrides: list[str] | None = None, trust_plugins: bool = False) -> Config:
    """The config saved in ``run_dir``, with ``--set`` overrides applied. Its plugin modules are imported only
    where ``config.trust.import_run_plugins`` allows (``trust_plugins``: all of them)."""
    if not (run_dir / CONFIG).is_file():
        raise PyroLVMError(f"{str(run_dir)!r} is not a run folder (no {CONFIG}); pass the folder `train` wrote")
    return config_mod.load(run_dir / CONFIG, overrides, saved=True, trust_plugins=trust_plugins)
