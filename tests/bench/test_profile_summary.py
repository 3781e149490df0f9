"""bench/profile.py's reading of py-spy's raw output (no py-spy needed)."""

from bench.profile import function_name, summarise


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
