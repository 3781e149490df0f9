"""The benchmark's smoke test: `python -m bench --smoke` still runs end to end.

It runs every scenario in its tiny mode (one round, short loads, 100 idle
connections) in a subprocess, exactly as a user would, and checks that it
exits 0 and wrote a results file with every scenario's table and plot.  It
asserts nothing about timings: on a shared CI machine they mean nothing, and
the benchmark reports its targets instead of asserting them.

Deliberately not marked `slow`: it runs in the default suite (about a
minute), so the benchmark cannot rot unnoticed.  It needs the programs the
benchmark needs (nginx, haproxy, nghttpx, h2load, wrk); when one is missing
the benchmark says which and exits 2, and this test fails with that message.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The whole smoke run takes about a minute on a 2-core machine.
SMOKE_TIMEOUT = 180

SCENARIO_TABLES = {
    1: "| configuration | load | req/s |",
    2: "| client | load | time to finish |",
    3: "| proxy (idle state) | connections |",
    4: "| protocol | client → server |",
    5: "| configuration | client | req/s | p50 µs |",
}


def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
    )
    assert done.returncode == 0, f"python -m bench --smoke exited {done.returncode}:\n{done.stderr[-4000:]}"
    results = list(tmp_path.glob("smoke-*.md"))
    assert len(results) == 1, f"expected one results file in {tmp_path}, found {results}"
    text = results[0].read_text()
    assert "## Targets" in text
    # The header says how the floor and the mux load client were built (bench/compiled.py).
    assert re.search(r"^\| bare relay \(the floor\) \| (compiled|interpreted)", text, re.M)
    assert re.search(r"^\| mux load client \| (compiled|interpreted)", text, re.M)
    for number, table_head in SCENARIO_TABLES.items():
        assert f"## Scenario {number}:" in text, f"scenario {number} missing from the results"
        assert table_head in text, f"scenario {number}'s table missing from the results"
        assert (tmp_path / f"{results[0].stem}-scenario{number}.png").stat().st_size > 0
    # Scenario 1 says how busy the load core was beside each server's own CPU
    # (a figure only where the machine has a separate load core to pin to).
    header = "| configuration | load | req/s | × direct | server CPU µs/req | of it kernel | CPU % | load core % |"
    assert header in text
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    column = header.strip("|").split("|").index(" load core % ")
    rows = table.strip().splitlines()[2:]  # after the header's rest and the |---| line
    cells = [row.strip("|").split("|")[column].strip() for row in rows]
    pinned = "Pinning: server under test on core" in text
    assert cells and all(re.fullmatch(r"\d+ %", cell) if pinned else cell == "–" for cell in cells), cells
    # Both throughput targets are also compared on CPU per request, with a figure.
    capacity = re.findall(r"on CPU per request \(the peer's ÷ muxproxy's[^)]*\): (\S+)×", text)
    assert len(capacity) == 2 and all(re.fullmatch(r"\d+\.\d+", ratio) for ratio in capacity), capacity
    # Every measured row completed: a smoke run with failed requests is a broken benchmark.
    error_cells = re.findall(r"\| (\d+) \|$", text, re.M)
    assert error_cells and all(cell == "0" for cell in error_cells), "some measurement reported errors"
