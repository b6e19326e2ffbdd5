"""The fixed sections of a config: the training loop, evaluation, the completion baseline and the comparison.
(Component sections are the schemas their components register; see ``pyro_lvm.registry``.)"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pyro_lvm.registry import Seed, Widths

Steps = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class TrainConfig(_Section):
    steps: int = Field(3000, gt=0)
    max_seconds: float | None = Field(None, gt=0)  # a wall-clock budget: stop at the first step past it
    batch_size: int = Field(128, gt=0)
    # each step's batch in this many chunks, accumulated (less memory per step; several ranks share them, one
    # chunk each by default): the plain run's gradient with other noise (pyro_lvm/training/strategies/chunked.py)
    micro_batches: int = Field(1, gt=0)
    seed: Seed = 0
    eval_every: int | None = Field(None, gt=0)  # steps between validation ELBOs; default one epoch
    checkpoint_every: int = Field(500, gt=0)
    kl_warmup_steps: int = Field(0, ge=0)  # beta rises linearly from 0 to 1 over these steps
    pyro_validation: bool = False  # Pyro's distribution validation: on in tests, about 9% slower when on
    device: str = "cpu"
    # how a step is taken: eager (the Pyro program, through Pyro's JIT where elbo.jit allows), traced (the step
    # recorded once as a pure torch function and replayed), compiled (that function through torch.compile),
    # graph (CUDA: the step and the optimiser captured in one CUDA graph); auto: eager (benchmarks/README.md)
    step: Literal["auto", "eager", "traced", "compiled", "graph"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    out_dir: str | None = Field(None, min_length=1)  # default runs/<config stem>
    progress: bool = True
    # scalars (ELBO, objective, beta, validation, step time) and image grids to RUN/tb/ (pip install tensorboard)
    tensorboard: bool = False
    # config as params, metrics rows by step, figures and evaluation to an MLflow run (pip install 'pyro-lvm[mlflow]')
    mlflow: bool = False
    # MLflow tracking URI; default MLflow's own: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (artifacts ./mlruns)
    mlflow_uri: str | None = Field(None, min_length=1)
    mlflow_experiment: str = Field("pyro-lvm", min_length=1)  # MLflow experiment of the run (created when missing)


class AISConfig(_Section):
    """Annealed importance sampling and BDMC (``pyro_lvm.evaluation.ais``), used where ``eval.estimator = "ais"``."""

    chains: int = Field(16, gt=0)  # C, independent AIS chains per datapoint
    steps: int = Field(500, gt=0)  # T, intermediate distributions from the start (β = 0) to the posterior (β = 1)
    schedule: Literal["sigmoid", "linear"] = "sigmoid"  # spacing of β: sigmoid (dense at both ends) or even
    sigmoid_delta: float = Field(4.0, gt=0.0)  # δ of the sigmoid schedule
    leapfrog: int = Field(10, gt=0)  # leapfrog steps per HMC transition
    step_size: float = Field(0.1, gt=0.0)  # first HMC step size (in the start's standard deviations), then adapted
    target_accept: float = Field(0.65, gt=0.0, lt=1.0)  # the adaptation's target acceptance rate
    start: Literal["guide", "prior"] = "guide"  # the chains start at the guide's q(z|x,c) (compare: q*) or p(z|c)
    bdmc_points: int = Field(100, ge=0)  # points simulated from the model for the BDMC bracket (0: none)


class EvalConfig(_Section):
    num_samples: int = Field(5000, gt=0)  # K, importance samples per datapoint
    chunk_size: int = Field(1000, gt=0)  # particles per vectorised call: bounds memory
    batch_size: int = Field(16, gt=0)  # datapoints per vectorised call (memory ~ batch * chunk * P floats)
    num_points: int | None = Field(None, gt=0)  # evaluate on the first n test points only
    seed: Seed = 1
    # one random stream per batch of points (seeded by (seed, batch)) instead of one for the split: what a job of
    # several ranks uses, each rank taking every P-th batch (same values as one process with this on)
    per_batch_streams: bool = False
    # log p̂(x) by "iwae" (importance sampling, K = num_samples) or also by "ais" (annealed importance sampling with
    # HMC, reported beside IWAE, with the BDMC bracket on simulated data); compare's gap table then uses AIS
    estimator: Literal["iwae", "ais"] = "iwae"
    # the chains, schedule and HMC of AIS and the points of BDMC (the [eval.ais] table below)
    ais: AISConfig = Field(default_factory=AISConfig)


class BaselineConfig(_Section):
    """The deterministic NN baseline of quadrant completion (pyro_lvm.models.baseline): fitted before the CVAE, frozen."""

    hidden: Widths = Field(default_factory=lambda: [500, 500])
    steps: int = Field(3000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0.0)
    feed_prior: bool = False  # the prior network sees [c, E[x | f(c)]], as in the Pyro CVAE tutorial


class LocalFlowConfig(_Section):
    """The local flow family of q*_flow (``pyro_lvm.evaluation.local_inference.fit_local_flow``)."""

    flows: int = Field(2, ge=1, le=64)
    kind: Literal["affine", "spline"] = "affine"
    hidden: Widths = Field(default_factory=lambda: [64])
    context_dim: int = Field(16, gt=0)


class CompareConfig(_Section):
    guides: list[str] = Field(default_factory=lambda: ["amortized", "per_datapoint", "semi_amortized"], min_length=1)
    gap_points: int = Field(200, gt=0)  # training points for the amortization/approximation gap decomposition
    elbo_samples: int = Field(100, gt=0)  # particles for each L[q] estimate in the gap table
    refine_ks: list[Steps] = Field(default_factory=lambda: [0, 1, 2, 5, 10, 20])  # semi-amortized steps at test
    qstar_init: Literal["zero", "encoder"] = "encoder"  # where the local optimum q* starts (Cremer et al.: zero)
    qstar_lr: float = Field(0.01, gt=0.0)
    qstar_max_steps: int = Field(3000, gt=0)
    qstar_window: int = Field(100, gt=0)  # stop when the mean ELBO of a window improves by less than qstar_tol
    qstar_tol: float = Field(0.01, ge=0.0)
    # q* families of the gap table: the Gaussian always; "flow" adds L[q*_flow], fitted from q*_Gaussian
    qstar_families: list[Literal["gaussian", "flow"]] = Field(default_factory=lambda: ["gaussian"])
    qstar_flow: LocalFlowConfig = Field(default_factory=LocalFlowConfig)
    # step size of the test-time refinement (the refine_ks row); default: the semi-amortized guide's refine_lr
    # (compare.guide_options, else [guide]), else 0.1
    refine_lr: float | None = Field(None, gt=0.0)
    # options for one guide of ``guides`` only, e.g. {semi_amortized = {refine_steps = 20}}: [guide] holds the
    # options of the guide it names, and each other guide is trained with [guide]'s options it has plus these
    guide_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    out_dir: str | None = Field(None, min_length=1)  # default runs/<config stem>
