"""The bare mux relay (bench/servers/baremux.py) relays faithfully.

Scenario 1 quotes its CPU per request as the floor under muxproxy's: the
figure means something only if it does the same work on the benchmark's
path.  Here it runs as the benchmark runs it, a subprocess, both
interpreted and compiled by mypyc (as the benchmark runs it beside
muxproxy's compiled build), in front of a scripted origin, and a mux client
checks what comes back with the test suite's own application/http reader:
every inner response whole, tagged, with the origin's status and body,
de-chunked bodies re-framed, and the origin connection kept alive between
exchanges.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.compiled import RELAY, Build
from tests.support.faulty import ScriptedOrigin, big_body
from tests.support.harness import MuxClient, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["interpreted", "compiled"])
def relay(request):
    if request.param == "compiled":
        floor: Build = request.getfixturevalue("compiled_floor")
    else:
        floor = Build(RELAY, None, "interpreted")
    with ScriptedOrigin() as origin:
        port = free_port()
        process = subprocess.Popen(floor.argv("--port", str(port), "--origin-port", str(origin.port)), cwd=REPO)
        try:
            wait_for_port(port)
            yield port, origin
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_inner_responses_are_whole_and_tagged(relay) -> None:
    port, origin = relay
    with MuxClient(port) as client:
        client.request("GET", "/ok", request_id="a")
        client.request("GET", "/big?size=20000", request_id="b")
        client.request("GET", "/drip?ms=1&count=3", request_id="c")
        client.request("GET", "/nowhere", request_id="d")
        client.end()
        responses = {response.request_id: response for response in client.receive_until_end()}
    assert sorted(responses) == ["a", "b", "c", "d"]
    assert responses["a"].status == 200 and responses["a"].body == b"ok"
    assert responses["b"].body == big_body(20000)
    assert responses["c"].body == b"drip\n" * 3 and not responses["c"].chunked
    assert responses["c"].header("Content-Length") == "15"
    assert responses["d"].status == 404 and responses["d"].reason == "Not Found"
    for request_id, target in (("a", "/ok"), ("b", "/big?size=20000"), ("d", "/nowhere")):
        assert responses[request_id].header("Content-Location") == target
    assert all(response.header("Connection") is None for response in responses.values())


def test_requests_reach_the_origin_with_host_and_fields(relay) -> None:
    port, origin = relay
    with MuxClient(port) as client:
        client.request("GET", "/echo", request_id="1", headers={"X-Test": "yes"})
        (response,) = client.receive(1)
        seen = json.loads(response.body)
        client.request("GET", "/ok", request_id="2")
        (second,) = client.receive(1)
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["host"] == f"127.0.0.1:{origin.port}"
    assert headers["x-test"] == "yes" and headers["request-id"] == "1"
    # One exchange at a time on a kept-alive connection: the second request reuses it.
    assert second.header("X-Origin-Connection") == response.header("X-Origin-Connection")
    assert origin.connection_count == 1
