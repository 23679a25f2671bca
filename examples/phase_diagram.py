"""Order-to-chaos phase diagram of deep networks over (W_std, b_std).

The neural-tangents workflow "phase diagram" (Schoenholz et al. 2017, "Deep information propagation"; Xiao et al.
2020, "Disentangling trainability and generalization"): for deep `Dense(W_std, b_std)` + activation networks, the
slope `χ₁` of the correlation map at `c = 1` separates the ordered phase (`χ₁ < 1`: all inputs become alike with
depth) from the chaotic one (`χ₁ > 1`: nearby inputs decorrelate). `ntkit.analysis.phase_diagram` computes it on a
grid; here it is checked against known closed forms (ReLU: `χ₁ = W_std²/2`, critical at `W_std² = 2`; erf without
bias: critical at `W_std² = π/4`), against an independent NumPy iteration of the variance map for erf, and against
the correlation of two inputs propagated through 64 layers by the analytic `kernel_fn`.

Run: `python examples/phase_diagram.py` (float64: `JAX_ENABLE_X64=1`).
"""

import os
import tempfile

import jax.numpy as jnp
import matplotlib
import numpy as np

import ntkit as nt
from ntkit import nn as stax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

eps = float(jnp.finfo(jnp.zeros(()).dtype).eps)  # the diagram is computed in the default dtype
rtol = 100 * eps

# ReLU: E[step(z)²] = 1/2 whatever the variance, so χ₁ = W_std² / 2 exactly; without bias the variance is multiplied
# by W_std² / 2 per layer: it dies out (ordered), stays (critical) or explodes (unbounded).
w_relu = np.sqrt([1.0, 1.5, 2.0, 2.5, 3.0])
relu = nt.analysis.phase_diagram(stax.Relu(), W_std=w_relu, b_std=[0.0, 0.1, 0.3])
np.testing.assert_allclose(relu.chi_1[relu.phase != "unbounded"],
                           np.broadcast_to(w_relu**2 / 2, relu.chi_1.shape)[relu.phase != "unbounded"], rtol=rtol)
assert relu.phase[0].tolist() == ["ordered", "ordered", "critical", "unbounded", "unbounded"], relu.phase[0]
print("ReLU, b_std = 0, W_std² = 1, 1.5, 2, 2.5, 3:", relu.phase[0].tolist())

# Erf on a grid.
w_grid, b_grid = np.linspace(0.25, 3.0, 12), np.linspace(0.0, 1.0, 5)
erf = nt.analysis.phase_diagram(stax.Erf(), W_std=w_grid, b_std=b_grid)

# Independent reference: E[erf(√q z)²] = (2/π) arcsin(2q / (1 + 2q)) and E[erf'(√q z)²] = (4/π) / √(1 + 4q); iterate
# the variance map q ↦ W² E[erf(√q z)²] + b² to its fixed point q* from q = 1, then χ₁ = W² (4/π) / √(1 + 4q*).
W, B = np.meshgrid(w_grid, b_grid)
q = np.ones_like(W)
for _ in range(5000):
    q = W**2 * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + B**2
chi_1 = W**2 * (4 / np.pi) / np.sqrt(1 + 4 * q)
# (Exactly at χ₁ = 1 without bias q* → 0 only like a power of the depth; the grid has no such point.)
np.testing.assert_allclose(erf.chi_1, chi_1, rtol=rtol)
# Without bias the fixed point is q* = 0, χ₁ = W² 4/π: ordered below W = √π / 2 ≈ 0.886, chaotic above.
expected = np.where(w_grid < np.sqrt(np.pi) / 2, "ordered", "chaotic")
assert erf.phase[0].tolist() == expected.tolist(), erf.phase[0]
print(f"erf, b_std = 0: ordered up to W_std = {w_grid[expected == 'ordered'].max():.2f}, chaotic from "
      f"{w_grid[expected == 'chaotic'].min():.2f} (critical √π/2 = {np.sqrt(np.pi) / 2:.3f});"
      f" max relative |χ₁ - reference| = {np.max(np.abs(erf.chi_1 / chi_1 - 1)):.1e}")

# The same from the analytic kernel of a 64-layer network: the correlation of two orthogonal unit inputs tends to
# 1 in the ordered phase and to c* < 1 in the chaotic phase, at the rate χ_c per layer.
x = jnp.eye(2, 8) * np.sqrt(8.0)  # two orthogonal inputs of unit variance per coordinate (q_init = 1)
for i_b, i_w in [(2, 1), (1, 3), (1, 11), (4, 11)]:
    w, b = float(w_grid[i_w]), float(b_grid[i_b])
    _, _, kernel_fn = stax.serial(*[stax.Dense(1, W_std=w, b_std=b), stax.Erf()] * 64, stax.Dense(1, W_std=w, b_std=b))
    k = np.asarray(kernel_fn(x, None, "nngp"), np.float64)
    c_64 = k[0, 1] / np.sqrt(k[0, 0] * k[1, 1])
    c_star = float(erf.c_star[i_b, i_w])
    print(f"W_std = {w:.2f}, b_std = {b:.2f}: {erf.phase[i_b, i_w]:8s} c* = {c_star:.4f}, kernel after 64 layers "
          f"{c_64:.4f} (diff {abs(c_64 - c_star):.1e})")
    # The correlation map is increasing and convex (its slope W² E[φ'(u₁)φ'(u₂)] grows with c), so from c = 0 its
    # slope up to c* is at most χ_c: after 64 layers |c - c*| ≤ χ_c^64 |0 - c*| ≤ χ_c^64, plus rounding.
    assert abs(c_64 - c_star) <= float(erf.chi_c[i_b, i_w]) ** 64 + 100 * rtol, (w, b, c_64, c_star)
    assert (c_star == 1.0) == (erf.phase[i_b, i_w] == "ordered")

with tempfile.TemporaryDirectory() as folder:
    nt.analysis.plot_phase_diagram(erf)
    path = os.path.join(folder, "phase_diagram_erf.png")
    plt.savefig(path)
    plt.close("all")
    assert os.path.getsize(path) > 0
