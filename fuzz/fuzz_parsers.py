"""Coverage-guided fuzzing (atheris / libFuzzer) of muxproxy's parsers and mux session.

Strategy: the invariants are the ones of tests/core/test_fuzz.py, imported
from there so that both fuzzers hold the code to one contract; only the way
inputs are made differs (libFuzzer mutates bytes guided by the branches
they reach in proxy/, instead of hypothesis' generators).  One input is

    byte 0       which target: 0 inner-stream request parser, 1 outer request
                 parser, 2 origin response parser, 3 MuxSession
    byte 1       options: the parser limits, the response's request method,
                 whether the origin closed (EOF)
    bytes 2-3    where to split the payload into two reads (big-endian,
                 modulo its length + 1); for the session, the seed of the
                 fake origin's program
    bytes 4-     the payload: a request stream, or an origin's response bytes

and a failed invariant is an uncaught AssertionError, which libFuzzer
reports as a crash (the input is saved as crash-<sha1>).  httptools' C code
is not instrumented, so the guidance comes from the Python branches in
proxy/ only: see fuzz/README.md for what that means and what it found.

    python fuzz/fuzz_parsers.py -max_total_time=60            # fuzz, seeded from tests/core/corpus.py
    python fuzz/fuzz_parsers.py --keep-going -max_total_time=600
                                # record each distinct failure and go on
    python fuzz/fuzz_parsers.py --replay fuzz/corpus          # run saved inputs once, no atheris needed
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ("inner", "outer", "response", "session")
METHODS = (b"GET", b"HEAD", b"POST")
LIMITS = ({"max_head_size": 8192, "max_header_count": 100}, {"max_head_size": 128, "max_header_count": 4})
#: Default corpus directory: libFuzzer adds every input that reached new
#: branches here, so later runs start where earlier ones stopped.
CORPUS = ROOT / "fuzz" / "corpus"


def load(instrument: bool):
    """Import the code under test (instrumented for atheris when asked) and
    the invariants from the test suite."""
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["proxy"]):
            import proxy.core.http1.request_parser  # noqa: F401
            import proxy.core.http1.response_parser  # noqa: F401
            import proxy.core.mux.session  # noqa: F401
    from tests.core import test_fuzz

    return test_fuzz


def keep_going(one_input, artifacts: Path):
    """Wrap `one_input` so that a failed invariant is saved once per place
    and kind (finding-<hash>, with the message in finding-<hash>.txt) and the
    run goes on: a known finding must not hide the next one."""
    seen: set[str] = set()

    def wrapped(data: bytes) -> None:
        try:
            one_input(data)
        except AssertionError as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            message = str(exc).splitlines()[0] if str(exc) else ""
            kind = message.split("b'")[0].split('b"')[0][:60]  # the message without the bytes
            signature = f"{frame.filename}:{frame.lineno}: {kind}"
            if signature not in seen:
                seen.add(signature)
                name = "finding-" + hashlib.sha1(signature.encode()).hexdigest()[:12]
                (artifacts / name).write_bytes(data)
                (artifacts / f"{name}.txt").write_text(f"{signature}\n\n{exc}\n")
                print(f"\n#### new finding {name}: {signature}", flush=True)

    return wrapped


def make_one_input(test_fuzz):
    from tests.core.corpus import ResponseCase

    def one_input(data: bytes) -> None:
        if len(data) < 4:
            return
        target = TARGETS[data[0] % len(TARGETS)]
        options = data[1]
        split = int.from_bytes(data[2:4], "big")
        payload = data[4:]
        points = [split % (len(payload) + 1)]
        limits = LIMITS[options & 1]
        if target == "inner":
            test_fuzz.fuzz_request_parser(payload, points, limits, require_host=False)
        elif target == "outer":
            test_fuzz.fuzz_request_parser(payload, points, limits, require_host=True)
        elif target == "response":
            case = ResponseCase((METHODS[(options >> 1) % 3],), payload, eof=bool(options & 0x80))
            test_fuzz.fuzz_response_parser(case, points, limits)
        else:
            test_fuzz.fuzz_session(payload, [], session_program(split, options, len(payload)))

    return one_input


def session_program(seed: int, options: int, length: int) -> list:
    """A fake origin's program, as in test_fuzz.actions, from a seed; the
    input is fed in reads of a few sizes."""
    rng = random.Random(seed << 8 | options)
    program = []
    for _ in range(rng.randrange(31)):
        kind = rng.choice(("feed", "origin", "origin", "writable", "tick"))
        if kind == "feed":
            program.append(("feed", 0, 0))
        elif kind == "origin":
            program.append(("origin", rng.randrange(8), rng.randrange(6)))
        elif kind == "writable":
            program.append(("writable", rng.random() < 0.5, 0))
        else:
            program.append(("tick", rng.choice((0.5, 2.0, 6.0)), 0))
    return program


def write_seeds(directory: Path) -> int:
    """The hand-written corpus, one file per (target, message)."""
    from tests.core.corpus import REQUESTS, RESPONSES

    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, data in REQUESTS.items():
        for target in (0, 1, 3):
            (directory / f"seed-{TARGETS[target]}-{name}").write_bytes(bytes([target, 0, 0, 7]) + data)
            count += 1
    for name, case in RESPONSES.items():
        options = (METHODS.index(case.methods[0]) << 1) | (0x80 if case.eof else 0)
        (directory / f"seed-response-{name}").write_bytes(bytes([2, options, 0, 9]) + case.data)
        count += 1
    return count


def replay(paths: list[str]) -> None:
    """Run every input under the given files/directories once (to measure
    coverage, or to re-check a finding), without atheris; failed invariants
    are counted and the first of each kind printed."""
    one_input = make_one_input(load(instrument=False))
    files = []
    for path in map(Path, paths):
        files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".txt") if path.is_dir() else [path]
    failures: dict[str, int] = {}
    for file in files:
        try:
            one_input(file.read_bytes())
        except AssertionError as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{Path(frame.filename).name}:{frame.lineno}"
            if key not in failures:
                print(f"{file}: {key}: {str(exc)[:300]}")
            failures[key] = failures.get(key, 0) + 1
    print(f"replayed {len(files)} inputs, {sum(failures.values())} failed an invariant {failures or ''}")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--replay"]:
        replay(args[1:])
        return
    import atheris

    one_input = make_one_input(load(instrument=True))
    artifacts = ROOT / "fuzz" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    if "--keep-going" in args:
        args.remove("--keep-going")
        one_input = keep_going(one_input, artifacts)
    if not any(not arg.startswith("-") for arg in args):
        # No corpus directory given: use (and seed) the default one.
        if not CORPUS.exists():
            write_seeds(CORPUS)
        args.append(str(CORPUS))
    if not any(arg.startswith("-artifact_prefix=") for arg in args):
        args.insert(0, f"-artifact_prefix={artifacts}{os.sep}")
    atheris.Setup([sys.argv[0], *args], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
