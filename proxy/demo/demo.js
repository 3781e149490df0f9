// The muxproxy demo: send several HTTP requests in one POST to /_mux and show
// each inner response the moment it arrives.
//
// Two parts:
//   1. ResponseStreamParser: an incremental parser for an application/http
//      stream of HTTP/1.1 responses.  It has no dependency on the page; copy it.
//   2. The page: builds the inner requests, sends them, feeds the response body
//      to the parser and draws a table row per inner response.
"use strict";

// ---------------------------------------------------------------------------
// 1. The parser
// ---------------------------------------------------------------------------

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Uint8Array.of(CR, LF);
const CRLFCRLF = Uint8Array.of(CR, LF, CR, LF);

// A token, the grammar of a field name (RFC 9110 §5.6.2).
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** One inner response head: status line and fields, in the order received. */
class InnerResponse {
  constructor(status, reason, fields) {
    this.status = status;
    this.reason = reason;
    this.fields = fields; // [[name, value], ...]
  }

  /** All values of a field, joined by ", " (RFC 9110 §5.3); null when absent. */
  get(name) {
    const lower = name.toLowerCase();
    const values = this.fields.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
    return values.length ? values.join(", ") : null;
  }
}

/**
 * Incremental parser for an application/http stream of HTTP/1.1 responses,
 * as muxproxy sends them: each response is a head (status line, fields,
 * blank line) and a body framed by Content-Length or by chunked transfer
 * coding; CRLFs between messages are heartbeats and are skipped.
 *
 * Feed it bytes with push() as they arrive, in pieces of any size, and call
 * finish() when the stream ends.  It calls back:
 *   onHead(response)           an InnerResponse, before any of its body
 *   onData(response, bytes)    a piece of its body (a Uint8Array view)
 *   onEnd(response)            the body is complete
 *   onHeartbeat()              an empty line between messages
 * Malformed input throws an Error from push() or finish(); after that the
 * stream cannot be trusted and the parser must not be used again.
 *
 * A response to HEAD has a Content-Length but no body, and only the caller
 * knows which request a response answers: pass hasNoBody(response) to say so
 * (for example by looking up its Request-Id).  1xx, 204 and 304 responses
 * never have a body (RFC 9112 §6.3).
 */
class ResponseStreamParser {
  constructor({ onHead, onData, onEnd, onHeartbeat = () => {}, hasNoBody = () => false }) {
    this.onHead = onHead;
    this.onData = onData;
    this.onEnd = onEnd;
    this.onHeartbeat = onHeartbeat;
    this.hasNoBody = hasNoBody;
    // Bounds, so a broken stream cannot make us buffer without limit.
    this.maxHeadSize = 64 * 1024; // muxproxy's own default limit for heads
    this.maxLineSize = 4 * 1024; // a chunk-size line or a trailer field

    this.buffer = new Uint8Array(0); // bytes received and not yet consumed
    this.pos = 0; // read position in buffer
    this.state = "head";
    this.response = null; // the response whose body is being read
    this.remaining = 0; // bytes left in the body (length) or the chunk (chunked)
    this.decoder = new TextDecoder("utf-8");
  }

  push(bytes) {
    // Only unconsumed bytes are kept; body bytes are handed out as views
    // and never copied, so the buffer only ever holds a partial head or line.
    this.buffer = this.pos < this.buffer.length ? concat(this.buffer.subarray(this.pos), bytes) : bytes;
    this.pos = 0;
    while (this.step()) {
      // each step consumes something or returns false to wait for more bytes
    }
  }

  finish() {
    if (this.state !== "head" || this.pos < this.buffer.length) {
      throw new Error("the stream ended in the middle of an inner response");
    }
  }

  /** Parse what the buffer allows in the current state; false: need more bytes. */
  step() {
    switch (this.state) {
      case "head":
        return this.readHead();
      case "length-body":
        return this.readBody("head");
      case "chunk-size":
        return this.readChunkSize();
      case "chunk-data":
        return this.readBody("chunk-end");
      case "chunk-end":
        return this.readChunkEnd();
      case "trailers":
        return this.readTrailer();
      default:
        throw new Error(`unknown parser state ${this.state}`);
    }
  }

  available() {
    return this.buffer.length - this.pos;
  }

  readHead() {
    // Heartbeats: CRLF where a message could start.
    if (this.available() >= 2 && this.buffer[this.pos] === CR && this.buffer[this.pos + 1] === LF) {
      this.pos += 2;
      this.onHeartbeat();
      return true;
    }
    if (this.available() < 2) {
      return false; // nothing, or a lone CR whose LF has not arrived yet
    }
    const end = indexOf(this.buffer, CRLFCRLF, this.pos);
    if (end < 0) {
      if (this.available() > this.maxHeadSize) throw new Error("an inner response head is too large");
      return false;
    }
    const response = parseHead(this.decoder.decode(this.buffer.subarray(this.pos, end)));
    this.pos = end + CRLFCRLF.length;

    if (response.status < 200) {
      return true; // interim response (1xx): no body, the final response follows
    }
    this.response = response;
    this.onHead(response);
    if (response.status === 204 || response.status === 304 || this.hasNoBody(response)) {
      this.endMessage();
      return true;
    }

    const transferEncoding = response.get("Transfer-Encoding");
    const contentLength = response.get("Content-Length");
    if (transferEncoding !== null) {
      // Strict, as RFC 9112 §6.1 asks: both framings at once is an attack or a bug.
      if (contentLength !== null) throw new Error("an inner response has both Content-Length and Transfer-Encoding");
      const codings = transferEncoding.split(",").map((c) => c.trim().toLowerCase());
      if (codings[codings.length - 1] !== "chunked") throw new Error(`cannot frame Transfer-Encoding: ${transferEncoding}`);
      this.state = "chunk-size";
    } else if (contentLength !== null) {
      this.remaining = parseContentLength(contentLength);
      this.state = "length-body";
      if (this.remaining === 0) this.endMessage();
    } else {
      // Over a connection this would mean "until the connection closes";
      // inside a stream of messages it cannot be framed.
      throw new Error("an inner response has neither Content-Length nor chunked framing");
    }
    return true;
  }

  readBody(nextState) {
    const n = Math.min(this.available(), this.remaining);
    if (n === 0) return false;
    this.onData(this.response, this.buffer.subarray(this.pos, this.pos + n));
    this.pos += n;
    this.remaining -= n;
    if (this.remaining === 0) {
      if (nextState === "head") this.endMessage();
      else this.state = nextState;
    }
    return true;
  }

  readChunkSize() {
    const line = this.readLine();
    if (line === null) return false;
    // chunk-size [ chunk-ext ]: extensions are allowed and ignored (RFC 9112 §7.1.1).
    const match = /^([0-9A-Fa-f]{1,12})[ \t]*(;.*)?$/.exec(line);
    if (!match) throw new Error(`bad chunk-size line: ${JSON.stringify(line)}`);
    this.remaining = parseInt(match[1], 16);
    this.state = this.remaining === 0 ? "trailers" : "chunk-data";
    return true;
  }

  readChunkEnd() {
    if (this.available() < 2) return false;
    if (this.buffer[this.pos] !== CR || this.buffer[this.pos + 1] !== LF) {
      throw new Error("chunk data is not followed by CRLF");
    }
    this.pos += 2;
    this.state = "chunk-size";
    return true;
  }

  readTrailer() {
    const line = this.readLine();
    if (line === null) return false;
    if (line === "") this.endMessage(); // the blank line after the (usually absent) trailer fields
    return true; // a trailer field: read and ignored
  }

  /** The next CRLF-terminated line as text, consumed; null until it is complete. */
  readLine() {
    const end = indexOf(this.buffer, CRLF, this.pos);
    if (end < 0) {
      if (this.available() > this.maxLineSize) throw new Error("a line in an inner response is too long");
      return null;
    }
    const line = this.decoder.decode(this.buffer.subarray(this.pos, end));
    this.pos = end + CRLF.length;
    return line;
  }

  endMessage() {
    const response = this.response;
    this.response = null;
    this.state = "head";
    this.onEnd(response);
  }
}

/** Status line and fields of one head (the text before the blank line). */
function parseHead(text) {
  const lines = text.split("\r\n");
  const status = /^HTTP\/1\.[01] ([1-9][0-9][0-9])(?: (.*))?$/.exec(lines[0]);
  if (!status) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
  const fields = [];
  for (const line of lines.slice(1)) {
    if (line.startsWith(" ") || line.startsWith("\t")) {
      throw new Error("obsolete line folding in an inner response"); // RFC 9112 §5.2
    }
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!TOKEN.test(name)) throw new Error(`bad field line: ${JSON.stringify(line)}`);
    fields.push([name, line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "")]);
  }
  return new InnerResponse(Number(status[1]), status[2] ?? "", fields);
}

function parseContentLength(value) {
  // A list of identical values is the same length said twice (RFC 9110 §8.6).
  const values = new Set(value.split(",").map((v) => v.trim()));
  const [only] = values;
  if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only)) throw new Error(`bad Content-Length: ${value}`);
  return Number(only);
}

function indexOf(bytes, pattern, from) {
  const last = bytes.length - pattern.length;
  outer: for (let i = from; i <= last; i++) {
    for (let j = 0; j < pattern.length; j++) {
      if (bytes[i + j] !== pattern[j]) continue outer;
    }
    return i;
  }
  return -1;
}

function concat(a, b) {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a, 0);
  joined.set(b, a.length);
  return joined;
}

// ---------------------------------------------------------------------------
// 2. The page
// ---------------------------------------------------------------------------

const MUX_PATH = "/_mux";

// The inner requests: each gets a distinct Request-Id, which the proxy copies
// into its response (with Content-Location, the request's target).
const INNER_REQUESTS = [
  { id: "1", method: "GET", target: "/data/small.json", note: "a few hundred bytes" },
  { id: "2", method: "GET", target: "/data/large.json", note: "300 KiB: too big to buffer, streamed chunked" },
  { id: "3", method: "GET", target: "/data/medium.json", note: "44 KiB: buffered, sent whole" },
  { id: "4", method: "GET", target: "/data/missing.json", note: "no such file: an inner 404" },
  {
    id: "5",
    method: "GET",
    target: "/data/small.json",
    headers: [["Range", "bytes=0-47"]],
    note: "same target as 1, a byte range: Request-Id tells them apart",
  },
];

function innerRequestText({ method, target, id, headers = [] }) {
  const lines = [`${method} ${target} HTTP/1.1`, `Host: ${location.host}`, `Request-Id: ${id}`];
  for (const [name, value] of headers) lines.push(`${name}: ${value}`);
  return lines.join("\r\n") + "\r\n\r\n";
}

// Show CR and LF so the wire format is visible.
function showCrlf(text) {
  return text.replace(/\r\n/g, "␍␊\n");
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

function formatMs(ms) {
  return `${ms.toFixed(1)} ms`;
}

// The first bytes of a body, as text with control characters made visible.
function preview(bytes) {
  const text = new TextDecoder("utf-8").decode(bytes);
  return text.replace(/\s+/g, " ").replace(/[\x00-\x1f\x7f]/g, "·").trim();
}

const PREVIEW_BYTES = 120;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

async function runDemo(ui) {
  const body = INNER_REQUESTS.map(innerRequestText).join("");
  const methods = new Map(INNER_REQUESTS.map((r) => [r.id, r.method]));
  ui.rows.replaceChildren();
  ui.status.textContent = "Sending…";
  ui.button.disabled = true;

  const started = performance.now();
  const since = () => performance.now() - started;
  const shown = new Map(); // InnerResponse -> its row's cells and counters
  let arrived = 0;
  let heartbeats = 0;

  const parser = new ResponseStreamParser({
    hasNoBody: (response) => methods.get(response.get("Request-Id")) === "HEAD",
    onHeartbeat: () => {
      heartbeats += 1;
    },
    onHead(response) {
      arrived += 1;
      const row = document.createElement("tr");
      row.className = response.status >= 400 ? "failed" : "ok";
      cell(row, String(arrived));
      cell(row, formatMs(since()), "num");
      cell(row, response.get("Request-Id") ?? "–", "num");
      cell(row, `${response.status} ${response.reason}`.trim(), "status");
      cell(row, response.get("Content-Location") ?? "–", "mono");
      const chunked = response.get("Transfer-Encoding") !== null;
      cell(row, chunked ? "chunked" : "Content-Length", "framing");
      const size = cell(row, "0 B", "num");
      const done = cell(row, "…", "num");
      const first = cell(row, "", "preview");
      ui.rows.appendChild(row);
      shown.set(response, { size, done, first, bytes: 0, head: new Uint8Array(0) });
    },
    onData(response, bytes) {
      const entry = shown.get(response);
      entry.bytes += bytes.length;
      entry.size.textContent = formatSize(entry.bytes);
      if (entry.head.length < PREVIEW_BYTES) {
        entry.head = concat(entry.head, bytes.subarray(0, PREVIEW_BYTES - entry.head.length));
        entry.first.textContent = preview(entry.head);
      }
    },
    onEnd(response) {
      const entry = shown.get(response);
      entry.done.textContent = formatMs(since());
      shown.delete(response);
    },
  });

  try {
    // One request, framed by Content-Length: browsers can only stream a
    // request body over HTTP/2 or later, so the requests go as one batch.
    // The response, though, is read as it arrives.
    const response = await fetch(MUX_PATH, {
      method: "POST",
      headers: { "Content-Type": "application/http" },
      body,
    });
    const type = response.headers.get("Content-Type") ?? "";
    if (!response.ok || !type.startsWith("application/http")) {
      const text = await response.text();
      throw new Error(`the mux endpoint answered ${response.status} ${response.statusText}: ${text.slice(0, 300)}`);
    }
    ui.status.textContent = `Outer response: ${response.status} ${type}; inner responses arriving…`;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.finish();
    const beats = heartbeats ? `, ${heartbeats} heartbeat${heartbeats === 1 ? "" : "s"}` : "";
    ui.status.textContent =
      `${arrived} inner responses over one connection in ${formatMs(since())}${beats}. ` +
      "Rows are in arrival order; compare the Request-Id column with the order the requests were sent.";
  } catch (error) {
    ui.status.textContent = `The demo failed: ${error.message}`;
    ui.status.classList.add("error");
  } finally {
    ui.button.disabled = false;
  }
}

function setUpPage() {
  const ui = {
    button: document.getElementById("run"),
    status: document.getElementById("status"),
    rows: document.getElementById("rows"),
  };
  const body = INNER_REQUESTS.map(innerRequestText).join("");
  const outerHead =
    `POST ${MUX_PATH} HTTP/1.1\r\nHost: ${location.host}\r\nContent-Type: application/http\r\n` +
    `Content-Length: ${new TextEncoder().encode(body).length}\r\n\r\n`;
  document.getElementById("outer-request").textContent = showCrlf(outerHead);
  document.getElementById("inner-requests").textContent = showCrlf(body);
  const notes = document.getElementById("request-notes");
  for (const request of INNER_REQUESTS) {
    const item = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = `Request-Id: ${request.id}`;
    item.append(code, ` ${request.method} ${request.target} — ${request.note}`);
    notes.appendChild(item);
  }
  for (const element of document.querySelectorAll("[data-host]")) {
    element.textContent = element.textContent.replaceAll("127.0.0.1:8080", location.host);
  }
  ui.button.addEventListener("click", () => {
    ui.status.classList.remove("error");
    runDemo(ui);
  });
}

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", setUpPage);
}
