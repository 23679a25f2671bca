"""`ntkit kernel`: the command writes a job store, refuses bad input, and resumes after being killed (SIGKILL)."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ntkit import jobs
from ntkit.cli import main
from tests.tolerance import assert_close

from ._common import ARCH_SOURCE, inputs, network


@pytest.fixture
def files(tmp_path, dtype):
    (tmp_path / "arch.py").write_text(ARCH_SOURCE)
    np.save(tmp_path / "x.npy", inputs(48, dtype=np.dtype(dtype)))
    np.save(tmp_path / "y.npy", inputs(5, dtype=np.dtype(dtype), seed=1))
    return tmp_path


def test_cli_kernel_and_errors(files, dtype, capsys):
    out = str(files / "k.zarr")
    base = ["kernel", "--arch", f"{files / 'arch.py'}:net", "--x1", str(files / "x.npy"), "--no-progress"]
    assert main([*base, "--x2", str(files / "y.npy"), "--out", out, "--get", "ntk", "--tile", "16"]) == 0
    assert "tiles: 3/3 done (tile 16)" in capsys.readouterr().out
    x, y = np.load(files / "x.npy"), np.load(files / "y.npy")
    assert_close(jobs.load(out, "ntk"), network().kernel(x, y, "ntk"), dtype)
    for argv, message in [
        ([*base, "--out", out, "--tile", "16"], "holds another kernel job.*x2: store has"),
        ([*base, "--x2", str(files / "missing.npy"), "--out", out], "cannot read --x2"),
        (["kernel", "--arch", f"{files / 'arch.py'}:nope", "--x1", str(files / "x.npy"), "--out", out],
         "defines no 'nope'"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("ntkit kernel: error: ") and __import__("re").search(message, err), err
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--out", out, "--tile", "0"])
    assert exit_.value.code == 2 and "--tile: must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--out", out, "--memory-limit", "lots"])
    assert "--memory-limit: must be a positive number of bytes" in capsys.readouterr().err


def _start(files, tile):
    argv = ["kernel", "--arch", f"{files / 'arch.py'}:net", "--x1", str(files / "x.npy"), "--out",
            str(files / "killed.zarr"), "--tile", str(tile), "--no-progress"]
    return subprocess.Popen([sys.executable, "-c", "import sys; from ntkit.cli import main; sys.exit(main())", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(store):
    try:
        return jobs.status(store).tiles_done
    except ValueError:  # not created yet
        return 0


def _flags_written(store):
    """Done flags written so far, counted cheaply from the files of the `done` array (polled while a job runs)."""
    return sum(len(names) for _, _, names in os.walk(store / "done" / "c"))


def _kill_and_resume(files, dtype, kills, tile, at_random_times):
    """Starts the command `kills` times and SIGKILLs it (mid-job, or at random times, startup included), then lets
    it finish; checks that no finished tile is ever lost and that the result is bit-identical to an uninterrupted
    run and matches the in-memory kernel."""
    rng = random.Random(0)
    store = files / "killed.zarr"
    n = 48
    total = sum(range(-(-n // tile) + 1))
    done, mid_job = 0, 0
    for _ in range(kills):
        proc = _start(files, tile)
        if at_random_times:
            time.sleep(rng.uniform(0.2, 6.0))
        else:  # once a random share of what is left is done
            target = done + rng.randint(1, max(1, (total - done) // 3))
            while proc.poll() is None and _flags_written(store) < target:
                time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        now = _done(store)
        assert now >= done  # finished tiles stay finished
        mid_job += 0 < now < total
        done = now
    proc = _start(files, tile)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert f"tiles: {total}/{total} done" in stdout
    assert mid_job >= (1 if not at_random_times else 0)
    x = np.load(files / "x.npy")
    reference = jobs.kernel_job(network(), x, store=files / "uninterrupted.zarr", tile=tile, progress=False)
    # the command and the library compute the same job (same identity), and nothing is left to do
    assert jobs.kernel_job(network(), x, store=store, progress=False) == reference._replace(store=str(store))
    for g in ("nngp", "ntk"):
        k = jobs.load(store, g)
        np.testing.assert_array_equal(k, jobs.load(files / "uninterrupted.zarr", g))
        assert_close(k, network().kernel(x, None, g), dtype)
    return mid_job


def test_killed_command_resumes_bit_identically(files, dtype):
    _kill_and_resume(files, dtype, kills=2, tile=2, at_random_times=False)


@pytest.mark.slow
def test_many_kills_at_random_times(files, dtype):
    _kill_and_resume(files, dtype, kills=10, tile=2, at_random_times=True)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["kernel", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--arch", "--x1", "--x2", "--out", "--get", "--tile", "--memory-limit", "--scheduler",
                   "--no-progress"):
        assert option in out
