"""Bad input gets a clear error naming the argument."""

import jax.numpy as jnp
import pytest

import ntkit
from tests.models import MODELS


@pytest.fixture
def mlp(dtype):
    return MODELS["mlp"](dtype)


def test_feature_shapes_must_match(mlp):
    f, params, x1, _ = mlp
    with pytest.raises(ValueError, match="`x1` and `x2` must have the same shape past the batch axis"):
        ntkit.empirical_ntk_fn(f)(x1, jnp.ones((2, 7), x1.dtype), params)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_inputs(mlp, bad):
    f, params, x1, x2 = mlp
    with pytest.raises(ValueError, match="`x1` contains NaN or Inf"):
        ntkit.empirical_ntk_fn(f)(x1.at[0, 0].set(bad), x2, params)
    with pytest.raises(ValueError, match="`x2` contains NaN or Inf"):
        ntkit.empirical_ntk_fn(f)(x1, x2.at[1, 1].set(bad), params)


def test_non_finite_params(mlp):
    f, params, x1, x2 = mlp
    params = dict(params, w2=params["w2"].at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"`params\['w2'\]` contains NaN or Inf"):
        ntkit.empirical_ntk_fn(f)(x1, x2, params)


def test_integer_params_are_rejected(mlp):
    f, params, x1, x2 = mlp
    with pytest.raises(TypeError, match=r"`params\['step'\]` must be a floating-point array"):
        ntkit.empirical_ntk_fn(f)(x1, x2, dict(params, step=jnp.zeros((), jnp.int32)))


@pytest.mark.parametrize("kwargs,match", [
    ({"trace_axes": (2,)}, "`trace_axes` holds axis 2, out of range"),
    ({"diagonal_axes": (-3,)}, "`diagonal_axes` holds axis -3, out of range"),
    ({"trace_axes": (0,)}, "cannot contain the batch axis"),
    ({"trace_axes": (1,), "diagonal_axes": (1,)}, "in both"),
    ({"trace_axes": (1, -1)}, "repeats an axis"),
])
def test_axes(mlp, kwargs, match):
    f, params, x1, x2 = mlp
    with pytest.raises(ValueError, match=match):
        ntkit.empirical_ntk_fn(f, **kwargs)(x1, x2, params)


def test_output_must_be_an_array(mlp):
    f, params, x1, x2 = mlp
    with pytest.raises(TypeError, match="must return a single array"):
        ntkit.empirical_ntk_fn(lambda p, x: (f(p, x), f(p, x)))(x1, x2, params)
    with pytest.raises(ValueError, match="batch axis first"):
        ntkit.empirical_ntk_fn(lambda p, x: f(p, x).T)(x1, x2, params)


def test_bad_options(mlp):
    f, params, x1, x2 = mlp
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        ntkit.empirical_ntk_fn(f, implementation="fast")
    with pytest.raises(ValueError, match="`implementation` code must be 0-3"):
        ntkit.empirical_ntk_fn(f, implementation=7)
    with pytest.raises(ValueError, match="`vmap_axes`"):
        ntkit.empirical_ntk_fn(f, vmap_axes=1)
    with pytest.raises(ValueError, match="`batch_size`"):
        ntkit.empirical_ntk_fn(f, batch_size=0)
    with pytest.raises(ValueError, match="`get` must be"):
        ntkit.empirical_kernel_fn(f)(x1, x2, "gram", params)
    with pytest.raises(TypeError, match="`f` must be callable"):
        ntkit.empirical_ntk_fn("not a function")
    with pytest.raises(ValueError, match="same number of examples"):
        ntkit.empirical_ntk_fn(f, diagonal_axes=(0,))(x1, x2, params)
