"""bench/micro.py: the socket-free timing of the sans-IO core runs and says what it timed."""

from bench.micro import ORIGIN_RESPONSE, bare_relay, inner_requests, main, measure
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
    assert set(figures) == {"inner parsing", "inner parsing and dispatch", "llhttp alone",
                            "origin response parsing", "answer", "bare relay"}
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


def test_command_line(capsys):
    assert main(["--batch", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sans-IO core, 3 inner requests per batch, best of 1 repeats")
    assert "origin response parsing" in out and "core in all" in out and "core over the bare relay" in out
