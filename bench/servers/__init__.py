"""Helper servers run as child processes (`python -m bench.servers.NAME`):
nullmux (the mux client's ceiling), slow_origin (scenario 2), relay (the byte
counter of scenario 4)."""
