"""The compiled core is the one loaded, and it is built the way setup.py says."""

import importlib.machinery

import fastpool
from fastpool import _core


def test_core_is_a_compiled_extension():
    assert _core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert isinstance(_core.__loader__, importlib.machinery.ExtensionFileLoader)


def test_pool_is_built_on_the_core():
    assert issubclass(fastpool.Pool, _core.CorePool)
    # The hot path methods are C functions, not Python ones.
    assert type(_core.CorePool.__dict__["conn"]).__name__ in ("method_descriptor", "cython_function_or_method")
    import inspect

    assert not inspect.isfunction(_core.CorePool.conn)


def test_stub_sits_beside_each_compiled_module():
    from pathlib import Path

    import importlib.machinery

    here = Path(fastpool.__file__).parent
    compiled = {p.name.split(".")[0] for p in here.iterdir()
                if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))}
    assert {"_core", "_bridge", "_asyncpg"} <= compiled
    for name in compiled:
        assert (here / f"{name}.pyi").exists(), name
    assert (Path(fastpool.__file__).parent / "py.typed").exists()
