"""muxproxy: a multiplexing reverse proxy."""

__version__ = "0.1.0"
