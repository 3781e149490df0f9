"""bench/compiled.py: the benchmark's floor and mux load client built as muxproxy is built.

The bare relay is the floor under muxproxy's CPU per request only if it
runs on the same stack, build included: compiled by mypyc when muxproxy's
per-request path is.  The mux load client is compiled whenever it can be:
it shares the load core with the origin.  These tests build both for real
(mypyc and gcc, as the benchmark does) and check that what runs is the
compiled module, that it does the same work as the interpreted one (here
for the relay, byte for byte; tests/bench/test_muxload.py runs the client's
tests against both builds), that a build is reused rather than repeated and
redone when a source it is built from changes, and that a failed build says
why and leaves nothing behind that could be taken for a build.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import proxy
from bench import compiled
from bench.compiled import MUX_CLIENT, RELAY, Program, build_compiled, floor_relay, mux_client
from bench.micro import bare_relay
from bench.servers import baremux

BUILDS = ["compiled_floor", "compiled_client"]


@pytest.mark.parametrize("fixture", BUILDS)
def test_the_compiled_program_is_an_extension_module_alone_in_its_directory(fixture, request):
    build = request.getfixturevalue(fixture)
    assert build.directory is not None
    files = sorted(path.name for path in build.directory.iterdir())
    assert len(files) == 1 and files[0].startswith(f"{build.program.name}.") and files[0].endswith(".so")
    assert build.module().__file__.endswith(".so")
    argv = build.argv("--port", "1")
    assert argv[-2:] == ["--port", "1"] and str(build.directory) in argv


def test_the_compiled_client_starts_and_parses_its_options(compiled_client):
    # Its --help comes from the compiled main(), with the summary the module's
    # missing __doc__ would have given.
    done = subprocess.run(compiled_client.argv("--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "The mux load client" in done.stdout and "--in-flight" in done.stdout


def test_compiled_and_interpreted_relays_write_the_same_bytes(compiled_floor):
    outputs = []
    for module in (baremux, compiled_floor.module()):
        written: list[bytes] = []

        class Recording:
            def write(self, data: bytes) -> None:
                written.append(data)

        round_ = bare_relay(3, Recording(), relay_module=module)
        round_()
        round_()
        outputs.append(written)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 2


@pytest.mark.parametrize("fixture", BUILDS)
def test_a_finished_build_is_reused(fixture, request, monkeypatch):
    build = request.getfixturevalue(fixture)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a program that was already built")

    monkeypatch.setattr(subprocess, "run", no_build)
    assert build_compiled(build.program) == build.directory


def test_the_build_is_named_after_every_source_it_is_built_from(tmp_path, monkeypatch):
    # The client's compiled code relies on the types of the benchmark modules
    # it imports: an edit to one of them must build it again.
    assert MUX_CLIENT.source.name == "muxload.py" and all(path.exists() for path in MUX_CLIENT.sources())
    assert RELAY.sources() == [RELAY.source] and RELAY.source.name == "baremux.py"
    (tmp_path / "pkg").mkdir()
    for name in ("main", "helper"):
        (tmp_path / "pkg" / f"{name}.py").write_text(f"# {name}\n")
    monkeypatch.setattr(compiled, "REPO", tmp_path)
    program = Program("main", "pkg.main", imports=("pkg.helper",))
    assert program.sources() == [tmp_path / "pkg" / "main.py", tmp_path / "pkg" / "helper.py"]
    before = compiled._key(program)
    (tmp_path / "pkg" / "helper.py").write_text("# helper, edited\n")
    assert compiled._key(program) != before


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "program.py").write_text("def main() -> None:\n    x: int = 'not an int'\n")
    monkeypatch.setattr(compiled, "REPO", tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="mypyc failed"):
        build_compiled(Program("program", "broken.program"), cache)
    assert list((cache / "program").iterdir()) == []


def test_a_failed_build_falls_back_to_the_interpreted_program_and_says_so(monkeypatch, capsys):
    def no_compiler(program) -> None:
        raise RuntimeError("no gcc")

    monkeypatch.setattr(compiled, "build_compiled", no_compiler)
    monkeypatch.setattr(proxy, "build", lambda: "compiled")
    builds = ((floor_relay.__wrapped__(), "bench.servers.baremux"), (mux_client.__wrapped__(), "bench.clients.muxload"))
    for build, module in builds:
        assert not build.compiled and build.directory is None
        assert "no gcc" in build.description
        assert build.argv("--port", "1") == [sys.executable, "-m", module, "--port", "1"]
    said = capsys.readouterr().err
    assert "the bare relay runs interpreted" in said and "the mux load client runs interpreted" in said


def test_a_pure_python_muxproxy_gets_the_interpreted_relay_and_still_a_compiled_client(monkeypatch):
    built = []

    def fake_build(program):
        built.append(program)
        raise RuntimeError("not building in this test")

    monkeypatch.setattr(proxy, "build", lambda: "pure Python")
    monkeypatch.setattr(compiled, "build_compiled", fake_build)
    relay = floor_relay.__wrapped__()
    assert not relay.compiled and relay.module() is baremux
    assert "pure-Python" in relay.description and built == []
    mux_client.__wrapped__()
    assert built == [MUX_CLIENT]  # the client is compiled whatever muxproxy's build


def test_a_cache_that_cannot_be_written_is_a_build_failure(tmp_path):
    # A file where the cache directory should be: the build cannot start.
    blocked = tmp_path / "cache"
    blocked.write_text("not a directory")
    with pytest.raises(RuntimeError, match="cannot build in"):
        build_compiled(RELAY, blocked / "inner")
