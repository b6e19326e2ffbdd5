"""The priors' densities against hand-written formulas (float64): the mixture of Gaussians with unequal weights and
scales, its per-class form, the VampPrior over a hand-written encoder; their starting values, refusals and memory
costs."""

import math

import pytest
import torch
from torch.distributions import constraints

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.models.priors import (
    ConditionalOptions,
    MixtureOptions,
    MixturePrior,
    StandardNormalPrior,
    VampOptions,
    VampPrior,
    mixture_cost,
    network_prior_cost,
)

LOG_2PI = math.log(2 * math.pi)
F64 = torch.float64


def _log_normal(z, loc, scale):
    """Σ_d log N(z_d; loc_d, scale_d²), written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def _log_mixture(z, log_weights, locs, scales):
    """log Σ_k w_k N(z; loc_k, diag scale_k²) for z (B, D), components (K, D), by the max-shift formula."""
    terms = log_weights + _log_normal(z[:, None, :], locs, scales)  # (B, K)
    top = terms.max(-1, keepdim=True).values
    return (top + (terms - top).exp().sum(-1, keepdim=True).log()).squeeze(-1)


def _mog(K=3, D=2, **kwargs):
    """A float64 MixturePrior with unequal weights, distinct locs and unequal, non-unit scales."""
    prior = MixturePrior(D, K, **kwargs).double()
    g = torch.Generator().manual_seed(5)
    prior.locs = 2.0 * torch.randn(K, D, generator=g, dtype=F64)
    prior.scales = 0.3 + torch.rand(K, D, generator=g, dtype=F64) * 2.0
    prior.logits = torch.randn(K, generator=g, dtype=F64)
    return prior


def test_mog_log_density_is_the_hand_written_weighted_mixture():
    """log p(z) = log Σ_k softmax(logits)_k N(z; mu_k, diag sigma_k²): weights from the logits (not uniform),
    each component's own scales (not 1), event dim 1 (one density per row)."""
    prior = _mog()
    z = torch.randn(7, 2, dtype=F64) * 2.0
    p = prior()
    assert p.batch_shape == () and p.event_shape == (2,)
    log_w = prior.logits - torch.logsumexp(prior.logits, -1)
    expected = _log_mixture(z, log_w, prior.locs, prior.scales)
    assert torch.allclose(p.log_prob(z), expected, rtol=1e-12, atol=1e-12), (p.log_prob(z), expected)
    # the weights matter: the same components with uniform weights give another density
    assert (
        p.log_prob(z) - _log_mixture(z, torch.full((3,), -math.log(3), dtype=F64), prior.locs, prior.scales)
    ).abs().max() > 1e-2
    # a condition is ignored without per_class
    c = torch.eye(4, dtype=F64)[[0, 1, 2, 3, 0, 1, 2]]
    assert torch.allclose(prior(c).log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_mog_per_class_density_is_the_class_component_and_the_mixture_without_a_label():
    """per_class: one component per class (K = cond_dim, whatever num_components says); with a one-hot label the
    density is that component's Normal, without one the weighted mixture of all."""
    prior = _mog(K=4, D=3, cond_dim=4, per_class=True)
    assert prior.per_class is True and prior.locs.shape == (4, 3)
    labels = torch.tensor([2, 0, 3, 3, 1])
    c = torch.eye(4, dtype=F64)[labels]
    z = torch.randn(5, 3, dtype=F64)
    p = prior(c)
    assert p.batch_shape == (5,) and p.event_shape == (3,)
    expected = _log_normal(z, prior.locs[labels], prior.scales[labels])
    assert torch.allclose(p.log_prob(z), expected, rtol=1e-12, atol=1e-12), (p.log_prob(z), expected)
    log_w = prior.logits - torch.logsumexp(prior.logits, -1)
    assert torch.allclose(prior().log_prob(z), _log_mixture(z, log_w, prior.locs, prior.scales), rtol=1e-12)
    assert MixturePrior(2, 7, cond_dim=5, per_class=True).locs.shape == (5, 2)
    assert MixturePrior(2, 7, cond_dim=1, per_class=True).locs.shape == (1, 2)  # one class is a label too


def test_mog_starts_at_seeded_locs_unit_scales_and_equal_weights_and_refuses_per_class_without_a_label():
    """The documented start: locs N(0, 1) from its own generator, seed 0 (the same for every run), scales 1 (positive
    constraint), logits 0; defaults 10 components, no per_class; per_class without a label refused in one line."""
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    prior = MixturePrior(3, 4)
    assert torch.equal(torch.get_rng_state(), caller)  # its own generator: the caller's stream is not drawn from
    assert torch.equal(prior.locs, torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(prior.scales, torch.ones(4, 3)) and torch.equal(prior.logits, torch.zeros(4))
    assert prior._pyro_params["scales"][0] is constraints.positive
    assert prior.per_class is False
    default = MixturePrior(2)
    assert default.locs.shape == (10, 2) and default.per_class is False
    with pytest.raises(PyroLVMError) as err:
        MixturePrior(2, 3, per_class=True)
    assert str(err.value) == "prior.per_class needs a label: use it with model.condition = 'label'"


class _Encoder:
    """q(z | u) = N(u A, diag (softplus(u B) + 0.1)²), written out, in float64."""

    def __init__(self, P, D, seed=2):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(P, D, generator=g, dtype=F64)
        self.B = torch.randn(P, D, generator=g, dtype=F64)

    def __call__(self, u):
        return u @ self.A, torch.log1p(torch.exp(u @ self.B)) + 0.1


@pytest.mark.parametrize("D", [1, 3])
def test_vamp_log_density_is_the_uniform_mixture_of_encoded_pseudo_inputs(D):
    """log p(z) = log (1/K) Σ_k q(z | u_k) with the encoder's (loc, scale) of each pseudo-input, written out."""
    K, P = 4, 5
    prior = VampPrior(D, num_features=P, num_components=K).double()
    prior.pseudo_inputs = torch.randn(K, P, dtype=F64)
    encode = _Encoder(P, D)
    prior.attach_encoder(encode)
    assert prior.encode is encode
    z = torch.randn(6, D, dtype=F64)
    p = prior()
    assert p.batch_shape == () and p.event_shape == (D,)
    loc, scale = encode(prior.pseudo_inputs)
    expected = _log_mixture(z, torch.full((K,), -math.log(K), dtype=F64), loc, scale)
    assert torch.allclose(p.log_prob(z), expected, rtol=1e-12, atol=1e-12), (p.log_prob(z), expected)


def test_vamp_starts_near_the_middle_of_the_pixel_range_and_refuses_in_one_line():
    """Pseudo-inputs 0.5 + 0.01 N(0, 1) from its own generator (seed 0), 10 by default; no encoder, a condition: refused."""
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    prior = VampPrior(2, num_features=6, num_components=3)
    assert torch.equal(torch.get_rng_state(), caller)  # its own generator: the caller's stream is not drawn from
    assert torch.equal(prior.pseudo_inputs, 0.5 + 0.01 * torch.randn(3, 6, generator=torch.Generator().manual_seed(0)))
    assert VampPrior(2, num_features=6).pseudo_inputs.shape == (10, 6)
    assert prior.encode is None and "encode" not in dict(prior.named_modules())
    with pytest.raises(PyroLVMError) as err:
        prior()
    assert str(err.value) == "prior 'vamp' needs an encoder: use it with guide.name = 'amortized' or 'semi_amortized'"
    with pytest.raises(PyroLVMError) as err:
        VampPrior(2, num_features=6, cond_dim=1)
    assert str(err.value) == "prior 'vamp' is for the unconditional VAE; with a CVAE use 'conditional' or 'mog'"
    VampPrior(2, num_features=6, cond_dim=0)  # no condition: accepted


def test_standard_normal_density_is_the_hand_written_unit_normal():
    prior = StandardNormalPrior(3).double()
    z = torch.randn(5, 3, dtype=F64)
    p = prior(torch.ones(5, 2, dtype=F64))  # the condition is ignored
    assert p.event_shape == (3,)
    assert torch.allclose(
        p.log_prob(z), _log_normal(z, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)), rtol=1e-12
    )


def test_prior_memory_costs_are_the_hand_counted_parameters():
    """conditional: the MLP cond_dim -> hidden... -> 2D (weights and biases); mog / vamp: K (2D + 1 + P); a prior's
    options without a network or without components cost nothing for that part (a user's prior, guessed)."""
    sizes = {"latent_dim": 3, "num_features": 7, "cond_dim": 4, "num_data": 100}
    conditional = ConditionalOptions(hidden=[5, 6])
    assert network_prior_cost(conditional, **sizes).parameters == (4 + 1) * 5 + (5 + 1) * 6 + (6 + 1) * 6
    assert network_prior_cost(ConditionalOptions(hidden=[5], net="conv"), **sizes).parameters == 0
    assert mixture_cost(MixtureOptions(num_components=4), **sizes).parameters == 4 * (2 * 3 + 1 + 7)
    assert mixture_cost(VampOptions(num_components=2), **sizes).parameters == 2 * (2 * 3 + 1 + 7)
    assert mixture_cost(conditional, **sizes).parameters == 0
    assert network_prior_cost(MixtureOptions(), **sizes).parameters == 0
