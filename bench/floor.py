"""The floor of scenario 1, built as muxproxy is built.

Strategy: the bare relay (bench/servers/baremux.py) measures what the mux
design costs on muxproxy's stack with none of muxproxy's work.  The stack
includes the build: muxproxy's per-request path is compiled by mypyc
(setup.py), so a floor run by the interpreter would charge to "the design in
CPython" what is only the interpreter's dispatch, and make muxproxy's own
work look smaller than it is (measured with `python -m bench.micro`, the
relay's protocol work is about a quarter cheaper compiled).  So when
muxproxy's build is compiled, the benchmark compiles the relay's unchanged
source with the same mypyc, at the same optimisation level, as a top-level
module `baremux` in a directory of its own under build/bench-floor/, and
runs that; when muxproxy runs as pure Python, the relay does too.

The build takes about ten seconds and is kept: the directory is named after
a digest of the source, the Python version, mypy's version and the build
script, so an edit to the relay (or a new mypy) builds again, the older
build is removed, and nothing stale is ever run.
A failed build is not silent and not fatal: the interpreted relay runs, and
the results file says so and why (`Floor.description`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "bench" / "servers" / "baremux.py"
CACHE = REPO / "build" / "bench-floor"
#: The module name the compiled relay has in its directory.
MODULE = "baremux"
#: setup.py's level for muxproxy's own modules: the floor must not be built better or worse.
OPT_LEVEL = "3"
#: A build that takes longer has hung (it takes about ten seconds).
BUILD_TIMEOUT = 300.0

#: Run in the build directory: compile baremux.py there, in place.
_BUILD_SCRIPT = f"""
from setuptools import setup
from mypyc.build import mypycify
setup(name="bench-floor", py_modules=[], script_args=["-q", "build_ext", "--inplace"],
      ext_modules=mypycify(["{MODULE}.py"], opt_level="{OPT_LEVEL}"))
"""
#: How the compiled relay starts: its directory first on sys.path, then its main().
_LAUNCH = f"import sys; sys.path.insert(0, sys.argv.pop(1)); import {MODULE}; {MODULE}.main()"


@dataclass(frozen=True)
class Floor:
    """Which bare relay runs, and how to start it."""

    compiled: bool
    directory: Path | None  # where the compiled module is, when compiled
    description: str  # one line for the results file

    def argv(self, port: int, origin_port: int) -> list[str]:
        options = ["--port", str(port), "--origin-port", str(origin_port)]
        if self.directory is None:
            return [sys.executable, "-m", "bench.servers.baremux", *options]
        return [sys.executable, "-c", _LAUNCH, str(self.directory), *options]

    def module(self) -> ModuleType:
        """The relay's module, for timing it in-process (bench/micro.py)."""
        if self.directory is None:
            from bench.servers import baremux

            return baremux
        (extension,) = self.directory.glob(f"{MODULE}.*.so")
        return _load_extension(extension)


def _load_extension(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None, f"{path} is not a loadable module"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _key() -> str:
    import mypy.version

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{sys.version}|{mypy.version.__version__}|{_BUILD_SCRIPT}".encode())
    return digest.hexdigest()[:16]


def build_compiled(cache: Path = CACHE) -> Path:
    """The directory of the compiled relay, building it if this source has no build yet.

    Raises RuntimeError (with the compiler's last words) when it cannot be built."""
    try:
        key = _key()
    except ImportError as error:
        raise RuntimeError(f"mypy is not installed ({error})") from error
    directory = cache / key
    if any(directory.glob(f"{MODULE}.*.so")):
        return directory
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed into place, so that an interrupted build
        # is never taken for a finished one.
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache))
    except OSError as error:
        raise RuntimeError(f"cannot build in {cache}: {error}") from error
    try:
        shutil.copyfile(SOURCE, work / f"{MODULE}.py")
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        if done.returncode != 0 or not any(work.glob(f"{MODULE}.*.so")):
            said = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"mypyc failed (exit status {done.returncode}): {said[-1] if said else 'no output'}")
        # Only the extension stays, so that nothing else can be imported as the relay.
        for leftover in ("build", ".mypy_cache"):
            shutil.rmtree(work / leftover, ignore_errors=True)
        (work / f"{MODULE}.py").unlink()
        try:
            work.rename(directory)
        except OSError:
            if not any(directory.glob(f"{MODULE}.*.so")):  # not another run's finished build
                raise
        for older in cache.iterdir():  # builds of earlier sources: never run again
            if older != directory and not older.name.startswith(f"{key}."):
                shutil.rmtree(older, ignore_errors=True)
        return directory
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"mypyc took over {BUILD_TIMEOUT:.0f} s") from error
    except OSError as error:  # a read-only or full disk, say
        raise RuntimeError(f"cannot build in {cache}: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)


@functools.cache
def floor_relay() -> Floor:
    """The bare relay the benchmark runs: compiled when muxproxy's build is."""
    import proxy

    if proxy.build() != "compiled":
        return Floor(False, None, "interpreted, as muxproxy's pure-Python build is")
    try:
        directory = build_compiled()
    except RuntimeError as error:
        print(f"bench: the bare relay runs interpreted: compiling it failed: {error}", file=sys.stderr)
        return Floor(False, None, f"interpreted: compiling it as muxproxy is compiled failed: {error}")
    import mypy.version

    return Floor(True, directory, f"compiled by mypyc {mypy.version.__version__} (opt level {OPT_LEVEL}), as muxproxy is")
