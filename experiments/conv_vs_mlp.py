"""A convolutional VAE against an MLP VAE with the same number of parameters, trained for the same wall-clock time,
on the test IWAE log p̂(x) of the same points (paired difference with its standard error).

    python experiments/conv_vs_mlp.py [--config experiments/fashion_mnist_conv.toml] [--minutes 5] [--set k=v ...]

The config describes the conv VAE (model.net = guide.net = "conv"); the MLP VAE takes two hidden layers of equal
width w in the encoder and the decoder, with w chosen so that its parameter count is the nearest to the conv
VAE's. Writes runs/conv_vs_mlp/{conv,mlp}/ (run folders) and runs/conv_vs_mlp/comparison.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.runs.files import finished_runs


def parameters(exp) -> int:
    return sum(p.numel() for m in (exp.model, exp.guide) for p in m.parameters())


def matched_mlp(cfg, target: int, num_features: int):
    """The MLP config (widths [w, w] in encoder and decoder) whose parameter count is nearest ``target``. For an
    unconditional VAE the networks hold all the parameters: encoder P-w-w-2D and decoder D-w-w-P, weights and
    biases (checked against the built model in ``main``)."""
    D, P = cfg.model.latent_dim, num_features

    def count(w: int) -> int:
        encoder = (P + 1) * w + (w + 1) * w + (w + 1) * 2 * D
        decoder = (D + 1) * w + (w + 1) * w + (w + 1) * P
        return encoder + decoder

    w = min(range(8, 8192), key=lambda w: abs(count(w) - target))
    over = ["model.net=mlp", "guide.net=mlp", f"model.hidden=[{w}, {w}]", f"guide.hidden=[{w}, {w}]"]
    return config.with_overrides(cfg, over), count(w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("fashion_mnist_conv.toml")))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default="runs/conv_vs_mlp")
    args = parser.parse_args(argv)
    from pyro_lvm.evaluation.estimates import Estimate, evaluate_split
    from pyro_lvm.training.experiment import Experiment
    from pyro_lvm.training.run import train

    try:
        conv_cfg = config.load(args.config, [*args.set, f"train.max_seconds={args.minutes * 60}"])
        conv = Experiment.from_config(conv_cfg)
        mlp_cfg, counted = matched_mlp(conv_cfg, parameters(conv), conv.data.num_features)
        rows, values = [], {}
        for name, cfg in [("conv", conv_cfg), ("mlp", mlp_cfg)]:
            exp = conv if name == "conv" else Experiment.from_config(cfg)
            if name == "mlp" and parameters(exp) != counted:
                raise PyroLVMError(f"the MLP VAE has {parameters(exp)} parameters, not the {counted} counted")
            print(f"== training {name} ({parameters(exp):,} parameters, {args.minutes:g} min)", flush=True)
            history = train(exp, Path(args.out) / name, validate=True, overwrite=True)
            ev = cfg.eval
            res = evaluate_split(exp.model, exp.guide, exp.data.test, exp.condition, ev.num_samples, ev.chunk_size,
                                 ev.batch_size, ev.num_points, None, ev.seed)  # fmt: skip
            values[name] = res["log_px"].values
            rows.append([name, parameters(exp), history[-1]["step"], history[-1]["time_s"], res["elbo"].mean,
                         res["log_px"].mean, res["log_px"].stderr])  # fmt: skip
    except Interrupted as stop:  # a signal: the run in progress checkpointed its step
        finished = ", ".join(finished_runs(Path(args.out))) or "none"
        print(f"{stop}; finished runs (reused by a rerun): {finished}", file=sys.stderr)
        return stop.exit_code
    except PyroLVMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    diff = Estimate(values["conv"] - values["mlp"])
    headers = ["net", "parameters", "steps", "train time (s)", "test ELBO", "test log p̂(x)", "std. error"]
    print(tabulate(rows, headers=headers, floatfmt=(None, ",d", ",d", ".0f", ".2f", ".2f", ".2f")))
    print(
        f"conv minus mlp, paired over the same {diff.values.numel()} test images: {diff.mean:.2f} ± {diff.stderr:.2f}"
    )
    summary = {"rows": [dict(zip(headers, r, strict=True)) for r in rows], "conv_minus_mlp": diff.as_dict()}
    (Path(args.out) / "comparison.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    with scope():
        sys.exit(main())
