"""bench/floor.py: scenario 1's floor is built as muxproxy is built.

The bare relay is the floor under muxproxy's CPU per request only if it
runs on the same stack, build included: compiled by mypyc when muxproxy's
per-request path is.  These tests build it for real (mypyc and gcc, as the
benchmark does) and check that what runs is the compiled module, that it
does the relay's work byte for byte as the interpreted one does, that a
build is reused rather than repeated, and that a failed build says why and
leaves nothing behind that could be taken for a build.
"""

from __future__ import annotations

import subprocess

import pytest

import proxy
from bench import floor as floor_module
from bench.floor import build_compiled, floor_relay
from bench.micro import bare_relay
from bench.servers import baremux


def test_the_compiled_relay_is_an_extension_module_alone_in_its_directory(compiled_floor):
    assert compiled_floor.directory is not None
    files = sorted(path.name for path in compiled_floor.directory.iterdir())
    assert len(files) == 1 and files[0].startswith("baremux.") and files[0].endswith(".so")
    assert compiled_floor.module().__file__.endswith(".so")
    assert compiled_floor.argv(1, 2)[-4:] == ["--port", "1", "--origin-port", "2"]
    assert str(compiled_floor.directory) in compiled_floor.argv(1, 2)


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


def test_a_finished_build_is_reused(compiled_floor, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a relay that was already built")

    monkeypatch.setattr(subprocess, "run", no_build)
    assert build_compiled() == compiled_floor.directory


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path, monkeypatch):
    broken = tmp_path / "baremux.py"
    broken.write_text("def main() -> None:\n    x: int = 'not an int'\n")
    monkeypatch.setattr(floor_module, "SOURCE", broken)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="mypyc failed"):
        build_compiled(cache)
    assert list(cache.iterdir()) == []


def test_a_failed_build_falls_back_to_the_interpreted_relay_and_says_so(monkeypatch):
    def no_compiler() -> None:
        raise RuntimeError("no gcc")

    monkeypatch.setattr(floor_module, "build_compiled", no_compiler)
    monkeypatch.setattr(proxy, "build", lambda: "compiled")
    relay = floor_relay.__wrapped__()
    assert not relay.compiled and relay.directory is None
    assert "no gcc" in relay.description
    assert relay.argv(1, 2)[1:3] == ["-m", "bench.servers.baremux"]


def test_a_pure_python_muxproxy_gets_the_interpreted_relay(monkeypatch):
    monkeypatch.setattr(proxy, "build", lambda: "pure Python")
    monkeypatch.setattr(floor_module, "build_compiled", lambda: pytest.fail("compiled for a pure-Python build"))
    relay = floor_relay.__wrapped__()
    assert not relay.compiled and relay.module() is baremux


def test_a_cache_that_cannot_be_written_is_a_build_failure(tmp_path):
    # A file where the cache directory should be: the build cannot start.
    blocked = tmp_path / "cache"
    blocked.write_text("not a directory")
    with pytest.raises(RuntimeError, match="cannot build in"):
        build_compiled(blocked / "inner")
