"""bench/profile.py's reading of py-spy's and perf's output (neither tool needed)."""

import argparse
import os

from bench.procs import cpu_seconds, cpu_times
from bench.profile import (
    binary_kind,
    compiled_function_name,
    cpu_line,
    function_name,
    load_command,
    perf_script_samples,
    summarise,
    summarise_callers,
    summarise_perf,
)


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
    assert cpu_line(0.3, 0.1, 10_000, False, unit="request") == "CPU per request: 40.0 µs = 30.0 user space + 10.0 kernel"


def test_plain_load_is_wrk_against_the_proxy_and_the_default_is_the_mux_client():
    args = argparse.Namespace(plain=100, path="/10k", connections=1, in_flight=100)
    wrk = load_command(args, 8123)(7.6)
    assert wrk[0].endswith("wrk")
    assert wrk[1:] == ["-t1", "-c100", "-d8s", "http://127.0.0.1:8123/10k"]  # wrk takes whole seconds
    mux = load_command(argparse.Namespace(plain=0, path="/100b", connections=10, in_flight=10), 8123)(3.0)
    assert mux[-2:] == ["--duration", "3.0"]
    for flag, value in (("--port", "8123"), ("--path", "/100b"), ("--connections", "10"), ("--in-flight", "10")):
        assert mux[mux.index(flag) + 1] == value


def test_cpu_times_add_up_to_cpu_seconds():
    sum(range(2_000_000))  # some user time of our own
    user, kernel = cpu_times([os.getpid()])
    assert user > 0 and kernel >= 0
    assert abs((user + kernel) - cpu_seconds([os.getpid()])) < 0.05
    assert cpu_times([2**22 + 12345]) == (0.0, 0.0)  # a PID that does not exist counts nothing


PERF_REPORT = """\
# Samples: 7K of event 'cpu-clock:pppH'
#
# Overhead  Shared Object                                 Symbol
# ........  ............................................  ...............
#
    30.00%  [kernel.kallsyms]                             [k] _raw_spin_unlock_irqrestore
    25.00%  libpython3.11.so.1.0                          [.] _PyObject_Malloc
    15.00%  proxy__mypyc.cpython-311-x86_64-linux-gnu.so  [.] CPyDef_forwarding___inner_message
    10.00%  parser.cpython-311-x86_64-linux-gnu.so        [.] llhttp__internal__run
     5.00%  libpython3.11.so.1.0                          [.] tupledealloc
     5.00%  loop.cpython-311-x86_64-linux-gnu.so          [.] uv__io_poll
     5.00%  libc.so.6                                     [.] __memmove_avx512_unaligned_erms
     5.00%  [kernel.kallsyms]                             [k] tcp_sendmsg
"""


def test_perf_shares_by_binary_and_by_function():
    text = summarise_perf(PERF_REPORT, top=3)
    by_binary, by_function = text.split("\nself, by function:\n")
    assert by_binary.splitlines() == [
        "by binary:",
        " 35.0 %  kernel",
        " 30.0 %  Python runtime",
        " 15.0 %  muxproxy, compiled",
        " 10.0 %  httptools (llhttp)",
        "  5.0 %  uvloop (libuv)",
        "  5.0 %  libc",
    ]
    assert by_function.splitlines() == [
        " 30.0 %  _raw_spin_unlock_irqrestore  ([kernel.kallsyms])",
        " 25.0 %  _PyObject_Malloc  (libpython3.11.so.1.0)",
        " 15.0 %  CPyDef_forwarding___inner_message  (proxy__mypyc.cpython-311-x86_64-linux-gnu.so)",
    ]
    assert summarise_perf("# nothing sampled\n", top=3) == "no samples"


def test_binaries_are_named_by_their_part_of_the_stack():
    assert binary_kind("python3.11") == "Python runtime"
    assert binary_kind("response_parser.cpython-311-x86_64-linux-gnu.so") != "httptools (llhttp)"  # muxproxy's shim
    assert binary_kind("url_parser.cpython-311-x86_64-linux-gnu.so") == "httptools (llhttp)"
    assert binary_kind("[vdso]") == "[vdso]"


# `perf script -F ip,sym,dso` of three samples: two stacks through the
# compiled code (one ending in the kernel, one in the allocator, with an
# inlined frame and a runtime helper), one in the event loop alone.
PERF_SCRIPT = """\

\t ffffffff8a1b2c3d tcp_sendmsg ([kernel.kallsyms])
\t ffffffff8a000100 do_syscall_64 ([kernel.kallsyms])
\t           c70f5 __pyx_f_6uvloop_4loop_8UVStream_write (/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so)
\t          158cc7 PyObject_VectorcallMethod (/usr/lib/libpython3.11.so.1.0)
\t           c7533 CPyDef_origin___HttpExchange___attach (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\t           eb110 CPyDef_origin___OriginPool___start (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\t           f944e CPyDef_client___ClientConnection___data_received (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\t           f9c51 CPyPy_client___ClientConnection___data_received (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\tffffffffffffffff [unknown] ([unknown])

\t          16db75 pymalloc_alloc (inlined)
\t          16db75 _PyObject_Malloc (/usr/lib/libpython3.11.so.1.0)
\t           d47a8 CPyTagged_Add (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\t           d47a8 CPyDef_session___MuxSession____response_left (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)
\t           f0baa CPyDef_origin___OriginConnection___data_received (/work/proxy__mypyc.cpython-311-x86_64-linux-gnu.so)

\t          1383f8 uv__io_poll (/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so)
"""


def test_mypyc_names_are_read_as_module_class_and_function():
    assert compiled_function_name("CPyDef_origin___HttpExchange___attach") == "origin.HttpExchange.attach"
    assert compiled_function_name("CPyDef_client___ClientConnection____drain") == "client.ClientConnection._drain"
    assert compiled_function_name("CPyPy_forwarding___inner_message") == "forwarding.inner_message"
    assert compiled_function_name("CPyTagged_Add") is None  # a runtime helper, not muxproxy's
    assert compiled_function_name("_PyObject_Malloc") is None


def test_perf_script_stacks_are_read_innermost_first_with_inlined_frames_placed():
    samples = perf_script_samples(PERF_SCRIPT)
    assert len(samples) == 3
    assert samples[0][0] == ("tcp_sendmsg", "[kernel.kallsyms]")
    assert samples[1][0] == ("pymalloc_alloc", "/usr/lib/libpython3.11.so.1.0")  # inlined into _PyObject_Malloc
    assert samples[2] == [("uv__io_poll", "/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so")]


def test_samples_are_charged_to_the_innermost_compiled_function():
    text = summarise_callers(PERF_SCRIPT, top=10, cpu_us_per_request=12.0)
    own, anywhere = text.split("\ninclusive (the function anywhere on the stack):\n")
    rows = {line.split()[-1]: line.split() for line in own.splitlines()[4:]}
    # The write's kernel time is attach's, not the pool's or the connection's;
    # the allocator's user time is _response_left's, not CPyTagged_Add's.
    assert rows["origin.HttpExchange.attach"] == ["33.3", "33.3", "0.0", "4.00", "origin.HttpExchange.attach"]
    assert rows["session.MuxSession._response_left"] == ["33.3", "0.0", "33.3", "4.00", "session.MuxSession._response_left"]
    assert "(no compiled function on the stack: the event loop's own work)" in own
    inclusive = {line.split()[-1]: line.split()[:2] for line in anywhere.splitlines()[1:]}
    assert inclusive["origin.OriginPool.start"] == ["33.3", "4.00"]
    # Its wrapper (CPyPy_) and its body (CPyDef_) are on that stack: one function, counted once.
    assert inclusive["client.ClientConnection.data_received"] == ["33.3", "4.00"]
    assert inclusive["origin.OriginConnection.data_received"] == ["33.3", "4.00"]
    assert summarise_callers("", top=3, cpu_us_per_request=None) == "no samples with call stacks"
    assert "      -  origin.HttpExchange.attach" in summarise_callers(PERF_SCRIPT, top=3, cpu_us_per_request=None)
