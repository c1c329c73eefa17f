#!/usr/bin/env python3
"""A delaying TCP proxy: added round-trip time for bench/lab-rerun.sh where the kernel has no netem.

  delay-proxy.py --delay-ms 25 --route 10.213.7.11:22 [--route HOST:PORT ...] [--stats FILE]
  delay-proxy.py --self-test [--delay-ms 50]
  delay-proxy.py --measure-ssh-rtt HOST:PORT [--count 5]

Proxy: one listening port on 127.0.0.1 per --route (chosen by the kernel), each connection
forwarded to that route's upstream. Every chunk read in one direction is written to the other
side --delay-ms later (read at t, written at t + D; reading goes on meanwhile, so order is kept
and nothing limits throughput): 25 ms per direction is 50 ms of round-trip time. A new
connection is also held 2 D before the upstream connect, standing in for the TCP handshake's
round trip, which the local redirect completes at once. Once listening it prints one line,
"ready PORT=HOST:PORT ...", in the order of the routes. SIGTERM: stop, write the stats, exit 0;
SIGUSR1: write the stats and go on.

What it does not model: loss, jitter, TCP's own behaviour on a long link (slow start, window
limits, delayed ACKs): the kernel ACKs each side at once on loopback.

Stats (JSON, written atomically): per route and connection the bytes and chunks each way, the
"turns", and per exchange the bytes each way and the host's time to answer. A turn is counted
when data comes back from the upstream (host to admin) right after the last chunk went to it
(admin to host): one request/response exchange, which costs one round trip when the sender
waits for it. It is counted on TCP chunks, not on SSH messages (those are encrypted after the
key exchange), so it includes the SSH handshake (version, key exchange, user auth), channel
opens and closes, window adjusts and keepalives that are answered; an unsolicited message of
the server (e.g. OpenSSH's host-keys notice after auth) counts as a turn if the admin spoke
last, and so do the two SSH version lines, which both sides send at once (the client's is read
first, having waited out the emulated TCP handshake here). Chunks back to back in one direction
are one turn.

Self-test: a local echo server behind the proxy; fails unless each round trip is >= 2 D and the
fastest < 2 D + 0.9 D (an extra delay in one direction would fail), the first exchange of a new
connection >= 4 D (the emulated TCP handshake), a bulk echo of 2 MB comes back intact within
2 D + 1 s (a proxy that delayed chunk after chunk would take more than 30 D), and the turn
count of N exchanges is N.

--measure-ssh-rtt: one round trip on the path to an sshd: from sending our version line to the
first bytes of the server's key exchange init, which sshd sends only after reading the client's
version. Prints the median of --count tries in ms. It leaves each connection before auth.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time

CHUNK = 65536


def host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: want HOST:PORT")
    return host, int(port)


class Link:
    """One proxied connection's counters."""

    def __init__(self, delay):
        self.delay = delay
        self.turns = 0
        self.last = None  # "up" (admin to host) or "down" (host to admin): the last chunk read
        self.last_up_at = None
        self.bytes = {"up": 0, "down": 0}
        self.chunks = {"up": 0, "down": 0}
        self.greeting = 0  # bytes from the host before the admin sent any (the SSH banner)
        # Per exchange: bytes up, bytes back, and the host's time to answer in ms (from when the
        # last chunk up was due at the host to the first chunk back); a turn is an exchange that
        # got an answer.
        self.exchanges = []
        self.error = None

    def saw(self, direction, size):
        now = time.monotonic()
        if direction == "up":
            if self.last != "up":
                self.exchanges.append([0, 0, None])
            self.exchanges[-1][0] += size
            self.last_up_at = now
        elif not self.exchanges:
            self.greeting += size
        else:
            if self.last == "up":
                self.turns += 1
                self.exchanges[-1][2] = round((now - self.last_up_at - self.delay) * 1000, 1)
            self.exchanges[-1][1] += size
        self.last = direction
        self.bytes[direction] += size
        self.chunks[direction] += 1

    def as_dict(self):
        return {
            "turns": self.turns,
            "bytes_up": self.bytes["up"],
            "bytes_down": self.bytes["down"],
            "chunks_up": self.chunks["up"],
            "chunks_down": self.chunks["down"],
            "greeting_bytes": self.greeting,
            "exchanges": self.exchanges,
            "error": self.error,
        }


class Route:
    def __init__(self, upstream):
        self.upstream = upstream
        self.port = None
        self.links = []


async def pump(reader, writer, delay, link, direction):
    """Copy reader to writer, each chunk written `delay` s after it was read, in order."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            # Never early: sleep may wake a hair before its deadline.
            while (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if data is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    deliverer = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            if data:
                link.saw(direction, len(data))
            queue.put_nowait((loop.time() + delay, data or None))
            if not data:
                break
        await deliverer
    finally:
        deliverer.cancel()


async def serve_link(route, delay, client_reader, client_writer):
    try:
        await proxy_link(route, delay, client_reader, client_writer)
    except asyncio.CancelledError:
        pass  # shutting down: the finally below closed both sides


async def proxy_link(route, delay, client_reader, client_writer):
    link = Link(delay)
    route.links.append(link)
    up_writer = None
    try:
        # The TCP handshake's round trip, which the local redirect answered at once.
        await asyncio.sleep(2 * delay)
        try:
            up_reader, up_writer = await asyncio.open_connection(*route.upstream)
        except OSError as e:
            link.error = f"connect {route.upstream[0]}:{route.upstream[1]}: {e}"
            print(f"delay-proxy: {link.error}", file=sys.stderr)
            return
        pumps = [
            asyncio.create_task(pump(client_reader, up_writer, delay, link, "up")),
            asyncio.create_task(pump(up_reader, client_writer, delay, link, "down")),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    link.error = repr(task.exception())
        finally:
            for task in pumps:
                task.cancel()
    finally:
        for w in (client_writer, up_writer):
            if w is not None:
                w.close()


def write_stats(path, delay, routes):
    report = {
        "delay_ms": round(delay * 1000, 3),
        "routes": [
            {
                "listen": f"127.0.0.1:{r.port}",
                "upstream": f"{r.upstream[0]}:{r.upstream[1]}",
                "connections": [link.as_dict() for link in r.links],
            }
            for r in routes
        ],
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".stats.")
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


async def start_proxy(routes, delay):
    servers = []
    for route in routes:
        server = await asyncio.start_server(
            lambda r, w, route=route: serve_link(route, delay, r, w), "127.0.0.1", 0
        )
        route.port = server.sockets[0].getsockname()[1]
        servers.append(server)
    return servers


async def run_proxy(args):
    delay = args.delay_ms / 1000
    routes = [Route(upstream) for upstream in args.route]
    servers = await start_proxy(routes, delay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if args.stats:
        loop.add_signal_handler(signal.SIGUSR1, write_stats, args.stats, delay, routes)
    print("ready " + " ".join(f"{r.port}={r.upstream[0]}:{r.upstream[1]}" for r in routes), flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    if args.stats:
        write_stats(args.stats, delay, routes)
    return 0


# ---------------------------------------------------------------- self-test


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


async def exchange(reader, writer, payload):
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    assert got == payload, "echo came back different"
    return time.monotonic() - started


async def self_test(delay_ms):
    delay = delay_ms / 1000
    failures = []

    async def echo(reader, writer):
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    route = Route(("127.0.0.1", echo_server.sockets[0].getsockname()[1]))
    servers = await start_proxy([route], delay)

    reader, writer = await asyncio.open_connection("127.0.0.1", route.port)
    first = await exchange(reader, writer, b"hello\n")
    rounds = [await exchange(reader, writer, b"ping %d\n" % i) for i in range(4)]
    writer.close()
    print(f"delay {delay_ms} ms per direction: first exchange {ms(first)}, "
          f"then {', '.join(ms(r) for r in rounds)}")
    if first < 4 * delay:
        failures.append(f"first exchange {ms(first)} < 4 D (TCP handshake + one round trip)")
    if min(rounds) < 2 * delay:
        failures.append(f"a round trip of {ms(min(rounds))} < 2 D: the delay is missing")
    if min(rounds) >= 2.9 * delay:
        failures.append(f"the fastest round trip {ms(min(rounds))} >= 2 D + 0.9 D: too much delay")

    # Bulk: 2 MB written at once, echoed; chunks must be delayed side by side, not in a row.
    reader, writer = await asyncio.open_connection("127.0.0.1", route.port)
    await exchange(reader, writer, b"warm\n")
    blob = os.urandom(2 * 1024 * 1024)
    bulk = await exchange(reader, writer, blob)
    writer.close()
    print(f"bulk echo of 2 MB: {ms(bulk)}")
    if bulk < 2 * delay:
        failures.append(f"bulk echo {ms(bulk)} < 2 D")
    if bulk >= 2 * delay + 1.0:
        failures.append(f"bulk echo {ms(bulk)} >= 2 D + 1 s: chunks delayed one after another?")

    for s in servers + [echo_server]:
        s.close()
    # The counting rule on its own: the server's greeting is no turn, a run of chunks one way is one.
    counted = Link(0)
    for direction in ["down", "up", "up", "down", "down", "down", "up", "down", "up"]:
        counted.saw(direction, 1)
    if counted.turns != 2:
        failures.append(f"turns of down up up down down down up down up: {counted.turns}, want 2")
    if [e[:2] for e in counted.exchanges] != [[2, 3], [1, 1], [1, 0]] or counted.greeting != 1:
        failures.append(f"exchanges {counted.exchanges}, greeting {counted.greeting}")
    answers = [e[2] for e in route.links[0].exchanges]
    if len(answers) != 5 or min(answers) < 0:
        failures.append(f"the echo's answer times {answers}: want 5, none negative")
    turns = route.links[0].turns
    print(f"turns counted for 5 exchanges: {turns}")
    if turns != 5:
        failures.append(f"turns: {turns}, want 5")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "stats.json")
        write_stats(path, delay, [route])
        written = json.load(open(path))["routes"][0]["connections"]
        if [c["turns"] for c in written][:1] != [5] or len(written) != 2:
            failures.append(f"stats file: {written}")
    for f in failures:
        print(f"FAIL: {f}")
    print("delay-proxy self-test: " + ("FAIL" if failures else "PASS"))
    return 1 if failures else 0


# ---------------------------------------------------------------- one round trip to an sshd


async def ssh_rtt_once(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        # sshd may send lines before its version; its key exchange init follows ours.
        while not (await asyncio.wait_for(reader.readline(), 10)).startswith(b"SSH-"):
            pass
        started = time.monotonic()
        writer.write(b"SSH-2.0-bootstrap-bench-rtt-probe\r\n")
        await writer.drain()
        if not await asyncio.wait_for(reader.read(1), 10):
            raise ConnectionError("closed before its key exchange init")
        return time.monotonic() - started
    finally:
        writer.close()


async def measure_ssh_rtt(target, count):
    times = [await ssh_rtt_once(*target) for _ in range(count)]
    print(f"{statistics.median(times) * 1000:.1f}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--delay-ms", type=float, help="added delay per direction (default 25; self-test 50)")
    p.add_argument("--route", type=host_port, action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--stats", metavar="FILE", help="where to write the per-connection counts")
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--measure-ssh-rtt", type=host_port, metavar="HOST:PORT")
    p.add_argument("--count", type=int, default=5)
    args = p.parse_args()
    if args.self_test:
        return asyncio.run(self_test(args.delay_ms or 50))
    if args.measure_ssh_rtt:
        return asyncio.run(measure_ssh_rtt(args.measure_ssh_rtt, args.count))
    if not args.route:
        p.error("give at least one --route HOST:PORT (or --self-test)")
    args.delay_ms = 25 if args.delay_ms is None else args.delay_ms
    return asyncio.run(run_proxy(args))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C on the benchmark reaches its whole process group
        sys.exit(130)
