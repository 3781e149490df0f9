"""Rewriting heads for origins and clients (proxy/core/forwarding.py).

Requests: end-to-end fields kept in order, hop-by-hop fields and the fields
Connection names dropped (RFC 9110 §7.6.1), X-Forwarded-*, Forwarded
(RFC 7239) and Via (RFC 9110 §7.6.3) added.  Responses: framing fields
dropped, the origin's correlation fields renamed for inner responses.
Proxy-made responses carry Proxy-Status (RFC 9209), Date and a text body;
they are checked with h11, an independent parser.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import h11
import pytest

from proxy.core.forwarding import (
    ClientInfo,
    append_inner_message,
    client_response_framing,
    error_body,
    error_response,
    forward_fields,
    inner_message,
    inner_response_head,
    response_headers,
)
from proxy.core.http1.messages import (
    FRAMING_CHUNKED,
    FRAMING_CLOSE,
    FRAMING_LENGTH,
    FRAMING_NONE,
    Headers,
    RequestHead,
    ResponseHead,
)
from proxy.core.http1.serialize import UNCOPIED_PIECE
from proxy.errors import NoRoute, OriginConnectTimeout, OriginResponseIncomplete, ProxyError, RequestError
from tests.core.feeding import feed_response

CLIENT = ClientInfo(address=b"192.0.2.7", proto=b"https", via=b"muxproxy")
CLIENT_V6 = ClientInfo(address=b"2001:db8::7", proto=b"http", via=b"muxproxy")


def request_head(*headers: tuple[bytes, bytes], method: bytes = b"GET", version: bytes = b"1.1") -> RequestHead:
    return RequestHead(
        method=method,
        target=b"/",
        version=version,
        headers=list(headers),
        framing=FRAMING_NONE,
        content_length=-1,
        keep_alive=version == b"1.1",
        expect_continue=False,
        host=b"app.example",
    )


def response(*headers: tuple[bytes, bytes], status: int = 200, framing: int = FRAMING_LENGTH, length: int = 5) -> ResponseHead:
    return ResponseHead(
        status=status,
        reason=b"",
        version=b"1.1",
        headers=list(headers),
        framing=framing,
        content_length=length if framing == FRAMING_LENGTH else -1,
        keep_alive=True,
    )


def request_headers(head, client: ClientInfo, host: bytes | None, inherited=None) -> Headers:
    """Every field the origin gets besides Host and framing, in the order sent:
    the client's, then the proxy's own."""
    fields, own = forward_fields(head, client, host, inherited)
    return fields + list(own.fields)


def forwarded(*headers: tuple[bytes, bytes], client: ClientInfo = CLIENT, host: bytes | None = b"app.example", **kw) -> Headers:
    return request_headers(request_head(*headers, **kw), client, host)


def names(headers: Headers) -> list[bytes]:
    return [name.lower() for name, _ in headers]


def values(headers: Headers, lower_name: bytes) -> list[bytes]:
    return [value for name, value in headers if name.lower() == lower_name]


# --- Request fields (RFC 9110 §7.6.1) ------------------------------------------------


def test_end_to_end_fields_are_kept_in_order_with_their_case():
    out = forwarded((b"Accept", b"*/*"), (b"X-Trace", b"1"), (b"cookie", b"a=b"), (b"X-Trace", b"2"))
    assert out[:4] == [(b"Accept", b"*/*"), (b"X-Trace", b"1"), (b"cookie", b"a=b"), (b"X-Trace", b"2")]


@pytest.mark.parametrize(
    "name",
    [
        b"Connection",
        b"Keep-Alive",
        b"Proxy-Connection",
        b"Proxy-Authorization",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Content-Length",  # re-framed by whoever serialises the request
        b"KEEP-ALIVE",
    ],
)
def test_hop_by_hop_field_is_not_forwarded_rfc9110_7_6_1(name):
    assert name.lower() not in names(forwarded((name, b"x"), (b"Accept", b"*/*")))


def test_fields_named_by_connection_are_not_forwarded_rfc9110_7_6_1():
    out = forwarded((b"Connection", b"X-Secret, x-other"), (b"X-Secret", b"1"), (b"X-Other", b"2"), (b"X-Kept", b"3"))
    assert b"x-secret" not in names(out)
    assert b"x-other" not in names(out)
    assert (b"X-Kept", b"3") in out


@pytest.mark.parametrize("name", [b"X-Forwarded-For", b"Via", b"Forwarded"])
def test_proxy_fields_named_by_connection_lose_the_client_values_rfc9110_7_6_1(name):
    out = forwarded((b"Connection", name), (name, b"from-client"))
    assert all(b"from-client" not in value for value in values(out, name.lower()))


def test_fields_named_by_any_of_several_connection_fields_are_dropped():
    out = forwarded((b"Connection", b"close"), (b"connection", b"X-A"), (b"X-A", b"1"))
    assert b"x-a" not in names(out)


@pytest.mark.parametrize("name", [b"Host", b"Expect", b"X-Forwarded-Proto", b"X-Forwarded-Host"])
def test_fields_the_proxy_sets_itself_are_not_forwarded_from_the_client(name):
    out = forwarded((name, b"client-value"))
    assert b"client-value" not in values(out, name.lower())


def test_x_forwarded_proto_and_host_come_from_the_proxy():
    out = forwarded((b"X-Forwarded-Proto", b"gopher"), (b"X-Forwarded-Host", b"evil.example"))
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"app.example"]


def test_no_x_forwarded_host_without_a_host():
    assert b"x-forwarded-host" not in names(forwarded(host=None))


# --- X-Forwarded-For, Forwarded, Via ---------------------------------------------------


def test_x_forwarded_for_is_created():
    assert values(forwarded(), b"x-forwarded-for") == [b"192.0.2.7"]


def test_x_forwarded_for_is_appended_to_all_earlier_values():
    out = forwarded((b"X-Forwarded-For", b"198.51.100.1"), (b"x-forwarded-for", b"198.51.100.2, 198.51.100.3"))
    assert values(out, b"x-forwarded-for") == [b"198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.7"]


def test_forwarded_element_rfc7239_4():
    assert values(forwarded(), b"forwarded") == [b"for=192.0.2.7;proto=https;host=app.example"]


def test_forwarded_ipv6_address_is_quoted_and_bracketed_rfc7239_6():
    assert values(forwarded(client=CLIENT_V6, host=None), b"forwarded") == [b'for="[2001:db8::7]";proto=http']


@pytest.mark.parametrize(
    ("host", "element_host"),
    [
        (b"app.example", b"app.example"),
        (b"app.example:8443", b'"app.example:8443"'),  # ":" is not a tchar
        (b"[::1]:8080", b'"[::1]:8080"'),
        (b'we"ird\\', b'"we\\"ird\\\\"'),
        (b"caf\xc3\xa9.example", b'"caf\xc3\xa9.example"'),  # non-ASCII is no tchar either
    ],
)
def test_forwarded_host_is_a_token_or_a_quoted_string_rfc7239_4(host, element_host):
    element = values(forwarded(host=host), b"forwarded")[0]
    assert element.endswith(b";host=" + element_host)


def test_forwarded_is_appended_to_earlier_elements():
    out = forwarded((b"Forwarded", b"for=198.51.100.1"), (b"forwarded", b"for=198.51.100.2"), host=None)
    assert values(out, b"forwarded") == [b"for=198.51.100.1, for=198.51.100.2, for=192.0.2.7;proto=https"]


@pytest.mark.parametrize(("version", "via"), [(b"1.1", b"1.1 muxproxy"), (b"1.0", b"1.0 muxproxy")])
def test_via_names_the_received_protocol_version_rfc9110_7_6_3(version, via):
    assert values(forwarded(version=version), b"via") == [via]


def test_via_is_appended_to_earlier_values():
    out = forwarded((b"Via", b"1.1 cdn"), (b"via", b"1.0 old"))
    assert values(out, b"via") == [b"1.1 cdn, 1.0 old, 1.1 muxproxy"]


def test_each_proxy_field_appears_once():
    out = forwarded((b"X-Forwarded-For", b"a"), (b"Via", b"1.1 cdn"), (b"Forwarded", b"for=a"))
    for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"via"):
        assert names(out).count(name) == 1, name


def test_proxy_fields_are_serialised_once_in_the_order_sent():
    fields, own = forward_fields(request_head((b"Accept", b"*/*")), CLIENT, b"app.example")
    assert fields == [(b"Accept", b"*/*")]
    assert own.wire == b"".join(b"\r\n" + name + b": " + value for name, value in own.fields)
    assert own.wire.startswith(b"\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n")
    assert own.wire.endswith(b"\r\nVia: 1.1 muxproxy")


def test_proxy_fields_are_shared_by_requests_from_one_client_to_one_host():
    _, first = forward_fields(request_head(), CLIENT, b"app.example")
    _, second = forward_fields(request_head((b"Accept", b"*/*")), CLIENT, b"app.example")
    _, other_host = forward_fields(request_head(), CLIENT, b"other.example")
    _, other_client = forward_fields(request_head(), CLIENT_V6, b"app.example")
    assert first is second
    assert other_host is not first and (b"X-Forwarded-Host", b"other.example") in other_host.fields
    assert other_client is not first and (b"X-Forwarded-For", b"2001:db8::7") in other_client.fields


def test_proxy_fields_after_earlier_hops_are_made_per_request():
    _, own = forward_fields(request_head((b"Via", b"1.1 cdn")), CLIENT, None)
    _, again = forward_fields(request_head((b"Via", b"1.1 cdn")), CLIENT, None)
    assert own == again and own is not again
    assert (b"Via", b"1.1 cdn, 1.1 muxproxy") in own.fields


# --- Inherited fields (mux.inherit_headers) ----------------------------------------------


def test_inherited_field_is_added_when_absent():
    out = request_headers(request_head((b"Accept", b"*/*")), CLIENT, None, {b"authorization": b"Bearer outer"})
    assert (b"authorization", b"Bearer outer") in out


def test_inherited_field_never_overrides_the_request_own():
    head = request_head((b"Authorization", b"Bearer inner"))
    out = request_headers(head, CLIENT, None, {b"authorization": b"Bearer outer"})
    assert values(out, b"authorization") == [b"Bearer inner"]


# --- Response fields -----------------------------------------------------------------------
# Heads come from the ResponseParser, as in the proxy: it decides which fields
# are end-to-end, and these functions pass them on.


def origin_head(method: bytes, *fields: bytes, status: bytes = b"200 OK", body: bytes = b"") -> ResponseHead:
    """The head the ResponseParser makes of an origin's response to `method`."""
    raw = b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    events = feed_response(method, [raw]).events
    assert isinstance(events[0], ResponseHead), events
    return events[0]


def test_response_framing_and_hop_by_hop_fields_are_dropped_rfc9110_7_6_1():
    head = origin_head(
        b"GET",
        b"Content-Type: text/plain",
        b"Transfer-Encoding: chunked",
        b"Connection: keep-alive, X-Hop",
        b"Keep-Alive: timeout=5",
        b"X-Hop: 1",
        b"Trailer: X-T",
        b'ETag: "v1"',
        body=b"0\r\n\r\n",
    )
    assert response_headers(head, b"GET") == [(b"Content-Type", b"text/plain"), (b"ETag", b'"v1"')]


def test_response_content_length_is_never_passed_on_as_framing():
    head = origin_head(b"GET", b"Content-Length: 2", b"X-A: 1", body=b"hi")
    assert response_headers(head, b"GET") == [(b"X-A", b"1")]


@pytest.mark.parametrize(
    ("method", "status", "keeps_length"),
    [
        (b"HEAD", b"200 OK", True),  # RFC 9110 §8.6: the length of the representation
        (b"GET", b"304 Not Modified", True),
        (b"GET", b"200 OK", False),
        (b"POST", b"201 Created", False),
        (b"GET", b"204 No Content", False),  # RFC 9110 §8.6: MUST NOT send Content-Length in a 204
    ],
)
def test_content_length_is_kept_only_for_head_and_304_rfc9110_8_6(method, status, keeps_length):
    body = b"12345" if method != b"HEAD" and status[:3] not in (b"204", b"304") else b""
    head = origin_head(method, b"Content-Length: 5", status=status, body=body)
    assert (b"content-length" in names(response_headers(head, method))) is keeps_length


def test_response_headers_is_a_new_list_each_time():
    head = origin_head(b"GET", b"X-A: 1", b"Content-Length: 0")
    response_headers(head, b"GET").append((b"X-Added", b"1"))
    assert response_headers(head, b"GET") == [(b"X-A", b"1")]


def inner_head_fields(head: ResponseHead, method: bytes, tags: Headers, framing: Headers) -> list[tuple[bytes, bytes]]:
    response, _ = parse_with_h11(inner_response_head(head, method, tags, framing) + b"x" * 5, method=method)
    return response.headers.raw_items()


@pytest.mark.parametrize("name", [b"Content-Location", b"content-location", b"Request-Id", b"REQUEST-ID"])
def test_inner_response_renames_the_origin_correlation_fields(name):
    head = origin_head(b"GET", name + b": origin-value", b"X-Other: 1", b"Content-Length: 0")
    fields = inner_head_fields(head, b"GET", [(b"Content-Location", b"/s/1")], [(b"Content-Length", b"5")])
    renamed = b"Origin-Content-Location" if b"location" in name.lower() else b"Origin-Request-Id"
    assert fields == [
        (b"Content-Location", b"/s/1"),
        (renamed, b"origin-value"),
        (b"X-Other", b"1"),
        (b"Content-Length", b"5"),
    ]


def test_inner_response_to_head_keeps_the_origin_length():
    head = origin_head(b"HEAD", b"Content-Length: 1234")
    data = inner_response_head(head, b"HEAD", [(b"Content-Location", b"/s/1")], [])
    assert data == b"HTTP/1.1 200 OK\r\nContent-Location: /s/1\r\nContent-Length: 1234\r\n\r\n"


@pytest.mark.parametrize("size", [0, 100, UNCOPIED_PIECE - 1, UNCOPIED_PIECE, 3 * UNCOPIED_PIECE])
@pytest.mark.parametrize(
    ("method", "fields", "request_id"),
    [
        (b"GET", (b"Content-Type: text/plain",), None),
        (b"GET", (b"Content-Type: text/plain",), b"r-1"),
        (b"GET", (b"Content-Location: /origin",), b"r-2"),  # the origin's own tag: renamed
        (b"HEAD", (), None),
    ],
    ids=["plain", "request-id", "origin-tags", "head"],
)
def test_inner_message_pieces_are_the_inner_message(size, method, fields, request_id):
    """append_inner_message gives the bytes of inner_message, and from
    UNCOPIED_PIECE on keeps the body out of the join: the same object."""
    body = b"b" * size if method != b"HEAD" else b""
    head = origin_head(method, *fields, b"Content-Length: %d" % size, body=body)
    whole = inner_message(head, method, b"/s/1", request_id, body)
    out: list[bytes] = []
    append_inner_message(out, head, method, b"/s/1", request_id, body)
    assert b"".join(out) == whole
    response, received = parse_with_h11(whole, method=method)
    assert received == body
    assert field(response, b"content-location") == b"/s/1"  # ours, once
    assert field(response, b"content-length") == b"%d" % size
    if len(body) >= UNCOPIED_PIECE:
        assert len(out) == 2 and out[1] is body
    else:
        assert len(out) == 1


def test_plain_response_keeps_the_correlation_fields():
    head = origin_head(b"GET", b"Content-Location: /a", b"Request-Id: 7", b"Content-Length: 0")
    assert response_headers(head, b"GET") == [(b"Content-Location", b"/a"), (b"Request-Id", b"7")]


# --- Proxy-made responses (RFC 9209) ---------------------------------------------------------


def parse_with_h11(data: bytes, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
    """The response in `data` as h11 reads it, and its body."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    head = conn.next_event()
    assert isinstance(head, h11.Response), head
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, body
        else:
            raise AssertionError(f"incomplete response: {event!r}")


def field(head: h11.Response, name: bytes) -> bytes:
    found = [value for key, value in head.headers if key == name]
    assert len(found) == 1, (name, head.headers)
    return found[0]


def test_error_response_status_and_body():
    head, body = parse_with_h11(error_response(NoRoute("no route for '/x'"), b"muxproxy"))
    assert head.status_code == 404
    assert head.reason == b"Not Found"
    assert body == b"404 Not Found: no route for '/x'\n"
    assert field(head, b"content-type") == b"text/plain; charset=utf-8"


def test_error_response_proxy_status_names_the_error_type_rfc9209_2():
    head, _ = parse_with_h11(error_response(OriginConnectTimeout("connect to 10.0.0.1:80 timed out"), b"muxproxy"))
    assert head.status_code == 504
    assert field(head, b"proxy-status") == b'muxproxy; error=connection_timeout; details="connect to 10.0.0.1:80 timed out"'


def test_error_response_details_are_an_escaped_sf_string_rfc8941_3_3_3():
    error = RequestError('bad "target" \\ with\tcontrol\x01 and \xe9')
    head, _ = parse_with_h11(error_response(error, b"muxproxy"))
    assert field(head, b"proxy-status") == (
        b'muxproxy; error=http_request_error; details="bad \\"target\\" \\\\ with?control? and ?"'
    )


def test_error_response_content_length_counts_bytes_of_a_non_ascii_detail():
    data = error_response(RequestError("caf\u00e9 \u2603"), b"muxproxy")
    head, body = parse_with_h11(data)
    assert int(field(head, b"content-length")) == len(body) == len(error_body(RequestError("caf\u00e9 \u2603")))


def test_error_response_has_a_current_date_rfc9110_6_6_1():
    head, _ = parse_with_h11(error_response(NoRoute(), b"muxproxy"))
    date = parsedate_to_datetime(field(head, b"date").decode())
    assert abs(date.timestamp() - time.time()) < 5


def test_error_response_for_head_has_the_length_but_no_body():
    full = error_response(NoRoute("x"), b"muxproxy")
    head_only = error_response(NoRoute("x"), b"muxproxy", head_only=True)
    assert full.startswith(head_only)
    assert head_only.endswith(b"\r\n\r\n")
    head, body = parse_with_h11(head_only, method=b"HEAD")
    assert body == b""
    assert int(field(head, b"content-length")) == len(full) - len(head_only)


def test_error_response_puts_tags_first_and_extra_last():
    data = error_response(NoRoute(), b"muxproxy", tags=[(b"Content-Location", b"/s/1")], extra=[(b"Connection", b"close")])
    head, _ = parse_with_h11(data)
    assert head.headers[0] == (b"content-location", b"/s/1")
    assert head.headers[-1] == (b"connection", b"close")


@pytest.mark.parametrize("error", [ProxyError(), OriginResponseIncomplete(), NoRoute()], ids=repr)
def test_error_without_detail_uses_its_docstring(error):
    head, body = parse_with_h11(error_response(error, b"p"))
    first_line = type(error).__doc__.strip().splitlines()[0]
    assert body.decode().endswith(first_line + "\n")
    assert field(head, b"proxy-status").endswith(b"details=" + b'"' + first_line.encode() + b'"')


# --- Framing the response for the client (RFC 9112 §6.3, §7) -----------------------------------


@pytest.mark.parametrize(
    ("method", "version", "status", "framing", "keep_alive", "fields", "chunked", "keeps"),
    [
        # No body: no framing field, whatever the origin sent.
        (b"HEAD", b"1.1", 200, FRAMING_NONE, True, [], False, True),
        (b"HEAD", b"1.1", 200, FRAMING_NONE, False, [(b"Connection", b"close")], False, False),
        (b"GET", b"1.1", 204, FRAMING_NONE, True, [], False, True),
        (b"GET", b"1.1", 304, FRAMING_NONE, True, [], False, True),
        (b"HEAD", b"1.0", 200, FRAMING_NONE, True, [(b"Connection", b"keep-alive")], False, True),
        (b"GET", b"1.0", 304, FRAMING_NONE, False, [], False, False),
        # A known length stays a Content-Length.
        (b"GET", b"1.1", 200, FRAMING_LENGTH, True, [(b"Content-Length", b"5")], False, True),
        (b"GET", b"1.1", 200, FRAMING_LENGTH, False, [(b"Content-Length", b"5"), (b"Connection", b"close")], False, False),
        (b"GET", b"1.0", 200, FRAMING_LENGTH, True, [(b"Content-Length", b"5"), (b"Connection", b"keep-alive")], False, True),
        (b"GET", b"1.0", 200, FRAMING_LENGTH, False, [(b"Content-Length", b"5")], False, False),
        # Unknown length: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
        (b"GET", b"1.1", 200, FRAMING_CHUNKED, True, [(b"Transfer-Encoding", b"chunked")], True, True),
        (b"GET", b"1.1", 200, FRAMING_CLOSE, True, [(b"Transfer-Encoding", b"chunked")], True, True),
        (b"GET", b"1.1", 200, FRAMING_CHUNKED, False, [(b"Transfer-Encoding", b"chunked"), (b"Connection", b"close")], True, False),
        (b"GET", b"1.0", 200, FRAMING_CHUNKED, True, [], False, False),
        (b"GET", b"1.0", 200, FRAMING_CLOSE, True, [], False, False),
    ],
)
def test_client_response_framing(method, version, status, framing, keep_alive, fields, chunked, keeps):
    request = request_head(method=method, version=version)
    assert client_response_framing(request, response(status=status, framing=framing), keep_alive) == (fields, chunked, keeps)
