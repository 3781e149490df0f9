"""bench/micro.py: the socket-free timing of the sans-IO core runs and says what it timed."""

from bench import micro
from bench.compiled import floor_relay
from bench.micro import COMPILED_RELAY, ORIGIN_RESPONSE, bare_relay, inner_requests, main, measure, origin_exchange
from proxy.core.http1.messages import Body, EndOfMessage, RequestHead, ResponseHead
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.response_parser import ResponseParser


def test_the_timed_messages_are_valid_and_complete():
    # A stage that timed a refusal would time the wrong path.
    parser = RequestParser(max_head_size=16384, max_header_count=100, require_host=False)
    heads = [event for event in parser.feed(inner_requests(3)) if isinstance(event, RequestHead)]
    assert [head.request_id for head in heads] == [b"0", b"1", b"2"]
    assert all(head.rejection is None for head in heads)
    origin = ResponseParser(max_head_size=16384, max_header_count=100)
    origin.start(b"GET")
    head, body, end = origin.feed(ORIGIN_RESPONSE)
    assert isinstance(head, ResponseHead) and head.status == 200 and head.keep_alive
    assert isinstance(body, Body) and len(body.data) == 100 and isinstance(end, EndOfMessage)
    assert origin.reusable


def test_every_stage_is_timed():
    figures = measure(batch=4, repeats=1, rounds_per_repeat=2)
    compiled = {COMPILED_RELAY} if floor_relay().compiled else set()
    assert set(figures) == {"inner parsing", "inner parsing and dispatch", "llhttp alone",
                            "origin response parsing", "answer", "origin exchange", "bare relay"} | compiled
    assert all(0 < value < 10_000 for value in figures.values())


def test_the_bare_relay_stage_answers_every_request_in_one_chunk():
    # Timed against muxproxy's core, it must do the same work each round
    # (the same three requests, ids 0-2, every round).
    written = []

    class Recording:
        def write(self, data):
            written.append(data)

    round_ = bare_relay(3, Recording())
    round_()
    round_()
    assert len(written) == 2
    size_line, _, rest = written[1].partition(b"\r\n")
    assert int(size_line, 16) == len(rest) - 2 and rest.endswith(b"\r\n")
    assert rest.count(b"HTTP/1.1 200 OK\r\nContent-Location: /100b\r\n") == 3
    assert [rest.count(b"Request-Id: %d\r\n" % n) for n in (0, 1, 2)] == [1, 1, 1]
    assert rest.count(b"x" * 100) == 3


def test_the_origin_exchange_stage_writes_every_request_and_reuses_its_connections():
    # The stage raises if an exchange is not completed and released; here,
    # also what went to the origin: the same three heads each round, on the
    # same three connections.
    written = []

    class Recording:
        def write(self, data):
            written.append((id(self), data))

        def set_write_buffer_limits(self, high): ...
        def pause_reading(self): ...
        def resume_reading(self): ...
        def abort(self): ...

    round_ = origin_exchange(3, Recording)
    round_()
    round_()
    assert len(written) == 6 and len({transport for transport, _ in written}) == 3
    for _, head in written:
        assert head.startswith(b"GET /100b HTTP/1.1\r\nHost: ") and head.endswith(b"\r\nVia: 1.1 muxproxy\r\n\r\n")
        assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in head


def test_command_line(capsys, monkeypatch):
    # The command sets the collector as the server does; here that would
    # outlive the test, so the call is recorded instead.
    tuned = []
    monkeypatch.setattr(micro, "tune_gc", lambda: tuned.append(True))
    assert main(["--batch", "3", "--repeats", "1"]) == 0
    assert tuned == [True]
    out = capsys.readouterr().out
    assert out.startswith("sans-IO core and the shell's origin side, 3 inner requests per batch, best of 1 repeats")
    assert "origin response parsing" in out and "core in all" in out and "core over the bare relay" in out
    assert "the shell's origin side (origin exchange - origin response parsing)" in out


def test_the_bare_relay_stage_uses_only_the_relay_module_it_is_given():
    # The compiled stage must time the compiled relay's classes, every one.
    import types

    from bench.servers import baremux

    made = []

    def recorded(cls):
        """A subclass of `cls` that notes each instance made."""

        def __init__(self, *args):
            made.append(cls.__name__)
            cls.__init__(self, *args)

        return type(cls.__name__, (cls,), {"__init__": __init__})

    module = types.ModuleType("recorded_relay")
    for name in ("Relay", "OriginConnection", "ClientStream"):
        setattr(module, name, recorded(getattr(baremux, name)))
    bare_relay(2, relay_module=module)()
    assert sorted(set(made)) == ["ClientStream", "OriginConnection", "Relay"]
