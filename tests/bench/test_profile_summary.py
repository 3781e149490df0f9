"""bench/profile.py's reading of py-spy's raw output (no py-spy needed)."""

import os

from bench.procs import cpu_seconds, cpu_times
from bench.profile import cpu_line, function_name, summarise


def test_function_names_are_shortened_to_the_module():
    assert function_name("feed (/work/x/proxy/core/http1/response_parser.py:171)") == "feed (response_parser.py)"
    assert function_name("run (/usr/lib/python3.11/asyncio/runners.py:118)") == "run (asyncio/runners.py)"
    assert function_name("<module> (<frozen runpy>:88)") == "<module> (<frozen runpy>)"


def test_self_and_inclusive_shares(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "main (/a/cli.py:1);loop (/a/shell.py:5);feed (/a/parser.py:9) 3\n"
        "main (/a/cli.py:1);loop (/a/shell.py:5) 1\n"
        "\n"
    )
    text = summarise(raw, top=10)
    assert text.splitlines()[0] == "4 samples"
    own, anywhere = text.split("\ninclusive:\n")
    assert " 75.0 %  feed (parser.py)" in own and " 25.0 %  loop (shell.py)" in own
    assert "100.0 %  main (cli.py)" in anywhere and "100.0 %  loop (shell.py)" in anywhere
    assert " 75.0 %  feed (parser.py)" in anywhere


def test_cpu_per_request_is_split_into_user_space_and_kernel():
    assert cpu_line(0.3, 0.1, 10_000) == (
        "CPU per inner request (under the profiler): 40.0 µs = 30.0 user space + 10.0 kernel"
    )
    assert cpu_line(0.3, 0.1, 0) == "CPU per inner request: no requests completed"


def test_cpu_times_add_up_to_cpu_seconds():
    sum(range(2_000_000))  # some user time of our own
    user, kernel = cpu_times([os.getpid()])
    assert user > 0 and kernel >= 0
    assert abs((user + kernel) - cpu_seconds([os.getpid()])) < 0.05
    assert cpu_times([2**22 + 12345]) == (0.0, 0.0)  # a PID that does not exist counts nothing
