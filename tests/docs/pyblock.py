"""Runs one Python block of the docs as `python -m asyncio` would run it: as `__main__`, with the
working directory first on sys.path, and with top-level `await` / `async with` / `async for`
allowed (many client examples are written that way).

    python tests/docs/pyblock.py BLOCK_FILE
    python tests/docs/pyblock.py --import MODULE_FILE   # imported, not run as __main__
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import os
import sys
import types


def import_file(path: str) -> None:
    """Imports a file block (say handler.py) as a test would: it must load without starting anything."""
    sys.path.insert(0, os.getcwd())
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    sys.path.insert(0, os.getcwd())
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    result = eval(code, module.__dict__)
    if inspect.iscoroutine(result):
        asyncio.run(result)


if __name__ == "__main__":
    if sys.argv[1] == "--import":
        import_file(sys.argv[2])
    else:
        main(sys.argv[1])
