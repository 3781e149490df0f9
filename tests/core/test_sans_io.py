"""The protocol core is sans-IO (STYLE.md habit 1).

Nothing under proxy/core may import an I/O module (asyncio, socket, ssl,
selectors) or anything from proxy.shell, the only layer that does I/O.  The
check reads the source with ast, so it also sees imports inside functions and
under `if TYPE_CHECKING:` (a type-only import of the shell would still tie the
core to it), and resolves relative imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import proxy.core

CORE = Path(proxy.core.__file__).resolve().parent
PACKAGE_ROOT = CORE.parent.parent  # the directory that contains proxy/

FORBIDDEN = ("asyncio", "socket", "ssl", "selectors", "proxy.shell")

MODULES = sorted(CORE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import statement in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from proxy import shell" imports proxy.shell too.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_core_package_has_modules():
    names = {module_name(path) for path in MODULES}
    assert {"proxy.core.http1.request_parser", "proxy.core.pool", "proxy.core.mux.session"} <= names


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_core_module_does_no_io(path):
    offending = [f"line {line}: {module}" for line, module in imported_modules(path) if is_forbidden(module)]
    assert not offending, f"{module_name(path)} imports I/O: {offending}"


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("import asyncio", True),
        ("import asyncio.events", True),
        ("from socket import socket", True),
        ("import ssl as tls", True),
        ("from proxy.shell.client import X", True),
        ("from proxy import shell", True),
        ("from ...shell import client", True),  # relative, from proxy/core/http1/
        ("def f():\n    import selectors", True),
        ("import socketserver", False),
        ("from proxy.core.http1 import fields", False),
        ("from .fields import is_valid_host", False),
    ],
)
def test_the_check_itself(tmp_path, monkeypatch, source, forbidden):
    """The checker sees what it must (and not more): a module at
    proxy/core/http1/x.py with `source`."""
    fake = tmp_path / "proxy" / "core" / "http1" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setattr(f"{__name__}.PACKAGE_ROOT", tmp_path)
    assert any(is_forbidden(module) for _, module in imported_modules(fake)) is forbidden
