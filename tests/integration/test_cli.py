"""The command line and the access log, as a user meets them.

`muxproxy` runs as a real child process here: started with the packaged
default config (as the README's first command does), checked with
`muxproxy check`, stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.harness import REPO, MuxClient, free_port, wait_for_port

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def muxproxy(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=30, **kwargs
    )


def test_check_accepts_the_shipped_example_config():
    result = muxproxy("check", "conf/muxproxy.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("conf/muxproxy.toml: ok")


def test_check_names_file_key_and_problem(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('[origin.app]\nservers = ["127.0.0.1:9"]\n[[route]]\norigin = "app"\n[[route]]\norigin = "api"\n')
    result = muxproxy("check", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f'{config}: route[2].origin: unknown origin "api"'


def test_a_bad_config_stops_the_start_before_anything_listens(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text("[mux]\nheartbeat = \"soon\"\n")
    port = free_port()
    result = muxproxy("--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"{config}: mux.heartbeat:" in result.stderr


def test_a_bad_listen_argument_is_reported():
    result = muxproxy("--listen", "not-an-address")
    assert result.returncode == 2
    assert "--listen not-an-address" in result.stderr


def test_default_config_serves_the_demo_and_the_mux_endpoint_then_stops_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        page = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        assert "muxproxy" in page and "/_mux" in page
        with MuxClient(port) as client:
            client.request("GET", "/data/small.json", request_id="1")
            client.request("GET", "/missing", request_id="2")
            got = {r.request_id: r for r in client.receive(2)}
        assert got["1"].status == 200 and b'"small.json"' in got["1"].body
        assert got["2"].status == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


ACCESS_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z conn=(?P<conn>\d+) (?P<kind>mux|http|stream) "
    r"(?P<method>\S+) (?P<target>\S+) route=(?P<route>\S+) origin=(?P<origin>\S+) "
    r"status=(?P<status>\d+) bytes=(?P<bytes>\d+) ms=(?P<ms>[\d.]+) error=(?P<error>\S+)$"
)


def test_access_log_records_a_broken_inner_request_that_has_no_target(nginx, run_proxy, proxy_config, tmp_path: Path):
    # A framing error before any target was read is answered untagged; its
    # log line says "-" for the target, and the stream still ends cleanly.
    log_path = tmp_path / "access.log"
    config = proxy_config({"app": [nginx.address]}, [{"path": "/files", "origin": "app", "strip_prefix": True}])
    proxy = run_proxy(config + f'\n[log]\naccess = "{log_path}"\n')
    with MuxClient(proxy.port) as client:
        client.request("GET", "/files/100b.bin", request_id="a")
        assert [r.status for r in client.receive(1)] == [200]
        client.send(b"\x01garbage\r\n\r\n")
        broken = client.receive_until_end()
    assert [r.status for r in broken] == [501]  # no method llhttp knows: RFC 9110 §9.1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log_path.read_text().count("\n") < 3:
        time.sleep(0.05)
    lines = [ACCESS_LINE.match(line) for line in log_path.read_text().splitlines()]
    assert all(lines), log_path.read_text()
    by_target = {(m["kind"], m["target"]): m for m in lines}
    assert by_target[("mux", "/files/100b.bin")]["status"] == "200"
    untagged = by_target[("mux", "-")]
    assert (untagged["method"], untagged["status"], untagged["route"]) == ("-", "501", "-")
    assert ("stream", "/_mux") in by_target


def test_access_log_has_one_line_per_inner_and_plain_request(nginx, run_proxy, proxy_config, tmp_path: Path):
    log_path = tmp_path / "access.log"
    config = proxy_config({"app": [nginx.address]}, [{"path": "/files", "origin": "app", "strip_prefix": True}])
    proxy = run_proxy(config + f'\n[log]\naccess = "{log_path}"\n')
    with MuxClient(proxy.port) as client:
        client.request("GET", "/files/100b.bin", request_id="a")
        client.request("GET", "/elsewhere", request_id="b")
        assert len(client.receive(2)) == 2
        client.end()
        client.receive_until_end()
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{proxy.port}/files/100b.bin"], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and log_path.read_text().count("\n") < 4:
        time.sleep(0.05)
    lines = [ACCESS_LINE.match(line) for line in log_path.read_text().splitlines()]
    assert all(lines), log_path.read_text()
    by_target = {(m["kind"], m["target"]): m for m in lines}
    ok = by_target[("mux", "/files/100b.bin")]
    assert (ok["method"], ok["route"], ok["origin"], ok["status"], ok["bytes"], ok["error"]) == (
        "GET", "route[1]", nginx.address, "200", "100", "-",
    )
    missing = by_target[("mux", "/elsewhere")]
    assert (missing["status"], missing["route"], missing["error"]) == ("404", "-", "destination_not_found")
    stream = by_target[("stream", "/_mux")]
    assert stream["conn"] == ok["conn"] == missing["conn"]
    assert int(stream["bytes"]) > 100 + int(missing["bytes"])  # the whole outer body
    plain = by_target[("http", "/files/100b.bin")]
    assert (plain["status"], plain["bytes"], plain["origin"]) == ("200", "100", nginx.address)
    assert plain["conn"] != ok["conn"]
