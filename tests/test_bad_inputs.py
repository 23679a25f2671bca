"""Bad, hard and hostile inputs across the public API: each gives a clear error naming the argument, or the right
answer checked against an independent computation (never a silent wrong number, an unrelated exception or a hang).

Per-package suites test the numerics in depth (`tests/nn/test_float32_scale.py`, `tests/predict/...`); this module
is the sweep: one row per case, so the cases are counted in one place.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
import ntkit.nn as stax


def _model():
    def f(p, x):
        return jnp.tanh(x @ p["w"]) @ p["v"]

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "v": jnp.asarray(rng.normal(size=(4, 2)),
                                                                                        jnp.float32)}
    return f, params, jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)


F, P, X = _model()
NTK = ntkit.empirical_ntk_fn(F, vmap_axes=0)
NET = stax.serial(stax.Dense(4, b_std=0.1), stax.Relu(), stax.Dense(1))
NAN_X = X.at[0, 0].set(jnp.nan)
TOKENS = jnp.array([[0, 1], [1, 1], [2, 0]])
EMB = {"emb": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)), jnp.float32)}


def _embed(p, tokens):  # sum of the tokens' embeddings
    return p["emb"][tokens].sum(axis=1)


def _embedding_ntk():
    """∂f(x)_c/∂emb[t, c'] = count of t in x if c = c': Θ[x, y, c, c'] = δ_cc' Σ_t count_x(t) count_y(t)."""
    counts = np.stack([np.bincount(np.asarray(row), minlength=3) for row in TOKENS])
    return np.einsum("xt,yt,cd->xycd", counts, counts, np.eye(2))

# (case, thunk, exception type, message naming what was wrong)
ERRORS = [
    ("empirical x1 empty", lambda: NTK(X[:0], None, P), ValueError, "`x1` holds no examples"),
    ("empirical x2 empty", lambda: NTK(X, X[:0], P), ValueError, "`x2` holds no examples"),
    ("empirical x1 NaN", lambda: NTK(NAN_X, None, P), ValueError, "`x1` contains NaN"),
    ("empirical x2 Inf", lambda: NTK(X, X.at[1, 1].set(jnp.inf), P), ValueError, "`x2` contains NaN or Inf"),
    ("empirical x1 complex", lambda: NTK(X.astype(jnp.complex64), None, P), TypeError, "`x1` must hold real"),
    ("empirical x1 scalar", lambda: NTK(jnp.float32(1.0), None, P), ValueError, "`x1` must have at least 1 axes"),
    ("empirical feature mismatch", lambda: NTK(X, X[:, :2], P), ValueError, "same shape past the batch axis"),
    ("empirical params NaN", lambda: NTK(X, None, {**P, "w": P["w"].at[0, 0].set(jnp.nan)}), ValueError,
     r"`params\['w'\]` contains NaN"),
    ("empirical params int", lambda: NTK(X, None, {**P, "w": P["w"].astype(jnp.int32)}), TypeError,
     r"`params\['w'\]` must be a floating-point array"),
    ("empirical params empty", lambda: NTK(X, None, {}), ValueError, "`params` has no array leaves"),
    ("empirical batch_size 0", lambda: NTK(X, None, P, batch_size=0), ValueError, "`batch_size` must be a positive"),
    ("empirical batch_size 1.5", lambda: NTK(X, None, P, batch_size=1.5), ValueError, "`batch_size`"),
    ("empirical trace_axes out of range", lambda: ntkit.empirical_ntk_fn(F, trace_axes=(3,))(X, None, P),
     ValueError, "`trace_axes` holds axis 3"),
    ("empirical trace and diagonal overlap", lambda: ntkit.empirical_ntk_fn(F, trace_axes=(1,), diagonal_axes=(1,))(
        X, None, P), ValueError, "both `trace_axes` and `diagonal_axes`"),
    ("empirical implementation unknown", lambda: ntkit.empirical_ntk_fn(F, implementation="fast"), ValueError,
     "`implementation` must be one of"),
    ("empirical implementation code 7", lambda: ntkit.empirical_ntk_fn(F, implementation=7), ValueError,
     "`implementation` code"),
    ("empirical vmap_axes 1", lambda: ntkit.empirical_ntk_fn(F, vmap_axes=1), ValueError, "`vmap_axes` must be"),
    ("empirical f not callable", lambda: ntkit.empirical_ntk_fn(3), TypeError, "`f` must be callable"),
    ("empirical output not batch first", lambda: ntkit.empirical_ntk_fn(lambda p, x: (x @ p["w"]).T)(X, None, P),
     ValueError, "batch axis first"),
    # (outputs, batch) with one output: the first example alone looks batch-first; the whole batch does not
    ("empirical output (1, N) for N inputs", lambda: ntkit.empirical_ntk_fn(lambda p, x: (x @ p["w"][:, :1]).T,
                                                                             implementation="jacobian")(X, None, P),
     ValueError, "batch axis first"),
    ("empirical output a tuple", lambda: ntkit.empirical_ntk_fn(lambda p, x: (x @ p["w"], x))(X, None, P),
     TypeError, "single array"),
    ("empirical get unknown", lambda: ntkit.empirical_kernel_fn(F)(X, None, "cov", P), ValueError, "`get`"),
    ("ntk_vp wrong v", lambda: ntkit.empirical_ntk_vp_fn(F, X, None, P)(jnp.ones((2, 2))), ValueError,
     "`v` must have the shape"),
    ("monte carlo n_samples 0", lambda: ntkit.monte_carlo_kernel_fn(NET[0], NET[1], jax.random.key(0), 0),
     ValueError, "`n_samples`"),
    ("linearize int params", lambda: ntkit.linearize(F, {"w": jnp.ones((3, 4), jnp.int32)}), TypeError,
     "must be a floating-point array"),
    ("taylor degree -1", lambda: ntkit.taylor_expand(F, P, -1), ValueError, "`degree`"),
    ("nn x1 empty", lambda: NET.kernel(X[:0], None, "ntk"), ValueError, "`x1` holds no examples"),
    ("nn x1 NaN", lambda: NET.kernel(NAN_X, None, "ntk"), ValueError, "`x1` contains NaN"),
    ("nn x1 int", lambda: NET.kernel(jnp.ones((5, 3), jnp.int32), None, "ntk"), TypeError, "`x1` must be floating"),
    ("nn x1 complex", lambda: NET.kernel(X.astype(jnp.complex64), None, "ntk"), TypeError, "`x1` must be floating"),
    ("nn x1 rank 1", lambda: NET.kernel(X[0], None, "ntk"), ValueError, "`x1` must have at least 2 axes"),
    ("nn feature mismatch", lambda: NET.kernel(X, X[:, :2], "ntk"), ValueError, "same shape past the batch axis"),
    ("nn get unknown", lambda: NET.kernel(X, None, "foo"), ValueError, "`get` must be one of"),
    ("nn batch_size 0", lambda: NET.kernel(X, None, "ntk", batch_size=0), ValueError, "`batch_size`"),
    ("nn memory_limit negative", lambda: NET.kernel(X, None, "ntk", memory_limit=-1), ValueError, "`memory_limit`"),
    ("nn batch_size and memory_limit", lambda: NET.kernel(X, None, "ntk", batch_size=2, memory_limit=1e9),
     ValueError, "not both"),
    ("nn Dense width 0", lambda: stax.Dense(0), ValueError, "`out_dim`"),
    ("nn Conv filter 0", lambda: stax.Conv(3, (0, 3)), ValueError, "`filter_shape`"),
    ("nn Conv stride -1", lambda: stax.Conv(3, (3, 3), strides=(-1, 1)), ValueError, "`strides`"),
    ("nn AvgPool window 0", lambda: stax.AvgPool((0,)), ValueError, "`window_shape`"),
    ("nn Conv on flat input", lambda: stax.Conv(3, (3, 3)).kernel(X, None, "ntk"), ValueError, "needs inputs"),
    ("nn window larger than input", lambda: stax.serial(stax.Conv(3, (3,)), stax.AvgPool((9,))).kernel(
        jnp.ones((2, 5, 3)), None, "ntk"), ValueError, r"layer 1 \(AvgPool\).*larger than the input"),
    ("nn padding unknown", lambda: stax.Conv(3, (3,), padding="REFLECT"), ValueError, "`padding`"),
    ("nn parameterization unknown", lambda: stax.Dense(3, parameterization="mup"), ValueError, "`parameterization`"),
    ("nn nonlinearity on raw inputs", lambda: stax.serial(stax.Relu(), stax.Dense(1)).kernel(X, None, "ntk"),
     ValueError, "Relu|Gaussian|affine"),
    ("nn dropout rate 1", lambda: stax.Dropout(1.0), ValueError, "`rate`"),
    ("nn LayerNorm axis", lambda: stax.LayerNorm(axis=0), ValueError, "axis"),
    ("nn repeat -1", lambda: stax.repeat(stax.Dense(2), -1), ValueError, "`n`"),
    ("nn serial of a non-layer", lambda: stax.serial(stax.Dense(2), 3), TypeError, "not an ntkit.nn layer"),
]


@pytest.mark.parametrize("case,thunk,error,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_clear_error(case, thunk, error, match):
    with pytest.raises(error, match=match):
        jax.block_until_ready(thunk())


def _same_kernel_as(reference):
    return lambda got: np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(reference, np.float64),
                                                  rtol=2e-4, atol=2e-5)


# (case, thunk, check of the result against an independent computation)
ANSWERS = [
    # integer inputs are token ids, not numbers to cast: an embedding model's NTK is Σ_p ∂f∂f by hand
    ("empirical integer token inputs", lambda: ntkit.empirical_ntk_fn(_embed, trace_axes=())(TOKENS, None, EMB),
     _same_kernel_as(_embedding_ntk())),
    ("empirical duplicated points give equal rows", lambda: NTK(jnp.concatenate([X[:2], X[:2]]), None, P),
     lambda k: np.testing.assert_allclose(np.asarray(k[:2]), np.asarray(k[2:]), rtol=1e-6, atol=1e-6)),
    ("empirical under jit equals eager", lambda: jax.jit(lambda a: NTK(a, None, P))(X),
     _same_kernel_as(NTK(X, None, P))),
    ("empirical grad of a kernel entry is finite", lambda: jax.grad(lambda a: NTK(a, None, P)[0, 1])(X),
     lambda g: np.testing.assert_array_equal(np.isfinite(np.asarray(g)), True)),
    ("nn negative W_std is the same distribution",
     lambda: stax.Dense(3, W_std=-1.5, b_std=0.1).kernel(X, None, "ntk"),
     _same_kernel_as(stax.Dense(3, W_std=1.5, b_std=0.1).kernel(X, None, "ntk"))),
    ("nn duplicated points give equal rows", lambda: NET.kernel(jnp.concatenate([X[:2], X[:2]]), None, "ntk"),
     lambda k: np.testing.assert_allclose(np.asarray(k[:2]), np.asarray(k[2:]), rtol=1e-6, atol=1e-6)),
    ("nn one example", lambda: NET.kernel(X[:1], None, "ntk"),
     _same_kernel_as(NET.kernel(X[:2], None, "ntk")[:1, :1])),
    ("nn grad in W_std is finite", lambda: jax.grad(lambda w: jnp.sum(stax.serial(
        stax.Dense(4, W_std=w), stax.Relu(), stax.Dense(1, W_std=w)).kernel(X, None, "ntk")))(1.3),
     lambda g: np.testing.assert_array_equal(np.isfinite(np.asarray(g)), True)),
]


@pytest.mark.parametrize("case,thunk,check", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_right_answer(case, thunk, check):
    check(thunk())
