"""Every script in `examples/` runs to completion: each asserts its own claim (an independent reference, a closed
form, real training), so a wrong library makes it exit non-zero.

Each script runs in its own interpreter, as a user runs it, with this run's `JAX_ENABLE_X64`, implicit rank
promotion raising (`JAX_NUMPY_RANK_PROMOTION=raise`), strict dtype promotion and warnings as errors (`-W error`), as
the rest of the suite (tests/conftest.py, pyproject).
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
FLOAT64_ONLY = {"kernel_gradients"}
"""Scripts that enable float64 themselves: the same run whatever `JAX_ENABLE_X64` says, so run once (float32 pass,
as a user without the variable runs them)."""


def test_examples_found():
    assert len(SCRIPTS) >= 6, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_example_runs(script, tmp_path):
    if script.stem in FLOAT64_ONLY and jax.config.read("jax_enable_x64"):
        pytest.skip("enables float64 itself: already run in the float32 pass")
    env = dict(os.environ, JAX_NUMPY_RANK_PROMOTION="raise", JAX_NUMPY_DTYPE_PROMOTION="strict", MPLBACKEND="Agg",
               MPLCONFIGDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{script.name} exited with {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n"
        f"{result.stderr}")
