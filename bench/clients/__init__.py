"""Load clients run as child processes (`python -m bench.clients.NAME`), each
printing one JSON result: muxload (the mux stream), h1rate (constant-rate
HTTP/1.1), idle (idle connections for scenario 3); pacing is their shared
open-loop timer."""
