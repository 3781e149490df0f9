"""The compiled build (setup.py) is all or nothing.

Each mypyc extension is optional, so a module that failed to compile would
quietly run interpreted beside compiled ones; and an interpreted class cannot
subclass a compiled one (tls.py and client.py), so a mixed build can break.
"""

import ast
import importlib
from pathlib import Path

import proxy

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_every_listed_module_exists():
    for name in compiled_modules():
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


def test_the_build_is_all_compiled_or_all_python():
    build = proxy.build()
    for name in compiled_modules():
        loaded_from = importlib.import_module(name).__file__
        assert loaded_from is not None
        compiled = not loaded_from.endswith(".py")
        assert compiled == (build == "compiled"), f"{name} is loaded from {loaded_from} in a {build} build"
