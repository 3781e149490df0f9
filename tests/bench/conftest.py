"""Fixtures shared by the benchmark's tests."""

from __future__ import annotations

import pytest

from bench.compiled import Build, floor_relay, mux_client


def _compiled_or_skip(build: Build, what: str) -> Build:
    if not build.compiled:
        pytest.skip(f"{what} is not compiled here: {build.description}")
    return build


@pytest.fixture
def compiled_floor() -> Build:
    """The bare relay compiled as muxproxy is (bench/compiled.py); skips where it is not."""
    return _compiled_or_skip(floor_relay(), "the bare relay")


@pytest.fixture
def compiled_client() -> Build:
    """The mux load client compiled by mypyc (bench/compiled.py); skips where it cannot be."""
    return _compiled_or_skip(mux_client(), "the mux load client")
