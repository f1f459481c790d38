#!/usr/bin/env python
"""A DBOS Transact worker for bench.py's peer rows: one process that runs the bench's queue.

    python bench/dbos_worker.py DB POLL      # POLL: the queue's polling interval, or 'default'

The system database is the SQLite file DB (`sqlite:///DB`), which the bench has created
(DBOS.migrate) and on which it has registered the queue. This process registers the
workflows of benchtasks.make_dbos() (noop, chain), makes its DBOS instance (log level
WARNING, as the other workers' -l WARNING / -q; every other setting at DBOS's defaults),
launches it and registers the queue again, as an application does at start-up:
`worker_concurrency=2` (at most 2 of the queue's workflows at once in this process, DBOS's
nearest equivalent of `-c 2`; its workflows run on threads of this one process) and the
polling interval POLL (DBOS's default, 1 s, when 'default'). It then runs until SIGTERM or
SIGINT, and shuts DBOS down (DBOS.destroy) before it exits.

Drain marks: with DBOSBENCH_MARKS set (a directory), noop writes
start-<pid> and end-<pid>-<thread id> (see benchtasks.make_dbos).
"""

import os
import signal
import sys
import threading

sys.dont_write_bytecode = True

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import benchtasks  # noqa: E402


def main(argv):
    db, poll = argv[1], argv[2]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())

    from dbos import DBOS

    benchtasks.make_dbos(os.environ.get("DBOSBENCH_MARKS"))
    DBOS(config={"name": benchtasks.DBOS_APP, "system_database_url": f"sqlite:///{db}",
                 "log_level": "WARNING"})
    try:
        DBOS.launch()
        options = {} if poll == "default" else {"polling_interval_sec": float(poll)}
        DBOS.register_queue(benchtasks.DBOS_QUEUE, worker_concurrency=2, **options)
        stop.wait()
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
