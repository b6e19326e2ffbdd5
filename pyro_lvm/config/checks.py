"""Rules that tie two config sections together (one section's own rules live in its component's schema)."""

from __future__ import annotations

from pydantic import ValidationError

from pyro_lvm.config.messages import format_error
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import GUIDES, MODELS, NETWORKS, SECTIONS


def _check_flow_family(cfg, guides) -> None:
    """The local flow of L[q*_flow] is the amortized_flow guide's own family when that guide is compared: its
    transforms' shape must equal the guide's (``[guide]`` when it names the flow guide, then
    ``compare.guide_options.amortized_flow``)."""
    cc = cfg.compare
    if "amortized_flow" not in cc.guides or "flow" not in cc.qstar_families:
        return
    own = cfg.guide.model_dump() if cfg.guide.name == "amortized_flow" else {}
    try:
        flow = guides.schema("amortized_flow").model_validate(
            {**own, **cc.guide_options.get("amortized_flow", {}), "name": "amortized_flow"}
        )
    except ValidationError:
        return  # reported with its key by the guide_options check
    local = cc.qstar_flow
    theirs = (flow.flows, flow.kind, list(flow.flow_hidden), flow.context_dim)
    if (local.flows, local.kind, list(local.hidden), local.context_dim) != theirs:
        raise PyroLVMError(
            f"config key 'compare.qstar_flow': flows={local.flows}, kind={local.kind!r}, hidden={list(local.hidden)}, "
            f"context_dim={local.context_dim} differ from the amortized_flow guide's flows={theirs[0]}, "
            f"kind={theirs[1]!r}, flow_hidden={theirs[2]}, context_dim={theirs[3]}; L[q*_flow] is measured in the "
            "guide's own family, so make them equal"
        )


def check_combinations(cfg) -> None:
    """Rules that tie two sections together (one section's own rules live in its component's schema)."""
    guides = SECTIONS["guide"]
    for name in cfg.compare.guides:
        if name not in guides:
            raise PyroLVMError(
                f"config key 'compare.guides': unknown guide {name!r}; registered: {', '.join(guides.names())}"
            )
    for section in ("model", "guide", "prior"):
        net = getattr(getattr(cfg, section), "net", None)
        if net is not None and net not in NETWORKS:
            raise PyroLVMError(
                f"config key '{section}.net': unknown network {net!r}; registered: {', '.join(NETWORKS.names())}"
            )
    if "gaussian" not in cfg.compare.qstar_families:
        raise PyroLVMError(
            "config key 'compare.qstar_families': the gap decomposition always fits the Gaussian q*; "
            "use ['gaussian'] or ['gaussian', 'flow']"
        )
    if "amortized_flow" in cfg.compare.guides and "flow" not in cfg.compare.qstar_families:
        raise PyroLVMError(
            "config key 'compare.qstar_families': compare.guides has 'amortized_flow', whose gaps are measured "
            "against the best flow per datapoint; set compare.qstar_families = ['gaussian', 'flow']"
        )
    _check_flow_family(cfg, guides)
    for name, options in cfg.compare.guide_options.items():
        if name not in cfg.compare.guides:
            raise PyroLVMError(
                f"config key 'compare.guide_options.{name}': {name!r} is not in compare.guides "
                f"({', '.join(cfg.compare.guides)})"
            )
        try:
            guides.schema(name).model_validate({**options, "name": name})
        except ValidationError as err:
            raise PyroLVMError(
                format_error(err, guides.schema(name), f"compare.guide_options.{name}", guides)
            ) from None
    condition = getattr(cfg.model, "condition", "none")
    if getattr(cfg.prior, "per_class", False) and condition != "label":
        raise PyroLVMError(
            "prior.per_class gives each class its own mixture component: it needs model.condition = 'label'"
        )
    if cfg.baseline.feed_prior and (condition != "quadrants" or cfg.prior.name != "conditional"):
        raise PyroLVMError(
            "baseline.feed_prior feeds the NN baseline's completion to the prior network: it needs "
            "model.condition = 'quadrants' and prior.name = 'conditional'"
        )
    _check_semi_supervised(cfg)
    _check_likelihood_data(cfg)


def _check_likelihood_data(cfg) -> None:
    """A Gaussian likelihood on binarized data is refused, not noted: a density on {0, 1} pixels is no probability
    of the images (its log p(x) is not comparable with a Bernoulli's), and with ``learn_scale`` it grows without
    bound as the decoder's means reach 0 and 1. Either the data were meant grey or the likelihood binary."""
    binarize = getattr(cfg.data, "binarize", "none")
    if cfg.likelihood.name == "gaussian" and binarize != "none":
        raise PyroLVMError(
            f"likelihood.name = 'gaussian' on data.binarize = {binarize!r}: a Gaussian density of 0/1 pixels is not "
            "a probability of the images; use likelihood.name = 'bernoulli' for binary data, or data.binarize = "
            "'none' to model the grey values"
        )


def _semi_supervised(model_name: str) -> bool:
    """Whether the model trains by the semi-supervised recipe (its label a latent variable where hidden)."""
    return MODELS.trait(model_name, "recipe", "plain") == "semi_supervised"


def check_hidden_labels(cfg, handed_over: bool = False) -> None:
    """Hidden training labels (``data.labelled``, or a dataset ``handed_over`` with a mask) only for a model that
    learns from them."""
    model = cfg.model.name
    if _semi_supervised(model):
        return
    if handed_over:
        raise PyroLVMError(
            f"this dataset hides training labels (data.labelled), which model {model!r} would never see: "
            "use model.name = 'm2' and guide.name = 'm2', or a dataset with every label"
        )
    raise PyroLVMError(
        f"data.labelled hides training labels, which only the semi-supervised model can learn from; model "
        f"{model!r} would never see them: use model.name = 'm2' and guide.name = 'm2', or drop data.labelled"
    )


def _check_semi_supervised(cfg) -> None:
    """The semi-supervised model (M2): its guide, its ELBOs, and scarce labels only for it."""
    model, guide, elbo = cfg.model.name, cfg.guide.name, cfg.elbo.name
    semi = _semi_supervised(model)
    if getattr(cfg.data, "labelled", None) is not None:
        check_hidden_labels(cfg)
    if semi != bool(GUIDES.trait(guide, "infers_labels", False)):
        raise PyroLVMError(
            "model 'm2' infers the label with guide 'm2' (a classifier q(y|x) and an encoder q(z|x,y)), and guide "
            f"'m2' fits only that model; got model.name = {model!r}, guide.name = {guide!r}: set both to 'm2'"
        )
    if elbo == "trace_enum" and not semi:
        raise PyroLVMError(
            f"elbo.name = 'trace_enum' sums discrete latent variables out, and model {model!r} has none to "
            "enumerate; use elbo.name = 'trace' (or 'mean_field'), or model.name = 'm2'"
        )
    if semi and cfg.eval.estimator == "ais":
        raise PyroLVMError(
            f"eval.estimator = 'ais' anneals a continuous z with HMC, and model {model!r} also has the discrete label "
            "y; use eval.estimator = 'iwae' (its evaluation sums y out)"
        )
    if semi and elbo not in ("trace_enum", "trace"):
        raise PyroLVMError(
            f"model {model!r} trains with elbo.name = 'trace_enum' (the label summed out exactly) or 'trace' (the "
            f"label sampled, a score-function gradient); {elbo!r} needs every guide site reparameterized"
        )
