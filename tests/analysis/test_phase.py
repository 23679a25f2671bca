"""`phase_diagram`, `plot_phase_diagram` and `ntk_condition_vs_depth` against pointwise values, closed forms, SciPy
and a NumPy NTK recursion."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special

import ntkit.nn as stax
from ntkit.analysis import ntk_condition_vs_depth, phase_diagram, plot_phase_diagram, signal_propagation
from tests.tolerance import assert_close


def test_grid_equals_pointwise(dtype):
    w, b = np.array([0.6, 1.1, 1.6, 2.4]), np.array([0.0, 0.2, 0.7])
    pd = phase_diagram(stax.Erf(), W_std=w, b_std=b)
    assert pd.chi_1.shape == pd.phase.shape == pd.trainable_depth.shape == (3, 4)
    for i, bi in enumerate(b):
        for j, wj in enumerate(w):
            sp = signal_propagation(stax.Erf(), float(wj), float(bi))
            assert pd.phase[i, j] == sp.phase
            for field in ("q_star", "chi_1", "c_star", "chi_c", "xi_c"):
                assert_close(getattr(pd, field)[i, j], getattr(sp, field), dtype, scale=100, err_msg=field)
            assert_close(pd.trainable_depth[i, j], 6 * sp.xi_c, dtype, scale=100)


def test_relu_critical_line(dtype):
    # ReLU: χ₁ = σ_w²/2 whatever σ_b; ordered below σ_w² = 2, critical only at (√2, 0), unbounded above.
    w2 = np.array([1.0, 1.5, 2.0, 2.5])
    b = np.array([0.0, 0.1, 0.5])
    pd = phase_diagram(stax.Relu(), W_std=np.sqrt(w2), b_std=b)
    assert_close(pd.chi_1, np.broadcast_to(w2 / 2, (3, 4)), dtype, scale=10)
    expected = np.array([["ordered", "ordered", "critical", "unbounded"]] + [["ordered", "ordered", "unbounded",
                                                                             "unbounded"]] * 2)
    np.testing.assert_array_equal(pd.phase, expected)
    assert_close(pd.trainable_depth[:, :2], np.broadcast_to(-6 / np.log(w2[:2] / 2), (3, 2)), dtype, scale=100)
    assert pd.trainable_depth[0, 2] == np.inf and np.isnan(pd.trainable_depth[1:, 2:]).all()


def _erf_critical_w(b):
    """σ_w with χ₁ = 1 for erf at this σ_b, by SciPy: q* by brentq on adaptive quadrature."""
    def gauss(g, q):
        s = math.sqrt(q)
        return scipy.integrate.quad(lambda z: g(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                                    epsabs=1e-13, epsrel=1e-12)[0]

    def chi(w):
        q = scipy.optimize.brentq(lambda q: w * w * gauss(lambda x: scipy.special.erf(x) ** 2, q) + b * b - q,
                                  1e-12, 1e3, xtol=1e-14)
        return w * w * gauss(lambda x: 4 / math.pi * math.exp(-2 * x * x), q)

    return scipy.optimize.brentq(lambda w: chi(w) - 1, 0.5, 3.0, xtol=1e-10)


def test_plot_shows_the_data():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, b = np.linspace(0.5, 3.0, 26), np.array([0.2, 0.5, 1.0])
    pd = phase_diagram(stax.Erf(), W_std=w, b_std=b)
    fig, ax = plt.subplots()
    try:
        assert plot_phase_diagram(pd, ax=ax) is ax
        mesh = ax.collections[0]
        codes = np.asarray(mesh.get_array()).reshape(pd.phase.shape)
        names = ["ordered", "chaotic", "critical", "unbounded"]
        np.testing.assert_array_equal(np.asarray(names)[codes.astype(int)], pd.phase)
        # The critical line crosses each row at SciPy's σ_w(σ_b), to the grid's linear interpolation (spacing 0.1).
        critical = ax.collections[1]
        vertices = np.concatenate([p.vertices for p in critical.get_paths()])
        for bi in b:
            row = vertices[np.isclose(vertices[:, 1], bi)]
            assert row.size and abs(row[0, 0] - _erf_critical_w(bi)) < 0.02, (bi, row)
        assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "χ₁ = 1"
    finally:
        plt.close(fig)
    with pytest.raises(TypeError, match="PhaseDiagram"):
        plot_phase_diagram(pd.chi_1)


def _relu_ntk_numpy(x, depth, w_std, b_std):
    """The NTK of `depth` × (Dense(w_std, b_std), ReLU) + Dense(w_std, b_std), by the arc-cosine recursion."""
    sigma = w_std ** 2 * x @ x.T / x.shape[1] + b_std ** 2
    theta = sigma.copy()
    for _ in range(depth):
        d = np.sqrt(np.diag(sigma))
        cos = np.clip(sigma / np.outer(d, d), -1, 1)
        np.fill_diagonal(cos, 1.0)  # exactly: arccos(1 − ulp) would be √ulp away from 0
        ang = np.arccos(cos)
        relu = np.outer(d, d) * (np.sin(ang) + (np.pi - ang) * cos) / (2 * np.pi)
        relu_dot = (np.pi - ang) / (2 * np.pi)
        sigma = w_std ** 2 * relu + b_std ** 2
        theta = w_std ** 2 * theta * relu_dot + sigma
    return theta


def test_condition_vs_depth_relu_against_numpy(dtype):
    x = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [0.9, 0.1, 0.6], [-1.0, 0.4, 0.0]])

    def net(depth):
        return stax.serial(*[stax.serial(stax.Dense(1, 1.3, 0.2), stax.Relu())] * depth, stax.Dense(1, 1.3, 0.2))

    depths = [1, 2, 5]
    out = ntk_condition_vs_depth(net, depths, jnp.asarray(x, dtype))
    for i, d in enumerate(depths):
        evals = np.linalg.eigvalsh(_relu_ntk_numpy(x, d, 1.3, 0.2))
        np.testing.assert_allclose([out.lambda_min[i], out.lambda_max[i]], [evals[0], evals[-1]],
                                   rtol=1e3 * np.finfo(dtype).eps * evals[-1] / evals[0])
        np.testing.assert_allclose(out.condition[i], evals[-1] / evals[0],
                                   rtol=1e3 * np.finfo(dtype).eps * evals[-1] / evals[0])
    np.testing.assert_array_equal(out.depths, depths)


def test_condition_grows_in_ordered_phase_only():
    # Xiao et al. 2020: ordered phase, the NTK tends to a constant matrix (condition number grows with depth);
    # chaotic phase, to identity plus constant (it stays bounded).
    x = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])

    def net(w, b):
        return lambda d: stax.serial(*[stax.serial(stax.Dense(1, w, b), stax.Erf())] * d, stax.Dense(1))

    assert signal_propagation(stax.Erf(), 0.8, 0.3).phase == "ordered"
    ordered = ntk_condition_vs_depth(net(0.8, 0.3), [2, 8, 32], x).condition
    assert ordered[0] < ordered[1] < ordered[2] and ordered[2] > 100 * ordered[0]
    assert signal_propagation(stax.Erf(), 2.5, 0.1).phase == "chaotic"
    chaotic = ntk_condition_vs_depth(net(2.5, 0.1), [2, 8, 32], x).condition
    assert chaotic[2] < 2 * chaotic[1] and chaotic[2] < 10


def test_bad_inputs():
    with pytest.raises(ValueError, match="W_std"):
        phase_diagram(stax.Relu(), W_std=[[1.0]], b_std=[0.0])
    with pytest.raises(TypeError, match="activation"):
        phase_diagram(jnp.tanh, W_std=[1.0], b_std=[0.0])
    with pytest.raises(ValueError, match="depths"):
        ntk_condition_vs_depth(lambda d: stax.Dense(1), [0], jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="one output"):  # spatial outputs: an (N, N, S, S) kernel
        ntk_condition_vs_depth(lambda d: stax.Dense(1), [1], jnp.ones((2, 3, 2)))
