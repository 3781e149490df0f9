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


def _is_final(annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    return isinstance(annotation, ast.Name) and annotation.id == "Final"


def _is_constant(name: str) -> bool:
    """UPPER_CASE, or _private_lower_case (a shared value such as a cache);
    not CamelCase, which is a type alias."""
    return name == name.upper() or (name.startswith("_") and not name.startswith("__") and name == name.lower())


def test_module_constants_of_compiled_modules_are_final():
    # Compiled, a module-level name that is not Final is looked up in the
    # module's globals dict at every use (README.md, "The compiled build").
    loose = []
    for name in compiled_modules():
        path = ROOT / (name.replace(".", "/") + ".py")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                targets = [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not _is_final(node.annotation):
                names = [node.target.id]
            else:
                continue
            loose += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if _is_constant(n)]
    assert not loose, "module-level names not declared Final:\n" + "\n".join(loose)
