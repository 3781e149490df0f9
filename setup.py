"""Build muxproxy, with its per-request path compiled by mypyc when it can be.

The modules in COMPILED are ordinary type-annotated Python.  mypyc (part of
mypy) compiles that same source to C extension modules: classes become C
structs, calls between them C calls, so each inner request costs about a
quarter less CPU (README.md, "The compiled build").  There is one source and
one behaviour; the compiled modules also check their annotations at run time.

Python only, with the same behaviour and about a third more CPU per request:
    MUXPROXY_PURE_PYTHON=1 python3 -m pip install .
A build that cannot compile (no C compiler) installs Python only as well:
each extension is optional, and `muxproxy --version` says which one runs.
"""

import os

from setuptools import setup

#: The sans-IO core and the shell's per-request path.  The rest (config,
#: CLI, service, admin, metrics, files) runs once per process or per scrape
#: and stays interpreted.
COMPILED = [
    "proxy/core/forwarding.py",
    "proxy/core/pool.py",
    "proxy/core/record.py",
    "proxy/core/routing.py",
    "proxy/core/http1/fields.py",
    "proxy/core/http1/messages.py",
    "proxy/core/http1/request_parser.py",
    "proxy/core/http1/response_parser.py",
    "proxy/core/http1/serialize.py",
    "proxy/core/mux/commands.py",
    "proxy/core/mux/outer.py",
    "proxy/core/mux/session.py",
    "proxy/shell/client.py",
    "proxy/shell/flow.py",
    "proxy/shell/mux.py",
    "proxy/shell/origin.py",
    "proxy/shell/plain.py",
    "proxy/shell/timers.py",
    "proxy/shell/tls.py",  # its connection class subclasses ClientConnection
    "proxy/shell/upstream.py",
]


def compiled_extensions() -> list:
    if os.environ.get("MUXPROXY_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify

    extensions = mypycify(COMPILED, opt_level="3", group_name="proxy")
    for extension in extensions:
        extension.optional = True  # no compiler: install the Python modules
    return extensions


setup(ext_modules=compiled_extensions())
