#!/usr/bin/env python
"""The dashboard under a slowloris and a connect/close flood: how long a legitimate request
takes, and how long SIGTERM takes to end the process.

    python bench/dashboard_flood.py                    # 3 runs of 200 requests
    python bench/dashboard_flood.py --runs 5 --hogs 2  # beside 2 CPU-bound processes
    python bench/dashboard_flood.py --against old/litequeue.py   # runs alternate between
                                                       # this checkout and another version
    python bench/dashboard_flood.py --slowloris 0 --flooders 0   # no attack: the floor

Every attacker runs in its own process, as a real one would, and so does the dashboard
(with the usual limit of 1 024 descriptors); this process only times requests, one new
connection each (a browser's first request), so no GIL of the attackers' inflates them.

- slowloris: --slowloris N sockets (half send half a request line, then nothing); with
  --reconnect each one the server closes is opened again at once.
- flood: --flooders N processes that connect and close as fast as they can (or
  --flood-rate R a second each: a faster server lets a flood run faster, so compare
  versions at one rate too).
- hogs: --hogs N processes running `while 1: pass`.

Per run it prints the load average before it (the machine may be shared), the request
times (median, p90, p99, worst; also the worst connect and the worst time to the first byte
of the answer), how many connects took over 0.9 s (a SYN dropped by a full listen queue is
sent again after 1 s), the kernel's listen-queue overflows during the run (system-wide,
from /proc/net/netstat), the attackers' connections per second, and SIGTERM's time.
"""

import argparse
import http.client
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITEQUEUE_PY = os.path.join(REPO, "litequeue.py")

SLOWLORIS = r'''
import resource, selectors, socket, sys
port, n, reconnect = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
sel = selectors.DefaultSelector()
opened = 0
def open_one(i):
    global opened
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        return
    opened += 1
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, [i, False])
for i in range(n):
    open_one(i)
print("ready", flush=True)
sel.register(sys.stdin, selectors.EVENT_READ, None)
while True:
    for key, events in sel.select(1.0):
        if key.data is None:
            print(opened, flush=True)
            sys.exit(0)
        s, (i, sent) = key.fileobj, key.data
        if events & selectors.EVENT_WRITE and not sent:
            if i % 2:
                try:
                    s.send(b"GET /data/overview HTTP/1.1\r\nHost: x")
                except OSError:
                    pass
            sel.modify(s, selectors.EVENT_READ, [i, True])
        elif events & selectors.EVENT_READ:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:          # closed by the server: come back at once (--reconnect)
                sel.unregister(s)
                s.close()
                if reconnect:
                    open_one(i)
'''

FLOOD = r'''
import select, socket, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
count, ready, checked = 0, False, time.monotonic()
while True:
    if ready and rate:                        # paced: rate connections a second
        ahead = began + (count - 200) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        count += 1
    except OSError:
        pass
    if not ready and count >= 200:
        ready, began = True, time.monotonic()
        print("ready", flush=True)
    if time.monotonic() - checked > 0.1:
        checked = time.monotonic()
        if select.select([sys.stdin], [], [], 0)[0]:
            print(count, flush=True)
            sys.exit(0)
'''

HOG = "while 1: pass"


def listen_drops():
    """(ListenOverflows, ListenDrops) of the kernel so far."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], map(int, values.split()[1:])))
            return row.get("ListenOverflows", 0), row.get("ListenDrops", 0)
    return 0, 0


def make_db(directory):
    sys.path.insert(0, REPO)
    import litequeue
    db = os.path.join(directory, "jobs.sqlite")
    app = litequeue.LiteQueue(db)

    def add(x, y):
        raise AssertionError("never run")
    add.__module__, add.__qualname__, add.__name__ = "tasks", "add", "add"
    app.task(add).delay(1, 1)
    return db


def start_dashboard(db, directory, litequeue):
    log = os.path.join(directory, "dashboard.log")

    def limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, litequeue, "dashboard", db, "--port", "0"],
                                cwd=directory, stdin=subprocess.DEVNULL, stdout=err,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=limit)
    deadline = time.monotonic() + 30
    while True:
        text = open(log).read()
        found = re.search(r"on http://([^/\s]+)/", text)
        token_file = found and f"{db}-lq/dashboard-{found.group(1).rpartition(':')[2]}.token"
        if found and os.path.exists(token_file):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the dashboard did not start: {text}")
        time.sleep(0.05)
    token = open(token_file).read().strip()
    return proc, found.group(1), token, log


def timed_request(host, token):
    """(connect, first byte, total) seconds of one GET /data/overview on a new connection."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.connect()
        connected = time.perf_counter()
        conn.request("GET", "/data/overview", headers={"Host": host,
                                                       "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        first = time.perf_counter()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
    finally:
        conn.close()
    return connected - began, first - began, time.perf_counter() - began


def helper(code, *args, stdin=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=stdin,
                            stdout=subprocess.PIPE, text=True)


def wait_line(proc, what, timeout=60):
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise RuntimeError(f"{what} did not start within {timeout} s")
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"{what} did not start: {line!r}")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def one_run(args, directory, label, litequeue):
    db = os.path.join(directory, "jobs.sqlite")
    load = os.getloadavg()[0]
    proc, host, token, log = start_dashboard(db, directory, litequeue)
    port = int(host.rpartition(":")[2])
    attackers = []
    try:
        for _ in range(3):          # warm: a pooled database connection
            timed_request(host, token)
        if args.slowloris:
            attackers.append(helper(SLOWLORIS, port, args.slowloris, int(args.reconnect)))
            wait_line(attackers[-1], "the slowloris")
        for _ in range(args.flooders):
            attackers.append(helper(FLOOD, port, args.flood_rate))
        for p in attackers[1 if args.slowloris else 0:]:
            wait_line(p, "a flooder")
        drops_before = listen_drops()
        attack_began = time.monotonic()
        connects, firsts, totals = [], [], []
        failed = []
        for _ in range(args.requests):
            began = time.perf_counter()
            try:
                c, f, t = timed_request(host, token)
            except (OSError, RuntimeError) as exc:    # counted at the time it took
                failed.append(repr(exc))
                c = f = t = time.perf_counter() - began
            connects.append(c)
            firsts.append(f)
            totals.append(t)
        drops_after = listen_drops()
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        sigterm = time.monotonic() - began
    finally:
        attack_time = time.monotonic() - attack_began if attackers else 1
        for p in attackers:
            if p.poll() is None:
                p.stdin.close()
        counts = []
        for p in attackers:
            try:
                counts.append(p.stdout.read().strip())
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ms = [t * 1000 for t in totals]
    tracebacks = open(log).read().count("Traceback")
    rate = sum(int(c) for c in counts[1 if args.slowloris else 0:] if c.isdigit()) / attack_time
    print(f"{label}: load {load:.1f}; {args.requests} requests: median "
          f"{statistics.median(ms):.1f} ms, p90 {percentile(ms, 90):.1f}, p99 "
          f"{percentile(ms, 99):.1f}, worst {max(ms):.1f} (worst connect "
          f"{max(connects) * 1000:.1f}, worst first byte {max(firsts) * 1000:.1f}); over 100 "
          f"ms: {sum(t > 100 for t in ms)}; connects over 0.9 s: "
          f"{sum(c > 0.9 for c in connects)}; failed: {len(failed)}"
          f"{' ' + failed[0] if failed else ''}; listen overflows (system-wide) "
          f"+{drops_after[0] - drops_before[0]}; flood {rate:,.0f} connections/s; SIGTERM "
          f"{sigterm * 1000:.0f} ms; tracebacks {tracebacks}", flush=True)
    return statistics.median(ms), max(ms), sigterm * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slowloris", type=int, default=1100)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("--flood-rate", type=float, default=0,
                        help="connections a second per flooder (default: as fast as it can)")
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--reconnect", action="store_true",
                        help="the slowloris opens again each socket the server closes")
    parser.add_argument("--litequeue", default=LITEQUEUE_PY,
                        help="the litequeue.py whose dashboard to run (default: this checkout's)")
    parser.add_argument("--against", metavar="LITEQUEUE_PY",
                        help="another litequeue.py: each run measures both, one after the other")
    args = parser.parse_args()
    versions = [("this", os.path.abspath(args.litequeue))]
    if args.against:
        versions.append(("against", os.path.abspath(args.against)))
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    results = {label: [] for label, _ in versions}
    try:
        with tempfile.TemporaryDirectory() as directory:
            make_db(directory)
            print(f"slowloris {args.slowloris}{' reconnecting' if args.reconnect else ''}, "
                  f"flooders {args.flooders}"
                  f"{f' at {args.flood_rate:g}/s each' if args.flood_rate else ''}, hogs "
                  f"{args.hogs}, {os.cpu_count()} cores; "
                  + ", ".join(f"{label} = {path}" for label, path in versions), flush=True)
            for run in range(1, args.runs + 1):
                for label, path in versions:
                    results[label].append(one_run(args, directory, f"run {run} {label}", path))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    for label, _ in versions:
        medians, worsts, sigterms = zip(*results[label])
        print(f"{label}, over {len(worsts)} runs: median {min(medians):.1f}-{max(medians):.1f}"
              f" ms, worst {min(worsts):.1f}-{max(worsts):.1f} ms, SIGTERM "
              f"{min(sigterms):.0f}-{max(sigterms):.0f} ms")


if __name__ == "__main__":
    main()
