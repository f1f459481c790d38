"""A producer for the workflow chaos test, run as a process the test SIGKILLs: it queues
flows.chaos_flow(i) for i in range(START, END) and sends each its message, and writes
"queued I ID" / "sent I" to its log only once delay() or send() has returned."""
import os
import sys

from litequeue import LiteQueue

db, log, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = LiteQueue(db)
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for i in range(start, end):
    r = app.send_task("flows.chaos_flow", args=[i])
    os.write(fd, f"queued {i} {r.id}\n".encode())
    app.send(r.id, i, topic="go")
    os.write(fd, f"sent {i}\n".encode())
