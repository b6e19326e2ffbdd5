"""The random draws of a traced step as inputs: f(θ, x, c, idx, β) becomes f(θ, x, c, idx, β, ε) and a noise
function draws ε.

A graph recorded by ``pyro_lvm.infer.pure`` draws its noise with ATen's random operations (those tagged
``nondeterministic_seeded``: ``normal_``, ``uniform_``, ``bernoulli``...). ``lift_noise`` moves every such operation,
with the constant-shaped tensors it fills, into a second graph, ``draw()``, and makes its result a placeholder of the
first. ``draw()`` runs the same operations in the same order on torch's generator, so
``f(θ, ..., draw())`` draws exactly what the one-piece graph draws. With the noise an input, one step can be mapped
over replicas (``torch.func.vmap``), each replica's ε drawn from its own stream.

A draw whose shape or parameters depend on the step's inputs (a draw from a computed probability) cannot be moved;
``lift_noise`` then raises ``NoiseError`` naming the operation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torch.utils import _pytree as pytree


class NoiseError(ValueError):
    """The graph has a draw that depends on the step's inputs."""


def is_random(node: fx.Node) -> bool:
    target = node.target
    return node.op == "call_function" and torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


@dataclass
class Lifted:
    """``step(*args, noise)``: the graph with its draws as inputs (args as the traced function's: θ, x, c, idx, β);
    ``draw()``: the noise tensors, drawn as the graph drew them."""

    main: fx.GraphModule
    noise: fx.GraphModule
    in_spec: Any
    out_spec: Any

    def draw(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.noise())

    def step(self, *args, noise):
        flat = pytree.tree_flatten(args)[0] if self.in_spec is not None else list(args)
        out = self.main(*flat, *noise)
        return out if self.out_spec is None else pytree.tree_unflatten(out, self.out_spec)


def lift_noise(gm: fx.GraphModule) -> Lifted:
    """Split ``gm`` (a make_fx graph with pytree in/out specs) into its noise and its noise-free rest."""
    info = getattr(gm.graph._codegen, "pytree_info", None)  # None: flat inputs and outputs already
    draws = [n for n in gm.graph.nodes if is_random(n)]
    needed: set[fx.Node] = set()
    for n in draws:
        up = _ancestors(n)
        if any(a.op == "placeholder" for a in up):
            raise NoiseError(f"the draw {n.target} depends on the step's inputs")
        needed |= up | {n}
    # the noise graph: the draws and the constant-shaped tensors they fill, in the original order
    noise_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n in needed:
            env[n] = noise_graph.node_copy(n, lambda a: env[a])
    noise_graph.output(tuple(env[n] for n in draws))
    noise = fx.GraphModule(gm, noise_graph)
    # the rest: each draw (and the fresh tensor an in-place draw filled) read from a new placeholder
    graph = gm.graph
    graph._codegen = fx.graph.CodeGen()  # flat inputs and outputs; the specs are applied by Lifted.step
    last = [n for n in graph.nodes if n.op == "placeholder"][-1]
    for i, n in enumerate(draws):
        with graph.inserting_after(last):
            last = graph.placeholder(f"noise_{i}")
        filled = n.args[0] if str(n.target).split(".")[-2].endswith("_") and isinstance(n.args[0], fx.Node) else None
        n.replace_all_uses_with(last)
        if filled is not None:
            filled.replace_all_uses_with(last, delete_user_cb=lambda user, draw=n: user is not draw)
        graph.erase_node(n)
    for n in reversed(list(graph.nodes)):  # the fresh tensors the draws filled, now unused
        if n in needed and not n.users and n.op != "placeholder":
            graph.erase_node(n)
    graph.lint()
    specs = (info.in_spec, info.out_spec) if info is not None else (None, None)
    return Lifted(fx.GraphModule(gm, graph), noise, *specs)
