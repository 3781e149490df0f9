"""What the benchmark needs, and a clear message when something is missing.

The benchmark installs nothing.  Before anything starts it looks for every
program and Python module it will use; if any is missing it names each one,
the package that provides it and the command that installs them all, and
the run stops (exit status 2).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    name: str  # program on PATH, or Python module
    package: str  # Debian package or PyPI distribution that provides it
    purpose: str
    is_python: bool = False

    def is_present(self) -> bool:
        if self.is_python:
            return importlib.util.find_spec(self.name) is not None
        return _which(self.name) is not None


#: Debian puts nginx, haproxy and nghttpx in /usr/sbin, which is not on every user's PATH.
SBIN = "/usr/sbin:/sbin"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def program(name: str) -> str:
    """The path of a required program (checked by `missing_requirements` before the run)."""
    path = _which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH or in {SBIN}")
    return path


REQUIREMENTS = (
    Requirement("nginx", "nginx-light", "the origin, and a peer reverse proxy"),
    Requirement("haproxy", "haproxy", "a peer reverse proxy (HTTP/1.1 and h2c fronts)"),
    Requirement("nghttpx", "nghttp2-proxy", "a peer HTTP/2 reverse proxy"),
    Requirement("h2load", "nghttp2-client", "HTTP/2 and HTTP/1.1 load generator"),
    Requirement("wrk", "wrk", "HTTP/1.1 load generator"),
    Requirement("taskset", "util-linux", "pinning servers and load generators to cores"),
    Requirement("uvloop", "uvloop", "event loop of the Python load clients and helper servers", is_python=True),
    Requirement("httptools", "httptools", "HTTP parser of the Python load clients", is_python=True),
    Requirement("matplotlib", "matplotlib", "the plots", is_python=True),
    # muxproxy's compiled build needed both to install; the benchmark needs
    # them again to build the floor and the mux load client the same way
    # (bench/compiled.py).
    Requirement("mypyc", "mypy", "compiles the bare relay (the floor) and the mux load client as muxproxy is compiled",
                is_python=True),
    Requirement("gcc", "gcc", "the C compiler mypyc uses"),
)


def missing_requirements() -> list[Requirement]:
    return [requirement for requirement in REQUIREMENTS if not requirement.is_present()]


def missing_message(missing: list[Requirement]) -> str:
    lines = ["The benchmark needs these and installs nothing itself:"]
    lines += [
        f"  {r.name:<11} ({'PyPI' if r.is_python else 'Debian'} package {r.package}): {r.purpose}" for r in missing
    ]
    debian = sorted({r.package for r in missing if not r.is_python})
    python = sorted({r.package for r in missing if r.is_python})
    lines.append("Install them with:")
    if debian:
        lines.append(f"  sudo apt-get install {' '.join(debian)}")
    if python:
        lines.append(f"  python3 -m pip install {' '.join(python)}")
    return "\n".join(lines)
