"""Architecture references on the command line: `FILE.py:NAME` or `package.module:NAME`.

`NAME` is an `ntkit.nn` layer, or a function of no arguments that returns one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_architecture(reference: str) -> Any:
    """The `ntkit.nn` layer named by `reference` (`FILE.py:NAME` or `package.module:NAME`).

    Raises:
      ValueError: the reference is malformed, the file or module is missing or fails to import, or the name is
        not a layer (nor a function returning one). The message names the reference and what was expected.
    """
    from ..nn import Layer

    where, sep, name = reference.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"--arch must be FILE.py:NAME or package.module:NAME, got {reference!r}")
    module = _import(where, reference)
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise ValueError(f"--arch {reference!r}: {where} defines no {name!r}") from None
    if not isinstance(obj, Layer) and callable(obj):
        try:
            obj = obj()
        except TypeError as err:
            raise ValueError(f"--arch {reference!r}: {name} must be an ntkit.nn layer or a function of no "
                             f"arguments returning one; calling it failed: {err}") from err
    if not isinstance(obj, Layer):
        raise ValueError(f"--arch {reference!r}: expected an ntkit.nn layer (e.g. stax.serial(...)), "
                         f"got {type(obj).__name__}")
    return obj


def _import(where: str, reference: str) -> Any:
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"--arch {reference!r}: no file {str(path)!r}")
        module_name = f"_ntkit_arch_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always get a spec
            raise ValueError(f"--arch {reference!r}: cannot load {str(path)!r} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise ValueError(f"--arch {reference!r}: importing {str(path)!r} failed: "
                             f"{type(err).__name__}: {err}") from err
        return module
    try:
        return importlib.import_module(where)
    except ImportError as err:
        raise ValueError(f"--arch {reference!r}: cannot import module {where!r}: {err}") from err
