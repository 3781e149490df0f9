"""A counting TCP relay: scenario 4's meter of bytes on the wire.

    python -m bench.servers.relay --port P --to Q

Accepts connections on 127.0.0.1:P, connects each to 127.0.0.1:Q, and
copies bytes both ways, counting the TCP payload in each direction
(client to server, server to client).  Every client in scenario 4 talks to a
server through this relay, so all protocols are counted by the same code at
the same level: what the application wrote to the socket, without TCP/IP
headers.

Control over stdin/stdout, one line each: it prints `ready` once listening;
each `report` line read from stdin is answered with one JSON line
{"to_server": bytes, "to_client": bytes, "connections": n} counted since
the previous report, once every relayed connection has closed (so the
last bytes a client wrote before it exited are in), or after a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import uvloop

#: Bytes read per socket read; the relay never holds more than one read per direction.
READ_SIZE = 256 * 1024
#: Seconds a report waits for open connections to close.
REPORT_WAIT = 5.0


class Counts:
    def __init__(self) -> None:
        self.to_server = 0
        self.to_client = 0
        self.connections = 0
        self.open = 0

    def take(self) -> dict[str, int]:
        out = {"to_server": self.to_server, "to_client": self.to_client, "connections": self.connections}
        self.to_server = self.to_client = self.connections = 0
        return out


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts, attribute: str) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            setattr(counts, attribute, getattr(counts, attribute) + len(data))
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def relay(counts: Counts, target: int, client_reader, client_writer) -> None:
    counts.connections += 1
    counts.open += 1
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            pipe(client_reader, server_writer, counts, "to_server"),
            pipe(server_reader, client_writer, counts, "to_client"),
        )
    except OSError:
        client_writer.close()
    finally:
        counts.open -= 1


async def main(port: int, target: int) -> None:
    counts = Counts()
    server = await asyncio.start_server(lambda r, w: relay(counts, target, r, w), "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    print("ready", flush=True)
    async with server:
        while line := await control.readline():
            if line.strip() == b"report":
                deadline = loop.time() + REPORT_WAIT
                while counts.open and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                print(json.dumps(counts.take()), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.servers.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to", type=int, required=True, help="server port on 127.0.0.1")
    args = parser.parse_args()
    uvloop.run(main(args.port, args.to))
