"""Property tests of the HTTP/1.x parsers (hypothesis), one invariant each.

- Garbage in gives events or a ParseFailed carrying a ProxyError, never an
  exception (h11's fuzz invariant), for arbitrary bytes and for valid
  messages mutated by byte flips, insertions and deletions, cut into reads at
  random points.
- After a ParseFailed, a parser reports nothing more.
- Valid requests round-trip: their concatenation, cut anywhere, parses back
  into exactly those requests.

The number of examples is kept small so that this file runs in a few seconds
with the rest of the suite.  For a real fuzzing run set
MUXPROXY_FUZZ_EXAMPLES, e.g.:

    MUXPROXY_FUZZ_EXAMPLES=20000 python -m pytest tests/core/test_properties.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.http1.messages import Body, EndOfMessage, ParseFailed, RequestHead, ResponseHead
from proxy.errors import OriginError, ProxyError
from tests.core.feeding import request_parser, response_parser

EXAMPLES = int(os.environ.get("MUXPROXY_FUZZ_EXAMPLES", "50"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- Generators ------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.^_`|~"
#: Field names the parser acts on: generated requests set them deliberately.
SPECIAL_NAMES = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-connection",
    "expect",
    "upgrade",
    "keep-alive",
}
PATH_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_~!$&'()*+,;=:@"

field_names = st.text(TOKEN_CHARS, min_size=1, max_size=12).filter(lambda n: n.lower() not in SPECIAL_NAMES)
# A field value: visible characters, single inner spaces, no surrounding whitespace.
field_values = st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8), max_size=3).map(
    " ".join
)
fields = st.lists(st.tuples(field_names, field_values), max_size=5).map(
    lambda pairs: [(name.encode(), value.encode()) for name, value in pairs]
)
segments = st.lists(st.text(PATH_CHARS, min_size=1, max_size=6).filter(lambda s: s not in (".", "..")), max_size=4)
queries = st.none() | st.text(PATH_CHARS + "/?", max_size=10)
targets = st.builds(
    lambda segs, query: ("/" + "/".join(segs) + ("" if query is None else "?" + query)).encode(), segments, queries
)
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])
bodies = st.binary(max_size=40)


@st.composite
def requests(draw) -> tuple[bytes, tuple]:
    """(wire bytes, (method, target, headers, body, trailers)) of one valid request."""
    method = draw(methods)
    target = draw(targets)
    headers = [(b"Host", b"example.com")] + draw(fields)
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b"" if framing == "none" else draw(bodies)
    trailers: list = []
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        wire_body = body
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)]) if b > a]
        trailers = draw(fields)
        wire_body = (
            b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces)
            + b"0\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in trailers)
            + b"\r\n"
        )
    else:
        wire_body = b""
    head = method + b" " + target + b" HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    return head + wire_body, (method, target, headers, body, trailers)


@st.composite
def responses(draw) -> bytes:
    """One valid response, possibly after interim ones."""
    interim = draw(st.lists(st.sampled_from([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]), max_size=2))
    status = draw(st.sampled_from([b"200 OK", b"201 Created", b"204 No Content", b"304 Not Modified", b"404 Not Found"]))
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    headers = draw(fields)
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
        wire_body = body
    elif framing == "chunked" and version == b"1.1":
        headers.append((b"Transfer-Encoding", b"chunked"))
        wire_body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        wire_body = body
    head = b"HTTP/" + version + b" " + status + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    return b"".join(interim) + head + wire_body


#: Bytes worth inserting: they steer a mutated message into framing paths.
INTERESTING = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Host: other.example\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Connection: close\r\n",
    b"GET / HTTP/1.1\r\n",
    b"CONNECT a:443 HTTP/1.1\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.0",
    b"ffffffffffffffffffff\r\n",
    b";ext=\x01",
    b"%2e%2e/",
    b"#",
]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 4)),
)


def mutate(data: bytes, mutations: list) -> bytes:
    buffer = bytearray(data)
    for kind, position, arg in mutations:
        position = position % (len(buffer) + 1)
        if kind == "flip" and position < len(buffer):
            buffer[position] ^= arg
        elif kind == "insert":
            buffer[position:position] = arg
        elif kind == "delete":
            del buffer[position : position + arg]
    return bytes(buffer)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` cut into reads at `points` (taken modulo its length)."""
    positions = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0] + positions, positions + [len(data)])]


concatenated_requests = st.lists(requests(), min_size=1, max_size=4)
mutated_requests = st.builds(
    lambda reqs, muts: mutate(b"".join(wire for wire, _ in reqs), muts),
    concatenated_requests,
    st.lists(mutation, min_size=1, max_size=6),
)
mutated_responses = st.builds(mutate, responses(), st.lists(mutation, min_size=1, max_size=6))
garbage = st.binary(max_size=300)
cut_points = st.lists(st.integers(0, 10_000), max_size=8)
parser_options = st.fixed_dictionaries(
    {
        "max_head_size": st.sampled_from([64, 256, 8192]),
        "max_header_count": st.sampled_from([2, 10, 100]),
        "require_host": st.booleans(),
    }
)

# --- Driving the parsers ------------------------------------------------------------------


def request_events(data: bytes, points: list[int], options: dict) -> list[list]:
    """The events of each feed, for `data` cut at `points`."""
    parser = request_parser(**options)
    return [parser.feed(piece) for piece in cut(data, points)]


def response_events(method: bytes, data: bytes, points: list[int], eof: bool, options: dict) -> list[list]:
    parser = response_parser(max_head_size=options["max_head_size"], max_header_count=options["max_header_count"])
    parser.start(method)
    per_feed = [parser.feed(piece) for piece in cut(data, points)]
    if eof:
        per_feed.append(parser.feed_eof())
    return per_feed


def flat(per_feed: list[list]) -> list:
    return [event for events in per_feed for event in events]


REQUEST_EVENTS = (RequestHead, Body, EndOfMessage, ParseFailed)
RESPONSE_EVENTS = (ResponseHead, Body, EndOfMessage, ParseFailed)


def only_known_events_and_proxy_errors(events: list, kinds: tuple, error_class: type) -> bool:
    return all(
        isinstance(event, kinds) and (not isinstance(event, ParseFailed) or isinstance(event.error, error_class))
        for event in events
    )


def nothing_after_failure(events: list) -> bool:
    failures = [i for i, event in enumerate(events) if isinstance(event, ParseFailed)]
    return not failures or failures == [len(events) - 1]


# --- RequestParser: never raises ---------------------------------------------------------------


@fuzz_settings
@given(data=garbage, points=cut_points, options=parser_options)
def test_request_parser_turns_arbitrary_bytes_into_events_or_a_proxy_error(data, points, options):
    events = flat(request_events(data, points, options))
    assert only_known_events_and_proxy_errors(events, REQUEST_EVENTS, ProxyError), events


@fuzz_settings
@given(data=mutated_requests, points=cut_points, options=parser_options)
def test_request_parser_turns_mutated_requests_into_events_or_a_proxy_error(data, points, options):
    events = flat(request_events(data, points, options))
    assert only_known_events_and_proxy_errors(events, REQUEST_EVENTS, ProxyError), events


@fuzz_settings
@given(data=mutated_requests | garbage, points=cut_points, options=parser_options)
def test_request_parser_reports_nothing_after_a_failure(data, points, options):
    parser = request_parser(**options)
    events = [event for piece in cut(data, points) + [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"] for event in parser.feed(piece)]
    assert nothing_after_failure(events), events


# --- ResponseParser: never raises --------------------------------------------------------------

response_methods = st.sampled_from([b"GET", b"HEAD", b"POST"])


@fuzz_settings
@given(method=response_methods, data=garbage, points=cut_points, eof=st.booleans(), options=parser_options)
def test_response_parser_turns_arbitrary_bytes_into_events_or_an_origin_error(method, data, points, eof, options):
    events = flat(response_events(method, data, points, eof, options))
    assert only_known_events_and_proxy_errors(events, RESPONSE_EVENTS, OriginError), events


@fuzz_settings
@given(method=response_methods, data=mutated_responses, points=cut_points, eof=st.booleans(), options=parser_options)
def test_response_parser_turns_mutated_responses_into_events_or_an_origin_error(method, data, points, eof, options):
    events = flat(response_events(method, data, points, eof, options))
    assert only_known_events_and_proxy_errors(events, RESPONSE_EVENTS, OriginError), events


@fuzz_settings
@given(method=response_methods, data=mutated_responses | garbage, points=cut_points, options=parser_options)
def test_response_parser_reports_nothing_after_a_failure(method, data, points, options):
    per_feed = response_events(method, data + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", points, True, options)
    assert nothing_after_failure(flat(per_feed)), per_feed


# --- Valid requests round-trip -------------------------------------------------------------------


def parsed_requests(events: list) -> list[tuple]:
    """(method, target, headers, body, trailers) per message in `events`."""
    messages = []
    for event in events:
        if isinstance(event, RequestHead):
            assert event.rejection is None, event
            messages.append([event.method, event.target, event.headers, b"", []])
        elif isinstance(event, Body):
            messages[-1][3] += event.data
        elif isinstance(event, EndOfMessage):
            messages[-1][4] = event.trailers
        else:
            raise AssertionError(f"unexpected {event!r}")
    return [tuple(message) for message in messages]


@fuzz_settings
@given(generated=concatenated_requests, points=cut_points)
def test_valid_requests_round_trip_however_they_are_cut(generated, points):
    data = b"".join(wire for wire, _ in generated)
    events = flat(request_events(data, points, {"max_head_size": 8192, "max_header_count": 100, "require_host": True}))
    assert parsed_requests(events) == [expected for _, expected in generated]
