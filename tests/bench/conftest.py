"""Fixtures shared by the benchmark's tests."""

from __future__ import annotations

import pytest

from bench.floor import Floor, floor_relay


@pytest.fixture
def compiled_floor() -> Floor:
    """The bare relay compiled as muxproxy is (bench/floor.py); skips where it is not."""
    relay = floor_relay()
    if not relay.compiled:
        pytest.skip(f"the bare relay is not compiled here: {relay.description}")
    return relay
