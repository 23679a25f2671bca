"""`--arch FILE.py:NAME` / `package.module:NAME`: loading a user's `ntkit.nn` architecture, and each error."""

import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import ntkit.nn as stax
from ntkit.cli._arch import load_architecture

NET = """
import ntkit.nn as stax

net = stax.serial(stax.Dense(16, W_std=1.5), stax.Erf(), stax.Dense(3))

def make():
    return stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(2))

def needs_width(width):
    return stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(2))

not_a_layer = 42

def returns_a_list():
    return [stax.Dense(1)]
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(NET)
    return path


def test_file_layer_is_the_one_defined(net_file):
    layer = load_architecture(f"{net_file}:net")
    assert isinstance(layer, stax.serial)
    # the loaded definition is the file's: its kernel equals the same network written here
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    expected = stax.serial(stax.Dense(16, W_std=1.5), stax.Erf(), stax.Dense(3)).kernel(x, None, "ntk")
    np.testing.assert_allclose(layer.kernel(x, None, "ntk"), expected, rtol=1e-6)
    assert layer != stax.serial(stax.Dense(16, W_std=1.0), stax.Erf(), stax.Dense(3))


def test_file_function_is_called(net_file):
    layer = load_architecture(f"{net_file}:make")
    assert layer == stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(2))


def test_module_reference():
    assert load_architecture("ntkit.nn:Relu") == stax.Relu()  # a function of no arguments returning a layer
    assert load_architecture("ntkit.nn:Identity") == stax.Identity()  # a layer class constructible without arguments


def test_module_reference_on_sys_path(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("import ntkit.nn as stax\nnet = stax.serial(stax.Dense(4), stax.Gelu())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_architecture("userpkg.models:net") == stax.serial(stax.Dense(4), stax.Gelu())
    finally:
        for name in ("userpkg", "userpkg.models"):
            sys.modules.pop(name, None)


def test_file_with_dataclasses_and_postponed_annotations(tmp_path):
    # dataclasses look the defining module up in sys.modules: the loader must register it
    path = tmp_path / "dc.py"
    path.write_text(textwrap.dedent("""
        from __future__ import annotations
        import dataclasses
        import ntkit.nn as stax

        @dataclasses.dataclass(frozen=True)
        class Config:
            width: int = 8

        def net():
            return stax.serial(stax.Dense(Config().width), stax.Relu(), stax.Dense(1))
    """))
    assert load_architecture(f"{path}:net") == stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))


def test_two_files_of_one_name_stay_apart(tmp_path):
    for folder, width in (("a", 3), ("b", 5)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.py").write_text(f"import ntkit.nn as stax\nnet = stax.Dense({width})\n")
    assert load_architecture(f"{tmp_path / 'a' / 'net.py'}:net").out_dim == 3
    assert load_architecture(f"{tmp_path / 'b' / 'net.py'}:net").out_dim == 5


@pytest.mark.parametrize("reference, message", [
    ("my_net.py", "must be FILE.py:NAME or package.module:NAME"),
    (":net", "must be FILE.py:NAME"),
    ("my_net.py:", "must be FILE.py:NAME"),
    ("my_net.py:1net", "must be FILE.py:NAME"),
    ("missing.py:net", "no file"),
    ("my_net.py:nope", "defines no 'nope'"),
    ("my_net.py:not_a_layer", "expected an ntkit.nn layer .*got int"),
    ("my_net.py:returns_a_list", "expected an ntkit.nn layer .*got list"),
    ("my_net.py:needs_width", "function of no arguments .*calling it failed"),
    ("ntkit.no_such_module:net", "cannot import module 'ntkit.no_such_module'"),
    ("ntkit.nn:Dense", "calling it failed"),
])
def test_bad_references(net_file, monkeypatch, reference, message):
    monkeypatch.chdir(net_file.parent)
    with pytest.raises(ValueError, match=message) as err:
        load_architecture(reference)
    assert repr(reference) in str(err.value)


def test_file_that_fails_to_import(tmp_path):
    modules = set(sys.modules)
    for text, kind in (("def broken(:\n", "SyntaxError"), ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
                       ("import no_such_package_xyz\n", "ModuleNotFoundError")):
        path = tmp_path / "bad.py"
        path.write_text(text)
        with pytest.raises(ValueError, match=f"importing .*bad.py' failed: {kind}"):
            load_architecture(f"{path}:net")
    assert set(sys.modules) == modules  # a failed import leaves no half-made module behind
