"""The benchmark's own programs built as muxproxy is built: compiled by mypyc.

Strategy: two of the benchmark's Python programs sit on scenario 1's hot
path beside muxproxy's compiled build, and each is compiled, unchanged, by
the same mypyc at the same optimisation level, as a top-level module in a
directory of its own under build/bench-compiled/:

* the bare relay (bench/servers/baremux.py), the floor: it measures what the
  mux design costs on muxproxy's stack with none of muxproxy's work, and the
  stack includes the build.  A floor run by the interpreter would charge to
  "the design in CPython" what is only the interpreter's dispatch, and make
  muxproxy's own work look smaller than it is (`python -m bench.micro`: the
  relay's protocol work is about a quarter cheaper compiled).  So it is
  compiled when muxproxy is, and interpreted when muxproxy runs as pure
  Python (`floor_relay`).
* the mux load client (bench/clients/muxload.py), the measuring instrument.
  It shares the load core with the origin, and at 100 requests in flight
  that core, not the server, held the rate (bench/README.md, "load core
  %"): every microsecond the client spends is taken from the origin.  wrk
  and h2load, the peers' clients, are C.  So it is compiled whenever it can
  be, whatever muxproxy's build (`mux_client`); compiled, it takes about a
  third less CPU per request.

A build takes about six seconds and is kept: its directory is named after a
digest of the sources the program is built from (the program and the
benchmark modules it imports), the Python version, mypy's version and the
build script, so an edit or a new mypy builds again, the older build is
removed, and nothing stale is ever run.  A failed build is not silent and
not fatal: the interpreted program runs, and stderr and the results file say
so and why (`Build.description`).
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
CACHE = REPO / "build" / "bench-compiled"
#: setup.py's level for muxproxy's own modules: the benchmark's programs must
#: not be built better or worse.
OPT_LEVEL = "3"
#: A build that takes longer has hung (it takes about six seconds).
BUILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class Program:
    """One of the benchmark's programs that can be compiled."""

    name: str  # the top-level module name it has when compiled
    package_module: str  # its dotted name in this repository, run interpreted with -m
    #: The benchmark modules it imports: mypy reads their types, so they are part of the build.
    imports: tuple[str, ...] = ()

    @property
    def source(self) -> Path:
        return _module_path(self.package_module)

    def sources(self) -> list[Path]:
        return [self.source, *map(_module_path, self.imports)]


def _module_path(dotted: str) -> Path:
    """The file of one of this repository's modules, from its dotted name."""
    return REPO / Path(*dotted.split(".")).with_suffix(".py")


RELAY = Program("baremux", "bench.servers.baremux")
MUX_CLIENT = Program("muxload", "bench.clients.muxload", imports=("bench.clients.pacing", "bench.stats"))

#: Run in the build directory: compile the program's copy there, in place.
_BUILD_SCRIPT = """
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(name="bench-" + sys.argv[1], py_modules=[], script_args=["-q", "build_ext", "--inplace"],
      ext_modules=mypycify([sys.argv[1] + ".py"], opt_level=sys.argv[2]))
"""
#: How a compiled program starts: its directory, then the repository (for the
#: benchmark modules it imports), first on sys.path; then its main().
_LAUNCH = "import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; import {name}; {name}.main()"


@dataclass(frozen=True)
class Build:
    """Which build of a program runs, and how to start it."""

    program: Program
    directory: Path | None  # where the compiled module is, when compiled
    description: str  # one line for the results file

    @property
    def compiled(self) -> bool:
        return self.directory is not None

    def argv(self, *options: str) -> list[str]:
        if self.directory is None:
            return [sys.executable, "-m", self.program.package_module, *options]
        launch = _LAUNCH.format(name=self.program.name)
        return [sys.executable, "-c", launch, str(self.directory), str(REPO), *options]

    def module(self) -> ModuleType:
        """The program's module, for using it in-process (bench/micro.py, the tests)."""
        if self.directory is None:
            return importlib.import_module(self.program.package_module)
        (extension,) = self.directory.glob(f"{self.program.name}.*.so")
        spec = importlib.util.spec_from_file_location(self.program.name, extension)
        assert spec is not None and spec.loader is not None, f"{extension} is not a loadable module"
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def _key(program: Program) -> str:
    import mypy.version

    digest = hashlib.sha256()
    for source in program.sources():
        digest.update(source.read_bytes())
    digest.update(f"{sys.version}|{mypy.version.__version__}|{OPT_LEVEL}|{_BUILD_SCRIPT}".encode())
    return digest.hexdigest()[:16]


def _built(directory: Path, program: Program) -> bool:
    return any(directory.glob(f"{program.name}.*.so"))


def build_compiled(program: Program, cache: Path = CACHE) -> Path:
    """The directory of the compiled program, building it if its sources have no build yet.

    Raises RuntimeError (with the compiler's last words) when it cannot be built."""
    try:
        key = _key(program)
    except ImportError as error:
        raise RuntimeError(f"mypy is not installed ({error})") from error
    builds = cache / program.name
    directory = builds / key
    if _built(directory, program):
        return directory
    try:
        builds.mkdir(parents=True, exist_ok=True)
        # Built aside and renamed into place, so that an interrupted build
        # is never taken for a finished one.
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=builds))
    except OSError as error:
        raise RuntimeError(f"cannot build in {builds}: {error}") from error
    try:
        shutil.copyfile(program.source, work / f"{program.name}.py")
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_SCRIPT, program.name, OPT_LEVEL],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            # MYPYPATH: mypy reads the types of the benchmark modules the program imports.
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MYPYPATH": str(REPO)},
        )
        if done.returncode != 0 or not _built(work, program):
            said = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"mypyc failed (exit status {done.returncode}): {said[-1] if said else 'no output'}")
        # Only the extension stays, so that nothing else can be imported as the program.
        for leftover in ("build", ".mypy_cache"):
            shutil.rmtree(work / leftover, ignore_errors=True)
        (work / f"{program.name}.py").unlink()
        try:
            work.rename(directory)
        except OSError:
            if not _built(directory, program):  # not another run's finished build
                raise
        for older in builds.iterdir():  # builds of earlier sources: never run again
            if older != directory and not older.name.startswith(f"{key}."):
                shutil.rmtree(older, ignore_errors=True)
        return directory
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"mypyc took over {BUILD_TIMEOUT:.0f} s") from error
    except OSError as error:  # a read-only or full disk, say
        raise RuntimeError(f"cannot build in {builds}: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compiled_or_interpreted(program: Program, what: str, compiled_note: str = "") -> Build:
    try:
        directory = build_compiled(program)
    except RuntimeError as error:
        print(f"bench: {what} runs interpreted: compiling it failed: {error}", file=sys.stderr)
        return Build(program, None, f"interpreted: compiling it failed: {error}")
    import mypy.version

    compiler = f"mypyc {mypy.version.__version__} (opt level {OPT_LEVEL})"
    return Build(program, directory, f"compiled by {compiler}{compiled_note}")


@functools.cache
def floor_relay() -> Build:
    """The bare relay the benchmark runs: compiled when muxproxy's build is."""
    import proxy

    if proxy.build() != "compiled":
        return Build(RELAY, None, "interpreted, as muxproxy's pure-Python build is")
    return _compiled_or_interpreted(RELAY, "the bare relay", ", as muxproxy is")


@functools.cache
def mux_client() -> Build:
    """The mux load client the benchmark runs: compiled whenever it can be."""
    return _compiled_or_interpreted(MUX_CLIENT, "the mux load client")
