"""The servers of the benchmark: origins, the proxies under test, helpers.

Strategy: each server is a `Process` (procs.py) started from a config file
rendered from the templates in bench/configs/ (string.Template, so every
setting can be read there, not in code) into its own directory under the run
directory, listening on ports the kernel picked.  `start_servers` starts a
group and stops all of them, by PID, however the block is left.

Placement (when the machine has two cores): the server under test on the
server core, origins and helpers on the load core with the load generators.
The scenario decides which role each server has.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from string import Template
from typing import Iterator

from bench.compiled import floor_relay
from bench.prerequisites import program
from bench.procs import START_TIMEOUT, Process, ProcessFailed, free_port

CONFIGS = Path(__file__).resolve().parent / "configs"
REPO = Path(__file__).resolve().parent.parent

#: Files the nginx origin serves: URL path -> size in bytes.
ORIGIN_FILES = {"/100b": 100, "/10k": 10 * 1024}


def render(template: str, destination: Path, **values: object) -> Path:
    text = Template((CONFIGS / template).read_text()).substitute(**{key: str(value) for key, value in values.items()})
    destination.write_text(text)
    return destination


def _nginx_user() -> str:
    # As root, nginx hands its worker to "nobody", who may not read the run
    # directory: keep the worker as the current user.
    return "user root root;" if os.geteuid() == 0 else ""


class Server:
    """A named server process with its ports; subclasses write their config."""

    def __init__(self, name: str, run_dir: Path, core: int | None) -> None:
        self.name = name
        self.dir = run_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.core = core
        self.port = free_port()
        self.process: Process | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} 127.0.0.1:{self.port} core={self.core}>"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = Process(self.name, self.argv(), core=self.core, log_path=self.dir / "output.log", cwd=REPO)
        self.process.start(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Front(Server):
    """A server in front of the origin listening on `origin_port`."""

    def __init__(self, name: str, run_dir: Path, core: int | None, origin_port: int) -> None:
        super().__init__(name, run_dir, core)
        self.origin_port = origin_port


class NginxOrigin(Server):
    """nginx serving ORIGIN_FILES (bench/configs/nginx-origin.conf)."""

    def argv(self) -> list[str]:
        docroot = self.dir / "docroot"
        (self.dir / "tmp").mkdir(exist_ok=True)
        docroot.mkdir(exist_ok=True)
        for path, size in ORIGIN_FILES.items():
            (docroot / path.lstrip("/")).write_bytes(bytes(48 + index % 64 for index in range(size)))
        conf = render(
            "nginx-origin.conf",
            self.dir / "nginx.conf",
            user_directive=_nginx_user(),
            run_dir=self.dir,
            port=self.port,
            docroot=docroot,
        )
        return [program("nginx"), "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]


class NginxProxy(Front):
    """nginx as an HTTP/1.1 reverse proxy (bench/configs/nginx-proxy.conf)."""

    def argv(self) -> list[str]:
        (self.dir / "tmp").mkdir(exist_ok=True)
        conf = render(
            "nginx-proxy.conf",
            self.dir / "nginx.conf",
            user_directive=_nginx_user(),
            run_dir=self.dir,
            port=self.port,
            origin_port=self.origin_port,
        )
        return [program("nginx"), "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]


class HAProxy(Front):
    """HAProxy with an HTTP/1.1 front (`port`) and an h2c front (`h2_port`) (bench/configs/haproxy.cfg)."""

    def __init__(self, name: str, run_dir: Path, core: int | None, origin_port: int) -> None:
        super().__init__(name, run_dir, core, origin_port)
        self.h2_port = free_port()

    def argv(self) -> list[str]:
        conf = render(
            "haproxy.cfg", self.dir / "haproxy.cfg", h1_port=self.port, h2_port=self.h2_port, origin_port=self.origin_port
        )
        return [program("haproxy"), "-db", "-f", str(conf)]


class Nghttpx(Front):
    """nghttpx, h2c in front, HTTP/1.1 to the origin (bench/configs/nghttpx.conf)."""

    def argv(self) -> list[str]:
        conf = render("nghttpx.conf", self.dir / "nghttpx.conf", run_dir=self.dir, port=self.port, origin_port=self.origin_port)
        return [program("nghttpx"), f"--conf={conf}"]


class MuxProxy(Front):
    """muxproxy from this repository (bench/configs/muxproxy.toml)."""

    def argv(self) -> list[str]:
        conf = render("muxproxy.toml", self.dir / "muxproxy.toml", port=self.port, origin_port=self.origin_port)
        return [sys.executable, "-m", "proxy", "--config", str(conf)]


class NullMux(Server):
    """bench/servers/nullmux.py: the mux load client's ceiling."""

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.servers.nullmux", "--port", str(self.port)]


class BareMux(Front):
    """bench/servers/baremux.py: the mux design's floor, in front of `origin_port`,
    compiled when muxproxy's build is (bench/compiled.py)."""

    def argv(self) -> list[str]:
        return floor_relay().argv("--port", str(self.port), "--origin-port", str(self.origin_port))


class SlowOrigin(Server):
    """bench/servers/slow_origin.py: every response after `delay` seconds."""

    def __init__(self, name: str, run_dir: Path, core: int | None, delay: float) -> None:
        super().__init__(name, run_dir, core)
        self.delay = delay

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.servers.slow_origin", "--port", str(self.port), "--delay", str(self.delay)]


class Relay(Server):
    """bench/servers/relay.py: counts the bytes between clients and `target_port`."""

    def __init__(self, name: str, run_dir: Path, core: int | None, target_port: int) -> None:
        super().__init__(name, run_dir, core)
        self.target_port = target_port

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.servers.relay", "--port", str(self.port), "--to", str(self.target_port)]

    def start(self) -> None:
        self.process = Process(
            self.name, self.argv(), core=self.core, log_path=self.dir / "output.log", cwd=REPO, interactive=True
        )
        self.process.start()
        if self.process.read_line(START_TIMEOUT) != "ready":
            raise ProcessFailed(f"{self.name} did not start:\n{self.process.log_tail()}")

    def take_counts(self) -> dict[str, int]:
        """Bytes each way since the last call, once the relayed connections have closed."""
        self.process.send_line("report")
        return json.loads(self.process.read_line(START_TIMEOUT))


@contextlib.contextmanager
def start_servers(*servers: Server) -> Iterator[None]:
    """Start `servers` in order; stop every one that started, in reverse, on the way out."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
            server.start()
        yield
