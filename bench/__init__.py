"""The muxproxy benchmark: `python -m bench` (see bench/README.md).

Modules import nothing heavy at package level: the load clients and helper
servers under bench/clients and bench/servers run as their own processes and
must start fast.
"""
