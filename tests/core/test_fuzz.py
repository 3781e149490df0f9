"""Fuzzing the three parsers and the mux session with hypothesis.

Where tests/core/test_properties.py checks that garbage never raises, this
file checks what the parsers *accept*.  Inputs are valid messages (the
generators of test_properties.py), then mutated (byte flips; insertions of
CR, LF, SP, TAB, NUL, ":", an empty line...; deletions; duplicated lines,
see tests/core/corpus.py) and cut into reads at random points.  For each
parser, every example must hold all of:

- feed() never raises, and only our own protocol errors come out: a
  ProxyError in a ParseFailed or in a RequestHead's `rejection` (an
  OriginError for the response parser);
- the events follow the grammar: (head, body*, end)*, then at most one
  unfinished message, then at most one ParseFailed, which is last; after it
  nothing more is reported, whatever is fed;
- the events do not depend on how the input was cut into reads;
- every message accepted (no rejection, no failure) re-serialises with
  proxy.core.http1.serialize, with one canonical framing (Content-Length,
  or chunked when it has trailers), to bytes that h11, a strict parser of
  its own, reads as one message with the same method and target (or status
  and reason), the same fields, body and trailers.

The mux session (`MuxSession`) is fed random outer-body bytes while a fake
origin answers the requests it forwards in random ways (whole, streamed,
large enough to stream, failed; with the outer stream going unwritable and
the clock moving), and must:

- never let an exception escape;
- forward exactly the requests a reference parse of the same bytes finds,
  in order, and none past the point where the framing was lost;
- report exactly one InnerCompleted per forwarded request, only after the
  origin's response to it ended, and one per answered stream overall;
- write an outer body that a strict reader (tests/support/muxwire.py) reads
  as exactly those responses, in that order, tagged with their targets;
- end (one EndOuter) once the input ended and every response left.

Profiles (tests/core/corpus.py): by default "muxproxy-ci", 60 examples per
test, derandomized, and this file runs in about 5 s.  The deep profile runs
N randomized examples per test:

    MUXPROXY_FUZZ_EXAMPLES=20000 python -m pytest tests/core/test_fuzz.py

which takes about 25 minutes on one core of the development machine (a
2024 x86-64 server core; 2000 examples take about 2.5 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.forwarding import ClientInfo
from proxy.core.http1.messages import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    Body,
    EndOfMessage,
    ParseFailed,
    RequestHead,
    ResponseHead,
)
from proxy.core.http1.request_parser import RequestParser
from proxy.core.http1.serialize import CHUNKED, RAW, reason_phrase, request_head, response_head
from proxy.core.mux.commands import EndOuter, ForwardRequest, InnerCompleted
from proxy.core.mux.session import MuxLimits, MuxSession
from proxy.core.routing import Route, RouteTable, Timeouts
from proxy.errors import OriginError, OriginReadTimeout, OriginResponseIncomplete, ProxyError
from tests.core.corpus import (
    FUZZ,
    REQUESTS,
    RESPONSES,
    ResponseCase,
    mutated_request_streams,
    mutated_responses,
    request_streams,
    response_cases,
)
from tests.core.feeding import normalise, request_parser, response_parser
from tests.core.test_differential import H11Requests, H11Responses, Message, normal_fields
from tests.core.test_properties import cut, cut_points
from tests.support.muxwire import MuxReader

FRAMING_FIELDS = (b"content-length", b"transfer-encoding")
#: Added to a re-serialised request that has no Host (HTTP/1.0, or an inner
#: request that inherits it): h11 requires one in HTTP/1.1.
FILLER_HOST = b"example.com"

#: Limits small enough that mutated inputs reach them.
small_limits = st.fixed_dictionaries(
    {"max_head_size": st.sampled_from([128, 512, 8192]), "max_header_count": st.sampled_from([4, 100])}
)


# --- The event grammar ---------------------------------------------------------------


def check_request_events(events: list) -> None:
    """(head, body*, end)* [head body*] [ParseFailed]; only ProxyErrors."""
    in_message = False
    for index, event in enumerate(events):
        if isinstance(event, RequestHead):
            assert not in_message, f"a head inside a message: {events!r}"
            assert event.rejection is None or isinstance(event.rejection, ProxyError), event
            in_message = True
        elif isinstance(event, Body):
            assert in_message and event.data, f"body outside a message: {events!r}"
        elif isinstance(event, EndOfMessage):
            assert in_message, f"end outside a message: {events!r}"
            in_message = False
        elif isinstance(event, ParseFailed):
            assert isinstance(event.error, ProxyError) and event.error.loses_framing, event
            assert index == len(events) - 1, f"events after a failure: {events!r}"
        else:
            raise AssertionError(f"unknown event {event!r}")


def check_response_events(events: list) -> None:
    """[head body* (end | ParseFailed)] or [ParseFailed]; only OriginErrors."""
    kinds = [type(event) for event in events]
    for index, event in enumerate(events):
        if isinstance(event, ParseFailed):
            assert isinstance(event.error, OriginError), event
            assert index == len(events) - 1, f"events after a failure: {events!r}"
        elif isinstance(event, Body):
            assert kinds[0] is ResponseHead and event.data, events
        else:
            assert isinstance(event, (ResponseHead, EndOfMessage)), event
    assert kinds.count(ResponseHead) <= 1 and kinds.count(EndOfMessage) <= 1, events
    assert ResponseHead not in kinds[1:], events
    if EndOfMessage in kinds:
        assert kinds[0] is ResponseHead and kinds[-1] is EndOfMessage, events


# --- Re-serialising what was accepted --------------------------------------------------


@dataclass
class Accepted:
    head: RequestHead
    body: bytes = b""
    trailers: list = field(default_factory=list)


def accepted_requests(events: list) -> list[Accepted]:
    """The complete messages without a rejection."""
    out: list[Accepted] = []
    current: Accepted | None = None
    for event in events:
        if isinstance(event, RequestHead):
            current = Accepted(event)
        elif isinstance(event, Body):
            current.body += event.data
        elif isinstance(event, EndOfMessage):
            current.trailers = event.trailers
            if current.head.rejection is None:
                out.append(current)
            current = None
    return out


def reserialise_request(message: Accepted) -> tuple[bytes, tuple]:
    """(bytes with one canonical framing, the fields that were added)."""
    head = message.head
    fields = [(n, v) for n, v in head.headers if n.lower() not in FRAMING_FIELDS]
    added: tuple = ()
    if not any(n.lower() == b"host" for n, _ in fields):
        added = ((b"host", FILLER_HOST),)
        fields.insert(0, (b"Host", FILLER_HOST))
    if message.trailers:
        framed = fields + [(b"Transfer-Encoding", b"chunked")]
        body = CHUNKED.encode(message.body) + CHUNKED.end(message.trailers)
    elif head.framing != FRAMING_NONE or message.body:
        framed = fields + [(b"Content-Length", b"%d" % len(message.body))]
        body = RAW.encode(message.body)
    else:
        framed, body = fields, b""
    return request_head(head.method, head.target, framed) + body, added


def check_request_round_trip(message: Accepted) -> None:
    wire, added = reserialise_request(message)
    reader = H11Requests(wire)
    theirs = reader.next()
    assert isinstance(theirs, Message) and theirs.end == len(wire), f"h11 reads {wire!r} as {theirs!r}"
    assert reader.next().kind == "idle", wire
    head = message.head
    expected_fields = tuple(f for f in normal_fields(head.headers) if f[0] not in FRAMING_FIELDS)
    fields = tuple(f for f in theirs.fields if f[0] not in FRAMING_FIELDS and f not in added)
    assert (theirs.start_line, fields, theirs.body, theirs.trailers) == (
        (head.method, head.target),
        expected_fields,
        message.body,
        normal_fields(message.trailers),
    ), wire


def reserialise_response(method: bytes, head: ResponseHead, body: bytes) -> bytes:
    """The response as the proxy passes it on: its end-to-end fields (which
    keep Content-Length for HEAD and 304) plus one Content-Length."""
    fields = list(head.fields)
    if head.status not in (204, 304) and method != b"HEAD":
        fields.append((b"Content-Length", b"%d" % len(body)))
        return response_head(head.status, head.reason, fields) + body
    return response_head(head.status, head.reason, fields)


def check_response_round_trip(method: bytes, head: ResponseHead, body: bytes) -> None:
    wire = reserialise_response(method, head, body)
    theirs = H11Responses(ResponseCase((method,), wire)).next(method)
    assert isinstance(theirs, Message) and theirs.end == len(wire), f"h11 reads {wire!r} as {theirs!r}"
    expected_fields = tuple(f for f in normal_fields(head.fields) if f[0] != b"content-length")
    fields = tuple(f for f in theirs.fields if f[0] != b"content-length")
    reason = head.reason or reason_phrase(head.status)
    assert (theirs.start_line, fields, theirs.body) == ((head.status, reason), expected_fields, body), wire


# --- (a), (b): the request parser, inner stream and outer connection ---------------------


def fuzz_request_parser(data: bytes, points: list[int], limits: dict, require_host: bool) -> None:
    options = dict(limits, require_host=require_host)
    parser = request_parser(**options)
    events = [event for piece in cut(data, points) for event in parser.feed(piece)]
    check_request_events(events)
    whole = request_parser(**options).feed(data)
    assert normalise(events) == normalise(whole), "the events depend on how the input was cut"
    if parser.failed is not None:
        assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == [], "events after a failure"
    for message in accepted_requests(events):
        check_request_round_trip(message)


@pytest.mark.parametrize("require_host", [False, True], ids=["inner", "outer"])
@pytest.mark.parametrize("data", REQUESTS.values(), ids=REQUESTS.keys())
def test_request_corpus_holds_the_invariants(data, require_host):
    # The hand-written corpus, unmutated, cut in the middle: what the
    # generators below reach only by chance.
    fuzz_request_parser(data, [len(data) // 2], {"max_head_size": 8192, "max_header_count": 100}, require_host)


def test_the_error_for_a_head_over_the_field_count_does_not_depend_on_the_cut():
    # Found by fuzz/fuzz_parsers.py: a head with more than 4 x max_header_count
    # fields and a syntax error after them fails with 431 when a read ends
    # after the fields, with 400 when it does not.
    data = b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 18 + b"B : c\r\n\r\n"
    fuzz_request_parser(data, [16 + 6 * 18], {"max_head_size": 8192, "max_header_count": 4}, require_host=False)


def test_a_read_from_one_head_into_another_is_not_counted_against_the_second():
    # Found by fuzz/fuzz_parsers.py: a read that began inside one head and
    # ended inside a later one (complete requests in between) was counted
    # as wholly head bytes, and the later head refused as over the guard
    # (8 x max_head_size); one read of the same bytes refused nothing.
    data = b"GET / HTTP/1.1\r\n\r\n" + b"GET /n HTTP/1.1\r\n\r\n" * 60 + b"GET /last HTTP/1.1\r\nA: b"
    assert len(data) > 8 * 128
    fuzz_request_parser(data, [5], {"max_head_size": 128, "max_header_count": 4}, require_host=False)


@FUZZ
@given(data=mutated_request_streams, points=cut_points, limits=small_limits)
def test_inner_stream_parser_accepts_only_what_reserialises_faithfully(data, points, limits):
    fuzz_request_parser(data, points, limits, require_host=False)


@FUZZ
@given(data=mutated_request_streams, points=cut_points, limits=small_limits)
def test_outer_request_parser_accepts_only_what_reserialises_faithfully(data, points, limits):
    fuzz_request_parser(data, points, limits, require_host=True)


@FUZZ
@given(data=request_streams, points=cut_points, require_host=st.booleans())
def test_valid_request_streams_are_all_accepted_and_reserialise_faithfully(data, points, require_host):
    parser = request_parser(require_host=require_host)
    events = [event for piece in cut(data, points) for event in parser.feed(piece)]
    check_request_events(events)
    assert parser.is_idle
    heads = [event for event in events if isinstance(event, RequestHead)]
    accepted = accepted_requests(events)
    assert heads and len(accepted) == len(heads), events  # no failure, no rejection
    for message in accepted:
        check_request_round_trip(message)


# --- (c): the origin response parser ---------------------------------------------------


def fuzz_response_parser(case: ResponseCase, points: list[int], limits: dict) -> None:
    method = case.methods[0]

    def run(pieces: list[bytes]) -> tuple[list, bool]:
        parser = response_parser(**limits)
        parser.start(method)
        events = [event for piece in pieces for event in parser.feed(piece)]
        if case.eof:
            events += parser.feed_eof()
        return events, parser.reusable

    events, reusable = run(cut(case.data, points))
    check_response_events(events)
    whole_events, whole_reusable = run([case.data])
    assert normalise(events) == normalise(whole_events), "the events depend on how the input was cut"
    if events and isinstance(events[-1], EndOfMessage):
        head = events[0]
        body = b"".join(event.data for event in events if isinstance(event, Body))
        check_response_round_trip(method, head, body)


@pytest.mark.parametrize("case", RESPONSES.values(), ids=RESPONSES.keys())
def test_response_corpus_holds_the_invariants(case):
    fuzz_response_parser(case, [len(case.data) // 2], {})


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_the_error_for_a_response_head_over_the_guard_does_not_depend_on_the_cut(method):
    # Found by fuzz/fuzz_parsers.py: a head over 8 x max_head_size with a
    # syntax error near its end is "too large" when a read ends before its
    # empty line, a protocol error when it does not (both 502, with a
    # different Proxy-Status error).
    case = ResponseCase((method,), b"HTTP/1.1 200 OK\r\nA: " + b"x" * 1100 + b"\r\nB : c\r\n\r\n")
    fuzz_response_parser(case, [1100], {"max_head_size": 128, "max_header_count": 4})


@FUZZ
@given(case=mutated_responses, points=cut_points, limits=small_limits)
def test_response_parser_accepts_only_what_reserialises_faithfully(case, points, limits):
    fuzz_response_parser(case, points, limits)


@FUZZ
@given(case=response_cases, points=cut_points)
def test_valid_responses_are_accepted_and_reserialise_faithfully(case, points):
    fuzz_response_parser(case, points, {})


# --- (d): the mux session ------------------------------------------------------------------

TIMEOUTS = Timeouts(5, 60, 300)
ROUTES = RouteTable(
    [
        Route("route[1]", "app", b"/", frozenset(), (), False, "preserve", TIMEOUTS),
        Route("route[2]", "other", b"/other", frozenset({b"other.example"}), (), False, "preserve", TIMEOUTS),
    ]
)
#: Small enough that generated inputs reach every mark: two requests in
#: flight, a response of more than 16 bytes streams, 64 buffered bytes fill
#: the stream's budget, an inner body over 48 bytes is refused.
SESSION_LIMITS = dict(
    max_in_flight=2,
    max_buffered_response=16,
    max_stream_buffer=64,
    max_inner_body=48,
    max_head_size=512,
    max_header_count=10,
    heartbeat=1.0,
    idle_timeout=0,
    header_timeout=5.0,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


#: What the fake origin does next: feed the next read of the outer body,
#: act on one forwarded stream (which one, and how), toggle whether the
#: client reads the outer response, or let time pass.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.just(0), st.just(0)),
        st.tuples(st.just("origin"), st.integers(0, 7), st.integers(0, 5)),
        st.tuples(st.just("writable"), st.booleans(), st.just(0)),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0, 6.0]), st.just(0)),
    ),
    max_size=30,
)


class SessionRun:
    """Drive a MuxSession like the shell would, recording what it asked for."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.session = MuxSession(
            limits=MuxLimits(**SESSION_LIMITS),
            routes=ROUTES,
            client=ClientInfo(b"10.0.0.7", b"http", b"muxproxy"),
            outer_host=b"example.com",
            inherited={},
            proxy_name=b"muxproxy",
            gzip_response=False,
            gzip_request=False,
            clock=self.clock,
        )
        self.step = 0
        self.forwarded: dict[int, ForwardRequest] = {}
        self.forwarded_order: list[int] = []
        self.open: list[int] = []  # forwarded, the origin has not finished
        self.started: set[int] = set()
        self.finished_at: dict[int, int] = {}  # stream -> step its response ended
        self.completed: list[InnerCompleted] = []
        self.ended = 0
        self.output = b""

    def collect(self) -> None:
        """Take commands and output as the shell does: until there are none
        (taking output may let parsing go on, which queues more)."""
        session = self.session
        while True:
            for command in session.take_commands():
                self.record(command)
            output = session.take_output()
            self.output += output
            if not output and not session.commands:
                break
        self.step += 1

    def record(self, command) -> None:
        if isinstance(command, ForwardRequest):
            sid = command.stream_id
            assert sid not in self.forwarded, f"stream {sid} forwarded twice"
            assert not self.ended, "forwarded after the end"
            self.forwarded[sid] = command
            self.forwarded_order.append(sid)
            self.open.append(sid)
        elif isinstance(command, InnerCompleted):
            sid = command.stream_id
            if sid in self.forwarded:
                assert sid in self.finished_at, f"stream {sid} completed before its response ended"
            assert all(done.stream_id != sid for done in self.completed), f"stream {sid} completed twice"
            self.completed.append(command)
        elif isinstance(command, EndOuter):
            self.ended += 1

    def origin(self, selector: int, kind: int) -> None:
        if not self.open:
            return
        sid = self.open[selector % len(self.open)]
        method = self.forwarded[sid].request.method
        session = self.session
        no_body = method == b"HEAD"
        if kind == 5 or (kind == 4 and sid in self.started):
            error = OriginResponseIncomplete("broke off") if sid in self.started else OriginReadTimeout("slow")
            session.response_failed(sid, error)
            self.finish(sid)
        elif sid not in self.started and kind < 2:
            body = b"" if no_body else b"x" * (kind * 40 + 3)  # 3 bytes, or enough to stream
            session.response_complete(sid, self.head(method, len(body)), body)
            self.finish(sid)
        elif sid not in self.started:
            session.response_started(sid, self.head(method, -1))
            self.started.add(sid)
        elif kind < 3 and not no_body:
            session.response_data(sid, b"y" * (kind * 12 + 1))
        else:
            session.response_ended(sid)
            self.finish(sid)

    @staticmethod
    def head(method: bytes, length: int) -> ResponseHead:
        """A head as the response parser makes them (fields derived)."""
        if method == b"HEAD":
            return ResponseHead(200, b"OK", b"1.1", [(b"Content-Length", b"7")], FRAMING_NONE, -1, True)
        if length < 0:
            return ResponseHead(200, b"OK", b"1.1", [(b"Transfer-Encoding", b"chunked")], FRAMING_CHUNKED, -1, True)
        return ResponseHead(201, b"Made", b"1.1", [(b"Content-Length", b"%d" % length)], FRAMING_LENGTH, length, True)

    def finish(self, sid: int) -> None:
        self.open.remove(sid)
        self.started.discard(sid)
        self.finished_at[sid] = self.step


def reference_requests(data: bytes) -> list[RequestHead | None]:
    """The inner requests in `data` as the session's parser reads them whole:
    one head per complete message before the framing was lost."""
    parser = RequestParser(
        max_head_size=SESSION_LIMITS["max_head_size"],
        max_header_count=SESSION_LIMITS["max_header_count"],
        require_host=False,
    )
    heads: list = []
    current = None
    for event in parser.feed(data):
        if isinstance(event, RequestHead):
            current = event
        elif isinstance(event, EndOfMessage):
            heads.append(current)
        elif isinstance(event, ParseFailed):
            break
    return heads


def fuzz_session(data: bytes, points: list[int], program: list) -> None:
    """Run `program` against a session fed `data` cut at `points`, then
    finish everything, and check every invariant of the module note."""
    run = SessionRun()
    session = run.session
    pieces = cut(data, points)
    for kind, first, second in program:
        if kind == "feed" and pieces:
            session.receive_data(pieces.pop(0))
        elif kind == "origin":
            run.origin(first, second)
        elif kind == "writable":
            session.outer_writable(first)
        elif kind == "tick":
            run.clock.now += first
            session.on_timer()
        run.collect()
    # The rest of the input, the end of it, and answers for everything.
    session.outer_writable(True)
    for piece in pieces:
        session.receive_data(piece)
        run.collect()
    session.receive_end()
    run.collect()
    while run.open:
        run.origin(0, 1 if run.open[0] not in run.started else 3)
        run.collect()
    assert session.ended and run.ended == 1, session

    # Forwarded: only complete requests from before any framing loss, in order.
    reference = reference_requests(data)
    for sid in run.forwarded_order:
        assert sid <= len(reference), f"stream {sid} forwarded, but the input holds {len(reference)} requests"
        request, head = run.forwarded[sid].request, reference[sid - 1]
        assert request.method == head.method and head.rejection is None, (request, head)
    assert run.forwarded_order == sorted(run.forwarded_order)
    # Answered: each forwarded request exactly once, after its response.
    completed = {done.stream_id for done in run.completed}
    assert set(run.forwarded) <= completed, set(run.forwarded) - completed
    # What the client reads: one response per completion, in that order.
    methods = iter([done.method for done in run.completed])
    reader = MuxReader(lambda response: next(methods) == b"HEAD")
    responses = reader.feed(run.output)
    assert reader.buffer == b"", reader.buffer
    assert [r.status for r in responses] == [done.status for done in run.completed]
    for response, done in zip(responses, run.completed):
        if response.content_location is not None:
            assert response.content_location.encode("latin-1") == done.target


@FUZZ
@given(data=mutated_request_streams | request_streams, points=cut_points, program=actions)
def test_mux_session_answers_every_forwarded_request_exactly_once(data, points, program):
    fuzz_session(data, points, program)


@pytest.mark.parametrize("data", [b"", b"\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 10])
def test_mux_session_driver_handles_the_trivial_inputs(data):
    # Sanity of the harness itself, independent of hypothesis.
    run = SessionRun()
    run.session.receive_data(data)
    run.collect()
    run.session.receive_end()
    run.collect()
    while run.open:
        run.origin(0, 0)
        run.collect()
    assert run.session.ended and run.ended == 1
