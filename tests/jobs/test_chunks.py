"""Tiles read from their chunk files (`ntkit.jobs._chunks`) against the same store read through Zarr."""

import os

import numpy as np
import pytest
import zarr

from ntkit import jobs
from ntkit.jobs._chunks import chunk_files

from ._common import inputs, network

SLICES = [np.s_[:, :], np.s_[2:11, 0:14], np.s_[5:6, 3:13], np.s_[9:14, 0:3], np.s_[12:14, 12:14], np.s_[0:4, 4:8],
          np.s_[4:8, 0:4], np.s_[13, :], np.s_[::3, 1::2]]


def _through_zarr(lazy):
    """The same lazy array with the chunk-file reader switched off (every read through Zarr)."""
    other = jobs.open(lazy.store, lazy.get)
    other._files = None
    return other


@pytest.mark.parametrize("x2_size", [None, 9])
def test_chunk_files_read_what_zarr_reads(tmp_path, dtype, x2_size):
    x = inputs(14, dtype=np.dtype(dtype))
    x2 = None if x2_size is None else inputs(x2_size, dtype=np.dtype(dtype), seed=1)
    jobs.kernel_job(network(), x, x2, store=tmp_path / "k.zarr", tile=4, progress=False)
    lazy = jobs.open(tmp_path / "k.zarr", "ntk")
    assert lazy._chunk_files() is not None  # the store ntkit writes has the layout read directly
    slow = _through_zarr(lazy)
    for key in SLICES:  # slices past the 9 columns of the rectangular kernel stop at its edge
        np.testing.assert_array_equal(lazy[key], slow[key], err_msg=str(key))


def test_unwritten_chunks_hold_the_fill_value(tmp_path):
    array = zarr.create_array(tmp_path / "a.zarr", shape=(10, 7), chunks=(4, 4), dtype="float32", fill_value=0.5,
                              compressors=None)
    data = np.arange(70, dtype=np.float32).reshape(10, 7)
    array[4:10, 0:4] = data[4:10, 0:4]  # chunks (1, 0) and (2, 0); the rest never written
    files = chunk_files(str(tmp_path), "a.zarr", (10, 7), 4, np.dtype("float32"))
    assert files is not None
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(files.read(i, j), array[4 * i:4 * i + 4, 4 * j:4 * j + 4])
    assert float(files.read(0, 1)[0, 0]) == 0.5 and files.read(2, 1).shape == (2, 3)


@pytest.mark.parametrize("change", ["compressed", "separator", "shape", "dtype", "url"])
def test_other_layouts_are_left_to_zarr(tmp_path, change):
    options = {"compressors": None, "chunk_key_encoding": {"name": "default", "separator": "/"}}
    if change == "compressed":
        options["compressors"] = zarr.codecs.ZstdCodec()
    elif change == "separator":
        options["chunk_key_encoding"] = {"name": "default", "separator": "."}
    zarr.create_array(tmp_path / "a.zarr", shape=(8, 8), chunks=(4, 4), dtype="float32", **options)
    shape, dtype = ((8, 9) if change == "shape" else (8, 8)), ("float64" if change == "dtype" else "float32")
    store = f"file://{tmp_path}" if change == "url" else str(tmp_path)
    assert chunk_files(store, "a.zarr", shape, 4, np.dtype(dtype)) is None
    if change in ("compressed", "separator"):
        assert chunk_files(str(tmp_path), "b.zarr", (8, 8), 4, np.dtype("float32")) is None  # no array at all


def test_damaged_chunk_is_a_clear_error(tmp_path, dtype):
    jobs.kernel_job(network(), inputs(8, dtype=np.dtype(dtype)), store=tmp_path / "k.zarr", tile=4, progress=False)
    path = tmp_path / "k.zarr" / "ntk" / "c" / "0" / "1"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="damaged"):
        jobs.load(tmp_path / "k.zarr", "ntk")
