"""muxproxy: a multiplexing reverse proxy."""

__version__ = "0.1.0"


def build() -> str:
    """Which build of the per-request path runs: "compiled" (mypyc C
    extensions, see setup.py) or "pure Python" (MUXPROXY_PURE_PYTHON=1, or
    no C compiler at install time)."""
    from proxy.core.mux import session

    return "pure Python" if session.__file__.endswith(".py") else "compiled"
