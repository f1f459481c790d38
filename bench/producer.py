"""One producer process of bench.py's `producers` rows: delay() as fast as it can.

    python bench/producer.py DB SYNC OUT FIRST

bench.py starts it (in its own session, like a worker) with a pipe on its standard input.
It opens the file as a producer (benchtasks.make_litequeue(DB, SYNC)), calls noop.delay()
once untimed (the connection is open and the task name registered before any timing), then
creates OUT.ready and blocks on its standard input. The bench writes one line there,
"START SECONDS" (a unix time and a duration), once every producer of the phase is ready.
The producer sleeps until START, then calls noop.delay(FIRST), noop.delay(FIRST + 1)... one
after the other, timing each call with time.perf_counter(), until SECONDS have passed. It
writes every call's latency (seconds, float64, native byte order) to OUT.lat, then OUT
itself, a JSON object: calls, began and ended (unix times of the first call's start and
the last call's end). OUT is written last, by rename, so the bench never reads half of it.
"""

import array
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))   # the litequeue.py of this checkout
sys.path.insert(0, BENCH_DIR)

import benchtasks  # noqa: E402


def main(argv):
    db, sync, out, first = argv
    first = int(first)
    app, noop, _ = benchtasks.make_litequeue(db, sync)
    noop.delay(first - 1)                     # opens the connection, registers the name
    with open(out + ".ready", "w"):
        pass
    line = sys.stdin.readline().split()
    if len(line) != 2:
        return 1                              # the bench gave up on this phase
    start, seconds = float(line[0]), float(line[1])
    latencies = array.array("d")
    clock, record, delay = time.perf_counter, latencies.append, noop.delay
    pause = start - time.time()
    if pause > 0:
        time.sleep(pause)
    began = time.time()
    t = clock()
    stop = t + seconds
    i = first
    while t < stop:
        delay(i)
        now = clock()
        record(now - t)
        t = now
        i += 1
    ended = time.time()
    with open(out + ".lat", "wb") as f:
        latencies.tofile(f)
    with open(out + ".tmp", "w") as f:
        json.dump({"calls": len(latencies), "began": began, "ended": ended,
                   "pid": os.getpid()}, f)
    os.replace(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
