"""Transcripts of the mux session: facts in, exact commands and bytes out.

No sockets, no event loop: time is a fake clock, origins are the test
calling `response_*`, and the client is `take_output()` read back with the
independent wire reader from tests/support/muxwire.py.
"""

from __future__ import annotations

import gzip
import sys
import zlib

import pytest

from proxy.core.forwarding import ClientInfo
from proxy.core.http1.serialize import UNCOPIED_PIECE
from proxy.core.http1.messages import FRAMING_CHUNKED, FRAMING_CLOSE, FRAMING_LENGTH, FRAMING_NONE, ResponseHead
from proxy.core.mux.commands import (
    CancelExchange,
    EndOuter,
    ForwardRequest,
    InnerCompleted,
    PauseOrigin,
    PauseReading,
    ResumeOrigin,
    ResumeReading,
)
from proxy.core.mux.session import FEED_SLICE, InnerState, MuxLimits, MuxSession
from proxy.core.routing import Route, RouteTable, Timeouts
from proxy.errors import OriginReadTimeout, OriginResponseIncomplete
from tests.support.muxwire import MuxReader

TIMEOUTS = Timeouts(5, 60, 300)


def route(prefix: bytes, origin: str, hosts=(), name="route[1]") -> Route:
    return Route(name, origin, prefix, frozenset(hosts), (), False, "preserve", TIMEOUTS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Transcript:
    """A session plus helpers to drive it and read what it produced."""

    def __init__(self, gzip_response=False, gzip_request=False, routes=None, head_ids=(), **limits) -> None:
        self.clock = Clock()
        self.session = MuxSession(
            limits=MuxLimits(**limits),
            routes=RouteTable(routes or [route(b"/", "app"), route(b"/other", "other", name="route[2]")]),
            client=ClientInfo(b"10.0.0.7", b"http", b"muxproxy"),
            outer_host=b"example.com",
            inherited={b"cookie": b"session=1"},
            proxy_name=b"muxproxy",
            gzip_response=gzip_response,
            gzip_request=gzip_request,
            clock=self.clock,
        )
        self.head_ids = set(head_ids)
        self.reader = MuxReader(lambda r: r.request_id in self.head_ids, gzip=gzip_response)

        self.taken: list[bytes] = []  # output the "shell" took, not yet read

    def settle(self) -> list:
        """Do what the shell does after every event: run the commands and
        take the output, again while taking it lets the session go on."""
        commands = []
        while True:
            commands += self.session.take_commands()
            data = self.session.take_output()
            if data:
                self.taken.append(data)
            if not self.session.commands:
                return commands

    def send(self, data: bytes) -> list:
        self.session.receive_data(data)
        return self.settle()

    def forwarded(self, commands) -> dict[int, ForwardRequest]:
        return {c.stream_id: c for c in commands if isinstance(c, ForwardRequest)}

    def take(self) -> bytes:
        """All output so far that the test has not looked at."""
        data = b"".join(self.taken) + self.session.take_output()
        self.taken.clear()
        return data

    def responses(self):
        return self.reader.feed(self.take())

    def respond(self, stream_id: int, status=200, body=b"", headers=(), framing=None):
        headers = list(headers)
        if framing is None:
            framing = FRAMING_LENGTH
            headers.append((b"Content-Length", str(len(body)).encode()))
        head = ResponseHead(status, b"OK", b"1.1", headers, framing, len(body) if framing == FRAMING_LENGTH else -1, True)
        self.session.response_started(stream_id, head)
        if body:
            self.session.response_data(stream_id, body)
        self.session.response_ended(stream_id)
        return self.settle()


def get(target: str, request_id: str | None = None, extra: str = "") -> bytes:
    rid = f"Request-Id: {request_id}\r\n" if request_id else ""
    return f"GET {target} HTTP/1.1\r\n{rid}{extra}\r\n".encode()


def kinds(commands) -> list[str]:
    return [type(c).__name__ for c in commands]


# --- forwarding and correlation ---------------------------------------------------


def test_inner_request_is_forwarded_rewritten_with_inherited_fields():
    t = Transcript()
    commands = t.send(get("/a?x=1", "r1", "Cookie: mine=2\r\n") + get("/b"))
    forwarded = t.forwarded(commands)
    assert list(forwarded) == [1, 2]
    first = forwarded[1].request
    assert first.method == b"GET" and first.target == b"/a?x=1" and first.host == b"example.com"
    assert (b"Cookie", b"mine=2") in first.headers  # the inner request's own cookie wins
    assert (b"cookie", b"session=1") not in first.headers
    assert (b"cookie", b"session=1") in forwarded[2].request.headers  # inherited when absent
    assert (b"Via", b"1.1 muxproxy") in first.proxy_fields.fields
    assert (b"X-Forwarded-For", b"10.0.0.7") in first.proxy_fields.fields
    assert not any(name.lower() == b"via" for name, _ in first.headers)  # sent once, after the client's
    assert first.idempotent and first.body is None


def test_responses_leave_in_completion_order_tagged():
    t = Transcript()
    t.send(get("/slow", "1") + get("/fast", "2"))
    t.respond(2, body=b"fast")
    t.respond(1, body=b"slow")
    got = t.responses()
    assert [(r.content_location, r.request_id, r.body) for r in got] == [
        ("/fast", "2", b"fast"),
        ("/slow", "1", b"slow"),
    ]
    assert all(r.header("Content-Length") for r in got)


def test_same_target_told_apart_by_request_id():
    t = Transcript()
    t.send(get("/same", "a") + get("/same", "b"))
    t.respond(2, body=b"B")
    t.respond(1, body=b"A")
    assert [(r.request_id, r.body) for r in t.responses()] == [("b", b"B"), ("a", b"A")]


def test_origin_correlation_fields_are_renamed():
    t = Transcript()
    t.send(get("/x", "mine"))
    t.respond(1, body=b"x", headers=[(b"Content-Location", b"/elsewhere"), (b"Request-Id", b"theirs")])
    (response,) = t.responses()
    assert response.content_location == "/x" and response.request_id == "mine"
    assert response.header("Origin-Content-Location") == "/elsewhere"
    assert response.header("Origin-Request-Id") == "theirs"
    assert [name for name, _ in response.headers].count("Content-Location") == 1


def test_inner_completed_reports_each_request_once():
    t = Transcript()
    t.send(get("/a"))
    commands = t.respond(1, status=201, body=b"12345")
    (done,) = [c for c in commands if isinstance(c, InnerCompleted)]
    assert (done.stream_id, done.method, done.target, done.route, done.status, done.body_bytes, done.error) == (
        1, b"GET", b"/a", "route[1]", 201, 5, "",
    )


def test_empty_lines_between_inner_requests_are_ignored():
    t = Transcript()
    commands = t.send(b"\r\n" + get("/a") + b"\r\n\r\n" + get("/b") + b"\r\n")
    assert list(t.forwarded(commands)) == [1, 2]


def test_byte_by_byte_gives_the_same_requests():
    stream = get("/a", "1") + b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + get("/c")
    whole = Transcript()
    expected = [(c.stream_id, c.request.target, c.request.body) for c in whole.forwarded(whole.send(stream)).values()]
    single = Transcript()
    got = []
    for i in range(len(stream)):
        got += [(c.stream_id, c.request.target, c.request.body) for c in single.forwarded(single.send(stream[i : i + 1])).values()]
    assert got == expected == [(1, b"/a", None), (2, b"/b", b"abc"), (3, b"/c", None)]


def test_request_body_is_buffered_and_sent_with_a_length():
    t = Transcript()
    commands = t.send(b"POST /f HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello" + get("/g"))
    forwarded = t.forwarded(commands)
    assert forwarded[1].request.body == b"hello" and forwarded[1].request.content_length == 5
    # Expect is handled here, never forwarded; the body is not the next request.
    assert not any(name.lower() == b"expect" for name, _ in forwarded[1].request.headers)
    assert forwarded[2].request.target == b"/g"
    assert not forwarded[1].request.idempotent


def test_head_response_has_no_body_but_keeps_its_length():
    t = Transcript(head_ids={"h"})
    t.send(b"HEAD /x HTTP/1.1\r\nRequest-Id: h\r\n\r\n")
    head = ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"1234")], FRAMING_NONE, -1, True)
    t.session.response_started(1, head)
    t.session.response_ended(1)
    raw = t.session.take_output()
    assert raw.endswith(b"Content-Length: 1234\r\n\r\n")
    (response,) = t.reader.feed(raw)
    assert response.body == b""


def test_several_responses_for_one_stream_when_not_final():
    # The next issue's subscriptions: one inner request, one response per change.
    t = Transcript()
    t.send(get("/watch", "w"))
    for version in (b"v1", b"v2"):
        head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_LENGTH, 2, True)
        t.session.response_started(1, head)
        t.session.response_data(1, version)
        t.session.response_ended(1, final=False)
        assert t.session.streams[1].state is InnerState.FORWARDED
    t.respond(1, body=b"v3")
    assert [r.body for r in t.responses()] == [b"v1", b"v2", b"v3"]
    assert 1 not in t.session.streams


# --- streaming large responses ----------------------------------------------------------


def test_large_response_streams_as_inner_chunked_and_holds_the_stream():
    t = Transcript(max_buffered_response=10)
    t.send(get("/big", "big") + get("/small", "small"))
    head = ResponseHead(200, b"OK", b"1.1", [(b"Transfer-Encoding", b"chunked")], FRAMING_CHUNKED, -1, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"0123456789ABCDEF")  # over the limit: committed at once
    t.respond(2, body=b"tiny")  # completes meanwhile, must wait
    first = t.take()
    assert b"Transfer-Encoding: chunked" in first and b"tiny" not in first
    t.session.response_data(1, b"more")
    t.session.response_ended(1)
    got = t.reader.feed(first + t.take())
    assert [(r.request_id, r.body, r.chunked) for r in got] == [
        ("big", b"0123456789ABCDEFmore", True),
        ("small", b"tiny", False),
    ]


def test_large_bodies_reach_the_output_pieces_uncopied():
    """A body of UNCOPIED_PIECE bytes or more is handed to the shell as the
    object the origin side gave, whole or streamed (the shell writes the
    pieces with one writev): no copy of it is made on the way."""
    t = Transcript(max_buffered_response=2 * UNCOPIED_PIECE)
    t.send(get("/whole", "whole") + get("/small", "small") + get("/streamed", "streamed"))
    whole = b"w" * UNCOPIED_PIECE
    head = ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"%d" % len(whole))], FRAMING_LENGTH, len(whole), True)
    t.session.response_complete(1, head, whole)
    small = ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"4")], FRAMING_LENGTH, 4, True)
    tiny = b"tiny"
    t.session.response_complete(2, small, tiny)
    pieces = t.session.take_output_pieces()
    assert any(piece is whole for piece in pieces)
    assert not any(piece is tiny for piece in pieces)  # small ones are joined into their message

    chunked = ResponseHead(200, b"OK", b"1.1", [(b"Transfer-Encoding", b"chunked")], FRAMING_CHUNKED, -1, True)
    first, second = b"1" * (3 * UNCOPIED_PIECE), b"2" * UNCOPIED_PIECE
    t.session.response_started(3, chunked)
    t.session.response_data(3, first)  # over max_buffered_response: streamed from here on
    t.session.response_data(3, second)
    t.session.response_ended(3)
    streamed = t.session.take_output_pieces()
    assert any(piece is first for piece in streamed) and any(piece is second for piece in streamed)

    got = t.reader.feed(b"".join(pieces + streamed))
    assert [(r.request_id, r.body, r.chunked) for r in got] == [
        ("whole", whole, False),
        ("small", b"tiny", False),
        ("streamed", first + second, True),
    ]
    assert t.session.take_output_pieces() == []


def test_stream_waiting_response_that_completes_leaves_in_one_piece_still_chunked():
    t = Transcript(max_buffered_response=4)
    t.send(get("/a", "a") + get("/b", "b"))
    head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_CHUNKED, -1, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"aaaaaa")  # streams, holds the outer stream
    t.session.response_started(2, head)
    commands_before = t.session.take_commands()
    t.session.response_data(2, b"bbbbbb")  # over the limit too, but the stream is busy
    assert PauseOrigin(2) in t.session.take_commands()
    t.session.response_ended(2)  # completes while waiting
    t.session.response_ended(1)
    got = t.reader.feed(t.session.take_output())
    # Still larger than a buffered response: an inner chunked message, whole.
    assert [(r.request_id, r.chunked, r.body) for r in got] == [("a", True, b"aaaaaa"), ("b", True, b"bbbbbb")]
    assert not any(isinstance(c, PauseOrigin) for c in commands_before)


def test_broken_streamed_response_ends_with_incomplete_trailer_and_stream_stays_framed():
    t = Transcript(max_buffered_response=4)
    t.send(get("/big", "big") + get("/next", "next"))
    head = ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"100")], FRAMING_LENGTH, 100, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"x" * 40)
    t.session.response_failed(1, OriginResponseIncomplete("origin closed mid-body"))
    t.respond(2, body=b"ok")
    broken, nxt = t.responses()
    assert broken.chunked and broken.body == b"x" * 40
    assert "error=http_response_incomplete" in broken.trailer("Proxy-Status")
    assert (nxt.request_id, nxt.body) == ("next", b"ok")
    # The origin's Content-Length is never passed on for a streamed body.
    assert broken.header("Content-Length") is None


def test_broken_buffered_response_becomes_a_tagged_502():
    t = Transcript()
    t.send(get("/a", "a"))
    head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_LENGTH, 100, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"partial")
    t.session.response_failed(1, OriginResponseIncomplete("origin closed mid-body"))
    (response,) = t.responses()
    assert (response.status, response.request_id, response.content_location) == (502, "a", "/a")
    assert "error=http_response_incomplete" in response.header("Proxy-Status")


def test_origin_timeout_before_head_is_a_tagged_504():
    t = Transcript()
    t.send(get("/hang", "h"))
    t.session.response_failed(1, OriginReadTimeout("nothing for 60s"))
    (response,) = t.responses()
    assert response.status == 504 and "error=connection_read_timeout" in response.header("Proxy-Status")


def test_close_delimited_origin_response_is_reframed_with_a_length():
    t = Transcript()
    t.send(get("/c"))
    head = ResponseHead(200, b"OK", b"1.0", [], FRAMING_CLOSE, -1, False)
    t.session.response_started(1, head)
    t.session.response_data(1, b"until close")
    t.session.response_ended(1)
    (response,) = t.responses()
    assert response.body == b"until close" and response.header("Content-Length") == "11"


# --- rejected inner requests ------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes, status, error",
    [
        (get("/_mux"), 400, "http_request_denied"),
        (get("/_mux?x=1"), 400, "http_request_denied"),
        (get("/a", extra="Upgrade: websocket\r\nConnection: upgrade\r\n"), 400, "http_request_denied"),
        (get("/a", extra="Host: attacker.example\r\n"), 400, "http_request_denied"),
        (get("http://attacker.example/a"), 400, "http_request_denied"),
        (get("/a", extra="Host: a\r\nHost: b\r\n"), 400, "http_request_error"),
        (get("/a/../b"), 400, "http_request_error"),
        (get("/a", extra="Expect: something\r\n"), 417, "http_request_error"),
        (b"POST /a HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2000000, 413, "http_request_error"),
        (get("/a", extra="".join(f"X-{i}: {i}\r\n" for i in range(150))), 431, "http_request_error"),
    ],
)
def test_unacceptable_inner_request_gets_a_tagged_error_and_the_stream_continues(request_bytes, status, error):
    t = Transcript(routes=[route(b"/a", "app")])
    commands = t.send(request_bytes + get("/a/next", "next"))
    assert list(t.forwarded(commands)) == [2]
    t.respond(2, body=b"fine")
    rejected, fine = t.responses()
    assert rejected.status == status
    assert f"error={error}" in rejected.header("Proxy-Status")
    assert rejected.content_location == request_bytes.split(b" ")[1].decode()
    assert fine.body == b"fine"


def test_no_route_is_a_tagged_404():
    t = Transcript(routes=[route(b"/api", "app")])
    t.send(get("/elsewhere", "r"))
    (response,) = t.responses()
    assert (response.status, response.request_id, response.content_location) == (404, "r", "/elsewhere")
    assert "error=destination_not_found" in response.header("Proxy-Status")


def test_absolute_form_for_the_outer_host_is_accepted_and_made_origin_form():
    t = Transcript()
    commands = t.send(get("http://example.com/a?q", "abs"))
    (forward,) = t.forwarded(commands).values()
    assert forward.request.target == b"/a?q" and forward.request.host == b"example.com"
    t.respond(1, body=b"x")
    (response,) = t.responses()
    assert response.content_location == "http://example.com/a?q"  # exactly as received


def test_absolute_form_for_a_host_a_route_names_is_accepted():
    t = Transcript(routes=[route(b"/", "api", hosts=[b"api.example.com"]), route(b"/", "app")])
    commands = t.send(get("http://api.example.com/v1"))
    (forward,) = t.forwarded(commands).values()
    assert forward.origin == "api"


def test_error_answer_to_head_has_no_body():
    t = Transcript(routes=[route(b"/api", "app")], head_ids={"h"})
    t.send(b"HEAD /nothing HTTP/1.1\r\nRequest-Id: h\r\n\r\n" + get("/api/x", "g"))
    t.respond(2, body=b"after")
    head_error, after = t.responses()
    assert head_error.status == 404 and head_error.body == b""
    assert after.body == b"after"


# --- framing errors -----------------------------------------------------------------------


def test_framing_error_answers_tagged_finishes_in_flight_then_ends_and_closes():
    t = Transcript()
    commands = t.send(
        get("/before", "b")
        + b"POST /bad HTTP/1.1\r\nRequest-Id: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        + get("/after", "a")
    )
    assert list(t.forwarded(commands)) == [1]  # nothing after the break is forwarded
    (bad,) = t.responses()
    assert bad.status == 400 and bad.content_location == "/bad"
    assert not any(isinstance(c, EndOuter) for c in commands)
    assert t.send(get("/later")) == []  # the stream is no longer read
    commands = t.respond(1, body=b"done")
    assert EndOuter(close=True) in commands
    (before,) = t.responses()
    assert before.request_id == "b"


def test_bad_chunk_size_after_head_is_tagged_with_the_request_id():
    t = Transcript()
    t.send(b"POST /up HTTP/1.1\r\nRequest-Id: up\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    (response,) = t.responses()
    assert (response.status, response.request_id) == (400, "up")


def test_garbage_before_any_target_gets_an_untagged_error_then_ends():
    t = Transcript()
    commands = t.send(b"\x00\x01garbage\r\n\r\n")
    (response,) = t.responses()
    # llhttp reads the garbage as an unknown method: 501 (RFC 9110 §9.1).
    assert response.status == 501 and response.content_location is None
    assert "error=http_request_error" in response.header("Proxy-Status")
    assert EndOuter(close=True) in commands


def test_stream_ending_inside_an_inner_request_is_a_framing_error():
    t = Transcript()
    t.send(b"POST /up HTTP/1.1\r\nRequest-Id: u\r\nContent-Length: 10\r\n\r\nabc")
    t.session.receive_end()
    (response,) = t.responses()
    assert (response.status, response.request_id) == (400, "u")
    assert EndOuter(close=True) in t.session.take_commands()


# --- end of stream ------------------------------------------------------------------------


def test_end_of_body_finishes_in_flight_then_ends_cleanly():
    t = Transcript()
    t.send(get("/a") + get("/b"))
    t.session.receive_end()
    assert not any(isinstance(c, EndOuter) for c in t.session.take_commands())
    t.respond(1, body=b"a")
    commands = t.respond(2, body=b"b")
    assert EndOuter(close=False) in commands
    assert len(t.responses()) == 2


def test_end_of_empty_stream_ends_at_once():
    t = Transcript()
    t.session.receive_end()
    assert EndOuter(close=False) in t.session.take_commands()


def test_client_gone_cancels_every_exchange():
    t = Transcript()
    t.send(get("/a") + get("/b") + get("/c"))
    t.respond(2, body=b"done")
    t.session.client_gone()
    assert t.session.take_commands() == [CancelExchange(3), CancelExchange(1)]
    assert t.session.ended and not t.session.streams


# --- backpressure -----------------------------------------------------------------------


def test_in_flight_limit_queues_and_pauses_then_resumes():
    t = Transcript(max_in_flight=2)
    commands = t.send(get("/1") + get("/2") + get("/3") + get("/4"))
    assert list(t.forwarded(commands)) == [1, 2]
    assert PauseReading() in commands
    assert t.session.in_flight == 2
    commands = t.respond(1, body=b"x")
    assert list(t.forwarded(commands)) == [3]
    commands = t.respond(2, body=b"x")
    assert list(t.forwarded(commands)) == [4]
    commands = t.respond(3, body=b"x")
    assert ResumeReading() in commands  # below the mark again
    assert t.session.peak_in_flight == 2


def test_unparsed_input_waits_beyond_one_slice():
    # A read of many requests: at most about one FEED_SLICE is parsed past the mark.
    t = Transcript(max_in_flight=1)
    many = get("/x") * 2000
    commands = t.send(many)
    assert len(t.forwarded(commands)) == 1
    parsed = len(t.session.streams)
    assert parsed * len(get("/x")) <= FEED_SLICE + 2 * len(get("/x"))
    total = 1
    while total < 2000:
        stream_id = min(s for s, st in t.session.streams.items() if st.state is InnerState.FORWARDED)
        commands = t.respond(stream_id)
        total += len(t.forwarded(commands))
    assert total == 2000


def test_refused_requests_stop_parsing_until_their_answers_are_taken():
    # Refusals take no origin slot, so the in-flight mark cannot bound them:
    # answers the client has not been given yet do.  One read of 2,000
    # refused requests must not become 2,000 error responses at once.
    t = Transcript(max_in_flight=4)
    refused = get("/_mux")  # an inner request to the endpoint itself: 400
    t.session.receive_data(refused * 2000)
    first = t.session.take_output()
    answers = first.count(b"HTTP/1.1 400 ")
    assert 4 <= answers <= 4 + FEED_SLICE // len(refused) + 1
    assert PauseReading() in t.session.take_commands()  # the rest of the read waits
    total = answers
    while total < 2000:
        data = t.session.take_output()  # the shell took them: parsing goes on
        assert data, "parsing stalled"
        total += data.count(b"HTTP/1.1 400 ")
    assert total == 2000
    assert ResumeReading() in t.session.take_commands()


def test_nothing_is_parsed_while_the_client_does_not_read():
    t = Transcript(max_in_flight=4)
    t.session.outer_writable(False)
    t.send(get("/_mux") * 100)
    assert len(t.session.streams) == 0 and t.take() == b""
    t.session.outer_writable(True)
    t.settle()
    assert t.take().count(b"HTTP/1.1 400 ") == 100


def test_held_request_bodies_pause_reading():
    t = Transcript(max_stream_buffer=3000, max_in_flight=100)
    body = b"x" * 1000
    commands = t.send((b"POST /u HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + body) * 10)
    assert PauseReading() in commands
    # Parsing stops within one slice of the budget, leaving the rest unread.
    assert len(t.forwarded(commands)) <= (3000 + FEED_SLICE) // 1000 + 1
    held = sum(s.held for s in t.session.streams.values())
    assert 3000 <= held <= 3000 + FEED_SLICE
    # Once the origins answer, the bodies are released and parsing goes on.
    forwarded = len(t.forwarded(commands))
    while forwarded < 10:
        stream_id = min(t.session.streams)
        forwarded += len(t.forwarded(t.respond(stream_id)))
    assert forwarded == 10


def test_slow_client_stops_emission_and_pauses_the_streaming_origin():
    t = Transcript(max_buffered_response=4)
    t.send(get("/big", "big") + get("/small", "small"))
    t.session.outer_writable(False)
    t.session.take_commands()
    head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_CHUNKED, -1, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"123456")
    commands = t.session.take_commands() + t.respond(2, body=b"s")
    assert t.session.take_output() == b""  # nothing is emitted to a client that does not read
    assert PauseOrigin(1) in commands
    t.session.outer_writable(True)
    assert ResumeOrigin(1) in t.session.take_commands()
    t.session.response_ended(1)
    assert [r.request_id for r in t.responses()] == ["big", "small"]


def test_stream_buffer_budget_moves_responses_to_streaming():
    t = Transcript(max_buffered_response=1000, max_stream_buffer=1500)
    t.send(get("/a", "a") + get("/b", "b"))
    head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_CHUNKED, -1, True)
    t.session.response_started(1, head)
    t.session.response_started(2, head)
    t.session.response_data(1, b"a" * 800)
    t.session.response_data(2, b"b" * 800)  # 1600 buffered > 1500: b commits and streams
    assert t.session.streams[2].state is InnerState.STREAMING
    t.session.response_data(1, b"a" * 100)
    t.session.response_ended(1)  # waits behind the streaming one
    t.session.response_ended(2)
    got = t.responses()
    assert [(r.request_id, r.chunked, len(r.body)) for r in got] == [("b", True, 800), ("a", False, 900)]


# --- timers --------------------------------------------------------------------------------


def test_heartbeat_only_when_quiet_and_only_between_messages():
    t = Transcript(heartbeat=15.0, max_buffered_response=1)
    assert t.session.on_timer() == pytest.approx(15.0)
    t.clock.now += 15
    t.session.on_timer()
    assert t.session.take_output() == b"\r\n"
    t.send(get("/a"))
    head = ResponseHead(200, b"OK", b"1.1", [], FRAMING_CHUNKED, -1, True)
    t.session.response_started(1, head)
    t.session.response_data(1, b"ab")  # committed: a CRLF now would be body bytes
    t.session.take_output()
    t.clock.now += 60
    t.session.on_timer()
    assert t.session.take_output() == b""


def test_idle_stream_is_ended_after_idle_timeout():
    t = Transcript(idle_timeout=300.0, heartbeat=0)
    t.clock.now += 299
    t.session.on_timer()
    assert not t.session.ended
    t.clock.now += 2
    t.session.on_timer()
    assert EndOuter(close=True) in t.session.take_commands()


def test_an_idle_session_lets_go_of_what_a_burst_grew():
    # A dict keeps its table when its entries go: after 100 requests in
    # flight the stream table would hold kilobytes for as long as the stream
    # then stays idle (possibly hours).
    t = Transcript(heartbeat=0)
    fresh = sys.getsizeof(t.session.streams)
    forwarded = t.forwarded(t.send(b"".join(get(f"/{i}") for i in range(100))))
    assert len(forwarded) == 100
    for stream_id in forwarded:
        t.respond(stream_id, body=b"x")
    assert len(t.responses()) == 100 and not t.session.streams
    assert sys.getsizeof(t.session.streams) > 4 * fresh  # grown, now empty
    t.session.on_timer()
    assert sys.getsizeof(t.session.streams) == fresh and t.session._parser is None
    # ... and takes it up again for the next request.
    (stream_id,) = t.forwarded(t.send(get("/again", "g")))
    t.respond(stream_id, body=b"ok")
    (response,) = t.responses()
    assert (response.request_id, response.body) == ("g", b"ok")


def test_no_idle_timeout_while_requests_are_in_flight():
    t = Transcript(idle_timeout=10.0, heartbeat=0)
    t.send(get("/slow"))
    t.clock.now += 100
    t.session.on_timer()
    assert not t.session.ended


# --- gzip ------------------------------------------------------------------------------------


def test_gzip_output_is_decodable_after_every_take_and_finished_at_the_end():
    t = Transcript(gzip_response=True)
    t.send(get("/a", "a") + get("/b", "b"))
    t.respond(1, body=b"first")
    first = t.take()
    (response,) = t.reader.feed(first)  # decodable on its own: sync-flushed
    assert response.body == b"first"
    t.respond(2, body=b"second")
    second = t.take()
    t.session.receive_end()
    t.session.take_commands()
    tail = t.take()
    assert gzip.decompress(first + second + tail).count(b"HTTP/1.1 200") == 2


def test_gzip_request_body_is_inflated():
    t = Transcript(gzip_request=True)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = compressor.compress(get("/a") + get("/b")) + compressor.flush()
    commands = []
    for i in range(0, len(data), 7):
        commands += t.send(data[i : i + 7])
    assert list(t.forwarded(commands)) == [1, 2]


def test_invalid_gzip_request_body_is_a_framing_error():
    t = Transcript(gzip_request=True)
    commands = t.send(b"this is not gzip at all")
    (response,) = t.responses()
    assert response.status == 400
    assert EndOuter(close=True) in commands


def test_gzip_bomb_is_inflated_in_bounded_steps():
    t = Transcript(gzip_request=True, max_in_flight=1)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = compressor.compress(get("/x") * 200000) + compressor.flush()  # ~3.4 MB from a few KiB
    t.send(data)
    # Parsing stopped at the in-flight mark; what is decompressed but unparsed stays small.
    assert len(t.session._unparsed) <= 65536


def test_inner_head_trickled_in_is_cut_off_at_the_header_deadline():
    # A total deadline, not an inactivity timer: bytes keep arriving.
    t = Transcript(header_timeout=10.0, heartbeat=0)
    t.send(get("/done", "d"))
    for byte in b"GET /slowloris HTTP/1.1\r\nX-Pad: ":
        t.clock.now += 0.5
        t.send(bytes([byte]))
        t.session.on_timer()
        if t.session._input_abandoned:
            break
    assert t.session._input_abandoned
    assert t.session.next_check <= t.clock.now
    (timeout,) = t.responses()
    assert timeout.status == 408 and "error=http_request_error" in timeout.header("Proxy-Status")
    # The request before it is still answered, then the stream ends.
    commands = t.respond(1, body=b"ok")
    assert EndOuter(close=True) in commands


def test_an_inner_head_cut_off_after_its_request_line_gets_a_tagged_408():
    t = Transcript(header_timeout=10.0, heartbeat=0)
    t.send(b"GET /slow?q=1 HTTP/1.1\r\nRequest-Id: s1\r\nX-Pad: ")
    t.clock.now += 10.5
    t.session.on_timer()
    (timeout,) = t.responses()
    assert timeout.status == 408
    assert (timeout.content_location, timeout.request_id) == ("/slow?q=1", "s1")


def test_head_deadline_resets_for_each_inner_head():
    t = Transcript(header_timeout=10.0, heartbeat=0)
    for _ in range(5):
        t.send(b"GET /a HTTP/1.1\r\n")
        t.clock.now += 6
        t.send(b"\r\n")
        t.session.on_timer()
    assert not t.session._input_abandoned
