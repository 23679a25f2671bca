"""Every empirical implementation equals a brute-force Jacobian reference, on several model families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkit
from tests.models import MODELS, brute_force_ntk
from tests.tolerance import assert_close

IMPLEMENTATIONS = ("jacobian", "ntvp", "structured", "auto")

# (model, trace_axes, diagonal_axes, reference einsum on the full (N1, O.., N2, O'..) kernel, traced size axis)
LAYOUTS = [
    ("mlp", (), (), "icjd->ijcd", None),
    ("mlp", (-1,), (), "icjc->ij", -1),
    ("mlp", (), (-1,), "icjc->ijc", None),
    ("mlp", (-1,), (0,), "icic->i", -1),
    ("sequence", (-1,), (1,), "itcjtc->ijt", -1),
    ("sequence", (), (), "itcjsd->ijtscd", None),
    ("sequence", (1,), (), "itcjtd->ijcd", 1),
    ("sequence", (1, 2), (), "itcjtc->ij", (1, 2)),
]


def _reference(name, dtype, spec, traced, same_inputs=False):
    f, params, x1, x2 = MODELS[name](dtype)
    if same_inputs:
        x2 = x1
    full = brute_force_ntk(f, params, x1, x2)
    ref = jnp.einsum(spec, full)
    if traced is not None:
        out_shape = f(params, x1).shape
        axes = (traced,) if isinstance(traced, int) else traced
        ref = ref / int(np.prod([out_shape[a] for a in axes]))
    return f, params, x1, x2, ref


@pytest.mark.parametrize("implementation", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("name,trace_axes,diagonal_axes,spec,traced", LAYOUTS)
def test_layouts_match_brute_force(dtype, implementation, name, trace_axes, diagonal_axes, spec, traced):
    same = 0 in diagonal_axes
    f, params, x1, x2, ref = _reference(name, dtype, spec, traced, same_inputs=same)
    ntk_fn = ntkit.empirical_ntk_fn(f, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=0,
                                    implementation=implementation)
    result = ntk_fn(x1, x2, params)
    assert result.shape == ref.shape
    assert result.dtype == dtype
    assert_close(result, ref, scale=10)


# Whole-batch derivatives (vmap_axes=None) are what the brute-force reference itself does for "jacobian"; the
# other methods are checked both ways.
FAMILY_CASES = [(impl, vmap_axes) for impl in IMPLEMENTATIONS for vmap_axes in (None, 0)
                if (impl, vmap_axes) != ("jacobian", None)]


@pytest.mark.parametrize("implementation,vmap_axes", FAMILY_CASES)
@pytest.mark.parametrize("name", ["mlp", "cnn", "residual_layernorm", "flax", "equinox", "scan_custom_jvp"])
def test_model_families_match_brute_force(dtype, implementation, name, vmap_axes):
    f, params, x1, x2, ref = _reference(name, dtype, "icjc->ij", -1)
    ntk = ntkit.empirical_ntk_fn(f, vmap_axes=vmap_axes, implementation=implementation)(x1, x2, params)
    assert_close(ntk, ref, scale=10)


@pytest.mark.parametrize("implementation", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("name", ["cnn", "residual_layernorm"])
def test_untraced_and_symmetric(dtype, implementation, name):
    f, params, x1, _, ref = _reference(name, dtype, "icjd->ijcd", None, same_inputs=True)
    ntk = ntkit.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=implementation)(x1, None, params)
    assert_close(ntk, ref, scale=10)
    assert_close(ntk, jnp.transpose(ntk, (1, 0, 3, 2)), scale=10)


@pytest.mark.parametrize("implementation", ["jacobian", "ntvp", "structured"])
def test_implementation_codes_match_names(dtype, implementation):
    f, params, x1, x2 = MODELS["mlp"](dtype)
    code = {"jacobian": 1, "ntvp": 2, "structured": 3}[implementation]
    by_name = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation)(x1, x2, params)
    by_code = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=code)(x1, x2, params)
    np.testing.assert_array_equal(by_name, by_code)


@pytest.mark.parametrize("implementation", ["jacobian", "ntvp", "structured"])
@pytest.mark.parametrize("trace_axes,diagonal_axes", [((-1,), ()), ((), ()), ((-1,), (1,)), ((-1,), (0,))])
def test_tiled_equals_untiled(dtype, implementation, trace_axes, diagonal_axes):
    f, params, x1, x2 = MODELS["sequence"](dtype, n1=5, n2=5)
    ntk_fn = ntkit.empirical_ntk_fn(f, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=0,
                                    implementation=implementation)
    for second in (None, x2):
        whole = ntk_fn(x1, second, params)
        tiled = ntk_fn(x1, second, params, batch_size=2)  # 5 = 2 + 2 + 1: a ragged last tile too
        assert tiled.shape == whole.shape
        assert_close(tiled, whole, scale=2)


def test_factory_batch_size_and_x2_none(dtype):
    f, params, x1, _ = MODELS["cnn"](dtype, n1=5)
    ntk = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation="structured", batch_size=2)(x1, None, params)
    ref = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation="jacobian")(x1, x1, params)
    assert_close(ntk, ref, scale=10)


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual_layernorm"])
def test_ntk_is_symmetric_positive_semidefinite(dtype, name):
    f, params, x1, _ = MODELS[name](dtype, n1=6)
    ntk = np.asarray(ntkit.empirical_ntk_fn(f, vmap_axes=0)(x1, None, params), dtype=np.float64)
    np.testing.assert_allclose(ntk, ntk.T, rtol=1e-5)
    eigenvalues = np.linalg.eigvalsh(ntk)
    assert eigenvalues.min() > -1e-4 * eigenvalues.max()


def test_get_none_gives_both_kernels_as_neural_tangents(dtype):
    f, params, x1, x2 = MODELS["mlp"](dtype)
    kernel_fn = ntkit.empirical_kernel_fn(f, vmap_axes=0)
    both, explicit = kernel_fn(x1, x2, None, params), kernel_fn(x1, x2, ("nngp", "ntk"), params)
    np.testing.assert_array_equal(both.nngp, explicit.nngp)
    np.testing.assert_array_equal(both.ntk, explicit.ntk)


def test_nngp_and_kernel_fn(dtype):
    f, params, x1, x2 = MODELS["mlp"](dtype)
    f1, f2 = f(params, x1), f(params, x2)
    nngp = ntkit.empirical_nngp_fn(f)(x1, x2, params)
    assert_close(nngp, f1 @ f2.T / 3)
    nngp_full = ntkit.empirical_nngp_fn(f, trace_axes=())(x1, x2, params)
    assert_close(nngp_full, jnp.einsum("ic,jd->ijcd", f1, f2))
    both = ntkit.empirical_kernel_fn(f, vmap_axes=0)(x1, x2, ("nngp", "ntk"), params)
    assert isinstance(both, ntkit.Kernel)
    assert_close(both.nngp, nngp)
    assert_close(both.ntk, ntkit.empirical_ntk_fn(f, vmap_axes=0)(x1, x2, params))
    only = ntkit.empirical_kernel_fn(f)(x1, x2, "ntk", params)
    assert_close(only, both.ntk, scale=10)


def test_apply_kwargs_are_passed(dtype):
    f0, params, x1, x2 = MODELS["mlp"](dtype)

    def f(p, x, scale, activation="tanh"):
        out = f0(p, x) * scale
        return jnp.tanh(out) if activation == "tanh" else out

    scale = jnp.asarray(2.0, dtype)
    for impl in ("jacobian", "ntvp", "structured"):
        ntk = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=impl)(x1, x2, params, scale=scale,
                                                                          activation="none")
        ref = 4.0 * ntkit.empirical_ntk_fn(f0, vmap_axes=0, implementation="jacobian")(x1, x2, params)
        assert_close(ntk, ref, scale=10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_auto_runs_the_implementation_it_reports(dtype, name):
    """`auto` gives bit for bit what its reported choice gives, and that matches the brute-force Jacobian."""
    f, params, x1, x2 = MODELS[name](dtype)
    ntk_fn = ntkit.empirical_ntk_fn(f, vmap_axes=0)
    chosen = ntk_fn.implementation_for(x1, x2, params)
    explicit = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=chosen)(x1, x2, params)
    np.testing.assert_array_equal(ntk_fn(x1, x2, params), explicit)
    ref = jnp.einsum("icjc->ij", brute_force_ntk(f, params, x1, x2)) / f(params, x1).shape[-1]
    assert_close(explicit, ref, scale=10)


def test_structured_falls_back_to_jacobian_visibly(dtype, caplog):
    """A parameter returned unchanged (a view of it is the output) has no structure to exploit: `structured` runs
    the Jacobian method, `implementation_for` says so and a debug log explains why."""
    w = jax.random.normal(jax.random.key(0), (3, 4), dtype)
    x = jnp.ones((4, 5), dtype)

    def f(p, x):  # (4, 3): a scaled transpose of `w`, as a learned per-example table would be
        return 2.0 * p["w"].T

    ntk_fn = ntkit.empirical_ntk_fn(f, trace_axes=(), implementation="structured")
    with caplog.at_level("DEBUG", logger="ntkit.empirical"):
        assert ntk_fn.implementation_for(x, None, {"w": w}) == "jacobian"
    assert "structured derivatives do not apply" in caplog.text
    # Θ[i, j, c, d] = Σ_w ∂(2 w[c, i])/∂w ∂(2 w[d, j])/∂w = 4 δ_ij δ_cd
    expected = 4 * jnp.einsum("ij,cd->ijcd", jnp.eye(4, dtype=dtype), jnp.eye(3, dtype=dtype))
    assert_close(ntk_fn(x, None, {"w": w}), expected, scale=2)


@pytest.mark.parametrize("implementation", ["jacobian", "structured"])
def test_tiled_kernel_under_jit(dtype, implementation):
    """Tiles are assembled as tracers under an outer `jit` (closed-over and traced inputs alike)."""
    f, params, x1, x2 = MODELS["mlp"](dtype, n1=5, n2=3)
    ntk_fn = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation, batch_size=2)
    whole = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation)(x1, None, params)
    assert_close(jax.jit(lambda a: ntk_fn(a, None, params))(x1), whole, scale=10)
    assert_close(jax.jit(lambda p: ntk_fn(x1, None, p))(params), whole, scale=10)
    cross = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation)(x1, x2, params)
    assert_close(jax.jit(lambda a, b: ntk_fn(a, b, params))(x1, x2), cross, scale=10)


def test_auto_prefers_structured_for_wide_dense_layers():
    dtype = jnp.float32
    k = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k[0], (64, 512), dtype), "w2": jax.random.normal(k[1], (512, 10), dtype)}

    def f(p, x):
        return jax.nn.relu(x @ p["w1"]) @ p["w2"]

    x = jax.random.normal(k[2], (32, 64), dtype)
    assert ntkit.empirical_ntk_fn(f, vmap_axes=0).implementation_for(x, None, params) == "structured"


def test_ntk_vector_product(dtype):
    f, params, x1, x2 = MODELS["mlp"](dtype)
    full = brute_force_ntk(f, params, x1, x2)  # (N1, C, N2, C)
    v = jax.random.normal(jax.random.key(3), f(params, x2).shape, dtype)
    result = ntkit.empirical_ntk_vp_fn(f, x1, x2, params)(v)
    assert_close(result, jnp.einsum("icjd,jd->ic", full, v), scale=10)
    with pytest.raises(ValueError, match="`v` must have the shape"):
        ntkit.empirical_ntk_vp_fn(f, x1, x2, params)(v[:1])


def test_auto_with_required_keyword_arguments(dtype):
    """The cost model traces the model with its keyword arguments (e.g. a dropout key it cannot run without)."""
    f0, params, x1, x2 = MODELS["mlp"](dtype)

    def f(p, x, rng):
        keep = jax.random.bernoulli(rng, 0.9, (x.shape[-1],))
        return f0(p, jnp.where(keep, x, jnp.zeros((), x.dtype)))

    rng = jax.random.key(3)
    ntk_fn = ntkit.empirical_ntk_fn(f, vmap_axes=0)
    chosen = ntk_fn.implementation_for(x1, x2, params, rng=rng)
    explicit = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=chosen)(x1, x2, params, rng=rng)
    np.testing.assert_array_equal(ntk_fn(x1, x2, params, rng=rng), explicit)
    ref = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation="jacobian")(x1, x2, params, rng=rng)
    assert_close(explicit, ref, scale=10)


def _dropout_model(dtype):
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(k[0], (5, 16), dtype), "w2": jax.random.normal(k[1], (16, 3), dtype) / 4}

    def f(p, x, rng):
        h = jnp.tanh(x @ p["w1"] / jnp.sqrt(5.0).astype(dtype))
        keep = jax.random.bernoulli(rng, 0.7, h.shape)
        return jnp.where(keep, h / 0.7, jnp.zeros((), dtype)) @ p["w2"]

    return f, params, jax.random.normal(k[2], (4, 5), dtype), jax.random.normal(k[3], (3, 5), dtype)


@pytest.mark.parametrize("vmap_axes", [0, None])
def test_models_with_random_masks_agree_across_implementations(dtype, vmap_axes):
    """A dropout key is used one example at a time with `vmap_axes=0` (each example gets the same mask), once per
    batch with `None`; every implementation follows the same convention as the brute-force Jacobian."""
    f, params, x1, x2 = _dropout_model(dtype)
    rng = jax.random.key(9)
    if vmap_axes == 0:
        def g(p, x):
            return jax.vmap(lambda xi: f(p, xi[None], rng)[0])(x)
    else:
        def g(p, x):
            return f(p, x, rng)
    # brute force: g(x1) and g(x2) evaluated as the convention says (per example, or each batch as given)
    j1, j2 = jax.jacobian(g)(params, x1), jax.jacobian(g)(params, x2)
    ref = sum(jnp.einsum("icz,jcz->ij", a.reshape(a.shape[:2] + (-1,)), b.reshape(b.shape[:2] + (-1,)))
              for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2), strict=True)) / 3
    for implementation in ("jacobian", "ntvp", "structured"):
        ntk = ntkit.empirical_ntk_fn(f, vmap_axes=vmap_axes, implementation=implementation)(x1, x2, params, rng=rng)
        assert_close(ntk, ref, scale=10, err_msg=implementation)


def test_tiling_a_model_that_couples_examples_is_refused(dtype):
    f, params, x1, _ = _dropout_model(dtype)
    ntk_fn = ntkit.empirical_ntk_fn(f, implementation="jacobian")
    with pytest.raises(ValueError, match="depends on the other examples of its batch"):
        ntk_fn(x1, None, params, batch_size=2, rng=jax.random.key(9))

    def batch_norm(p, x):  # batch statistics in training mode
        h = x @ p["w1"]
        return ((h - h.mean(0, keepdims=True)) / (h.std(0, keepdims=True) + 1)) @ p["w2"]

    with pytest.raises(ValueError, match="depends on the other examples of its batch"):
        ntkit.empirical_ntk_fn(batch_norm, implementation="jacobian")(x1, None, params, batch_size=2)
    ntkit.empirical_ntk_fn(batch_norm, implementation="jacobian")(x1, None, params)  # whole batch: fine


def test_memory_budget_respects_the_address_space_limit(tmp_path):
    """Under `prlimit --as` the budget is at most half of what the limit leaves (not half the machine's RAM)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit not installed")
    code = ("import ntkit._memory as m, os; used = int(open(f'/proc/{os.getpid()}/status').read()"
            ".split('VmSize:')[1].split()[0]) * 1024; print(m.memory_budget_bytes(), used)")
    limit = 6 * 2 ** 30
    out = subprocess.run(["prlimit", f"--as={limit}", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    budget, used = float(out[0]), float(out[1])
    assert 0 < budget <= (limit - used) / 2 * 1.01  # VmSize read twice: allow its growth in between
    unlimited = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(unlimited.split()[0]) > budget


def test_auto_checks_what_xla_allocates(dtype, monkeypatch):
    """When no method's compiled program fits the budget, auto runs the one XLA says allocates least."""
    from ntkit.empirical import _api

    f, params, x1, x2 = MODELS["mlp"](dtype)
    ntk_fn = ntkit.empirical_ntk_fn(f, vmap_axes=0)
    monkeypatch.setattr(_api, "memory_budget_bytes", lambda: 1.0)  # nothing fits

    def allocated(implementation):
        single = ntkit.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation)
        lowered = jax.jit(lambda a, b, p: single(a, b, p)).lower(x1, x2, params).compile().memory_analysis()
        return lowered.argument_size_in_bytes + lowered.output_size_in_bytes + lowered.temp_size_in_bytes

    sizes = {impl: allocated(impl) for impl in ("jacobian", "ntvp", "structured")}
    assert ntk_fn.implementation_for(x1, x2, params) == min(sizes, key=sizes.get)
