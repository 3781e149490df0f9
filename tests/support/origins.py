"""Real origin servers for integration tests, each a child process on loopback.

`NginxOrigin` runs Debian's nginx (/usr/sbin/nginx) in the foreground
(`daemon off`) with every path it writes (pid, logs, temp dirs) under one
directory, so a test run never touches /etc, /var or /run.  Its docroot holds
files of known, deterministic content (`NginxOrigin.FILES`) and it has a few
locations the tests read back: /headers (the request fields that reached the
origin), /nocontent (204) and /nginx_status (stub_status, to count the
connections nginx accepted).

`Http10Origin` runs `python -m http.server --protocol HTTP/1.0`: an origin
that speaks HTTP/1.0 only and closes the connection after every response.

Both pick their port at run time (`free_port`), wait until it accepts
connections, and are stopped by PID (terminate, then kill) in `stop()`.  A
missing nginx binary is an error, never a skip: the integration suite means
to run against real servers.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.harness import free_port, wait_for_port

NGINX_BINARY = Path("/usr/sbin/nginx")

#: Seconds to wait for an origin to accept connections, and for it to exit.
ORIGIN_START_TIMEOUT = 10.0
ORIGIN_STOP_TIMEOUT = 10.0


#: What the `every_kind_of_origin` proxy's directory origin serves at
#: /files/page.txt (tests/integration/conftest.py).
DIRECTORY_PAGE = b"from the directory origin\n"


def deterministic_bytes(size: int, seed: str) -> bytes:
    """`size` bytes that depend only on (size, seed): a SHA-256 counter stream,
    so a shifted, repeated or truncated slice never looks right by accident."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _stop_process(process: subprocess.Popen | None) -> None:
    """Terminate a child by its PID, kill it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(ORIGIN_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_started(process: subprocess.Popen, port: int, name: str, log_path: Path | None) -> None:
    """Wait for `port`; if the child died or never listened, fail with its log."""
    try:
        wait_for_port(port, timeout=ORIGIN_START_TIMEOUT)
    except TimeoutError:
        _stop_process(process)
        log = log_path.read_text(errors="replace") if log_path is not None and log_path.exists() else ""
        raise RuntimeError(f"{name} did not start on port {port} (exit code {process.returncode}):\n{log}") from None
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited at once with code {process.returncode}")


class NginxOrigin:
    """nginx serving a docroot of known files on 127.0.0.1:<free port>."""

    #: docroot file name -> size; the content is deterministic_bytes(size, name).
    FILE_SIZES = {
        "100b.bin": 100,
        "10k.bin": 10 * 1024,
        "100k.bin": 100 * 1024,
        "1m.bin": 1024 * 1024,
    }
    INDEX = b"<!doctype html>\n<title>muxproxy test origin</title>\n<p>nginx index</p>\n"

    #: The body nginx returns for /headers: one line per field it received
    #: (an absent field gives an empty value).
    HEADERS_TEMPLATE = (
        "host=$host\\n"
        "xff=$http_x_forwarded_for\\n"
        "xfp=$http_x_forwarded_proto\\n"
        "xfh=$http_x_forwarded_host\\n"
        "forwarded=$http_forwarded\\n"
        "via=$http_via\\n"
        "cookie=$http_cookie\\n"
        "connection=$http_connection\\n"
        "user_agent=$http_user_agent\\n"
        "request_id=$http_request_id\\n"
        "uri=$request_uri\\n"
    )

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.docroot = self.base_dir / "docroot"
        self.conf_path = self.base_dir / "nginx.conf"
        self.error_log = self.base_dir / "logs" / "error.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.files: dict[str, bytes] = {}

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        return f"<NginxOrigin 127.0.0.1:{self.port} {state}>"

    def __enter__(self) -> "NginxOrigin":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def file(self, name: str) -> bytes:
        """Content of a docroot file, as nginx serves it."""
        return self.files[name]

    def start(self) -> None:
        if not NGINX_BINARY.exists():
            raise RuntimeError(f"{NGINX_BINARY} not found: install Debian's nginx to run the integration tests")
        self._write_docroot()
        self.port = free_port()
        self.conf_path.write_text(self._config_text())
        self.process = subprocess.Popen(
            [str(NGINX_BINARY), "-p", str(self.base_dir), "-c", str(self.conf_path), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_started(self.process, self.port, "nginx", self.error_log)

    def stop(self) -> None:
        _stop_process(self.process)

    def _write_docroot(self) -> None:
        for sub in ("docroot", "logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.docroot / "index.html").write_bytes(self.INDEX)
        self.files = {"index.html": self.INDEX}
        for name, size in self.FILE_SIZES.items():
            content = deterministic_bytes(size, name)
            (self.docroot / name).write_bytes(content)
            self.files[name] = content

    def _config_text(self) -> str:
        base = self.base_dir
        # As root, nginx would hand its workers to "nobody", who may not read
        # a pytest tmp dir (mode 0700): keep them as the current user.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {base}/nginx.pid;
error_log {self.error_log} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {base}/tmp/client_body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    types {{
        text/html html;
        application/octet-stream bin;
    }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 65;

    server {{
        listen 127.0.0.1:{self.port};
        server_name localhost;
        root {self.docroot};
        index index.html;

        location = /headers {{
            return 200 "{self.HEADERS_TEMPLATE}";
        }}
        location = /nocontent {{
            return 204;
        }}
        location = /nginx_status {{
            stub_status;
        }}
    }}
}}
"""

    def accepted_connections(self) -> int:
        """Connections nginx has accepted so far (stub_status "accepts"),
        asked directly, not through the proxy; this query itself counts one."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /nginx_status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        match = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", data)
        if match is None:
            raise RuntimeError(f"unexpected stub_status answer {data!r}")
        return int(match.group(1))


class Http10Origin:
    """`python -m http.server --protocol HTTP/1.0` serving a few known files."""

    FILE_SIZES = {
        "small.txt": 64,
        "large.bin": 200 * 1024,
    }

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.directory = self.base_dir / "http10"
        self.log_path = self.base_dir / "http10.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.files: dict[str, bytes] = {}
        self._log = None

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        return f"<Http10Origin 127.0.0.1:{self.port} {state}>"

    def __enter__(self) -> "Http10Origin":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def file(self, name: str) -> bytes:
        return self.files[name]

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, size in self.FILE_SIZES.items():
            content = deterministic_bytes(size, name)
            (self.directory / name).write_bytes(content)
            self.files[name] = content
        self.port = free_port()
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "--protocol",
                "HTTP/1.0",
                "--bind",
                "127.0.0.1",
                str(self.port),
                "--directory",
                str(self.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_started(self.process, self.port, "http.server", self.log_path)
        except BaseException:
            self._close_log()
            raise

    def stop(self) -> None:
        _stop_process(self.process)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
