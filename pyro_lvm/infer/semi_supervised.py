"""Training objectives of the semi-supervised model M2: ``TraceEnum_ELBO`` (``elbo.name = "trace_enum"``) and the
objective over a batch of labelled and unlabelled rows.

With N_l labelled and N_u unlabelled training rows, a step sees B_l labelled rows (x, y) and B_u unlabelled rows x
(``pyro_lvm.data.labelled.SemiSupervisedBatches``) and minimises

    loss = −(N_l / B_l) Σ_labelled [ L(x, y) + α log q(y | x) ]  −  (N_u / B_u) Σ_unlabelled U(x)

    L(x, y) = E_q(z|x,y)[log p(x, y, z) − log q(z | x, y)]                  (the labelled bound)
    U(x)    = Σ_y q(y | x) [ L(x, y) − log q(y | x) ]                        (the unlabelled bound)

Each part is the plate-scaled ELBO of its own rows (the data plate has size N_l or N_u, subsample B_l or B_u), so
the sum is an unbiased estimate of the full-data bound Σ_l L + Σ_u U (plus the auxiliary term, Kingma et al.'s
J^α). Under ``trace_enum`` the sum over y in U is exact (parallel enumeration of the guide's ``y``); under
``trace`` y is sampled from q(y | x) (a score-function gradient). With α > 0 the training history's ``train_elbo``
(−loss / N) includes the auxiliary term, which is ≤ 0: it is then a lower number than the bound itself.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro import infer

from pyro_lvm.infer.elbos import JIT_FORMS, _common
from pyro_lvm.registry import ELBOS


@ELBOS.register("trace_enum")
def trace_enum(num_particles: int = 1, vectorize_particles: bool = True, **_: object) -> infer.ELBO:
    """TraceEnum_ELBO: sums discrete latent sites marked ``enumerate = "parallel"`` out exactly (M2's label)."""
    return infer.TraceEnum_ELBO(**_common(num_particles, vectorize_particles))


class _JitTraceEnum(infer.JitTraceEnum_ELBO):
    """Pyro's JitTraceEnum_ELBO with the interface ``JitWithFallback`` calls (its loss is already differentiable)."""

    @staticmethod
    def finish(out):
        return out

    def compiled_function(self):
        return self._differentiable_loss


JIT_FORMS["trace_enum"] = _JitTraceEnum


class SemiSupervisedObjective:
    """The M2 objective of the module docstring with ``labelled`` and ``unlabelled`` ELBOs (two instances of the
    configured one: each keeps its own compiled function). ``c`` holds one-hot rows for labelled rows and zero rows
    for unlabelled ones (``Condition(partial=True)``). ``num_data`` given: the plate scaling above; None: plain sums.
    """

    def __init__(self, labelled, unlabelled, num_labelled: int, num_unlabelled: int, aux_weight: float = 0.0):
        self.labelled, self.unlabelled = labelled, unlabelled
        self.num_labelled, self.num_unlabelled = num_labelled, num_unlabelled
        self.aux_weight = aux_weight
        self._enumerated: dict[int, object] = {}  # id(guide) -> the guide with y enumerated (one object per guide)

    @property
    def path(self) -> str:
        return getattr(self.unlabelled, "path", "plain")

    @property
    def num_particles(self) -> int:
        return self.labelled.num_particles

    def _enumerate(self, guide):
        """The guide with its discrete sites enumerated in parallel: kept, so the JIT sees one guide."""
        if id(guide) not in self._enumerated:
            self._enumerated[id(guide)] = infer.config_enumerate(guide, "parallel")
        return self._enumerated[id(guide)]

    def differentiable_loss(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        if c is None:  # no condition given: every row is unlabelled
            c = x.new_zeros(x.shape[0], 1)
        known = c.sum(-1) > 0  # (B,)
        loss = x.new_zeros(())
        x_l, c_l, x_u = x[known], c[known], x[~known]
        if len(x_l):
            n = self.num_labelled if num_data is not None else None
            pos = torch.arange(len(x_l), device=x.device)  # plate subsample: positions (amortized guides only)
            loss = loss + self.labelled.differentiable_loss(model, guide, x_l, c_l, idx=pos, num_data=n, beta=beta)
            if self.aux_weight:
                scale = self.num_labelled / len(x_l) if num_data is not None else 1.0
                log_q = dist.Categorical(logits=guide.classify(x_l)).log_prob(c_l.argmax(-1))  # (B_l,)
                loss = loss - self.aux_weight * scale * log_q.sum()
        if len(x_u):
            n = self.num_unlabelled if num_data is not None else None
            pos = torch.arange(len(x_u), device=x.device)
            enum_guide = self._enumerate(guide) if self._enumerates() else guide
            loss = loss + self.unlabelled.differentiable_loss(
                model, enum_guide, x_u, None, idx=pos, num_data=n, beta=beta
            )
        return loss

    def structure(self, x, c=None) -> int:
        """What shapes this objective's program beyond the inputs' shapes: the number of labelled rows (a traced
        step keeps one graph per count, ``pyro_lvm.infer.pure``)."""
        return 0 if c is None else int((c.sum(-1) > 0).sum())

    def _enumerates(self) -> bool:
        elbo = getattr(self.unlabelled, "plain", self.unlabelled)
        return isinstance(elbo, infer.TraceEnum_ELBO)
