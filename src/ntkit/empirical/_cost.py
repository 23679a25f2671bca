"""The cost model behind `implementation="auto"`: FLOPs and memory of each method, estimated from shapes.

With `F` the FLOPs of one forward pass per example (summed over the traced program: `2·m·n·k` per matrix
product and convolution, one per element otherwise), `P` the parameter count, `O` the outputs per example, `E`
the kernel entries per pair of examples (`O` traced, `O²` full), `N1, N2` the examples (a whole-batch pass costs
`N·F` when examples may interact, `vmap_axes=None`), and `S = N1 + N2` (`N1` when `x2` is `None`):

* jacobian: a forward pass and `O` backward passes per example, each backward computing input *and* weight
  gradients (`2F`): `S·(F + 2·O·F)`, plus `2·N1·N2·E·P` to contract; memory `S·O·P`.
* ntvp: per column, a vjp on one `x2` example (`3F`) and a jvp over all of `x1` (`3·N1·F`): `N2·O·(3F + 3·N1·F)`;
  memory `O·P` plus the kernel.
* structured: a forward pass and `O` backward passes to the activations only (`F`): `S·(F + O·F)`, plus for every
  dense/convolutional weight the cost `opt_einsum` finds for its four-operand contraction, plus `2·N1·N2·E·p` and
  `2·S·O·p` for other parameters `p`; memory `S·O·(activations + p)`.

FLOPs are not seconds: the per-example backward passes of the Jacobian method (one tiny weight gradient per
example and output, under `vmap`) run far below the throughput of the large contractions the structured method
does instead. `benchmarks/empirical_ntk.py` measures that gap on its convolutional case; the model charges the Jacobian
and NTK-vector-product passes `PASS_PENALTY = 4` times their FLOPs.
The cheapest method whose estimated memory fits in the process's budget (`ntkit._memory`: half of what physical
memory, the cgroup and `RLIMIT_AS` leave) is tried first; the caller then checks what XLA will really allocate.
"""

from __future__ import annotations

import math

import numpy as np
import opt_einsum

from .._layout import KernelLayout
from ._model import Model
from ._structured import conv_spec, dot_spec, example_shape, make_plan, model_program

# Throughput gap between per-example backward passes and large contractions (see the module docstring).
PASS_PENALTY = 4.0


def forward_flops(prog) -> float:
    total = 0.0
    for op in prog.ops:
        out = sum(math.prod(a.shape) for a in op.out_avals)
        if op.name == "dot_general":
            (lc, _), _ = op.params["dimension_numbers"]
            lhs = op.ins[0]
            shape = prog.avals[lhs].shape if isinstance(lhs, int) else np.shape(lhs.value)
            total += 2.0 * out * math.prod(shape[d] for d in lc)
        elif op.name == "conv_general_dilated":
            rhs = op.ins[1]
            shape = prog.avals[rhs].shape if isinstance(rhs, int) else np.shape(rhs.value)
            out_features = shape[op.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * out * math.prod(shape) / out_features
        else:
            total += out
    return total


def estimate_costs(model: Model, layout: KernelLayout, x1, x2, params, kwargs=None) -> dict[str, tuple[float, float]]:
    """`{implementation: (flops, bytes)}` for the given shapes."""
    prog, leaves, _ = model_program(model, params, kwargs or {}, example_shape(model, x1), x1.dtype)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    sides = n1 if x2 is None else n1 + n2
    itemsize = np.dtype(x1.dtype).itemsize if np.issubdtype(x1.dtype, np.floating) else 4
    n_params = sum(math.prod(leaf.shape) for leaf in leaves)
    n_out = layout.out_size
    entries = layout.pairs_per_example_pair()

    flops_fwd = forward_flops(prog) / (1 if model.per_example else x1.shape[0])
    pass_cost = flops_fwd if model.per_example else flops_fwd * max(n1, n2)  # one backward/forward pass

    costs = {
        "jacobian": (PASS_PENALTY * sides * (pass_cost + 2.0 * n_out * pass_cost) + 2.0 * n1 * n2 * entries * n_params,
                     sides * n_out * n_params * itemsize),
        "ntvp": (PASS_PENALTY * n2 * n_out * (3.0 * pass_cost + 3.0 * n1 * flops_fwd),
                 (n_out * n_params + n1 * n2 * n_out * n_out) * itemsize),
    }
    plan = make_plan(prog, len(leaves))
    if plan is not None:
        flops, activations, generic = sides * (pass_cost + n_out * pass_cost), 0.0, 0.0
        for p, kind in enumerate(plan.kinds):
            if kind in ("dot", "conv"):
                ((k, (pos,)),) = plan.consumers[p]
                op = prog.ops[k]
                other = op.ins[1 - pos]
                x_shape = prog.avals[other].shape if isinstance(other, int) else np.shape(other.value)
                y_shape = op.out_avals[0].shape
                if kind == "conv":
                    rhs_shape = prog.avals[op.ins[pos]].shape
                    dn = op.params["dimension_numbers"]
                    c_q = x_shape[dn.lhs_spec[1]] * math.prod(rhs_shape[d] for d in dn.rhs_spec[2:])
                    x_shape = tuple(c_q if d == dn.out_spec[1] else s for d, s in enumerate(y_shape))
                    spec = conv_spec(op, layout, model.per_example)
                else:
                    spec = dot_spec(op, pos, layout, model.per_example, len(x_shape))
                lead = (n1,) if model.per_example else ()
                lead2 = (n2,) if model.per_example else ()
                g1 = (n1,) + layout.out_shape + tuple(y_shape)
                g2 = (n2,) + layout.out_shape + tuple(y_shape)
                operands = [lead + tuple(x_shape), g1, lead2 + tuple(x_shape), g2]
                _, info = opt_einsum.contract_path(spec, *operands, shapes=True, optimize="optimal")
                flops += float(info.opt_cost)
                activations += math.prod(x_shape) + math.prod(y_shape) * n_out
            elif kind == "generic":
                generic += math.prod(leaves[p].shape)
        flops += 2.0 * n1 * n2 * entries * generic + sides * n_out * 2.0 * generic
        costs["structured"] = (flops, sides * (activations + n_out * generic) * itemsize)
    return costs


def rank_implementations(model: Model, layout: KernelLayout, x1, x2, params, kwargs,
                         budget: float) -> list[str]:
    """Implementations best first: those whose estimated memory fits in `budget` bytes by estimated FLOPs, then
    the others by estimated memory."""
    costs = estimate_costs(model, layout, x1, x2, params, kwargs)
    fitting = sorted((k for k in costs if costs[k][1] <= budget), key=lambda k: costs[k][0])
    return fitting + sorted((k for k in costs if k not in fitting), key=lambda k: costs[k][1])
