"""Strict test configuration: warnings are errors (pyproject), dtype promotion strict, no implicit rank promotion
(`jax_numpy_rank_promotion="raise"`, as neural-tangents' users set it), x64 from the environment.

`make test` runs the suite twice, with `JAX_ENABLE_X64=0` (float32) and `=1` (float64).
"""

import jax
import jax.numpy as jnp
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def dtype():
    """The floating dtype of this run: float64 when `JAX_ENABLE_X64=1`, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
