"""The five scenarios, by number (see bench/README.md for what each measures)."""

from bench.scenarios import browser, idle, latency, throughput, wire

SCENARIOS = {
    scenario.number: scenario
    for scenario in (throughput.SCENARIO, browser.SCENARIO, idle.SCENARIO, wire.SCENARIO, latency.SCENARIO)
}
