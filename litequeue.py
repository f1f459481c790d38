"""litequeue: Celery's programming model on one SQLite file, with no server to run.

Tasks are defined with a decorator, queued with ``delay()``, run by a pool of worker
processes and read back through an ``AsyncResult``. Everything lives in one SQLite file
in WAL mode; payloads are msgpack data, never code.

Data flow::

  producer (any process)               jobs.sqlite (WAL)                 worker supervisor
  add.delay(4, 4) ──INSERT+COMMIT──▶   tasks    (state machine)  ◀──── N children claim rows
        │                              workers  (who runs what)         with UPDATE..RETURNING,
        └──ring──▶ jobs.sqlite-lq/work/<super>  (datagram wake-up)      complete + claim fused
  AsyncResult.get() ◀──read── tasks ◀──ring── jobs.sqlite-lq/done/<waiter>
                                       jobs.sqlite-lq/locks/<worker>.lock
                                       (fcntl lock held while a worker lives:
                                        a free lock means its rows can be rescued)
                                       jobs.sqlite-lq/revocations (bumped by revoke())

The side directory jobs.sqlite-lq/ is ours alone (mode 0700, verified, reached only
through directory descriptors): see "Side directory" below. Nothing a row says can make a
process follow a link, name a file, or import code from outside the worker's directory.

Task states (the ``state`` column) and every transition, with the statement that makes
it (each statement's comment names its transitions again)::

  from                    to                       when                         statement
  (new row)               PENDING or SCHEDULED     delay(), group(), send_task  _SQL_INSERT_TASK
  (new row)               PENDING                  a periodic fire is due       _SQL_INSERT_FIRE
  (new row)               WAITING (or PENDING...)  a canvas: chain, chord, link _SQL_INSERT_CANVAS
  WAITING                 PENDING or SCHEDULED     its parent succeeded (link), _SQL_ACTIVATE_LINKS,
                                                   failed (errback), or its     _SQL_ACTIVATE_ERRBACKS,
                                                   chord's last member ended    _SQL_ACTIVATE_BODY
  WAITING                 FAILURE, REVOKED,        the chain step before it did _SQL_CASCADE
                          EXPIRED                  not succeed
  WAITING                 FAILURE                  a chord member did not       _SQL_FAIL_BODY
                                                   succeed (ChordError)
  WAITING                 (deleted)                an errback whose parent did  _SQL_DROP_ERRBACKS
                                                   not fail
  SCHEDULED, RETRY        PENDING                  its eta has come             _SQL_PROMOTE_DUE
  SCHEDULED, RETRY        FAILURE                  its eta is not a time        _SQL_QUARANTINE_ETA
  PENDING                 STARTED                  a child claims it            _SQL_CLAIM
  STARTED                 PENDING                  handed back unrun            _SQL_RELEASE
  STARTED (no worker)     PENDING                  found by the quarantine      _SQL_RELEASE_UNOWNED
  STARTED                 SUCCESS, FAILURE,        its outcome (fenced by       _SQL_COMPLETE
                          RETRY, EXPIRED           attempt and worker)
  STARTED                 PENDING, RETRY, FAILURE  its process died             _SQL_SETTLE_LOST
  STARTED (a workflow)    WAITING, SCHEDULED       its run ended at a wait: a   _SQL_SUSPEND
                          (or PENDING)             task step, a sleep, a recv
  WAITING (a workflow)    PENDING                  the task step it waits for   _SQL_WAKE_WORKFLOW
                                                   ended (in that end's commit)
  WAITING, SCHEDULED      PENDING                  a message on the topic its   _SQL_WAKE_RECEIVER
  (a workflow in recv)                             recv() waits for
  PENDING, SCHEDULED,     REVOKED                  revoke() (STARTED only if    _SQL_REVOKE
  RETRY, WAITING,                                  not begun, or terminate)
  STARTED
  FAILURE, REVOKED,       PENDING                  `litequeue retry`            _SQL_REQUEUE
  EXPIRED
  finished                (deleted)                result_expires, forget()     _SQL_PRUNE,
                                                                                _SQL_FORGET
  waiting                 (deleted)                `litequeue purge`            _SQL_PURGE

  A waiting row past its expires reads EXPIRED before a child marks it so.
  Every end of a row with followers runs _Storage._settle in the same transaction (a
  child's outcome, a rescue, revoke(), the quarantine), so a follow-up is queued exactly
  when its cause commits: a crash can neither lose it nor queue it twice.

Wake-up channels (datagram sockets in jobs.sqlite-lq/; each name is defined once, in
_Doorbell and _Sleeper's callers)::

  channel          who sleeps on it        who rings it
  work/<super>     a supervisor's idle     delay() of a PENDING task, the scheduler after
                   children, all on one    it promotes or fires, a rescue that requeues,
                   socket (a datagram      `litequeue retry`; a child that claimed and
                   wakes one or more)      saw rows left (it passes the ring on); a child
                                           whose task held a concurrency slot, once its
                                           end commits; a workflow's step task only when
                                           its own process will not claim it at once
  child/<child>    each child              its supervisor: an eta near, a revoke
  sched/<super>    each supervisor         delay() of a SCHEDULED task; a child after a
                                           RETRY, before a hard-limited task, or when the
                                           WAL grows; revoke(terminate=True)
  done/<tag>.*     AsyncResult.get()       the child that commits the task's outcome

Monitoring reads the same file: each worker process adds per-minute counters (the stats
table) with a commit at most once a second; `litequeue dashboard`, /metrics and `litequeue
health` read those, the workers table, lock files and the small state indexes, and never
take the write lock to read.

Global limits live in the file too: a rate-limited or concurrency-limited task's rows wait
in the limited lane (rate_key, tasks_limited), and a claim takes a row of it only when
the name's next start has come and fewer rows of the name, its key or its queue are
STARTED than their limits, counted in the claim's own transaction.

A row nobody can read never stops a loop: a child records it FAILURE saying why, and the
supervisor sets aside what its scheduler cannot read and repairs a rate limit or pause no
claim can use (quarantine). A busy write lock or a full disk is waited out; a supervisor
step that keeps failing ends the worker (exit 2).

Every loop is a step a test can drive in its own process: _Child.step() (and
work_until_empty(), which runs it until no row is ready), _Scheduler.step(now) on a
clock the test chooses, and the janitor's _Timers.step(now).

Sections, in file order (each uses only the sections above it; a test checks it)::

  Exceptions              one tree under LitequeueError; Retry outside it
  Constants               state names; tuning constants, each with its reason
  Serialization and small helpers   msgpack in one place, error encoding, text limits
  Settings                _SETTINGS (default, check, help), Celery's names, app.conf
  Time                    zones, crontab, intervals, planning periodic fires
  SQL                     migrations, then every statement as a named constant
  Storage                 files, rows and text repair; the connection; then _Storage,
                          the only code that touches apsw, one method per statement
  Side directory          the verified directory, wake-up sockets, the revoke counter
  Worker lock files       who is alive, and what each worker process is running
  Task policy             pure decisions: retry budget, backoff, failure handling
  Task context            the request, progress, Celery's signals, shared_task
  Workflows               a workflow's run: its steps replayed from their records, new
                          ones recorded; durable sleep, messages, events, step functions
  Results                 AsyncResult, EagerResult, GroupResult
  Admin                   what the CLI and the dashboard do to a queue
  App                     LiteQueue, then Task (Task.s() hands out the canvas's
                          Signature: the one declared forward use)
  Canvas                  Signature, chain, group, chord and their plans
  Worker: task code       finding and importing task modules
  Worker: the child's parts   counters, claimed rows, time limits, coroutine and
                          thread runners
  Worker: the child       _RunPipeline (one row, whichever runner runs it),
                          _Offloading (coroutines and threads), _Child (the loop:
                          claim, run, commit), and how a child process starts
  Alerts                  failure mails, systemd notify
  Worker: the supervisor  _Guard (a step's errors), _Timers (the janitor), _Scheduler
                          (due rows, periodic fires), _Supervisor (children, signals,
                          operators' requests, shutdown)
  Monitoring              health checks, /metrics, Flower's task fields
  Dashboard               the HTTP server: the token, the password, the selector loop
                          and its bounds, the pages' JSON, Flower's API, the actions
  CLI                     the click group and its commands
  Assets                  the demo's tasks and the dashboard's page; the entry point

One task, from delay() to get(), by function::

  producer  Task.delay -> Task.apply_async -> LiteQueue._send -> LiteQueue._task_row
            (_pack_envelope) -> _Storage.insert_task (_SQL_INSERT_TASK, one commit)
            -> _Doorbell.ring on work/
  child     _Child.step -> _Child._refill -> _Child._commit ->
            _Storage.complete_and_claim (_SQL_CLAIM) -> _Child._run (a _Run; coroutines
            and -P threads: _Child._dispatch) -> _Child._begin (_Child._prepare:
            _unpack_envelope; the _Request; _task_started) -> the function ->
            _Child._finish -> _conclude (_failure_decision when it raised) -> _Outcome
            -> _Child._end (kept in _Pending, counted) -> _Child._commit ->
            _Storage.complete_and_claim (_SQL_COMPLETE, then _Storage._settle for its
            followers, in the same transaction) -> _Doorbell.ring_tasks on done/<tag>
  caller    AsyncResult.get -> AsyncResult._waiting (a _Sleeper on done/<tag>) ->
            AsyncResult._fetch (_SQL_GET_TASK) -> AsyncResult._ended (_unpack_stored)

Example (README repeats it)::

    # tasks.py
    from litequeue import LiteQueue
    app = LiteQueue("jobs.sqlite")

    @app.task
    def add(x, y):
        return x + y

    # shell:  python litequeue.py worker jobs.sqlite
    # python: add.delay(4, 4).get(timeout=10)  ->  8
"""

__version__ = "0.1.0"

__all__ = [
    "LiteQueue", "Task", "AsyncResult", "group", "GroupResult", "Retry", "Admin",
    "Signature", "signature", "subtask", "chain", "chord", "ChordError", "signals",
    "shared_task", "EagerResult", "current_app", "current_task",
    "LitequeueError", "ConfigurationError", "DatabaseError", "CorruptDatabase",
    "ForeignDatabase", "SchemaTooNew", "DatabaseBusy", "DiskFull", "ReadOnlyDatabase",
    "SideDirectoryError", "CorruptResult", "SerializationError", "WrongType",
    "UnknownTask", "NotRegistered", "TaskRevokedError", "UnknownWorker", "DuplicateTaskId",
    "TaskNotFound", "TimeoutError", "RemoteError", "WorkflowChanged",
    "WorkerLostError", "TaskRevoked", "LitequeueWarning", "MaxRetriesExceededError",
    "TimeLimitExceeded", "Ignore", "Reject", "IncompleteStream", "ResultSet", "StampingVisitor",
    "result_from_tuple",
    "SoftTimeLimitExceeded", "crontab", "allow_join_result", "get_task_logger",
    "PENDING", "SCHEDULED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
    "EXPIRED", "UNKNOWN", "READY_STATES", "DEFAULTS", "states",
]

import bisect
import base64
import binascii
import builtins
import collections
import contextlib
import contextvars
import copy
import datetime as _dt
import difflib
import errno
import fcntl
import fnmatch
import functools
import hashlib
import hmac
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import marshal
import math
import mmap
import multiprocessing
import os
import pickle
import queue
import random
import re
import reprlib
import resource
import secrets
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback as _traceback
import types
import urllib.parse
import uuid
import warnings
import weakref
import zlib
import zoneinfo

import apsw
import click
import msgpack

# `python litequeue.py ...`: this module becomes the importable `litequeue` before it
# defines anything, so tasks.py (which imports litequeue) and the CLI share one registry
# and one set of classes, and the file is compiled once, not again by an import. The
# worker's children are spawned: a bare __main__ keeps multiprocessing from running this
# script again in each of them. The CLI runs at the end of the file.
_RUN_AS_SCRIPT = __name__ == "__main__" and "litequeue" not in sys.modules
if _RUN_AS_SCRIPT:
    __name__ = "litequeue"                      # noqa: A001 (what defs and classes record)
    sys.modules["litequeue"] = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
elif __name__ == "__main__":                  # already imported under its own name: run that
    import litequeue
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.exit(litequeue.cli())
# The code this module was made from, which the worker hands to each child it starts
# (_child_process): a child then neither reads nor compiles the file again.
_MODULE_CODE = sys._getframe().f_code if hasattr(sys, "_getframe") else None
# This module's file as its code objects name it (in a child too, which runs _MODULE_CODE):
# frames of this file are litequeue's own, never a user's.
_THIS_FILE = _MODULE_CODE.co_filename if _MODULE_CODE is not None else __file__

logger = logging.getLogger("litequeue")
logger.addHandler(logging.NullHandler())


# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------

class LitequeueError(Exception):
    """Base class of every error litequeue raises."""


class ConfigurationError(LitequeueError, ValueError):
    """A setting, schedule, time zone or option is invalid."""


class WrongType(ConfigurationError, TypeError):
    """An argument or option has the wrong type (a queue that is not text, say). Also a
    TypeError, as Python's own check would raise."""


class _BrokenModule(ConfigurationError):
    """A task or config module raised while it was imported (a SyntaxError, an error at
    its top level). The CLI prints its one line and exits 2."""


class DatabaseError(LitequeueError):
    """The database file cannot be used."""


class CorruptDatabase(DatabaseError):
    """The file is not a SQLite database, or it is damaged."""


class ForeignDatabase(DatabaseError):
    """The file is a SQLite database that litequeue did not create."""


class SchemaTooNew(DatabaseError):
    """The file was written by a newer litequeue than this one."""


class DatabaseBusy(DatabaseError):
    """The write lock was not obtained within busy_timeout."""


class DiskFull(DatabaseError):
    """The disk holding the database is full: the write did not happen."""


class ReadOnlyDatabase(DatabaseError):
    """This process may not write the database file or its directory."""


class SideDirectoryError(DatabaseError):
    """The directory beside the database (DB-lq/) cannot be used safely."""


class CorruptResult(DatabaseError):
    """A stored result or error history cannot be decoded."""


class BadText(DatabaseError):
    """A row holds text that is not UTF-8 (another client wrote it), and this process
    could not repair it (a read-only user, say)."""


class SerializationError(LitequeueError, TypeError):
    """Task arguments or a result cannot be encoded as msgpack."""


class NotRegistered(LitequeueError, KeyError):
    """No task of that name is registered (Celery's NotRegistered; also UnknownTask)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class UnknownWorker(LitequeueError, KeyError):
    """No live worker has that id or name."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class DuplicateTaskId(LitequeueError):
    """A task with that id already exists."""


class TaskNotFound(LitequeueError):
    """No task has that id (never queued, forgotten, or expired and pruned)."""


class TimeoutError(LitequeueError, builtins.TimeoutError):
    """AsyncResult.get() ran out of time before the task finished."""


class RemoteError(LitequeueError):
    """Stand-in for a task's exception that cannot be rebuilt in this process.

    ``exc_type`` is the original type's dotted name, ``exc_message`` its message and
    ``remote_traceback`` the worker's traceback text.
    """

    def __init__(self, exc_type, exc_message, remote_traceback=None):
        super().__init__(exc_type, exc_message)
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback

    def __str__(self):
        return f"{self.exc_type}: {self.exc_message}"


class ChordError(LitequeueError):
    """A chord's body did not run because a member of its header did not succeed."""


class IncompleteStream(LitequeueError):
    """AsyncResult.collect() met a task of the graph that is not ready (Celery's)."""


class TaskRevokedError(LitequeueError):
    """get() of a task that was revoked, expired or terminated (Celery's; also
    TaskRevoked). Its message is Celery's word: revoked, expired or terminated."""


UnknownTask, TaskRevoked = NotRegistered, TaskRevokedError


class WorkerLostError(LitequeueError):
    """The process running the task died before it finished."""


class MaxRetriesExceededError(LitequeueError):
    """A task asked for a retry after using up max_retries, with no exception to report."""


class TimeLimitExceeded(LitequeueError):
    """The task ran past its hard time_limit; its process was killed."""


class SoftTimeLimitExceeded(LitequeueError):
    """Raised inside a task when its soft_time_limit passes, so it can clean up."""


class LitequeueWarning(UserWarning):
    """A setting or option that litequeue accepts but ignores."""


class Ignore(Exception):
    """Raised by a task (Celery's celery.exceptions.Ignore): no outcome is recorded. The
    row ends IGNORED (its detailed_state), and .state stays what the task last set with
    update_state(), else PENDING, as in Celery; nothing follows it."""


class _Replaced(Ignore):
    """Task.replace() handed the running task's id over to its replacement: the run
    records nothing (its row is gone, the replacement's last step took its id)."""


class Reject(Exception):
    """Raised by a task (Celery's celery.exceptions.Reject): with requeue=True the row is
    queued again a second later (a redelivery: its retries do not count); else it ends
    REJECTED and, like Ignore, records nothing else."""

    def __init__(self, reason=None, requeue=False):
        super().__init__(reason, requeue)
        self.reason, self.requeue = reason, requeue


class WorkflowChanged(LitequeueError):
    """A workflow's run called a different step, at some index, from the one its earlier
    runs recorded there: its code changed between runs (or it is not deterministic)."""


class _Suspended(BaseException):
    """A workflow's run reached a step it must wait for (a task not finished, a sleep not
    over, no message yet): the run ends and frees its process, and the row waits (waits,
    and eta if the wait has an end). A BaseException, so that a workflow's own ``except
    Exception`` does not catch it."""

    def __init__(self, waits, eta=None, shown=""):
        super().__init__(shown or waits)
        self.waits, self.eta, self.shown = waits, eta, shown


class _Superseded(BaseException):
    """A workflow's run may no longer record steps: its row was rescued and claimed again
    (the attempt it holds is stale), or it ended. Its writes are rolled back."""


# How a workflow's run ends other than by returning or failing: no traceback is kept.
_WORKFLOW_ENDS = (_Suspended, _Superseded)


class Retry(Exception):
    """Raised by ``self.retry()`` inside a task to ask for a retry.

    Deliberately outside LitequeueError, so ``except LitequeueError`` in a task never
    swallows it.
    """

    def __init__(self, message=None, exc=None, countdown=None, eta=None, max_retries=None):
        when = f"in {countdown}s" if countdown is not None else \
            f"at {eta}" if eta is not None else "requested"
        super().__init__(message or (f"Retry {when}: {exc!r}" if exc else f"Retry {when}"))
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        self.max_retries = max_retries


# ---------------------------------------------------------------------------
# Constants
# State names, and every tuning constant with the reason for its value.
# ---------------------------------------------------------------------------

PENDING = "PENDING"        # queued, waiting for a worker
SCHEDULED = "SCHEDULED"    # waiting for its ETA
WAITING = "WAITING"        # waiting for another task's end (a link, errback or chord body);
                           # AsyncResult shows it as PENDING, as Celery would
STARTED = "STARTED"        # claimed by a worker process
RETRY = "RETRY"            # failed, waiting to be retried
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
EXPIRED = "EXPIRED"
UNKNOWN = "UNKNOWN"        # no such task id (never queued, forgotten or pruned)
IGNORED = "IGNORED"        # the task raised Ignore: ended, its outcome not recorded
REJECTED = "REJECTED"      # the task raised Reject (requeue=False): likewise
_REPLACED = "REPLACED"     # a run's outcome only, never a row's: Task.replace() took its row
_SUSPENDED = "SUSPENDED"   # a run's outcome only: a workflow's run ended at a wait (_Suspended)

# A row in one of these states will not run again (an expired row reads REVOKED in .state).
_ENDED_STATES = frozenset({SUCCESS, FAILURE, REVOKED, EXPIRED})
# Celery's: the states AsyncResult.state reads once a task is ready.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
# AsyncResult.state answers in Celery's states; detailed_state keeps litequeue's finer one.
_CELERY_STATE = {SCHEDULED: PENDING, WAITING: PENDING, UNKNOWN: PENDING, EXPIRED: REVOKED}


class states:
    """Celery's celery.states, as one namespace: ``from litequeue import states``."""
    PENDING, RECEIVED, STARTED, SUCCESS, FAILURE = \
        PENDING, "RECEIVED", STARTED, SUCCESS, FAILURE
    REVOKED, REJECTED, RETRY, IGNORED = REVOKED, REJECTED, RETRY, IGNORED
    READY_STATES = READY_STATES
    UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
    EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
    PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
    ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})


# The states a stored row is in, in their usual order (the dashboard's state filter).
_STATES_SHOWN = (PENDING, SCHEDULED, WAITING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED,
                 EXPIRED, IGNORED, REJECTED)
# A periodic task an operator disabled (Admin.disable_schedule) has this as its error.
_SCHEDULE_OFF = "disabled by an operator"
# The built-in step that gathers a group's results for what follows it (a group body),
# and that ends a Task.replace() under the replaced task's id.
_GATHER = "litequeue.accumulate"
# The most rows a task page's workflow timeline reads: past a few hundred bars a
# timeline is no longer readable, and reading them would hold the page up.
_WORKFLOW_MAX = 200
# The traceback of a row revoked with terminate=True: what tells a supervisor to kill the
# process running it.
_TERMINATE_NOTE = "revoked with terminate=True"

# "LQE1": tells our files apart from every other SQLite file.
APPLICATION_ID = 0x4C514531


# Results of fast tasks are committed together; a task that ran longer than this commits
# its result alone, so group commit never delays a result a caller can notice.
_GROUP_COMMIT_WINDOW = 0.002
# Upper bounds (seconds) of the runtime histogram's buckets in the stats table (h0..hN,
# hN counting the rest): Prometheus's default buckets, stretched to five minutes.
_RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0)
# Workers write their stats at most this often (seconds); the dashboard keeps this long.
# A long task does not hold them back: the child's watch thread (_Watch) writes them.
_STATS_FLUSH = 1.0
_STATS_KEEP = 8 * 86400
# update_state() of a running task is written at most this often (seconds).
_PROGRESS_INTERVAL = 0.2
# First fallback poll after activity; it doubles up to worker_poll_interval.
_POLL_MIN = 0.01
# How often a supervisor looks for dead workers' locks (a read, never a write).
_RESCUE_INTERVAL = 2.0
# How often a supervisor checks the WAL: often while it grows (a busy worker writes about
# 2.5 KB of WAL per task, up to 100 MB/s here), rarely when it does not.
_CHECKPOINT_INTERVAL = 0.5
# The supervisor's last stretch before an ETA is a plain sleep, not a millisecond wait().
_ETA_FINE_WAIT = 0.002
_CHECKPOINT_BUSY_INTERVAL = 0.1
# Past this size the WAL is checkpointed with TRUNCATE, which empties it.
_WAL_TRUNCATE_BYTES = 1 * 1024 * 1024
# How long a truncating checkpoint may wait for the write lock and for readers.
_TRUNCATE_WAIT_MS = 1000
# A directory listing whose mtime is this recent may miss an entry made in the same tick.
_LISTING_SETTLE = 0.05
# A child that dies within this many seconds of starting is restarted with backoff.
_FAST_DEATH = 1.0
_RESTART_BACKOFF_MAX = 10.0
# The most processes an operator may grow a pool to: each is a Python process of some
# 30 MB, so this is already several GB; more is a typo, not a plan.
_POOL_MAX = 256
# How often a supervisor re-reads the next due time, for writers that do not ring.
_SCHEDULER_RESCAN = 2.0
# Due ETA rows promoted per transaction; the first is small, so that the children start
# on a burst at once (promoting 200 rows takes about 1 ms).
_PROMOTE_BATCH = 1000
_PROMOTE_FIRST_BATCH = 32
# A row that falls due is first left to the children, which claim it as it stands
# (_DUE_ROWS) when the supervisor rings them at its due time: one hop and one transaction
# fewer. Rows still waiting this much later (every child busy, a paused queue, a rate
# limit) are promoted to PENDING, where priorities order them.
_DUE_CLAIM_GRACE = 0.005
# The children are rung this long before an eta: a process that has slept for seconds
# takes up to a millisecond to run again on a VM, one that has just run a fraction of it.
_ETA_PREWAKE = 0.002
# The longest durable sleep or recv() timeout of a workflow, seconds (ten years): an eta
# further off is a mistake, and infinity is not a time a row can hold.
_WAIT_MAX = 10 * 365 * 86400.0
# catch_up="all" fires at most this many missed times per schedule per pass.
_CATCH_UP_MAX = 1000
# catch_up="none": a fire later than this is skipped, not run late.
_CATCH_UP_NONE_GRACE = 10.0
_CATCH_UP_POLICIES = ("once", "all", "none")
# Finished rows deleted per pruning transaction: short enough not to hold up claims.
_PRUNE_BATCH = 2000
# Free pages handed back per vacuum transaction (1 MiB of 4 KiB pages): one pass over the
# pages a big prune freed wrote 4 MiB of WAL in a single transaction.
_VACUUM_STEP_PAGES = 256
# A worker process retries a busy write lock after 0.1 ms, 0.2 ms, ... up to 2 ms: a claim
# holds the lock for about 0.1 ms. A producer retries every 0.1 ms, so that delay() is not
# starved by workers that retake the lock back to back.
_BUSY_STEP = 0.0001
_BUSY_STEPS_WORKER = 20
_BUSY_STEPS_PRODUCER = 1


# A busy write lock or a full disk is waited out: retries back off up to this many
# seconds, and the warning about it repeats at most this often.
_TROUBLE_BACKOFF_MAX = 1.0
_TROUBLE_LOG_INTERVAL = 30.0
# A supervisor step that fails this many times in a row, with bad rows set aside between
# tries, is not going to recover: the worker ends, so that its service manager restarts it.
_STEP_FAILURES_MAX = 5
# How often a supervisor removes wake-up sockets that killed processes left behind.
_SWEEP_INTERVAL = 60.0


# ---------------------------------------------------------------------------
# Serialization and small helpers
# ---------------------------------------------------------------------------

def _pack(obj, packers=threading.local()):
    """msgpack bytes of obj. strict_types: a subclass (a tuple, a canvas that is a dict,
    an IntEnum) goes through _pack_other, which packs it as its base type; msgpack would
    trust its __len__. Each thread reuses its Packer (making one costs more than packing
    a call's arguments); a nested call, or one after a failed pack, makes its own."""
    packer = packers.__dict__.pop("packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, datetime=True, default=_pack_other,
                                strict_types=True)
    data = packer.pack(obj)
    packers.packer = packer
    return data


def _listed(value):
    """Nested tuples as lists (what _pack_other returns is packed with no second call)."""
    return [_listed(v) for v in value] if isinstance(value, (list, tuple)) else value


def _pack_other(obj):
    """Values msgpack has no type for: naive datetimes, dates, UUIDs, Decimals and big
    integers as extensions (_unpack_other reads them back), as Celery's JSON carries
    them. A signature (or chain, group, chord) travels in Celery's dict form, as Celery
    sends it; signature(d) rebuilds it. A pydantic model travels as its dict (a
    pydantic=True task validates it back)."""
    kind = type(obj)
    if isinstance(obj, dict):                       # by its items, whatever its __len__
        return {k: v for k, v in dict.items(obj)}
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, int) and kind is not bool:
        if -2**63 <= obj < 2**64:
            return int(obj)
        return msgpack.ExtType(_EXT_BIG_INT, str(int(obj)).encode())
    if isinstance(obj, (float, str, bytes)):
        return (float if isinstance(obj, float) else str if isinstance(obj, str)
                else bytes)(obj)
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is not None and obj.utcoffset() is not None:     # a subclass's
            return _dt.datetime.fromtimestamp(obj.timestamp(), _dt.timezone.utc)
        return msgpack.ExtType(_EXT_NAIVE, obj.replace(tzinfo=None).isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if kind.__name__ == "Decimal" and kind.__module__ == "decimal":
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    as_tuple = getattr(obj, "as_tuple", None)       # a result: Celery's tuple form
    if callable(as_tuple) and hasattr(obj, "app"):
        return _listed(as_tuple())
    dump = getattr(obj, "model_dump", None)       # a pydantic model travels as its dict
    if callable(dump) and hasattr(type(obj), "model_validate"):
        return dump(mode="json")
    raise TypeError(f"can not serialize {type(obj).__name__!r} object")


def _unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False, timestamp=3,
                           ext_hook=_unpack_other)


# msgpack extension codes of the values Celery's JSON carries and msgpack has no type
# for: naive datetimes, dates, Decimals, UUIDs and integers past 64 bits.
_EXT_NAIVE, _EXT_DATE, _EXT_DECIMAL, _EXT_UUID, _EXT_BIG_INT = 1, 2, 3, 4, 5


def _unpack_other(code, data):
    """A value _pack_other wrote as an extension (ValueError if its bytes are not one);
    an extension of another code is left as msgpack's ExtType."""
    if code == _EXT_UUID:
        return uuid.UUID(bytes=bytes(data))
    if code not in (_EXT_NAIVE, _EXT_DATE, _EXT_DECIMAL, _EXT_BIG_INT):
        return msgpack.ExtType(code, data)
    text = bytes(data).decode("ascii")
    if code == _EXT_NAIVE:
        return _dt.datetime.fromisoformat(text)
    if code == _EXT_DATE:
        return _dt.date.fromisoformat(text)
    if code == _EXT_BIG_INT:
        if len(text) > 4300:
            raise ValueError("an integer of more than 4300 digits")
        return int(text)
    import decimal
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError(f"not a decimal: {text[:50]!r}") from None


def _pack_envelope(task_name, args, kwargs, options=None):
    """The msgpack envelope of one call: {"args": [...], "kwargs": {...}}, and "options"
    when the call has any that the running task sees (_CALL_OPTIONS)."""
    try:
        envelope = {"args": list(args), "kwargs": dict(kwargs)}
        if options:
            envelope["options"] = options
        payload = _pack(envelope)
        # Some values pack but do not read back (a dict keyed by tuples, a datetime outside
        # years 1-9999 in UTC): refuse them here, not in the worker.
        _unpack(payload)
        return payload
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(
            f"arguments of {task_name} cannot be encoded as msgpack: {exc} (supported: "
            "None, bool, int, float, str, bytes, list, tuple, dict with hashable keys, "
            "datetime, date, Decimal, UUID)") from None


def _unpack_envelope(payload):
    """(args, kwargs) from a payload, or ValueError saying what is wrong with it."""
    return _unpack_call(payload)[:2]


def _unpack_call(payload):
    """(args, kwargs, options) from a payload, or ValueError saying what is wrong with
    it. options are the call's _CALL_OPTIONS, those of the right type only ({}: none): a
    foreign writer's wrong one is left out, never a reason to fail the call."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError(f"payload is {type(payload).__name__}, not msgpack bytes")
    try:
        envelope = _unpack(bytes(payload))
    except Exception as exc:
        raise ValueError(f"payload is not valid msgpack: {exc}") from None
    if not isinstance(envelope, dict):
        raise ValueError(f"envelope is {type(envelope).__name__}, not a map")
    args = envelope.get("args", [])
    kwargs = envelope.get("kwargs", {})
    if not isinstance(args, list):
        raise ValueError("envelope 'args' is not an array")
    if kwargs.__class__ is not dict or kwargs and not all(isinstance(k, str) for k in kwargs):
        raise ValueError("envelope 'kwargs' is not a map with string keys")
    options = envelope.get("options")
    if options.__class__ is not dict:
        return args, kwargs, {}
    return args, kwargs, {key: value for key, value in options.items()
                          if key in _CALL_OPTIONS and _CALL_OPTIONS[key](value)}


# apply_async options the running task sees (self.request), kept in the envelope, with the
# check each must pass: headers (a map with text keys), argsrepr and kwargsrepr (what logs
# and the dashboard show instead of the arguments), shadow (the name logs show) and
# ignore_result (this call's result is not kept), time_limit and soft_time_limit (this
# call's limits, over the task's).
_CALL_OPTIONS = {
    "headers": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    "argsrepr": lambda v: isinstance(v, str) and len(v) <= 4096,
    "kwargsrepr": lambda v: isinstance(v, str) and len(v) <= 4096,
    "shadow": lambda v: isinstance(v, str) and 0 < len(v) <= 255,
    "ignore_result": lambda v: isinstance(v, bool),
    "time_limit": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
    "eta": lambda v: isinstance(v, str) and len(v) <= 64,
    "stamps": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
    "stamped_headers": lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v),
    "soft_time_limit": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and
    v > 0,
}
_CALL_OPTION_HELP = {
    "headers": "give a dict with text keys", "argsrepr": "give text of at most 4096 characters",
    "kwargsrepr": "give text of at most 4096 characters",
    "shadow": "give a name of 1 to 255 characters", "ignore_result": "give True or False",
    "time_limit": "give a positive number of seconds", "eta": "give a datetime",
    "stamps": "give a dict", "stamped_headers": "give a list of names",
    "soft_time_limit": "give a positive number of seconds"}


def _unpack_stored(blob, what, task_id):
    """A stored result or error history, or CorruptResult saying which cannot be read."""
    try:
        return _unpack(blob)
    except Exception as exc:
        raise CorruptResult(f"the stored {what} of task {_shown(task_id, 100)} cannot be "
                            f"decoded: {_decode_problem(blob, exc)}; another client wrote "
                            "it, or the file is damaged (`PRAGMA integrity_check` tells)") \
            from None


def _decode_problem(blob, exc):
    """Why a stored value is not msgpack, never empty (msgpack's FormatError says
    nothing): the exception's type, its message, and what the value is."""
    message = str(exc)
    what = f"{len(blob)} bytes starting {bytes(blob[:8]).hex() or '(none)'}" \
        if isinstance(blob, (bytes, bytearray)) else f"a {type(blob).__name__}, not bytes"
    return f"{type(exc).__name__}{': ' + _saferepr(message, 200) if message else ''} ({what})"


def _encode_error(exc):
    """msgpack map describing an exception: type, message and (when encodable) args."""
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {cls.__name__}>"
    info = {"type": f"{cls.__module__}.{cls.__qualname__}", "message": message}
    try:
        _pack(list(exc.args))
        info["args"] = list(exc.args)
    except Exception:
        pass
    return _pack(info)


def _imported_name(dotted):
    """The object a dotted name (module.Qual.Name, a class nested in a class too) names
    in a module this process has already imported; None if none. Never imports."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = sys.modules.get(".".join(parts[:cut]) if cut else "builtins")
        if module is not None:
            obj = module
            for part in parts[cut:]:
                obj = getattr(obj, part, None)
            return obj
    return None


def _rebuild_error(blob, remote_traceback):
    """An exception instance of the task's type, or a RemoteError stand-in.

    Only types whose module is already imported here are rebuilt: result rows are data,
    and reading one must never import code.
    """
    try:
        info = _unpack(blob) if blob is not None else {}
    except Exception:
        info = {}
    if not isinstance(info, dict):
        info = {}
    type_name = str(info.get("type", "Exception"))
    message = str(info.get("message", ""))
    obj = _imported_name(type_name)
    exc = None
    if isinstance(obj, type) and issubclass(obj, Exception) and isinstance(info.get("args"), list):
        try:
            exc = obj(*info["args"])
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(type_name, message, remote_traceback)
    if remote_traceback:
        exc.add_note("Remote traceback (from the worker):\n" + remote_traceback.rstrip())
    return exc


def _to_unix(value):
    return None if value is None else float(value)


def _from_unix(value):
    """An aware UTC datetime of a unix time read from the database (None for anything
    that is not one)."""
    try:
        return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _short_hash(text, size=5):
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def _new_id(urandom=os.urandom, time_ns=time.time_ns, last=[0, ""]):
    """A uuid in version 7's layout: 48 bits of milliseconds, then random bits. New ids
    land at the right edge of the id index, where its pages are cached, so enqueueing
    into a table of a million rows stays as fast as into an empty one. Written as text
    directly (str(uuid.UUID(...)) is slower), the millisecond's part made once per ms."""
    ms = time_ns() // 1_000_000
    if ms != last[0]:
        h = f"{ms:012x}"
        last[1], last[0] = f"{h[:8]}-{h[8:12]}-7", ms      # then version 7
    r = urandom(10).hex()                                  # 76 random bits are used
    return f"{last[1]}{r[:3]}-{'89ab'[int(r[3], 16) & 3]}{r[4:7]}-{r[7:19]}"  # RFC 4122


# Forks this process descends through: a connection made before a fork is not used after
# it (cheaper to compare than os.getpid(), a system call).
_FORKS = [0]
os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))


def _app_path(path, module_file):
    """An app's database path: absolute as given, else relative to the directory of the
    module that creates the app, else to the current directory."""
    path = os.fspath(path)
    if not os.path.isabs(path) and module_file:
        path = os.path.join(os.path.dirname(os.path.abspath(module_file)), path)
    return os.path.abspath(path)


_INT64 = 2**63


# Longest task name, task id and queue name a producer may give. AMQP carries a queue name
# (and Celery's routing key and task id) as a short string, at most 255 bytes: a name that
# works with Celery works here, and no name is long enough to flood a log line or a terminal.
_NAME_MAX = 255
_ID_MAX = 255
_QUEUE_MAX = 255
# Longest unique_key: a key built from arguments (a URL, a path) may be longer than a name,
# but it is stored in an index and shown in errors, so it has a bound too.
_UNIQUE_KEY_MAX = 1024


def _checked_text(what, value, limit):
    """A task name, task id or queue name: non-empty text (a UUID is taken as its text)
    of at most limit characters, or the error that says what is wanted."""
    if value.__class__ is str and value and len(value) <= limit and "\x00" not in value:
        return value                                # the usual case, on the hot path
    if isinstance(value, uuid.UUID):
        value = str(value)
    if not isinstance(value, str):
        raise WrongType(f"{what} must be a string, not {type(value).__name__}")
    if not value or "\x00" in value:
        raise ConfigurationError(f"{what} must be non-empty text without NUL characters")
    if len(value) > limit:
        raise ConfigurationError(f"{what} is {len(value)} characters long; the limit is "
                                 f"{limit} (as AMQP's short strings): {value[:40]!r}...")
    return value


def _checked_name(name):
    """A task name as a producer gives it (see _checked_text)."""
    return _checked_text("task name", name, _NAME_MAX)


def _checked_priority(value):
    """A priority: a whole number that SQLite can store (64 bits)."""
    if value.__class__ is not int:
        raise ConfigurationError(f"priority must be a whole number (higher runs first), not "
                                 f"{value!r}")
    if not -_INT64 <= value < _INT64:
        raise ConfigurationError(f"priority must be between {-_INT64} and {_INT64 - 1} "
                                 f"(higher runs first), not {value!r}")
    return value


# Longest repr of a value or message in a log line (Celery's resultrepr_maxsize).
_LOG_REPR_MAX = 1024
# Longest traceback in a log line: its end, which names the exception, is what counts.
_LOG_TRACEBACK_MAX = 8192
_log_repr = reprlib.Repr()
_log_repr.maxstring = _log_repr.maxother = _LOG_REPR_MAX


def _saferepr(value, limit=_LOG_REPR_MAX):
    """A repr for a log line: at most `limit` characters, and never an exception (a huge
    result must not make a huge log, and a broken __repr__ must not fail the task)."""
    try:
        if isinstance(value, (bytes, bytearray)) and len(value) > limit:
            text = repr(bytes(value[:limit])) + f"... ({len(value)} bytes)"
        elif isinstance(value, BaseException):
            text = str(value)
        else:
            text = _log_repr.repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _printable(text):
    """Text from the database for a terminal: tabs and line ends as they are, every other
    control character escaped (a stored traceback must not drive the terminal)."""
    text = text if isinstance(text, str) else repr(text)
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def _clipped(text, limit):
    """Text of at most about limit characters for a log, keeping its start and its end."""
    if len(text) <= limit:
        return text
    head = limit // 4
    return f"{text[:head]}\n... ({len(text) - limit} characters left out) ...\n" \
        f"{text[-(limit - head):]}"


def _clipped_log_arg(value):
    """One argument of a log line, at most _LOG_REPR_MAX characters on a line: a name or
    an id (a foreign client's row may hold 10 MB) cut with "...", a traceback (many
    lines) kept at its start and end. Other values as they are (%d needs a number)."""
    if isinstance(value, BaseException):
        value = _saferepr(value, _LOG_TRACEBACK_MAX)
    if not isinstance(value, str) or len(value) <= _LOG_REPR_MAX:
        return value
    if "\n" in value:
        return _clipped("\n".join(map(_clipped_log_arg, value.split("\n"))),
                        _LOG_TRACEBACK_MAX)
    return _cut(value, _LOG_REPR_MAX)


def _cut(text, limit):
    """Text of at most about limit characters: its start, and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _clip_log_record(record):
    """The litequeue logger's filter: every log line, whatever wrote it, is clipped here
    (its message, its arguments and its traceback), so that no value a row holds can
    make a 20 MB log line. Always lets the record through."""
    if not record.args and isinstance(record.msg, str) and len(record.msg) > _LOG_REPR_MAX:
        record.msg = _clipped_log_arg(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(map(_clipped_log_arg, record.args))
    elif isinstance(record.args, dict):
        record.args = {k: _clipped_log_arg(v) for k, v in record.args.items()}
    if record.exc_info and not record.exc_text:
        record.exc_text = _clipped_log_arg(
            logging.Formatter().formatException(record.exc_info))
    return True


logger.addFilter(_clip_log_record)


def _one_line(text, limit):
    """Text for a mail header: one line of at most limit characters, every control
    character (CR, LF, tab, U+2028...) escaped as its repr, so that no text of a task
    name or a host name can end the header or add one; clipped with "..."."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:max(0, limit - 3)] + "..."


def _plural(count, word, plural=None):
    """"1 task", "2 tasks": a count and its noun, in the right number."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _shown(value, limit=200):
    """Text from the database as a terminal line shows it: printable text as it is, and
    anything else (control characters, bytes, numbers) as its repr, at most limit long."""
    if isinstance(value, str) and value.isprintable() and len(value) <= limit:
        return value
    return _saferepr(value, limit)


def _failed_line(exc):
    """(file, line) where an import failed, as a user wants it: a SyntaxError's own place,
    else the innermost frame in a file of theirs (not the standard library or
    site-packages), else the innermost frame of any code the import ran. None when the
    import ran no code but the import system's and litequeue's (the module is not
    there)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno
    machinery = os.path.dirname(importlib.__file__) + os.sep
    frames = [(f.filename, f.lineno) for f in _traceback.extract_tb(exc.__traceback__)
              if f.filename and not f.filename.startswith("<") and f.filename != _THIS_FILE
              and not f.filename.startswith(machinery)]
    if not frames:
        return None
    import sysconfig
    libraries = tuple({os.path.realpath(path) + os.sep for key in ("stdlib", "platstdlib",
                                                                    "purelib", "platlib")
                       if (path := sysconfig.get_paths().get(key))})
    theirs = [(f, n) for f, n in frames if not os.path.realpath(f).startswith(libraries)]
    return (theirs or frames)[-1]


def _import_failure(exc):
    """One line for an exception raised while importing: file, line and error."""
    where = _failed_line(exc)
    message = exc.msg if isinstance(exc, SyntaxError) else _saferepr(exc, 300)
    error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if where is None:
        return error
    path = os.path.relpath(where[0]) if not os.path.relpath(where[0]).startswith("..") \
        else where[0]
    return f"{path}, line {where[1]}: {error}"


# ---------------------------------------------------------------------------
# Settings
# One table (_SETTINGS: default, check, help) read by the API, the config
# loader and the CLI; Celery's names for them; app.conf.
# ---------------------------------------------------------------------------

def _local_zone_name():
    """The IANA name of this machine's time zone (TZ, /etc/timezone, /etc/localtime), or
    UTC where none can be found: litequeue replaces cron, and cron reads local time."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):      # what glibc and datetime.now() follow
        candidates.append(os.path.realpath("/etc/localtime").partition("zoneinfo/")[2])
    with contextlib.suppress(OSError):
        with open("/etc/timezone") as f:
            candidates.append(f.read().strip())
    for name in candidates:
        if name and not name.startswith("/"):
            with contextlib.suppress(Exception):
                zoneinfo.ZoneInfo(name)
                return "UTC" if name in _UTC_ALIASES else name
    return "UTC"


_UTC_ALIASES = {"Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Universal", "Zulu"}


_RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_rate(value):
    """(rate as text, seconds between two starts) of Celery's rate syntax ("10/s", "100/m",
    "1000/h", or a number: per second), or None for no limit (None or 0)."""
    if value is None:
        return None
    match = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        count, period, text = float(value), 1.0, f"{value}/s"
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:/\s*([smh]))?\s*", value)
        if match is None:
            raise ConfigurationError(f"rate_limit {value!r} is not a rate: give e.g. '10/s', "
                                     "'100/m', '1000/h' or a number per second")
        count, period = float(match[1]), _RATE_PERIODS[match[2] or "s"]
        text = f"{match[1]}/{match[2] or 's'}"
    else:
        raise ConfigurationError(f"rate_limit must be a text such as '10/s' or a number, not "
                                 f"{type(value).__name__}")
    if not math.isfinite(count) or count < 0:
        raise ConfigurationError(f"rate_limit {value!r} must be a finite rate >= 0")
    if count == 0:
        return None
    return text, period / count


# The largest concurrency limit: a slot count that fits SQLite's integers with room to spare.
_SLOTS_MAX = 1 << 31


def _checked_slots(option, value):
    """A concurrency limit as declared: None (none) or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _SLOTS_MAX:
        raise ConfigurationError(f"{option} must be a whole number >= 1 (how many may run at "
                                 f"once on every worker of the file) or None, not "
                                 f"{_saferepr(value, 60)}")
    return value


def _limits_text(most, per_key):
    """A task's concurrency limits as a log line says them."""
    parts = [f"{_shown(most)} at once"] if most is not None else []
    parts += [f"{_shown(per_key)} per key"] if per_key is not None else []
    return ", ".join(parts) or "none"


def _check_choice(*choices):
    def check(value):
        if str(value).upper() not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return str(value).upper()
    return check


def _check_pool(value):
    pools = ("prefork", "threads", "solo")
    if str(value).lower() in ("gevent", "eventlet", "processes"):
        raise ValueError(f"one of {', '.join(pools)} (litequeue has no {value} pool: "
                         "define I/O-bound tasks with async def, which each worker "
                         "process runs on an event loop, or use -P threads)")
    if str(value).lower() not in pools:
        raise ValueError(f"one of {', '.join(pools)}")
    return str(value).lower()


def _check_number(low=0.0, high=None, optional=False, whole=False, above=False):
    """A number (a timedelta counts in seconds) >= low (> low with above) and <= high, or
    None."""
    def check(value):
        if value is None and optional:
            return None
        if isinstance(value, _dt.timedelta) and not whole:
            value = value.total_seconds()
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value != value \
                or value < low or (above and value == low) or \
                (high is not None and value > high):
            raise ValueError(("a whole number" if whole else "a number")
                             + (f" > {low:g}" if above else f" >= {low:g}")
                             + (f" and <= {high:g}" if high is not None else "")
                             + (", or None" if optional else ""))
        return value
    return check


def _check_bool(value):
    if not isinstance(value, bool):
        raise ValueError("True or False")
    return value


def _check_text(value):
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("non-empty text")
    return value


def _check_optional_text(value):
    return None if value is None else _check_text(value)


def _check_admins(value):
    """ADMINS: [(name, address), ...]; a bare address is taken as (address, address)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError("a list of (name, address) pairs")
    out = []
    for entry in value:
        if isinstance(entry, str):
            entry = (entry, entry)
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and
                all(isinstance(x, str) for x in entry) and "@" in entry[1]):
            raise ValueError("a list of (name, address) pairs")
        out.append((entry[0], entry[1]))
    return tuple(out)


def _check_zone(value):
    if isinstance(value, _dt.tzinfo) and getattr(value, "key", None):
        return value.key
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"unknown time zone {value!r} (use an IANA name such as "
                                 "'Asia/Shanghai' or 'UTC')") from None
    return str(value)


def _check_modules(value):
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("a module name or a list of module names")
    return tuple(value)


def _check_mapping(value):
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):      # Celery allows a list of route maps
        merged = {}
        for part in value:
            merged.update(_check_mapping(part))
        return merged
    if not isinstance(value, dict):
        raise ValueError("a dict")
    return dict(value)


def _check_queue_limits(value):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(q, str) and q for q in value):
        raise ValueError("a dict of queue name -> a whole number >= 1")
    try:
        return {queue: _checked_slots(f"queue_concurrency[{queue!r}]", limit)
                for queue, limit in value.items()}
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


# Every setting: (default, check, help). LiteQueue(**settings), app.conf.update(),
# config_from_object() and the worker's CLI options all read this one table; a check
# returns the value to keep or raises ValueError saying what it must be.
_Setting = collections.namedtuple("_Setting", "default check help")
_SETTINGS = {
    "synchronous": _Setting("NORMAL", _check_choice("NORMAL", "FULL", "EXTRA", "OFF"),
                            "NORMAL survives a process crash; FULL also survives power loss"),
    "busy_timeout": _Setting(30.0, _check_number(), "seconds a writer waits for the write lock "
                             "before DatabaseBusy"),
    "result_expires": _Setting(86400, _check_number(optional=True), "seconds finished tasks are "
                               "kept (None: forever)"),
    "timezone": _Setting(_local_zone_name(), _check_zone, "IANA zone of naive datetimes and of "
                         "crontabs without their own tz [default: this machine's zone]"),
    "imports": _Setting((), _check_modules, "modules a worker imports (Celery's CELERY_IMPORTS)"),
    "task_always_eager": _Setting(False, _check_bool, "run tasks inline, for unit tests"),
    "task_allow_error_cb_on_chord_header": _Setting(
        False, _check_bool, "a chord's errbacks also follow each task of its header "
        "(Celery's setting)"),
    "task_eager_propagates": _Setting(False, _check_bool, "an eager task's exception is raised "
                                      "by apply_async() and apply(), not kept in its result"),
    "task_default_queue": _Setting("default", _check_text, "queue of tasks that name none"),
    "task_default_priority": _Setting(0, _check_number(-2**63, whole=True), "priority of tasks "
                                      "that name none (higher runs first)"),
    "task_max_retries": _Setting(3, _check_number(whole=True, optional=True), "retries a task's "
                                 "policy or the death of its process may use (None: retry "
                                 "requests without end; deaths still stop at 3)"),
    "task_time_limit": _Setting(None, _check_number(optional=True, above=True), "hard limit per "
                                "task, seconds: the process is killed and replaced"),
    "task_soft_time_limit": _Setting(None, _check_number(optional=True, above=True), "soft limit "
                                     "per task, seconds: SoftTimeLimitExceeded is raised in it"),
    "task_annotations": _Setting({}, _check_mapping, "task name or '*' -> task attributes "
                                 "(Celery's task_annotations: {'tasks.add': {'rate_limit': "
                                 "'10/s'}})"),
    "task_routes": _Setting({}, _check_mapping, "task name or glob -> {'queue': name} (Celery's "
                            "task_routes)"),
    "queue_concurrency": _Setting({}, _check_queue_limits, "queue -> at most this many of its "
                                  "tasks running at once, on every worker of the file (a worker "
                                  "that serves the queue writes it when it starts)"),
    "beat_schedule": _Setting({}, _check_mapping, "periodic tasks: name -> {'task', 'schedule', "
                              "'args', 'kwargs', 'options'} (Celery's beat_schedule)"),
    "worker_max_tasks_per_child": _Setting(None, _check_number(1, whole=True, optional=True),
                                           "replace a child after this many tasks"),
    "worker_max_memory_per_child": _Setting(None, _check_number(1, whole=True, optional=True),
                                            "replace a child after a task leaves it above this "
                                            "resident memory (KiB)"),
    "worker_concurrency": _Setting(os.cpu_count() or 1, _check_number(1, whole=True),
                                   "worker processes (prefork), or threads (-P threads)"),
    "worker_pool": _Setting("prefork", _check_pool,
                            "prefork: N processes; threads: one process of N threads; solo: one "
                            "process, one task at a time"),
    "worker_async_concurrency": _Setting(100, _check_number(1, 10_000, whole=True),
                                         "coroutine (async def) tasks in flight per worker process"),
    "worker_poll_interval": _Setting(1.0, _check_number(0.01), "slowest fallback poll, seconds, "
                                     "for writers that do not ring"),
    "worker_prefetch": _Setting(64, _check_number(1, whole=True), "largest claim batch when the "
                                "backlog is deep"),
    "worker_shutdown_grace": _Setting(30.0, _check_number(), "seconds a warm shutdown waits for "
                                      "running tasks"),
    "worker_autoimport": _Setting(True, _check_bool, "import task modules named in the registry "
                                  "table (only files under the worker's directory)"),
    "wal_autocheckpoint": _Setting(1000, _check_number(whole=True), "producers' WAL "
                                   "auto-checkpoint, pages; workers checkpoint off the task path"),
    "task_error_emails": _Setting(False, _check_bool, "mail the admins about failed tasks: a "
                                  "digest per email_interval, one entry per task name with its "
                                  "count (Celery's CELERY_SEND_TASK_ERROR_EMAILS)"),
    "admins": _Setting((), _check_admins, "[(name, address)] who get failure mails (ADMINS)"),
    "server_email": _Setting("litequeue@localhost", _check_text, "From: of failure mails"),
    "email_host": _Setting("localhost", _check_text, "SMTP server"),
    "email_port": _Setting(25, _check_number(1, whole=True), "SMTP port"),
    "email_host_user": _Setting(None, _check_optional_text, "SMTP user (None: no login)"),
    "email_host_password": _Setting(None, _check_optional_text, "SMTP password"),
    "email_use_ssl": _Setting(False, _check_bool, "SMTP over TLS from the start (port 465)"),
    "email_use_tls": _Setting(False, _check_bool, "STARTTLS after connecting"),
    "email_timeout": _Setting(10.0, _check_number(above=True), "seconds an SMTP step may take"),
    "email_interval": _Setting(60.0, _check_number(1.0), "at most one failure mail per this many "
                               "seconds, whatever the number of failures"),
}
DEFAULTS = {name: setting.default for name, setting in _SETTINGS.items()}


def _checked_setting(name, value):
    """The value to keep for a setting, or ConfigurationError naming what it must be."""
    try:
        return _SETTINGS[name].check(value)
    except ConfigurationError:
        raise
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be {exc}, not {value!r}") from None


# Settings that no longer mean anything: accepted with a warning, so old configs load.
_RETIRED_SETTINGS = {
    "worker_lease": "a held lock file always means a live worker (SQLite's WAL locking "
                    "relies on the same locks), so there is no lease to wait out",
}

# Celery's old upper-case names, as the seed tutorial's celeryconfig.py uses them, and the
# new names that differ from ours.
_CELERY_ALIASES = {
    "CELERY_IMPORTS": "imports",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_TASK_ALWAYS_EAGER": "task_always_eager",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_PRIORITY": "task_default_priority",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERY_CONCURRENCY": "worker_concurrency",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_ROUTES": "task_routes",
    "task_default_max_retries": "task_max_retries",
    "CELERY_SEND_TASK_ERROR_EMAILS": "task_error_emails",
    "send_task_error_emails": "task_error_emails",
    "ADMINS": "admins",
    "SERVER_EMAIL": "server_email",
    "EMAIL_HOST": "email_host",
    "EMAIL_PORT": "email_port",
    "EMAIL_HOST_USER": "email_host_user",
    "EMAIL_HOST_PASSWORD": "email_host_password",
    "EMAIL_USE_SSL": "email_use_ssl",
    "EMAIL_USE_TLS": "email_use_tls",
    "EMAIL_TIMEOUT": "email_timeout",
    "include": "imports",                       # Celery("proj", include=[...])
    "CELERY_INCLUDE": "imports",
}
# Settings that name a broker or backend: litequeue has exactly one, the file. They are
# expected in a ported config (the seed's has them), so they are ignored quietly.
_BROKER_SETTINGS = {"BROKER_URL", "CELERY_RESULT_BACKEND", "broker_url", "result_backend",
                    "CELERY_ENABLE_UTC", "enable_utc", "broker", "backend"}
# Celery settings with no meaning here: ignored with a warning a user sees.
_CELERY_IGNORED = {
    "task_acks_late": "a task is acknowledged only when its outcome is committed, always",
    "CELERY_ACKS_LATE": "a task is acknowledged only when its outcome is committed, always",
    "worker_prefetch_multiplier": "children prefetch by themselves (worker_prefetch)",
    "CELERYD_PREFETCH_MULTIPLIER": "children prefetch by themselves (worker_prefetch)",
    "task_serializer": "payloads are always msgpack",
    "result_serializer": "results are always msgpack",
    "accept_content": "payloads are always msgpack",
    "CELERY_TASK_SERIALIZER": "payloads are always msgpack",
    "CELERY_RESULT_SERIALIZER": "results are always msgpack",
    "CELERY_ACCEPT_CONTENT": "payloads are always msgpack",
    "task_track_started": "a claimed task always reads STARTED",
    "CELERY_TRACK_STARTED": "a claimed task always reads STARTED",
    "worker_hijack_root_logger": "the CLI configures logging; a library never does",
    "task_ignore_result": "every outcome is a row; result_expires prunes them",
    "beat_scheduler": "the schedules live in the database; no beat process runs",
    "CELERYBEAT_SCHEDULER": "the schedules live in the database; no beat process runs",
    "task_queues": "a queue exists as soon as a task names it",
    "CELERY_QUEUES": "a queue exists as soon as a task names it",
    "worker_send_task_events": "every state is in the database; there is no event stream",
    "CELERY_SEND_EVENTS": "every state is in the database; there is no event stream",
    "task_send_sent_event": "every state is in the database; there is no event stream",
}
_CELERY_IGNORED_PREFIXES = ("broker_", "BROKER_", "result_backend_", "redis_", "CELERY_REDIS_")


_KNOWN_SETTING_NAMES = [*_SETTINGS, *_CELERY_ALIASES, *_BROKER_SETTINGS, *_CELERY_IGNORED,
                        *_RETIRED_SETTINGS]
# What an upper-case name in a config module may have meant: Celery's old names we know,
# and the Django-style name (CELERY_ + ours in capitals) of each of our settings.
_UPPER_SETTING_NAMES = sorted({n for n in _KNOWN_SETTING_NAMES if n.isupper()} |
                              {"CELERY_" + n.upper() for n in _SETTINGS})


def _setting_name(key):
    """Our name for a settings key: the key itself, Celery's equivalent, "" for a name
    that is known but ignored, or None for a name that is not a setting. Django-style
    names (CELERY_ + Celery's name in capitals) are Celery's names."""
    if key in _SETTINGS:
        return key
    if key in _CELERY_ALIASES:
        return _CELERY_ALIASES[key] or ""
    if key in _BROKER_SETTINGS or key in _CELERY_IGNORED or key in _RETIRED_SETTINGS \
            or (isinstance(key, str) and key.startswith(_CELERY_IGNORED_PREFIXES)):
        return ""
    if isinstance(key, str) and key.startswith("CELERY_") and key.isupper():
        return _setting_name(key[len("CELERY_"):].lower())
    return None


class _LoadedSettings(dict):
    """The settings a config object holds, with `where` each was set ({name: (file,
    line)}; `source`: the object's file, if any), so that a warning about one points at
    the user's line and not at litequeue's."""

    where = {}
    source = None


def _setting_lines(obj):
    """(file, {name: line}) of the assignments in a config module's or class's source;
    (None, {}) for an object without one, such as a mapping."""
    if isinstance(obj, dict):
        return None, {}
    try:
        filename = inspect.getsourcefile(obj)
        source, first = inspect.getsourcelines(obj)
    except (OSError, TypeError):
        return None, {}
    lines = {}
    for number, text in enumerate(source, start=max(first, 1)):
        match = re.match(r"\s*([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)", text)
        if match:
            lines.setdefault(match.group(1), number)
    return filename, lines


# Python shows a warning once per place; these are the places' registries, per file.
_warning_registries = {}


def _warn_setting(message, where=None):
    """Warn with a LitequeueWarning at `where`, a (file, line) in the user's config, or
    else at the first caller outside litequeue: the user's line, never ours."""
    if where is None:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == _THIS_FILE:
            frame = frame.f_back
        where = (frame.f_code.co_filename, frame.f_lineno) if frame else (_THIS_FILE, 0)
    # (module= is left out: given as None, Python 3.11's C version shows nothing.)
    warnings.warn_explicit(message, LitequeueWarning, where[0], where[1],
                           registry=_warning_registries.setdefault(where[0], {}))


def _where_set(settings, key):
    """(file, line) where a loaded config set key: its line, else its file's first line;
    None for settings that came from code (then a warning names the caller's line)."""
    if not isinstance(settings, _LoadedSettings) or settings.source is None:
        return None
    return settings.where.get(key) or (settings.source, 1)


def _settings_of(obj):
    """The settings a config object holds (a module, a module name, a class or a
    mapping): names that are settings (ours or Celery's); other names are passed over,
    unless one is close to a setting's name, which is refused as a misspelling. Other
    names in Celery's own upper-case namespace are ignored with a warning (saying what
    it may have meant). Returns a _LoadedSettings."""
    if isinstance(obj, str):
        try:
            obj = importlib.import_module(obj)
        except Exception as exc:
            if isinstance(exc, ImportError) and _failed_line(exc) is None:
                raise                   # not there: an ImportError, as in Celery
            raise _BrokenModule(f"cannot import config module {obj!r}: "
                                f"{_import_failure(exc)}") from None
    source, lines = _setting_lines(obj)
    items = obj.items() if isinstance(obj, dict) else (
        (k, getattr(obj, k)) for k in dir(obj) if not k.startswith("_"))
    settings = _LoadedSettings()
    settings.source = source
    settings.where = {k: (source, n) for k, n in lines.items()}
    for key, value in items:
        if _setting_name(key) is not None:
            settings[key] = value
        elif callable(value) or isinstance(value, type(sys)):
            continue
        elif isinstance(key, str) and key.startswith(("CELERY", "BROKER")) and key.isupper():
            close = difflib.get_close_matches(key, _UPPER_SETTING_NAMES, n=1, cutoff=0.8)
            _warn_setting(f"setting {key} is ignored: litequeue has no such setting"
                          + (f" (did you mean {close[0]!r}?)" if close else ""),
                          _where_set(settings, key))
        else:
            close = difflib.get_close_matches(str(key), _KNOWN_SETTING_NAMES, n=1, cutoff=0.8)
            if close:
                raise ConfigurationError(f"unknown setting {key!r} (did you mean "
                                         f"{close[0]!r}?)")
    return settings


# Broker names noted already: the note is logged once per process, and a worker's
# children leave it to their supervisor (_quiet_config_notices).
_broker_settings_seen = set()


def _quiet_config_notices():
    """In a worker child: its supervisor has shown the config's warnings and notes."""
    warnings.simplefilter("ignore", LitequeueWarning)
    _broker_settings_seen.update(_BROKER_SETTINGS)


def _merged_settings(conf, settings):
    """conf with settings applied, every value checked (ConfigurationError for an
    unknown name or a bad value); names with no meaning here are ignored, and those a
    user may expect to work are warned about, at the line that set them."""
    conf = dict(conf)
    for key, value in settings.items():
        name = _setting_name(key)
        if name is None:
            close = difflib.get_close_matches(str(key), _KNOWN_SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown setting {key!r}{hint}")
        if name:
            conf[name] = _checked_setting(name, value)
        elif key in _BROKER_SETTINGS:
            if key not in _broker_settings_seen:
                _broker_settings_seen.add(key)
                where = _where_set(settings, key)
                logger.info("ignoring %s%s: litequeue's broker and backend is the database "
                            "file", key, f" ({where[0]}, line {where[1]})" if where else "")
        else:
            why = _CELERY_IGNORED.get(key) or _RETIRED_SETTINGS.get(key) or \
                "litequeue has no broker to configure"
            _warn_setting(f"setting {key} is ignored: {why}", _where_set(settings, key))
    return conf


class _Conf(dict):
    """app.conf: the settings as a dict, also readable as attributes (app.conf.timezone).
    update(), item and attribute assignment check every value first, as LiteQueue(...)
    does: a bad value raises at once and changes nothing."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"'Settings' object has no attribute {name!r}") from None

    def __missing__(self, name):
        """A Celery setting litequeue ignores reads back as it was set."""
        ignored = self.__dict__.get("_ignored", {})
        if name in ignored:
            return ignored[name]
        raise KeyError(name)

    def __setattr__(self, name, value):
        self.update({name: value})

    def __setitem__(self, name, value):
        self.update({name: value})

    def update(self, *args, **kwargs):
        loaded = args[0] if len(args) == 1 and not kwargs and \
            isinstance(args[0], _LoadedSettings) else None     # keeps where each was set
        given = loaded if loaded is not None else dict(*args, **kwargs)
        dict.update(self, _merged_settings(self, given))
        self.__dict__.setdefault("_ignored", {}).update(
            (k, v) for k, v in given.items() if _setting_name(k) == "")


# ---------------------------------------------------------------------------
# Time: zones, crontab and intervals
# ---------------------------------------------------------------------------

def _zone(name):
    """A ZoneInfo for an IANA name, or ConfigurationError naming it."""
    if isinstance(name, _dt.tzinfo):
        return name
    try:
        return zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"unknown time zone {name!r} (use an IANA name such as "
                                 "'Asia/Shanghai' or 'UTC')") from None


def _zone_name(zone):
    return getattr(zone, "key", None) or str(zone)


def _to_instant(value, zone, what):
    """Unix time of a datetime (naive: wall time in zone), a number of seconds from now,
    or None."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.timestamp()
    if isinstance(value, _dt.timedelta):
        return time.time() + value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return time.time() + float(value)
    raise ConfigurationError(f"{what} must be a datetime or a number of seconds, "
                             f"not {value!r}")


_UTC = _dt.timezone.utc
# Names of days and months, as Celery reads them: the full English name or its first three
# letters, in any case.
_DAY_NAMES = {name[:n]: i for i, name in enumerate((
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))
    for n in (3, len(name))}
_MONTH_NAMES = {name[:n]: i + 1 for i, name in enumerate((
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december")) for n in (3, len(name))}
# field name -> (lowest, highest, names)
_CRON_FIELDS = {
    "minute": (0, 59, {}),
    "hour": (0, 23, {}),
    "day_of_week": (0, 6, _DAY_NAMES),
    "day_of_month": (1, 31, {}),
    "month_of_year": (1, 12, _MONTH_NAMES),
}
# Longest span searched for the next fire: Feb 29 on a given weekday can be 40 years away.
_CRON_SEARCH_DAYS = 366 * 40
# Shortest interval schedule: a shorter one (say from a hand-written row) would make each
# scheduler pass walk millions of fire times.
_INTERVAL_MIN = 0.1


def _parse_cron_field(field, spec):
    """The set of values a Celery-style cron field allows, or ConfigurationError."""
    low, high, names = _CRON_FIELDS[field]
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    elif isinstance(spec, (list, tuple, set, frozenset, range)):
        spec = ",".join(str(v) for v in spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"crontab {field}: invalid value {spec!r}")

    def value(text):
        text = text.strip().lower()
        if text in names:
            return names[text]
        if not text.isdigit():
            raise ValueError(text)
        number = int(text)
        if field == "day_of_week" and number == 7:
            return 0  # cron's other spelling of Sunday
        if not low <= number <= high:
            raise ValueError(text)
        return number

    allowed = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            step = 1
            if "/" in part:
                part, step_text = part.split("/", 1)
                step = int(step_text)
                if step < 1:
                    raise ValueError(step_text)
            if part == "*":
                start, end = low, high
            elif "-" in part:
                a, b = part.split("-", 1)
                start, end = value(a), value(b)
                if end < start:
                    raise ValueError(part)
            else:
                start = value(part)
                end = high if step > 1 else start
            allowed.update(range(start, end + 1, step))
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"crontab {field}: invalid value {spec!r} (allowed: numbers {low}-{high}"
            + (f", names such as {next(iter(names))}" if names else "")
            + ", '*', ranges a-b, steps */n, and lists a,b)") from None
    return frozenset(allowed)


schedstate = collections.namedtuple("schedstate", "is_due next")


class crontab:
    """A cron schedule in Celery's field syntax, evaluated in one time zone.

    ``crontab(minute=0, hour="*/3", day_of_week="mon-fri", tz="Asia/Shanghai")``.
    Unlike classic cron, day_of_month and day_of_week must both match (Celery's rule).

    Daylight saving time: a fixed wall time that spring-forward skips fires once, at the
    first instant after the gap; one that fall-back repeats fires once, at its first
    occurrence. A schedule whose hour is '*' follows real time instead: it fires at every
    occurrence of its minutes, so an hourly job fires every real hour through both changes.
    """

    def __init__(self, minute="*", hour="*", day_of_week="*", day_of_month="*",
                 month_of_year="*", tz=None):
        self.fields = {"minute": minute, "hour": hour, "day_of_week": day_of_week,
                       "day_of_month": day_of_month, "month_of_year": month_of_year}
        self.minutes = sorted(_parse_cron_field("minute", minute))
        self.hours = sorted(_parse_cron_field("hour", hour))
        self.days_of_week = _parse_cron_field("day_of_week", day_of_week)
        self.days_of_month = _parse_cron_field("day_of_month", day_of_month)
        self.months = _parse_cron_field("month_of_year", month_of_year)
        self.tz = None if tz is None else _zone(tz)
        if not any(day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)
                   for month in self.months for day in self.days_of_month):
            raise ConfigurationError(
                f"crontab day_of_month {day_of_month!r} never occurs in month_of_year "
                f"{month_of_year!r}")
        self._every_hour = len(self.hours) == 24

    @classmethod
    def from_string(cls, expression, tz=None):
        """Parse 'minute hour day_of_month month_of_year day_of_week' (cron's order)."""
        parts = str(expression).split()
        if len(parts) != 5:
            raise ConfigurationError(
                f"cron expression {expression!r} must have 5 fields: minute hour "
                "day_of_month month_of_year day_of_week")
        minute, hour, dom, month, dow = parts
        return cls(minute=minute, hour=hour, day_of_month=dom, month_of_year=month,
                   day_of_week=dow, tz=tz)

    def __repr__(self):
        zone = f", tz={_zone_name(self.tz)!r}" if self.tz else ""
        return f"<crontab: {self.expression} (m/h/dM/MY/d){zone}>"

    # Celery's attributes: each field as the set of values it matches (Sunday is 0).
    minute = property(lambda self: set(self.minutes))
    hour = property(lambda self: set(self.hours))
    day_of_week = property(lambda self: set(self.days_of_week))
    day_of_month = property(lambda self: set(self.days_of_month))
    month_of_year = property(lambda self: set(self.months))

    def remaining_estimate(self, last_run_at):
        """Celery's: a timedelta from now to the first fire time after last_run_at (a
        naive one is in the schedule's zone, else UTC); negative if that has passed."""
        if last_run_at.tzinfo is None:
            last_run_at = last_run_at.replace(tzinfo=self.tz or _UTC)
        return self.next_after(last_run_at) - _dt.datetime.now(_UTC)

    def is_due(self, last_run_at):
        """Celery's (is_due, seconds until it is worth asking again)."""
        now = _dt.datetime.now(_UTC)
        left = self.remaining_estimate(last_run_at).total_seconds()
        if left <= 0:
            return schedstate(True, (self.next_after(now) - now).total_seconds())
        return schedstate(False, left)

    def __eq__(self, other):
        return isinstance(other, crontab) and (self.expression, self.tz) == \
            (other.expression, other.tz)

    def __hash__(self):
        return hash(self.expression)

    @property
    def expression(self):
        f = self.fields
        return " ".join("".join(str(f[k]).split())
                        if not isinstance(f[k], (list, tuple, set, frozenset, range))
                        else ",".join(map(str, sorted(_parse_cron_field(k, f[k]))))
                        for k in ("minute", "hour", "day_of_month", "month_of_year",
                                  "day_of_week"))

    def _days(self, start):
        for offset in range(_CRON_SEARCH_DAYS):
            day = start + _dt.timedelta(days=offset)
            if (day.month in self.months and day.day in self.days_of_month
                    and (day.weekday() + 1) % 7 in self.days_of_week):
                yield day

    def _instants(self, wall, zone):
        """The instants at which the wall time fires, by the DST policy above."""
        first = wall.replace(tzinfo=zone, fold=0)
        second = wall.replace(tzinfo=zone, fold=1)
        if first.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != wall:
            # Skipped by spring-forward.
            if self._every_hour:
                return ()
            return (_gap_end(second, first),)
        if first.utcoffset() != second.utcoffset() and self._every_hour:
            return (first, second)  # repeated by fall-back: each real occurrence
        return (first,)

    def next_after(self, dt, zone=None):
        """The next fire time strictly after the aware datetime dt, in the schedule's zone."""
        if not isinstance(dt, _dt.datetime) or dt.tzinfo is None:
            raise ConfigurationError("next_after() takes an aware datetime")
        zone = self.tz or zone or _UTC
        after = dt.astimezone(_UTC)
        # A wall time up to a DST shift before dt's can map to an instant after it, and a
        # later wall time to an earlier instant: look that far either side.
        slack = _dt.timedelta(hours=3)
        first_wall = dt.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - slack
        best = best_wall = None
        for day in self._days(first_wall.date()):
            for hour in self.hours:
                for minute in self.minutes:
                    wall = _dt.datetime.combine(day, _dt.time(hour, minute))
                    if wall < first_wall:
                        continue
                    if best_wall is not None and wall > best_wall + slack:
                        return best.astimezone(zone)
                    for instant in self._instants(wall, zone):
                        instant = instant.astimezone(_UTC)
                        if instant > after and (best is None or instant < best):
                            best, best_wall = instant, wall
        if best is None:
            raise ConfigurationError(f"{self!r} never fires")
        return best.astimezone(zone)


def _gap_end(before, after):
    """First instant after a spring-forward gap, given a skipped wall time read with the
    new offset (before, earlier in UTC) and the old one (after)."""
    zone = after.tzinfo
    new_offset = after.astimezone(_UTC).astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if _dt.datetime.fromtimestamp(mid, zone).utcoffset() == new_offset:
            high = mid
        else:
            low = mid
    return _dt.datetime.fromtimestamp(high, _UTC)


class _Interval:
    """Every N seconds, at multiples of N since the epoch, so every process agrees on the
    fire times."""

    def __init__(self, seconds):
        if isinstance(seconds, _dt.timedelta):
            seconds = seconds.total_seconds()
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or \
                not seconds >= _INTERVAL_MIN:
            raise ConfigurationError(f"an interval must be a number of seconds (at least "
                                     f"{_INTERVAL_MIN:g}) or a timedelta, not {seconds!r}")
        self.seconds = float(seconds)
        self.tz = None

    def __repr__(self):
        return f"<every {self.seconds:g} s>"

    @property
    def expression(self):
        return f"every {self.seconds:g}s"

    def latest_until(self, now):
        """The last fire time at or before the aware datetime now."""
        fire = _dt.datetime.fromtimestamp(math.floor(now.timestamp() / self.seconds)
                                          * self.seconds, _UTC)
        while fire > now:
            fire -= _dt.timedelta(seconds=self.seconds)
        return fire

    def next_after(self, dt, zone=None):
        if not isinstance(dt, _dt.datetime) or dt.tzinfo is None:
            raise ConfigurationError("next_after() takes an aware datetime")
        n = math.floor(dt.timestamp() / self.seconds) + 1
        fire = _dt.datetime.fromtimestamp(n * self.seconds, _UTC)
        while fire <= dt:   # float division, and datetime's microseconds, can round down
            n += 1
            fire = _dt.datetime.fromtimestamp(n * self.seconds, _UTC)
        return fire


def _schedule_to_text(schedule):
    """How a schedule is stored in the schedules table."""
    if isinstance(schedule, crontab):
        return "cron:" + schedule.expression
    return f"every:{schedule.seconds!r}"


def _schedule_from_text(text, tz):
    kind, _, spec = text.partition(":")
    if kind == "cron":
        return crontab.from_string(spec, tz=tz)
    if kind == "every":
        return _Interval(float(spec))
    raise ConfigurationError(f"unknown schedule {text!r}")


def _as_schedule(schedule):
    if isinstance(schedule, (crontab, _Interval)):
        return schedule
    return _Interval(schedule)


def _fire_id(schedule_name, fire):
    """The task id of one fire: the same in every process, so the database can refuse a
    second insert of it."""
    return f"{schedule_name}@{fire.astimezone(_UTC).isoformat()}"


def _latest_fire(schedule, zone, after, now):
    """The latest fire time in (after, now], or None. Looks back over a widening window,
    so a long outage does not mean walking every missed minute (an interval's is
    arithmetic)."""
    if isinstance(schedule, _Interval):
        latest = schedule.latest_until(now)
        return latest if latest > after else None
    span = _dt.timedelta(minutes=2)
    while True:
        start = max(after, now - span)
        latest, t = None, start
        while True:
            t = schedule.next_after(t, zone)
            if t > now:
                break
            latest = t
        if latest is not None or start == after:
            return latest
        span *= 16


def _is_time(value):
    """True for a unix time as the database holds one (a number, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plan_fires(row, now):
    """Which fires of a due schedule row to queue, by its catch-up policy.

    Returns ([(task_id, fire_time)], last_fire, next_fire) with times as unix seconds.
    'once' queues the latest missed fire, 'all' every missed fire (up to _CATCH_UP_MAX),
    'none' the latest only if it is less than _CATCH_UP_NONE_GRACE late.
    """
    zone = _zone(row["tz"])
    schedule = _schedule_from_text(row["schedule"], zone)
    now_dt = _dt.datetime.fromtimestamp(now, _UTC)
    last = row["last_fire"]
    after = _dt.datetime.fromtimestamp(last, _UTC) if last is not None else now_dt
    fires = []
    if row["catch_up"] == "all":
        t = after
        while len(fires) < _CATCH_UP_MAX:
            t = schedule.next_after(t, zone)
            if t > now_dt:
                break
            fires.append(t)
        latest = fires[-1] if fires else None
        if len(fires) == _CATCH_UP_MAX:
            latest = _latest_fire(schedule, zone, fires[-1], now_dt) or fires[-1]
            logger.warning("schedule %s missed more than %d fires; queued the first %d",
                           row["name"], _CATCH_UP_MAX, _CATCH_UP_MAX)
    else:
        latest = _latest_fire(schedule, zone, after, now_dt)
        if latest is not None and (row["catch_up"] == "once"
                                   or now - latest.timestamp() <= _CATCH_UP_NONE_GRACE):
            fires.append(latest)
    handled = latest or after
    next_fire = schedule.next_after(max(handled, after), zone).timestamp()
    last_fire = max(handled.timestamp(), last) if last is not None else handled.timestamp()
    return [(_fire_id(row["name"], f), f.timestamp()) for f in fires], last_fire, next_fire


def _plan_sync(definition, stored, now):
    """(last_fire, next_fire) for a definition being written to the schedules table.

    A new schedule starts now: nothing before its first sync fires. An unchanged one
    keeps its last fire, so fires missed while no worker ran follow its catch-up policy.
    """
    zone = _zone(definition["tz"])
    schedule = _schedule_from_text(definition["schedule"], zone)
    unchanged = stored is not None and (stored[0], stored[1]) == (definition["schedule"],
                                                                  definition["tz"])
    last_fire = stored[2] if unchanged and stored[2] is not None else now
    base = _dt.datetime.fromtimestamp(last_fire, _UTC)
    return last_fire, schedule.next_after(base, zone).timestamp()


# ---------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------

# -- the connection: identity and schema --------------------------------------

# Entry 0 is the whole first schema; later entries migrate from the one before.
# Times are unix seconds (REAL). States are the Celery names above, as text.
_MIGRATIONS = [
    """
    CREATE TABLE tasks (
        seq         INTEGER PRIMARY KEY,           -- claim order within a priority
        id          TEXT NOT NULL UNIQUE,          -- task id, a uuid unless the caller chose one
        name        TEXT NOT NULL,                 -- registered task name, e.g. 'tasks.add'
        queue       TEXT NOT NULL DEFAULT 'default',
        priority    INTEGER NOT NULL DEFAULT 0,    -- higher runs first
        state       TEXT NOT NULL DEFAULT 'PENDING',
        payload     BLOB NOT NULL,                 -- msgpack {"args": [...], "kwargs": {...}}
        eta         REAL,                          -- due time while SCHEDULED or RETRY
        expires     REAL,                          -- not started by then: EXPIRED
        attempt     INTEGER NOT NULL DEFAULT 0,    -- claims so far; the fencing token
        retries     INTEGER NOT NULL DEFAULT 0,    -- failed attempts that were retried
        max_retries INTEGER,                       -- NULL: the task's default
        worker      TEXT,                          -- worker id of the last claim
        pid         INTEGER,                       -- its process id
        created_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
        started_at  REAL,
        finished_at REAL,
        result      BLOB,                          -- msgpack: the return value, or an error map
        traceback   TEXT,
        errors      BLOB                           -- msgpack list of earlier attempts' errors
    );
    -- Only ready rows are in it, so the claim costs the same however many are finished.
    CREATE INDEX tasks_ready ON tasks (queue, priority DESC, seq) WHERE state = 'PENDING';
    CREATE INDEX tasks_due ON tasks (eta) WHERE state IN ('SCHEDULED', 'RETRY');
    CREATE INDEX tasks_running ON tasks (worker) WHERE state = 'STARTED';
    CREATE TABLE workers (
        id          TEXT PRIMARY KEY,
        parent      TEXT,                          -- supervisor id, NULL for a supervisor
        hostname    TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        queues      TEXT NOT NULL,
        concurrency INTEGER,
        started_at  REAL NOT NULL
    );
    CREATE TABLE registry (
        name        TEXT PRIMARY KEY,              -- task name
        module      TEXT NOT NULL,                 -- module that defines it
        updated_at  REAL NOT NULL
    );
    """,
    """
    CREATE TABLE schedules (
        name        TEXT PRIMARY KEY,              -- periodic task name
        task        TEXT NOT NULL,                 -- task it queues
        module      TEXT NOT NULL,                 -- module that defines it (its owner)
        schedule    TEXT NOT NULL,                 -- 'cron:<5 fields>' or 'every:<seconds>'
        tz          TEXT NOT NULL,                 -- IANA zone the schedule reads in
        payload     BLOB NOT NULL,                 -- msgpack envelope of each call
        queue       TEXT NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        catch_up    TEXT NOT NULL DEFAULT 'once',  -- 'once', 'all' or 'none'
        last_fire   REAL,                          -- latest fire time handled (a cursor)
        next_fire   REAL NOT NULL,                 -- next fire time
        updated_at  REAL NOT NULL
    );
    CREATE INDEX schedules_next ON schedules (next_fire);
    """,
    """
    -- Finished rows by age, for pruning by result_expires.
    CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
    """,
    """
    ALTER TABLE schedules ADD COLUMN fires INTEGER NOT NULL DEFAULT 0;  -- fires queued so far
    """,
    """
    -- Why a schedule was disabled (a row the scheduler cannot read); NULL: enabled.
    ALTER TABLE schedules ADD COLUMN error TEXT;
    """,
    """
    -- The canvas: relations, rows that wait for another's end, chords, progress.
    ALTER TABLE tasks ADD COLUMN parent_id TEXT;    -- the task that queued it or that it follows
    ALTER TABLE tasks ADD COLUMN root_id TEXT;      -- its workflow's first task (NULL: itself)
    ALTER TABLE tasks ADD COLUMN group_id TEXT;     -- the group or chord header it belongs to
    ALTER TABLE tasks ADD COLUMN group_index INTEGER;
    -- A WAITING row runs when parent_id ends: 'link' on success, 'error' on failure,
    -- 'chord' when the chord whose body it is completes; '_si' added: takes no input.
    ALTER TABLE tasks ADD COLUMN waits TEXT;
    ALTER TABLE tasks ADD COLUMN input BLOB;        -- msgpack value put before its args
    ALTER TABLE tasks ADD COLUMN followers INTEGER NOT NULL DEFAULT 0;  -- 1: its end moves rows
    ALTER TABLE tasks ADD COLUMN meta BLOB;         -- update_state(): msgpack [state, meta]
    CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX tasks_group ON tasks (group_id, group_index) WHERE group_id IS NOT NULL;
    CREATE TABLE chords (
        id          TEXT PRIMARY KEY,              -- the header's group id
        body        TEXT NOT NULL,                 -- id of the body's first row (WAITING)
        size        INTEGER NOT NULL,              -- members in the header
        done        INTEGER NOT NULL DEFAULT 0,    -- members counted so far
        fired       INTEGER NOT NULL DEFAULT 0     -- 1 once the body was queued or failed
    );
    CREATE INDEX chords_body ON chords (body);
    -- One slot per member: a member is counted once, whatever happens to it later.
    CREATE TABLE chord_slots (
        chord       TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        result      BLOB,                          -- the member's result (msgpack)
        PRIMARY KEY (chord, idx)
    ) WITHOUT ROWID;
    """,
    f"""
    -- Saved groups live in their own table (one row per group), not in an index entry
    -- per member. (A file written between two development versions may have either.)
    DROP INDEX IF EXISTS tasks_group;
    -- A saved group: its members' ids in order (one row, not an index entry per member).
    CREATE TABLE IF NOT EXISTS groups (
        id          TEXT PRIMARY KEY,
        members     BLOB NOT NULL,                 -- msgpack list of task ids
        first       TEXT NOT NULL,                 -- the first member: gone means pruned
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS groups_created ON groups (created_at);
    -- Per-minute counters of what workers ran, written in batches by each worker process
    -- (at most once a second, inside a commit it makes anyway): the dashboard's charts and
    -- /metrics read these, never COUNT(*) over tasks, and they outlive result pruning.
    CREATE TABLE stats (
        minute      INTEGER NOT NULL,              -- unix time // 60
        name        TEXT NOT NULL,                 -- task name
        queue       TEXT NOT NULL,
        succeeded   INTEGER NOT NULL DEFAULT 0,
        failed      INTEGER NOT NULL DEFAULT 0,
        retried     INTEGER NOT NULL DEFAULT 0,
        runtime     REAL NOT NULL DEFAULT 0,       -- seconds, summed
        {", ".join(f"h{i} INTEGER NOT NULL DEFAULT 0" for i in range(len(_RUNTIME_BUCKETS) + 1))},
        PRIMARY KEY (minute, name, queue)
    ) WITHOUT ROWID;
    -- The dashboard counts these states per queue from their own small indexes alone
    -- (covering: no table row is read), so its cost follows them, not finished rows.
    CREATE INDEX tasks_waiting ON tasks (queue) WHERE state = 'WAITING';
    CREATE INDEX tasks_failed ON tasks (finished_at, queue) WHERE state = 'FAILURE';
    DROP INDEX tasks_due;
    CREATE INDEX tasks_due ON tasks (eta, queue, state) WHERE state IN ('SCHEDULED', 'RETRY');
    -- What each worker process has run (written with its counters).
    ALTER TABLE workers ADD COLUMN processed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
    -- Failure mails: the finish time up to which failures have been mailed (one row), so
    -- that of several supervisors only one mails each failure.
    CREATE TABLE alerts (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        cursor      REAL NOT NULL
    );
    """,
    """
    -- Paused queues: no worker claims from them until they are resumed.
    CREATE TABLE paused (
        queue       TEXT PRIMARY KEY,
        since       REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    """
    -- Global rate limits: one row per rate-limited task name. A row of such a task carries
    -- its name in rate_key and is claimed only through tasks_limited, one at a time, when
    -- next_start has passed (then next_start moves on by interval): starts are spaced by
    -- at least interval across every process on the file.
    CREATE TABLE rate_limits (
        key         TEXT PRIMARY KEY,              -- the task name
        rate        TEXT NOT NULL,                 -- as declared, e.g. '10/s'
        interval    REAL NOT NULL,                 -- seconds between two starts
        next_start  REAL NOT NULL DEFAULT 0        -- the earliest next start (unix time)
    ) WITHOUT ROWID;
    ALTER TABLE tasks ADD COLUMN rate_key TEXT;     -- set: rate-limited (rate_limits.key)
    ALTER TABLE tasks ADD COLUMN unique_key TEXT;   -- set: one such row waits or runs at once
    DROP INDEX tasks_ready;
    -- rate_key as a column too: SQLite then reads the claim's candidates from the index
    -- alone (a partial index's IS NULL term does not count as covered).
    CREATE INDEX tasks_ready ON tasks (queue, priority DESC, seq, rate_key)
        WHERE state = 'PENDING' AND rate_key IS NULL;
    CREATE INDEX tasks_limited ON tasks (rate_key, queue, priority DESC, seq)
        WHERE state = 'PENDING' AND rate_key IS NOT NULL;
    CREATE UNIQUE INDEX tasks_unique ON tasks (unique_key)
        WHERE unique_key IS NOT NULL
          AND state IN ('PENDING', 'SCHEDULED', 'RETRY', 'STARTED', 'WAITING');
    """,
    """
    -- What an operator asked of a running worker (`litequeue control`, the dashboard). Its
    -- supervisor reads them when its bell rings or at its next rescan, and clears them.
    ALTER TABLE workers ADD COLUMN pool TEXT;           -- prefork, threads or solo
    ALTER TABLE workers ADD COLUMN wanted INTEGER;      -- processes asked for (prefork)
    ALTER TABLE workers ADD COLUMN stop_asked REAL;     -- when a warm shutdown was asked
    """,
    """
    -- Durable workflows. A workflow is a task row whose function runs again from the top
    -- after each wait; every step it calls is a row here, in call order, and a run that
    -- finds a step recorded takes its outcome instead of doing it again.
    CREATE TABLE steps (
        workflow    TEXT NOT NULL,                 -- the workflow's task id
        idx         INTEGER NOT NULL,              -- call order, from 0
        kind        TEXT NOT NULL,                 -- task, step, sleep, recv, send, event
        name        TEXT NOT NULL,                 -- task or function name; topic; key
        child       TEXT,                          -- a task step's row id
        state       TEXT,                          -- NULL until it ends; then as a task's
        result      BLOB,                          -- msgpack: its value or an error map
        traceback   TEXT,
        until       REAL,                          -- a sleep's end, a recv's deadline
        started_at  REAL NOT NULL,
        finished_at REAL,
        PRIMARY KEY (workflow, idx)
    ) WITHOUT ROWID;
    CREATE INDEX steps_child ON steps (child) WHERE child IS NOT NULL;
    -- Messages sent to a workflow (app.send), taken in order by its recv() steps.
    CREATE TABLE messages (
        seq         INTEGER PRIMARY KEY,
        workflow    TEXT NOT NULL,
        topic       TEXT NOT NULL,                 -- '' for none
        body        BLOB NOT NULL,                 -- msgpack
        sent_at     REAL NOT NULL
    );
    CREATE INDEX messages_to ON messages (workflow, topic, seq);
    -- A workflow's events (app.set_event): the latest value of each key.
    CREATE TABLE events (
        workflow    TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       BLOB NOT NULL,                 -- msgpack
        set_at      REAL NOT NULL,
        PRIMARY KEY (workflow, key)
    ) WITHOUT ROWID;
    """,
    """
    -- Global concurrency limits. A task name with a row here has its rows in the limited
    -- lane, as a rate-limited name does (rate_key = its name, tasks_limited), and a row of
    -- it is claimed only while fewer than max rows of the name, and fewer than per_key rows
    -- of its conc_key, are STARTED (tasks_holding counts them in the claim's transaction).
    -- A slot is a STARTED row: the transaction that ends the row frees it, and a dead
    -- worker's rescue frees its slots, so no counter can drift.
    CREATE TABLE concurrency (
        key         TEXT PRIMARY KEY,              -- the task name
        max         INTEGER,                       -- rows of the name at once; NULL: any
        per_key     INTEGER                        -- rows of one conc_key at once; NULL: any
    ) WITHOUT ROWID;
    -- At most max STARTED rows of the queue at once (app.conf.queue_concurrency).
    CREATE TABLE queue_limits (
        queue       TEXT PRIMARY KEY,
        max         INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE tasks ADD COLUMN conc_key TEXT;    -- apply_async(concurrency_key=...)
    -- conc_key as a column of the lane's index too: a claim skips the rows of full keys
    -- without reading the table.
    DROP INDEX tasks_limited;
    CREATE INDEX tasks_limited ON tasks (rate_key, queue, priority DESC, seq, conc_key)
        WHERE state = 'PENDING' AND rate_key IS NOT NULL;
    -- The limited lane by key: the first row of each key (a loose index scan, one seek per
    -- key), and the rows that hold a slot.
    CREATE INDEX tasks_keyed ON tasks (rate_key, queue, conc_key, priority DESC, seq)
        WHERE state = 'PENDING' AND rate_key IS NOT NULL;
    CREATE INDEX tasks_holding ON tasks (rate_key, conc_key)
        WHERE state = 'STARTED' AND rate_key IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)
# One statement, so the three are read in one snapshot.
_SQL_IDENTITY = """
    SELECT (SELECT application_id FROM pragma_application_id),
           (SELECT user_version FROM pragma_user_version),
           (SELECT count(*) FROM sqlite_schema)
"""
# PRAGMA data_version, unlike the SQLITE_FCNTL_DATA_VERSION file control, sees other
# connections' commits without this one reading anything first.
_SQL_DATA_VERSION = "PRAGMA data_version"

# -- producers: tasks, canvases, the registry ---------------------------------

# (new row) -> PENDING or SCHEDULED.
# A rate-limited or concurrency-limited task's rows carry its name in rate_key (the limited
# lane: rate_limits or concurrency, primary key probes), and their concurrency key in conc_key.
_RATE_KEY = ("coalesce((SELECT key FROM rate_limits WHERE key = :name), "
             "(SELECT key FROM concurrency WHERE key = :name))")
_SQL_INSERT_TASK = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, expires,
                       max_retries, created_at, parent_id, root_id, rate_key, conc_key)
    VALUES (:id, :name, :queue, :priority, :state, :payload, :eta, :expires,
            :max_retries, :created_at, :parent_id, :root_id, {_RATE_KEY}, :conc_key)
"""
# The states in which a unique task holds its key (tasks_unique's condition).
_UNIQUE_HELD = "state IN ('PENDING', 'SCHEDULED', 'RETRY', 'STARTED', 'WAITING')"
# (new row) -> PENDING or SCHEDULED, unless a row with the same unique_key waits or runs
# (tasks_unique): then nothing is written, and the caller reads that row's id.
_SQL_INSERT_UNIQUE = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, expires,
                       max_retries, created_at, parent_id, root_id, rate_key, conc_key, unique_key)
    VALUES (:id, :name, :queue, :priority, :state, :payload, :eta, :expires,
            :max_retries, :created_at, :parent_id, :root_id, {_RATE_KEY}, :conc_key, :unique_key)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {_UNIQUE_HELD} DO NOTHING
"""
_SQL_UNIQUE_HOLDER = f"""
    SELECT id FROM tasks INDEXED BY tasks_unique
    WHERE unique_key = :unique_key AND unique_key IS NOT NULL AND {_UNIQUE_HELD}
"""
# (new row) -> PENDING, SCHEDULED or WAITING: a row of a canvas (chain, chord, link...).
# A WAITING row's eta holds a countdown, counted from when its parent ends.
_SQL_INSERT_CANVAS = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, expires,
                       max_retries, created_at, parent_id, root_id, group_id, group_index,
                       waits, input, followers, rate_key, conc_key)
    VALUES (:id, :name, :queue, :priority, :state, :payload, :eta, :expires,
            :max_retries, :created_at, :parent_id, :root_id, :group_id, :group_index,
            :waits, :input, :followers, {_RATE_KEY}, :conc_key)
"""
# (new row) -> PENDING or SCHEDULED: a member of a plain group.
_SQL_INSERT_MEMBER = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, eta, expires,
                       max_retries, created_at, parent_id, root_id, group_id, group_index,
                       rate_key, conc_key)
    VALUES (:id, :name, :queue, :priority, :state, :payload, :eta, :expires,
            :max_retries, :created_at, :parent_id, :root_id, :group_id, :group_index,
            {_RATE_KEY}, :conc_key)
"""
_SQL_INSERT_CHORD = "INSERT INTO chords (id, body, size) VALUES (:id, :body, :size)"
# Task.add_to_chord(): one more member, while the chord waits and its member still runs.
_SQL_CHORD_GROW = """
    UPDATE chords SET size = size + 1 WHERE id = :id AND fired = 0 AND EXISTS (
        SELECT 1 FROM tasks WHERE seq = :seq AND attempt = :attempt AND state = 'STARTED')
    RETURNING size
"""
_SQL_UPSERT_LIMIT = """
    INSERT INTO rate_limits (key, rate, interval) VALUES (:name, :rate, :interval)
    ON CONFLICT (key) DO UPDATE SET rate = excluded.rate, interval = excluded.interval
      WHERE rate_limits.rate IS NOT excluded.rate
"""
# The name's last limit removed: its ready rows become ordinary (tasks_limited).
_SQL_DROP_LIMIT = "DELETE FROM rate_limits WHERE key = :name"
_SQL_UNLIMIT_ROWS = """
    UPDATE tasks SET rate_key = NULL WHERE state = 'PENDING' AND rate_key = :name
"""
# Whether a task name's rows belong in the limited lane: it has a rate or a concurrency limit.
_SQL_IN_LANE = """
    SELECT EXISTS (SELECT 1 FROM rate_limits WHERE key = :name)
        OR EXISTS (SELECT 1 FROM concurrency WHERE key = :name)
"""
_SQL_UPSERT_BOUND = """
    INSERT INTO concurrency (key, max, per_key) VALUES (:name, :concurrency, :per_key)
    ON CONFLICT (key) DO UPDATE SET max = excluded.max, per_key = excluded.per_key
      WHERE concurrency.max IS NOT excluded.max OR concurrency.per_key IS NOT excluded.per_key
"""
_SQL_DROP_BOUND = "DELETE FROM concurrency WHERE key = :name"
_SQL_BOUND_OF = "SELECT max, per_key FROM concurrency WHERE key = :name"
_SQL_UPSERT_QUEUE_LIMIT = """
    INSERT INTO queue_limits (queue, max) VALUES (:queue, :max)
    ON CONFLICT (queue) DO UPDATE SET max = excluded.max WHERE queue_limits.max IS NOT excluded.max
"""
_SQL_DROP_QUEUE_LIMIT = "DELETE FROM queue_limits WHERE queue = :queue"
# The name's first limit: its waiting rows (tasks_ready, tasks_due, tasks_waiting) are
# limited, and its running rows (tasks_running) hold the concurrency slots they take.
_SQL_LIMIT_ROWS = """
    UPDATE tasks SET rate_key = :name
    WHERE seq IN (SELECT seq FROM tasks WHERE state = 'PENDING' AND rate_key IS NULL
                  UNION ALL SELECT seq FROM tasks WHERE state IN ('SCHEDULED', 'RETRY')
                  UNION ALL SELECT seq FROM tasks WHERE state = 'WAITING'
                  UNION ALL SELECT seq FROM tasks WHERE state = 'STARTED')
      AND name = :name
"""
# update_state() of the running task itself, fenced by its claim.
_SQL_SET_OWN_META = """
    UPDATE tasks SET meta = :meta WHERE seq = :seq AND attempt = :attempt AND state = 'STARTED'
"""
# update_state(task_id=...) of any unfinished task.
_SQL_SET_META = """
    UPDATE tasks SET meta = :meta
    WHERE id = :id AND state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED', 'EXPIRED')
"""
_SQL_INSERT_GROUP = """
    INSERT INTO groups (id, members, first, created_at)
    VALUES (:id, :members, :first, :created_at)
"""
_SQL_SAVE_EMPTY_GROUP = """
    INSERT INTO groups (id, members, first, created_at) VALUES (?1, ?2, ?1, ?3)
    ON CONFLICT (id) DO NOTHING
"""
_SQL_UPSERT_REGISTRY = """
    INSERT INTO registry (name, module, updated_at) VALUES (:name, :module, :now)
    ON CONFLICT (name) DO UPDATE SET module = excluded.module, updated_at = excluded.updated_at
"""
_SQL_REGISTRY = "SELECT name, module FROM registry ORDER BY name"
_SQL_UNREGISTER_TASK = "DELETE FROM registry WHERE name = :name"
_SQL_MODULE_OF = "SELECT module FROM registry WHERE name = :name"
# The rowid b-tree's last entry: a new name gets a new rowid (an update keeps its own).
_SQL_REGISTRY_MARK = "SELECT max(rowid) FROM registry"

# -- claiming and completing, and what a row's end sets off -------------------

# What a worker reads of a row it runs (or a rescuer of a row that was running): the
# columns of _Claimed, in its order.
_CLAIMED_COLUMNS = ("seq", "id", "name", "payload", "attempt", "retries", "max_retries",
                    "expires", "errors", "priority", "parent_id", "root_id", "group_id",
                    "waits", "input", "followers")
# PENDING -> STARTED: the rows `seqs` selects. A process whose workers row is gone
# (declared dead) claims nothing: a rescuer may no longer see its rows.
_CLAIM_ROWS = f"""
    UPDATE tasks SET state = 'STARTED', attempt = attempt + 1, worker = :worker, pid = :pid,
                     started_at = :now
    WHERE seq IN ({{seqs}})
      AND EXISTS (SELECT 1 FROM workers WHERE id = :worker)
      AND NOT EXISTS (SELECT 1 FROM paused WHERE queue = :queue)
    RETURNING {", ".join(_CLAIMED_COLUMNS)}
"""
_READY_ROWS = "state = 'PENDING' AND rate_key IS NULL AND queue = :queue"
# SCHEDULED or RETRY rows whose eta has come, claimed without waiting for the supervisor
# to promote them (tasks_due, in due order; a rate-limited row waits for its promotion).
_DUE_ROWS = ("state IN ('SCHEDULED', 'RETRY') AND eta <= :now AND queue = :queue "
             "AND rate_key IS NULL")
# At most n rows; for one of :share processes of a worker, at most its fair share
# ceil(rows / share), counting no further than n * share index entries, so that the
# first process a burst wakes does not take the rows the others would run meanwhile.
_FAIR_SHARE = """min(:n, (SELECT (count(*) + :share - 1) / :share FROM (
                         SELECT 1 FROM tasks WHERE {rows} LIMIT :n * :share)))"""
# tasks_ready: the LIMIT stops after n index entries.
_SQL_CLAIM = _CLAIM_ROWS.format(
    seqs=f"SELECT seq FROM tasks WHERE {_READY_ROWS} ORDER BY priority DESC, seq LIMIT :n")
_SQL_CLAIM_SHARE = _CLAIM_ROWS.format(
    seqs=f"SELECT seq FROM tasks WHERE {_READY_ROWS} ORDER BY priority DESC, seq "
         f"LIMIT {_FAIR_SHARE.format(rows=_READY_ROWS)}")
_SQL_CLAIM_DUE = _CLAIM_ROWS.format(
    seqs=f"SELECT seq FROM tasks WHERE {_DUE_ROWS} ORDER BY eta "
         f"LIMIT {_FAIR_SHARE.format(rows=_DUE_ROWS)}")
# The limited lane (rate_key set: the name has a rate or a concurrency limit). A claim
# merges into its choice the rows of names that may start some now: a name whose rate
# limit has a start to give (next_start has passed; then one row) and whose concurrency
# limit has free slots (as many as those), in a queue with free slots (queue_limits).
# Slots are STARTED rows, counted in the claim's own transaction, so two processes can
# never both take the last one. A limit that is not a whole number >= 1 (another
# client's) holds nothing, until the quarantine removes it.
# STARTED rows of the queue (tasks_running: a few) and of a limited name (tasks_holding).
_RUNNING_IN_QUEUE = """(SELECT count(*) FROM tasks INDEXED BY tasks_running
                        WHERE state = 'STARTED' AND queue = :queue)"""
_HOLDING_OF = """(SELECT count(*) FROM tasks INDEXED BY tasks_holding
                  WHERE state = 'STARTED' AND rate_key = {key})"""
# The free slots of a name's concurrency limit c (NULL: it has none, or no usable one).
_NAME_ROOM = ("CASE WHEN typeof(c.max) = 'integer' AND c.max >= 1 THEN c.max - "
              + _HOLDING_OF.format(key="{key}") + " END")
_QUEUE_FULL = f"""EXISTS (SELECT 1 FROM queue_limits AS ql
        WHERE ql.queue = :queue AND typeof(ql.max) = 'integer' AND ql.max >= 1
          AND ql.max <= {_RUNNING_IN_QUEUE})"""
_SQL_QUEUE_ROOM = f"""
    SELECT max - {_RUNNING_IN_QUEUE}
    FROM queue_limits WHERE queue = :queue AND typeof(max) = 'integer' AND max >= 1
"""
# Names with no waiting row in the queue are passed over: else they could take every
# place of a small claim, and a later name's rows would wait for ever. Each comes with
# whether it is rate-limited (then one row per claim: a start is one row), the slots its
# concurrency limit has free (NULL: no limit) and its per-key limit.
_SQL_LANE_NAMES = f"""
    SELECT l.key, EXISTS (SELECT 1 FROM rate_limits AS r WHERE r.key = l.key),
           {_NAME_ROOM.format(key="l.key")} AS room, c.per_key
    FROM (SELECT key FROM rate_limits WHERE next_start <= :now
          UNION SELECT key FROM concurrency AS b
                WHERE NOT EXISTS (SELECT 1 FROM rate_limits AS r WHERE r.key = b.key)) AS l
    LEFT JOIN concurrency AS c ON c.key = l.key
    WHERE EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_limited
                  WHERE state = 'PENDING' AND rate_key = l.key AND queue = :queue)
      AND coalesce(room, 1) > 0
      AND NOT {_QUEUE_FULL}
      AND NOT EXISTS (SELECT 1 FROM paused WHERE queue = :queue)
"""
# A name's first rows, in claim order, with their keys.
_SQL_LANE_FIRST = """
    SELECT priority, seq, conc_key FROM tasks INDEXED BY tasks_limited
    WHERE state = 'PENDING' AND rate_key = :key AND queue = :queue
    ORDER BY priority DESC, seq LIMIT :n
"""
# The first rows of the ordinary lane, to merge with the limited lane's picks.
_SQL_READY_FIRST = f"""
    SELECT priority, seq FROM tasks WHERE {_READY_ROWS} ORDER BY priority DESC, seq LIMIT :n
"""
# How many rows of each conc_key of a name are STARTED (a few rows: tasks_holding).
_SQL_HOLDING_BY_KEY = """
    SELECT conc_key, count(*) FROM tasks INDEXED BY tasks_holding
    WHERE state = 'STARTED' AND rate_key = :key GROUP BY conc_key
"""
# When a name's first _LANE_LOOK rows all belong to full keys (one key's backlog): the
# first row of each key whose slots are not all taken, by a loose index scan of
# tasks_keyed (one seek per waiting key, not one per waiting row; NULL, calls with no
# key, together count as one key), in claim order.
_LANE_LOOK = 64
_SQL_LANE_FREE_HEADS = """
    WITH RECURSIVE k(key) AS (
        SELECT (SELECT min(conc_key) FROM tasks INDEXED BY tasks_keyed
                WHERE state = 'PENDING' AND rate_key = :key AND queue = :queue
                  AND conc_key IS NOT NULL)
        UNION ALL
        SELECT (SELECT min(conc_key) FROM tasks INDEXED BY tasks_keyed
                WHERE state = 'PENDING' AND rate_key = :key AND queue = :queue
                  AND conc_key > k.key)
        FROM k WHERE k.key IS NOT NULL),
    heads(seq) AS (
        SELECT (SELECT seq FROM tasks INDEXED BY tasks_keyed
                WHERE state = 'PENDING' AND rate_key = :key AND queue = :queue
                  AND conc_key IS keys.key ORDER BY priority DESC, seq LIMIT 1)
        FROM (SELECT key FROM k WHERE key IS NOT NULL UNION ALL SELECT NULL) AS keys
        WHERE (SELECT count(*) FROM tasks INDEXED BY tasks_holding WHERE state = 'STARTED'
               AND rate_key = :key AND conc_key IS keys.key) < :per_key)
    SELECT t.priority, t.seq, t.conc_key FROM heads JOIN tasks AS t ON t.seq = heads.seq
    ORDER BY t.priority DESC, t.seq LIMIT :n
"""
# PENDING -> STARTED: the lane's rows picked above, in the same transaction.
_SQL_CLAIM_PICKED = _CLAIM_ROWS.format(seqs="SELECT value FROM json_each(:seqs)")
_SQL_TAKE_STARTS = """
    UPDATE rate_limits SET next_start = max(next_start, :now) + interval WHERE key = :key
"""
# Whether the file has limits of any kind, and the names and queues whose rows hold slots.
_SQL_HAS_LIMITS = """
    SELECT EXISTS (SELECT 1 FROM rate_limits), EXISTS (SELECT 1 FROM concurrency),
           EXISTS (SELECT 1 FROM queue_limits)
"""
_SQL_BOUNDED_NAMES = "SELECT key FROM concurrency"
_SQL_BOUNDED_QUEUES = "SELECT queue FROM queue_limits"
_LIMITS_LOOK_EVERY = 1.0         # seconds
_SQL_IS_REGISTERED = "SELECT 1 FROM workers WHERE id = :worker"
# Ready and due rows (_DUE_ROWS) of a queue that is not paused nor full, counted up to
# :cap in each of tasks_ready and tasks_due: a few index entries. Then, if the file has
# limits, when a row of the limited lane may start (_SQL_LANE_NAMES, _SQL_NEXT_START).
_SQL_READY_ROWS = f"""
    SELECT (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE {_READY_ROWS} LIMIT :cap))
         + (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE {_DUE_ROWS} LIMIT :cap))
    WHERE NOT EXISTS (SELECT 1 FROM paused WHERE queue = :queue)
"""
_SQL_READY_ROWS_LIMITED = _SQL_READY_ROWS + f" AND NOT {_QUEUE_FULL}"
# The earliest next start of a rate-limited name with a waiting row whose concurrency
# limit has a free slot (a full one is rung when a slot frees).
_SQL_NEXT_START = f"""
    SELECT min(r.next_start) FROM rate_limits AS r LEFT JOIN concurrency AS c ON c.key = r.key
    WHERE EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_limited
                  WHERE state = 'PENDING' AND rate_key = r.key AND queue = :queue)
      AND coalesce({_NAME_ROOM.format(key="r.key")}, 1) > 0
      AND NOT {_QUEUE_FULL}
      AND NOT EXISTS (SELECT 1 FROM paused WHERE queue = :queue)
"""
# STARTED -> SUCCESS, FAILURE, RETRY or EXPIRED. Primary key; the attempt and worker are
# the fencing token of the claim.
_SQL_COMPLETE = """
    UPDATE tasks SET state = :state, result = :result, traceback = :traceback, eta = :eta,
                     errors = coalesce(:errors, errors), retries = retries + :retried,
                     finished_at = CASE :state WHEN 'RETRY' THEN NULL ELSE :now END
    WHERE seq = :seq AND attempt = :attempt AND worker = :worker AND state = 'STARTED'
"""
# STARTED -> PENDING: a claimed row handed back unrun.
_SQL_RELEASE = """
    UPDATE tasks SET state = 'PENDING', worker = NULL, pid = NULL, started_at = NULL
    WHERE seq = :seq AND worker = :worker AND state = 'STARTED'
"""
# What a row's end sets in motion (_Storage._settle runs them in the transaction that
# records the end, so a crash can neither lose a follow-up nor queue one twice).
# tasks_parent serves each.
# eta becomes the time the row is due (now, or now + its countdown): for a PENDING row it
# says since when it has been ready to run.
_WAKE = ("state = CASE WHEN eta IS NULL OR eta <= 0 THEN 'PENDING' ELSE 'SCHEDULED' END, "
         "eta = :now + coalesce(eta, 0)")
# WAITING -> PENDING or SCHEDULED: the links of a task that succeeded, its result as input.
_SQL_ACTIVATE_LINKS = f"""
    UPDATE tasks SET {_WAKE}, input = CASE waits WHEN 'link' THEN :result END
    WHERE parent_id = :parent AND state = 'WAITING' AND waits IN ('link', 'link_si')
"""
# WAITING -> PENDING or SCHEDULED: the errbacks of a task that failed.
_SQL_ACTIVATE_ERRBACKS = f"""
    UPDATE tasks SET {_WAKE}
    WHERE parent_id = :parent AND state = 'WAITING' AND waits IN ('error', 'error_si')
"""
# WAITING -> (deleted): the errbacks of a task that did not fail; nothing will run them
# (nor what waits on them: _settle follows the ids down).
_SQL_DROP_ERRBACKS = """
    DELETE FROM tasks WHERE parent_id = :parent AND state = 'WAITING'
                        AND waits IN ('error', 'error_si')
    RETURNING id
"""
_SQL_DROP_WAITING_CHILDREN = """
    DELETE FROM tasks WHERE parent_id = :parent AND state = 'WAITING' RETURNING id
"""
# WAITING -> FAILURE, REVOKED or EXPIRED: the rest of a chain whose task did not succeed
# ends as that task did (Celery marks the rest of the chain failed too).
_SQL_CASCADE = """
    UPDATE tasks SET state = :state, result = :result, traceback = :traceback,
                     finished_at = :now
    WHERE parent_id = :parent AND state = 'WAITING' AND waits IN ('link', 'link_si')
    RETURNING id, name
"""
# STARTED -> (deleted): a running row Task.replace() hands its id over from.
_SQL_TAKE_REPLACED = """
    DELETE FROM tasks WHERE seq = :seq AND attempt = :attempt AND state = 'STARTED'
    RETURNING group_id, group_index, followers
"""
_SQL_MEMBER_OF = "SELECT group_id, group_index FROM tasks WHERE id = :id"
_SQL_CHORD = "SELECT body, size, done, fired FROM chords WHERE id = :id"
_SQL_CHORD_SLOT = """
    INSERT INTO chord_slots (chord, idx, result) VALUES (:chord, :idx, :result)
    ON CONFLICT DO NOTHING
"""
_SQL_CHORD_COUNT = "UPDATE chords SET done = done + 1 WHERE id = :id RETURNING done"
_SQL_CHORD_RESULTS = "SELECT idx, result FROM chord_slots WHERE chord = :chord ORDER BY idx"
_SQL_CHORD_FIRED = "UPDATE chords SET fired = 1 WHERE id = :id"
_SQL_CHORD_CLEAR = "DELETE FROM chord_slots WHERE chord = :chord"
# WAITING -> PENDING or SCHEDULED: a chord's body, every member's result as its input.
_SQL_ACTIVATE_BODY = f"""
    UPDATE tasks SET {_WAKE}, input = CASE waits WHEN 'chord' THEN :input END
    WHERE id = :id AND state = 'WAITING'
"""
# WAITING -> FAILURE: a chord's body, when a member of its header did not succeed.
_SQL_FAIL_BODY = """
    UPDATE tasks SET state = 'FAILURE', result = :result, finished_at = :now
    WHERE id = :id AND state = 'WAITING' RETURNING name
"""
# One chord member's consequences run under a savepoint: if a row it reads is not what
# litequeue writes, they are undone and the chord is set aside (_Storage._chord_part).
_SQL_CHORD_SAVEPOINT = "SAVEPOINT chord_part"
_SQL_CHORD_UNDO = "ROLLBACK TO chord_part"
_SQL_CHORD_RELEASE = "RELEASE chord_part"
_STATS_COUNTS = ("succeeded", "failed", "retried", "runtime") + \
    tuple(f"h{i}" for i in range(len(_RUNTIME_BUCKETS) + 1))


def _sane_count(column):
    """SQL for a counter as litequeue wrote it: a number from 0 to 10**15, else 0. A
    counter another client spoiled (text, a blob, a negative or a huge number) then
    neither overflows a sum nor fails the worker's next addition to it."""
    return (f"(CASE WHEN typeof({column}) IN ('integer', 'real') AND {column} >= 0 "
            f"AND {column} <= 1e15 THEN {column} ELSE 0 END)")


# A worker's batch of counters, added to the minute's row.
_SQL_ADD_STATS = f"""
    INSERT INTO stats (minute, name, queue, {", ".join(_STATS_COUNTS)})
    VALUES (?, ?, ?, {", ".join("?" for _ in _STATS_COUNTS)})
    ON CONFLICT (minute, name, queue) DO UPDATE SET
        {", ".join(f"{c} = {_sane_count(c)} + excluded.{c}" for c in _STATS_COUNTS)}
"""
_SQL_STATE_OF_SEQS = "SELECT seq, state FROM tasks WHERE seq IN (SELECT value FROM json_each(:seqs))"
# A supervisor's look at what its children run: each row's state, and 1 if it was revoked
# with terminate (_TERMINATE_NOTE).
_SQL_POLICE_STATES = """
    SELECT seq, state, state = 'REVOKED' AND traceback IS :why FROM tasks
    WHERE seq IN (SELECT value FROM json_each(:seqs))
"""
_SQL_WORKER_TOTALS = "UPDATE workers SET processed = ?, failed = ? WHERE id = ?"

# -- supervisors: workers, rescue, quarantine, the scheduler, pruning ---------

# tasks_running.
_SQL_RUNNING_OF_WORKER = f"""
    SELECT {", ".join(_CLAIMED_COLUMNS)} FROM tasks WHERE worker = :worker AND state = 'STARTED'
"""
# tasks_running: every process that holds STARTED rows, registered or not.
_SQL_CLAIMING_WORKERS = "SELECT DISTINCT worker FROM tasks WHERE state = 'STARTED'"
# STARTED (no worker) -> PENDING: only a foreign writer makes such rows; nobody owns them.
_SQL_RELEASE_UNOWNED = """
    UPDATE tasks SET state = 'PENDING', pid = NULL, started_at = NULL
    WHERE state = 'STARTED' AND worker IS NULL
"""
# STARTED -> PENDING, RETRY or FAILURE: how the row a dead process was executing ends.
_SQL_SETTLE_LOST = """
    UPDATE tasks SET state = :state, result = :result, traceback = :traceback, eta = :eta,
                     errors = :errors, retries = retries + :retried,
                     finished_at = CASE WHEN :state IN ('PENDING', 'RETRY') THEN NULL ELSE :now END
    WHERE seq = :seq AND worker = :worker AND state = 'STARTED'
"""
# Fired chords whose body row is gone (pruned or forgotten).
_SQL_PRUNE_CHORDS = """
    DELETE FROM chords WHERE fired = 1 AND NOT EXISTS (SELECT 1 FROM tasks
                                                       WHERE tasks.id = chords.body)
"""
_SQL_PRUNE_STATS = "DELETE FROM stats WHERE minute < :minute"
# Saved groups older than the cutoff whose first member was pruned or forgotten.
_SQL_PRUNE_GROUPS = """
    DELETE FROM groups WHERE created_at < :cutoff AND NOT EXISTS (
        SELECT 1 FROM tasks WHERE tasks.id = groups.first)
"""
# finished -> (deleted). tasks_finished.
_SQL_PRUNE = """
    DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE finished_at < :cutoff
                                    ORDER BY finished_at LIMIT :n)
"""
_SQL_VACUUM_STEP = f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES})"
_SQL_REGISTER_WORKER = """
    INSERT OR REPLACE INTO workers (id, parent, hostname, pid, queues, concurrency, started_at,
                                    pool)
    VALUES (:id, :parent, :hostname, :pid, :queues, :concurrency, :started_at, :pool)
"""
_SQL_UNREGISTER_WORKER = "DELETE FROM workers WHERE id = :id"
# Before a child's row goes, its totals go to its supervisor's row: a worker's counts do
# not fall as its pool shrinks or its children are replaced.
_SQL_RETIRE_TOTALS = f"""
    UPDATE workers SET
        processed = {_sane_count("processed")} + (SELECT {_sane_count("c.processed")}
                                                  FROM workers AS c WHERE c.id = :id),
        failed = {_sane_count("failed")} + (SELECT {_sane_count("c.failed")}
                                            FROM workers AS c WHERE c.id = :id)
    WHERE id = (SELECT parent FROM workers WHERE id = :id)
"""
_SQL_WORKERS = """
    SELECT id, parent, hostname, pid, queues, concurrency, started_at, processed, failed,
           pool, wanted, stop_asked
    FROM workers ORDER BY started_at
"""
_SQL_WORKER_ASKED = "SELECT wanted, stop_asked FROM workers WHERE id = :id"
_SQL_WORKER_RESIZED = """
    UPDATE workers SET concurrency = :concurrency, wanted = NULL WHERE id = :id
"""
_SQL_RUNNING_BY_WORKER = """
    SELECT worker, id, name, started_at, seq FROM tasks WHERE state = 'STARTED'
    ORDER BY started_at
"""
# SCHEDULED or RETRY -> PENDING. tasks_due: only rows waiting for their time are in it.
_SQL_PROMOTE_DUE = """
    UPDATE tasks SET state = 'PENDING'
    WHERE seq IN (SELECT seq FROM tasks WHERE state IN ('SCHEDULED', 'RETRY') AND eta <= :now
                  ORDER BY eta LIMIT :n)
"""
_SQL_NEXT_DUE = "SELECT min(eta) FROM tasks WHERE state IN ('SCHEDULED', 'RETRY')"
_SQL_NEXT_DUE_AFTER = _SQL_NEXT_DUE + " AND eta > :now"
# SCHEDULED or RETRY -> FAILURE. tasks_due, two seeks: a waiting row whose eta is not a
# time (NULL sorts first; text and blobs sort after every number) would wait for ever; it
# ends FAILURE instead. (One OR would scan the whole index.)
_SQL_BAD_ETA_SEQS = """
    SELECT seq FROM tasks WHERE state IN ('SCHEDULED', 'RETRY') AND eta IS NULL
    UNION ALL
    SELECT seq FROM tasks WHERE state IN ('SCHEDULED', 'RETRY') AND eta >= ''
"""
_SQL_QUARANTINE_ETA = f"""
    UPDATE tasks SET state = 'FAILURE', result = :result, finished_at = :now
    WHERE seq IN ({_SQL_BAD_ETA_SEQS})
    RETURNING id, name
"""
# Text that is not UTF-8 (any client can store it; apsw cannot read it back). Both read
# every row of a table: they run only after a read met such text (_Storage.repair_text).
# lq_bad_text and lq_fix_text are this process's own functions (_Storage.__init__).
_SQL_TABLES = """
    SELECT name, sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema
    WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name
"""
# One pass over a table: each row's key and a mask of its columns whose text is bad
# ({bad}: one term per column, _bad_text_mask).
_SQL_BAD_TEXT = """
    SELECT k, mask FROM (SELECT {key} AS k, {bad} AS mask FROM "{table}") WHERE mask != 0
"""
_SQL_FIX_TEXT = """
    UPDATE "{table}" SET "{column}" = lq_fix_text(CAST("{column}" AS BLOB), :suffix)
    WHERE {key} = :key AND typeof("{column}") = 'text'
"""
# Unfinished -> FAILURE: a task row that held text that is not UTF-8.
_SQL_FAIL_BAD_TEXT = """
    UPDATE tasks SET state = 'FAILURE', result = :result, finished_at = :now
    WHERE seq = :seq AND state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED', 'EXPIRED')
    RETURNING id
"""
_SQL_DISABLE_BAD_TEXT = "UPDATE schedules SET error = :error WHERE rowid = :key"
_SQL_CHORD_BY_ROWID = "SELECT id, body FROM chords WHERE rowid = :key"
# (new row) -> PENDING. A fire's task id is derived from (schedule, fire time): a second
# insert of the same fire is ignored by the UNIQUE id.
_SQL_INSERT_FIRE = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, created_at, rate_key)
    VALUES (:id, :name, :queue, :priority, 'PENDING', :payload, :now, {_RATE_KEY})
    ON CONFLICT (id) DO NOTHING
"""
# schedules_next. Disabled schedules (error set) never fire.
_SQL_DUE_SCHEDULES = """
    SELECT name, task, schedule, tz, payload, queue, priority, catch_up, last_fire
    FROM schedules WHERE next_fire <= :now AND error IS NULL
"""
_SQL_NEXT_FIRE = "SELECT min(next_fire) FROM schedules WHERE error IS NULL"
# A schedule whose times are not numbers would never be due: disable it.
_SQL_DISABLE_BAD_TIMES = """
    UPDATE schedules SET error = 'next_fire or last_fire is not a unix time'
    WHERE error IS NULL AND (typeof(next_fire) NOT IN ('integer', 'real')
                             OR typeof(last_fire) NOT IN ('integer', 'real', 'null'))
    RETURNING name
"""
_SQL_DISABLE_SCHEDULE = "UPDATE schedules SET error = :error WHERE name = :name"
# Rate limits and pauses another client wrote (SQLite stores any type in any column). A
# limit litequeue cannot use would stop its name for good: next_start a text or blob is
# never <= now, and one past any start the limit could have given (now + interval, with
# _RATE_START_SLACK for a clock stepped back and for a claim that commits between the
# supervisor's clock read and its statement) holds the name that long. The repair is one
# rule: interval is what the declared rate says (lq_limit_interval), rate is text, and a
# next_start that is not a usable time means "no start given yet" (0: the next claim
# takes one at once, then starts are spaced again). A row with neither a rate nor an
# interval to honour, or keyed by a non-text (no task name), goes: its rows run unlimited
# until a worker or producer registers the name again, which writes a fresh row.
_RATE_START_SLACK = 60.0         # seconds
_BAD_LIMIT = f"""typeof(key) != 'text' OR typeof(rate) != 'text'
    OR interval IS NOT lq_limit_interval(rate, interval)
    OR typeof(next_start) NOT IN ('integer', 'real')
    OR next_start > :now + interval + {_RATE_START_SLACK}"""
_SQL_DROP_BAD_LIMITS = """
    DELETE FROM rate_limits
    WHERE typeof(key) != 'text' OR lq_limit_interval(rate, interval) IS NULL
    RETURNING key
"""
_SQL_REPAIR_LIMITS = f"""
    UPDATE rate_limits SET
        interval = lq_limit_interval(rate, interval),
        rate = CASE typeof(rate) WHEN 'text' THEN rate
               ELSE printf('%g/s', 1.0 / lq_limit_interval(rate, interval)) END,
        next_start = CASE WHEN typeof(next_start) IN ('integer', 'real') AND next_start
                               <= :now + lq_limit_interval(rate, interval) + {_RATE_START_SLACK}
                          THEN next_start ELSE 0 END
    WHERE {_BAD_LIMIT}
    RETURNING key
"""
# A concurrency limit is a whole number >= 1 or NULL (none), of a name that is text; a row
# with neither limit, or one another client spoiled, goes (its rows run unlimited until a
# worker or producer registers the name again). So does a queue limit that is not one.
_BAD_SLOTS = "({col} IS NOT NULL AND (typeof({col}) != 'integer' OR {col} < 1))"
_BAD_BOUND = f"""typeof(key) != 'text' OR (max IS NULL AND per_key IS NULL)
       OR {_BAD_SLOTS.format(col="max")} OR {_BAD_SLOTS.format(col="per_key")}"""
_BAD_QUEUE_LIMIT = f"typeof(queue) != 'text' OR max IS NULL OR {_BAD_SLOTS.format(col='max')}"
_SQL_DROP_BAD_BOUNDS = f"DELETE FROM concurrency WHERE {_BAD_BOUND} RETURNING key"
_SQL_DROP_BAD_QUEUE_LIMITS = f"DELETE FROM queue_limits WHERE {_BAD_QUEUE_LIMIT} RETURNING queue"
# PENDING rows whose rate_key names no limit are never claimed (_SQL_CLAIM wants none,
# _SQL_CLAIM_LIMITED joins rate_limits). litequeue writes rate_key only with its limit in
# the same transaction, so such a key is another client's, or of a row dropped above:
# the rows run unlimited (_SQL_UNLIMIT_ROWS). tasks_limited, one seek per distinct key (a
# loose index scan), not one per row.
_SQL_ORPHAN_KEYS = """
    WITH RECURSIVE k(key) AS (
        SELECT (SELECT min(rate_key) FROM tasks INDEXED BY tasks_limited
                WHERE state = 'PENDING' AND rate_key IS NOT NULL)
        UNION ALL
        SELECT (SELECT min(rate_key) FROM tasks INDEXED BY tasks_limited
                WHERE state = 'PENDING' AND rate_key > k.key)
        FROM k WHERE k.key IS NOT NULL)
    SELECT key FROM k
    WHERE key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM rate_limits AS r WHERE r.key = k.key)
      AND NOT EXISTS (SELECT 1 FROM concurrency AS c WHERE c.key = k.key)
"""
# A paused queue whose name is not text names no queue (and `resume` cannot name it): it
# goes. One whose since is not a time stays paused (a pause is on purpose): since = now.
_SQL_DROP_BAD_PAUSES = "DELETE FROM paused WHERE typeof(queue) != 'text' RETURNING queue"
_SQL_REPAIR_PAUSES = """
    UPDATE paused SET since = :now WHERE typeof(since) NOT IN ('integer', 'real')
    RETURNING queue
"""
# tasks_due, tasks_running, tasks_limited and the small schedules, rate_limits and paused
# tables: is anything above to do?
_SQL_NEEDS_QUARANTINE = f"""
    SELECT EXISTS ({_SQL_BAD_ETA_SEQS}),
           EXISTS (SELECT 1 FROM schedules
                   WHERE error IS NULL AND (typeof(next_fire) NOT IN ('integer', 'real')
                                            OR typeof(last_fire) NOT IN ('integer', 'real',
                                                                         'null'))),
           EXISTS (SELECT 1 FROM tasks WHERE state = 'STARTED' AND worker IS NULL),
           EXISTS (SELECT 1 FROM rate_limits WHERE {_BAD_LIMIT}),
           EXISTS ({_SQL_ORPHAN_KEYS}),
           EXISTS (SELECT 1 FROM concurrency WHERE {_BAD_BOUND}),
           EXISTS (SELECT 1 FROM queue_limits WHERE {_BAD_QUEUE_LIMIT}),
           EXISTS (SELECT 1 FROM paused
                   WHERE typeof(queue) != 'text' OR typeof(since) NOT IN ('integer', 'real'))
"""
_SQL_SET_FIRED = """
    UPDATE schedules SET last_fire = :last_fire, next_fire = :next_fire, fires = fires + :fired
    WHERE name = :name
"""
_SQL_GET_SCHEDULE = "SELECT schedule, tz, last_fire FROM schedules WHERE name = :name"
_SQL_UPSERT_SCHEDULE = """
    INSERT INTO schedules (name, task, module, schedule, tz, payload, queue, priority, catch_up,
                           last_fire, next_fire, updated_at)
    VALUES (:name, :task, :module, :schedule, :tz, :payload, :queue, :priority, :catch_up,
            :last_fire, :next_fire, :now)
    ON CONFLICT (name) DO UPDATE SET
        task = excluded.task, module = excluded.module, schedule = excluded.schedule,
        tz = excluded.tz, payload = excluded.payload, queue = excluded.queue,
        priority = excluded.priority, catch_up = excluded.catch_up,
        last_fire = excluded.last_fire, next_fire = excluded.next_fire,
        updated_at = excluded.updated_at, error = NULL
"""
_SQL_DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = :name"
_SQL_SCHEDULES_OF_MODULE = "SELECT name FROM schedules WHERE module = :module"

# -- the admin surface and results --------------------------------------------

_SQL_RATE_LIMITS = "SELECT key, rate, interval, next_start FROM rate_limits ORDER BY key"
_SQL_BOUNDS = "SELECT key, max, per_key FROM concurrency ORDER BY key"
_SQL_QUEUE_LIMITS = "SELECT queue, max FROM queue_limits ORDER BY queue"
_SQL_HOLDING = "SELECT " + _HOLDING_OF.format(key=":key")
_SQL_HOLDING_KEY = "SELECT " + _HOLDING_OF.format(key=":key AND conc_key IS :conc_key")
_SQL_RUNNING_IN = "SELECT " + _RUNNING_IN_QUEUE
_SQL_PAUSE = "INSERT INTO paused (queue, since) VALUES (:queue, :now) ON CONFLICT DO NOTHING"
_SQL_RESUME = "DELETE FROM paused WHERE queue = :queue"
_SQL_PAUSED = "SELECT queue, since FROM paused ORDER BY queue"
# UNIQUE index on id. Without terminate, a running task is left to finish.
_SQL_REVOKE_TARGET = "SELECT seq, state, worker FROM tasks WHERE id = :id"
# PENDING, SCHEDULED, RETRY, WAITING or STARTED -> REVOKED. With terminate the row says so
# (_TERMINATE_NOTE in traceback): only then does a supervisor kill the process running it.
_SQL_REVOKE = """
    UPDATE tasks SET state = 'REVOKED', finished_at = :now,
                     traceback = CASE WHEN :terminate THEN :why ELSE traceback END
    WHERE seq = :seq AND state IN ('PENDING', 'SCHEDULED', 'RETRY', 'WAITING', 'STARTED')
"""
_SQL_CHILDREN = "SELECT id FROM tasks WHERE parent_id = :id ORDER BY seq"
_SQL_GROUP_MEMBERS = "SELECT members FROM groups WHERE id = :id"
_SQL_CHORD_OF_BODY = "SELECT id FROM chords WHERE body = :id"
_SQL_CHORD_PROGRESS = "SELECT done, size FROM chords WHERE body = :id"  # chords_body
# chords_body, then tasks_group: the header member that ended last.
_SQL_CHORD_STARTER = """
    SELECT t.id FROM chords AS c JOIN tasks AS t ON t.group_id = c.id
    WHERE c.body = :id AND t.finished_at IS NOT NULL ORDER BY t.finished_at DESC LIMIT 1
"""
# UNIQUE index on id.
_TASK_COLUMNS = ("id", "name", "queue", "priority", "state", "attempt", "retries", "worker",
                 "pid", "created_at", "started_at", "finished_at", "result", "traceback",
                 "errors", "eta", "expires", "payload", "parent_id", "root_id", "group_id",
                 "group_index", "waits", "meta", "input", "rate_key", "unique_key",
                 "conc_key")
_SQL_GET_TASK = f"""
    SELECT {", ".join(_TASK_COLUMNS)} FROM tasks WHERE id = :id
"""
# Primary key, newest first; the filters are optional.
_SQL_LIST_TASKS = f"""
    SELECT {", ".join(_TASK_COLUMNS)}
    FROM tasks WHERE (:state IS NULL OR state = :state) AND (:queue IS NULL OR queue = :queue)
                 AND (:name IS NULL OR name = :name)
    ORDER BY seq DESC LIMIT :n
"""
_SQL_FORGET = "DELETE FROM tasks WHERE id = :id"         # any -> (deleted)
# A unique task's key is held by another row that waits or runs (tasks_unique).
_KEY_HELD = f"""(unique_key IS NOT NULL AND EXISTS (
    SELECT 1 FROM tasks AS holder INDEXED BY tasks_unique
    WHERE holder.unique_key = tasks.unique_key AND holder.{_UNIQUE_HELD}))"""
# A row that ended without running because what it waited for did not succeed (the rest
# of a chain, a chord's body): it has no input, so it cannot run on its own.
_NEVER_RAN_FOLLOWER = "(waits IS NOT NULL AND waits IN ('link', 'chord') AND input IS NULL)"
# FAILURE, REVOKED or EXPIRED -> PENDING: a finished task queued again by hand, with a
# fresh retry budget, its error history kept (not a follower that never ran).
_SQL_REQUEUE = f"""
    UPDATE tasks SET state = 'PENDING', result = NULL, traceback = NULL, finished_at = NULL,
                     eta = NULL, expires = NULL, worker = NULL, pid = NULL, started_at = NULL,
                     retries = 0
    WHERE id = :id AND state IN ('FAILURE', 'REVOKED', 'EXPIRED')
      AND NOT {_NEVER_RAN_FOLLOWER} AND NOT {_KEY_HELD}
"""
# FAILURE, REVOKED or EXPIRED -> WAITING: the rest of a chain that the requeued task's end
# had ended without running waits for it again (tasks_parent; a worklist follows it down).
_SQL_REOPEN_CHAIN = """
    UPDATE tasks SET state = 'WAITING', result = NULL, traceback = NULL, finished_at = NULL
    WHERE parent_id = :parent AND waits IN ('link', 'link_si') AND attempt = 0
      AND state IN ('FAILURE', 'REVOKED', 'EXPIRED')
    RETURNING id
"""
# FAILURE -> PENDING, in bulk (by task name, or all): the dashboard's "retry all failed".
# tasks_failed: the ids of a batch, each then requeued as above.
_SQL_FAILED_IDS = f"""
    SELECT id FROM tasks INDEXED BY tasks_failed
    WHERE state = 'FAILURE' AND (:name IS NULL OR name = :name) AND NOT {_NEVER_RAN_FOLLOWER}
    LIMIT :n
"""
# WAITING -> (deleted): rows whose parent is gone (purged or deleted): nothing would ever
# wake them. tasks_waiting, then the parent's UNIQUE id.
_SQL_DROP_ORPHANS = """
    DELETE FROM tasks WHERE seq IN (
        SELECT seq FROM tasks INDEXED BY tasks_waiting WHERE state = 'WAITING'
          AND parent_id IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM tasks AS p WHERE p.id = tasks.parent_id) LIMIT :n)
"""
# PENDING, SCHEDULED, RETRY or WAITING -> (deleted).
_SQL_PURGE = """
    DELETE FROM tasks WHERE seq IN (
        SELECT seq FROM tasks WHERE state IN ('PENDING', 'SCHEDULED', 'RETRY', 'WAITING')
                              AND (:queue IS NULL OR queue = :queue) LIMIT :n)
"""
_SQL_COUNTS = "SELECT queue, state, count(*) FROM tasks GROUP BY queue, state ORDER BY 1, 2"
# An operator's request to a supervisor (the transitions of `litequeue control`).
_SQL_ASK_WORKER_STOP = """
    UPDATE workers SET stop_asked = :now WHERE id = :id AND parent IS NULL
"""
_SQL_ASK_WORKER_POOL = """
    UPDATE workers SET wanted = :wanted WHERE id = :id AND parent IS NULL
"""
_SQL_SCHEDULES = """
    SELECT name, task, module, schedule, tz, queue, priority, catch_up, last_fire, next_fire,
           fires, error
    FROM schedules ORDER BY name
"""
# An operator's switch (Admin.disable_schedule): the error column is the one "disabled"
# flag the scheduler reads; this text marks the operator's choice apart from a repair.
_SQL_SET_SCHEDULE_ERROR = """
    UPDATE schedules SET error = :error WHERE name = :name AND error IS NOT :error
"""
_SQL_SCHEDULE_FIRE = "SELECT task, payload, queue, priority FROM schedules WHERE name = :name"
# A workflow (chain, group, chord) from its root: the rows that follow one (tasks_parent),
# the members of its group (tasks_group) and a chord's body (chords), at most :n rows.
_SQL_WORKFLOW = f"""
    WITH RECURSIVE flow(id) AS (
        SELECT :root
        UNION SELECT t.id FROM flow JOIN tasks AS t ON t.parent_id = flow.id
        UNION SELECT m.id FROM flow JOIN tasks AS g ON g.id = flow.id
              JOIN tasks AS m ON m.group_id = g.group_id
        UNION SELECT c.body FROM flow JOIN tasks AS g ON g.id = flow.id
              JOIN chords AS c ON c.id = g.group_id
        LIMIT :n)
    SELECT {", ".join("t." + c for c in _TASK_COLUMNS)} FROM flow JOIN tasks AS t
    ON t.id = flow.id ORDER BY t.seq
"""
# Custom update_state() states are kept beside running rows (tasks_running): read them.
_SQL_RUNNING_META = "SELECT meta FROM tasks WHERE state = 'STARTED' AND meta IS NOT NULL"
# The monitoring reads (dashboard, /metrics, health): each through an index, so their cost
# follows the waiting and running rows, not the finished ones.
# Each part reads one partial index and no table row (tasks_ready, tasks_due, tasks_waiting
# and tasks_failed cover it; tasks_running reads the few running rows). The oldest waiting
# task of a queue is the row of its smallest seq: one lookup per queue.
_SQL_STATE_COUNTS = """
    SELECT queue, 'PENDING', n, (SELECT max(created_at, coalesce(eta, 0)) FROM tasks
                                 WHERE seq = first)
    FROM (SELECT queue, sum(n) AS n, min(first) AS first FROM (
              SELECT queue, count(*) AS n, min(seq) AS first FROM tasks
              WHERE state = 'PENDING' AND rate_key IS NULL GROUP BY queue
              UNION ALL SELECT queue, count(*), min(seq) FROM tasks
              WHERE state = 'PENDING' AND rate_key IS NOT NULL GROUP BY queue)
          GROUP BY queue)
    UNION ALL SELECT queue, state, count(*), NULL FROM tasks
    WHERE state IN ('SCHEDULED', 'RETRY') GROUP BY queue, state
    UNION ALL SELECT queue, 'STARTED', count(*), NULL FROM tasks
    WHERE state = 'STARTED' GROUP BY queue
    UNION ALL SELECT queue, 'WAITING', count(*), NULL FROM tasks
    WHERE state = 'WAITING' GROUP BY queue
    UNION ALL SELECT queue, 'FAILURE', count(*), NULL FROM tasks WHERE state = 'FAILURE'
    GROUP BY queue
"""
# stats' primary key: the minutes since :since, summed over task names and queues.
# Each sums sane counters only (_sane_count), so a spoiled one cannot overflow it.
_SQL_STATS_BY_MINUTE = f"""
    SELECT minute, {", ".join(f"sum({_sane_count(c)})" for c in _STATS_COUNTS[:4])}
    FROM stats WHERE minute >= :since GROUP BY minute ORDER BY minute
"""
_SQL_STATS_BY_QUEUE = f"""
    SELECT queue, {", ".join(f"sum({_sane_count(c)})" for c in _STATS_COUNTS[:2])}
    FROM stats WHERE minute >= :since GROUP BY queue
"""
_SQL_STATS_BY_NAME = f"""
    SELECT name, {", ".join(f"sum({_sane_count(c)})" for c in _STATS_COUNTS)}
    FROM stats WHERE minute >= :since GROUP BY name ORDER BY name
"""
# A page of tasks, newest first, from :before down (primary key; keyset paging). A filter
# on state uses that state's index where there is one. Text search looks only at the
# newest :window rows, so a search never reads the whole table. It looks into the
# arguments only of a call that gave neither argsrepr nor kwargsrepr (their keys, as
# msgpack writes them, are absent): the arguments such a call hides cannot be found
# either.
_SQL_TASK_PAGE = f"""
    SELECT seq, {", ".join(_TASK_COLUMNS)} FROM tasks
    WHERE seq < :before AND seq > :after AND (:state IS NULL OR state = :state)
      AND (:queue IS NULL OR queue = :queue) AND (:name IS NULL OR name = :name)
      AND (:text IS NULL OR instr(payload, CAST(:text AS BLOB)) > 0
               AND instr(payload, X'a86172677372657072') = 0
               AND instr(payload, X'aa6b776172677372657072') = 0
           OR instr(id, :text) > 0 OR instr(name, :text) > 0)
    ORDER BY seq DESC LIMIT :n
"""
_SQL_MAX_SEQ = "SELECT max(seq) FROM tasks"
# Failure mails. tasks_failed: the failures that finished in (cursor, until]. The cursor
# moves only once a mail of them was accepted, and never back.
_SQL_ALERT_CURSOR = "SELECT cursor FROM alerts WHERE id = 1"
_SQL_FAILURES = """
    SELECT id, name, result, traceback, finished_at FROM tasks INDEXED BY tasks_failed
    WHERE state = 'FAILURE' AND finished_at > :after AND finished_at <= :until
    ORDER BY finished_at
"""
_SQL_START_ALERT_CURSOR = "INSERT OR IGNORE INTO alerts (id, cursor) VALUES (1, :cursor)"
_SQL_MARK_MAILED = "UPDATE alerts SET cursor = :until WHERE id = 1 AND cursor < :until"

# -- workflows: steps, messages and events -------------------------------------

_STEP_COLUMNS = ("idx", "kind", "name", "child", "state", "result", "traceback", "until",
                 "started_at", "finished_at")
_SQL_STEPS = f"""
    SELECT {", ".join(_STEP_COLUMNS)} FROM steps WHERE workflow = :workflow ORDER BY idx
"""
_SQL_STEP = f"""
    SELECT {", ".join(_STEP_COLUMNS)} FROM steps WHERE workflow = :workflow AND idx = :idx
"""
# A workflow's run writes only while its row is still the one it claimed (the fencing
# token): a run that a rescue superseded records nothing.
_WORKFLOW_FENCE = """EXISTS (SELECT 1 FROM tasks WHERE id = :workflow AND attempt = :attempt
                               AND state = 'STARTED')"""
# (new step): an open one (state NULL: a task step queued, a sleep or recv begun), or one
# recorded as it ended (a step function's outcome, a message taken, an event, a send).
_SQL_RECORD_STEP = f"""
    INSERT INTO steps (workflow, idx, kind, name, child, state, result, traceback, until,
                       started_at, finished_at)
    SELECT :workflow, :idx, :kind, :name, :child, :state, :result, :traceback, :until,
           :now, CASE WHEN :state IS NULL THEN NULL ELSE :now END
    WHERE {_WORKFLOW_FENCE}
"""
# An open step ends: a sleep that is over, a recv that timed out or got its message.
_SQL_END_STEP = f"""
    UPDATE steps SET state = :state, result = :result, traceback = NULL, finished_at = :now
    WHERE workflow = :workflow AND idx = :idx AND state IS NULL AND {_WORKFLOW_FENCE}
"""
# A task step's row ended: its outcome becomes the step's, in the transaction that records
# the row's end (_Storage._settle); steps_child serves it.
_SQL_STEP_CHILD_ENDED = """
    UPDATE steps SET state = :state, result = :result, traceback = :traceback,
                     finished_at = :now
    WHERE child = :child AND state IS NULL
    RETURNING workflow, idx
"""
# WAITING -> PENDING: a workflow waiting for this step (waits 'step:<idx>'), once it ended.
_SQL_WAKE_WORKFLOW = """
    UPDATE tasks SET state = 'PENDING', eta = :now, waits = NULL
    WHERE id = :workflow AND state = 'WAITING' AND waits = 'step:' || :idx
    RETURNING seq
"""
# STARTED -> WAITING (a task step), SCHEDULED (a sleep, a recv with a timeout) or PENDING
# (what it would wait for came meanwhile): a workflow's run ended at a wait.
_SQL_SUSPEND = """
    UPDATE tasks SET state = :state, eta = :eta, waits = :waits
    WHERE seq = :seq AND attempt = :attempt AND worker = :worker AND state = 'STARTED'
"""
_SQL_STEP_ENDED = """
    SELECT 1 FROM steps WHERE workflow = :workflow AND idx = :idx AND state IS NOT NULL
"""
_SQL_HAS_MESSAGE = "SELECT 1 FROM messages WHERE workflow = :workflow AND topic = :topic LIMIT 1"
# (new message) to a workflow; messages_to serves the rest.
_SQL_SEND = """
    INSERT INTO messages (workflow, topic, body, sent_at) VALUES (:workflow, :topic, :body, :now)
"""
# WAITING or SCHEDULED -> PENDING: a workflow waiting in recv() for this topic.
_SQL_WAKE_RECEIVER = """
    UPDATE tasks SET state = 'PENDING', eta = :now, waits = NULL
    WHERE id = :workflow AND state IN ('WAITING', 'SCHEDULED') AND waits = 'recv:' || :topic
"""
# A recv() step takes the oldest message of its topic (and records it, fenced).
_SQL_TAKE_MESSAGE = """
    DELETE FROM messages WHERE seq = (SELECT seq FROM messages WHERE workflow = :workflow
                                      AND topic = :topic ORDER BY seq LIMIT 1)
    RETURNING body
"""
_SQL_SET_EVENT = """
    INSERT INTO events (workflow, key, value, set_at) VALUES (:workflow, :key, :value, :now)
    ON CONFLICT (workflow, key) DO UPDATE SET value = excluded.value, set_at = excluded.set_at
"""
_SQL_GET_EVENT = "SELECT value FROM events WHERE workflow = :workflow AND key = :key"
_SQL_TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = :workflow"
# Workflows, newest first: each task row that has steps, with its last step.
_SQL_WORKFLOWS = f"""
    SELECT {", ".join("t." + c for c in _TASK_COLUMNS)}, s.steps, s.last
    FROM (SELECT workflow, count(*) AS steps, max(idx) AS last FROM steps
          GROUP BY workflow) AS s
    JOIN tasks AS t ON t.id = s.workflow
    WHERE (:state IS NULL OR t.state = :state)
    ORDER BY t.seq DESC LIMIT :n
"""
# A workflow queued again (`litequeue retry`): its steps that failed are forgotten, so
# that they run again; the steps that succeeded are kept.
_SQL_DROP_FAILED_STEPS = """
    DELETE FROM steps WHERE workflow = :workflow AND state IN ('FAILURE', 'REVOKED', 'EXPIRED')
"""
# (new row) PENDING: a fork of a workflow, with the steps recorded before index :n.
_SQL_FORK_WORKFLOW = f"""
    INSERT INTO tasks (id, name, queue, priority, state, payload, expires, max_retries,
                       created_at, rate_key, conc_key)
    SELECT :new, name, queue, priority, 'PENDING', payload, NULL, max_retries, :now,
           {_RATE_KEY.replace(":name", "tasks.name")}, conc_key
    FROM tasks WHERE id = :workflow
"""
_SQL_FORK_STEPS = """
    INSERT INTO steps (workflow, idx, kind, name, child, state, result, traceback, until,
                       started_at, finished_at)
    SELECT :new, idx, kind, name, child, state, result, traceback, until, started_at,
           finished_at
    FROM steps WHERE workflow = :workflow AND idx < :n
"""
# A pruned (or forgotten) workflow's steps, messages and events go with it: one probe
# of the task ids per workflow, after a prune that deleted rows.
_SQL_PRUNE_WORKFLOWS = [f"""
    DELETE FROM {table} WHERE workflow IN (
        SELECT DISTINCT workflow FROM {table}
        WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.id = {table}.workflow))
""" for table in ("steps", "messages", "events")]


# ---------------------------------------------------------------------------
# Storage: files, rows and text repair
# What the connection checks before it opens a file, the rows it hands out, and the
# repair of text that is not UTF-8 (every public method runs under _guarded).
# ---------------------------------------------------------------------------

_SQLITE_HEADER = b"SQLite format 3\x00"


# What a database path may name instead of a regular file, in words.
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _refuse_odd_file(path, mode):
    """CorruptDatabase unless mode is a regular file's: SQLite would block on a FIFO, and
    put a journal beside a device."""
    if not stat.S_ISREG(mode):
        kind = next((words for test, words in _FILE_KINDS if test(mode)), "not a file")
        raise CorruptDatabase(f"{path} is {kind}, not a regular file: it cannot be a "
                              f"database")


def _check_header(path):
    """Refuse anything but a regular file that is SQLite (or nothing: SQLite creates it)
    before SQLite gets a chance to touch it. Nothing blocks: the kind of file is checked
    before it is opened, and it is opened without waiting for a FIFO's writer."""
    try:
        _refuse_odd_file(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        _refuse_odd_file(path, os.fstat(fd).st_mode)    # swapped since the stat
        head = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if head and (len(head) < 100 or not head.startswith(_SQLITE_HEADER)):
        raise CorruptDatabase(f"{path} is not a SQLite database (bad header)")


def _param_order(sql):
    """The names of a statement's :parameters in SQLite's numbering (first appearance):
    the order a tuple binds in. The hot statements bind tuples built from these names, so
    reordering their SQL cannot bind a value to the wrong name."""
    return tuple(dict.fromkeys(re.findall(r":(\w+)", sql)))


# The two statements run once per task bind tuples, in these orders. They are checked
# against the SQL here, so an edit that renumbers a parameter fails at import instead of
# binding a value to the wrong name.
_COMPLETE_ORDER = ("state", "result", "traceback", "eta", "errors", "retried", "now", "seq",
                   "attempt", "worker")
_CLAIM_ORDER = ("worker", "pid", "now", "queue", "n")
_CLAIM_SHARE_ORDER = _CLAIM_ORDER + ("share",)
for _sql, _order in ((_SQL_COMPLETE, _COMPLETE_ORDER), (_SQL_CLAIM, _CLAIM_ORDER),
                     (_SQL_CLAIM_SHARE, _CLAIM_SHARE_ORDER),
                     (_SQL_CLAIM_DUE, _CLAIM_SHARE_ORDER)):
    if _param_order(_sql) != _order:
        raise ImportError(f"litequeue: a statement's parameters are {_param_order(_sql)}, "
                          f"not {_order}")

# A claimed row, as _SQL_CLAIM returns it.
# A row as a worker runs it (claimed) or a rescuer settles it (it was running).
_Claimed = collections.namedtuple("_Claimed", _CLAIMED_COLUMNS)
# A workflow's step, as _SQL_STEPS returns it.
_Step = collections.namedtuple("_Step", _STEP_COLUMNS)


def _pick_order(pick):
    """(priority, seq, ...) of a row a claim may take, in claim order (a priority
    another client wrote that is no integer counts as 0)."""
    priority = pick[0] if isinstance(pick[0], int) else 0
    return -priority, pick[1]


def _claim_order(row):
    """RETURNING gives rows in no useful order: run a batch by priority, then seq."""
    priority = row.priority if isinstance(row.priority, int) else 0
    return -priority, row.seq


class _Outcome:
    """How one claimed row ended, as complete_and_claim (or a rescue) records it. tag is
    the prefix of the get() waiters to ring (None: nobody can wait on the row). A row with
    followers (links, errbacks, a chord) also carries its id, and `passed`, the result
    blob its links receive when the row itself keeps none (ignore_result)."""

    __slots__ = ("state", "result", "traceback", "seq", "attempt", "tag", "eta", "errors",
                 "retried", "id", "followers", "passed", "waits")

    def __init__(self, state, result=None, traceback=None, *, seq, attempt, tag, eta=None,
                 errors=None, retried=0, id=None, followers=0, passed=None, waits=None):
        self.state, self.result, self.traceback = state, result, traceback
        self.seq, self.attempt, self.tag = seq, attempt, tag
        self.eta, self.errors, self.retried = eta, errors, retried
        self.id, self.followers, self.passed = id, followers, passed
        self.waits = waits          # a workflow's suspension (_SUSPENDED): what it waits for

    def params(self, worker, now):
        """The named parameters of _SQL_COMPLETE and _SQL_SETTLE_LOST."""
        return {"state": self.state, "result": self.result, "traceback": self.traceback,
                "eta": self.eta, "errors": self.errors, "retried": self.retried, "now": now,
                "seq": self.seq, "attempt": self.attempt, "worker": worker}

    def complete_params(self, worker, now):
        """params() as a tuple in _COMPLETE_ORDER (a tuple binds faster than a dict, and
        this is once per task)."""
        return (self.state, self.result, self.traceback, self.eta, self.errors, self.retried,
                now, self.seq, self.attempt, worker)

    def ended(self):
        """(id, state, result, traceback) for _settle, or None if nothing follows it."""
        if not self.followers or self.state not in _ENDED_STATES or not isinstance(self.id, str):
            return None
        return (self.id, self.state, self.passed if self.passed is not None else self.result,
                self.traceback)


class _FollowUps:
    """What _settle set in motion in one transaction, for the caller to ring once it has
    committed: rows queued (woken) and rows that ended without running (ended ids).
    seqs: the woken rows known by seq (workflows): when the same transaction claimed all
    of them, and they are all that was woken, there is nobody to ring."""

    __slots__ = ("woken", "ended", "seqs")

    def __init__(self):
        self.woken = 0
        self.ended = []
        self.seqs = []

    def claimed(self, rows):
        """The transaction's claim took rows: forget the woken ones it took itself."""
        if self.woken and self.woken == len(self.seqs) and \
                set(self.seqs) <= {row.seq for row in rows}:
            self.woken = 0


# What a settling write returns: its own figures and the _FollowUps its caller rings once it
# has committed (None: nothing to ring). complete_and_claim: the rows a worker child claimed
# and how many outcomes were refused for a stale fencing token.
_Committed = collections.namedtuple("_Committed", "rows rejected follow_ups")
# rescue: rows given back to PENDING (or RETRY) and rows failed.
_Rescued = collections.namedtuple("_Rescued", "requeued failed follow_ups")
# quarantine: [(task id, name)] failed, [schedule name] disabled, [repairs, as log lines].
_Quarantined = collections.namedtuple("_Quarantined", "failed disabled repaired follow_ups")


def _msgpack_array(blobs):
    """One msgpack array of already-encoded values (None: nil), without decoding them."""
    n = len(blobs)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536
                                             else b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(b"\xc0" if b is None else bytes(b) for b in blobs)


def _dependency_error(task_id, state, result):
    """The ChordError a chord's body ends with when header member task_id did not
    succeed (Celery's wording)."""
    if state == FAILURE:
        try:
            info = _unpack(result)
        except Exception:
            info = None
        info = info if isinstance(info, dict) else {}
        kind = str(info.get("type", "Exception")).rpartition(".")[2]
        return ChordError(f"Dependency {task_id} raised {kind}({str(info.get('message', ''))!r})")
    return ChordError(f"Dependency {task_id} was {str(state).lower()}")


def _bad_chord_row(chord_id, body, size, done, fired):
    """Why the row of a chord not yet fired is not one litequeue wrote, or None if it
    is. Each column is type-checked here, so a foreign write cannot raise in the
    transaction that records a member's end (an int compared with a str or bytes would)."""
    if type(fired) is not int or fired != 0:
        problem = f"fired is {fired!r}, not 0 or 1"
    elif not isinstance(body, str):
        problem = f"body is {body!r}, not a task id"
    elif type(size) is not int:
        problem = f"size is {size!r}, not a whole number"
    elif size < 1:
        problem = f"size is {size!r}, not a count of one member or more"
    elif type(done) is not int:
        problem = f"done is {done!r}, not a whole number"
    elif not 0 <= done < size:
        problem = f"done is {done!r}, not between 0 and size - 1 ({size - 1})"
    else:
        return None
    return f"chord row {chord_id}: {problem}"


def _bad_chord_slot(chord_id, index, result):
    """Why a chord_slots result is not one litequeue wrote (msgpack bytes or NULL)."""
    if result is None or isinstance(result, bytes):
        return None
    return f"chord row {chord_id}: slot {index!r} has result {result!r:.60}, not msgpack bytes"


def _bad_utf8(data):
    """1 if bytes are not UTF-8 (SQL: lq_bad_text(CAST(x AS BLOB)))."""
    if not isinstance(data, bytes) or data.isascii():
        return 0
    try:
        data.decode()
    except UnicodeDecodeError:
        return 1
    return 0


def _limit_interval(rate, interval):
    """The seconds between two starts a rate_limits row stands for (SQL: lq_limit_interval):
    its declared rate's, when rate is one (_parse_rate), for the interval is derived from
    it; else its interval as it stands, when that is a usable one (a number > 0, finite);
    else None: nothing is left to honour."""
    try:
        parsed = _parse_rate(rate) if isinstance(rate, str) else None
    except ConfigurationError:
        parsed = None
    if parsed is not None:
        return parsed[1]
    if _is_time(interval) and 0 < interval < math.inf:
        return interval
    return None


def _fixed_utf8(data, suffix):
    """Text that is not UTF-8, made readable: each bad byte as a \\xNN escape (SQL:
    lq_fix_text); suffix keeps a repaired key unique if the escaped text is taken."""
    return data.decode(errors="backslashreplace") + (suffix or "")


# A read that meets bad text repairs the file and reads again, up to this many times: a
# client that keeps writing such text can slip a new value in between a repair and a read.
_TEXT_REPAIRS = 5


# Columns one pass of repair_text looks at: bits of a signed 64-bit mask.
_MASK_BITS = 62


def _bad_text_mask(columns):
    """SQL of a mask whose bit i is set where columns[i] holds text that is not UTF-8."""
    return " + ".join(f"((typeof(\"{c}\") = 'text' AND lq_bad_text(CAST(\"{c}\" AS BLOB))) "
                      f"<< {i})" for i, c in enumerate(columns))


def _guarded(method):
    """A _Storage method whose apsw errors a user can meet become LitequeueErrors that
    say what to do (a read-only file, a file SQLite cannot open), and that, when a read
    meets text that is not UTF-8, repairs the file's text (repair_text) and runs again.
    Inside a transaction a decode error goes up to the method that began it, which rolls
    back first."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            for _ in range(_TEXT_REPAIRS):
                try:
                    return method(self, *args, **kwargs)
                except UnicodeDecodeError:
                    if self.conn.in_transaction:
                        raise
                # Out of the except block: its traceback held the failed statement, still
                # in progress, and no commit can happen while it is.
                self.repair_text(time.time())
            try:
                return method(self, *args, **kwargs)
            except UnicodeDecodeError as exc:
                if self.conn.in_transaction:
                    raise
                raise BadText(f"{self.path}: a row holds text that is not UTF-8 and it could "
                              f"not be repaired ({exc.reason} at byte {exc.start})") from None
        except apsw.ReadOnlyError:
            raise self._read_only() from None
        except apsw.CantOpenError as exc:
            raise self._cant_open(exc) from None
    return guarded


# ---------------------------------------------------------------------------
# Storage: the connection
# _Connection opens, checks and migrates the file and owns the write transaction.
# ---------------------------------------------------------------------------

class _Connection:
    """The connection: opening and checking the file, pragmas and migrations, the
    write transaction, busy waits, error translation, checkpoints."""

    # SQLite's files beside the database, and what each is for (in _cant_open's message).
    _COMPANIONS = (("-wal", "WAL file"), ("-shm", "WAL index (shared-memory) file"),
                   ("-journal", "rollback journal"))

    def __init__(self, path, *, synchronous="NORMAL", busy_timeout=30.0,
                 autocheckpoint=1000, create=True, busy_steps=_BUSY_STEPS_PRODUCER,
                 on_wal_growth=None, read_only=False):
        self.path = path
        self.create = create and not read_only
        if not self.create and not os.path.exists(path):
            raise DatabaseError(f"no database at {path}")
        _check_header(path)
        try:
            self.conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY if read_only
                                        else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        except apsw.CantOpenError as exc:
            raise self._cant_open(exc) from None
        except apsw.Error as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from None
        self.busy_timeout = busy_timeout
        self._busy_wait = self._stepped_wait(busy_steps, busy_timeout)
        self._set_busy_handler()
        self.conn.create_scalar_function("lq_bad_text", _bad_utf8, 1, deterministic=True)
        self.conn.create_scalar_function("lq_fix_text", _fixed_utf8, 2, deterministic=True)
        self.conn.create_scalar_function("lq_limit_interval", _limit_interval, 2,
                                         deterministic=True)
        # With STAT4 compiled in, SQLite re-plans a statement whenever a bound value might
        # change the plan; the stable plan keeps the claim statement prepared (37% faster).
        self.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
        try:
            self._open_schema()
            sync = str(synchronous).upper()
            if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                raise ConfigurationError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
            self.conn.execute(f"PRAGMA synchronous = {sync}")
            self.synchronous = sync
            self.conn.wal_autocheckpoint(int(autocheckpoint))
            # After a checkpoint resets the WAL, truncate it back to this size.
            self.conn.execute("PRAGMA journal_size_limit = 4194304")
            if on_wal_growth is not None:
                page_size = self._pragma("page_size")
                self._wal_alarm = (_WAL_TRUNCATE_BYTES // page_size, on_wal_growth, [0.0])
                self.conn.set_wal_hook(self._wal_hook)
        except (apsw.NotADBError, apsw.CorruptError) as exc:
            self.conn.close()
            raise CorruptDatabase(f"{path} is corrupt: {exc}") from None
        except apsw.CantOpenError as exc:
            self.conn.close()
            raise self._cant_open(exc) from None
        except apsw.ReadOnlyError:
            self.conn.close()
            raise self._read_only() from None
        except apsw.FullError:
            self.conn.close()
            raise self._disk_full() from None
        except apsw.IOError as exc:
            self.conn.close()
            if self._no_space():     # SQLite could not make its -shm or -wal file
                raise self._disk_full() from None
            raise DatabaseError(f"cannot open {path}: {exc}") from None
        except LitequeueError:
            self.conn.close()
            raise

    def _wal_hook(self, conn, name, pages):
        """After each commit: past the size where the WAL should be emptied, tell the
        supervisor (at most every 20 ms), so a burst of work cannot outrun its checks."""
        limit, alarm, last = self._wal_alarm
        if pages > limit and time.monotonic() - last[0] > 0.02:
            last[0] = time.monotonic()
            alarm()
        return apsw.SQLITE_OK

    def _set_busy_handler(self):
        self.conn.set_busy_handler(self._busy_wait)

    @staticmethod
    def _stepped_wait(steps_max, limit):
        """A busy handler that retries after 0.1 ms, 0.2 ms, ... up to steps_max × 0.1 ms,
        for `limit` seconds. SQLite's own sleeps 1, 2, 5, 10 ms... at first, far longer
        than a claim holds the lock (about 0.1 ms): a worker that lost one race sat out a
        whole burst of work, and a delay() beside busy workers waited up to 0.5 s."""
        since = [0.0]

        def wait(attempts):
            if attempts == 0:
                since[0] = time.monotonic()
            elif time.monotonic() - since[0] > limit:
                return False
            time.sleep(_BUSY_STEP * min(attempts + 1, steps_max))
            return True
        return wait

    def _pragma(self, name):
        return self.conn.execute(f"PRAGMA {name}").fetchall()[0][0]

    def _check_identity(self):
        """(fresh, version) of the file, read in one snapshot; refuses files not ours."""
        app_id, version, objects = self.conn.execute(_SQL_IDENTITY).fetchall()[0]
        fresh = app_id == 0 and version == 0 and objects == 0
        if not fresh and app_id != APPLICATION_ID:
            raise ForeignDatabase(f"{self.path} is a SQLite database that litequeue did not create")
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {version}; this litequeue {__version__} "
                f"knows up to {SCHEMA_VERSION}: upgrade litequeue")
        return fresh, version

    def _open_schema(self):
        fresh, version = self._check_identity()
        if fresh and not self.create:
            raise DatabaseError(f"{self.path} holds no litequeue database yet (a worker or "
                                "a producer creates it); it was left as it is")
        if version < SCHEMA_VERSION and not self.create:
            raise DatabaseError(f"{self.path} was written by an older litequeue; a worker "
                                "or a producer upgrades it (this command changes nothing)")
        if version < SCHEMA_VERSION:
            if fresh:
                # Takes effect only outside a transaction and before the first table.
                self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            with self.write():
                # Again under the lock: another process may have created or migrated it.
                fresh, version = self._check_identity()
                for sql in _MIGRATIONS[version:]:
                    self.conn.execute(sql)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if self._pragma("journal_mode") != "wal":
            self._retry_busy(lambda: self.conn.execute("PRAGMA journal_mode = WAL").fetchall())

    def _retry_busy(self, action):
        """Run an action that SQLite does not retry itself, until busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return action()
            except apsw.BusyError:
                if time.monotonic() > deadline:
                    raise DatabaseBusy(f"{self.path}: still busy after busy_timeout") from None
                time.sleep(0.005)

    @contextlib.contextmanager
    def write(self):
        """A write transaction that takes the lock up front (BEGIN IMMEDIATE).

        Taking it up front means SQLite's busy timeout applies; a read transaction that
        upgrades later fails at once with SQLITE_BUSY instead of waiting.
        """
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            raise DatabaseBusy(f"{self.path}: write lock not obtained within busy_timeout") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, apsw.BusyError):
                raise DatabaseBusy(f"{self.path}: commit not possible within busy_timeout") from None
            if isinstance(exc, apsw.FullError):
                raise self._disk_full() from None
            raise

    def _disk_full(self):
        return DiskFull(f"the disk holding {self.path} is full: nothing was written")

    def _no_space(self):
        """True if the filesystem holding the database has no block left to write."""
        try:
            return os.statvfs(os.path.dirname(os.path.abspath(self.path))).f_bavail == 0
        except OSError:
            return False

    def _read_only(self):
        return ReadOnlyDatabase(
            f"{self.path} is read-only for this process: nothing was written. Queueing, "
            f"revoking and reading results need write access to the file and to its "
            f"directory {os.path.dirname(self.path) or '.'} (SQLite writes its -wal and -shm "
            f"files there): run as the file's owner, or fix the permissions")

    def _cant_open(self, exc):
        """The error for SQLite's "unable to open database file": the companion file that
        is a link (SQLite refuses to follow one, so a planted link cannot redirect the
        writes), else what this process may lack."""
        for suffix, role in self._COMPANIONS:
            companion = self.path + suffix
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.lstat(companion).st_mode):
                    return DatabaseError(
                        f"{companion} is a link where litequeue expects its {role}: SQLite "
                        f"does not follow links there, so nothing can be read or written. "
                        f"Remove the link (and find out who planted it); SQLite creates "
                        f"the file itself")
        return DatabaseError(
            f"cannot open {self.path}: {exc}. Check that this process may read and write "
            f"the file and create files in {os.path.dirname(self.path) or '.'} (SQLite keeps "
            f"its -wal and -shm files there)")

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def _synchronous(self, level):
        self.conn.execute(f"PRAGMA synchronous = {level}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    def _in_batches(self, sql, params, batch, after_batch=None, first_batch=None):
        """Run a statement that changes at most `batch` rows per call (`first_batch` the
        first time), one transaction per batch so no writer waits long, until it changes
        fewer; after_batch() follows each batch that changed rows. Returns the total."""
        total = 0
        batch, next_batch = first_batch or batch, batch
        while True:
            with self.write() as conn:
                conn.execute(sql, dict(params, n=batch))
                changed = conn.changes()
            total += changed
            if changed and after_batch is not None:
                after_batch()
            if changed < batch:
                return total
            batch = next_batch

    def data_version(self):
        """Changes whenever another connection commits; a read that takes no lock."""
        return self.conn.execute(_SQL_DATA_VERSION).fetchall()[0][0]

    def checkpoint(self, truncate=False):
        """A passive checkpoint copies what it can without blocking anyone. Under steady
        load that never lets the WAL start over, so past a size a truncating one waits
        briefly for the writers and readers of the moment, and empties the file."""
        if not truncate:
            self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            return
        # Children retake the write lock within a fraction of a millisecond, so SQLite's
        # own busy handler (1, 2, 5, 10 ms...) lost the race for 100 ms at a time while the
        # WAL grew by 12 MiB. Ask in the shortest steps instead, ahead of the children.
        self.conn.set_busy_handler(self._stepped_wait(1, _TRUNCATE_WAIT_MS / 1000))
        try:
            self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_RESTART)
        except apsw.BusyError:
            pass   # try again at the next check
        finally:
            self._set_busy_handler()

    def truncate_wal_if_large(self):
        """Empty the WAL if it has passed _WAL_TRUNCATE_BYTES (deletes write plenty)."""
        try:
            large = os.stat(self.path + "-wal").st_size > _WAL_TRUNCATE_BYTES
        except FileNotFoundError:
            return
        if large:
            self.checkpoint(truncate=True)

    def wal_bytes(self):
        try:
            return os.stat(self.path + "-wal").st_size
        except FileNotFoundError:
            return 0

    def journal_mode(self):
        return self._pragma("journal_mode")


# ---------------------------------------------------------------------------
# Storage: its statements
# _Storage is the only code that touches apsw: one method per statement, in the mixins
# of those who make them (producers, workers, supervisors, operators).
# ---------------------------------------------------------------------------

class _Producing:
    """Statements of producers: queueing tasks and canvases, the registry, progress."""

    def insert_task(self, row, registry_row=None):
        """Commit one task row (and, the first time, its registry entry)."""
        try:
            if registry_row is None:
                try:
                    self.conn.execute(_SQL_INSERT_TASK, row)
                except apsw.BusyError:
                    raise DatabaseBusy(f"{self.path}: write lock not obtained within busy_timeout") from None
                except apsw.FullError:
                    raise self._disk_full() from None
            else:
                with self.write() as conn:
                    self._register(conn, registry_row)
                    conn.execute(_SQL_INSERT_TASK, row)
        except apsw.ConstraintError:
            raise DuplicateTaskId(f"a task with id {row['id']!r} already exists") from None

    def insert_unique(self, row, registry_row=None):
        """Commit one task row unless a row with its unique_key waits or runs; returns
        the id of the row that holds the key (row's own id if it was written)."""
        try:
            with self.write() as conn:
                if registry_row is not None:
                    self._register(conn, registry_row)
                conn.execute(_SQL_INSERT_UNIQUE, row)
                if conn.changes():
                    return row["id"]
                return conn.execute(_SQL_UNIQUE_HOLDER, row).fetchall()[0][0]
        except apsw.ConstraintError:
            raise DuplicateTaskId(f"a task with id {row['id']!r} already exists") from None

    @staticmethod
    def _register(conn, row):
        """A task name's registry row and its rate limit (row["rate"]: None for none). A
        new limit also applies to the name's rows already queued; a removed one frees
        them."""
        conn.execute(_SQL_UPSERT_REGISTRY, row)
        _Producing._apply_limit(conn, row)

    @staticmethod
    def _apply_limit(conn, row):
        """A name's rate limit (row["rate"], None: none) and, when the row has them, its
        concurrency limits (row["concurrency"], row["per_key"]); its rows join the limited
        lane with its first limit and leave it with its last."""
        was = conn.execute(_SQL_IN_LANE, row).fetchall()[0][0]
        conn.execute(_SQL_DROP_LIMIT if row["rate"] is None else _SQL_UPSERT_LIMIT, row)
        if "concurrency" in row:
            before = conn.execute(_SQL_BOUND_OF, row).fetchall()
            new = (row["concurrency"], row["per_key"])
            bounded = new != (None, None)
            conn.execute(_SQL_UPSERT_BOUND if bounded else _SQL_DROP_BOUND, row)
            if before and tuple(before[0]) != new:
                # Every worker on the file now honours this process's definition.
                logger.warning("the concurrency limit of %s changes from %s to %s for every "
                               "worker on the file: this process's definition of the task "
                               "differs from the one that wrote it", _shown(row["name"]),
                               _limits_text(*before[0]), _limits_text(*new))
        now = conn.execute(_SQL_IN_LANE, row).fetchall()[0][0]
        if now != was:
            conn.execute(_SQL_LIMIT_ROWS if now else _SQL_UNLIMIT_ROWS, row)

    def insert_tasks(self, rows, registry_rows):
        """Commit many task rows in one transaction: all of them, or none."""
        try:
            with self.write() as conn:
                for registry_row in registry_rows:
                    self._register(conn, registry_row)
                conn.executemany(_SQL_INSERT_TASK, rows)
        except apsw.ConstraintError:
            ids = collections.Counter(row["id"] for row in rows)
            repeated = [task_id for task_id, n in ids.items() if n > 1]
            raise DuplicateTaskId(f"task id {repeated[0]!r} is given twice" if repeated else
                                  "a task id of the group already exists") from None

    def insert_canvas(self, rows, registry_rows, chords=(), groups=(), plain=False,
                      replacing=None, joining=None):
        """Commit a canvas (its rows, chords and saved groups) in one transaction: all of
        it, or none. plain: the rows are members of a plain group (no canvas columns but
        the group's). replacing (Task.replace): {"id", "seq", "attempt"} of a running row
        that the canvas's row of that id takes the place of, in its group and chord.
        joining (Task.add_to_chord): {"chord", "row", "seq", "attempt"}: the row becomes a
        new member of the chord that the running row (seq, attempt) is a member of."""
        try:
            with self.write() as conn:
                if replacing is not None:
                    self._take_replaced(conn, rows, replacing)
                if joining is not None:
                    self._join_chord(conn, joining)
                for registry_row in registry_rows:
                    self._register(conn, registry_row)
                conn.executemany(_SQL_INSERT_MEMBER if plain else _SQL_INSERT_CANVAS, rows)
                if chords:
                    conn.executemany(_SQL_INSERT_CHORD, chords)
                if groups:
                    conn.executemany(_SQL_INSERT_GROUP, groups)
        except apsw.ConstraintError:
            ids = collections.Counter(row["id"] for row in rows)
            repeated = [task_id for task_id, n in ids.items() if n > 1]
            raise DuplicateTaskId(f"task id {repeated[0]!r} is given twice" if repeated else
                                  "a task id of the canvas already exists") from None

    @staticmethod
    def _take_replaced(conn, rows, replacing):
        taken = conn.execute(_SQL_TAKE_REPLACED, {"seq": replacing["seq"],
                                                  "attempt": replacing["attempt"]}).fetchall()
        if not taken:
            raise LitequeueError("the task's row was revoked or taken over while it ran: "
                                 "it was not replaced")
        heir = next(row for row in rows if row["id"] == replacing["id"])
        heir["group_id"], heir["group_index"], heir["followers"] = taken[0]

    @staticmethod
    def _join_chord(conn, joining):
        grown = conn.execute(_SQL_CHORD_GROW, {"id": joining["chord"], "seq": joining["seq"],
                                               "attempt": joining["attempt"]}).fetchall()
        if not grown:
            raise ValueError("Current task is not member of any chord (or it has ended)")
        if type(grown[0][0]) is not int or grown[0][0] < 2:
            raise ValueError(f"chord {joining['chord']!r} has a size in the database that "
                             f"is not a count ({_saferepr(grown[0][0], 40)}): not added")
        joining["row"].update(group_id=joining["chord"], group_index=grown[0][0] - 1,
                              followers=1)

    def upsert_registry(self, rows, queue_limits=None):
        """Register task names with their limits, and (a starting worker) set or drop the
        concurrency limit of each queue it serves ({queue: max or None})."""
        with self.write() as conn:
            for row in rows:
                self._register(conn, row)
            for queue, limit in (queue_limits or {}).items():
                conn.execute(_SQL_DROP_QUEUE_LIMIT if limit is None else
                             _SQL_UPSERT_QUEUE_LIMIT, {"queue": queue, "max": limit})

    def queue_limits(self):
        """{queue: at most this many STARTED rows at once}."""
        return dict(self.conn.execute(_SQL_QUEUE_LIMITS).fetchall())

    def concurrency_limits(self):
        """[(task name, max, per_key)]."""
        return self.conn.execute(_SQL_BOUNDS).fetchall()

    def running_of(self, name):
        """How many rows of a limited task name are STARTED."""
        return self.conn.execute(_SQL_HOLDING, {"key": name}).fetchall()[0][0]

    def running_of_key(self, name, conc_key):
        """How many rows of a limited task name with this concurrency key are STARTED."""
        return self.conn.execute(_SQL_HOLDING_KEY, {"key": name, "conc_key": conc_key}
                                 ).fetchall()[0][0]

    def running_in(self, queue):
        return self.conn.execute(_SQL_RUNNING_IN, {"queue": queue}).fetchall()[0][0]

    def registry(self):
        return dict(self.conn.execute(_SQL_REGISTRY).fetchall())

    def unregister(self, names):
        """Forget task names in the registry, in one transaction."""
        with self.write() as conn:
            conn.executemany(_SQL_UNREGISTER_TASK, [{"name": name} for name in names])

    def registry_mark(self):
        """Changes whenever a new task name is registered: one read of the rowid index."""
        return self.conn.execute(_SQL_REGISTRY_MARK).fetchall()[0][0]

    def module_of(self, task_name):
        """The module a producer registered for a task name, or None."""
        rows = self.conn.execute(_SQL_MODULE_OF, (task_name,)).fetchall()
        return rows[0][0] if rows else None

    def save_empty_group(self, group_id):
        """Keep an empty group's id for GroupResult.restore(), as long as results are kept."""
        with self.write() as conn:
            conn.execute(_SQL_SAVE_EMPTY_GROUP, (group_id, _pack([]), time.time()))

    def set_meta(self, meta, task_id=None, seq=None, attempt=None):
        """Store update_state()'s [state, meta]: the running task's own row (fenced by its
        claim), or any unfinished task by id. True if a row took it."""
        with self.write() as conn:
            if seq is not None:
                conn.execute(_SQL_SET_OWN_META, {"meta": meta, "seq": seq, "attempt": attempt})
            else:
                conn.execute(_SQL_SET_META, {"meta": meta, "id": task_id})
            return conn.changes() > 0


class _Claiming:
    """Statements of worker children: claiming and completing rows, and what a
    row's end sets off (followers, chords) in the same transaction."""

    claim_share = 1                  # the processes of the worker that claim from this file
    _limits_seen_at = -math.inf
    _has_limits = False
    _bounded = (frozenset(), frozenset())      # names and queues with concurrency limits

    def ready_rows(self, queue, now, cap):
        """How many rows queue has to claim (ready, or due: see _DUE_ROWS), counting no
        further than cap of each (none while the queue's concurrency limit is reached)."""
        sql = _SQL_READY_ROWS_LIMITED if self.has_limits() else _SQL_READY_ROWS
        found = self.conn.execute(sql, {"queue": queue, "now": now, "cap": cap})
        return sum(n for (n,) in found)

    def next_start(self, queue):
        """When the first row of queue's limited lane may start (None: there is none, or
        none before a running row of its name frees a slot, which rings)."""
        now = time.time()
        if self._lane_picks(self.conn, queue, now, 1):
            return now
        return self.conn.execute(_SQL_NEXT_START, {"queue": queue}).fetchall()[0][0]

    def has_limits(self):
        """Whether the file has rate or concurrency limits, looked at once a second: a
        limit new to this process is honoured within that second (its rows wait
        meanwhile)."""
        if self._limits_seen_at + _LIMITS_LOOK_EVERY < time.monotonic():
            self._limits_seen_at = time.monotonic()
            rates, bounds, queues = self.conn.execute(_SQL_HAS_LIMITS).fetchall()[0]
            self._has_limits = bool(rates or bounds or queues)
            self._bounded = (
                frozenset(k for (k,) in self.conn.execute(_SQL_BOUNDED_NAMES)) if bounds
                else frozenset(),
                frozenset(q for (q,) in self.conn.execute(_SQL_BOUNDED_QUEUES)) if queues
                else frozenset())
        return self._has_limits

    def holds_slot(self, name, queue):
        """Whether a row of this name in this queue holds a concurrency slot: its end
        frees one, which the idle processes of the file are rung for."""
        return self.has_limits() and (name in self._bounded[0] or queue in self._bounded[1])

    def registered(self, worker_id):
        return bool(self.conn.execute(_SQL_IS_REGISTERED, (worker_id,)).fetchall())

    def complete_and_claim(self, outcomes, worker, pid, now, queue, n, release=(), stats=()):
        """Record finished tasks, hand back unstarted claimed rows (by seq) and claim up
        to n more, in one transaction.

        Returns a _Committed: the claimed rows, the completions rejected because their
        fencing token is stale, and what the ends set in motion, to ring.
        """
        if not outcomes and self.synchronous != "NORMAL":
            # A claim lost to a power cut only puts the row back to PENDING, which
            # at-least-once allows, and the next FULL commit syncs these frames too.
            with self._synchronous("NORMAL"):
                return self._complete_and_claim(outcomes, worker, pid, now, queue, n, release,
                                                stats)
        return self._complete_and_claim(outcomes, worker, pid, now, queue, n, release, stats)

    def _complete_and_claim(self, outcomes, worker, pid, now, queue, n, release, stats=()):
        rejected = 0
        follow = None
        with self.write() as conn:
            # The time once the lock is held: a start never reads earlier than the end
            # whose commit freed its process or its concurrency slot.
            now = max(now, time.time())
            if stats:
                self._add_stats(conn, stats)
            for o in outcomes:
                if o.state is _REPLACED:     # its row was replaced while it ran
                    continue
                if o.state is _SUSPENDED:
                    recorded, queued = self._suspend(conn, o, worker, now)
                    rejected += not recorded
                    if queued:
                        follow = follow or _FollowUps()
                        follow.woken += 1
                        follow.seqs.append(o.seq)
                    continue
                conn.execute(_SQL_COMPLETE, o.complete_params(worker, now))
                if conn.changes() == 0:
                    rejected += 1
                elif o.followers:
                    ended = o.ended()
                    if ended is not None:
                        follow = follow or _FollowUps()
                        self._settle(conn, [ended], now, follow)
                    elif o.state in (IGNORED, REJECTED) and isinstance(o.id, str):
                        # Nothing follows it, but a workflow waiting for it as a step
                        # goes on (_step_outcome).
                        follow = follow or _FollowUps()
                        self._end_steps(conn, o.id, o.state, o.result, None, now, follow)
            for seq in release:
                conn.execute(_SQL_RELEASE, {"seq": seq, "worker": worker})
            rows = self._claim(conn, worker, pid, now, queue, n) if n else []
            if len(rows) > 1 and any(r.priority != rows[0].priority for r in rows):
                rows.sort(key=_claim_order)
        if follow is not None and rows:
            follow.claimed(rows)
        return _Committed(rows, rejected, follow)

    def _claim(self, conn, worker, pid, now, queue, n):
        """Claim up to n ready rows of queue, in priority order across the ordinary rows
        and the limited lane's rows that may start now (their starts and slots are taken
        in this transaction), then rows whose eta has come."""
        rows, total, lane = [], n, False
        if self.has_limits():
            room = conn.execute(_SQL_QUEUE_ROOM, {"queue": queue}).fetchall()
            if room and room[0][0] < n:
                n = total = max(0, room[0][0])
                if n == 0:
                    return rows
            picks = self._lane_picks(conn, queue, now, n)
            if picks:
                lane = True
                first = conn.execute(_SQL_READY_FIRST, {"queue": queue, "n": n}).fetchall()
                merged = sorted([(p, s, None) for p, s in first] + list(picks.values()),
                                key=_pick_order)[:n]
                picks = {s: key for _, s, key in merged if key is not None}
                n = len(merged) - len(picks)        # the ordinary rows that made the cut
                rows = [_Claimed(*row) for row in conn.execute(_SQL_CLAIM_PICKED, {
                    "worker": worker, "pid": pid, "now": now, "queue": queue,
                    "seqs": json.dumps(list(picks))})]
                for row in rows:
                    conn.execute(_SQL_TAKE_STARTS, {"now": now, "key": picks[row.seq]})
                n += len(rows)
        share = self.claim_share
        if len(rows) < n:
            if share > 1:
                found = conn.execute(_SQL_CLAIM_SHARE,
                                     (worker, pid, now, queue, n - len(rows), share))
            else:
                found = conn.execute(_SQL_CLAIM, (worker, pid, now, queue, n - len(rows)))
            rows += [_Claimed(*row) for row in found]
        if len(rows) < total:     # then rows whose eta has come
            rows += [_Claimed(*row) for row in conn.execute(
                _SQL_CLAIM_DUE, (worker, pid, now, queue, total - len(rows), share))]
        if lane:            # the lane's rows were claimed first: run them all in order
            rows.sort(key=_claim_order)
        return rows

    @staticmethod
    def _lane_picks(conn, queue, now, n):
        """{seq: (priority, seq, name)} of at most n rows of queue's limited lane that may
        start now (_SQL_LANE_NAMES): one of a rate-limited name, as many as a name's free
        slots and its keys' free slots allow of another, in claim order."""
        picks = []
        for key, rated, room, per_key in conn.execute(_SQL_LANE_NAMES,
                                                      {"now": now, "queue": queue}):
            room = 1 if rated else n if not isinstance(room, int) else min(n, room)
            if isinstance(per_key, int) and per_key >= 1:
                found = _Claiming._keyed_picks(conn, key, queue, per_key, room)
            else:
                found = conn.execute(_SQL_LANE_FIRST, {"key": key, "queue": queue, "n": room})
            picks += [(p, s, key) for p, s, _ in found]
        picks.sort(key=_pick_order)
        return {pick[1]: pick for pick in picks[:n]}

    @staticmethod
    def _keyed_picks(conn, key, queue, per_key, room):
        """Up to room rows of a name with a per-key limit, whose keys have free slots: from
        its first _LANE_LOOK rows, else (one key's backlog fills them) from the first row
        of each key."""
        held = dict(conn.execute(_SQL_HOLDING_BY_KEY, {"key": key}).fetchall())
        first = conn.execute(_SQL_LANE_FIRST, {"key": key, "queue": queue,
                                               "n": _LANE_LOOK}).fetchall()
        picks = []
        for row in first:
            if held.get(row[2], 0) < per_key:
                held[row[2]] = held.get(row[2], 0) + 1
                picks.append(row)
                if len(picks) >= room:
                    break
        if picks or len(first) < _LANE_LOOK:
            return picks
        return conn.execute(_SQL_LANE_FREE_HEADS, {"key": key, "queue": queue,
                                                   "per_key": per_key, "n": room}).fetchall()

    def add_stats(self, rows):
        """Add a worker's per-minute counters (see _Stats) in their own transaction."""
        with self.write() as conn:
            self._add_stats(conn, rows)

    @staticmethod
    def _add_stats(conn, rows):
        conn.executemany(_SQL_ADD_STATS, rows)
        totals = getattr(rows, "totals", None)
        if totals is not None and totals[2] is not None:
            conn.execute(_SQL_WORKER_TOTALS, totals)

    def _settle(self, conn, ended, now, follow):
        """Inside the caller's transaction: set in motion what the end of each row in
        `ended` [(id, state, result, traceback)] starts. A success queues its links with
        its result as their input; any other end gives its chain's rest the same end
        (and so on down the chain), and a failure queues its errbacks: those of the row
        that failed, never those of the rows it took down, which never ran (Celery sends
        them nothing). A chord member is counted once, in its own slot; the last one
        queues the body with every result in header order, and the first that did not
        succeed fails the body with ChordError. A worklist, not recursion: a chain of any
        length costs no stack. Each item says whether its errbacks run (fires: it ran, or
        it fails as what ran), whether a chord it is in fails with the body's errbacks
        running (origin: false only for the tasks of a group body that fail as the body,
        whose errbacks ran already), and whether it is our stand-in for a chord's group
        body, whose tasks then fail as the body, their errbacks running as Celery's do."""
        work = [(*end, True, True, False) for end in ended]
        while work:
            task_id, state, result, tb, fires, origin, stand_in = work.pop()
            params = {"parent": task_id, "now": now}
            if state == SUCCESS:
                conn.execute(_SQL_ACTIVATE_LINKS, dict(params, result=result))
                follow.woken += conn.changes()
                self._drop_errbacks(conn, task_id)
            else:
                for child, name in conn.execute(_SQL_CASCADE, dict(
                        params, state=state, result=result, traceback=tb)).fetchall():
                    follow.ended.append(child)
                    # A built-in step reached down a chain is Task.replace()'s heir: the
                    # replacement failed, so the replaced task's own errbacks run, as
                    # Celery moves them onto the replacement.
                    heir = name == _GATHER
                    work.append((child, state, result, tb, (stand_in and fires) or heir,
                                 heir or not stand_in, False))
                if state == FAILURE and fires:
                    conn.execute(_SQL_ACTIVATE_ERRBACKS, params)
                    follow.woken += conn.changes()
                else:
                    self._drop_errbacks(conn, task_id)
            self._end_steps(conn, task_id, state, result, tb, now, follow)
            member = conn.execute(_SQL_MEMBER_OF, (task_id,)).fetchall()
            if member and member[0][0] is not None and member[0][1] is not None:
                self._chord_part_safely(conn, member[0], task_id, state, result, now, follow,
                                        work, (origin, fires))

    @staticmethod
    def _drop_errbacks(conn, task_id):
        """Delete a task's errbacks and every row that waits on them (an errback that is
        a chain), down to the last."""
        gone = [i for (i,) in conn.execute(_SQL_DROP_ERRBACKS, {"parent": task_id})]
        while gone:
            parent = gone.pop()
            gone += [i for (i,) in conn.execute(_SQL_DROP_WAITING_CHILDREN,
                                                {"parent": parent})]

    def _chord_part_safely(self, conn, member, task_id, state, result, now, follow, work,
                           fires=(True, True)):
        """_chord_part under a savepoint. Whatever else it raises (a foreign write it did
        not foresee), its changes are undone and the chord is set aside with the reason,
        so the member's own end is still recorded, and no process dies of it. A database
        error goes up as before (the caller retries or stores outcomes one by one)."""
        woken, ended, queued = follow.woken, len(follow.ended), len(work)
        conn.execute(_SQL_CHORD_SAVEPOINT)
        try:
            self._chord_part(conn, member, task_id, state, result, now, follow, work, fires)
        except apsw.Error:
            raise
        except Exception as exc:
            conn.execute(_SQL_CHORD_UNDO)
            follow.woken = woken
            del follow.ended[ended:], work[queued:]
            chord_id = member[0]
            rows = conn.execute(_SQL_CHORD, (chord_id,)).fetchall()
            self._set_chord_aside(conn, chord_id, rows[0][0] if rows else None,
                                  f"chord row {chord_id}: {type(exc).__name__}: {exc}",
                                  now, follow, work)
        conn.execute(_SQL_CHORD_RELEASE)

    def _chord_part(self, conn, member, task_id, state, result, now, follow, work,
                    fires=(True, True)):
        """Count one chord member's end (see _settle). A chord row or slot that is not
        what litequeue writes sets the chord aside instead (_set_chord_aside). fires:
        (do the body's errbacks run, do a group body's tasks run theirs: only when the
        member that failed ran)."""
        chord_id, index = member
        chord = conn.execute(_SQL_CHORD, (chord_id,)).fetchall()
        if not chord:
            return                     # a plain group
        body, size, done, fired = chord[0]
        if type(fired) is int and fired == 1:
            return                     # a chord already decided
        bad = _bad_chord_row(chord_id, body, size, done, fired)
        if bad is not None:
            self._set_chord_aside(conn, chord_id, body, bad, now, follow, work)
            return
        conn.execute(_SQL_CHORD_SLOT, {"chord": chord_id, "idx": index,
                                       "result": result if state == SUCCESS else None})
        if not conn.changes():
            return                     # this member was counted before
        if state == SUCCESS:
            (done,), = conn.execute(_SQL_CHORD_COUNT, (chord_id,)).fetchall()
            if done < size:
                return
            slots = conn.execute(_SQL_CHORD_RESULTS, (chord_id,)).fetchall()
            bad = next(filter(None, (_bad_chord_slot(chord_id, i, r) for i, r in slots)), None)
            if bad is not None:
                self._set_chord_aside(conn, chord_id, body, bad, now, follow, work)
                return
            conn.execute(_SQL_ACTIVATE_BODY, {"id": body, "now": now,
                                              "input": _msgpack_array([r for _, r in slots])})
            follow.woken += conn.changes()
            conn.execute(_SQL_CHORD_FIRED, (chord_id,))
            conn.execute(_SQL_CHORD_CLEAR, (chord_id,))
        else:
            self._fail_chord(conn, chord_id, body, _dependency_error(task_id, state, result),
                             now, follow, work, fires)

    def _set_chord_aside(self, conn, chord_id, body, reason, now, follow, work):
        """A chord whose row litequeue cannot trust: its body (and the chain after it)
        ends FAILURE with the reason, and the chord counts as fired, so no later member
        reads the row again. The member being settled keeps its own outcome."""
        logger.error("%s; its body fails and the chord is set aside", reason)
        self._fail_chord(conn, chord_id, body, ValueError(reason), now, follow, work)

    @staticmethod
    def _fail_chord(conn, chord_id, body, exc, now, follow, work, fires=(True, True)):
        """The chord's body (if it names one) ends FAILURE with exc; the chord is fired."""
        if isinstance(body, str):
            error = _encode_error(exc)
            failed = conn.execute(_SQL_FAIL_BODY, {"id": body, "result": error, "now": now})
            for (name,) in failed.fetchall():
                follow.ended.append(body)
                gather = name == _GATHER   # no errbacks of its own: "fires" is its tasks'
                work.append((body, FAILURE, error, None, fires[1] if gather else fires[0],
                             fires[0], gather))
        conn.execute(_SQL_CHORD_FIRED, (chord_id,))
        conn.execute(_SQL_CHORD_CLEAR, (chord_id,))

    def states_of(self, seqs, locked=False):
        """{seq: state}; locked=True reads under the write lock, after any revoke that
        holds it has committed."""
        with self.write() if locked else contextlib.nullcontext(self.conn) as conn:
            return dict(conn.execute(_SQL_STATE_OF_SEQS, (json.dumps(list(seqs)),)).fetchall())


class _Supervising:
    """Statements of supervisors: the workers table, rescue, quarantine and text
    repair, the scheduler (due rows, periodic fires), pruning."""

    def register_worker(self, row):
        with self.write() as conn:
            conn.execute(_SQL_REGISTER_WORKER, {"pool": None, **row})

    def unregister_worker(self, worker_id):
        with self.write() as conn:
            conn.execute(_SQL_RETIRE_TOTALS, {"id": worker_id})
            conn.execute(_SQL_UNREGISTER_WORKER, (worker_id,))

    def workers(self):
        cols = ("id", "parent", "hostname", "pid", "queues", "concurrency", "started_at",
                "processed", "failed", "pool", "wanted", "stop_asked")
        return [dict(zip(cols, row)) for row in self.conn.execute(_SQL_WORKERS)]

    def worker_asked(self, worker_id):
        """(wanted, stop_asked) of a supervisor's row, as stored (any type); None if the
        row is gone."""
        row = self.conn.execute(_SQL_WORKER_ASKED, {"id": worker_id}).fetchone()
        return None if row is None else tuple(row)

    def worker_resized(self, worker_id, concurrency):
        with self.write() as conn:
            conn.execute(_SQL_WORKER_RESIZED, {"id": worker_id, "concurrency": concurrency})

    def running(self):
        return self.conn.execute(_SQL_RUNNING_BY_WORKER).fetchall()

    def police_states(self, seqs):
        """({seq: state}, {seqs revoked with terminate}) in one read. A plain revoke takes
        only rows a worker has not begun, and the worker skips those itself."""
        states, terminated = {}, set()
        for seq, state, killed in self.conn.execute(_SQL_POLICE_STATES, {
                "seqs": json.dumps(list(seqs)), "why": _TERMINATE_NOTE}):
            states[seq] = state
            if killed:
                terminated.add(seq)
        return states, terminated

    def claiming_workers(self):
        """Ids of every process that holds STARTED rows (None for rows naming none)."""
        return [worker for (worker,) in self.conn.execute(_SQL_CLAIMING_WORKERS).fetchall()]

    def rescue(self, worker, crashed, settle, now):
        """Take back a dead worker's rows and unregister it.

        Rows it had only prefetched go back to PENDING uncharged, and so do rows it was
        running that are not in crashed (a set of seqs, or None). Each row in crashed (a
        _Claimed) ends as settle(row) says: an _Outcome whose state is PENDING, RETRY or
        FAILURE. Returns a _Rescued: the requeued and failed counts, and what to ring.
        """
        crashed = crashed or ()
        requeued = failed = 0
        follow = None
        with self.write() as conn:
            for values in conn.execute(_SQL_RUNNING_OF_WORKER, (worker,)).fetchall():
                row = _Claimed(*values)
                if row.seq not in crashed:
                    conn.execute(_SQL_RELEASE, {"seq": row.seq, "worker": worker})
                    requeued += 1
                    continue
                o = settle(row)
                conn.execute(_SQL_SETTLE_LOST, o.params(worker, now))
                if o.state == FAILURE:
                    failed += 1
                    follow = follow or _FollowUps()
                    self._settle(conn, [(row.id, FAILURE, o.result, o.traceback)], now,
                                 follow)
                else:
                    requeued += 1
            conn.execute(_SQL_RETIRE_TOTALS, {"id": worker})
            conn.execute(_SQL_UNREGISTER_WORKER, (worker,))
        return _Rescued(requeued, failed, follow)

    def release_unowned(self):
        """Requeue STARTED rows that name no worker; returns how many."""
        with self.write() as conn:
            conn.execute(_SQL_RELEASE_UNOWNED)
            return conn.changes()

    def needs_quarantine(self, now):
        """True if quarantine() has anything to do: one read through the indexes."""
        return any(self.conn.execute(_SQL_NEEDS_QUARANTINE, {"now": now}).fetchall()[0])

    def quarantine(self, now):
        """End rows and disable schedules the scheduler cannot read, and repair rate
        limits and pauses no claim can use, so none of them can stop a worker or a task
        name. Returns a _Quarantined."""
        error = _encode_error(ValueError("invalid task row: its eta is not a unix time, so "
                                         "it could never become due"))
        follow = _FollowUps()
        with self.write() as conn:
            failed = conn.execute(_SQL_QUARANTINE_ETA, {"result": error, "now": now}).fetchall()
            self._settle(conn, [(task_id, FAILURE, error, None) for task_id, _ in failed
                                if isinstance(task_id, str)], now, follow)
            disabled = [name for (name,) in conn.execute(_SQL_DISABLE_BAD_TIMES).fetchall()]
            repaired = self._repair_limits(conn, now)
        return _Quarantined(failed, disabled, repaired, follow)

    @staticmethod
    def _repair_limits(conn, now):
        """Only called inside a write: the repairs of _BAD_LIMIT and its neighbours, as
        log lines (the rows are few: one per limited name, paused queue, orphan key)."""
        done = []
        for (key,) in conn.execute(_SQL_DROP_BAD_LIMITS).fetchall():
            done.append(f"rate limit of {_shown(key)} dropped: neither its rate nor its "
                        "interval is one; its tasks run unlimited until a worker or "
                        "producer registers the name again")
        for (key,) in conn.execute(_SQL_REPAIR_LIMITS, {"now": now}).fetchall():
            done.append(f"rate limit of {_shown(key)} repaired (interval from its rate; "
                        "a next start that is not a usable time: none given yet)")
        for (key,) in conn.execute(_SQL_DROP_BAD_BOUNDS).fetchall():
            done.append(f"concurrency limit of {_shown(key)} dropped: it is not a whole "
                        "number >= 1; its tasks run unlimited until a worker or producer "
                        "registers the name again")
        for (queue,) in conn.execute(_SQL_DROP_BAD_QUEUE_LIMITS).fetchall():
            done.append(f"concurrency limit of queue {_shown(queue)} dropped: it is not a "
                        "whole number >= 1; the queue runs unlimited until a worker that "
                        "serves it starts with its queue_concurrency setting")
        for (key,) in conn.execute(_SQL_ORPHAN_KEYS).fetchall():
            conn.execute(_SQL_UNLIMIT_ROWS, {"name": key})
            done.append(f"{conn.changes()} waiting task(s) with rate_key {_shown(key)}, "
                        "which names no rate or concurrency limit, run unlimited")
        for (queue,) in conn.execute(_SQL_DROP_BAD_PAUSES).fetchall():
            done.append(f"pause of queue {_shown(queue)} dropped: that is no queue name")
        for (queue,) in conn.execute(_SQL_REPAIR_PAUSES, {"now": now}).fetchall():
            done.append(f"queue {_shown(queue)} stays paused; its pause time was not a "
                        "time and is now")
        return done

    def repair_text(self, now):
        """Find every value that is text but not UTF-8, in every table and column (read
        from the schema), and make it readable: each bad byte becomes a \\xNN escape. An
        unfinished task holding one ends FAILURE saying which column (its followers as
        for any failure), a schedule is disabled, a chord's body fails. Finding them reads
        every row, without the write lock; the repair is one short transaction. Returns
        the number of values repaired; BadText if this process may not write."""
        bad = []                                          # (table, key column, key, column)
        for table, no_rowid in self.conn.execute(_SQL_TABLES).fetchall():
            if not re.fullmatch(r"[a-z_]+", table):
                continue          # not a table of litequeue's: nothing here reads it
            columns = [row[1] for row in self.conn.execute(f'PRAGMA table_info("{table}")')
                       if re.fullmatch(r"[a-z_0-9]+", row[1])]
            key = None if no_rowid else "rowid"
            masks = {}
            for start in range(0, len(columns), _MASK_BITS):      # 62 columns a pass
                part = columns[start:start + _MASK_BITS]
                for rowid, mask in self.conn.execute(_SQL_BAD_TEXT.format(
                        key=key or "NULL", table=table, bad=_bad_text_mask(part))):
                    for i, column in enumerate(part):
                        if mask >> i & 1:
                            masks.setdefault((rowid, column), True)
            for rowid, column in masks:
                bad.append((table, key, rowid, column))
        if not bad:
            return 0
        follow = _FollowUps()
        try:
            with self.write() as conn:
                for table, key, rowid, column in bad:      # every value readable first
                    self._fix_text(conn, table, key, rowid, column)
                for table, key, rowid, column in bad:      # then what follows from each
                    self._after_bad_text(conn, table, rowid, column, now, follow)
        except apsw.ReadOnlyError:
            raise BadText(f"{self.path}: {len(bad)} value(s) hold text that is not UTF-8, "
                          "and this process may not repair them: run any litequeue "
                          "command as the file's owner") from None
        # Nothing rings for what the repair ended or queued: it runs inside another call
        # (see _guarded), and workers and waiters see the rows at their next look.
        logger.error("%s: repaired %d text value(s) that were not UTF-8 (written by another "
                     "client): %s", self.path, len(bad), ", ".join(sorted(
                         {f"{table}.{column}" for table, _, _, column in bad})))
        return len(bad)

    def _after_bad_text(self, conn, table, rowid, column, now, follow):
        """What the owner of a repaired value must know of it: an unfinished task ends
        FAILURE, a schedule is disabled, a chord's body fails; other rows keep going."""
        reason = (f"its {column} column held text that is not UTF-8 (another client wrote "
                  "it); the text was repaired with \\x escapes")
        if table == "tasks":
            error = _encode_error(ValueError(f"invalid task row: {reason}"))
            failed = conn.execute(_SQL_FAIL_BAD_TEXT, {"seq": rowid, "result": error,
                                                       "now": now}).fetchall()
            self._settle(conn, [(task_id, FAILURE, error, None) for (task_id,) in failed
                                if isinstance(task_id, str)], now, follow)
        elif table == "schedules":
            conn.execute(_SQL_DISABLE_BAD_TEXT, {"key": rowid, "error": reason})
        elif table == "chords":
            chord = conn.execute(_SQL_CHORD_BY_ROWID, {"key": rowid}).fetchall()
            if chord and isinstance(chord[0][0], str):
                self._set_chord_aside(conn, chord[0][0], chord[0][1],
                                      f"chord row {chord[0][0]}: {reason}", now, follow, [])

    @staticmethod
    def _fix_text(conn, table, key, rowid, column):
        # A table without rowid (counters, paused queues, rate limits) is keyed by its
        # text: such a row names nothing anyone can ask for, so it goes.
        if key is None:
            conn.execute(f'DELETE FROM "{table}" WHERE typeof("{column}") = \'text\' '
                         f'AND lq_bad_text(CAST("{column}" AS BLOB))')
            return
        sql = _SQL_FIX_TEXT.format(table=table, column=column, key=key)
        try:
            conn.execute(sql, {"key": rowid, "suffix": None})
        except apsw.ConstraintError:       # the escaped text is another row's key
            conn.execute(sql, {"key": rowid, "suffix": f"#{secrets.token_hex(4)}"})

    def promote_due(self, now, after_batch=None):
        """Move ETA rows that are due to PENDING, one hop; returns how many. A small
        first transaction lets the workers start on a burst while the rest moves."""
        return self._in_batches(_SQL_PROMOTE_DUE, {"now": now}, _PROMOTE_BATCH, after_batch,
                                first_batch=_PROMOTE_FIRST_BATCH)

    def next_due_and_fire(self):
        """Unix times of the earliest due ETA row and periodic fire (each may be None)."""
        return (self.conn.execute(_SQL_NEXT_DUE).fetchall()[0][0],
                self.conn.execute(_SQL_NEXT_FIRE).fetchall()[0][0])

    def next_due_after(self, now):
        """The earliest eta after now of a row waiting for its time (any queue), or None."""
        return self.conn.execute(_SQL_NEXT_DUE_AFTER, (now,)).fetchall()[0][0]

    def next_wakeup(self, now=None):
        """Unix time of the earliest due ETA row or periodic fire, or None. Given now, a
        row already due counts at its due time plus _DUE_CLAIM_GRACE (it is left to the
        children until then)."""
        due, fire = self.next_due_and_fire()
        if now is not None and _is_time(due) and due <= now:
            later = self.next_due_after(now)
            due = min(t for t in (due + _DUE_CLAIM_GRACE, later) if _is_time(t))
        times = [t for t in (due, fire) if _is_time(t)]
        return min(times) if times else None

    def fire_due_schedules(self, now, plan):
        """Queue every due periodic fire in one transaction; returns how many were queued.

        plan(row, now) returns ([(task_id, fire_time)], last_fire, next_fire). The write
        lock serializes supervisors, last_fire only moves forward, and a fire's task id is
        unique, so each (schedule, fire time) is queued at most once.
        """
        queued = 0
        cols = ("name", "task", "schedule", "tz", "payload", "queue", "priority", "catch_up",
                "last_fire")
        with self.write() as conn:
            for values in conn.execute(_SQL_DUE_SCHEDULES, (now,)).fetchall():
                row = dict(zip(cols, values))
                try:
                    fires, last_fire, next_fire = plan(row, now)
                except Exception as exc:      # a row no planner can read: set it aside
                    message = f"cannot plan its fires: {type(exc).__name__}: {exc}"
                    logger.error("periodic task %s disabled: %s", row["name"], message)
                    conn.execute(_SQL_DISABLE_SCHEDULE, {"name": row["name"], "error": message})
                    continue
                fired = 0
                for task_id, _ in fires:
                    conn.execute(_SQL_INSERT_FIRE, {
                        "id": task_id, "name": row["task"], "queue": row["queue"],
                        "priority": row["priority"], "payload": row["payload"], "now": now})
                    fired += conn.changes()
                conn.execute(_SQL_SET_FIRED, {"last_fire": last_fire, "next_fire": next_fire,
                                              "fired": fired, "name": row["name"]})
                queued += fired
        return queued

    def sync_schedules(self, definitions, owned_modules, now, plan):
        """Make the schedules table match the definitions of the modules a worker runs.

        plan(definition, stored (schedule, tz, last_fire) or None, now) returns
        (last_fire, next_fire). Rows of other modules are left to their own workers.
        """
        names = {d["name"] for d in definitions}
        with self.write() as conn:
            for module in owned_modules:
                for (name,) in conn.execute(_SQL_SCHEDULES_OF_MODULE, (module,)).fetchall():
                    if name not in names:
                        conn.execute(_SQL_DELETE_SCHEDULE, (name,))
            for definition in definitions:
                stored = conn.execute(_SQL_GET_SCHEDULE, (definition["name"],)).fetchall()
                try:
                    last_fire, next_fire = plan(definition, stored[0] if stored else None, now)
                except Exception:       # a stored row no planner can read: start afresh
                    last_fire, next_fire = plan(definition, None, now)
                conn.execute(_SQL_UPSERT_SCHEDULE, dict(definition, last_fire=last_fire,
                                                        next_fire=next_fire, now=now))

    def prune(self, cutoff):
        """Delete rows finished before cutoff, a batch per transaction so claims are never
        held up for long, then hand the freed pages back to the filesystem."""
        deleted = self._in_batches(_SQL_PRUNE, {"cutoff": cutoff}, _PRUNE_BATCH,
                                   after_batch=self.truncate_wal_if_large)
        with self.write() as conn:
            conn.execute(_SQL_PRUNE_STATS, {"minute": int((time.time() - _STATS_KEEP) // 60)})
        if deleted:
            with self.write() as conn:
                conn.execute(_SQL_PRUNE_CHORDS)
                conn.execute(_SQL_PRUNE_GROUPS, {"cutoff": cutoff})
                for statement in _SQL_PRUNE_WORKFLOWS:
                    conn.execute(statement)
            self._vacuum()
        return deleted

    def _vacuum(self):
        """Shrink the file by the free pages, a step per transaction, emptying the WAL
        between steps so it stays small."""
        free = self._pragma("freelist_count")
        while free:
            self.conn.execute(_SQL_VACUUM_STEP).fetchall()
            self.truncate_wal_if_large()
            free, before = self._pragma("freelist_count"), free
            if free >= before:
                return     # auto_vacuum is off in this file: nothing to hand back


class _Administering:
    """Statements of the admin surface and of results: reading tasks, counts
    and stats, and what an operator changes (pause, rate limits, schedules, revoke,
    requeue, purge, requests to workers)."""

    _TASK_COLUMNS = _TASK_COLUMNS

    def get_task(self, task_id):
        rows = self.conn.execute(_SQL_GET_TASK, (task_id,)).fetchall()
        return dict(zip(self._TASK_COLUMNS, rows[0])) if rows else None

    def list_tasks(self, state, queue, name, limit):
        rows = self.conn.execute(_SQL_LIST_TASKS, {"state": state, "queue": queue,
                                                   "name": name, "n": int(limit)})
        return [dict(zip(self._TASK_COLUMNS, row)) for row in rows]

    def task_page(self, before, state, queue, name, text, limit, window=10000):
        """Tasks newest first below seq `before`: [(seq, row dict)]. A text search looks at
        the newest `window` rows only (a range on the primary key), so it never reads the
        whole table."""
        after = 0
        if text is not None:
            top = self.conn.execute(_SQL_MAX_SEQ).fetchall()[0][0] or 0
            after = top - window
        rows = self.conn.execute(_SQL_TASK_PAGE, {
            "before": before, "after": after, "state": state, "queue": queue, "name": name,
            "text": text, "n": limit})
        return [(r[0], dict(zip(self._TASK_COLUMNS, r[1:]))) for r in rows]

    def counts(self):
        return self.conn.execute(_SQL_COUNTS).fetchall()

    def state_counts(self):
        """[(queue, state, count, oldest time)] of the states that have an index."""
        return self.conn.execute(_SQL_STATE_COUNTS).fetchall()

    def stats_by_minute(self, since):
        return self.conn.execute(_SQL_STATS_BY_MINUTE, {"since": since}).fetchall()

    def stats_by_queue(self, since):
        return self.conn.execute(_SQL_STATS_BY_QUEUE, {"since": since}).fetchall()

    def stats_by_name(self, since):
        return self.conn.execute(_SQL_STATS_BY_NAME, {"since": since}).fetchall()

    def children(self, task_id):
        return [i for (i,) in self.conn.execute(_SQL_CHILDREN, (task_id,))]

    def group_members(self, group_id):
        """The member ids of a saved group, in order (None if unknown)."""
        rows = self.conn.execute(_SQL_GROUP_MEMBERS, (group_id,)).fetchall()
        if not rows:
            return None
        members = _unpack_stored(rows[0][0], "member list", group_id)
        return [m for m in members if isinstance(m, str)] if isinstance(members, list) else []

    def workflow(self, root_id, limit):
        """The rows of the workflow rooted at root_id, oldest first, at most limit."""
        return [dict(zip(self._TASK_COLUMNS, row))
                for row in self.conn.execute(_SQL_WORKFLOW, {"root": root_id, "n": limit})]

    def custom_states(self):
        """The update_state() states the running rows hold now."""
        states = set()
        for (blob,) in self.conn.execute(_SQL_RUNNING_META):
            with contextlib.suppress(Exception):
                state = _unpack(blob)[0]
                if isinstance(state, str):
                    states.add(state)
        return states

    def chord_of_body(self, task_id):
        return (self.conn.execute(_SQL_CHORD_OF_BODY, (task_id,)).fetchall() or [[None]])[0][0]

    def chord_starter(self, body_id):
        """The id of the header member of body_id's chord that finished last, or None."""
        found = (self.conn.execute(_SQL_CHORD_STARTER, (body_id,)).fetchall() or [[None]])[0][0]
        return found if isinstance(found, str) else None

    def chord_progress(self, body_id):
        """(done, size) of the chord whose body is body_id, as its row says, or None."""
        rows = self.conn.execute(_SQL_CHORD_PROGRESS, (body_id,)).fetchall()
        return rows[0] if rows else None

    def rate_limits(self):
        """[(task name, rate, seconds between starts, next start)]."""
        return self.conn.execute(_SQL_RATE_LIMITS).fetchall()

    def set_rate_limit(self, name, rate):
        """Set (rate: (text, interval)) or drop (None) a task name's rate limit, as a
        registration does, until the next registration of the name writes its own."""
        with self.write() as conn:
            row = {"name": name, "rate": None, "interval": None}
            if rate is not None:
                row["rate"], row["interval"] = rate
            self._apply_limit(conn, row)

    def pause(self, queue, now):
        """Stop every worker claiming from queue; True if it was running."""
        with self.write() as conn:
            conn.execute(_SQL_PAUSE, {"queue": queue, "now": now})
            return conn.changes() > 0

    def resume(self, queue):
        """Let workers claim from queue again; True if it was paused."""
        with self.write() as conn:
            conn.execute(_SQL_RESUME, {"queue": queue})
            return conn.changes() > 0

    def paused(self):
        """{queue: unix time it was paused}."""
        return dict(self.conn.execute(_SQL_PAUSED).fetchall())

    def schedules(self):
        cols = ("name", "task", "module", "schedule", "tz", "queue", "priority", "catch_up",
                "last_fire", "next_fire", "fires", "error")
        return [dict(zip(cols, row)) for row in self.conn.execute(_SQL_SCHEDULES)]

    def set_schedule_error(self, name, error):
        """Disable a schedule (error: why) or enable it (None); True if it changed."""
        with self.write() as conn:
            conn.execute(_SQL_SET_SCHEDULE_ERROR, {"name": name, "error": error})
            return bool(conn.changes())

    def fire_schedule(self, name, task_id, now):
        """Queue one call of a schedule now, beside its planned fires (which it leaves as
        they are); False for an unknown name."""
        with self.write() as conn:
            rows = conn.execute(_SQL_SCHEDULE_FIRE, {"name": name}).fetchall()
            if not rows:
                return False
            task, payload, queue, priority = rows[0]
            conn.execute(_SQL_INSERT_FIRE, {"id": task_id, "name": task, "queue": queue,
                                            "priority": priority, "payload": payload,
                                            "now": now})
            return bool(conn.changes())

    def revoke(self, task_id, terminate, now, announce, progress):
        """Mark a task REVOKED unless it finished, or is running and terminate is false.
        Returns what the revoke set in motion, to ring (a _FollowUps), or None if the
        task was not revoked.

        announce() runs under the write lock, before the task's state is read (see
        _RevokeCounter for why the order matters), and progress(worker, seq) says how far
        the worker that claimed a STARTED row has got: "running", "finished" or None."""
        with self.write() as conn:
            announce()
            target = conn.execute(_SQL_REVOKE_TARGET, (task_id,)).fetchall()
            if not target:
                return None
            seq, state, worker = target[0]
            if state == STARTED:
                stage = progress(worker, seq)
                if stage == "finished" or (stage == "running" and not terminate):
                    return None
            conn.execute(_SQL_REVOKE, {"now": now, "seq": seq, "terminate": int(terminate),
                                       "why": _TERMINATE_NOTE})
            if not conn.changes():
                return None
            follow = _FollowUps()
            self._settle(conn, [(task_id, REVOKED, None, None)], now, follow)
        return follow

    def forget(self, task_id):
        with self.write() as conn:
            conn.execute(_SQL_FORGET, (task_id,))

    def requeue(self, task_id):
        """Queue a FAILURE, REVOKED or EXPIRED task again; True if it was one. The rest of
        its chain, which its end had ended unrun, waits for it again. A follower that never
        ran (it has no input) is not requeued alone: requeue the task it follows."""
        with self.write() as conn:
            return self._requeue(conn, task_id)

    @staticmethod
    def _requeue(conn, task_id):
        conn.execute(_SQL_REQUEUE, (task_id,))
        if not conn.changes():
            return False
        conn.execute(_SQL_DROP_FAILED_STEPS, {"workflow": task_id})   # a workflow resumes
        reopened = [task_id]
        while reopened:
            reopened += [i for (i,) in conn.execute(_SQL_REOPEN_CHAIN,
                                                    {"parent": reopened.pop()})]
        return True

    def purge(self, queue=None):
        """Delete every task waiting to run (in one queue, or all), and the rows of any
        queue that waited on them; returns how many were purged."""
        purged = self._in_batches(_SQL_PURGE, {"queue": queue}, _PRUNE_BATCH)
        while purged and self._in_batches(_SQL_DROP_ORPHANS, {}, _PRUNE_BATCH):
            pass           # each pass frees the rows that waited on the last one's
        return purged

    def requeue_failed(self, name=None):
        """Queue again every FAILURE task (of one name, or all), a batch per
        transaction; returns how many."""
        total = 0
        while True:
            with self.write() as conn:
                ids = [i for (i,) in conn.execute(_SQL_FAILED_IDS,
                                                  {"name": name, "n": _PRUNE_BATCH})]
                total += sum(self._requeue(conn, i) for i in ids)
            if len(ids) < _PRUNE_BATCH:
                return total

    def ask_worker(self, worker_id, *, stop=None, wanted=None):
        """Record an operator's request to a supervisor: a shutdown (stop: the time) or
        a pool size. False if no such supervisor is registered."""
        with self.write() as conn:
            if stop is not None:
                conn.execute(_SQL_ASK_WORKER_STOP, {"id": worker_id, "now": stop})
            else:
                conn.execute(_SQL_ASK_WORKER_POOL, {"id": worker_id, "wanted": wanted})
            return conn.changes() > 0

    def unmailed_failures(self, until):
        """(cursor, rows): the failures that finished after the cursor of mailed failures
        and up to `until`, as [(id, name, result, traceback, finished_at)]. A read: the
        cursor moves in mark_mailed(), once a mail of them was accepted. The first call
        starts the cursor at `until` (failures from before mails were on are not mailed)."""
        cursor = self.conn.execute(_SQL_ALERT_CURSOR).fetchall()
        if not cursor:
            with self.write() as conn:
                conn.execute(_SQL_START_ALERT_CURSOR, {"cursor": until})
            return until, []
        after = cursor[0][0]
        if after >= until:
            return after, []
        return after, self.conn.execute(_SQL_FAILURES, {"after": after, "until": until}).fetchall()

    def mark_mailed(self, until):
        """Move the cursor of mailed failures on to `until` (never back)."""
        with self.write() as conn:
            conn.execute(_SQL_MARK_MAILED, {"until": until})


# ---------------------------------------------------------------------------
# Storage: workflows' statements, and _Storage
# The last mixin, then the class that joins them and guards every public method.
# ---------------------------------------------------------------------------

class _Stepping:
    """Statements of durable workflows: a run's steps (each write fenced by the claim the
    run holds: fence is {"workflow": id, "attempt": n}), messages and events."""

    def steps_of(self, workflow):
        return [_Step(*row) for row in self.conn.execute(_SQL_STEPS, {"workflow": workflow})]

    def step_of(self, workflow, idx):
        rows = self.conn.execute(_SQL_STEP, {"workflow": workflow, "idx": idx}).fetchall()
        return _Step(*rows[0]) if rows else None

    @staticmethod
    def _record(conn, fence, step, now):
        """Inside the caller's transaction: record a step, or _Superseded (rolled back)."""
        conn.execute(_SQL_RECORD_STEP, {"child": None, "state": None, "result": None,
                                        "traceback": None, "until": None, **step, **fence,
                                        "now": now})
        if not conn.changes():
            raise _Superseded(f"workflow {fence['workflow']} was claimed again or ended")

    @staticmethod
    def _end_step(conn, fence, idx, state, result, now):
        conn.execute(_SQL_END_STEP, {**fence, "idx": idx, "state": state, "result": result,
                                     "now": now})
        if not conn.changes():
            raise _Superseded(f"workflow {fence['workflow']} was claimed again or ended")

    def record_step(self, fence, step, now):
        """Record a step: an open one (a sleep begun), or one that ended as it ran."""
        with self.write() as conn:
            self._record(conn, fence, step, now)

    def end_step(self, fence, idx, state, result, now):
        """An open step ends (a sleep over, a recv timed out)."""
        with self.write() as conn:
            self._end_step(conn, fence, idx, state, result, now)

    def queue_step_task(self, fence, step, row, registry_row, now):
        """Queue a task step's row, whose end settles the step (followers), and record
        the step, in one transaction."""
        try:
            with self.write() as conn:
                if registry_row is not None:
                    self._register(conn, registry_row)
                conn.execute(_SQL_INSERT_CANVAS, {**row, "group_id": None, "group_index": None,
                                                  "waits": None, "input": None,
                                                  "followers": 1})
                self._record(conn, fence, {**step, "child": row["id"]}, now)
        except apsw.ConstraintError:
            raise DuplicateTaskId(f"a task with id {row['id']!r} already exists") from None

    def take_message(self, fence, step, opened, now):
        """A recv() step: the oldest message of its topic (step["name"]), recorded as the
        step's result (an open step ends with it), or None if there is none."""
        with self.write() as conn:
            taken = conn.execute(_SQL_TAKE_MESSAGE, {"workflow": fence["workflow"],
                                                     "topic": step["name"]}).fetchall()
            if not taken:
                return None
            body = taken[0][0]
            if opened:
                self._end_step(conn, fence, step["idx"], SUCCESS, body, now)
            else:
                self._record(conn, fence, {**step, "state": SUCCESS, "result": body}, now)
            return body

    def send_message(self, workflow, topic, body, now, fence=None, step=None):
        """A message to a workflow (with the step of the workflow that sends it, if one
        does); True if it queued the workflow, waiting in recv() for that topic."""
        with self.write() as conn:
            if not conn.execute(_SQL_TASK_EXISTS, {"workflow": workflow}).fetchall():
                raise TaskNotFound(f"no workflow with id {workflow!r}")
            if step is not None:
                self._record(conn, fence, step, now)
            conn.execute(_SQL_SEND, {"workflow": workflow, "topic": topic, "body": body,
                                     "now": now})
            conn.execute(_SQL_WAKE_RECEIVER, {"workflow": workflow, "topic": topic,
                                              "now": now})
            return conn.changes() > 0

    def fork_workflow(self, workflow, new, n, now):
        """Queue a new run of a workflow, under id new, that starts with its steps
        before index n; False if there is no such task."""
        with self.write() as conn:
            conn.execute(_SQL_FORK_WORKFLOW, {"workflow": workflow, "new": new, "now": now})
            if not conn.changes():
                return False
            conn.execute(_SQL_FORK_STEPS, {"workflow": workflow, "new": new, "n": n})
            return True

    def set_event(self, fence, step, key, value, now):
        with self.write() as conn:
            self._record(conn, fence, step, now)
            conn.execute(_SQL_SET_EVENT, {"workflow": fence["workflow"], "key": key,
                                          "value": value, "now": now})

    def get_event(self, workflow, key):
        """The event's msgpack value, or None if it was not set."""
        rows = self.conn.execute(_SQL_GET_EVENT, {"workflow": workflow, "key": key}).fetchall()
        return rows[0][0] if rows else None

    def workflows(self, state, limit):
        rows = self.conn.execute(_SQL_WORKFLOWS, {"state": state, "n": int(limit)})
        return [dict(zip(_TASK_COLUMNS + ("steps", "last"), row)) for row in rows]

    @staticmethod
    def _suspend(conn, o, worker, now):
        """Inside complete_and_claim's transaction: a workflow's run ended at a wait.
        What it waits for may have come meanwhile (the step ended, a message came): then
        it is queued at once, as the end that came first could not queue it. Returns
        (recorded, queued)."""
        waits = o.waits
        state, eta = (SCHEDULED, o.eta) if o.eta is not None else (WAITING, None)
        kind, _, what = waits.partition(":")
        if kind == "step":
            came = conn.execute(_SQL_STEP_ENDED, {"workflow": o.id, "idx": int(what)})
        elif kind == "recv":
            came = conn.execute(_SQL_HAS_MESSAGE, {"workflow": o.id, "topic": what})
        else:
            came = ()
        if came and came.fetchall():
            state, eta = PENDING, now
        conn.execute(_SQL_SUSPEND, {"state": state, "eta": eta, "waits": waits, "seq": o.seq,
                                    "attempt": o.attempt, "worker": worker})
        return conn.changes() > 0, state == PENDING

    def _end_steps(self, conn, task_id, state, result, tb, now, follow):
        """Inside _settle: a task step's row ended; its workflows waiting for it are
        queued."""
        for workflow, idx in conn.execute(_SQL_STEP_CHILD_ENDED, {
                "child": task_id, "state": state, "result": result, "traceback": tb,
                "now": now}).fetchall():
            woken = conn.execute(_SQL_WAKE_WORKFLOW, {"workflow": workflow, "idx": idx,
                                                     "now": now}).fetchall()
            follow.woken += len(woken)
            follow.seqs += [seq for (seq,) in woken]


class _Storage(_Connection, _Producing, _Claiming, _Supervising, _Administering,
               _Stepping):
    """One apsw connection, its pragmas, migrations and every statement litequeue runs."""


# Every statement a _Storage method runs may read text another client wrote, or meet a
# file this process may not write: each public method repairs text that is not UTF-8 and
# runs again, and translates apsw's errors (_guarded), so that no caller anywhere meets a
# raw decode error or apsw error.
for _name, _member in [item for _part in _Storage.__bases__
                      for item in vars(_part).items()]:
    if not _name.startswith("_") and inspect.isfunction(_member) and \
            _name not in ("write", "close", "repair_text"):
        setattr(_Storage, _name, _guarded(_member))
del _name, _member


# ---------------------------------------------------------------------------
# Side directory: wake-up sockets, lock files and the revocations counter
# ---------------------------------------------------------------------------

#
# Everything beside the database lives in one directory, DB-lq/:
#   work/<child id>      datagram sockets of idle children; producers ring them
#   sched/<supervisor>   supervisors' sockets; ETA producers, children and revoke() ring
#   done/<tag>.<...>     sockets of AsyncResult.get() waiters; a child rings its task's tag
#   locks/<id>.lock      an fcntl lock held for each worker process's life
#   revocations          a counter every revoke() bumps (see _RevokeCounter)
#
# The directory is created by us (mode 0700) and verified before use: a directory, not a
# link, owned by this user, root or the database's owner, and writable by nobody else.
# Every file in it is then reached relative to a descriptor of a verified directory, never
# following a link (socket paths go through /proc/self/fd, which also lifts the 107-byte
# limit on socket paths). Nothing is unlinked unless it was verified to be a socket or a
# lock file of ours, and ids read from the database are checked before they name a file.

_SIDE_DIR_MODE = 0o700
_SIDE_KINDS = ("work", "child", "sched", "done", "locks")
_WORKER_ID = re.compile(r"^[0-9a-f]{12}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _fd_path(fd, name=None):
    """A path that reaches `name` inside the directory open as fd (or fd itself)."""
    return f"/proc/self/fd/{fd}" if name is None else f"/proc/self/fd/{fd}/{name}"


def _new_worker_id():
    return uuid.uuid4().hex[:12]


class _SideDir:
    """Opens and verifies DB-lq/ and its subdirectories; every caller owns the
    descriptors it gets."""

    def __init__(self, db_path):
        self.db_path = db_path
        self.path = db_path + "-lq"

    def _trusted(self):
        owners = {os.geteuid(), 0}
        with contextlib.suppress(OSError):
            owners.add(os.stat(self.db_path).st_uid)
        return owners

    def _refuse(self, what, why):
        return SideDirectoryError(f"cannot use {what}: {why}")

    def _open_dir(self, parent_fd, name, shown, create):
        if create:
            try:
                os.mkdir(name, _SIDE_DIR_MODE, dir_fd=parent_fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._refuse(shown, f"cannot create it: {exc.strerror}") from None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            why = {errno.ELOOP: "it is a symbolic link",
                   errno.ENOTDIR: "it is not a directory"}.get(exc.errno, exc.strerror)
            raise self._refuse(shown, why) from None
        st = os.fstat(fd)
        if st.st_uid not in self._trusted() or st.st_mode & 0o022:
            os.close(fd)
            raise self._refuse(shown, f"it is owned by uid {st.st_uid} with mode "
                                      f"{stat.S_IMODE(st.st_mode):o}; it must belong to this "
                                      "user or the database's owner and be writable by "
                                      "nobody else")
        return fd

    def open(self, kind=None, create=True):
        """A descriptor of DB-lq/ (kind None) or of DB-lq/<kind>/, or SideDirectoryError."""
        try:
            parent = os.open(os.path.dirname(self.db_path) or ".", os.O_RDONLY | os.O_DIRECTORY
                             | os.O_CLOEXEC)
        except OSError as exc:
            raise self._refuse(self.path, exc.strerror) from None
        try:
            base = self._open_dir(parent, os.path.basename(self.path), self.path, create)
        finally:
            os.close(parent)
        if kind is None:
            return base
        try:
            return self._open_dir(base, kind, os.path.join(self.path, kind), create)
        finally:
            os.close(base)

    def check(self):
        """Create (if need be) and verify the side directory and every subdirectory."""
        for kind in (None, *_SIDE_KINDS):
            os.close(self.open(kind))

    def open_file(self, dir_fd, name, flags, shown):
        """A regular file of ours inside a verified directory, never through a link (nor
        blocking on a FIFO); FileNotFoundError when it does not exist. New files are
        0644, so that a supervisor of the database's owner can probe root's locks."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644,
                         dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._refuse(shown, exc.strerror) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in self._trusted():
            os.close(fd)
            raise self._refuse(shown, "it is not a plain file of ours")
        return fd


def _unlink_socket(dir_fd, name, ino=None):
    """Remove a socket file (only a socket, and only the one with inode ino if given)."""
    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISSOCK(st.st_mode) and (ino is None or st.st_ino == ino):
            os.unlink(name, dir_fd=dir_fd)


def _socket_entries(dir_fd, prefix=None):
    """Names in a directory that may be sockets, judged from the listing alone (d_type):
    directories, plain files and links are passed over at no cost."""
    names = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if prefix is not None and not entry.name.startswith(prefix):
                continue
            if not (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)
                    or entry.is_symlink()):
                names.append(entry.name)
    return names


def _open_socket_file(dir_fd, name):
    """(O_PATH descriptor, inode) of a socket file in a directory, or None: a link or
    anything else that is not a socket is never reached."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        os.close(fd)
        return None
    return fd, st.st_ino


_doorbells = weakref.WeakSet()


def _doorbells_after_fork():
    for bell in list(_doorbells):
        bell._lock = threading.Lock()      # another thread may have held it at the fork


os.register_at_fork(after_in_child=_doorbells_after_fork)


# A doorbell rung again within this many seconds rings the sleepers it knows without
# looking at their directory first (a new sleeper is rung from the next look on).
_RELOOK = 0.001
# A doorbell keeps a connected socket for at most this many sleepers (a descriptor each):
# a producer must not run out of descriptors because thousands of processes sleep. The
# rest are not rung; they notice commits by polling (worker_poll_interval).
_PEERS_KEPT = 256


class _Doorbell:
    """Rings the sleepers bound in one subdirectory: one datagram each, never blocking.

    With keep=True (work/, sched/, child/: few, long-lived sleepers) it keeps a connected
    socket per sleeper until the directory changes, so a ring is one send() each; ring()
    rings them all. With keep=False (get() waiters, done/) ring_tasks() rings the
    sleepers of some tasks by name. Thread-safe.
    """

    def __init__(self, side, kind, keep=True):
        self.side = side
        self.kind = kind
        self.keep = keep
        self.path = os.path.join(side.path, kind)
        self._lock = threading.Lock()
        self._fd = None
        self._ident = None          # (dev, ino) of the directory open as _fd
        self._listed_mtime = None
        self._peers = {}            # name -> connected socket (keep=True)
        self._names = ()            # names that may be sockets (keep=False)
        self._sock = None
        self._warned = False
        self._looked = -math.inf    # when the directory was last looked at
        _doorbells.add(self)

    def ring(self):
        """Ring every sleeper (keep=True)."""
        with self._lock:
            if time.monotonic() - self._looked < _RELOOK:
                self._ring_peers()          # a ring in a tight loop: no stat each time
                return
            self._looked = time.monotonic()
            if self._listed():
                self._ring_peers()

    def ring_tasks(self, task_ids):
        """Ring the get() waiters of these task ids (keep=False): one look at the
        directory (listed again only when it changed), and the ids are hashed only if
        somebody waits at all."""
        if not task_ids:
            return
        with self._lock:
            if not self._listed() or not self._names:
                return
            tags = {_tag(task_id) for task_id in task_ids}
            for name in self._names:
                if name.split(".", 1)[0] in tags:
                    self._send_named(name)

    def _listed(self):
        """Bring the list of sleepers up to date; False if nobody can be rung."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False                # nobody has slept here yet
        if not self._current(st):
            return False
        if st.st_mtime_ns != self._listed_mtime or time.time() - st.st_mtime < _LISTING_SETTLE:
            self._relist()
            self._listed_mtime = st.st_mtime_ns
        return True

    def _current(self, st):
        """Keep _fd on the directory now at self.path; False if it cannot be used."""
        if (st.st_dev, st.st_ino) == self._ident:
            return True
        self.close()
        try:
            self._fd = self.side.open(self.kind, create=False)
        except SideDirectoryError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("%s; workers will see new tasks by polling instead", exc)
            return False
        fst = os.fstat(self._fd)
        self._ident = (fst.st_dev, fst.st_ino)
        self._listed_mtime = None
        return True

    def _relist(self):
        names = _socket_entries(self._fd)
        if not self.keep:
            self._names = tuple(names)
            return
        for name in set(self._peers) - set(names):
            self._peers.pop(name).close()
        for name in names:
            if name not in self._peers and len(self._peers) < _PEERS_KEPT:
                sock = self._connect(name)
                if sock is not None:
                    self._peers[name] = sock

    def _connect(self, name):
        """A socket connected to a sleeper's, or None. Out of descriptors (a process near
        its limit, thousands of sleepers), the ring is skipped: sleepers also notice
        commits by polling, within worker_poll_interval."""
        try:
            found = _open_socket_file(self._fd, name)
        except OSError:
            return None
        if found is None:
            return None
        path_fd, ino = found
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError:
            os.close(path_fd)
            return None
        sock.setblocking(False)
        try:
            sock.connect(_fd_path(path_fd))
            return sock
        except ConnectionRefusedError:
            sock.close()
            _unlink_socket(self._fd, name, ino)   # left behind by a killed process
            return None
        except OSError:
            sock.close()
            return None
        finally:
            os.close(path_fd)

    def _ring_peers(self):
        for name, sock in list(self._peers.items()):
            try:
                sock.send(b"!")
            except BlockingIOError:
                pass                  # its buffer is full of unread rings: it is awake already
            except OSError:
                self._peers.pop(name).close()
                self._listed_mtime = None          # look again next time

    def _send_named(self, name):
        """One datagram to the socket bound as name; a dead one's file is removed."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        found = _open_socket_file(self._fd, name)
        if found is None:
            return
        path_fd, ino = found
        try:
            self._sock.sendto(b"!", _fd_path(path_fd))
        except BlockingIOError:
            pass
        except ConnectionRefusedError:
            _unlink_socket(self._fd, name, ino)
        except OSError:
            pass
        finally:
            os.close(path_fd)

    def close(self):
        for sock in self._peers.values():
            sock.close()
        self._peers = {}
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._ident = None

    def __del__(self):            # a short-lived app must not leak descriptors
        with contextlib.suppress(Exception):
            self.close()
            if self._sock is not None:
                self._sock.close()


def _wait_readable(waitables, timeout=None):
    """The waitables (descriptors, or objects with fileno()) that are readable, or whose
    other end has gone, after waiting up to timeout seconds (None: for ever) for one; each
    comes back as it was given. poll(), not select(): select() refuses a descriptor above
    1,023, and any process with many files open (a web server) has those."""
    poller = select.poll()
    given = {}
    for waitable in waitables:
        fd = waitable if isinstance(waitable, int) else waitable.fileno()
        given.setdefault(fd, []).append(waitable)
        poller.register(fd, select.POLLIN)
    # poll() counts milliseconds and rounds a fraction up; a negative time is no limit.
    ready = poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
    return [waitable for fd, _ in ready for waitable in given[fd]]


class _Sleeper:
    """A datagram socket that doorbells ring; _wait_readable() on it to sleep until work
    comes."""

    def __init__(self, side, kind, name):
        self.dir_fd = side.open(kind)
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            _unlink_socket(self.dir_fd, name)
            self.sock.bind(_fd_path(self.dir_fd, name))
            self.ino = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False).st_ino
        except OSError as exc:
            self.sock.close()
            os.close(self.dir_fd)
            raise SideDirectoryError(f"cannot bind a wake-up socket in "
                                     f"{os.path.join(side.path, kind)}: {exc.strerror}") from None
        self.sock.setblocking(False)

    @classmethod
    def shared(cls, sock):
        """A sleeper on a socket that another process bound and handed down (a
        supervisor's pool socket, in its children): drained like any, never unlinked."""
        self = cls.__new__(cls)
        self.dir_fd = self.name = self.ino = None
        self.sock = sock
        sock.setblocking(False)
        return self

    def fileno(self):
        return self.sock.fileno()

    def drain(self):
        """Read every pending ring; True if there was any."""
        rang = False
        while True:
            try:
                self.sock.recv(64)
                rang = True
            except BlockingIOError:
                return rang

    def close(self):
        if self.dir_fd is not None:
            _unlink_socket(self.dir_fd, self.name, self.ino)
            os.close(self.dir_fd)
        self.sock.close()


class _Waitset:
    """epoll over a fixed set of waitables, for a loop that sleeps on the same ones again
    and again (registered once, not at every sleep).

    A supervisor's idle children all wait on its pool socket, and a ring wakes every one
    of them. Waking one only (EPOLLEXCLUSIVE) was measured and dropped: on 2 cores the
    kernel often woke the child on the producer's core, which then waited for the
    producer to sleep, and the idle round trip grew by about 0.4 ms (p50 1.7-2.0 ms
    against 1.2-1.6 ms, alternating runs of bench.py --only roundtrip)."""

    def __init__(self, waitables):
        self.epoll = select.epoll()
        self.given = {}
        for waitable in waitables:
            fd = waitable if isinstance(waitable, int) else waitable.fileno()
            self.epoll.register(fd, select.EPOLLIN)
            self.given[fd] = waitable

    def wait(self, timeout=None):
        """The waitables that are ready (readable, or whose other end has gone) after
        waiting up to timeout seconds (None: for ever) for one."""
        ready = self.epoll.poll(-1 if timeout is None else max(0.0, timeout))
        return [self.given[fd] for fd, _ in ready]

    def close(self):
        self.epoll.close()


def _sweep_stale_sockets(side, kinds=("done", "work", "child", "sched")):
    """Remove sockets nobody is bound to any more (left by killed processes); returns how
    many. Anything that is not a socket is left alone."""
    removed = 0
    for kind in kinds:
        try:
            dir_fd = side.open(kind, create=False)
        except SideDirectoryError:
            continue
        try:
            for name in _socket_entries(dir_fd):
                found = _open_socket_file(dir_fd, name)
                if found is None:
                    continue
                path_fd, ino = found
                # connect() sends nothing: a live sleeper is not woken by the probe.
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    probe.connect(_fd_path(path_fd))
                except ConnectionRefusedError:
                    _unlink_socket(dir_fd, name, ino)
                    removed += 1
                except OSError:
                    pass
                finally:
                    probe.close()
                    os.close(path_fd)
        finally:
            os.close(dir_fd)
    return removed


def _ring_id(task_id):
    """An outcome's `tag`: the id whose get() waiters its commit rings (hashed only when
    somebody waits: _Doorbell.ring_tasks), None when nobody can wait on it."""
    return task_id if isinstance(task_id, str) else None


def _tag(task_id):
    """The prefix of get() waiters' socket names for a task (None: nobody can wait)."""
    return _short_hash(task_id) if isinstance(task_id, str) else None


# ---------------------------------------------------------------------------
# Worker lock files
# ---------------------------------------------------------------------------

# The task being executed (seq, 0 between tasks), its hard deadline (unix time, 0: none)
# and how many seqs follow: rows the process has begun whose outcomes are not committed yet
# (results wait for a group commit), which a revoke must treat as running.
_LOCK_RECORD = struct.Struct("<qdq")
# After the begun seqs: how many tasks run off the main thread, then one entry each:
# (seq, deadline or 0, kind): _OFF_THREAD (a -P threads thread: its process is killed
# to end it) or _OFF_LOOP (a coroutine: the child cancels it when revoked).
_LOCK_COUNT = struct.Struct("<q")
# Last: a CRC-32 of everything before it. The owner rewrites the record in place while
# others read it, and a read can see half of a write (pread and pwrite of a regular file
# are not atomic with each other): a record whose checksum does not match is read again.
_LOCK_CRC = struct.Struct("<I")
_LOCK_READ_TRIES = 20
_LOCK_RECORD_MAX = 1 << 19          # bytes: room for worker_async_concurrency's maximum
_LOCK_ENTRY = struct.Struct("<qdq")
_ON_MAIN, _OFF_THREAD, _OFF_LOOP = 0, 1, 2
_NO_ENTRIES = _LOCK_COUNT.pack(0)
_COUNTER = struct.Struct("<q")


def _lock_name(worker_id):
    """The lock file's name of a worker id, or None for an id litequeue never generates
    (ids come from the database: they are data, never a path)."""
    if isinstance(worker_id, str) and _WORKER_ID.match(worker_id):
        return worker_id + ".lock"
    return None


# Lock files this process holds, by worker id. Closing any descriptor of a file drops
# every fcntl lock the process has on it, so this process reads its own through these.
_held_locks = {}


def _parse_lock_record(record):
    """([(seq, deadline or None, kind)] running, begun seqs) of a lock record, or None if
    it is torn (its checksum does not match) or cut short."""
    try:
        seq, deadline, count = _LOCK_RECORD.unpack_from(record)
        at = _LOCK_RECORD.size + 8 * count
        entries, = _LOCK_COUNT.unpack_from(record, at)
        end = at + _LOCK_COUNT.size + entries * _LOCK_ENTRY.size
        crc, = _LOCK_CRC.unpack_from(record, end)
        if count < 0 or entries < 0 or zlib.crc32(record[:end]) != crc:
            return None
        begun = struct.unpack_from(f"<{count}q", record, _LOCK_RECORD.size)
        running = [(seq, deadline or None, _ON_MAIN)] if seq else []
        running += [(s, d or None, k) for s, d, k in _LOCK_ENTRY.iter_unpack(
            record[at + _LOCK_COUNT.size:end])]
        return running, begun
    except struct.error:
        return None


class _Locks:
    """The locks/ directory, open once: probes, reads and removes workers' lock files
    through it."""

    def __init__(self, side, create=True):
        self.side = side
        try:
            self.fd = side.open("locks", create=create)
        except SideDirectoryError:
            if create or os.path.lexists(os.path.join(side.path, "locks")):
                raise
            self.fd = None          # no worker ever ran here: every lock is free

    def _open(self, worker_id, flags):
        """A descriptor of a worker's lock file; None if it has none (no such file, or an
        id litequeue never generates); SideDirectoryError if it cannot be opened."""
        name = _lock_name(worker_id)
        if name is None or self.fd is None:
            return None
        try:
            return self.side.open_file(self.fd, name, flags, name)
        except FileNotFoundError:
            return None

    def record(self, worker_id):
        """([(seq, hard deadline or None, kind)] of the tasks a worker is running, begun
        seqs) from its lock file."""
        held = _held_locks.get(worker_id)
        try:
            fd = held if held is not None else self._open(worker_id, os.O_RDONLY)
        except SideDirectoryError:
            fd = None
        if fd is None:
            return [], ()
        try:
            for _ in range(_LOCK_READ_TRIES):
                parsed = _parse_lock_record(os.pread(fd, _LOCK_RECORD_MAX, 0))
                if parsed is not None:
                    return parsed
            # Never a consistent read (a writer rewriting it without pause): nothing is
            # known, so nothing is charged or killed on its account.
            return [], ()
        except OSError:
            return [], ()
        finally:
            if held is None:
                os.close(fd)

    def running(self, worker_id):
        """[(seq, hard deadline or None, kind)] of the tasks a worker is running."""
        return self.record(worker_id)[0]

    def begun(self, worker_id):
        """The seqs a live worker has begun (running, or run and not yet committed), or
        None if its lock file cannot be read (nothing can be told apart then)."""
        if worker_id not in _held_locks:
            try:
                fd = self._open(worker_id, os.O_RDONLY)
            except SideDirectoryError:
                return None
            if fd is None:
                return None
            os.close(fd)
        running, begun = self.record(worker_id)
        return {entry[0] for entry in running}.union(begun)

    def dead(self, worker_id):
        """True if the worker owning this id is dead: its lock is free or was never made.

        A held lock always means a live process (SQLite's own WAL locking relies on the
        same fcntl locks). Closing any descriptor of a file drops every fcntl lock the
        process has on it, so this process answers for its own locks from _held_locks.
        """
        if worker_id in _held_locks:
            return False
        try:
            fd = self._open(worker_id, os.O_RDONLY)
        except SideDirectoryError:
            return False            # cannot tell: a live worker must never be rescued
        if fd is None:
            return True
        try:
            # A shared lock needs only read access, and conflicts with the owner's.
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return True
        finally:
            os.close(fd)

    def remove(self, worker_id):
        name = _lock_name(worker_id)
        if name is not None and self.fd is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


class _WorkerLock:
    """An exclusive fcntl lock held for a worker process's whole life.

    fcntl locks vanish with their process, however it dies, so a lock another process can
    take belongs to a dead worker. The file also records which task the worker is
    executing, so a rescuer can tell the task that crashed from rows merely prefetched.
    """

    def __init__(self, side, worker_id):
        self.locks = _Locks(side)
        self.worker_id = worker_id
        self.fd = side.open_file(self.locks.fd, _lock_name(worker_id), os.O_RDWR | os.O_CREAT,
                                 worker_id + ".lock")
        fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held_locks[worker_id] = self.fd
        self.entries = _NO_ENTRIES      # packed: the tasks running off the main thread
        try:
            self.executing(0)
        except OSError as exc:
            self.release()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):     # the caller waits it out
                raise DiskFull(f"the disk holding {side.path} is full: the lock file of "
                               f"worker {worker_id} cannot be written") from None
            raise

    def executing(self, seq, deadline=0.0, begun=()):
        """Record the row the main thread runs (0: none), the rows begun but not
        committed, and (self.entries) the rows running off the main thread."""
        body = _LOCK_RECORD.pack(seq, deadline, len(begun)) + \
            struct.pack(f"<{len(begun)}q", *begun) + self.entries
        os.pwrite(self.fd, body + _LOCK_CRC.pack(zlib.crc32(body)), 0)

    def set_entries(self, entries):
        """The rows running off the main thread: [(seq, deadline or 0, kind)]."""
        self.entries = _LOCK_COUNT.pack(len(entries)) + b"".join(
            _LOCK_ENTRY.pack(*entry) for entry in entries)

    def release(self):
        self.locks.remove(self.worker_id)
        _held_locks.pop(self.worker_id, None)
        os.close(self.fd)
        self.locks.close()


class _RevokeCounter:
    """A counter in a file beside the database, bumped by every revoke.

    A child may hold rows it claimed but has not begun (prefetched). A revoke must stop
    those, yet leave a running task alone unless told to terminate it. The revoker bumps
    the counter while it holds the write lock, then reads the state of the row and, if
    it is STARTED, the lock file of the child that claimed it. The child writes the row
    into its lock file before it reads the counter. If the counter moved, the child
    re-reads its rows' states under the write lock, so after the revoke has committed.
    So either the revoker sees that the row is running, or the child sees that it is
    REVOKED. Reading the counter costs no system call: the file is mapped.
    """

    def __init__(self, side):
        base = side.open()
        try:
            self.fd = side.open_file(base, "revocations", os.O_RDWR | os.O_CREAT,
                                     os.path.join(side.path, "revocations"))
        finally:
            os.close(base)
        if os.fstat(self.fd).st_size < _COUNTER.size:
            os.pwrite(self.fd, _COUNTER.pack(0), 0)
        self._map = None

    def bump(self):
        """Call with the write lock held, so bumps never interleave."""
        count, = _COUNTER.unpack(os.pread(self.fd, _COUNTER.size, 0))
        os.pwrite(self.fd, _COUNTER.pack(count + 1), 0)

    def value(self):
        if self._map is None:
            self._map = mmap.mmap(self.fd, _COUNTER.size, prot=mmap.PROT_READ)
        return _COUNTER.unpack_from(self._map)[0]

    def close(self):
        if self._map is not None:
            self._map.close()
        os.close(self.fd)


def _progress(locks, worker, seq):
    """How far the worker that claimed row seq has got with it, from its lock file:
    "running", "finished" (its outcome waits for the next commit) or None (not begun)."""
    if worker is None:
        return None
    running, begun = locks.record(worker)
    return "running" if any(seq == entry[0] for entry in running) else \
        "finished" if seq in begun else None


# ---------------------------------------------------------------------------
# Task policy: pure decisions, unit-tested with an injected clock
# ---------------------------------------------------------------------------

# Task(max_retries=...) not given: the app's task_max_retries applies.
_UNSET = object()
# A row whose process keeps dying is failed after this many deaths when its retry budget
# has no bound (max_retries=None): a task that kills its process must not loop for ever.
_DEATH_RETRIES = 3


def _retry_budget(asked, stored, task_value, default):
    """How many retries a row may use, None for no bound: the retry request's
    max_retries, else the row's, else the task's, else the app's task_max_retries. A task
    defined with max_retries=None retries on request without end, as in Celery."""
    for value in (asked, stored):
        if value is not None:
            return value
    return default if task_value is _UNSET else task_value


def _error_entry(exc, attempt, now):
    """One line of a task's error history."""
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    return {"type": f"{type(exc).__module__}.{type(exc).__qualname__}", "message": message,
            "time": now, "attempt": attempt}


def _history(blob):
    """A row's error history as a list; a history that cannot be read starts over with a
    note saying so, rather than stopping whoever records the next error."""
    if not blob:
        return []
    try:
        history = _unpack(blob)
        if isinstance(history, list):
            return history
        reason = f"it is a {type(history).__name__}, not a list"
    except Exception as exc:
        reason = _decode_problem(blob, exc)
    return [{"type": "litequeue.CorruptResult", "message": "earlier error history could not "
             f"be decoded: {reason}", "time": time.time(), "attempt": None}]


# What a failure comes to: the row's next state (RETRY or FAILURE), when a retry is due,
# 1 for a retry, and the error history with this error added.
_Decision = collections.namedtuple("_Decision", "state eta retried history")
# The same for a task that raised (_failure_decision): cause is the error its hooks,
# signals and result see; budget the retries it may use (None: no bound).
_FailureDecision = collections.namedtuple("_FailureDecision", "state cause eta history budget")


def _after_failure(*, retries, budget, wants_retry, delay, now, history, error):
    """The one retry policy, for a task that raised and for a row whose process died.

    Returns a _Decision: RETRY due at now + delay() when a retry is
    wanted and retries < budget (None: no bound), else FAILURE. The error joins the
    row's history either way; delay() is only called for a retry (it may draw jitter).
    """
    history = list(history) + [error]
    if wants_retry and (budget is None or retries < budget):
        return _Decision(RETRY, now + delay(), 1, history)
    return _Decision(FAILURE, None, 0, history)


def _retry_delay(task, asked, retries, now):
    """Seconds until a retry: the request's eta (a naive one in the app's zone) or
    countdown, else the task's backoff."""
    if asked is not None and asked.eta is not None:
        zone = _zone(task.app.conf["timezone"])
        return _to_instant(asked.eta, zone, "eta") - now
    if asked is not None and asked.countdown is not None:
        return float(asked.countdown)
    return task.backoff(retries)


def _failure_decision(task, exc, *, task_id, retries, attempt, stored_max, default_max,
                      errors, now, call=((), {})):
    """What a run of task that raised exc comes to, in a worker and in eager mode alike:
    a _FailureDecision. RETRY, due at eta, when self.retry() or
    autoretry_for asks and the budget allows (_retry_budget: the request's max_retries,
    else stored_max, the row's, else the task's, else default_max); else FAILURE.

    cause is the error the hooks, the signals and the result see: the exc given to
    self.retry(), else what the task raised, or MaxRetriesExceededError for a retry()
    without exc past its budget. history is the error history (errors, a stored blob)
    with cause added. A retry request that asks for an impossible time raises."""
    asked = exc if isinstance(exc, Retry) else None
    cause = asked.exc if asked is not None and asked.exc is not None else exc
    wants_retry = asked is not None or bool(
        task.autoretry_for and isinstance(exc, task.autoretry_for))
    if asked is None and wants_retry and task.retry_kwargs:
        # Celery's autoretry calls retry(exc=exc, **retry_kwargs); a backoff sets the
        # countdown itself.
        given = task.retry_kwargs
        asked = Retry(exc=exc, countdown=None if task.retry_backoff else
                      given.get("countdown"), eta=given.get("eta"),
                      max_retries=given.get("max_retries"))
    budget = _retry_budget(asked.max_retries if asked else None, stored_max,
                           task._max_retries, default_max)
    state, eta, _, history = _after_failure(
        retries=retries, budget=budget, wants_retry=wants_retry,
        delay=lambda: _retry_delay(task, asked, retries, now), now=now,
        history=_history(errors), error=_error_entry(cause, attempt, now))
    if state == FAILURE and asked is not None and asked.exc is None:
        args, kwargs = call
        cause = MaxRetriesExceededError(f"Can't retry {task.name}[{task_id}] "
                                        f"args:{tuple(args)} kwargs:{kwargs}")
        history[-1] = _error_entry(cause, attempt, now)
    return _FailureDecision(state, cause, eta, history, budget)


def _settle_lost(exc, tasks, default_max_retries):
    """How the row a dead process was executing ends, as a settle function for
    _Storage.rescue: by the task policy, requeued at once if its budget allows (a lost
    worker; at most _DEATH_RETRIES deaths when the budget has no bound), retried on its
    backoff if the task's autoretry_for covers a time limit, else FAILURE. A row whose
    columns cannot be read ends FAILURE."""
    def settle(row):
        now = time.time()
        history = _history(row.errors)
        error = _error_entry(exc, row.attempt, now)
        try:
            task = tasks.get(row.name)
            timed_out = isinstance(exc, TimeLimitExceeded)
            budget = _retry_budget(None, row.max_retries,
                                   task._max_retries if task else _UNSET,
                                   default_max_retries)
            state, eta, retried, history = _after_failure(
                retries=row.retries, budget=_DEATH_RETRIES if budget is None else budget,
                wants_retry=not timed_out or bool(task and task.autoretry_for and
                                                  isinstance(exc, task.autoretry_for)),
                delay=lambda: task.backoff(row.retries) if timed_out else 0.0,
                now=now, history=history, error=error)
            if state == RETRY and not timed_out:
                state, eta = PENDING, None      # requeued now, not through the scheduler
        except Exception as bad:
            logger.error("task row %s: cannot apply its retry policy: %s", row.seq,
                         _saferepr(bad))
            state, eta, retried, history = FAILURE, None, 0, history + [error]
        return _Outcome(state, _encode_error(exc), str(exc), seq=row.seq,
                        attempt=row.attempt, tag=None, eta=eta, errors=_pack(history),
                        retried=retried)
    return settle


# ---------------------------------------------------------------------------
# Task context: the request, progress, signals and hooks
# What a running task sees (self.request, update_state), Celery's signals, and the
# steps every runner takes before and after a task (eager mode too).
# ---------------------------------------------------------------------------

_apps = weakref.WeakSet()   # every live LiteQueue of this process; a worker serves their tasks
_last_app = [None]          # a weak reference to the latest one (the "current app")
_shared_tasks = []          # (fn, options) of every @shared_task, given to each app


class _RequestSlot:
    """The running task's _Request, as _request.current: a context variable, so that each
    thread and each coroutine task of a worker process sees its own."""

    __slots__ = ()
    _var = contextvars.ContextVar("litequeue_request", default=None)
    current = property(lambda self, get=_var.get: get(),
                       lambda self, value, set_=_var.set: set_(value) and None)


_request = _RequestSlot()
_set_request = _RequestSlot._var.set        # the worker's hot path sets it directly


class _TaskLogFilter(logging.Filter):
    """Gives each record logged while a task runs Celery's task_name and task_id, which
    the worker's log lines begin with (``tasks.add[2b0e...]: adding 2 and 2``); the
    message itself stays the task's, as Celery's."""

    def filter(self, record):
        request = _request.current
        if request is not None and request.id is not None:
            record.task_name = request.shadow or request.task
            record.task_id = request.id
        return True


class _WorkerFormatter(logging.Formatter):
    """The worker's log lines; one a task logged says which task and id (Celery's
    worker_task_log_format)."""

    _PLAIN = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    _TASK = "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: " \
        "%(message)s"

    def __init__(self):
        super().__init__(self._PLAIN)
        self.task = logging.Formatter(self._TASK)

    def format(self, record):
        if getattr(record, "task_id", None) is not None:
            return self.task.format(record)
        return super().format(record)


def get_task_logger(name):
    """A logger for task code, as Celery's ``celery.utils.log.get_task_logger``: what a
    running task logs through it says which task and id logged it."""
    task_logger = logging.getLogger(name)
    if not any(isinstance(f, _TaskLogFilter) for f in task_logger.filters):
        task_logger.addFilter(_TaskLogFilter())
    return task_logger


async def _with_request(coro, request):
    """Await a task's coroutine with request as the task's _request.current."""
    _request.current = request
    return await coro


def _await_here(coro):
    """Run a coroutine to its end from sync code (eager mode): on a new event loop, in a
    thread of its own if this thread already runs one."""
    import asyncio      # here and below: only what runs coroutines pays for the import
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}

    def run():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc
    thread = threading.Thread(target=run, name="litequeue-eager")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Request:
    """What a bound task sees as self.request while it runs: Celery's fields. A run keeps
    what they are made of (its queue, limits, expiry and call options) and the fields
    are read from it only when a task asks, so a run pays nothing for them."""

    __slots__ = ("id", "args", "kwargs", "retries", "attempt", "task", "hostname", "worker",
                 "parent_id", "root_id", "group", "meta_writer", "progress", "entering",
                 "queue", "priority", "limits", "expires_at", "options", "ignore_result",
                 "__dict__")
    # Celery's other fields and their defaults. called_directly: a plain call, task(...),
    # not a worker's or eager run; is_eager: an eager run (apply(), task_always_eager).
    called_directly = False
    is_eager = False
    reply_to = origin = None            # no reply queue, no producer node name here
    callbacks = errbacks = chain = chord = None     # kept in the database, not the request
    group_index = None
    properties = None
    utc = True
    logfile = loglevel = None
    stamps = property(lambda self: self.options.get("stamps") if self.options else None)
    stamped_headers = property(
        lambda self: self.options.get("stamped_headers") if self.options else None)
    replaced_task_nesting = 0
    name = property(lambda self: self.task)     # the task's name, as Celery's Request has it

    def __init__(self, id=None, args=(), kwargs=None, retries=0, attempt=0, name=None,
                 hostname=None, worker=None, parent_id=None, root_id=None, group=None,
                 meta_writer=None, queue=None, priority=None, limits=(None, None),
                 expires_at=None, options=None, ignore_result=False, **fields):
        if fields:
            self.__dict__.update(fields)
        self.entering = None               # see _entry()
        self.id = id
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.retries = retries
        self.attempt = attempt
        self.task = name
        self.hostname = hostname
        self.worker = worker
        self.parent_id = parent_id
        self.root_id = root_id or id
        self.group = group
        self.meta_writer = meta_writer     # (storage, seq, attempt) in a worker, else None
        self.progress = None
        self.queue, self.priority = queue, priority    # where the row waited
        self.limits = limits               # (hard, soft) time limits in seconds
        self.expires_at = expires_at       # unix time, or None
        self.options = options             # the call's _CALL_OPTIONS, or None
        # apply_async(ignore_result=...) of this call, else the task's own.
        self.ignore_result = options.get("ignore_result", ignore_result) if options \
            else ignore_result

    # The call's options (apply_async): headers, argsrepr and kwargsrepr (what logs and the
    # dashboard show instead of the arguments), shadow (the name logs show).
    headers = property(lambda self: self.options.get("headers") if self.options else None)
    argsrepr = property(lambda self: self.options.get("argsrepr") if self.options else None)
    kwargsrepr = property(
        lambda self: self.options.get("kwargsrepr") if self.options else None)
    shadow = property(lambda self: self.options.get("shadow") if self.options else None)
    # The ETA a countdown or eta gave the call, ISO 8601 text as Celery's (else None).
    eta = property(lambda self: self.options.get("eta") if self.options else None)
    correlation_id = property(lambda self: self.id)        # the task id, as Celery sets it

    def __getattr__(self, name):
        """A header the call gave (apply_async(headers=...)) reads as a field, as in
        Celery, whose message headers are the request's fields."""
        if name.startswith("__") or name in _Request.__slots__ or name == "headers":
            raise AttributeError(name)
        headers = self.headers
        if headers and name in headers:
            return headers[name]
        raise AttributeError(f"'Context' object has no attribute {name!r}")
    timelimit = property(lambda self: self.limits)
    time_limit = property(lambda self: self.limits[0])
    soft_time_limit = property(lambda self: self.limits[1])

    @property
    def delivery_info(self):
        """Where the task waited, in Celery's shape (None outside a worker)."""
        if self.queue is None:
            return None
        return {"exchange": "", "routing_key": self.queue, "priority": self.priority,
                "redelivered": self.attempt > 1}

    @property
    def expires(self):
        """When the task expires, ISO 8601 text as Celery's messages carry it, or None."""
        if not _is_time(self.expires_at):
            return None
        return _dt.datetime.fromtimestamp(self.expires_at, _dt.timezone.utc).isoformat()

    @property
    def taskset(self):
        """Celery's old name of group."""
        return self.group

    def report(self, blob):
        """update_state() of this call: coalesced writes in a worker, nothing inline."""
        self.last_meta = blob           # what an Ignore after it keeps (_concluded_failure)
        if self.meta_writer is None:
            return
        if self.progress is None:
            self.progress = _ProgressWriter(*self.meta_writer)
        self.progress.report(blob)

    def close(self):
        if self.progress is not None:
            self.progress.close()


class _ProgressWriter:
    """Writes a running task's update_state() reports at most every _PROGRESS_INTERVAL
    seconds: a report inside the interval is kept, and a timer writes the latest one when
    the interval ends, so the last report is never lost and a tight loop of reports costs
    a few writes per second. The lock keeps the timer's write and the task's end apart
    (they share the worker's connection)."""

    def __init__(self, storage, seq, attempt):
        self.storage, self.seq, self.attempt = storage, seq, attempt
        self.lock = threading.Lock()
        self.last = 0.0
        self.pending = None
        self.timer = None
        self.closed = False

    def report(self, blob):
        with self.lock:
            self.pending = blob
            wait = self.last + _PROGRESS_INTERVAL - time.monotonic()
            if wait <= 0:
                self._write()
            elif self.timer is None:
                self.timer = threading.Timer(wait, self._flush)
                self.timer.daemon = True
                self.timer.start()

    def _flush(self):
        with self.lock:
            self.timer = None
            if self.pending is not None and not self.closed:
                self._write()

    def _write(self):
        blob, self.pending = self.pending, None
        self.last = time.monotonic()
        try:
            self.storage.set_meta(blob, seq=self.seq, attempt=self.attempt)
        except Exception as exc:        # progress is advisory: never fail the task for it
            logger.warning("update_state of task row %d not stored: %s", self.seq, exc)

    def close(self):
        """The task ended: a report not yet written no longer matters."""
        with self.lock:
            self.closed = True
            self.pending = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None


# The signals sent around each task run; _TASK_WATCHERS[0]: does any have a handler?
_TASK_SIGNAL_NAMES = ("task_received", "task_prerun", "task_postrun", "task_success",
                      "task_failure", "task_retry")
_TASK_WATCHERS = [False]


class Signal:
    """A hook point with Celery's name and keyword arguments:
    ``litequeue.signals.task_failure.connect(handler)``. Handlers are called as
    handler(sender=..., signal=..., **kwargs); one that raises is logged and never breaks
    the task or the worker."""

    def __init__(self, name):
        self.name = name
        self.receivers = []

    def __repr__(self):
        return f"<Signal: {self.name}>"

    def connect(self, receiver=None, sender=None, weak=False, dispatch_uid=None, **kwargs):
        """Connect a handler (also usable as a decorator, with or without arguments).
        sender limits it to one sender (a task or its name)."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender, dispatch_uid=dispatch_uid)
        key = dispatch_uid if dispatch_uid is not None else receiver
        if not any(k == key and s == sender for k, _, s in self.receivers):
            self.receivers.append((key, receiver, sender))
        self._count()
        return receiver

    def disconnect(self, receiver=None, sender=None, dispatch_uid=None):
        key = dispatch_uid if dispatch_uid is not None else receiver
        self.receivers = [r for r in self.receivers if not (r[0] == key and r[2] == sender)]
        self._count()

    def _count(self):
        """Keep _TASK_WATCHERS[0] true while any per-run signal has a handler, so a
        worker checks one flag per task instead of five lists."""
        if self.name in _TASK_SIGNAL_NAMES:
            _TASK_WATCHERS[0] = any(getattr(signals, n).receivers for n in _TASK_SIGNAL_NAMES)

    def send(self, sender, **named):
        """Call every handler; returns [(handler, its return value or exception)]."""
        responses = []
        for _, receiver, only in list(self.receivers):
            if only is not None and only is not sender and only != sender and \
                    only != getattr(sender, "name", None):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("signal %s handler %r raised", self.name, receiver)
                responses.append((receiver, exc))
        return responses

    send_robust = send


signals = types.ModuleType(f"{__name__}.signals", "litequeue's signals, with Celery's names.")
for _name in ("before_task_publish", "after_task_publish", "task_received", "task_prerun",
              "task_postrun",
              "task_success", "task_failure", "task_retry", "task_revoked", "worker_ready",
              "worker_shutdown", "worker_process_init"):
    setattr(signals, _name, Signal(_name))
sys.modules[signals.__name__] = signals      # so `from litequeue.signals import ...` works


class ExceptionInfo:
    """What hooks and signals get as einfo (Celery's ExceptionInfo, reduced)."""

    def __init__(self, exc, traceback_text):
        self.exception = exc
        self.type = type(exc)
        self.traceback = traceback_text

    def __str__(self):
        return self.traceback or repr(self.exception)


# One run of a task, as the worker and eager mode both see it: a worker child
# (_Child._begin and _Child._finish, whichever runner runs the task in between) and
# LiteQueue._run_eagerly call the same three steps, so a handler sees the same calls with
# the same arguments from either:
#   _task_started(task, request, args, kwargs)    task_received (worker), task_prerun
#   ... the task runs ...
#   _conclude(task, request, args, kwargs, value, exc, tb, ...)  its state, then through
#     _task_ended: on_success/on_retry/on_failure and task_success/task_retry/
#     task_failure, then after_return and task_postrun, in Celery's order.
# What one run came to: state; value, what it returned, or the error that ended it;
# stored, the value as msgpack or the error encoded; traceback text; and for a RETRY the
# time it runs again. errors is the error history as stored (None: unchanged).
_Ending = collections.namedtuple("_Ending", "state value stored traceback eta errors")


def _task_started(task, request, args, kwargs):
    """task_received (the worker took the row: no message is received here), the task's
    before_start hook, then task_prerun, with the running request set (as Celery's
    order). A hook that raises is logged."""
    if _TASK_WATCHERS[0] and not request.is_eager:
        signals.task_received.send(sender=None, request=request)
    if "before_start" in task._hooked:
        try:
            task.before_start(request.id, args, kwargs)
        except Exception:
            logger.exception("Task %s[%s]: its before_start hook raised", task.name,
                             request.id)
    if _TASK_WATCHERS[0]:
        signals.task_prerun.send(sender=task, task_id=request.id, task=task, args=args,
                                 kwargs=kwargs)


def _task_ended(task, request, args, kwargs, state, value, exc, tb, reason=None):
    """The hooks and signals of a run that ended in state, with Celery's arguments and in
    its order: value is what the task returned; exc the error that ended it (for a retry,
    the one it is retried for), tb its traceback text. Whatever they raise is logged:
    neither the outcome nor the caller depends on them."""
    if not (task._hooked or _TASK_WATCHERS[0]):
        return
    task_id = request.id
    einfo = ExceptionInfo(exc, tb) if exc is not None else None
    retval = value if exc is None else exc

    def hook(name, *hook_args):
        if task._hooked:
            try:
                getattr(task, name)(*hook_args)
            except Exception:
                logger.exception("Task %s[%s]: its %s hook raised", task.name, task_id, name)
    if state == SUCCESS:
        hook("on_success", value, task_id, args, kwargs)
        signals.task_success.send(sender=task, result=value)
    elif state == RETRY:
        hook("on_retry", exc, task_id, args, kwargs, einfo)
        signals.task_retry.send(sender=task, request=request, reason=reason or exc,
                                einfo=einfo)
    else:
        hook("on_failure", exc, task_id, args, kwargs, einfo)
        signals.task_failure.send(sender=task, task_id=task_id, exception=exc, args=args,
                                  kwargs=kwargs, traceback=tb, einfo=einfo)
    if state != RETRY:                   # Celery's after_return follows the last run only
        hook("after_return", state, retval, task_id, args, kwargs, einfo)
    signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=args,
                              kwargs=kwargs, retval=retval, state=state)


def _conclude(task, request, args, kwargs, value, exc, tb, *, stored_max, default_max,
              errors, started):
    """The _Ending of a run that returned value or raised exc (traceback text tb), after
    its hooks and signals. A raising run is retried or failed by _failure_decision
    (stored_max, default_max and errors: see there); a value msgpack cannot encode fails
    it; started (time.monotonic()) times the log line of a success."""
    if exc is None and type(value) is types.CoroutineType:
        value.close()
        exc = TypeError(f"{request.task} returned a coroutine: define it with async def so "
                        "that the worker awaits it")
    if exc is not None:
        return _concluded_failure(task, request, args, kwargs, exc, tb, stored_max,
                                  default_max, errors)
    try:
        stored = _pack(value)
    except Exception as bad:   # unencodable, or a value whose own methods raise
        error = SerializationError(f"result of {request.task} cannot be encoded as msgpack: "
                                   f"{type(bad).__name__}: {_saferepr(bad)}")
        logger.error("Task %s[%s] failed: %s", request.task, request.id, error)
        tb = _traceback.format_exc()
        _task_ended(task, request, args, kwargs, FAILURE, None, error, tb)
        return _Ending(FAILURE, error, _encode_error(error), tb, None, None)
    if logger.isEnabledFor(logging.INFO):
        logger.info("Task %s[%s] succeeded in %.6fs: %s", request.shadow or request.task,
                    request.id,
                    time.monotonic() - started, _saferepr(value))
    if task._hooked or _TASK_WATCHERS[0]:
        _task_ended(task, request, args, kwargs, SUCCESS, value, None, None)
    return _Ending(SUCCESS, value, stored, None, None, None)


def _concluded_failure(task, request, args, kwargs, exc, tb, stored_max, default_max,
                       errors):
    """_conclude for a run that raised: RETRY or FAILURE, logged (IGNORED or REJECTED,
    or RETRY a second later for a requeue, for Celery's Ignore and Reject)."""
    name, task_id, retries = request.shadow or request.task, request.id, request.retries
    now = time.time()
    if isinstance(exc, _Superseded):        # another run holds the row: record nothing
        logger.warning("Task %s[%s] stopped: %s", name, task_id, exc)
        return _Ending(_REPLACED, exc, None, None, None, None)
    if isinstance(exc, _Suspended):
        logger.info("Task %s[%s] waits: %s", name, task_id, exc.shown or exc.waits)
        if _TASK_WATCHERS[0]:      # task_prerun was sent: its pair, as for any run's end
            signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=args,
                                      kwargs=kwargs, retval=None, state=WAITING)
        return _Ending(_SUSPENDED, exc, None, None, exc.eta, None)
    if isinstance(exc, _Replaced):
        logger.info("Task %s[%s] %s", name, task_id, exc)
        return _Ending(_REPLACED, exc, None, None, None, None)
    if isinstance(exc, (Ignore, Reject)):
        requeue = isinstance(exc, Reject) and bool(exc.requeue)
        state = RETRY if requeue else IGNORED if isinstance(exc, Ignore) else REJECTED
        logger.info("Task %s[%s] %s: %s", name, task_id, "rejected, requeued" if requeue
                    else state.lower(), _saferepr(exc))
        kept = None if requeue else getattr(request, "last_meta", None)
        return _Ending(state, exc, kept, None, now + 1.0 if requeue else None, None)
    try:
        state, cause, eta, history, budget = _failure_decision(
            task, exc, task_id=task_id, retries=retries, attempt=request.attempt,
            stored_max=stored_max, default_max=default_max, errors=errors, now=now,
            call=(args, kwargs))
    except Exception as bad_request:   # e.g. self.retry(countdown="soon")
        logger.error("Task %s[%s] failed: %s", name, task_id, _saferepr(bad_request))
        _task_ended(task, request, args, kwargs, FAILURE, None, bad_request, tb)
        return _Ending(FAILURE, bad_request, _encode_error(bad_request), tb, None, None)
    if state == RETRY:
        logger.warning("Task %s[%s] retry %d/%s in %.2fs: %s: %s", name, task_id,
                       retries + 1, "unbounded" if budget is None else budget, eta - now,
                       type(cause).__name__, _saferepr(cause))
    elif task.throws and isinstance(cause, tuple(task.throws)):     # expected: at INFO
        logger.info("Task %s[%s] raised expected: %s: %s", name, task_id,
                    type(cause).__name__, _saferepr(cause))
    else:
        logger.error("Task %s[%s] raised %s: %s\n%s", name, task_id, type(cause).__name__,
                     _saferepr(cause), _clipped((tb or "").rstrip(), _LOG_TRACEBACK_MAX))
    reason = None
    if state == RETRY:       # what Celery's task_retry gets: "Retry in 0.1s: OSError(...)"
        asked = exc if isinstance(exc, Retry) else None
        reason = Retry(exc=cause if cause is not exc else None,
                       countdown=asked.countdown if asked is not None and
                       asked.countdown is not None else round(eta - now, 3))
    _task_ended(task, request, args, kwargs, state, None, cause, tb, reason)
    # A plain self.retry() (no exc) keeps no error: .result reads None meanwhile, as Celery.
    stored = None if isinstance(cause, Retry) else _encode_error(cause)
    return _Ending(state, cause, stored, tb, eta, _pack(history))


def _current_app():
    """The app a handle or signature made without one uses: the latest live LiteQueue."""
    app = _last_app[0]() if _last_app[0] is not None else None
    if app is None:
        raise ConfigurationError("no LiteQueue app exists in this process: create one, or "
                                 "pass app=")
    return app


class _Proxy:
    """A name that stands for an object found when it is used: Celery's current_app and
    current_task. It is false when that object is None (no task runs)."""

    __slots__ = ("_find",)

    def __init__(self, find):
        object.__setattr__(self, "_find", find)

    def __getattr__(self, name):
        return getattr(self._find(), name)

    def __setattr__(self, name, value):
        setattr(self._find(), name, value)

    def __bool__(self):
        try:
            return self._find() is not None
        except ConfigurationError:       # no app at all
            return False

    def _get_current_object(self):
        return self._find()

    def __call__(self, *args, **kwargs):
        return self._find()(*args, **kwargs)

    def __eq__(self, other):
        return self._find() == other

    __hash__ = None

    def __repr__(self):
        return repr(self._find())


def _running_task():
    """The Task whose request is the current one (a worker's run, an eager one or a
    plain call), or None."""
    request = _request.current
    name = getattr(request, "task", None)
    for app in list(_apps):
        if name in app.tasks:
            return app.tasks[name]
    return None


current_app = _Proxy(lambda: _current_app())
current_task = _Proxy(_running_task)


def shared_task(fn=None, **options):
    """A task for library code that names no app: every LiteQueue of the process (made
    before or after) registers it. Calling or queueing it uses the latest app."""
    def register(func):
        _shared_tasks.append((func, options))
        for app in list(_apps):
            app.task(**options)(func)
        return _SharedTask(options.get("name") or _task_name_for(func)[0])
    if fn is not None:
        return register(fn)
    return register


class _SharedTask:
    """The handle @shared_task returns: the task of that name in the current app."""

    def __init__(self, name):
        self.name = name

    def _task(self):
        return _current_app().tasks[self.name]

    def __getattr__(self, attr):
        if attr.startswith("__"):        # introspection (copy, pytest, pickle) finds none
            raise AttributeError(attr)
        return getattr(self._task(), attr)

    def __call__(self, *args, **kwargs):
        return self._task()(*args, **kwargs)

    def __repr__(self):
        return f"<@shared_task: {self.name}>"


def _module_name(name, file=None):
    """A module's importable name: a script run as __main__ goes by its file's name, so a
    worker can import what it defines."""
    if name == "__main__":
        file = file or getattr(sys.modules.get("__main__"), "__file__", None)
        if file:
            return os.path.splitext(os.path.basename(file))[0]
    return name


def _task_name_for(fn):
    module = _module_name(fn.__module__)
    return f"{module}.{fn.__qualname__}", module


def _unknown_task_message(name, known):
    close = difflib.get_close_matches(name, [n for n in known if len(n) <= _NAME_MAX], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"unknown task {_saferepr(name, 300)}: no worker or producer of this database has registered "
            f"it{hint}")


# ---------------------------------------------------------------------------
# Workflows: durable steps, sleeps, messages and events
# A workflow is a task whose function runs again from the top after each wait. Each step
# it calls is a row of steps, in call order: a run that finds a step recorded takes its
# outcome at once, and a run that must wait ends (_Suspended), freeing its process; what
# it waits for queues it again, in the transaction that records that end.
# ---------------------------------------------------------------------------

_workflow_run = contextvars.ContextVar("litequeue_workflow", default=None)


def _workflow_function(app, fn):
    """What a workflow's task runs: fn under a _WorkflowRun when a worker runs it, fn
    itself inline (eager mode, a direct call, or from another workflow's run)."""
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"workflow {fn.__qualname__} is a coroutine function: a "
                                 "workflow is a plain function (its steps may be "
                                 "coroutine tasks)")

    @functools.wraps(fn)
    def workflow(*args, **kwargs):
        request = _request.current
        if request is None or request.is_eager or _workflow_run.get() is not None:
            return fn(*args, **kwargs)
        run = _WorkflowRun(app, request)
        token = _workflow_run.set(run)
        try:
            return fn(*args, **kwargs)
        finally:
            _workflow_run.reset(token)
            run.ring()
    return workflow


def _wait_seconds(what, value):
    try:
        return float(_check_number(0.0, _WAIT_MAX)(value))
    except ValueError as exc:
        raise ValueError(f"{what} must be {exc}, not {_saferepr(value)}") from None


def _topic_text(topic):
    return "" if topic is None else _checked_text("topic", topic, _QUEUE_MAX)


def _running_workflow(what):
    run = _workflow_run.get()
    if run is None:
        raise LitequeueError(f"{what} acts for the workflow that calls it: call it in a "
                             "workflow that a worker runs")
    return run


def _refuse_canvas_step():
    """A canvas queued from a workflow (not from its step functions) is refused: it is
    not a step, and each run would queue it again."""
    run = _workflow_run.get()
    if run is not None and run.in_step is None:
        raise LitequeueError("a canvas (chain, group, chord, a link) is not a workflow "
                             "step: in a workflow, queue each task with delay() and get() "
                             "their results")


def _step_outcome(step, workflow="?"):
    """(value, exception) of an ended step, as its first run gave them (CorruptResult
    for an outcome another client wrote that cannot be read)."""
    if step.state == SUCCESS:
        return (None if step.result is None else
                _unpack_stored(step.result, f"outcome of step {step.idx}", workflow)), None
    if step.state in (REVOKED, EXPIRED):
        return None, TaskRevokedError(step.state.lower())
    return None, _rebuild_error(step.result, step.traceback)


def _retry_wait(retries, backoff, backoff_max, delay):
    """Seconds before a step function's retry number `retries` (from 0): Celery's
    retry_backoff (1, 2, 4... seconds, or that factor), else a fixed delay."""
    if backoff:
        factor = 1 if backoff is True else backoff
        return min(factor * 2 ** retries, backoff_max)
    return delay


class _StepFunction:
    """An @app.step function. Inside a workflow's run, a call is a step: its outcome (a
    value, or the exception it raised) is recorded when it ends, and a later run of the
    workflow gets that outcome without calling it again. Elsewhere it is a plain call.
    retry: (autoretry_for, max_retries, retry_backoff, retry_backoff_max,
    default_retry_delay), retried in the same run."""

    def __init__(self, fn, name, retry):
        functools.update_wrapper(self, fn)
        self.fn, self.name, self.retry = fn, name, retry

    def __call__(self, *args, **kwargs):
        run = _workflow_run.get()
        if run is None or run.in_step is not None:     # not a step: a plain call
            return self.attempts(args, kwargs)
        return run.call(self, args, kwargs)

    def attempts(self, args, kwargs):
        """Call fn, retrying as the step's options say; the last exception goes up."""
        autoretry_for, max_retries, backoff, backoff_max, delay = self.retry
        retries = 0
        while True:
            try:
                return self.fn(*args, **kwargs)
            except autoretry_for as exc:
                if retries >= max_retries:
                    raise
                logger.warning("step %s raised %s: %s; retry %d/%d", self.name,
                               type(exc).__name__, _saferepr(exc), retries + 1, max_retries)
                time.sleep(_retry_wait(retries, backoff, backoff_max, delay))
                retries += 1


class _Workflows:
    """LiteQueue's workflow API (a base of LiteQueue)."""

    def workflow(self, fn=None, **options):
        """Register a durable workflow (``@app.workflow``, any task option): a task whose
        steps (tasks it queues and get()s, @app.step calls, app.sleep, recv, send,
        set_event) are recorded, so that after a wait or a crash it runs again from the
        top and each recorded step gives its outcome at once."""
        def register(func):
            return self.task(_workflow_function(self, func), **options)
        return register if fn is None else register(fn)

    def step(self, fn=None, *, name=None, autoretry_for=(), max_retries=3,
             retry_backoff=False, retry_backoff_max=600, default_retry_delay=0):
        """A step function of workflows: ``@app.step`` or ``@app.step(autoretry_for=...)``.
        In a workflow, its outcome is recorded, and a later run of the workflow gets it
        without calling it again; a failure in autoretry_for is retried in the same run
        (Celery's retry_backoff, retry_backoff_max and default_retry_delay)."""
        retry = (tuple(autoretry_for), int(max_retries), retry_backoff,
                 float(retry_backoff_max), float(default_retry_delay))
        register = lambda func: _StepFunction(func, name or _task_name_for(func)[0], retry)
        return register if fn is None else register(fn)

    def sleep(self, seconds):
        """In a workflow, a durable sleep: its run ends, no process is held, and it goes
        on at the sleep's end, also after a restart. Elsewhere, time.sleep."""
        seconds = _wait_seconds("app.sleep()'s seconds", seconds)
        run = _workflow_run.get()
        if run is None or run.in_step is not None:     # in a step function: it blocks
            time.sleep(seconds)
        else:
            run.sleep(seconds)

    def recv(self, topic=None, timeout=None):
        """In a workflow: the oldest message sent to it on topic (app.send), waiting for
        one (durably: no process is held) for up to timeout seconds (None: for ever);
        None once timeout has passed."""
        run = _running_workflow("app.recv()")
        if timeout is not None:
            timeout = _wait_seconds("app.recv()'s timeout", timeout)
        return run.recv(_topic_text(topic), timeout)

    def send(self, workflow_id, message, topic=None):
        """Send message (any msgpack value) to a workflow, for its app.recv(topic). From a
        workflow, the send is a step: it happens once."""
        workflow_id = _checked_text("workflow_id", workflow_id, _ID_MAX)
        body, topic, run = _pack(message), _topic_text(topic), _workflow_run.get()
        if run is None or run.in_step is not None:     # not a step: sent at each call
            woke = self._storage().send_message(workflow_id, topic, body, time.time())
        else:
            woke = run.send(workflow_id, topic, body)
        if woke:
            self._work_bell.ring()

    def set_event(self, key, value):
        """In a workflow: set its event key to value (any msgpack value), for
        AsyncResult(workflow id).get_event(key) in any process."""
        run = _running_workflow("app.set_event()")
        run.set_event(_checked_text("event key", key, _QUEUE_MAX), _pack(value))
        self._waiter_bell().ring_tasks([run.id])

    def _waiter_bell(self):
        if "_done_bell" not in self.__dict__:
            self._done_bell = _Doorbell(self._side, "done", keep=False)
        return self._done_bell


class _WorkflowRun:
    """One run of a workflow's function: the steps it calls, in order, each taken from
    its record when an earlier run made one, else done and recorded. Every write is
    fenced by the claim this run holds (_Superseded once another run holds the row)."""

    def __init__(self, app, request):
        self.app, self.id = app, request.id
        self.fence = {"workflow": request.id, "attempt": request.attempt}
        self.queue = request.queue      # the queue this run's process claimed it from
        self.storage = app._storage()
        self.recorded = {step.idx: step for step in self.storage.steps_of(self.id)}
        self.children = {step.child: step.idx for step in self.recorded.values()
                         if step.child is not None}
        self.next = 0
        self.in_step = None        # the step function running: steps do not nest
        self.unrung = {}           # task steps queued, not yet rung for: {id: (bell, own)}

    # This process's runs with task steps not yet rung for (see ring), since when (a
    # monotonic time), and the steps its next commit is expected to claim.
    unrung_runs = set()
    unrung_since = None
    expected = set()

    def ring(self):
        """Ring for the task steps queued since the last ring. A step task is not rung for
        when it is queued: if the run then waits for it alone, the process that runs the
        workflow claims it in the commit that suspends the run, and a woken sibling would
        only race it for the row and the write lock (if that commit claims other rows
        instead, the process rings then: take_expected). Any other next move rings, and
        so does the worker's watch thread once a step has waited 10 ms unrung (ring_late):
        a step left to run beside slow code between two steps is not held back."""
        unrung, self.unrung = self.unrung, {}        # one swap: the watch thread rings too
        self._forget()
        for bell in {bell for bell, _ in unrung.values()}:
            bell.ring()

    def _forget(self):
        _WorkflowRun.unrung_runs.discard(self)
        if not _WorkflowRun.unrung_runs:
            _WorkflowRun.unrung_since = None

    @staticmethod
    def ring_late():
        """From another thread: ring for every run's unrung steps; True if there were."""
        runs = list(_WorkflowRun.unrung_runs)
        for run in runs:
            run.ring()
        return bool(runs)

    @staticmethod
    def take_expected():
        """The ids of the steps this process's next commit should claim, forgotten."""
        expected, _WorkflowRun.expected = _WorkflowRun.expected, set()
        return expected

    def _take(self, kind, name):
        """The next step's index and its record (None if it has none yet); raises
        WorkflowChanged if the record is of another step."""
        self.ring()
        if self.in_step is not None:
            raise LitequeueError(f"step function {self.in_step} called {kind} {name!r}: "
                                 "steps do not nest; call it from the workflow itself")
        idx = self.next
        self.next += 1
        step = self.recorded.get(idx)
        if step is not None and (step.kind, step.name) != (kind, name):
            raise WorkflowChanged(
                f"workflow {self.id}: its step {idx} was {step.kind} {step.name!r} when it "
                f"was recorded, and the code now calls {kind} {name!r} there: the "
                "workflow's code changed (see README: what a workflow may do between steps)")
        return idx, step

    def _record(self, idx, kind, name, **fields):
        self.storage.record_step(self.fence, {"idx": idx, "kind": kind, "name": name,
                                              **fields}, time.time())

    def queue_task(self, row, registry_row, bell):
        """A task queued by the workflow is a step; returns its row's id (on a replay,
        the recorded one, and nothing is queued). bell: what to ring for it (see ring)."""
        idx, step = self._take("task", row["name"])
        if step is not None:
            return step.child
        self.storage.queue_step_task(self.fence, {"idx": idx, "kind": "task",
                                                  "name": row["name"]},
                                     row, registry_row, time.time())
        self.children[row["id"]] = idx
        # (what to ring, whether this process can claim it: a PENDING row of its queue)
        self.unrung[row["id"]] = (bell, bell is self.app._work_bell and
                                  row["queue"] == self.queue)
        if _WorkflowRun.unrung_since is None:
            _WorkflowRun.unrung_since = time.monotonic()
        _WorkflowRun.unrung_runs.add(self)
        return row["id"]

    def owns(self, task_id):
        return task_id in self.children

    def await_task(self, task_id):
        """The ended step of a task this workflow queued; while it has not ended, the run
        ends here and the workflow waits for it."""
        idx = self.children[task_id]
        step = self.recorded.get(idx)           # ended when this run began: no read
        if step is None or step.state is None:
            step = self.storage.step_of(self.id, idx)
        if step is not None and step.state is not None:
            return step
        unrung = self.unrung
        if list(unrung) == [task_id] and unrung[task_id][1]:
            self.unrung = {}                 # claimed in the suspension's own commit
            self._forget()
            _WorkflowRun.expected.add(task_id)
        raise _Suspended(f"step:{idx}", shown=f"step {idx}, task {task_id}")

    def call(self, function, args, kwargs):
        """A step function's call: its recorded outcome, or its outcome now, recorded."""
        idx, step = self._take("step", function.name)
        if step is not None and step.state is not None:
            value, exc = _step_outcome(step, self.id)
            if exc is not None:
                raise exc
            return value
        self.in_step = function.name
        try:
            value = function.attempts(args, kwargs)
        except Exception as exc:
            self._record(idx, "step", function.name, state=FAILURE,
                         result=_encode_error(exc), traceback=_traceback.format_exc())
            raise
        finally:
            self.in_step = None
        try:
            blob = _pack(value)
        except Exception as bad:
            error = SerializationError(f"result of step {function.name} cannot be encoded as "
                                       f"msgpack: {type(bad).__name__}: {_saferepr(bad)}")
            self._record(idx, "step", function.name, state=FAILURE,
                         result=_encode_error(error))
            raise error from None
        self._record(idx, "step", function.name, state=SUCCESS, result=blob)
        return value

    def sleep(self, seconds):
        """A durable sleep: the run ends, and the workflow is due again at its end."""
        idx, step = self._take("sleep", "sleep")
        if step is not None and step.state is not None:
            return
        now = time.time()
        until = now + seconds if step is None else step.until
        if step is None:
            self._record(idx, "sleep", "sleep", until=until,
                         state=SUCCESS if until <= now else None)
            if until <= now:
                return
        elif until <= now:
            self.storage.end_step(self.fence, idx, SUCCESS, None, now)
            return
        raise _Suspended("sleep", eta=until, shown=f"step {idx}, sleep until "
                         f"{_from_unix(until).isoformat(timespec='milliseconds')}")

    def recv(self, topic, timeout):
        """The workflow's oldest message on topic, or None once timeout has passed (the
        run ends while it waits)."""
        idx, step = self._take("recv", topic)
        if step is not None and step.state is not None:
            return None if step.result is None else _unpack(step.result)
        now = time.time()
        body = self.storage.take_message(self.fence, {"idx": idx, "kind": "recv",
                                                      "name": topic}, step is not None, now)
        if body is not None:
            return _unpack(body)
        until = step.until if step is not None else \
            None if timeout is None else now + timeout
        if step is None:
            over = until is not None and until <= now
            self._record(idx, "recv", topic, until=until, state=SUCCESS if over else None)
            if over:
                return None
        elif until is not None and until <= now:
            self.storage.end_step(self.fence, idx, SUCCESS, None, now)
            return None
        raise _Suspended(f"recv:{topic}", eta=until,
                         shown=f"step {idx}, a message on topic {topic!r}")

    def send(self, workflow_id, topic, body):
        """A message to another workflow, as a step (sent once); True if it queued it."""
        idx, step = self._take("send", topic)
        if step is not None:
            return False
        return self.storage.send_message(workflow_id, topic, body, time.time(), self.fence,
                                         {"idx": idx, "kind": "send", "name": topic,
                                          "state": SUCCESS})

    def set_event(self, key, value):
        """Set one of the workflow's events, as a step (set once)."""
        idx, step = self._take("event", key)
        if step is None:
            self.storage.set_event(self.fence, {"idx": idx, "kind": "event", "name": key,
                                                "state": SUCCESS}, key, value, time.time())


# ---------------------------------------------------------------------------
# Results: AsyncResult, EagerResult, GroupResult
# What a caller holds for a queued task or group: its state, result and waiting.
# ---------------------------------------------------------------------------

# True in a worker's child process: a task that waits on another task's result holds a
# worker slot meanwhile, and when every slot waits, nothing runs what they wait for. So
# get() there raises, as Celery's does, unless told it may block.
_JOIN_BLOCKS = [False]
_WOULD_BLOCK = ("result.get() inside a task waits on another task while it holds a worker "
                "slot (when every slot waits, nothing runs): chain the tasks instead, or "
                "pass get(disable_sync_subtasks=False), or wait inside allow_join_result()")


@contextlib.contextmanager
def allow_join_result():
    """Let a task wait on another task's result (Celery's allow_join_result)."""
    before = _JOIN_BLOCKS[0]
    _JOIN_BLOCKS[0] = False
    try:
        yield
    finally:
        _JOIN_BLOCKS[0] = before


def _row_call(row):
    """(args, kwargs) of a task row as it runs: a link's or chord body's input first."""
    return _row_call_shown(row)[:2]


def _row_call_shown(row):
    """(args, kwargs, argsrepr, kwargsrepr) of a task row: _row_call's, and the reprs the
    call gave (None if not: the dashboard shows them instead of the arguments, so that
    secrets stay out). One decoding of the payload for all four."""
    try:
        args, kwargs, options = _unpack_call(row["payload"]) if row else ([], {}, {})
    except ValueError:
        return [], {}, None, None
    reprs = options.get("argsrepr"), options.get("kwargsrepr")
    waits = row.get("waits")
    if waits in ("link", "chord") and row["state"] != WAITING and row.get("input") is not None:
        try:
            args = [_unpack(row["input"]), *args]
        except Exception:
            pass
    return (args, kwargs, *reprs)


def _custom_state(row):
    """(state, meta) of a running task's last update_state(), or None."""
    blob = row.get("meta")
    if blob is None or row["state"] != STARTED:
        return None
    try:
        state, meta = _unpack(blob)
    except Exception:
        return None
    return (state, meta) if isinstance(state, str) else None


def _waited_out(row):
    """Whether get() is done waiting on a row: it ended (a running task's own
    update_state(FAILURE) does not end it), or it raised Ignore after setting SUCCESS or
    FAILURE itself, which Celery's get() takes as its outcome."""
    if row["state"] in (IGNORED, REJECTED):
        custom = _set_aside_state(row)
        return custom is not None and custom[0] in (SUCCESS, FAILURE)
    return row["state"] != STARTED and _visible_state(row) in _ENDED_STATES


def _meta_error(meta):
    """The exception a custom FAILURE's meta names (Celery's exc_type and exc_message
    keys), rebuilt only from a module already imported; else a RemoteError."""
    meta = meta if isinstance(meta, dict) else {}
    kind, message = str(meta.get("exc_type", "Exception")), meta.get("exc_message", "")
    message = message if isinstance(message, (list, tuple)) else [message]
    found = _imported_name(kind)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            return found(*message)
        except Exception:
            pass
    return RemoteError(kind, " ".join(map(str, message)))


def _set_aside_state(row):
    """(state, meta) of the last update_state() of a task that raised Ignore or Reject,
    which its row keeps as its result; None if it set none."""
    return _custom_state({"meta": row.get("result"), "state": STARTED}) \
        if row.get("result") else None


def _visible_state(row):
    """The row's state as Celery would show it: a task waiting for another reads
    PENDING, a running one its last update_state() state, and one still waiting past its
    expiry reads EXPIRED (a worker marks the row itself when it meets it)."""
    state = row["state"]
    if state == WAITING:
        state = PENDING
    elif state == STARTED and row.get("meta") is not None:
        custom = _custom_state(row)
        return custom[0] if custom else state
    expires = row.get("expires")
    if _is_time(expires) and state in (PENDING, SCHEDULED, RETRY) and expires <= time.time():
        return EXPIRED
    # Claimed after it expired: the worker ends it EXPIRED unrun, so it reads so already
    # (it read EXPIRED while it waited, and must not go back to STARTED meanwhile).
    started = row.get("started_at")
    if state == STARTED and _is_time(expires) and _is_time(started) and expires <= started:
        return EXPIRED
    return state


def _is_chord_wait(waits):
    """Is a row's `waits` column that of a chord's body (it waits for the header)?"""
    return isinstance(waits, str) and waits.startswith("chord")


def _stands_in(row):
    """Is this row our step before a chord's group body (not a task of the user's)?"""
    return bool(row) and row.get("name") == _GATHER and _is_chord_wait(row.get("waits"))


class AsyncResult:
    """The state and result of one task, read from the database."""

    # True when apply_async() of a unique task returned the task that already held its key
    # instead of queueing another.
    existing = False

    def __init__(self, id, app=None, parent=None):
        self.id = id
        self.app = app if app is not None else _current_app()
        self._row = None
        self._parent = parent

    def __repr__(self):
        return f"<AsyncResult: {self.id}>"

    def __str__(self):
        return str(self.id)

    @property
    def task_id(self):
        return self.id

    def maybe_throw(self, propagate=True, callback=None):
        """Raise the task's exception if it failed (and propagate); else nothing."""
        if propagate and self.failed():
            raise self.result
        if callback is not None:
            callback(self.id, self.result)

    def __eq__(self, other):
        """Equal to a result of the same id, or to the id itself (as Celery's)."""
        if isinstance(other, str):
            return other == self.id
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def _fetch(self):
        row = self._row
        if row is not None and row["state"] in _ENDED_STATES:
            return row
        self._row = row = self.app._storage().get_task(self.id)
        return row

    @property
    def state(self):
        """Celery's state: PENDING (also while it waits for its ETA or another task, and
        for an id nobody queued), STARTED, RETRY, SUCCESS, FAILURE or REVOKED (also once
        it expired), or a state the task set with update_state()."""
        state = self.detailed_state
        if state in (IGNORED, REJECTED):      # nothing recorded: its last update_state()
            custom = _set_aside_state(self._fetch())
            return custom[0] if custom else PENDING
        return _CELERY_STATE.get(state, state)

    status = state

    @property
    def detailed_state(self):
        """litequeue's finer state: PENDING, SCHEDULED (waiting for its ETA), STARTED,
        RETRY, SUCCESS, FAILURE, REVOKED, EXPIRED, or UNKNOWN (no such task: never queued,
        forgotten or pruned)."""
        row = self._fetch()
        return _visible_state(row) if row else UNKNOWN

    @property
    def name(self):
        row = self._fetch()
        return row["name"] if row else None

    task_name = name

    def _column(self, name):
        row = self._fetch()
        return row.get(name) if row else None

    @property
    def parent_id(self):
        """The id of the task that queued this one or that it follows (None: neither)."""
        return self._column("parent_id")

    @property
    def root_id(self):
        """The id of the first task of its workflow (its own id if it began one)."""
        return self._column("root_id") or (self.id if self._fetch() else None)

    @property
    def parent(self):
        """The result this one follows: the previous task of a chain, the task that
        queued it, or (for a chord's body) the header's GroupResult. Read from the
        database, so it works in any process."""
        if self._parent is not None:
            return self._parent
        row = self._fetch()
        if not row:
            return None
        if row.get("parent_id"):
            self._parent = AsyncResult(row["parent_id"], self.app)
            if row.get("waits") in ("link", "link_si"):
                if _stands_in(self._parent._fetch()):   # ours: see _without_gathering
                    self._parent = self._parent.parent
        elif isinstance(row.get("waits"), str) and row["waits"].startswith("chord"):
            group_id = self.app._storage().chord_of_body(self.id)
            self._parent = GroupResult.restore(group_id, app=self.app) if group_id else None
        return self._parent

    @property
    def children(self):
        """The tasks it queued while it ran and those that follow it (links, errbacks)."""
        return [AsyncResult(i, self.app) for i in self.app._storage().children(self.id)]

    def iterdeps(self, intermediate=False):
        """(parent, result) of this task and, breadth first, of its children's graph. A
        task that is not ready ends it with IncompleteStream unless intermediate."""
        queue, seen = collections.deque([(None, self)]), set()
        while queue:
            parent, node = queue.popleft()
            if node.id in seen:
                continue
            seen.add(node.id)
            yield parent, node
            if node.ready():
                queue.extend((node, child) for child in node.children)
            elif not intermediate:
                raise IncompleteStream(f"task {node.id} of the graph is not ready")

    def collect(self, intermediate=False, **kwargs):
        """(result, value) of each task of the graph iterdeps() walks, as Celery's."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    @property
    def graph(self):
        """The graph of this task and its children, as {result: [its children]}."""
        graph = {}
        for parent, node in self.iterdeps(intermediate=True):
            graph.setdefault(node, [])
            if parent is not None:
                graph.setdefault(parent, []).append(node)
        return graph

    def as_tuple(self, _above=None):
        """Celery's (id, parent) form: ((id, parent tuple or None), None). _above: the id
        of the result a group this one belongs to follows, given there, not here."""
        parent = self.parent
        if parent is None or parent.id == _above:
            return (self.id, None), None
        return (self.id, parent.as_tuple(_above)), None

    def _message(self, on_message, last):
        """get(on_message=...): call it with Celery's meta when the state or its meta
        changed since last; returns what it saw."""
        state, info = self.state, self.info
        seen = (state, repr(info))
        # Celery's result channel carries neither PENDING nor, by default, STARTED.
        if seen != last and state not in (PENDING, STARTED):
            on_message({"task_id": self.id, "status": state, "result": info,
                        "traceback": self.traceback, "children": [],
                        "date_done": self.date_done})
        return seen

    def _call(self):
        return _row_call(self._fetch())

    @property
    def args(self):
        """The positional arguments it ran (or will run) with: those it was queued with,
        after a parent's result or a chord's results once it has them."""
        return self._call()[0]

    @property
    def kwargs(self):
        return self._call()[1]

    @property
    def queue(self):
        return self._column("queue")

    @property
    def worker(self):
        return self._column("worker")

    @property
    def date_started(self):
        row = self._fetch()
        return _from_unix(row["started_at"]) if row else None

    def ready(self):
        """True once the task has finished, whatever the outcome."""
        return self.state in _ENDED_STATES

    def successful(self):
        return self.state == SUCCESS

    def failed(self):
        return self.state == FAILURE

    @property
    def result(self):
        """The return value; an exception instance if it failed; while it runs, the meta
        of its last update_state() (as Celery); else None until ready."""
        row = self._fetch()
        if row and row["state"] in (IGNORED, REJECTED):
            custom = _set_aside_state(row)
            return custom[1] if custom else None
        if row and row["state"] == STARTED and row.get("meta") is not None:
            custom = _custom_state(row)
            return custom[1] if custom else None
        if row and row["state"] == RETRY and row["result"] is not None:
            return _rebuild_error(row["result"], row["traceback"])   # retry()'s exc, as Celery
        if not row or row["state"] not in _ENDED_STATES or row["result"] is None:
            return None
        if row["state"] == SUCCESS:
            return _unpack_stored(row["result"], "result", self.id)
        return _rebuild_error(row["result"], row["traceback"])

    @property
    def info(self):
        """The result once ready; while running, the meta of its last update_state()."""
        row = self._fetch()
        if not row:
            return None
        if row["state"] in _ENDED_STATES or row["state"] in (RETRY, IGNORED, REJECTED):
            return self.result
        meta = _custom_state(row)
        return meta[1] if meta else None

    @property
    def traceback(self):
        """The worker's traceback text of a failure, else None."""
        row = self._fetch()
        return row["traceback"] if row else None

    @property
    def date_done(self):
        row = self._fetch()
        return _from_unix(row["finished_at"]) if row else None

    @property
    def retries(self):
        row = self._fetch()
        return row["retries"] if row else 0

    @property
    def errors(self):
        """Every failed attempt so far: dicts with type, message, time and attempt."""
        row = self._fetch()
        return _unpack_stored(row["errors"], "error history", self.id) \
            if row and row["errors"] else []

    def revoke(self, terminate=False):
        """Stop the task from running: a waiting task becomes REVOKED and never runs,
        even one a child has claimed but not begun.

        A running task is left to finish unless terminate is true; then its process is
        killed (and replaced) and the task is REVOKED. Returns True if it was revoked,
        False if it had finished (or, without terminate, begun).
        """
        counter = _RevokeCounter(self.app._side)
        locks = None
        try:
            locks = _Locks(self.app._side)
            follow = self.app._storage().revoke(
                self.id, terminate, time.time(), announce=counter.bump,
                progress=functools.partial(_progress, locks))
        finally:
            counter.close()
            if locks is not None:
                locks.close()
        self._row = None
        revoked = follow is not None
        if revoked:
            self.app._ring_follow_ups(follow)
            signals.task_revoked.send(sender=self.app.tasks.get(self.name) or self.name,
                                      request=_Request(self.id, name=self.name),
                                      terminated=terminate,
                                      signum=signal.SIGKILL if terminate else None,
                                      expired=False)
        if revoked and terminate:
            self.app._sched_bell.ring()                           # supervisors kill it
        return revoked

    def forget(self):
        """Delete the task and its result."""
        self.app._storage().forget(self.id)
        self._row = None

    def get(self, timeout=None, propagate=True, interval=None, disable_sync_subtasks=True,
            on_message=None, **_):
        """Wait until the task is ready and return its result.

        Raises the task's exception if it failed and propagate is true, TimeoutError when
        timeout (seconds) runs out, and TaskNotFound for an id nobody queued. Waits on the
        wake-up channel; interval caps the fallback poll for workers that cannot ring.
        on_message(meta) is called with Celery's meta dict as the state changes. Inside a
        task in a worker it raises RuntimeError unless disable_sync_subtasks is false
        (see _JOIN_BLOCKS). In a workflow, get() of a task it queued is a durable wait.
        """
        run = _workflow_run.get()
        if run is not None and run.owns(self.id):
            return self._step_ended(run.await_task(self.id), run.id, propagate)
        if disable_sync_subtasks and _JOIN_BLOCKS[0]:
            raise RuntimeError(_WOULD_BLOCK)
        waiting = self._waiting(timeout, interval)
        seen = None
        try:
            sleeper, wait = next(waiting)
            while True:
                if on_message is not None:
                    seen = self._message(on_message, seen)
                    wait = min(wait, _PROGRESS_INTERVAL)
                if sleeper is None:
                    time.sleep(wait)
                    rang = False
                else:
                    rang = bool(_wait_readable([sleeper], wait))
                sleeper, wait = waiting.send(rang)
        except StopIteration as done:
            if on_message is not None:
                self._message(on_message, seen)
            return self._ended(done.value, propagate)

    @staticmethod
    def _step_ended(step, workflow, propagate):
        """get()'s answer, in a workflow, for a task step that ended. One that raised
        Ignore or Reject gives the state it set before (update_state()), else None."""
        if step.state in (IGNORED, REJECTED):
            aside = _set_aside_state({"result": step.result})
            if aside is None or aside[0] == SUCCESS or not propagate:
                return None if aside is None else aside[1]
            raise _meta_error(aside[1])
        value, exc = _step_outcome(step, workflow)
        if exc is None:
            return value
        if propagate:
            raise exc
        return exc

    def get_event(self, key, timeout=None, interval=None):
        """The value of this workflow's event key (app.set_event), waiting for it to be
        set for up to timeout seconds (None: for ever; TimeoutError after)."""
        key = _checked_text("event key", key, _QUEUE_MAX)
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_max = interval or self.app.conf["worker_poll_interval"]
        storage, sleeper, bound, poll = self.app._storage(), None, False, _POLL_MIN
        try:
            while True:
                blob = storage.get_event(self.id, key)
                if blob is not None:
                    return _unpack_stored(blob, f"event {key!r}", self.id)
                if not bound:
                    bound, sleeper = True, self.app._waiter(self.id)
                    continue                    # read again after binding: no lost ring
                wait = poll
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(f"event {key!r} of {self.id} not set after "
                                           f"{timeout} s")
                if sleeper is None:
                    time.sleep(wait)
                elif _wait_readable([sleeper], wait):
                    sleeper.drain()
                poll = min(poll * 2, poll_max)
        finally:
            if sleeper is not None:
                sleeper.close()

    async def aget(self, timeout=None, propagate=True, interval=None):
        """get() for a coroutine: the event loop runs on while it waits (woken by the same
        wake-up channel, not by polling)."""
        import asyncio
        loop = asyncio.get_running_loop()
        waiting = self._waiting(timeout, interval)
        try:
            sleeper, wait = next(waiting)
            while True:
                rang = False
                if sleeper is None:
                    await asyncio.sleep(wait)
                else:
                    rung = loop.create_future()
                    loop.add_reader(sleeper.fileno(), lambda: rung.done() or rung.set_result(1))
                    try:
                        await asyncio.wait_for(rung, wait)
                        rang = True
                    except builtins.TimeoutError:
                        pass
                    finally:
                        loop.remove_reader(sleeper.fileno())
                sleeper, wait = waiting.send(rang)
        except StopIteration as done:
            return self._ended(done.value, propagate)

    def _waiting(self, timeout, interval):
        """The wait of get() and aget(): yields (wake-up socket or None, seconds) to sleep
        on, is sent whether the socket rang, and returns the ready row."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_max = interval or self.app.conf["worker_poll_interval"]
        row = self._fetch()
        sleeper = bound = None
        try:
            poll = _POLL_MIN
            # A running task's own update_state(FAILURE) does not end the wait.
            while row is None or not _waited_out(row):
                if row is None:
                    raise TaskNotFound(f"no task with id {self.id!r}")
                if bound is None:
                    # Bind before the next read, so a completion between them still rings.
                    sleeper = self.app._waiter(self.id)
                    bound = sleeper is not None
                    row = self._fetch()
                    continue
                wait = poll
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"task {self.id} not ready after {timeout} s "
                                           f"(state {row['state']})")
                    wait = min(wait, remaining)
                if (yield sleeper, wait):
                    sleeper.drain()
                else:
                    poll = min(poll * 2, poll_max)
                row = self._fetch()
        finally:
            if sleeper is not None:
                sleeper.close()
        return row

    def _ended(self, row, propagate):
        """get()'s answer for a ready row."""
        state = _visible_state(row)
        if state in (IGNORED, REJECTED):      # the state it set before Ignore, as Celery
            state, meta = _set_aside_state(row)
            if state == SUCCESS or not propagate:
                return meta
            raise _meta_error(meta)
        if state == SUCCESS:
            return self.result
        if state in (REVOKED, EXPIRED):
            if propagate:
                raise TaskRevokedError("terminated" if row.get("traceback") == _TERMINATE_NOTE
                                       else state.lower())
            return None
        exc = self.result
        if propagate and isinstance(exc, ChordError):
            raise self._dependency_cause(exc) from exc
        if propagate and exc is not None:
            raise exc
        return exc

    def _dependency_cause(self, error):
        """The header member's own exception a chord's ChordError names, which get()
        raises as Celery's does (on Redis); the ChordError if it cannot be read."""
        named = re.match(r"Dependency (\S+) raised ", str(error))
        if named is None:
            return error
        cause = AsyncResult(named.group(1), self.app).result
        return cause if isinstance(cause, BaseException) else error

    def wait(self, timeout=None, propagate=True, interval=None, disable_sync_subtasks=True):
        return self.get(timeout=timeout, propagate=propagate, interval=interval,
                        disable_sync_subtasks=disable_sync_subtasks)


class EagerResult(AsyncResult):
    """The result of a task run inline because task_always_eager is set."""

    def __init__(self, id, app, state, value, tb=None, parent=None, payload=None, name=None,
                 parent_id=None, root_id=None, retries=0, errors=None):
        super().__init__(id, app, parent)
        self._row = dict.fromkeys(_Storage._TASK_COLUMNS)     # a whole row, as a worker's
        now = time.time()
        self._row.update(id=id, state=state, traceback=tb, finished_at=now, retries=retries,
                         attempt=retries + 1, payload=payload, name=name, parent_id=parent_id,
                         root_id=root_id, errors=errors)
        if state == FAILURE and errors is None:   # the history a worker would keep
            self._row["errors"] = _pack([_error_entry(value, retries + 1, now)])
        self._value = value

    def _fetch(self):
        return self._row

    @property
    def result(self):
        return self._value

    info = result

    @property
    def children(self):
        return []

    def get(self, timeout=None, propagate=True, interval=None, disable_sync_subtasks=True):
        if self._row["state"] == FAILURE and propagate:
            raise self._value
        return self._value

    async def aget(self, timeout=None, propagate=True, interval=None):
        return self.get(timeout, propagate, interval)

    def forget(self):
        pass

    def revoke(self, terminate=False):
        """An eager task has already run: nothing to revoke."""
        return False


class ResultSet:
    """Several AsyncResults waited on together (Celery's ResultSet): get() gives their
    results in order."""

    def __init__(self, results, app=None, **_):
        self.results = list(results)
        self.app = app

    def __repr__(self):
        return f"<ResultSet: [{', '.join(r.id for r in self.results)}]>"

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    def __eq__(self, other):
        return type(other) is type(self) and other.results == self.results and \
            getattr(other, "id", None) == getattr(self, "id", None)

    __hash__ = None

    @property
    def children(self):
        return self.results

    def add(self, result):
        if result not in self.results:
            self.results.append(result)

    def discard(self, result):
        if result in self.results:
            self.results.remove(result)

    remove = discard

    def update(self, results):
        self.results.extend(r for r in results if r not in self.results)

    def clear(self):
        self.results[:] = []

    def ready(self):
        """True when every task has finished, whatever the outcome."""
        return all(r.ready() for r in self.results)

    def waiting(self):
        return not self.ready()

    def successful(self):
        """True when every task succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self):
        """True if any task failed."""
        return any(r.failed() for r in self.results)

    def completed_count(self):
        """How many tasks succeeded."""
        return sum(r.successful() for r in self.results)

    def _each(self, timeout, propagate, interval, disable_sync_subtasks):
        """Each task's result, in order, as it is ready; timeout (seconds) covers them all,
        including the time the caller spends between them."""
        if disable_sync_subtasks and _JOIN_BLOCKS[0]:
            raise RuntimeError(_WOULD_BLOCK)
        deadline = None if timeout is None else time.monotonic() + timeout
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield r, r.get(timeout=left, propagate=propagate, interval=interval,
                           disable_sync_subtasks=False)

    def get(self, timeout=None, propagate=True, interval=None, disable_sync_subtasks=True,
            **_):
        """Every task's result, in order; timeout (seconds) covers them all."""
        return [value for _, value in self._each(timeout, propagate, interval,
                                                 disable_sync_subtasks)]

    def join(self, timeout=None, propagate=True, interval=None, callback=None,
             disable_sync_subtasks=True, **_):
        """get(); with callback, callback(task id, value) for each as it is ready instead,
        the timeout covering the callbacks' own time too (as Celery's)."""
        if callback is None:
            return self.get(timeout, propagate, interval, disable_sync_subtasks)
        for result, value in self._each(timeout, propagate, interval, disable_sync_subtasks):
            callback(result.id, value)
        return None

    join_native = join

    def iterate(self, timeout=None, propagate=True, interval=None):
        """Each result, in order, as it is ready."""
        for _, value in self._each(timeout, propagate, interval, True):
            yield value

    def revoke(self, terminate=False):
        """Revoke every task; returns how many were revoked."""
        return sum(bool(r.revoke(terminate=terminate)) for r in self.results)

    def forget(self):
        for r in self.results:
            r.forget()


class _AppGroupResult:
    """app.GroupResult: GroupResult for one app (see LiteQueue.GroupResult)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, id=None, results=None, **_):
        if results is not None:
            return GroupResult(results, id=id, app=self.app)
        found = GroupResult.restore(id, app=self.app)
        if found is None:
            raise TaskNotFound(f"no group with id {id!r}")
        return found

    def restore(self, id, backend=None, app=None):
        return GroupResult.restore(id, app=app or self.app)


def result_from_tuple(r, app=None):
    """The AsyncResult or GroupResult of as_tuple()'s form (Celery's), as a task that
    returned a result object gives it."""
    app = app or _current_app()
    (task_id, parent), nodes = r
    if nodes is not None:
        return GroupResult([result_from_tuple(n, app) for n in nodes], id=task_id, app=app,
                           parent=parent and result_from_tuple(parent, app))
    return AsyncResult(task_id, app, parent=parent and result_from_tuple(parent, app))


class GroupResult(ResultSet):
    """The AsyncResults of a group, in the group's order, under the group's id."""

    def __init__(self, results, id=None, app=None, parent=None):
        super().__init__(results, app)
        self.id = id
        self.parent = parent

    def __repr__(self):
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def save(self, backend=None):
        """Its members already carry its id in the database: only an empty group (which
        has none) is stored here, so that restore() finds it."""
        if not self.results and self.id is not None:
            (self.app or _current_app())._storage().save_empty_group(self.id)
        return self

    def as_tuple(self, _above=None):
        """Celery's ((id, parent tuple or None), [member tuples]) form. What the group
        follows is its own parent, not its members' (each node appears once)."""
        parent = self.parent
        above = parent.id if parent is not None else _above
        mine = None if parent is None or parent.id == _above else parent.as_tuple(_above)
        return (self.id, mine), [r.as_tuple(above) for r in self.results]

    @classmethod
    def restore(cls, id, backend=None, app=None):
        """The GroupResult saved under id, read from the database (None if unknown)."""
        app = app or _current_app()
        members = app._storage().group_members(id)
        if members is None:
            return None
        results = [AsyncResult(m, app) for m in members]
        first = (results[0]._fetch() if results else None) or {}
        parent = None        # a group chained after a task follows it: Celery's .parent
        if first.get("parent_id") and first.get("waits") in ("link", "link_si"):
            parent = results[0].parent
        return cls(results, id=id, app=app, parent=parent)


# ---------------------------------------------------------------------------
# Admin: what the CLI and the dashboard do to a queue
# ---------------------------------------------------------------------------

class Admin:
    """What an operator does to a queue, for the CLI and the dashboard alike: counts,
    workers, schedules, listing tasks, queueing again, purging and revoking. Reads never
    take the write lock; ``app.admin`` is one."""

    def __init__(self, app):
        self.app = app

    def counts(self):
        """[(queue, state, count)], by queue and state."""
        return self.app._storage().counts()

    def workers(self):
        """Supervisors, each a dict with "alive" (None: cannot tell) and "children", each
        child with "running" and "reserved": [(task id, name, started_at)]. A reserved
        row was claimed (prefetched) with others and waits for the child to begin it; the
        child's lock file tells them apart (where it cannot be read, all are running)."""
        storage = self.app._storage()
        claimed = {}
        for worker_id, task_id, name, started, seq in storage.running():
            claimed.setdefault(worker_id, []).append((seq, (task_id, name, started)))
        rows = storage.workers()
        try:
            locks = _Locks(self.app._side, create=False)
        except SideDirectoryError:
            locks = None
        try:
            supervisors = [dict(w, alive=None if locks is None else not locks.dead(w["id"]))
                           for w in rows if not w["parent"]]
            children = {}
            for w in rows:
                if w["parent"]:
                    mine = claimed.get(w["id"], [])
                    begun = None if locks is None or not mine else locks.begun(w["id"])
                    children[w["id"]] = dict(
                        w, running=[t for seq, t in mine if begun is None or seq in begun],
                        reserved=[t for seq, t in mine if begun is not None and
                                  seq not in begun])
        finally:
            if locks is not None:
                locks.close()
        for sup in supervisors:
            sup["children"] = [child for w_id, child in children.items()
                               if child["parent"] == sup["id"]]
        return supervisors

    def tasks(self, state=None, queue=None, name=None, limit=50):
        """The newest tasks first (dicts of their columns, result and errors left
        encoded), filtered by state, queue and task name; at most limit of them."""
        return self.app._storage().list_tasks(state, queue, name, limit)

    def registry(self):
        """{task name: module} of every task a worker or producer has registered."""
        return {n: m for n, m in self.app._storage().registry().items() if isinstance(n, str)}

    def unregister(self, names):
        """Forget names in the registry (what `call`, send_task() and auto-import read):
        each of `names` is a task name, or a module whose every task is forgotten.
        UnknownTask, and nothing forgotten, when one matches nothing. Returns the task
        names forgotten. A worker or producer that defines one registers it again."""
        registry = self.registry()
        forget = set()
        for name in names:
            matched = {n for n, module in registry.items() if name in (n, module)}
            if not matched:
                raise UnknownTask(f"no registered task or task module named {name!r}")
            forget |= matched
        self.app._storage().unregister(sorted(forget))
        return sorted(forget)

    def schedules(self):
        """Every periodic task's row, with "error" set for a disabled one."""
        return self.app._storage().schedules()

    def requeue(self, task_id):
        """Queue a FAILURE, REVOKED or EXPIRED task again with a fresh retry budget;
        False if it is in another state. TaskNotFound for an unknown id."""
        if self.app.AsyncResult(task_id).detailed_state == UNKNOWN:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if not self.app._storage().requeue(task_id):
            return False
        self.app._work_bell.ring()
        return True

    def purge(self, queue=None):
        """Delete every waiting task (in one queue, or all); returns how many."""
        return self.app._storage().purge(queue)

    def pause(self, queue):
        """Pause a queue: no worker claims from it (within a claim) until resume(); its
        tasks wait. True if it was running."""
        return self.app._storage().pause(_checked_text("queue", queue, _QUEUE_MAX), time.time())

    def resume(self, queue):
        """Resume a paused queue; True if it was paused."""
        resumed = self.app._storage().resume(_checked_text("queue", queue, _QUEUE_MAX))
        if resumed:
            self.app._work_bell.ring()
        return resumed

    def paused(self):
        """{queue: unix time it was paused} of the paused queues."""
        return {q if isinstance(q, str) else _shown(q): t
                for q, t in self.app._storage().paused().items()}

    def rate_limits(self):
        """[{name, rate, interval, next_start}] of the rate-limited task names."""
        return [dict(zip(("name", "rate", "interval", "next_start"), row))
                for row in self.app._storage().rate_limits()]

    def set_rate_limit(self, name, rate):
        """Change a task name's rate limit for every worker on the file ("10/s", "100/m",
        a number per second; None or 0 drops it); returns the rate set (None: none). It
        lasts until a worker or producer that defines the task registers it again."""
        parsed = _parse_rate(rate)
        name = _checked_text("task name", name, _NAME_MAX)
        if name not in self.app._storage().registry():     # Flower: 404, as here
            raise UnknownTask(f"no task named {_shown(name, 100)} is registered in this file")
        self.app._storage().set_rate_limit(name, parsed)
        self.app._work_bell.ring()
        return parsed[0] if parsed else None

    def run_schedule(self, name):
        """Queue one call of a periodic task now (its planned fires stay as they are);
        returns the new task's id. UnknownTask for an unknown schedule name."""
        task_id = f"{name}@run-{_new_id()}"
        if not self.app._storage().fire_schedule(name, task_id, time.time()):
            self._schedule_named(name)
            raise UnknownTask(f"no periodic task named {name!r}")
        self.app._work_bell.ring()
        return task_id

    def disable_schedule(self, name):
        """Stop a periodic task's fires until enable_schedule() (or until a worker that
        defines it starts again); True if it was enabled."""
        self._schedule_named(name)
        return self.app._storage().set_schedule_error(name, _SCHEDULE_OFF)

    def enable_schedule(self, name):
        """Let a disabled periodic task fire again (a missed fire is caught up by its
        catch_up policy); True if it was disabled."""
        self._schedule_named(name)
        return self.app._storage().set_schedule_error(name, None)

    def _schedule_named(self, name):
        names = [row["name"] for row in self.schedules()]
        if name not in names:
            known = ", ".join(_shown(n, 100) for n in names[:20]) or "none"
            raise UnknownTask(f"no periodic task named {name!r} (known: {known})")

    def shutdown_worker(self, worker=None):
        """Ask a worker for a warm shutdown, as SIGTERM does: it finishes its running
        tasks and exits. worker: its id or Flower's "hostname-id" (None: every live
        worker). Returns the ids asked; UnknownWorker if none matches. The worker acts
        on it within a second or two (at once when it can be rung)."""
        storage = self.app._storage()
        asked = [w["id"] for w in self._live_workers(worker)
                 if storage.ask_worker(w["id"], stop=time.time())]
        self.app._sched_bell.ring()
        return asked

    def resize_pool(self, worker, by):
        """Grow (by > 0) or shrink (by < 0) the pool of a prefork worker (None: of every
        live one), as Celery's pool_grow and pool_shrink: a shrunk pool's surplus
        processes finish their running task first. Returns {worker id: processes asked
        for}, between 1 and _POOL_MAX; UnknownWorker if none matches, ValueError for a
        worker whose pool cannot change (threads, solo)."""
        if isinstance(by, bool) or not isinstance(by, int):
            raise WrongType(f"the change in processes must be a whole number, not {by!r}")
        storage = self.app._storage()
        workers = self._live_workers(worker)
        asked = {}
        for w in workers:
            if w["pool"] not in (None, "prefork"):
                continue
            # A request not yet acted on counts, then the size the worker last wrote.
            now = next((n for n in (w["wanted"], w["concurrency"]) if type(n) is int),
                       len(w["children"]))
            wanted = max(1, min(_POOL_MAX, now + by))
            if storage.ask_worker(w["id"], wanted=wanted):
                asked[w["id"]] = wanted
        if worker is not None and not asked:
            raise LitequeueError(f"worker {_shown(workers[0]['id'])} runs a "
                             f"{_shown(workers[0]['pool'])} pool, whose size is fixed; only "
                             "a prefork pool grows and shrinks")
        self.app._sched_bell.ring()
        return asked

    def _live_workers(self, worker):
        """The live supervisors a name means: an id, "hostname-id" or a hostname; None
        means all of them."""
        live = [w for w in self.workers() if w["alive"] is not False]
        if worker is None:
            return live
        found = [w for w in live if worker in (w["id"], f"{w['hostname']}-{w['id']}")] or \
            [w for w in live if worker == w["hostname"]]
        if not found:
            raise UnknownWorker(f"no live worker named {worker!r} (see litequeue status)")
        return found

    def workflow(self, task_id, limit=_WORKFLOW_MAX):
        """The tasks of a task's chain, group or chord (every row from its root), oldest
        first, summarised; at most limit of them."""
        row = self.app.AsyncResult(task_id)._fetch()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        storage = self.app._storage()
        rows = storage.workflow(row["root_id"] or row["id"], limit)
        # A chord body's parent, as Celery gives it: the header task that ended last.
        return [dict(_task_summary(r), group_id=_display(r["group_id"]), parent_id=_display(
            r["parent_id"] if r["parent_id"] is not None or not _is_chord_wait(r["waits"])
            else storage.chord_starter(r["id"]))) for r in rows]

    def states(self):
        """The states a task can be in, then the custom update_state() states in use."""
        custom = self.app._storage().custom_states() - set(_STATES_SHOWN)
        return list(_STATES_SHOWN) + sorted(custom)

    def requeue_failed(self, name=None):
        """Queue again every failed task of a name (or all of them); returns how many."""
        count = self.app._storage().requeue_failed(name or None)
        if count:
            self.app._work_bell.ring()
        return count

    def revoke(self, task_id, terminate=False):
        """AsyncResult.revoke() of an id; TaskNotFound for an unknown one."""
        result = self.app.AsyncResult(task_id)
        if result.detailed_state == UNKNOWN:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return result.revoke(terminate=terminate)

    # -- monitoring: what the dashboard, /metrics and `litequeue health` read ----------

    def state_counts(self):
        """{queue: {state: count}} of the waiting, running and failed states, and {queue:
        oldest waiting task's created_at}, read through their indexes."""
        counts, oldest = {}, {}
        for queue, state, n, first in self.app._storage().state_counts():
            queue = queue if isinstance(queue, str) else _shown(queue)
            counts.setdefault(queue, {})[state] = n
            if state == PENDING and _is_time(first):
                oldest[queue] = first
        return counts, oldest

    def throughput(self, minutes=60):
        """Per-minute [(unix minute start, succeeded, failed, retried, mean runtime s)] for
        the last `minutes`, from the workers' counters (missing minutes are zeros)."""
        now_minute = int(time.time() // 60)
        since = now_minute - minutes + 1
        rows = {m: (s or 0, f or 0, r or 0, rt or 0.0) for m, s, f, r, rt in
                self.app._storage().stats_by_minute(since)}
        out = []
        for minute in range(since, now_minute + 1):
            s, f, r, rt = rows.get(minute, (0, 0, 0, 0.0))
            runs = s + f + r
            out.append((minute * 60, s, f, r, rt / runs if runs else 0.0))
        return out

    def task_stats(self, minutes=24 * 60):
        """Per task name over the last `minutes`: succeeded, failed, retried, runtime sum
        and the runtime histogram's bucket counts."""
        since = int(time.time() // 60) - minutes + 1
        return [{"name": _shown(name), "succeeded": s or 0, "failed": f or 0,
                 "retried": r or 0, "runtime": rt or 0.0, "buckets": [b or 0 for b in rest]}
                for name, s, f, r, rt, *rest in self.app._storage().stats_by_name(since)]

    def page(self, before=None, state=None, queue=None, name=None, text=None, limit=50):
        """A page of tasks newest first ([task dict], next `before` or None), filtered."""
        limit = max(1, min(int(limit), 500))
        before = (1 << 62) if before is None else int(before)
        if not 0 < before <= 1 << 62:
            raise ValueError("before must be a task's position (a positive whole number)")
        custom = state if state and state not in _STATES_SHOWN else None
        if custom:      # an update_state() state: only a running row holds one
            rows = [(seq, row) for seq, row in self.app._storage().task_page(
                        before, STARTED, queue or None, name or None, text or None, 500)
                    if (_custom_state(row) or (None,))[0] == custom][:limit]
            return [_task_summary(row) for _, row in rows], None
        rows = self.app._storage().task_page(before, state or None, queue or None,
                                             name or None, text or None, limit)
        tasks = [_task_summary(row) for _, row in rows]
        return tasks, (rows[-1][0] if len(rows) == limit else None)

    def task(self, task_id):
        """Everything about one task, decoded for display (TaskNotFound if unknown)."""
        result = self.app.AsyncResult(task_id)
        row = result._fetch()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        info = _task_summary(row)
        args, kwargs, argsrepr, kwargsrepr = _row_call_shown(row)
        info.update(args=_display(args) if argsrepr is None else argsrepr,
                    kwargs=_display(kwargs) if kwargsrepr is None else kwargsrepr,
                    traceback=row["traceback"]
                    if isinstance(row["traceback"], str) else None,
                    errors=_display(_history(row["errors"])), parent_id=row["parent_id"],
                    root_id=row["root_id"] or row["id"], group_id=row["group_id"],
                    children=self.app._storage().children(task_id),
                    progress=_display(_custom_state(row)),
                    why=self.why_not_running(row))
        steps = self.steps(task_id)
        if steps:
            info["steps"] = steps
        return info

    def workflows(self, state=None, limit=50):
        """Workflows, newest first, each with its number of steps and what it waits for."""
        return [dict(_task_summary(row), state=_display(row["state"]), steps=row["steps"],
                     waiting=self.why_not_running(row))       # WAITING as it is: no Celery state
                for row in self.app._storage().workflows(state, limit)]

    def fork_workflow(self, workflow_id, from_step):
        """Queue a new run of a workflow that keeps its steps before index from_step and
        runs the rest again; returns the new run's AsyncResult."""
        new = _new_id()
        if not self.app._storage().fork_workflow(workflow_id, new, int(from_step), time.time()):
            raise TaskNotFound(f"no task with id {workflow_id!r}")
        self.app._work_bell.ring()
        return self.app.AsyncResult(new)

    def steps(self, workflow_id):
        """A workflow's steps in call order, decoded for display ([] for a plain task)."""
        return [_step_summary(step) for step in self.app._storage().steps_of(workflow_id)]

    def _held_by_concurrency(self, row):
        """Which concurrency limit holds a waiting row back, if one is full now."""
        storage = self.app._storage()
        queue = row["queue"]
        room = storage.queue_limits().get(queue)
        running = storage.running_in(queue) if isinstance(room, int) and room > 0 else None
        if running is not None and running >= room:
            return (f"its queue {_shown(queue)} runs at most {room} task(s) at once (for "
                    f"every worker on this file): {running} are running")
        bound = [b for b in storage.concurrency_limits() if b[0] == row.get("rate_key")]
        if not bound:
            return None
        key, most, per_key = bound[0]
        running = storage.running_of(key)
        if isinstance(most, int) and running >= most > 0:
            return (f"concurrency limit: at most {most} of {_shown(key)} run at once (for "
                    f"every worker on this file): {running} are running")
        conc_key = row.get("conc_key")
        running = storage.running_of_key(key, conc_key)
        if isinstance(per_key, int) and running >= per_key > 0:
            return (f"concurrency limit per key: at most {per_key} of {_shown(key)} with "
                    f"concurrency_key {_shown(conc_key)} run at once (for every worker on "
                    f"this file): {running} are running")
        return None

    def why_not_running(self, row, now=None):
        """Why a task is not running (None if it is running or finished)."""
        now = time.time() if now is None else now
        state = row["state"]
        if state in _ENDED_STATES or state == STARTED:
            return None
        name = row["name"]
        waits = str(row.get("waits") or "")
        if state in (SCHEDULED, WAITING) and waits.startswith(("step:", "recv:", "sleep")):
            return _workflow_wait(waits, row["eta"] if state == SCHEDULED else None)
        if state in (SCHEDULED, RETRY) and _is_time(row["eta"]):
            what = "retry" if state == RETRY else "ETA"
            when = _from_unix(row["eta"])
            return f"its {what} is {when.isoformat(timespec='seconds') if when else '?'}" + \
                (" (due now: a worker's scheduler moves it)" if row["eta"] <= now else "")
        if state == WAITING:
            if waits.startswith("chord"):
                progress = self.app._storage().chord_progress(row["id"])
                return (f"waiting for its chord: {_shown(progress[0], 20)} of "
                        f"{_shown(progress[1], 20)} members done" if progress
                        else "waiting for its chord")
            kind = "to fail" if waits.startswith("error") else "to succeed"
            return f"waiting for task {row.get('parent_id')} {kind}"
        paused = self.paused()
        if row["queue"] in paused:
            since = _from_unix(paused[row["queue"]])
            return (f"its queue {row['queue']!r} is paused (since "
                    f"{since.isoformat(timespec='seconds') if since else '?'}): "
                    f"`litequeue resume DB {row['queue']}`")
        registry = self.registry()
        if name not in registry:
            return f"no worker or producer registered the task name {name!r}"
        live = [w for w in self.workers() if w["alive"] is not False]
        queues = {q for w in live for q in str(w["queues"]).split(",")}
        if not live:
            return "no live worker: start `litequeue worker`"
        if row["queue"] not in queues:
            return f"no live worker serves its queue {row['queue']!r} (they serve " \
                   f"{', '.join(sorted(queues))})"
        held = self._held_by_concurrency(row)
        if held:
            return held
        limit = [r for r in self.app._storage().rate_limits() if r[0] == row.get("rate_key")]
        if limit:
            _, rate, _, next_start = limit[0]
            # Another client may have written any value (a supervisor repairs it soon).
            at = _from_unix(max(next_start, now)) if _is_time(next_start) else None
            when = at.isoformat(timespec="milliseconds") if at else \
                "? (its limit is not one litequeue wrote: a worker repairs it)"
            return (f"rate-limited to {_shown(rate)} (for every worker on this file): the "
                    f"next start of {_shown(name)} is allowed at {when}")
        return "queued: the workers are busy with tasks ahead of it"


def _display(value):
    """A decoded value made safe for JSON: bytes as text, other objects as their repr."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _display(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_display(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _task_summary(row):
    """A task row as the dashboard and the API show it (no payload decoding beyond args)."""
    result = exception = None
    if row["state"] == SUCCESS and row["result"] is not None:
        try:
            result = _display(_unpack(row["result"]))
        except Exception:
            result = "<result cannot be decoded>"
    elif row["state"] in (FAILURE, RETRY) and row["result"] is not None:
        exc = _rebuild_error(row["result"], None)
        exception = f"{type(exc).__name__}({str(exc)!r})" if not isinstance(exc, RemoteError) \
            else f"{exc.exc_type.rpartition('.')[2]}({exc.exc_message!r})"
    args, kwargs, argsrepr, kwargsrepr = _row_call_shown(row)
    started, finished = row["started_at"], row["finished_at"]
    custom = _custom_state(row)
    return {"id": _display(row["id"]), "name": _display(row["name"]),
            "state": _visible_state(row) if custom is None else custom[0],
            "queue": _display(row["queue"]), "priority": row["priority"],
            "args": _shown(argsrepr or _saferepr(args, 300), 300),
            "kwargs": _shown(kwargsrepr or _saferepr(kwargs, 300), 300),
            "result": result, "exception": exception, "retries": row["retries"],
            "attempt": row["attempt"], "worker": _display(row["worker"]), "pid": row["pid"],
            "created": row["created_at"], "started": started, "finished": finished,
            "eta": row["eta"] if _is_time(row["eta"]) else None,
            "expires": row["expires"] if _is_time(row["expires"]) else None,
            "runtime": finished - started if _is_time(started) and _is_time(finished) else None}


def _workflow_wait(waits, until):
    """What a suspended workflow waits for, in words (its row's waits and eta)."""
    kind, _, what = waits.partition(":")
    at = _from_unix(until) if _is_time(until) else None
    when = at.isoformat(timespec="milliseconds") if at else None
    if kind == "step":
        return f"waiting for its step {what} to end"
    if kind == "recv":
        topic = f"on topic {what!r}" if what else "(no topic)"
        return f"waiting for a message {topic}" + (f" until {when}" if when else "")
    return f"sleeping until {when or '?'}"


def _step_summary(step):
    """A workflow's step as the dashboard and the CLI show it."""
    state, outcome = step.state, None
    if state is None:
        state = "RUNNING" if step.kind in ("task", "step") else "WAITING"
    else:
        try:
            value, exc = _step_outcome(step)
            outcome = _display(value) if exc is None else \
                f"{type(exc).__name__}({str(exc)!r})"
        except Exception:
            outcome = "<outcome cannot be decoded>"
    return {"index": step.idx, "kind": _display(step.kind), "name": _display(step.name),
            "task_id": _display(step.child), "state": _display(state), "outcome": outcome,
            "until": step.until if _is_time(step.until) else None,
            "started": step.started_at, "finished": step.finished_at}


def _node_name(worker):
    """A worker's name in control and inspect answers: Celery's "celery@host" form, with
    the worker's id, as Flower shows it (hostname-id)."""
    return f"celery@{worker['hostname']}-{worker['id']}"


class _Control:
    """``app.control``: Celery's remote control, answered from the database. What Celery
    broadcasts to workers is a row change here, which every worker of the file acts on;
    replies come in Celery's shape, one per live worker."""

    def __init__(self, app):
        self.app = app

    def inspect(self, destination=None, timeout=None, **_):
        return _Inspect(self.app, destination)

    def _replies(self, destination, answer):
        workers = self.app.admin._live_workers(None)
        if destination is not None:
            names = {destination} if isinstance(destination, str) else set(destination)
            workers = [w for w in workers if _node_name(w) in names or w["id"] in names
                       or w["hostname"] in names]
        return [{_node_name(w): answer(w)} for w in workers]

    def ping(self, destination=None, timeout=None, **_):
        return self._replies(destination, lambda w: {"ok": "pong"})

    def revoke(self, task_id, destination=None, terminate=False, signal=None, **_):
        """Revoke one id or a list of them (terminate: kill the running one)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for one in ids:
            self.app.AsyncResult(one).revoke(terminate=terminate)

    def terminate(self, task_id, destination=None, signal=None, **_):
        self.revoke(task_id, destination, terminate=True)

    def rate_limit(self, task_name, rate_limit, destination=None, **_):
        self.app.admin.set_rate_limit(task_name, rate_limit)
        return self._replies(destination, lambda w: {"ok": "new rate limit set successfully"})

    def purge(self):
        """Delete every task waiting to run; returns how many."""
        return self.app.admin.purge()

    discard_all = purge

    def shutdown(self, destination=None, **_):
        replies = self._replies(destination, lambda w: {"ok": "shutdown requested"})
        for reply in replies:
            self.app.admin.shutdown_worker(next(iter(reply)).partition("@")[2])
        return replies

    def pool_grow(self, n=1, destination=None, **_):
        self.app.admin.resize_pool(destination, n)

    def pool_shrink(self, n=1, destination=None, **_):
        self.app.admin.resize_pool(destination, -n)


class _Inspect:
    """``app.control.inspect()``: {worker name: answer} of every live worker (None when
    none is alive, as Celery's inspect with no reply)."""

    def __init__(self, app, destination):
        self.app, self.control = app, _Control(app)
        self.destination = destination

    def _answers(self, answer):
        replies = self.control._replies(self.destination, answer)
        return {k: v for reply in replies for k, v in reply.items()} or None

    def _rows(self, worker, kind):
        admin = self.app.admin
        sup = next((w for w in admin.workers() if w["id"] == worker["id"]), None)
        children = sup["children"] if sup else []
        return [(child, task) for child in children for task in child[kind]]

    def _request(self, task_id, worker, pid=None, started=None):
        result = self.app.AsyncResult(task_id)
        return {"id": task_id, "name": result.name, "args": _display(result.args),
                "kwargs": _display(result.kwargs), "type": result.name,
                "hostname": _node_name(worker), "time_start": started,
                "acknowledged": True, "worker_pid": pid,
                "delivery_info": {"exchange": "", "routing_key": result.queue,
                                  "priority": result._column("priority"),
                                  "redelivered": False}}

    def active(self, safe=None):
        return self._answers(lambda w: [
            self._request(task[0], w, child.get("pid"), task[2])
            for child, task in self._rows(w, "running")])

    def reserved(self, safe=None):
        return self._answers(lambda w: [
            self._request(task[0], w, child.get("pid"))
            for child, task in self._rows(w, "reserved")])

    def scheduled(self, safe=None):
        """The tasks waiting for their ETA: every worker of the file may run them, so
        each worker's answer lists them all."""
        page, _ = self.app.admin.page(None, SCHEDULED, None, None, None, 500)
        return self._answers(lambda w: [
            {"eta": _from_unix(t["eta"]).isoformat() if t["eta"] else None,
             "priority": t["priority"], "request": self._request(t["id"], w)} for t in page])

    def registered(self, *taskinfoitems):
        names = sorted(n for n in self.app.admin.registry() if not n.startswith("litequeue."))
        return self._answers(lambda w: names)

    registered_tasks = registered

    def stats(self):
        return self._answers(lambda w: {
            "pid": w["pid"], "total": {}, "uptime": int(time.time() - (w["started_at"] or 0)),
            "pool": {"max-concurrency": w["concurrency"],
                     "processes": [c.get("pid") for c in w.get("children", [])]},
            "processed": w.get("processed"), "failed": w.get("failed")})

    def ping(self):
        return self._answers(lambda w: {"ok": "pong"})

    def active_queues(self):
        return self._answers(lambda w: [{"name": q} for q in (w["queues"] or "").split(",")
                                        if q])


# ---------------------------------------------------------------------------
# App: LiteQueue and Task
# The app first (delay() goes up from Task to it), then the task class. Task.s() and
# app.signature() hand out the canvas's Signature: the one declared forward use.
# ---------------------------------------------------------------------------

# Options Celery's apply_async takes that mean nothing without a broker: accepted, with one
# warning each (the message format, the exchange and routing, AMQP's delivery flags).
_BROKER_OPTIONS = frozenset({
    "serializer", "compression", "routing_key", "exchange", "exchange_type",
    "delivery_mode", "mandatory", "immediate", "content_type", "content_encoding",
    "reply_to", "correlation_id", "app_id", "producer", "connection", "publisher",
    "add_to_parent", "retry", "retry_policy"})


def _call_text(name, args, kwargs, limit=None):
    """name(args, kw=value) as Celery's repr of a signature writes it (Signature's repr);
    a text longer than limit ends with a hash of the whole, so two long calls still
    differ."""
    text = f"{name}(" + ", ".join([*map(repr, args or ()),
                                   *(f"{k}={v!r}" for k, v in (kwargs or {}).items())]) + ")"
    if limit is None or len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{text[:limit - 20]}...#{digest}"


def _call_options(options):
    """The _CALL_OPTIONS of an apply_async call, checked, for its envelope; Celery's
    broker options are accepted with one warning each; others are a TypeError."""
    kept = {}
    stamped = options.get("stamped_headers")
    if stamped:                        # Canvas.stamp(): the stamps travel with the call
        options = dict(options)
        kept["stamps"] = {name: options.pop(name, None) for name in stamped
                          if isinstance(name, str)}
        kept["stamped_headers"] = sorted(kept["stamps"])
        options.pop("stamped_headers")
    for key, value in options.items():
        if key not in _CALL_OPTIONS and key not in _BROKER_OPTIONS:
            # Celery hands an option it does not know to the broker, which ignores it.
            _warn_setting(f"apply_async option {key!r} is not one litequeue knows: ignored")
        elif key in _BROKER_OPTIONS:
            _warn_setting(f"apply_async option {key!r} means nothing without a broker: "
                          "ignored (see README, What does not carry over)")
        elif value is not None:
            if not _CALL_OPTIONS[key](value):
                raise TypeError(f"apply_async() option {key} is {_saferepr(value, 100)}: "
                                f"{_CALL_OPTION_HELP[key]}")
            kept[key] = value
    return kept


def _task_named(app, name):
    """The Task of that name in app, or in another app of this process on its file."""
    task = app.tasks.get(name)
    if task is None:
        task = next((a.tasks[name] for a in list(_apps) if a.path == app.path and
                     name in a.tasks), None)
    if task is None:
        raise UnknownTask(f"task {name!r} is not defined in this process")
    return task


def _pydantic_task(fn, strict=False, context=None, dump_kwargs=None):
    """@app.task(pydantic=True), as Celery's: an argument annotated with a pydantic model
    (or an optional one) is validated into it from the dict it travels as, and a returned
    instance of the annotated return model goes back as its dict (mode="json")."""
    try:
        import pydantic
        import typing
    except ImportError:
        raise ConfigurationError("pydantic=True needs pydantic: pip install pydantic") from None
    params = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:      # an annotation that does not resolve: use them as written
        hints = {}

    def model_for(annotation, value):
        options = typing.get_args(annotation)
        if type(None) in options:                  # Optional[Model]: None stays None
            rest = [o for o in options if o is not type(None)]
            annotation = rest[0] if len(rest) == 1 and value is not None else None
        return annotation if isinstance(annotation, type) and \
            issubclass(annotation, pydantic.BaseModel) else None

    def before(args, kwargs):
        bound = params.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            model = model_for(hints.get(name, params.parameters[name].annotation), value)
            if model is not None and not isinstance(value, model):
                bound.arguments[name] = model.model_validate(value, strict=strict,
                                                             context=context)
        return bound.args, bound.kwargs

    def after(value):
        model = model_for(hints.get("return", params.return_annotation), value)
        if model is not None and isinstance(value, model):
            return value.model_dump(**{"mode": "json", **(dump_kwargs or {})})
        return value

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args, **kwargs):
            args, kwargs = before(args, kwargs)
            return after(await fn(*args, **kwargs))
        return run_async

    @functools.wraps(fn)
    def run(*args, **kwargs):
        args, kwargs = before(args, kwargs)
        return after(fn(*args, **kwargs))
    return run


def _builtin_tasks(app):
    """The tasks Task.map(), starmap() and chunks() queue (Celery's celery.map and
    celery.starmap): each calls the named task once per item, in the worker, in order,
    and returns the list of its results."""
    def run_map(task, it):
        task = _task_named(app, task if isinstance(task, str) else task["task"])
        return [task(item) for item in it]

    def run_starmap(task, it):
        task = _task_named(app, task if isinstance(task, str) else task["task"])
        return [task(*item) for item in it]

    def run_accumulate(value):
        """Passes its input on (Celery's celery.accumulate): the step before a chord's
        group body, which every member of the group follows (it waits for a chord); the
        last step of a Task.replace(), under the id of the task replaced (it follows the
        replacement's last step)."""
        return value

    return {"litequeue.map": run_map, "litequeue.starmap": run_starmap,
            _GATHER: run_accumulate}


class LiteQueue(_Workflows):
    """The app: task registry, settings and the database they share.

    ``LiteQueue("jobs.sqlite", timezone="Asia/Shanghai", result_expires=3600)``

    A relative path is read from the directory of the module that creates the app (the
    current directory when there is none, as in ``python -c``), so a producer started
    anywhere finds the same file as the worker started beside tasks.py.
    """

    def __init__(self, path, **settings):
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_code.co_name == "__init__" and \
                frame.f_locals.get("self") is self:      # a subclass's __init__
            frame = frame.f_back
        caller = frame.f_globals
        self.path = _app_path(path, caller.get("__file__"))
        self._module = _module_name(caller.get("__name__", ""), caller.get("__file__"))
        self.conf = _Conf(DEFAULTS)
        self.tasks = {}
        self.periodic = {}
        self._local = threading.local()
        self._noted = set()
        self._known_remote = set()
        self._side = _SideDir(self.path)
        self._work_bell = _Doorbell(self._side, "work")
        self._sched_bell = _Doorbell(self._side, "sched")
        self._waiters = 0
        self._waiters_lock = threading.Lock()
        self._create = True          # False: the CLI's read commands change no file
        # Celery's app signals: fired once, when a worker loads the app (finalize()).
        self.on_configure = Signal("on_configure")
        self.on_after_configure = Signal("on_after_configure")
        self.on_after_finalize = Signal("on_after_finalize")
        self._discover, self._finalized = [], False
        task_cls = settings.pop("task_cls", None)
        if task_cls is not None:
            if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
                raise ConfigurationError(f"task_cls must be a subclass of litequeue.Task, "
                                         f"not {task_cls!r}")
            self.Task = task_cls
        self.update_settings(settings)
        _apps.add(self)
        _last_app[0] = weakref.ref(self)
        # Celery's built-in tasks, which every worker of the file runs (_collect_apps).
        self._builtins = {name: Task(self, fn, name=name)
                          for name, fn in _builtin_tasks(self).items()}
        for fn, options in _shared_tasks:
            self.task(**options)(fn)

    def __repr__(self):
        return f"<LiteQueue {self.path}>"

    # -- configuration ------------------------------------------------------------------

    def update_settings(self, settings):
        """Apply settings by their names in the settings table (Celery's names are
        accepted too); every value is checked first, and a bad one changes nothing."""
        self.conf.update(settings)

    def config_from_object(self, obj):
        """Read settings from a module, a module name, a class or a mapping, as Celery's
        does. Names that are neither settings nor close to one (imports, helpers) are
        passed over; a misspelled setting is refused with a suggestion."""
        self.update_settings(_settings_of(obj))
        self._beat_definitions()          # a bad beat_schedule entry is refused now

    def config_from_envvar(self, variable_name, silent=False, force=False):
        """config_from_object() of the module the environment variable names (Celery's);
        False if it is unset and silent."""
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return False
            raise ConfigurationError(f"the environment variable {variable_name!r} is not set: "
                                     "it should name a config module")
        self.config_from_object(module)
        return True

    @property
    def main(self):
        """The name of the module that made the app (Celery's app.main)."""
        return self._module

    # -- tasks --------------------------------------------------------------------------

    def task(self, fn=None, **options):
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True)``."""
        unknown = set(options) - Task._OPTIONS
        if unknown:
            raise ConfigurationError(f"unknown task option(s): {', '.join(sorted(unknown))}")

        base = options.pop("base", None) or self.Task
        pydantic = {k: options.pop(k) for k in ("pydantic", "pydantic_strict",
                                                "pydantic_context", "pydantic_dump_kwargs")
                    if k in options}
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise ConfigurationError(f"base must be a subclass of litequeue.Task, not {base!r}")

        def register(func):
            if pydantic.get("pydantic"):
                func = _pydantic_task(func, pydantic.get("pydantic_strict", False),
                                      pydantic.get("pydantic_context"),
                                      pydantic.get("pydantic_dump_kwargs"))
            task = base(self, func, **options)
            task._annotate(self.conf["task_annotations"])
            self.tasks[task.name] = task
            return task

        if fn is not None:
            if not callable(fn):
                raise ConfigurationError("@app.task takes a function")
            return register(fn)
        return register

    def register_task(self, task, **options):
        """Register a class-based task, as Celery's app.register_task: a Task subclass
        (or an instance of one) with its own run(). Its name is the class's `name`
        attribute, else module.ClassName. Returns the registered task."""
        cls = task if isinstance(task, type) else type(task)
        if not (issubclass(cls, Task) and cls.run is not Task.run):
            raise ConfigurationError(f"register_task takes a Task subclass with its own "
                                     f"run(), not {task!r}")
        instance = cls() if isinstance(task, type) else task
        name = options.pop("name", None) or cls.__dict__.get("name") or \
            f"{_module_name(cls.__module__)}.{cls.__qualname__}"
        Task.__init__(instance, self, instance.run, name=name, **options)
        self.tasks[instance.name] = instance
        return instance

    def autodiscover_tasks(self, packages=None, related_name="tasks", force=False):
        """Celery's: import each package's `tasks` module (related_name) when a worker
        loads the app, or now with force. A package without one is skipped."""
        if callable(packages):
            packages = packages()
        self._discover += [(package, related_name) for package in packages or ()]
        if force:
            self._import_discovered()

    def _import_discovered(self):
        while self._discover:
            package, related = self._discover.pop(0)
            name = f"{package}.{related}" if related else package
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:           # the package itself is missing
                found = False
            if found:
                importlib.import_module(name)

    def finalize(self, auto=False):
        """What a worker does once it has imported the app's module: import the modules
        of its include (imports) setting and autodiscover_tasks(), then send on_after_configure and on_after_finalize (where
        Celery's periodic-task guide adds its schedules). Once per app."""
        if self._finalized:
            return
        self._finalized = True
        for name in self.conf["imports"]:                # Celery's include= and imports
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import {name!r}, which the app's "
                                         f"include (imports) names: {exc}") from None
        self._import_discovered()
        for task in self.tasks.values():
            task._annotate(self.conf["task_annotations"])
        self.on_configure.send(sender=self)
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def periodic_task(self, schedule, name=None, args=(), kwargs=None, catch_up="once",
                      **task_options):
        """Register a task and run it on a schedule: ``@app.periodic_task(crontab(minute=0))``.

        schedule is a crontab, a timedelta or a number of seconds. Workers sync the
        definitions into the schedules table when they start; there is no beat process.
        """
        def register(fn):
            default_name, module = _task_name_for(fn)
            periodic_name = name or task_options.get("name") or default_name
            if periodic_name in self.periodic:
                raise ConfigurationError(f"a periodic task named {periodic_name!r} is already defined")
            task = self.task(**task_options)(fn)
            self._add_periodic(schedule, task, args, kwargs, periodic_name, catch_up,
                               None, None, task.module)
            return task
        return register

    def add_periodic_task(self, schedule, task, args=(), kwargs=None, name=None,
                          catch_up="once", queue=None, priority=None, **options):
        """Run a task (a Task, a signature such as add.s(2, 2), or a task name) on a
        schedule, as Celery beat's add_periodic_task does; app.conf.beat_schedule lists
        it too, as Celery's does.

        The calling module owns the schedule: a worker that imports that module deletes
        the module's stored schedules that it no longer defines. Of Celery's other
        apply_async options, none applies to a fire (expires, say: catch_up="once"
        already keeps missed fires from piling up); each is warned about once.
        """
        for key in options:
            _warn_setting(f"periodic task option {key!r} is not applied to its fires "
                          "(catch_up decides what happens to missed ones)")
        caller = sys._getframe(1).f_globals
        module = _module_name(caller.get("__name__", ""), caller.get("__file__"))
        name = self._add_periodic(schedule, task, args, kwargs, name, catch_up, queue,
                                  priority, module)
        entry = self.periodic[name]
        shown = {"task": entry["task"], "schedule": schedule, "args": tuple(args or ()),
                 "kwargs": dict(kwargs or {}), "options": {"queue": queue, "priority": priority}}
        if isinstance(task, Signature) and task._single:
            shown.update(args=task.args, kwargs=task.kwargs)
        dict.__setitem__(self.conf, "beat_schedule", {**self.conf["beat_schedule"], name: shown})
        return name

    def _add_periodic(self, schedule, task, args, kwargs, name, catch_up, queue, priority,
                      module):
        definition = self._periodic_definition(schedule, task, args, kwargs, name, catch_up,
                                               queue, priority, module)
        if definition["name"] in self.periodic:
            raise ConfigurationError(f"a periodic task named {definition['name']!r} is "
                                     "already defined")
        self.periodic[definition["name"]] = definition
        return definition["name"]

    def _beat_definitions(self):
        """The periodic definitions of the beat_schedule setting (Celery's format:
        name -> {"task", "schedule", "args", "kwargs", "options": {"queue", "priority"}})."""
        definitions = {}
        for name, entry in self.conf["beat_schedule"].items():
            if not isinstance(entry, dict) or not {"task", "schedule"} <= set(entry):
                raise ConfigurationError(f"beat_schedule entry {name!r} needs 'task' and "
                                         "'schedule'")
            options = entry.get("options") or {}
            task = self.tasks.get(entry["task"], entry["task"])
            definitions[name] = self._periodic_definition(
                entry["schedule"], task, entry.get("args", ()), entry.get("kwargs"), name,
                "once", options.get("queue"), options.get("priority"), self._module)
        return definitions

    def _all_periodic(self):
        """Periodic definitions from the decorators, add_periodic_task and beat_schedule."""
        return {**self._beat_definitions(), **self.periodic}

    def _periodic_definition(self, schedule, task, args, kwargs, name, catch_up, queue,
                             priority, module):
        """The schedules-table row that defines one periodic task."""
        if isinstance(task, Signature) and task._single:
            task, args, kwargs = task.type or task.task, task.args, task.kwargs
        schedule = _as_schedule(schedule)
        zone = schedule.tz or _zone(self.conf["timezone"])
        if catch_up not in _CATCH_UP_POLICIES:
            raise ConfigurationError(f"catch_up must be one of {', '.join(_CATCH_UP_POLICIES)}, "
                                     f"not {catch_up!r}")
        task_name = task.name if isinstance(task, Task) else str(task)
        if not name:     # as Celery names it: the call, so that two calls of a task differ
            name = task_name if not args and not kwargs else _call_text(
                task_name, args, kwargs, _NAME_MAX)
        schedule.next_after(_dt.datetime.now(_UTC), zone)  # refuses one that never fires
        payload = _pack_envelope(task_name, args or (), kwargs or {})
        return {
            "name": name, "task": task_name, "module": module,
            "schedule": _schedule_to_text(schedule), "tz": _zone_name(zone),
            "payload": payload,
            "queue": _checked_text("queue", queue or (task.queue if isinstance(task, Task)
                                                      else None)
                                   or self._routed_queue(task_name)
                                   or self.conf["task_default_queue"], _QUEUE_MAX),
            "priority": _checked_priority(priority if priority is not None else
                                          (task.priority if isinstance(task, Task) and
                                           task.priority is not None
                                           else self.conf["task_default_priority"])),
            "catch_up": catch_up}

    def send_task(self, name, args=None, kwargs=None, **options):
        """Queue a task by name, without importing it. The name must be registered with a
        worker or producer of this database."""
        name = _checked_name(name)
        if options.get("link") is not None or options.get("link_error") is not None:
            link, link_error = options.pop("link", None), options.pop("link_error", None)
            return Signature(name, args or (), kwargs, options, app=self).apply_async(
                link=link, link_error=link_error)
        task = self.tasks.get(name)
        if task is None and name not in self._known_remote:
            registry = self._storage().registry()
            if name not in registry:
                raise UnknownTask(_unknown_task_message(name, registry))
            self._known_remote.add(name)
        return self._send(name, args, kwargs, task=task, **options)

    def AsyncResult(self, task_id):
        """The result handle of a task id."""
        return AsyncResult(task_id, self)

    @property
    def GroupResult(self):
        """app.GroupResult(id) reads a saved group in any process (TaskNotFound if there
        is none); app.GroupResult(id, results) makes one and .restore(id) reads one (None
        if there is none), as Celery's."""
        return _AppGroupResult(self)

    def signature(self, name, args=(), kwargs=None, **options):
        """A signature of a task by name, as Celery's app.signature."""
        return Signature(name, args, kwargs, options, app=self)

    @property
    def admin(self):
        """The operator's surface (Admin): counts, workers, schedules, requeue, purge."""
        return Admin(self)

    @property
    def control(self):
        """Celery's app.control: revoke, rate_limit, ping, shutdown, inspect()..."""
        return _Control(self)

    # -- internals ----------------------------------------------------------------------

    def _storage(self):
        """This thread's connection, opened on first use and again after a fork."""
        local = self._local
        storage = getattr(local, "storage", None)
        if storage is None or local.forks != _FORKS[0]:
            storage = _Storage(self.path, synchronous=self.conf["synchronous"],
                               busy_timeout=self.conf["busy_timeout"],
                               autocheckpoint=self.conf["wal_autocheckpoint"],
                               create=self._create)
            local.storage, local.forks = storage, _FORKS[0]
        return storage

    def _waiter(self, task_id):
        """A socket the child that finishes task_id rings, or None if the side directory
        cannot hold one (get() then polls)."""
        with self._waiters_lock:
            self._waiters += 1
            name = f"{_short_hash(task_id)}.{os.getpid()}.{threading.get_ident() % 10**6}.{self._waiters}"
        try:
            return _Sleeper(self._side, "done", name)
        except SideDirectoryError as exc:
            logger.debug("%s; waiting by polling", exc)
            return None

    def _send(self, name, args, kwargs, task=None, **options):
        row = self._task_row(name, args, kwargs, task, **options)
        if self.conf["task_always_eager"]:
            return self._eager_outcome(self._run_eagerly(task, name, row["id"],
                                                         row["payload"]))
        registry_row = None
        if task is not None and name not in self._noted:
            registry_row = task._registry_row(row["created_at"])
        run = _workflow_run.get()
        if run is not None and run.in_step is None:       # a workflow's step
            task_id = run.queue_task(row, registry_row, self._sched_bell
                                     if row["state"] == SCHEDULED else self._work_bell)
            if registry_row:
                self._noted.add(name)
            return AsyncResult(task_id, self)
        publish = signals.before_task_publish.receivers or signals.after_task_publish.receivers
        if publish:
            self._publish("before", [row])
        if row["unique_key"] is None:
            self._storage().insert_task(row, registry_row)
        else:
            holder = self._storage().insert_unique(row, registry_row)
            if holder != row["id"]:          # a task with this key waits or runs: that one
                if registry_row:
                    self._noted.add(name)
                result = AsyncResult(holder, self)
                result.existing = True
                return result
        if registry_row:
            self._noted.add(name)
        (self._sched_bell if row["state"] == SCHEDULED else self._work_bell).ring()
        if publish:
            self._publish("after", [row])
        return AsyncResult(row["id"], self)

    def _publish(self, when, rows):
        """before_task_publish / after_task_publish, with Celery's arguments, per row."""
        sig = signals.before_task_publish if when == "before" else signals.after_task_publish
        if not sig.receivers:
            return
        for row in rows:
            try:
                args, kwargs, options = _unpack_call(row["payload"])
            except ValueError:
                args, kwargs, options = [], {}, {}
            headers = {"id": row["id"], "task": row["name"], "root_id": row.get("root_id")
                       or row["id"], "parent_id": row.get("parent_id"),
                       "group": row.get("group_id"), "eta": row["eta"],
                       "expires": row["expires"], "retries": 0,
                       "stamped_headers": options.get("stamped_headers") or [],
                       "stamps": options.get("stamps") or {}}
            extra = {"declare": [], "retry_policy": None, "properties": {}} \
                if when == "before" else {}
            sig.send(sender=row["name"], body=(args, kwargs, {}), exchange="",
                     routing_key=row["queue"], headers=headers, **extra)

    def _ring_follow_ups(self, follow):
        """Ring for what a write set in motion (queued followers)."""
        if follow.woken:
            self._work_bell.ring()
            self._sched_bell.ring()

    def _task_row(self, name, args, kwargs, task=None, task_id=None, priority=None,
                  queue=None, countdown=None, eta=None, expires=None, unique_key=None,
                  concurrency_key=None, **options):
        """The tasks row a call becomes, or the error its arguments or options deserve."""
        options = _call_options(options) if options else None
        args = () if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        bad_keys = [k for k in kwargs if not isinstance(k, str)] if kwargs else ()
        if bad_keys:
            raise SerializationError(f"keyword argument names of {name} must be strings, "
                                     f"not {bad_keys[0]!r}")
        name = _checked_name(name)
        now = time.time()
        if expires is None and task is not None:
            expires = task.expires          # the task's own default, as Celery's
        eta_at, expires_at = self._timing(now, countdown, eta, expires)
        if eta_at is not None:              # self.request.eta, as Celery's message has it
            options = dict(options or (), eta=_dt.datetime.fromtimestamp(
                eta_at, _dt.timezone.utc).isoformat())
        payload = _pack_envelope(name, args, kwargs, options)
        task_id = _new_id() if task_id is None else _checked_text("task_id", task_id, _ID_MAX)
        scheduled = eta_at is not None and eta_at > now
        if unique_key is not None:
            unique_key = f"{name}:{_checked_text('unique_key', unique_key, _UNIQUE_KEY_MAX)}"
        elif task is not None and task.unique:
            # The same arguments make the same key, whatever the order of the kwargs.
            unique_key = f"{name}:" + hashlib.sha256(_pack(
                [list(args), sorted(kwargs.items())])).hexdigest()[:32]
        if concurrency_key is not None:
            concurrency_key = _checked_text("concurrency_key", concurrency_key,
                                            _UNIQUE_KEY_MAX)
        return self._row(name, task, task_id, payload, now, queue, priority,
                         SCHEDULED if scheduled else PENDING, eta_at if scheduled else None,
                         expires_at, unique_key, concurrency_key)

    def _row(self, name, task, task_id, payload, now, queue=None, priority=None,
             state=PENDING, eta=None, expires=None, unique_key=None, conc_key=None):
        """The tasks row of one call (_task_row, and delay()'s plain path)."""
        if queue is None:
            queue = (task.queue if task else None) or self._routed_queue(name) \
                or self.conf["task_default_queue"]
        queue = _checked_text("queue", queue, _QUEUE_MAX)
        if priority is None:
            priority = task.priority if task and task.priority is not None else \
                self.conf["task_default_priority"]
        current = _request.current          # queued by a running task
        return {"unique_key": unique_key, "conc_key": conc_key, "id": task_id, "name": name,
                "queue": queue,
                "priority": _checked_priority(priority), "state": state, "payload": payload,
                "eta": eta, "expires": expires, "max_retries": task._max_retries if task and
                isinstance(task._max_retries, int) else None, "created_at": now,
                "parent_id": current.id if current is not None else None,
                "root_id": (current.root_id or current.id) if current is not None else None}

    def _send_plain(self, task, args, kwargs):
        """delay() of a registered task with no options, as _send would queue it, with
        none of apply_async's option handling in between: its common case, made short."""
        row = self._row(task.name, task, _new_id(), _pack_envelope(task.name, args, kwargs),
                        time.time())
        run = _workflow_run.get()
        if run is not None and run.in_step is None:       # a workflow's step
            return AsyncResult(run.queue_task(row, None, self._work_bell), self)
        self._storage().insert_task(row)
        self._work_bell.ring()
        return AsyncResult(row["id"], self)

    def _routed_queue(self, name):
        """The queue task_routes gives a task name: an exact name first, then the first
        glob that matches (Celery's format: {"name or glob": {"queue": "q"} or "q"})."""
        routes = self.conf["task_routes"]
        if not routes:
            return None
        route = routes.get(name)
        if route is None:
            route = next((r for pattern, r in routes.items()
                          if fnmatch.fnmatchcase(name, str(pattern))), None)
        return route.get("queue") if isinstance(route, dict) else route

    def _timing(self, now, countdown, eta, expires):
        """(eta, expires) as unix times from apply_async's options, or ConfigurationError."""
        if countdown is None and eta is None and expires is None:
            return None, None
        if countdown is not None and eta is not None:
            raise ConfigurationError("give countdown or eta, not both")
        eta_at = None
        if countdown is not None:
            if isinstance(countdown, _dt.timedelta):
                countdown = countdown.total_seconds()
            if not isinstance(countdown, (int, float)) or isinstance(countdown, bool) \
                    or not math.isfinite(countdown):
                raise ConfigurationError(f"countdown must be a number of seconds, not {countdown!r}")
            eta_at = now + countdown
        elif eta is not None:
            if not isinstance(eta, _dt.datetime):
                raise ConfigurationError(f"eta must be a datetime, not {type(eta).__name__}")
            eta_at = _to_instant(eta, _zone(self.conf["timezone"]), "eta")
        expires_at = _to_instant(expires, _zone(self.conf["timezone"]), "expires")
        if expires_at is not None and eta_at is not None and expires_at < eta_at:
            # Celery queues it, and it expires unstarted (REVOKED): so does litequeue.
            _warn_setting("expires is earlier than eta: the task will expire before it "
                          "can run")
        return eta_at, expires_at

    def _eager_outcome(self, result, throw=None):
        """An eager run's result, or its exception raised when task_eager_propagates (or
        throw) says so, as Celery's."""
        if throw is None:
            throw = self.conf["task_eager_propagates"]
        if throw and result.failed():
            raise result.result
        return result

    def _run_eagerly(self, task, name, task_id, payload, parent=None):
        """Run a queued call here and now (task_always_eager, apply()): an EagerResult."""
        if task is None:
            raise UnknownTask(f"cannot run {name!r} eagerly: it is not registered in this process")
        args, kwargs, options = _unpack_call(payload)  # exactly what a worker would receive
        return self._run_here(task, task_id, args, kwargs, parent, payload, options)

    def _run_here(self, task, task_id, args, kwargs, parent=None, payload=None, options=None):
        """Run a call through the worker's steps (_task_started, _conclude), with its
        hooks and signals; a retry runs again at once, as in Celery's eager mode, until
        the task ends or its retry budget does. An EagerResult."""
        previous = getattr(_request, "current", None)
        if parent is None:
            parent = previous
        ids = {"parent_id": parent.id if parent else None,
               "root_id": (parent.root_id or parent.id) if parent else None}
        hostname, retries, errors = socket.gethostname(), 0, None
        while True:
            request = _Request(task_id, args, kwargs, retries, retries + 1, task.name,
                               hostname, is_eager=True, options=options,
                               ignore_result=task.ignore_result, **ids)
            _request.current = request
            _task_started(task, request, args, kwargs)
            started = time.monotonic()
            value = exc = tb = None
            try:
                value = _entry(task, request)(*args, **kwargs)
                if task.is_async:
                    value = _await_here(_with_request(value, request))
            except Exception as error:
                exc, tb = error, _traceback.format_exc()
            finally:
                _request.current = previous
            end = _conclude(task, request, args, kwargs, value, exc, tb, stored_max=None,
                            default_max=self.conf["task_max_retries"], errors=errors,
                            started=started)
            errors = end.errors or errors
            if end.state != RETRY or isinstance(end.value, Reject):
                break
            retries += 1
        # A success reads back the value a worker would store and get() would read.
        value = _unpack(end.stored) if end.state == SUCCESS else end.value
        return EagerResult(task_id, self, end.state, value, end.traceback, payload=payload,
                           name=task.name, retries=retries, errors=errors, **ids)


class Task:
    """A registered task. Call it to run inline; delay()/apply_async() to queue it."""

    # Celery's names and defaults.
    _OPTIONS = {"name", "queue", "priority", "bind", "max_retries", "autoretry_for",
                "retry_backoff", "retry_backoff_max", "retry_jitter", "default_retry_delay",
                "time_limit", "soft_time_limit", "ignore_result", "base", "rate_limit",
                "unique", "typing", "retry_kwargs", "expires", "throws", "acks_late",
                "track_started", "serializer", "pydantic", "pydantic_strict",
                "pydantic_context", "pydantic_dump_kwargs", "concurrency",
                "concurrency_per_key"}
    _HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")
    # The defaults of the options a decorator does not give. A base class (``base=``) may
    # set its own as class attributes, as Celery's guide does (BaseTaskWithRetry).
    queue = priority = time_limit = soft_time_limit = rate_limit = None
    concurrency = concurrency_per_key = None   # global limits of STARTED rows (see README)
    autoretry_for = ()
    retry_backoff = False
    retry_backoff_max = 600
    retry_jitter = True
    default_retry_delay = 180
    ignore_result = False
    unique = False
    bind = False
    typing = True           # check a call's arguments against the function when it is queued
    retry_kwargs = None     # autoretry's retry() arguments: {"max_retries": 5, "countdown": 2}
    expires = None          # of every call that gives none: seconds, or a datetime
    throws = ()             # expected errors: their failure is logged without a traceback
    # Celery's, with litequeue's behaviour whatever their value: a row is acknowledged when
    # its outcome commits (acks_late), STARTED is always recorded, the format is msgpack.
    acks_late = True
    track_started = True
    serializer = "msgpack"
    _CLASS_DEFAULTS = ("queue", "priority", "bind", "autoretry_for", "retry_backoff",
                       "retry_backoff_max", "retry_jitter", "default_retry_delay", "time_limit",
                       "soft_time_limit", "ignore_result", "rate_limit", "unique", "typing",
                       "concurrency", "concurrency_per_key")
    _PLAIN_OPTIONS = ("retry_kwargs", "expires", "throws", "acks_late", "track_started",
                      "serializer")

    def __init__(self, app=None, fn=None, name=None, max_retries=_UNSET, **options):
        if app is None:      # a class-based task, made before app.register_task() binds it
            return
        for key in self._PLAIN_OPTIONS:           # kept as given, checked where used
            if key in options:
                setattr(self, key, options.pop(key))
        unknown = set(options) - set(self._CLASS_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        (queue, priority, bind, autoretry_for, retry_backoff, retry_backoff_max, retry_jitter,
         default_retry_delay, time_limit, soft_time_limit, ignore_result, rate_limit,
         unique, typing, concurrency, per_key) = (options.get(key, getattr(type(self), key))
                                                  for key in self._CLASS_DEFAULTS)
        self.typing = bool(typing)
        self._accepts = None               # _Accepts of fn, made on the first checked call
        max_retries = self._own_max_retries(max_retries)
        default_name, module = _task_name_for(fn)
        if inspect.isasyncgenfunction(getattr(fn, "__func__", fn)):
            raise ConfigurationError(
                f"{getattr(fn, '__qualname__', fn)!r} is an async generator: a task returns "
                "one result; make it an async def that returns a list, or a sync generator "
                "consumer")
        # Coroutine functions run on the worker process's event loop.
        self.is_async = inspect.iscoroutinefunction(getattr(fn, "__func__", fn))
        self.rate_limit = rate_limit
        self._rate = _parse_rate(rate_limit)
        self.concurrency = _checked_slots("concurrency", concurrency)
        self.concurrency_per_key = _checked_slots("concurrency_per_key", per_key)
        if not isinstance(unique, bool):
            raise ConfigurationError(f"unique must be True or False, not {unique!r}")
        self.unique = unique
        self.ignore_result = bool(ignore_result)
        # The hooks a subclass overrides: only those are called, and none costs a run.
        self._hooked = {hook for hook in self._HOOKS
                        if getattr(type(self), hook) is not getattr(Task, hook)}
        self.app = app
        self.fn = fn
        self.name = _checked_name(name or default_name)
        self.module = module
        self.queue = None if queue is None else _checked_text("queue", queue, _QUEUE_MAX)
        self.priority = None if priority is None else _checked_priority(priority)
        self.bind = bind
        self._max_retries = max_retries
        self.autoretry_for = tuple(autoretry_for)
        if not all(isinstance(t, type) and issubclass(t, BaseException)
                   for t in self.autoretry_for):
            raise ConfigurationError("autoretry_for takes exception classes")
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.retry_jitter = retry_jitter
        self.default_retry_delay = default_retry_delay
        for key, limit in (("time_limit", time_limit), ("soft_time_limit", soft_time_limit)):
            if limit is not None and (not isinstance(limit, (int, float)) or limit <= 0):
                raise ConfigurationError(f"{key} must be a positive number of seconds")
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn
        self._runner = self._worker_callable(fn, bind)

    def _worker_callable(self, fn, bind):
        """What a worker calls (_entry): the function itself, unless the class has its own
        run() or __call__ (None: call the task, which reaches run())."""
        cls = type(self)
        if cls.__call__ is not Task.__call__:
            return None
        if cls.run is not Task.run:
            return self.run
        return functools.partial(fn, self) if bind else fn

    def _own_max_retries(self, given):
        """max_retries as given, else a base class's plain attribute (which hides the
        property below, so the instance keeps its own value), else _UNSET (the app's)."""
        own = next(c.__dict__["max_retries"] for c in type(self).__mro__
                   if "max_retries" in c.__dict__)
        if not isinstance(own, property):
            given = own if given is _UNSET else given
            self.__dict__["max_retries"] = given
        if given not in (None, _UNSET) and (isinstance(given, bool) or
                                            not isinstance(given, int) or given < 0):
            raise ConfigurationError(f"max_retries must be a whole number >= 0 or None (no "
                                     f"bound), not {given!r}")
        return given

    def _registry_row(self, now):
        """Its registry row, with its rate limit (rate, interval: None for none)."""
        rate, interval = self._rate or (None, None)
        return {"name": self.name, "module": self.module, "now": now, "rate": rate,
                "interval": interval, "concurrency": self.concurrency,
                "per_key": self.concurrency_per_key}

    # What task_annotations may set (Celery's attribute names).
    _ANNOTATABLE = frozenset(_CLASS_DEFAULTS) - {"bind", "typing", "unique"} | \
        {"max_retries", "retry_kwargs", "expires", "throws"}

    def _annotate(self, annotations):
        """Apply the app's task_annotations: the "*" entry, then this task's own."""
        for key in ("*", self.name):
            for option, value in (annotations.get(key) or {}).items():
                if option not in self._ANNOTATABLE:
                    raise ConfigurationError(f"task_annotations[{key!r}] sets {option!r}, "
                                             f"which is not a task option litequeue can set")
                if option == "rate_limit":
                    self._rate = _parse_rate(value)
                if option in ("concurrency", "concurrency_per_key"):
                    value = _checked_slots(option, value)
                if option == "max_retries":
                    self._max_retries = self._own_max_retries(value)
                else:
                    setattr(self, option, value)

    @property
    def max_retries(self):
        """Retries this task may use: its own max_retries (None: no bound), else the
        app's task_max_retries."""
        return self.app.conf["task_max_retries"] if self._max_retries is _UNSET \
            else self._max_retries

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None,
              max_retries=None, **options):
        """Ask the worker to run this call again later: ``raise self.retry(exc=exc)``.
        In eager mode and apply() it runs again at once, as in Celery.

        Raises Retry (it also returns it, so ``raise self.retry(...)`` reads naturally).
        countdown defaults to the task's backoff policy. The retry runs the same call
        with its own options: Celery's args, kwargs and apply_async options here are
        accepted and ignored, with one warning each.
        """
        if isinstance(args, BaseException) and exc is None:
            args, exc = None, args        # retry(exc): litequeue's own order, kept
        given = {"args": args, "kwargs": kwargs, **options}
        for key in sorted(k for k, v in given.items() if v is not None):
            _warn_setting(f"retry() option {key!r} is ignored: a retry runs the same call "
                          "(see README, What does not carry over)")
        raise Retry(exc=exc, countdown=countdown, eta=eta, max_retries=max_retries)

    def backoff(self, retries):
        """Seconds to wait before retry number retries+1, by the task's policy."""
        if not self.retry_backoff:
            return float(self.default_retry_delay)
        factor = 1 if self.retry_backoff is True else self.retry_backoff
        countdown = min(self.retry_backoff_max, factor * 2.0 ** min(retries, 64))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)  # "full jitter", as Celery does
        return float(countdown)

    def __repr__(self):
        return f"<@task: {self.name} of {self.app.main if self.app else '?'} at " \
            f"0x{id(self.app):x}>"

    def run(self, *args, **kwargs):
        """The task's own function, called with these arguments (what a worker runs)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        """Run the task here and now, as a plain function call: self.request is one of
        its own (called_directly), as in Celery."""
        current = _request.current
        if current is not None and current.entering is self:
            current.entering = None      # a worker's run, through a class's own __call__
            return self.run(*args, **kwargs)
        token = _RequestSlot._var.set(_Request(args=args, kwargs=kwargs, name=self.name,
                                               called_directly=True))
        try:
            return self.run(*args, **kwargs)
        finally:
            _RequestSlot._var.reset(token)

    # Hooks a base class (``@app.task(base=MyTask)``) may override, with Celery's
    # arguments. They run after the task, in the worker or in eager mode (_task_ended);
    # one that raises is logged.
    def before_start(self, task_id, args, kwargs):
        """The task is about to run (after the worker has made its request)."""

    def on_success(self, retval, task_id, args, kwargs):
        """The task returned retval."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """The task failed for good (no retry left); einfo.traceback is the text."""

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        """The task raised and will be retried."""

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        """After any of the above; status is the state recorded."""

    def AsyncResult(self, task_id):
        """The result handle of a task id."""
        return AsyncResult(task_id, self.app)

    def update_state(self, task_id=None, state=None, meta=None, **kwargs):
        """Record a custom state and its meta (``state="PROGRESS", meta={"current": 3,
        "total": 10}``): AsyncResult.state and .info show them while the task runs.

        Without task_id it is the running task's own; its writes are coalesced to a few
        per second, so a task that reports in a tight loop cannot flood the write lock
        (the latest report always reaches the database). A finished state cannot be set
        here, but Celery's custom FAILURE or SUCCESS before raising Ignore can: the task
        still ends as it returns or raises."""
        if not isinstance(state, str) or not state:
            raise ConfigurationError(f"update_state needs a state name, not {state!r}")
        if state in (WAITING, SCHEDULED, PENDING, EXPIRED, IGNORED, REJECTED):
            raise ConfigurationError(f"update_state cannot set {state}: it is a state of "
                                     "a task that has not run or that ended")
        try:
            blob = _pack([state, meta])
            _unpack(blob)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"meta of update_state cannot be encoded as msgpack: "
                                     f"{exc}") from None
        current = getattr(_request, "current", None)
        if task_id is None or (current is not None and task_id == current.id):
            if current is None or current.id is None:
                raise LitequeueError("update_state() without task_id works only inside a "
                                     "running task")
            current.report(blob)
            return
        if not self.app._storage().set_meta(blob, task_id=_checked_text("task_id", task_id, _ID_MAX)):
            raise TaskNotFound(f"no unfinished task with id {task_id!r}")

    @property
    def request(self):
        """The running call's request (id, args, kwargs, retries...); outside any call, an
        empty one that says called_directly."""
        return getattr(_request, "current", None) or _Request(name=self.name,
                                                              called_directly=True)

    def delay(self, *args, **kwargs):
        """Queue a call with these arguments; returns its AsyncResult."""
        app = self.app
        if self.name in app._noted and not self.unique and self.expires is None and not (
                app.conf["task_always_eager"] or signals.before_task_publish.receivers or
                signals.after_task_publish.receivers):
            self._check_call(args, kwargs)
            return app._send_plain(self, args, kwargs)
        return self.apply_async(args, kwargs)

    def _check_call(self, args, kwargs):
        """TypeError, in the caller, for arguments the function cannot take (Celery's
        typing=True): a cheap count of positional arguments, a bind() when keywords are
        given."""
        if not self.typing:
            return
        accepts = self._accepts
        if accepts is None:
            accepts = self._accepts = _Accepts(self.fn, self.bind)
        accepts.check(self.name, args, kwargs)

    def apply_async(self, args=None, kwargs=None, task_id=None, priority=None, queue=None,
                    countdown=None, eta=None, expires=None, link=None, link_error=None,
                    **options):
        """Queue a call with options (Celery's names); returns its AsyncResult.

        countdown: seconds from now; eta: a datetime (naive: in the app's timezone);
        expires: seconds from now or a datetime, after which it never starts; link and
        link_error: signatures (or lists of them) queued when it succeeds or fails, in
        the transaction that records its end.
        """
        if (args is None or isinstance(args, (list, tuple))) and \
                (kwargs is None or isinstance(kwargs, dict)):    # else _task_row says why
            self._check_call(args or (), kwargs or {})
        if link is not None or link_error is not None:
            given = {"task_id": task_id, "priority": priority, "queue": queue,
                     "countdown": countdown, "eta": eta, "expires": expires}
            options.update((k, v) for k, v in given.items() if v is not None)
            return Signature(self, args or (), kwargs, options).apply_async(
                link=link, link_error=link_error)
        return self.app._send(self.name, args, kwargs, task=self, task_id=task_id,
                              priority=priority, queue=queue, countdown=countdown, eta=eta,
                              expires=expires, **options)

    def apply(self, args=None, kwargs=None, throw=None, **options):
        """Run the task here and now, as a worker would (an EagerResult); throw (default:
        task_eager_propagates) raises its exception instead."""
        return self.app._eager_outcome(Signature(self, args or (), kwargs).apply(**options),
                                       throw)

    def replace(self, sig):
        """Replace the running task with sig (a signature, chain, group or chord), as
        Celery's: the task's id and its place in a chain, group or chord go to sig's last
        step, so whoever waits on the id gets sig's result. It raises Ignore to end the
        run (``return self.replace(sig)`` reads best); outside a worker it runs sig here
        and returns its result."""
        if sig.get("subtask_type") == "chain" and not sig["kwargs"]["tasks"]:
            raise ConfigurationError("Cannot replace with an empty chain")
        request = getattr(_request, "current", None)
        if request is None or request.meta_writer is None:
            return sig.apply().get(disable_sync_subtasks=False)
        sig._replacing(request)
        raise _Replaced(f"replaced by {sig!r}")

    def add_to_chord(self, sig, lazy=False):
        """Add sig (a task, chain or chord) to the chord whose header the running task is
        in, as Celery's: the body waits for it too and gets its result after the others.
        It is queued at once, with the chord's new size, in one transaction; its id comes
        from the running task's, so a run repeated after a crash adds it only once."""
        if lazy:
            raise ConfigurationError("add_to_chord(lazy=True): litequeue queues the added "
                                     "task at once, with the chord's new size")
        request = getattr(_request, "current", None)
        if request is None or request.meta_writer is None or not request.group:
            raise ValueError("Current task is not member of any chord")
        count = request.__dict__.get("added_to_chord", 0)
        request.__dict__["added_to_chord"] = count + 1
        sig = sig._copy()
        if sig.id is None:
            sig.set(task_id=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                           f"litequeue:{request.id}:{count}")))
        return sig._joining(self.app, request)

    def map(self, it):
        """A signature that calls this task once per item of it, in one worker task, and
        returns the list of results: ``~xsum.map([range(10), range(100)])``."""
        return Signature(self.app._builtins["litequeue.map"], (),
                         {"task": self.name, "it": [list(i) if isinstance(i, range) else i
                                                    for i in it]}, immutable=True)

    def starmap(self, it):
        """map() with each item spread as the arguments: ``~add.starmap([(2, 2), (4, 4)])``."""
        return Signature(self.app._builtins["litequeue.starmap"], (),
                         {"task": self.name, "it": [list(i) for i in it]}, immutable=True)

    def chunks(self, it, n):
        """The calls of it (argument tuples) cut into tasks of n calls each: a group of
        starmaps, whose result is a list of lists."""
        return chunks(self, it, n)

    def s(self, *args, **kwargs):
        """A signature: this task with these arguments, to queue later, chain, link, or
        schedule with add_periodic_task."""
        return Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        """An immutable signature: it never receives a parent's result."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args=None, kwargs=None, immutable=False, **options):
        """A signature with apply_async options, as Celery's Task.signature."""
        return Signature(self, args or (), kwargs, options, immutable=immutable)

    subtask = signature


LiteQueue.Task = Task           # app.Task: the base class of its tasks, as Celery's


class _Accepts:
    """What a task's function accepts (Task._check_call): the fewest and most positional
    arguments, and its signature for calls with keywords (None: it cannot be read)."""

    __slots__ = ("low", "high", "simple", "signature")

    def __init__(self, fn, bind):
        self.low, self.high, self.simple, self.signature = 0, math.inf, False, None
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        params = list(sig.parameters.values())[1 if bind else 0:]      # bind: self
        self.signature = sig.replace(parameters=params)
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                      p.POSITIONAL_OR_KEYWORD)]
        self.low = sum(p.default is p.empty for p in positional)
        if not any(p.kind == p.VAR_POSITIONAL for p in params):
            self.high = len(positional)
        self.simple = not any(p.kind == p.KEYWORD_ONLY and p.default is p.empty
                              for p in params)

    def check(self, name, args, kwargs):
        if not kwargs and self.simple and self.low <= len(args) <= self.high:
            return
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}() {exc} (queued nothing; typing=False on the task "
                            "skips this check, as in Celery)") from None


def _entry(task, request):
    """What a worker or an eager run calls for a task: its run() (task._runner), or the
    task class's own __call__ (Celery's rule), which then reaches run() under request,
    not a new one."""
    runner = task._runner
    if runner is None:
        request.entering = task
        return task
    return runner


# ---------------------------------------------------------------------------
# Canvas: signatures, chains, groups and chords
# ---------------------------------------------------------------------------

def _as_list(value):
    """link=/link_error= take one signature or a list of them."""
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, _Canvas):
            raise TypeError(f"link and link_error take signatures (task.s(...)), not "
                            f"{type(v).__name__}")
    return values


def _item(key, inner=None):
    """A property kept in the canvas's dict (Celery's signature is a dict), at key, or at
    kwargs[inner] (a chain's or group's tasks, a chord's header and body)."""
    if inner is None:
        return property(lambda self: self[key],
                        lambda self, value: dict.__setitem__(self, key, value))
    return property(lambda self: self["kwargs"][inner],
                    lambda self, value: self["kwargs"].__setitem__(inner, value))


def _is_task(node):
    """Is node one task's signature (not a chain, group or chord, which are Signatures
    too, as in Celery)?"""
    return isinstance(node, _Canvas) and node._single


class _Canvas(dict):
    """What signatures, chains, groups and chords share: ``|``, delay(), apply_async()
    (all rows in one transaction, checked before any is written) and apply() (inline).
    Each is a dict in Celery's form ({"task", "args", "kwargs", "options", "subtask_type",
    "immutable"}), so json.dumps() and msgpack carry it as Celery's does."""

    options = _item("options")
    immutable = _item("immutable")
    __hash__ = None
    _single = False                      # a chain, group or chord: many tasks

    def _start(self, kind, options, **kwargs):
        """The dict of a chain, group or chord (kind), with kwargs as its kwargs."""
        dict.__init__(self, task=f"celery.{kind}", args=(), kwargs=kwargs, options=options,
                      subtask_type=kind, immutable=False)

    def copy(self):
        return self._copy()

    def __ior__(self, other):            # not dict's in-place union: sig |= other chains
        return self.__or__(other)

    def __or__(self, other):
        if not isinstance(other, _Canvas):
            return NotImplemented
        if isinstance(self, group) and not isinstance(self, chunks):
            return chord(self, other)            # Celery's: a group then a task is a chord
        if isinstance(self, chain) and self.tasks and _is_task(other) and \
                isinstance(self.tasks[-1], group) and not isinstance(self.tasks[-1], chunks) \
                and self.tasks[-1].tasks:
            joined = self._copy()                # so is a chain ending in one, then a task
            joined.tasks[-1] = chord(joined.tasks[-1], other)
            return joined
        return chain(self, other)

    @staticmethod
    def _flatten(tasks, kind):
        """The members of a chain or group (kind): given one by one or as one iterable,
        each a signature or canvas; a member of the same kind with no options of its own
        is spread out in its place, and an empty chain (or, in a chain, an empty group)
        is left out, as Celery does: it has nothing to run."""
        if len(tasks) == 1 and not isinstance(tasks[0], _Canvas):
            tasks = tuple(tasks[0])
        flat = []
        for task in tasks:
            if not isinstance(task, _Canvas) and callable(getattr(task, "s", None)):
                task = task.s()                  # a task itself, as Celery takes it
            if not isinstance(task, _Canvas):
                raise TypeError(f"{kind.__name__}() takes task signatures (task.s(...)), "
                                f"not {type(task).__name__}")
            empty_kinds = ("chain", "group") if kind is chain else ("chain",)
            if task.get("subtask_type") in empty_kinds and not task.tasks:
                continue
            flat.extend(task.tasks if isinstance(task, kind) and not task.options
                        else [task])
        return flat

    def _options_copy(self):
        """Its options, with link lists copied (a copy must not share them)."""
        return {k: _followers(v) if k in ("link", "link_error") else v
                for k, v in self.options.items()}

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def __invert__(self):
        """``~sig``: queue it and wait for its result, as Celery."""
        return self.apply_async().get()

    @classmethod
    def from_dict(cls, d, app=None):
        """The signature (chain, group, chord) of a dict form (Celery's)."""
        return signature(d, app=app)

    def stamp(self, visitor=None, append_stamps=False, **headers):
        """Stamp it (Celery's stamping): every task of the canvas gets the headers, and
        what visitor (a StampingVisitor) returns for it; a running task reads them in
        self.request.stamps and stamped_headers. append_stamps keeps earlier values
        beside the new ones (as a list) instead of replacing them."""
        _stamp_node(self, visitor, append_stamps, headers)
        return self

    def _as_dict(self):
        """A plain dict of its dict form (nested canvases plain too), which a signature
        given as a task's argument (or returned as its result) travels as, and
        signature(d) rebuilds."""
        return _plain(self)

    def _replacing(self, request):
        """Task.replace() in a worker: queue this, then a last step that passes its result
        on under the running task's id, in the transaction that takes the running row away
        (its group, chord and followers go to that step)."""
        app = self._find_app()
        _, seq, attempt = request.meta_writer
        empty = isinstance(self, group) and not self.tasks     # its result is []
        heir = Signature(app._builtins[_GATHER], ([],) if empty else (),
                         immutable=empty).set(
            task_id=request.id, queue=request.queue, priority=request.priority)
        plan = _Plan(app, {})
        plan.parent = request.parent_id
        (self._copy() | heir)._attach(plan, ((), {}), None, None)   # a group: a chord
        plan.commit(replacing={"id": request.id, "seq": seq, "attempt": attempt})

    def _joining(self, app, request):
        """Task.add_to_chord() in a worker: queue this as a member of request's chord."""
        _, seq, attempt = request.meta_writer
        plan = _Plan(app, {})
        plan.parent = request.id
        result, lasts = self._attach(plan, ((), {}), None, None)
        if len(lasts) != 1:
            raise ConfigurationError("add_to_chord takes a task, chain or chord (one "
                                     "task must end it)")
        try:
            plan.commit(joining={"chord": request.group, "row": lasts[0], "seq": seq,
                                 "attempt": attempt})
        except DuplicateTaskId:          # added by an earlier run of the same task?
            if (AsyncResult(lasts[0]["id"], app)._fetch() or {}).get("group_id") != \
                    request.group:
                raise
        return result

    def link(self, callback):
        """Queue callback (a signature) after this succeeds; returns callback. Linking
        the same signature twice links it once, as in Celery."""
        self._add_follower("link", callback)
        return callback

    def link_error(self, errback):
        """Queue errback after this fails; returns errback (once, however often it is
        linked)."""
        self._add_follower("link_error", errback)
        return errback

    def _add_follower(self, key, followers):
        known = self.options.get(key)
        known = self.options[key] = _followers(known)   # one, a list, Celery's dicts
        for follower in _as_list(followers):
            if not any(_plain(follower) == _plain(k) for k in known):   # Celery's rule
                known.append(follower)

    def on_error(self, errback):
        """link_error() that returns self, for chaining calls."""
        self.link_error(errback)
        return self

    def set(self, immutable=None, **options):
        """Set apply_async options (queue, priority, countdown, task_id...); returns self."""
        if immutable is not None:
            self.immutable = bool(immutable)
        self.options.update(options)
        return self

    def _find_app(self):
        for node in self._nodes():
            app = getattr(node, "app", None)
            if app is not None:
                return app
        return _current_app()

    def apply_async(self, args=None, kwargs=None, **options):
        """Queue the whole canvas; returns its result handle. Options other than link,
        link_error and task_id apply to every task that does not set its own."""
        app = self._find_app()
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        if not self._single and self.get("args") and not self.immutable:
            args = (*(args or ()), *self["args"])     # a clone's arguments, as Celery's
        link, link_error = options.pop("link", None), options.pop("link_error", None)
        task_id = options.pop("task_id", None)
        node = self
        if link is not None or link_error is not None or task_id is not None:
            node = copy.copy(self)            # the caller's canvas is left as it was
            node.options = dict(self.options)
            node.options["link"] = list(self.options.get("link") or ()) + _as_list(link)
            node.options["link_error"] = list(self.options.get("link_error") or ()) + \
                _as_list(link_error)
            if task_id is not None:
                node.options["task_id"] = task_id
        if app.conf["task_always_eager"]:
            return app._eager_outcome(node.apply(args, kwargs, **options))
        if _is_task(node) and not node.options.get("link") and \
                not node.options.get("link_error"):
            return node._send(app, args, kwargs, options)
        plan = _Plan(app, options)
        given = (tuple(args or ()), dict(kwargs or {}))
        if isinstance(node, group) and node._flat(app):
            with plan.scoped(node.options):
                result, _ = plan.flat_group(node, given)
        else:
            result, _ = node._attach(plan, given, None, None)
        plan.commit()
        return _without_gathering(result)

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)


def _once_qualified(node, text):
    """Celery's repr of a canvas names the first task's module once: later tasks of the
    same module go by their bare names ("tasks.add(2, 2) | add(4)")."""
    first = node
    while not _is_task(first):
        first = first.tasks[0] if getattr(first, "tasks", None) else None
        if first is None:
            return text
    module = first.task.rpartition(".")[0]
    if not module:
        return text
    prefix = module + "."
    at = text.find(prefix)
    if at < 0:
        return text
    at += len(prefix)
    return text[:at] + text[at:].replace(prefix, "")


class StampingVisitor:
    """Celery's stamping visitor: subclass it and return the stamps (a dict) each task
    of a canvas gets; the default methods add none."""

    def on_signature(self, sig, **headers):
        return {}

    def on_group_start(self, group, **headers):
        return {}

    def on_group_end(self, group, **headers):
        return None

    def on_chain_start(self, chain, **headers):
        return {}

    def on_chain_end(self, chain, **headers):
        return None

    def on_chord_header_start(self, sig, **headers):
        return self.on_group_start(sig.header, **headers)

    def on_chord_header_end(self, sig, **headers):
        return self.on_group_end(sig.header, **headers)

    def on_chord_body(self, sig, **headers):
        return {}

    def on_callback(self, callback, **headers):
        return {}

    def on_errback(self, errback, **headers):
        return {}


def _stamp_node(node, visitor, append, headers):
    """Canvas.stamp(): walk node, the visitor's stamps joining the headers on the way."""
    def asked(method, target):
        found = getattr(visitor, method)(target, **headers) if visitor is not None else None
        return {**headers, **(found or {})}

    if _is_task(node):
        _put_stamps(node.options, asked("on_signature", node), append)
        for key, method in (("link", "on_callback"), ("link_error", "on_errback")):
            followers = node.options.get(key) or []
            if not followers:
                continue
            if isinstance(followers, dict):      # one follower, maybe in Celery's dict form
                followers = [followers]
            node.options[key] = followers = [
                f if isinstance(f, _Canvas) else signature(f) for f in followers]
            for follower in followers:
                _stamp_node(follower, visitor, append, asked(method, follower))
    elif isinstance(node, chord):
        inner = asked("on_chord_header_start", node)
        for member in node.header.tasks:
            _stamp_node(member, visitor, append, inner)
        if visitor is not None:
            visitor.on_chord_header_end(node, **headers)
        if node.body is not None:
            _stamp_node(node.body, visitor, append, asked("on_chord_body", node))
    else:
        start, end = ("on_chain_start", "on_chain_end") if isinstance(node, chain) else \
            ("on_group_start", "on_group_end")
        inner = asked(start, node)
        for member in node.tasks:
            _stamp_node(member, visitor, append, inner)
        if visitor is not None:
            getattr(visitor, end)(node, **headers)


def _put_stamps(options, stamps, append):
    """Stamps into a signature's options, as Celery keeps them: each under its name, and
    their names in stamped_headers."""
    for name, value in stamps.items():
        if append and name in options:
            old = options[name] if isinstance(options[name], list) else [options[name]]
            value = old + (value if isinstance(value, list) else [value])
        options[name] = value
    options["stamped_headers"] = sorted(set(options.get("stamped_headers") or ()) |
                                        set(stamps))


def _plain(value):
    """A canvas's dict form as plain dicts and lists, all the way down."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _options_from_dict(options):
    return {k: [signature(c) for c in v] if k in ("link", "link_error") else v
            for k, v in (options or {}).items()}


class Signature(_Canvas):
    """A task with (some of) its arguments and apply_async options: Celery's signature,
    made by ``add.s(2)``, ``add.si(2, 2)`` or ``signature("tasks.add", (2, 2))``.

    Arguments given when it is applied (or a parent's result, in a chain or link) go
    before its own, as in Celery; an immutable signature takes none of them.
    """

    task = _item("task")
    args = _item("args")
    kwargs = _item("kwargs")
    _single = True

    def __init__(self, task, args=(), kwargs=None, options=None, immutable=False, app=None):
        if task.__class__ is Task and args.__class__ is tuple and not options and \
                (kwargs is None or kwargs.__class__ is dict):     # task.s(...): the usual case
            self.type, self.app = task, task.app
            dict.__init__(self, task=task.name, args=args, kwargs=dict(kwargs or {}),
                          options={}, subtask_type=None, immutable=bool(immutable),
                          chord_size=None)
            return
        if isinstance(task, dict):               # Celery's serialised form
            args, kwargs = task.get("args", args), task.get("kwargs", kwargs)
            options = {**_options_from_dict(task.get("options")), **(options or {})}
            immutable = task.get("immutable", immutable)
            task = task.get("task")
        if isinstance(task, Task):
            self.type, name, self.app = task, task.name, task.app
        elif isinstance(task, str):
            self.type, name, self.app = None, _checked_name(task), app
        else:
            raise WrongType(f"a signature names a task (a Task or its name), not "
                            f"{_saferepr(task, 100)}")
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        dict.__init__(self, task=name, args=tuple(args), kwargs=dict(kwargs or {}),
                      options=dict(options or {}), subtask_type=None,
                      immutable=bool(immutable), chord_size=None)

    def __repr__(self):
        if self.task in ("litequeue.map", "litequeue.starmap") and \
                set(self.kwargs) == {"task", "it"}:
            star = "*" if self.task == "litequeue.starmap" else ""
            return f"[{self.kwargs['task']}({star}x) for x in {reprlib.repr(self.kwargs['it'])}]"
        return _call_text(self.task, self.args, self.kwargs)


    def __eq__(self, other):
        return isinstance(other, Signature) and (self.task, self.args, self.kwargs,
                                                 self.immutable) == \
            (other.task, other.args, other.kwargs, other.immutable)

    __hash__ = None

    @property
    def id(self):
        """The task id it will have, once frozen or set (None before)."""
        return self.options.get("task_id")

    @property
    def name(self):
        return self.task

    def _nodes(self):
        return [self]

    def _copy(self):
        return Signature(self.type or self.task, self.args, self.kwargs,
                         self._options_copy(), self.immutable, self.app)

    def clone(self, args=None, kwargs=None, **options):
        """A copy, with more arguments (before its own) and options. A chain, group or
        chord keeps the arguments for its first tasks, as Celery's; its kwargs are its
        structure, so keyword arguments go to a task's signature only."""
        sig = self._copy()
        if not self.immutable:
            sig.args = (*(args or ()), *self.args)
            if self._single:
                sig.kwargs = {**self.kwargs, **(kwargs or {})}
        sig.options.update(options)
        return sig

    def freeze(self, _id=None):
        """Fix its task id now; returns the AsyncResult it will have."""
        self.options.setdefault("task_id", _id or _new_id())
        return AsyncResult(self.id, self.app or _current_app())

    def _resolve(self, app):
        """The Task to run, or None for a name this process does not define but a worker
        or producer of the database registered; UnknownTask for any other name."""
        if self.type is not None:
            return self.type
        task = app.tasks.get(self.task)
        if task is None and self.task not in app._known_remote:
            registry = app._storage().registry()
            if self.task not in registry:
                raise UnknownTask(_unknown_task_message(self.task, registry))
            app._known_remote.add(self.task)
        return task

    def _send(self, app, args, kwargs, defaults):
        """A signature with nothing to follow it is a plain call: delay()'s own path. The
        options given now win over the signature's own, as in Celery."""
        call_args, call_kwargs = self._merged(tuple(args or ()), dict(kwargs or {}))
        options = {**self.options, **defaults}
        options.pop("link", None)
        options.pop("link_error", None)
        task = self._resolve(app)
        if task is not None:
            task._check_call(call_args, call_kwargs)
        return app._send(self.task, call_args, call_kwargs, task=task, **options)

    def _merged(self, args, kwargs):
        if self.immutable:
            return self.args, self.kwargs
        return (*args, *self.args), {**self.kwargs, **kwargs}

    def __call__(self, *args, **kwargs):
        """Run the task function here with these arguments (before its own), as Celery."""
        task = self._resolve(self._find_app())
        if task is None:
            raise UnknownTask(f"cannot call {self.task!r} here: it is not defined in this "
                              "process")
        call_args, call_kwargs = self._merged(args, kwargs)
        return task(*call_args, **call_kwargs)

    def _attach(self, plan, given, after, waits):
        call_args, call_kwargs = self._merged(*given)
        row = plan.row(self, call_args, call_kwargs, after, waits)
        result = AsyncResult(row["id"], plan.app)
        if self.task == _GATHER:
            result._gathers = True        # a step of ours, not the user's: see _follows
        plan.follow(self.options, [row])
        return result, [row]

    def apply(self, args=None, kwargs=None, **options):
        """Run it here and now, as a worker would, then its links or errbacks (an
        EagerResult)."""
        app = self._find_app()
        task = self._resolve(app)
        if task is None:
            raise UnknownTask(f"cannot run {self.task!r} here: it is not defined in this "
                              "process")
        call_args, call_kwargs = self._merged(tuple(args or ()), dict(kwargs or {}))
        task_id = self.options.get("task_id") or options.get("task_id") or _new_id()
        current = getattr(_request, "current", None)
        result = app._run_eagerly(task, task.name, task_id,
                                  _pack_envelope(task.name, call_args, call_kwargs),
                                  parent=current)
        _eager_follow(self.options, result)
        return result


def _eager_follow(options, result):
    """apply()'s links and errbacks, run inline after the task they follow."""
    if result.successful():
        for callback in options.get("link") or ():
            callback.apply((result.result,))
    elif result.failed():
        for errback in options.get("link_error") or ():
            _eager_errback(errback, result)


def _eager_errback(errback, failed):
    """Run an errback (a signature, chain or group) inline for a failed EagerResult: its
    first tasks get the errback arguments as a worker would pass them (the request object
    cannot go through msgpack, so they are not packed first), the rest of a chain follows."""
    if isinstance(errback, group):
        for member in errback.tasks:
            _eager_errback(member, failed)
        return None
    steps = errback._steps() if isinstance(errback, chain) else [errback]
    first, rest = steps[0], steps[1:]
    if not _is_task(first):
        raise ConfigurationError("an errback must start with a signature")
    app = first._find_app()
    task = first._resolve(app)
    if task is None:
        raise UnknownTask(f"cannot run {first.task!r} here: it is not defined in this process")
    args = first.args if first.immutable else (
        *_errback_args(task, failed, first.args, first.kwargs), *first.args)
    task_id = first.options.get("task_id") or _new_id()
    result = app._run_here(task, task_id, list(args), dict(first.kwargs))
    _eager_follow(first.options, result)
    for step in rest:
        if not result.successful():
            break
        result = step.apply((result.result,))
    return result


def _errback_args(task, failed, stored=(), stored_kwargs=None):
    """What an errback receives (Celery's rule): (request, exc, traceback) if its task
    takes more than one positional argument beside those its signature stores (args
    and kwargs) and is not bound, else the failed id."""
    if task is None or task.bind or _positional_arity(task.fn, stored, stored_kwargs) <= 1:
        return (failed.id,)
    row = failed._fetch() or {}
    args, kwargs = _row_call(row) if row else ([], {})
    request = _Request(failed.id, args, kwargs, retries=row.get("retries") or 0,
                       name=row.get("name"), parent_id=row.get("parent_id"),
                       root_id=row.get("root_id"), group=row.get("group_id"))
    return (request, failed.result, failed.traceback)


def _positional_arity(fn, args=(), kwargs=None):
    """How many positional arguments fn takes (a large number for *args), beside args
    and kwargs given already."""
    try:
        params = inspect.signature(functools.partial(fn, *args, **(kwargs or {})) if (
            args or kwargs) else fn).parameters.values()
    except (TypeError, ValueError):
        return _positional_arity(fn) if args or kwargs else 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 1 << 30
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def signature(varies, args=(), kwargs=None, options=None, app=None, immutable=False,
              **more_options):
    """A signature of a task by name (or a Task, a dict, or a signature to copy), as
    Celery's ``signature("tasks.add", args=(2, 2), countdown=10)``."""
    if isinstance(varies, _Canvas):
        return varies._copy()
    if isinstance(varies, dict) and varies.get("subtask_type") in _CANVAS_TYPES:
        kind, given = _CANVAS_TYPES[varies["subtask_type"]], varies.get("kwargs") or {}
        options = _options_from_dict(varies.get("options"))
        if kind is chord:
            return chord(signature(given["header"]), given.get("body") and
                         signature(given["body"]), **options)
        return kind(*[signature(t) for t in given.get("tasks") or ()], **options)
    return Signature(varies, args, kwargs, {**(options or {}), **more_options},
                     immutable=immutable, app=app)


subtask = signature


def _gathered(body):
    """What waits for a group's results (a chord's body): a group or chord (or a chain
    starting with one) goes behind a step that takes those results and passes them on to
    every first member; one row must wait for the chord."""
    first = body.tasks[0] if isinstance(body, chain) and body.tasks else body
    if isinstance(first, (group, chord)):
        return chain(Signature(body._find_app()._builtins[_GATHER]), body)
    return body


class chain(Signature):
    """Tasks run one after another, each receiving the previous one's result:
    ``chain(add.s(2, 2), add.s(4))`` or ``add.s(2, 2) | add.s(4)``. The result is the last
    task's AsyncResult, whose .parent leads back to the first. A task that does not
    succeed ends the rest of the chain the same way, and the chain's errbacks run once."""

    tasks = _item("kwargs", "tasks")
    _single = False
    __call__ = _Canvas.__call__

    def __init__(self, *tasks, **options):
        self._start("chain", options, tasks=self._flatten(tasks, chain))

    @property
    def id(self):
        """The id its result will have (its last task's), once frozen or set."""
        return self.options.get("task_id")

    def freeze(self, _id=None):
        """Fix its last task's id now (to _id if given); returns that task's result."""
        if not self.tasks:
            raise ConfigurationError("an empty chain has no task to freeze")
        result = self.tasks[-1].freeze(_id)
        self.options["task_id"] = result.id
        return result

    def __repr__(self):
        if not self.tasks:
            return "chain()"
        return _once_qualified(self, " | ".join(repr(t) for t in self.tasks))

    @property
    def app(self):
        return None

    def _nodes(self):
        return [n for t in self.tasks for n in t._nodes()]

    def _copy(self):
        return chain(*[t._copy() for t in self.tasks], **self._options_copy())

    def _steps(self):
        """The tasks, each group that something follows made a chord with it as the
        body, as Celery does (from the right: group, group, task nests two chords). A
        group of one task is that task, as Celery unrolls it in a chain."""
        steps = []
        for task in reversed(self.tasks):
            if isinstance(task, group) and not isinstance(task, chunks) and \
                    len(task.tasks) == 1:
                task = task._unrolled()
            if isinstance(task, group) and steps:
                task = chord(task, steps.pop(0))
            steps.insert(0, task)
        return steps

    def _attach(self, plan, given, after, waits):
        with plan.scoped(self.options):
            return self._attach_steps(plan, given, after, waits)

    def _attach_steps(self, plan, given, after, waits):
        steps = self._steps()
        if not steps:
            raise ConfigurationError("an empty chain has nothing to run")
        if self.options.get("task_id") is not None:
            steps[-1] = steps[-1]._copy().set(task_id=self.options["task_id"])
        result, lasts = None, None
        # The chain's errbacks follow every step, as Celery links them: the step that
        # fails queues them, and the steps it takes down never run (so never queue them).
        errbacks = {"link_error": self.options.get("link_error")}
        for i, step in enumerate(steps):
            if i == 0:
                res, new = step._attach(plan, given, after, waits)
            elif len(lasts) == 1:
                res, new = step._attach(plan, ((), {}), lasts[0], "link")
            else:
                res, new = self._after_group(plan, step, lasts)
            if result is not None:
                _follows(res, result)
            plan.follow(errbacks, new)
            result, lasts = res, new
        plan.follow({"link": self.options.get("link")}, lasts)
        return result, lasts

    @staticmethod
    def _after_group(plan, step, lasts):
        """A step after one that ended in a group (a chord whose body is a group): it
        waits for every task of that group, as a chord's body does."""
        group_id = lasts[0].get("group_id")
        if group_id is None or any(row.get("group_id") != group_id for row in lasts):
            raise ConfigurationError("a group inside a chain must be followed by a task "
                                     "(it becomes a chord)")
        if any(c["id"] == group_id for c in plan.chords):
            raise ConfigurationError("a chord whose body is a group and has a link cannot "
                                     "be followed by more steps: chain them after the link")
        for row in lasts:
            row["followers"] = 1
        start = len(plan.rows)
        res, new = _gathered(step)._attach(plan, ((), {}), None, "chord")
        plan.chords.append({"id": group_id, "body": plan.rows[start]["id"],
                            "size": len(lasts)})
        return res, new

    def apply(self, args=None, kwargs=None, **options):
        result = None
        for i, step in enumerate(self._steps()):
            if i == 0:
                res = step.apply(args, kwargs)
            elif not result.successful():
                break
            else:
                value = result.get(disable_sync_subtasks=False) \
                    if isinstance(result, GroupResult) else result.result
                res = step.apply((value,))
            if result is not None and isinstance(res, AsyncResult) and res._parent is None:
                res._parent = result
            result = res
        _eager_follow(self.options, result)
        return result


def _follows(res, result):
    """Make the first result of res's .parent line (res itself, or a chord's header) have
    result as its parent: a chain's step follows the step before it."""
    top = res
    for _ in range(10_000):
        above = top._parent if isinstance(top, AsyncResult) else getattr(top, "parent", None)
        if above is None or above is result:
            break
        top = above
    if isinstance(top, AsyncResult) and top._parent is None:
        top._parent = result
    elif isinstance(top, GroupResult) and top.parent is None:
        top.parent = result


def _without_gathering(result):
    """Take the steps that gather a group's results for a group after it (ours, not the
    user's) out of the .parent lines under result, which is returned: the next group
    follows the group, as Celery's results show it. In memory only; nothing is read."""
    seen, todo = set(), [result]
    while todo:
        node = todo.pop()
        if id(node) in seen or node is None:
            continue
        seen.add(id(node))
        single = isinstance(node, AsyncResult)
        parent = node._parent if single else getattr(node, "parent", None)
        while getattr(parent, "_gathers", False):
            parent = parent._parent
        if single:
            node._parent = parent
        else:
            node.parent = parent
            todo.extend(node.results)
        todo.append(parent)
    return result


class group(Signature):
    """Signatures queued together, as Celery's ``group``: one transaction for all of them
    (one commit, so one fsync at synchronous=FULL), and one GroupResult back, saved
    under its id (``app.GroupResult(id)`` reads it in any process).

    ``group(add.s(i, i) for i in range(100)).apply_async()``
    """

    tasks = _item("kwargs", "tasks")
    _single = False

    def __init__(self, *tasks, **options):
        flat = self._flatten(tasks, group)
        self._start("group", options, tasks=flat)
        apps = {id(t.app) for t in flat if t.__class__ is Signature and t.app is not None}
        apps.update(id(n.app) for t in flat if t.__class__ is not Signature
                    for n in t._nodes() if n.app is not None)
        if len(apps) > 1:
            raise ConfigurationError("a group's tasks must belong to one app")

    @property
    def signatures(self):
        return self.tasks

    @property
    def app(self):
        return None

    def __repr__(self):
        if not self.tasks:
            return "group(<empty>)"
        return _once_qualified(self, f"group({tuple(self.tasks)!r})")

    def __len__(self):
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def _nodes(self):
        return [n for t in self.tasks for n in t._nodes()]

    def _copy(self):
        return group(*[t._copy() for t in self.tasks], **self._options_copy())

    def _attach(self, plan, given, after, waits, group_id=None):
        with plan.scoped(self.options):
            return self._attach_members(plan, given, after, waits, group_id)

    def _attach_members(self, plan, given, after, waits, group_id):
        group_id = group_id or self.options.get("task_id") or _new_id()
        results, lasts = [], []
        for index, task in enumerate(self.tasks):
            gathered = isinstance(task, chain) and task.tasks and \
                isinstance(task._steps()[-1], group)
            if gathered:
                # A member that ends in a group ends in one step that gathers its results
                # (a chord), so that the member is one task of this group; its result is
                # that group's, as Celery's.
                task = chain(*task.tasks, Signature(plan.app._builtins[_GATHER]))
            res, new = task._attach(plan, given, after, waits)
            if gathered:
                res = res._parent
            if len(new) != 1:
                raise ConfigurationError("a group's member must end in one task (a "
                                         "signature, chain or chord)")
            new[0]["group_id"], new[0]["group_index"] = group_id, index
            results.append(res)
            lasts.extend(new)
        # Celery: a group's link_error goes to every member (its link() to the first only).
        plan.follow(self.options, lasts)
        plan.save_group(group_id, lasts)
        return GroupResult(results, id=group_id, app=plan.app), lasts

    def _unrolled(self):
        """A group of one task as that task (Celery's maybe_unroll_group), with the
        group's options where the task has none of its own, its followers added."""
        only = self.tasks[0]
        if not self.options:
            return only
        only = only._copy()
        for key, value in self.options.items():
            if key in ("link", "link_error"):
                only._add_follower(key, _followers(value))
            elif key != "task_id":
                only.options.setdefault(key, value)
        return only

    def freeze(self, _id=None):
        """Fix its group id and its members' ids now; returns its GroupResult."""
        self.options.setdefault("task_id", _id or _new_id())
        return GroupResult([t.freeze() for t in self.tasks], id=self.options["task_id"],
                           app=self._find_app())

    def skew(self, start=1.0, stop=None, step=1.0):
        """Spread its members out in time: countdown start, start + step, ... (at most
        stop); returns the group."""
        countdown = start
        for task in self.tasks:
            task.set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def _flat(self, app):
        """True if every member is a plain signature with nothing to follow it."""
        if self.options.get("link") or self.options.get("link_error"):
            return False
        return all(type(t) is Signature and not t.options.get("link") and
                   not t.options.get("link_error") for t in self.tasks)

    def apply_async(self, args=None, kwargs=None, **options):
        if options.get("link") is not None:
            raise TypeError("Cannot add link to group: use a chord (as in Celery)")
        if not self.tasks:
            return GroupResult([], id=_new_id())
        result = super().apply_async(args, kwargs, **options)
        if len(result.results) == 1 and isinstance(result.results[0], GroupResult):
            return result.results[0]     # group(a | group(b, c)): Celery's special case
        return result

    def link(self, callback):
        """Celery's rule: the callback follows the first member only, immutable (it
        cannot receive the others' results, and runs once): a chord waits for them all."""
        if not self.tasks:
            raise ConfigurationError("an empty group has no task to link a callback to")
        callback = callback._copy().set(immutable=True)
        self.tasks[0].link(callback)
        return callback

    def apply(self, args=None, kwargs=None, **options):
        results = [task.apply(args, kwargs) for task in self.tasks]
        for res in results:
            _eager_follow(self.options, res)
        return GroupResult(results, id=self.options.get("task_id") or _new_id())

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)


class _chord(Signature):
    """A group (the header) and a task (the body) that runs once every member has
    finished, receiving their results in header order: ``chord(header)(body)`` or
    ``chord(header, body)()``. The body is queued by the last member's own commit, once,
    with no polling; a member that does not succeed fails the body with ChordError."""

    header = _item("kwargs", "header")
    body = _item("kwargs", "body")
    _single = False

    @property
    def id(self):
        """Its body's id, once frozen or set, as Celery's."""
        return self.body.id if self.body is not None else self.options.get("task_id")

    def freeze(self, _id=None):
        """Fix its body's id now (to _id if given); returns the body's result."""
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header)(body)")
        return self.body.freeze(_id)

    def __init__(self, header, body=None, **options):
        self._start("chord", options, header=header if isinstance(header, group)
                    else group(header), body=None, kwargs={})
        for member in self.header.tasks:
            if isinstance(member, group):
                raise TypeError("a chord's header takes signatures or chains, not a group")
        if body is not None:
            self._check_body(body)
        self.body = body

    @staticmethod
    def _check_body(body):
        first = body.tasks[0] if isinstance(body, chain) and body.tasks else body
        if not isinstance(first, (Signature, group, chord)):
            raise TypeError(f"a chord's body must be a signature (task.s(...)), a group, a "
                            f"chord, or a chain starting with one, not {type(body).__name__}")

    def _body_steps(self):
        """Its body, gathered (see _gathered), with the chord's errbacks as its own, as
        Celery's chord.link_error(): a chain body's follow each of its steps."""
        body, errbacks = self.body, _followers(self.options.get("link_error"))
        if errbacks:
            body = body._copy()
            body._add_follower("link_error", errbacks)
        return _gathered(body)

    @property
    def tasks(self):
        return self.header.tasks

    @property
    def app(self):
        return None

    def __repr__(self):
        """Celery's: %body(header members), the body's own arguments after them."""
        if self.body is None:
            return f"<chord without body: {self.header.tasks!r}>"
        body = self.body.tasks[0] if isinstance(self.body, chain) else self.body
        if not _is_task(body):
            return f"%{self.body!r}({self.header.tasks!r})"
        text = _call_text(body.task, (list(self.header.tasks), *body.args), body.kwargs)
        if isinstance(self.body, chain):
            text = f"%({text} | {chain(*self.body.tasks[1:])!r})"
        else:
            text = "%" + text
        return _once_qualified(body, text)

    def _nodes(self):
        return self.header._nodes() + (self.body._nodes() if self.body is not None else [])

    def _copy(self):
        return chord(self.header._copy(), self.body._copy() if self.body is not None else None,
                     **self._options_copy())

    def __call__(self, body=None, **options):
        """``chord(header)(body)`` queues it; ``chord(header, body)()`` too."""
        if body is not None:
            self._check_body(body)
            return chord(self.header, body, **self.options).apply_async(**options)
        return self.apply_async(**options)

    def _attach(self, plan, given, after, waits):
        with plan.scoped(self.options):
            return self._attach_parts(plan, given, after, waits)

    def _attach_parts(self, plan, given, after, waits):
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header)(body)")
        body = self._body_steps()
        if self.options.get("task_id") is not None:
            body = body._copy().set(task_id=self.options["task_id"])
        if not self.header.tasks:
            if after is not None:
                raise ConfigurationError("an empty chord cannot follow another task")
            start = len(plan.rows)
            result, lasts = body._attach(plan, ((), {}), None, "chord")
            first = plan.rows[start]        # nothing to wait for: it runs with []
            first["state"] = PENDING if first["eta"] is None else SCHEDULED
            if first["eta"] is not None:
                first["eta"] += first["created_at"]
            first["input"] = _pack([])
        else:
            header, members = self.header._attach(plan, given, after, waits)
            for row in members:
                row["followers"] = 1
            if plan.app.conf["task_allow_error_cb_on_chord_header"]:
                # Celery's setting: the chord's errbacks follow each header task too.
                plan.follow({"link_error": self.options.get("link_error")}, members)
            start = len(plan.rows)
            result, lasts = body._attach(plan, ((), {}), None, "chord")
            plan.chords.append({"id": header.id, "body": plan.rows[start]["id"],
                                "size": len(members)})
            _follows(result, header)   # the body's first task follows the header
        links = _followers(self.options.get("link"))
        if len(lasts) > 1 and links:
            # A group body's callbacks run once, after all of it (as chord.link() does in
            # Celery): a chord on that group, its body the callback (or a group of them).
            chain._after_group(plan, links[0] if len(links) == 1 else group(*links), lasts)
        else:
            plan.follow({"link": links}, lasts)
        return result, lasts

    def apply(self, args=None, kwargs=None, **options):
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header)(body)")
        header = self.header.apply(args, kwargs)
        bad = next((r for r in header.results if not r.successful()), None)
        if bad is not None:
            error = _dependency_error(bad.id, bad.state, _encode_error(bad.result)
                                      if isinstance(bad.result, BaseException) else None)
            result = EagerResult(_new_id(), self.body._find_app(), FAILURE, error)
            _eager_follow(self.body.options, result)
        else:
            result = self.body.apply((header.get(disable_sync_subtasks=False),))
        result._parent = header
        _eager_follow(self.options, result)
        return result



chord = _chord       # Celery's class is _chord too: type(group | task).__name__ reads so

class chunks(group):
    """Task.chunks(it, n): the calls of it cut into starmaps of n calls, queued as a
    group (Celery's chunks); its result is a list of lists. .group() gives that group."""

    def __init__(self, task, it, n, **options):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"chunks takes a chunk size >= 1, not {n!r}")
        calls = [list(call) for call in it]
        self._chunked, self.n = task, n
        super().__init__(*[task.starmap(calls[i:i + n]) for i in range(0, len(calls), n)],
                         **options)

    def __repr__(self):
        return f"{self._chunked.name}.chunks({len(self.tasks)} chunk(s) of {self.n})"

    def group(self):
        return group(*[t._copy() for t in self.tasks], **self._options_copy())

    def _copy(self):
        return self.group()


_CANVAS_TYPES = {"chain": chain, "group": group, "chord": chord, "chunks": group}


def _followers(value):
    """link or link_error as a list of canvases: one signature or a list, each maybe a
    dict in Celery's form."""
    if not value:
        return []
    if isinstance(value, dict):
        value = [value]
    return [v if isinstance(v, _Canvas) else signature(v) for v in value]


_CANVAS_DEFAULTS = {"group_id": None, "group_index": None, "waits": None, "input": None,
                    "followers": 0}


class _Plan:
    """The rows one apply_async of a canvas writes, built and checked in memory, then
    committed in one transaction (rows, registry entries and chords)."""

    def __init__(self, app, defaults):
        self.app = app
        self.defaults = defaults
        self.rows = []
        self.chords = []
        self.groups = []
        self.plain = False           # rows of a plain group only (flat_group)
        self.tasks = {}
        current = getattr(_request, "current", None)
        self.parent = current.id if current is not None else None
        self.root = (current.root_id or current.id) if current is not None else None

    def row(self, sig, args, kwargs, after, waits):
        """The tasks row of one signature; after (a row) and waits make it a follower."""
        task = sig._resolve(self.app)
        options = sig.options
        if self.defaults or "link" in options or "link_error" in options:
            options = {**self.defaults, **options}
            options.pop("link", None)
            options.pop("link_error", None)
            if waits:      # the canvas's own countdown or eta delays its first tasks only
                for key in ("countdown", "eta"):
                    if key not in sig.options:
                        options.pop(key, None)
        row = self.app._task_row(sig.task, args, kwargs, task, **options)
        if self.root is None:
            self.root = row["id"]
        row["parent_id"] = after["id"] if after is not None else self.parent
        row["root_id"] = None if row["id"] == self.root else self.root
        row.update(_CANVAS_DEFAULTS)
        if after is not None:
            after["followers"] = 1
        if waits:
            if options.get("eta") is not None:
                raise ConfigurationError(f"{sig.task} follows another task: give it a "
                                         "countdown (from that task's end), not an eta")
            row["waits"] = waits + ("_si" if sig.immutable else "")
            row["state"] = WAITING
            if row["eta"] is not None:         # a countdown from the parent's end
                row["eta"] = max(0.0, row["eta"] - row["created_at"])
        if task is not None:
            self.tasks[task.name] = task
        self.rows.append(row)
        return row

    @contextlib.contextmanager
    def scoped(self, options):
        """A chain's, group's or chord's own apply_async options (set with .set() or given
        to its constructor) as defaults for the rows inside it."""
        extra = {k: v for k, v in options.items() if k not in ("link", "link_error", "task_id")}
        if not extra:
            yield
            return
        saved = self.defaults
        self.defaults = {**saved, **extra}
        try:
            yield
        finally:
            self.defaults = saved

    def save_group(self, group_id, members):
        ids = [row["id"] for row in members]
        self.groups.append({"id": group_id, "members": _pack(ids), "first": ids[0],
                            "created_at": members[0]["created_at"]})

    def flat_group(self, grp, given):
        """A group of plain signatures at the top: group()'s common case, built without
        the general walk (one _task_row per member, then the canvas columns)."""
        group_id = grp.options.get("task_id") or _new_id()
        app, defaults, rows = self.app, self.defaults, self.rows
        parent, root = self.parent, self.root
        for index, sig in enumerate(grp.tasks):
            task = sig._resolve(app)
            call_args, call_kwargs = sig._merged(*given)
            row = app._task_row(sig.task, call_args, call_kwargs, task,
                                **({**defaults, **sig.options} if defaults else sig.options))
            row["parent_id"], row["root_id"] = parent, root
            row["group_id"], row["group_index"] = group_id, index
            if task is not None:
                self.tasks[task.name] = task
            rows.append(row)
        if rows:
            self.save_group(group_id, rows)
        self.plain = True
        return GroupResult([AsyncResult(row["id"], app) for row in rows], id=group_id,
                           app=app), rows

    def follow(self, options, lasts):
        """Attach a node's link and link_error signatures after each of its last rows
        (one signature, or a list; Celery's dict forms too)."""
        callbacks, errbacks = _followers(options.get("link")), _followers(
            options.get("link_error"))
        for row in lasts:
            for callback in callbacks:
                callback._attach(self, ((), {}), row, "link")
            for errback in errbacks:
                errback._attach(self, ((), {}), row, "error")

    def commit(self, replacing=None, joining=None):
        app = self.app
        _refuse_canvas_step()
        new = {name: task for name, task in self.tasks.items() if name not in app._noted}
        now = time.time()
        registry_rows = [task._registry_row(now)
                         for name, task in new.items()]
        app._publish("before", self.rows)
        app._storage().insert_canvas(self.rows, registry_rows, self.chords, self.groups,
                                     self.plain, replacing, joining)
        app._noted.update(new)
        states = {row["state"] for row in self.rows}
        if SCHEDULED in states:
            app._sched_bell.ring()
        if PENDING in states:
            app._work_bell.ring()
        app._publish("after", self.rows)


# ---------------------------------------------------------------------------
# Worker: task code
# Finding, importing and auto-importing the modules that define tasks.
# ---------------------------------------------------------------------------

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _import_module(name, what="task module"):
    """Import a module given as 'pkg.mod', 'pkg.mod:app' or 'path/to/mod.py'. A module
    that is not there is a ConfigurationError; one whose code raised (a SyntaxError, an
    error at its top level) is a _BrokenModule that says where, in one line."""
    try:
        return importlib.import_module(_module_spec_name(name))
    except Exception as exc:
        if _failed_line(exc) is None:       # none of its code ran: it is not there
            raise ConfigurationError(f"cannot import {what} {name!r}: {exc}") from None
        raise _BrokenModule(f"cannot import {what} {name!r}: {_import_failure(exc)}") \
            from None


def _module_spec_name(name):
    name = name.split(":", 1)[0]
    if name.endswith(".py"):
        name = os.path.splitext(os.path.normpath(name))[0].replace(os.sep, ".")
    return name


class _ModuleFinder:
    """Decides where importing a dotted module name would read code from, without
    importing or running anything: the path finder's search, done by hand. A name
    qualifies only if its first part is found first in the sys.path entry that is the
    worker's directory itself (not merely below it: a virtual environment inside the
    project must not count) as a module or a regular package, and every further part
    is a module or regular package inside it. Directory listings are read once per
    finder, so checking thousands of names stays cheap."""

    _SUFFIXES = (importlib.machinery.EXTENSION_SUFFIXES + importlib.machinery.SOURCE_SUFFIXES
                 + importlib.machinery.BYTECODE_SUFFIXES)

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self._listings = {}

    def _names(self, directory):
        if directory not in self._listings:
            try:
                self._listings[directory] = frozenset(os.listdir(directory))
            except OSError:
                self._listings[directory] = frozenset()
        return self._listings[directory]

    def _find(self, part, search_path):
        """(entry, file, is_package) of the first module or regular package named part
        in search_path, as the path finder takes it, or None."""
        for entry in search_path:
            directory = entry if isinstance(entry, str) and entry else os.getcwd()
            names = self._names(directory)
            if part in names:
                for suffix in self._SUFFIXES:
                    init = os.path.join(directory, part, "__init__" + suffix)
                    if os.path.isfile(init):
                        return directory, init, True
            for suffix in self._SUFFIXES:
                if part + suffix in names:
                    return directory, os.path.join(directory, part + suffix), False
        return None

    def _inside(self, path):
        return os.path.commonpath([self.root, os.path.realpath(path)]) == self.root

    def import_under_root(self, name):
        """Import `name` if it qualifies (see the class); returns the module, or None
        (nothing was imported for a part that does not)."""
        parts = name.split(".")
        if "__main__" in parts or parts[0] in sys.builtin_module_names or \
                importlib.machinery.FrozenImporter.find_spec(parts[0]) is not None:
            return None
        search, module = sys.path, None
        for i, part in enumerate(parts):
            fullname = ".".join(parts[:i + 1])
            module = sys.modules.get(fullname)
            if module is None:
                found = self._find(part, search)
                if found is None or not self._inside(found[1]) or (
                        i == 0 and os.path.realpath(found[0]) != self.root):
                    return None
                module = self._load(fullname, *found[1:])
            search = getattr(module, "__path__", None)
            if search is None and i < len(parts) - 1:
                return None
        return module

    @staticmethod
    def _load(fullname, path, is_package):
        spec = importlib.util.spec_from_file_location(
            fullname, path,
            submodule_search_locations=[os.path.dirname(path)] if is_package else None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        parent, _, child = fullname.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        return module


def _autoimport(modules, root, tried=None):
    """Import the task modules named in the registry table, but only those whose every
    part lies in a file under root (the worker's directory): rows are data anyone with
    write access to the file can put there, and importing runs a module's top level.
    Names already in `tried` are skipped, and every name looked at is added to it."""
    tried = set() if tried is None else tried
    finder = _ModuleFinder(root)
    for name in sorted({m for m in modules if isinstance(m, str)}):
        if name in tried or name in sys.modules or not _MODULE_NAME.match(name):
            continue
        tried.add(name)
        try:
            module = finder.import_under_root(name)
        except (Exception, SystemExit) as exc:   # a script's exit() must not end us
            logger.error("auto-import of %s failed: %s", name, _import_failure(exc))
            continue
        if module is None:
            logger.debug("not auto-importing %s: not found under %s", name, root)
        else:
            logger.info("auto-imported task module %s", name)
    return tried


def _collect_tasks(db_path):
    """Tasks and settings of the apps of this process that use db_path."""
    tasks, conf, _ = _collect_apps(db_path)
    return tasks, conf


def _collect_apps(db_path):
    """(tasks, settings, periodic definitions) of the apps that use db_path."""
    real = os.path.realpath(db_path)
    matching = [a for a in list(_apps) if os.path.realpath(a.path) == real]
    for app in matching:
        app.finalize()
    matching = [a for a in list(_apps) if os.path.realpath(a.path) == real]
    tasks, periodic = {}, {}
    for app in matching:
        tasks.update(app._builtins)
        tasks.update(app.tasks)
        periodic.update(app._all_periodic())
    return tasks, dict(matching[0].conf if matching else DEFAULTS), periodic


def _other_databases(db_path):
    """Databases that this process's apps with tasks use, other than db_path."""
    real = os.path.realpath(db_path)
    return sorted({a.path for a in list(_apps) if a.tasks and os.path.realpath(a.path) != real})


def _config_module(cwd):
    """The config module a worker reads, as celeryd did: the one CELERY_CONFIG_MODULE
    names, else celeryconfig.py in the worker's directory, else None."""
    name = os.environ.get("CELERY_CONFIG_MODULE")
    if name:
        return name
    return "celeryconfig" if os.path.isfile(os.path.join(cwd, "celeryconfig.py")) else None


def _load_worker_code(db, cwd, modules, autoimport, storage, tried=None):
    """Import what the worker serves: -A modules, the config module's imports, the apps'
    imports setting, then (if autoimport; None: as the settings say) the modules producers
    registered, adding the names looked at to `tried`. Returns (tasks, settings, periodic,
    autoimport) with the config module's settings over the apps'."""
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    config = _config_module(cwd)
    try:
        config_settings = _settings_of(config) if config else {}
    except ImportError as exc:
        raise ConfigurationError(f"cannot import config module {config!r}: {exc}") from None
    for name in modules:
        _import_module(name)
    conf = _merged_settings(_collect_tasks(db)[1], config_settings)
    for name in conf["imports"]:
        _import_module(name)
    if autoimport is None:
        autoimport = conf["worker_autoimport"]
    if autoimport and storage is not None:
        _autoimport(storage.registry().values(), cwd, tried)
    real = os.path.realpath(db)
    for app in list(_apps):     # the worker's config is theirs too: zone, beat, routes
        if config_settings and os.path.realpath(app.path) == real:
            app.update_settings(config_settings)
    tasks, conf, periodic = _collect_apps(db)
    return tasks, _merged_settings(conf, config_settings), periodic, autoimport


def _configure_logging(level):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WorkerFormatter())
    logging.basicConfig(level=level, handlers=[handler])


def _resident_kib():
    """This process's resident memory in KiB (current, not peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _waiting_out(action, doing):
    """Run a write until it goes through, waiting out a busy write lock or a full disk:
    retries back off up to _TROUBLE_BACKOFF_MAX, and a warning saying what is being done
    meanwhile repeats every _TROUBLE_LOG_INTERVAL."""
    delay, warned = 0.01, None
    while True:
        try:
            return action()
        except (DatabaseBusy, DiskFull) as exc:
            if warned is None or time.monotonic() - warned > _TROUBLE_LOG_INTERVAL:
                warned = time.monotonic()
                logger.warning("%s; %s", exc, doing)
            time.sleep(delay)
            delay = min(delay * 2, _TROUBLE_BACKOFF_MAX)


# ---------------------------------------------------------------------------
# Worker: the child's parts
# Counters, claimed rows, time limits, and the runners of coroutine and thread tasks.
# ---------------------------------------------------------------------------

# Which count an outcome adds to (expired or revoked before it ran: none, no run), and
# where the runtime sum and the first runtime bucket are, in _STATS_COUNTS' order.
_STATS_KIND = {SUCCESS: _STATS_COUNTS.index("succeeded"), FAILURE: _STATS_COUNTS.index("failed"),
               RETRY: _STATS_COUNTS.index("retried")}
_STATS_RUNTIME, _STATS_BUCKET0 = _STATS_COUNTS.index("runtime"), _STATS_COUNTS.index("h0")


def _stats_counts():
    """succeeded, failed, retried, runtime sum, then one count per runtime bucket."""
    return [0, 0, 0, 0.0] + [0] * (len(_RUNTIME_BUCKETS) + 1)


class _ThisFile:
    """What an AsyncResult needs of an app, for a worker process's own file: its reads go
    through the process's storage, whatever file the task module's app names."""

    __slots__ = ("storage",)

    def __init__(self, storage):
        self.storage = storage

    def _storage(self):
        return self.storage


class _Stats:
    """A worker process's counters (by task name and queue; _Child._run adds to them),
    kept in memory and added to the stats table with a commit at most every _STATS_FLUSH
    seconds, under the minute of that flush (so a count can land in the next minute by up to that much). A crash loses
    at most that much of the counts, never a task."""

    __slots__ = ("rows", "last", "worker", "processed", "failed")

    def __init__(self, worker=None):
        self.rows = {}
        self.last = time.monotonic()
        self.worker = worker
        self.processed = self.failed = 0       # this process's totals, for its workers row

    def add(self, name, queue, state, duration):
        """Count one run of a task that ended in state after duration seconds."""
        kind = _STATS_KIND.get(state)
        if kind is None:
            return
        counts = self.rows.get((name, queue))
        if counts is None:
            counts = self.rows[(name, queue)] = _stats_counts()
        counts[kind] += 1
        counts[_STATS_RUNTIME] += duration
        counts[_STATS_BUCKET0 + bisect.bisect_left(_RUNTIME_BUCKETS, duration)] += 1
        self.processed += 1
        self.failed += state == FAILURE

    def take(self, force=False):
        """The rows to add now ([] before the interval is over, unless forced)."""
        if not self.rows or (not force and time.monotonic() - self.last < _STATS_FLUSH):
            return []
        minute = int(time.time() // 60)
        rows = [(minute, name if isinstance(name, str) else str(name), queue, *counts)
                for (name, queue), counts in self.rows.items()]
        self.rows = {}
        self.last = time.monotonic()
        return _StatsBatch(rows, (self.processed, self.failed, self.worker))

    def put_back(self, batch):
        """Counts that take() gave and that could not be written: kept for the next."""
        for _minute, name, queue, *counts in batch:
            kept = self.rows.get((name, queue))
            if kept is None:
                kept = self.rows[(name, queue)] = _stats_counts()
            for i, count in enumerate(counts):
                kept[i] += count


class _StatsBatch(list):
    """Counter rows for the stats table, with the worker's totals for its workers row."""

    def __init__(self, rows, totals):
        super().__init__(rows)
        self.totals = totals


class _Pending:
    """What a child holds between commits: outcomes of rows it ran that wait for the
    next (group) commit, and rows it claimed but has not begun."""

    def __init__(self):
        self.outcomes = []
        self.begun = []              # their seqs: rows begun whose outcomes are not committed
        self.claimed = collections.deque()
        self.since = None            # when the oldest uncommitted outcome's task started

    def add(self, outcome, started):
        """Keep a row's outcome for the next commit."""
        self.outcomes.append(outcome)
        self.begun.append(outcome.seq)
        if self.since is None:
            self.since = started

    def take(self):
        """The outcomes to commit now; none are kept."""
        outcomes, self.outcomes, self.begun, self.since = self.outcomes, [], [], None
        return outcomes

    def unclaim(self):
        """The seqs of the claimed rows, to hand back; none are kept."""
        seqs = [row.seq for row in self.claimed]
        self.claimed.clear()
        return seqs


# Why a coroutine task was cancelled (the message of its CancelledError).
_SOFT_LIMIT, _HARD_LIMIT, _TERMINATED = ("litequeue: soft time limit",
                                         "litequeue: hard time limit", "litequeue: revoked")
# A coroutine past its hard limit is cancelled by its own loop; if that loop is blocked
# (sync code in a coroutine), the supervisor kills the process this much later.
_LOOP_KILL_GRACE = 2.0
# The most rows a child claims at once for its coroutines and threads.
_OFFLOAD_CLAIM_MAX = 256
# Rows a child claimed beside a task are handed back once that task has run this long, so
# that an idle process can run them meanwhile. A task this slow costs far more than the
# write that hands them back, and a drain of fast tasks wakes the watch thread at most
# 1 / _HAND_BACK_AFTER times a second.
_HAND_BACK_AFTER = 0.01
# While one task runs on, the watch thread looks this often for the next to begin; a
# hand-back that could not be written is tried again this often.
_WATCH_LOOK = 0.05
# The watch thread's writes wait at most this long for the write lock (seconds): the main
# thread may be waiting for the watch thread meanwhile (_Watch.end).
_WATCH_BUSY_TIMEOUT = 0.2


class _Terminated(Exception):
    """A coroutine task cancelled because it was revoked with terminate."""


class _SoftLimited:
    """Awaits a coroutine; a cancel whose message is _SOFT_LIMIT reaches the coroutine as
    SoftTimeLimitExceeded instead (asyncio can only cancel), so that a task can catch it
    and clean up as a sync task does. Any other cancel or error passes through as is."""

    __slots__ = ("coro",)

    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        import asyncio
        coro, sent, error = self.coro, None, None
        while True:
            try:
                yielded = coro.send(sent) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            sent = error = None
            try:
                sent = yield yielded
            except asyncio.CancelledError as exc:
                if exc.args == (_SOFT_LIMIT,):
                    asyncio.current_task().uncancel()
                    error = SoftTimeLimitExceeded("the task ran past its soft time limit")
                else:
                    error = exc
            except BaseException as exc:
                error = exc


class _Run:
    """One row the child runs, whichever runner runs it (the main thread, the loop, a
    thread): _Child._begin makes it ready, the runner calls its task, _Child._end turns
    what came out into the _Outcome the next commit records."""

    __slots__ = ("row", "task", "args", "kwargs", "request", "soft", "hard",
                 "deadline", "kind", "started", "handle")

    def __init__(self, row, kind):
        self.row = row
        self.kind = kind              # _ON_MAIN, _OFF_LOOP or _OFF_THREAD
        self.task = None              # these four are set by _begin
        self.args, self.kwargs = (), {}
        self.request = None
        self.soft = self.hard = None  # its time limits, seconds
        self.deadline = 0.0           # off the main thread: when the hard limit ends it
        self.started = time.monotonic()
        self.handle = None            # its asyncio.Task, once the loop has started it

    def outcome(self, state, result=None, traceback=None, **more):
        """The row's _Outcome, its identity filled in."""
        row = self.row
        return _Outcome(state, result, traceback, seq=row.seq, attempt=row.attempt,
                        tag=_ring_id(row.id), id=row.id, followers=row.followers, **more)


class _LoopRunner:
    """One asyncio event loop, on its own thread of a worker process, that runs the
    process's coroutine tasks. It only awaits them: the main thread claims, prepares,
    records and commits, and gets each end through report(seq, value, exc, tb,
    seconds)."""

    def __init__(self, report):
        import asyncio
        self.asyncio = asyncio
        self.report = report
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="litequeue-loop", daemon=True)
        self.thread.start()

    def _run(self):
        self.asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, flights):
        self.loop.call_soon_threadsafe(self._start, flights)

    def cancel(self, flight, why):
        self.loop.call_soon_threadsafe(self._cancel, flight, why)

    def _start(self, flights):
        for flight in flights:
            flight.handle = self.loop.create_task(self._drive(flight))

    @staticmethod
    def _cancel(flight, why):
        if flight.handle is not None:
            flight.handle.cancel(why)

    async def _drive(self, flight):
        asyncio = self.asyncio
        _request.current = flight.request
        this, loop = asyncio.current_task(), self.loop
        timers = [loop.call_later(limit, this.cancel, why) for limit, why in
                  ((flight.soft, _SOFT_LIMIT), (flight.hard, _HARD_LIMIT)) if limit]
        started = time.monotonic()
        value = exc = tb = None
        try:
            coro = _entry(flight.task, flight.request)(*flight.args, **flight.kwargs)
            value = await (_SoftLimited(coro) if flight.soft else coro)
        except asyncio.CancelledError as cancelled:
            why = cancelled.args[0] if cancelled.args else None
            exc = TimeLimitExceeded("the task ran past its hard time limit") \
                if why == _HARD_LIMIT else _Terminated() if why == _TERMINATED else cancelled
            tb = _traceback.format_exc()
        except BaseException as error:      # its failure, whatever it is
            exc, tb = error, _traceback.format_exc()
        finally:
            for timer in timers:
                timer.cancel()
        self.report(flight.row.seq, value, exc, tb, time.monotonic() - started)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _ThreadRunner:
    """-P threads: N threads of a worker process that run its sync tasks, each ending
    through report() as for _LoopRunner."""

    def __init__(self, count, report):
        self.report = report
        self.jobs = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"litequeue-thread-{i}",
                                         daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def submit(self, flights):
        for flight in flights:
            self.jobs.put(flight)

    def _work(self):
        while True:
            flight = self.jobs.get()
            if flight is None:
                return
            _request.current = flight.request
            started = time.monotonic()
            value = exc = tb = None
            try:
                value = _entry(flight.task, flight.request)(*flight.args, **flight.kwargs)
            except BaseException as error:  # its failure, whatever it is
                exc = error
                tb = None if isinstance(error, _WORKFLOW_ENDS) else _traceback.format_exc()
            _request.current = None
            self.report(flight.row.seq, value, exc, tb, time.monotonic() - started)

    def close(self):
        for _ in self.threads:
            self.jobs.put(None)


class _Mailbox:
    """The ends of tasks run off the main thread, put by the runners' threads and taken by
    the child's main thread, which sleeps in _wait_readable() on fileno().

    One lock makes the list and the pipe one state: the pipe holds exactly one byte while
    the list holds anything, and none while it is empty. So a wake-up is never lost (an
    end put while the main thread takes the others leaves its byte), and a wait never
    finds the pipe readable with nothing to take, which would keep an idle worker
    spinning. The pipe never holds more than a byte, so a put never blocks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = []
        self._r, self._w = os.pipe()

    def fileno(self):
        return self._r

    def __bool__(self):
        return bool(self._items)

    def put(self, item):
        with self._lock:
            self._items.append(item)
            if len(self._items) == 1:
                os.write(self._w, b"\0")

    def take(self):
        """Everything put so far, oldest first (an empty list if nothing was)."""
        with self._lock:
            items, self._items = self._items, []
            if items:
                os.read(self._r, 1)
        return items

    def close(self):
        os.close(self._r)
        os.close(self._w)


class _SharedMetaWriter:
    """update_state() writes of tasks running off the main thread, made by a thread of
    their own on its own connection: the main thread's connection may be inside a
    transaction, and a coroutine must not hold up its loop waiting for the write lock.
    Writes keep their order; of several waiting for one row, only the latest is made."""

    def __init__(self, open_storage):
        self.open_storage = open_storage
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self._run, name="litequeue-progress", daemon=True).start()

    def set_meta(self, blob, seq, attempt):
        self.jobs.put((blob, seq, attempt))
        return True

    def _run(self):
        storage = None
        while True:
            latest = {}
            job = self.jobs.get()
            while job is not None:
                latest[job[1]] = job
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    job = None
            for blob, seq, attempt in latest.values():
                try:
                    storage = storage or self.open_storage()
                    storage.set_meta(blob, seq=seq, attempt=attempt)
                except Exception as exc:   # progress is advisory: never fail a task for it
                    logger.warning("update_state of task row %d not stored: %s", seq, exc)


class _Watch:
    """A thread of a child that acts for its main thread while that runs a long task:
    once the task has run _HAND_BACK_AFTER, it hands back the rows claimed beside it (an
    idle process can run them meanwhile), and every _STATS_FLUSH it writes the counters,
    so that neither waits for the task to end. It writes on a connection of its own, and
    sleeps on an event while the main thread is idle or waits for its coroutines and
    threads.

    The main thread calls begin() and end() around each task it runs. The thread acts
    only under `lock`, and only while the task it saw still runs; end() takes the lock.
    So the two never touch the claimed rows or the counters at the same time."""

    def __init__(self, child):
        self.child = child
        self.lock = threading.Lock()
        self.task = None          # (seq, monotonic start) of the task the main thread runs
        self.awake = False        # the main thread's copy of busy.is_set(), read for free
        self.busy = threading.Event()
        self.storage = self.bell = None
        self.stopped = False      # the child has closed: the thread ends
        threading.Thread(target=self._run, name="litequeue-watch", daemon=True).start()

    def begin(self, seq, started):
        """The main thread begins a task."""
        self.task = (seq, started)
        if not self.awake:
            self.awake = True
            self.busy.set()

    def end(self):
        """The main thread's task has ended: once this returns, the thread will not act
        on it, and has finished anything it began."""
        with self.lock:
            self.task = None

    def sleep(self):
        """The main thread goes idle, or waits for its coroutines and threads."""
        if self.awake:
            self.awake = False
            self.busy.clear()

    def stop(self):
        """The child closes: the thread ends soon, closing its connection."""
        with self.lock:
            self.task, self.stopped = None, True
        self.busy.set()

    def _run(self):
        handled = None            # the task whose claimed rows were handed back already
        retry_at = 0.0            # after a write that failed
        while True:
            self.busy.wait()
            if self.stopped:
                if self.storage is not None:
                    self.storage.close()
                if self.bell is not None:
                    self.bell.close()
                return
            task = self.task
            if task is None:      # between two tasks
                time.sleep(_HAND_BACK_AFTER)
                continue
            if task is not handled:
                due = max(task[1] + _HAND_BACK_AFTER, retry_at)
            elif self.child.stats.rows:
                due = self.child.stats.last + _STATS_FLUSH
            else:                 # nothing to do until this task ends or counts appear
                due = float("inf")
            unrung = _WorkflowRun.unrung_since        # a workflow's step left unrung
            if unrung is not None:
                if time.monotonic() >= unrung + _HAND_BACK_AFTER:
                    with contextlib.suppress(Exception):   # a ring only hastens a claim
                        _WorkflowRun.ring_late()
                    continue
                due = min(due, unrung + _HAND_BACK_AFTER)
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, _WATCH_LOOK))
                continue
            with self.lock:
                if self.task is task:
                    if self._act(hand_back=task is not handled):
                        handled = task
                    else:
                        retry_at = time.monotonic() + _WATCH_LOOK

    def _act(self, hand_back):
        """Hand back the claimed rows (when asked), write the counters if due. What
        cannot be written stays with the main thread, which commits it later; returns
        False if the write failed."""
        child = self.child
        rows = list(child.pending.claimed) if hand_back else []
        stats = child.stats.take()
        if not rows and not stats:
            return True
        try:
            if self.storage is None:
                self.storage = child.open_storage(busy_timeout=_WATCH_BUSY_TIMEOUT)
            self.storage.complete_and_claim([], child.worker_id, child.pid, time.time(), None,
                                            0, [row.seq for row in rows], stats)
        except Exception as exc:     # busy, disk full...: tried again, or done by the main thread
            child.stats.put_back(stats)
            logger.debug("child %s: the watch thread could not write: %s", child.worker_id,
                         exc)
            return False
        if rows:
            child.pending.claimed.clear()
            logger.debug("child %s handed back %d row(s) claimed beside a long task",
                         child.worker_id, len(rows))
            with contextlib.suppress(Exception):     # a ring only hastens the claim
                if self.bell is None:
                    self.bell = _Doorbell(_SideDir(child.spec.db), "work")
                self.bell.ring()


# ---------------------------------------------------------------------------
# Worker: the child
# One worker process: claim, run, complete; and how it is started.
# ---------------------------------------------------------------------------

# What a new child needs to know. Only _Supervisor._spec() builds one; it crosses to the
# child as a dict (a pickled class would be __main__'s when the module runs as a script)
# and _Child makes it one again.
_ChildSpec = collections.namedtuple("_ChildSpec", (
    "db worker_id parent_id queues modules loglevel settings autoimport poll_interval cwd "
    "hostname time_limit soft_time_limit max_tasks max_memory "
    "threads processes async_concurrency solo solo_tty"),
    defaults=(0, 1, DEFAULTS["worker_async_concurrency"], False, False))


class _RunPipeline:
    """How a child runs one row, whichever runner calls its task (the main thread, the
    loop, a thread): _begin makes a _Run ready (its task, arguments, limits, request,
    task_prerun), _finish turns what the task returned or raised into an _Outcome (its
    hooks and signals, the retry decision), _end keeps the outcome for the next commit
    and counts it. _Child inherits it; the attributes are _Child's."""

    def _safely(self, run, step, *args):
        """step(*args): the run's _Outcome. Never raises: a row the child cannot handle (a
        column it cannot read, a result that fails while it is encoded, a hook that
        raises) ends FAILURE saying why, so no row can kill the process again and again
        without being charged."""
        try:
            return step(*args)
        except Exception as exc:
            return self._unhandled(run, exc)

    @staticmethod
    def _unhandled(run, exc):
        """The FAILURE of a row whose handling raised exc (see _safely)."""
        row = run.row
        message = (f"the worker could not handle this task row: {type(exc).__name__}: "
                   f"{_saferepr(exc)}")
        logger.error("Task %s[%s] failed: %s", _shown(row.name), _shown(row.id, 100), message)
        return run.outcome(FAILURE, _encode_error(ValueError(message)), _traceback.format_exc())

    def _begin(self, run, begun=()):
        """Make a run ready: its task, arguments, time limits and request, then
        task_prerun. Returns the _Outcome of a row that ends without running (a payload it
        cannot read, an expiry passed, an unknown name), else None."""
        row = run.row
        ready = self._prepare(row, run.outcome)
        if isinstance(ready, _Outcome):
            return ready
        task, args, kwargs, options = ready
        run.task, run.args, run.kwargs = task, args, kwargs
        run.soft = options.get("soft_time_limit") or task.soft_time_limit or \
            self.spec.soft_time_limit
        run.hard = options.get("time_limit") or task.time_limit or self.spec.time_limit
        if run.hard and run.kind == _ON_MAIN:
            self.lock.executing(row.seq, time.time() + run.hard, begun)
            self.deadline_set = True
            self.control_bell.ring()  # the supervisor enforces the hard limit
        elif run.hard:                # written to the lock record by _record_flights
            run.deadline = time.time() + run.hard + (
                _LOOP_KILL_GRACE if run.kind == _OFF_LOOP else 0.0)
        # Off the main thread, update_state() writes through a connection of its own.
        meta = self.storage if run.kind == _ON_MAIN else self._meta_writer()
        run.request = _Request(
            id=row.id, args=args, kwargs=kwargs, retries=row.retries, attempt=row.attempt,
            name=row.name, hostname=self.hostname, worker=self.worker_id,
            parent_id=row.parent_id or self._chord_starter(row), root_id=row.root_id,
            group=row.group_id, meta_writer=(meta, row.seq, row.attempt), queue=self.claim_queue,
            priority=row.priority, limits=(run.hard, run.soft), expires_at=row.expires,
            options=options, ignore_result=task.ignore_result)
        if _TASK_WATCHERS[0] or task._hooked:
            _task_started(task, run.request, args, kwargs)
        return None

    def _chord_starter(self, row):
        """A chord body's parent id, as Celery gives it: the header task whose end
        started it (the last to finish). None for any other row without a parent."""
        if not _is_chord_wait(row.waits):
            return None
        return self.storage.chord_starter(row.id)

    def _run_here(self, run, begun):
        """Begin a run, call its task on this thread (soft limit: SIGALRM), end it."""
        ended = self._begin(run, begun)
        if ended is not None:
            return ended
        task, soft = run.task, run.soft
        _set_request(run.request)
        try:
            if soft:
                self.in_task = True
                signal.setitimer(signal.ITIMER_REAL, soft)
            value = _entry(task, run.request)(*run.args, **run.kwargs)
        except BaseException as exc:  # KeyboardInterrupt or SystemExit from a task is its failure
            # A workflow's wait is no failure: no traceback to format (Python 3.11's costs
            # a parse of each line's source, the largest part of a suspension).
            return self._finish(run, None, exc, None if isinstance(exc, _WORKFLOW_ENDS)
                                else _traceback.format_exc())
        finally:
            if soft:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self.in_task = False
            _set_request(None)
        return self._finish(run, value, None, None)

    def _finish(self, run, value, exc, tb):
        """The _Outcome of a task that returned value or raised exc (traceback tb), after
        its hooks and signals (_conclude: the path eager mode takes too)."""
        task, row, request = run.task, run.row, run.request
        if request.progress is not None:
            request.close()
        end = _conclude(task, request, run.args, run.kwargs, value, exc, tb,
                        stored_max=row.max_retries, default_max=self.default_max_retries,
                        errors=row.errors, started=run.started)
        state = end.state
        if state == SUCCESS:
            if request.ignore_result:
                return run.outcome(SUCCESS, None, passed=end.stored)
            # The common case, without the keywords' merge.
            return _Outcome(SUCCESS, end.stored, None, seq=row.seq, attempt=row.attempt,
                            tag=_ring_id(row.id), id=row.id, followers=row.followers)
        if state == RETRY:
            return run.outcome(RETRY, end.stored, end.traceback, eta=end.eta, errors=end.errors,
                               retried=0 if isinstance(end.value, Reject) else 1)
        if state in (IGNORED, REJECTED, _REPLACED):   # its last update_state(), as its result
            return run.outcome(state, end.stored)
        if state == _SUSPENDED:          # get() waiters go on waiting: no ring (tag None)
            return _Outcome(_SUSPENDED, seq=row.seq, attempt=row.attempt, tag=None,
                            id=row.id, eta=end.eta, waits=end.value.waits)
        return run.outcome(FAILURE, end.stored, end.traceback, errors=end.errors)

    def _end(self, run, outcome, duration):
        """A run is over: keep its outcome for the next commit, and count it."""
        self.pending.add(outcome, time.monotonic() - duration)
        self.stats.add(run.row.name, self.claim_queue, outcome.state, duration)
        if self.storage.holds_slot(run.row.name, self.claim_queue):
            self.frees_slot = True        # rung once its commit frees the slot
        self.tasks_done += 1
        if (self.spec.max_tasks or self.max_memory) and self._used_up():
            self.stopping = True

    def _still_ours(self, row, begun):
        """Record the row as the one about to run, then check that no revoke took it
        (see _RevokeCounter for why in this order). A revoke drops the claimed rows it
        took too."""
        self.lock.executing(row.seq, begun=begun)
        revocations = self.revocations.value()
        if revocations == self.revocations_seen:
            return True
        self.revocations_seen = revocations
        claimed = self.pending.claimed
        seqs = [row.seq] + [r.seq for r in claimed]
        states = _waiting_out(lambda: self.storage.states_of(seqs, locked=True),
                              "reading revoked rows again")
        self.pending.claimed = collections.deque(r for r in claimed
                                                 if states.get(r.seq) == STARTED)
        if states.get(row.seq) == STARTED:
            return True
        self.lock.executing(0, begun=begun)
        return False

    def _prepare(self, row, outcome):
        """(task, args, kwargs) of a row that can run, or the _Outcome of one that
        cannot: a payload or column it cannot read, an expiry passed, an unknown name."""
        try:
            args, kwargs, options = _unpack_call(row.payload)
        except ValueError as exc:
            logger.error("Task %s[%s] rejected: %s", row.name, row.id, exc)
            return outcome(FAILURE, _encode_error(ValueError(f"invalid task payload: {exc}")))
        problem = (f"its id is {_saferepr(row.id, 100)}, not text"
                   if not isinstance(row.id, str) else
                   f"expires is {_saferepr(row.expires, 100)}, not a unix time"
                   if row.expires is not None and not _is_time(row.expires) else None)
        if problem:
            logger.error("Task %s[%s] rejected: invalid task row: %s", row.name,
                         _shown(row.id, 100), problem)
            return outcome(FAILURE, _encode_error(ValueError(f"invalid task row: {problem}")))
        if row.expires is not None and row.expires <= time.time():
            logger.warning("Task %s[%s] expired before it could start", row.name, row.id)
            if signals.task_revoked.receivers:
                signals.task_revoked.send(sender=self.tasks.get(row.name) or row.name,
                                          request=_Request(row.id, args, kwargs, name=row.name),
                                          terminated=False, signum=None, expired=True)
            return outcome(EXPIRED)
        task = self.tasks.get(row.name) or self._find_late(row.name)
        if task is None:
            message = self._unknown_message(row.name)
            logger.error("Task %s[%s] rejected: %s", row.name, row.id, message)
            return outcome(FAILURE, _encode_error(UnknownTask(message)))
        if logger.isEnabledFor(logging.INFO):         # Celery's first line of a task
            logger.info("Task %s[%s] received", options.get("shadow") or row.name, row.id)
        if row.waits is not None:
            args = self._follower_args(row, task, args, kwargs)
        return task, args, kwargs, options

    def _follower_args(self, row, task, args, kwargs):
        """The arguments of a row that followed another: a link's parent result or a
        chord body's list of results go first; an errback gets (request, exc, traceback)
        or the failed task's id (Celery's rule, _errback_args)."""
        waits = row.waits
        if waits.endswith("_si"):
            return args
        if waits in ("link", "chord"):
            value = None if row.input is None else _unpack(row.input)
            return [value, *args]
        if waits == "error":
            failed = self._failed_ancestor(row.parent_id)
            return [*_errback_args(task, failed, args, kwargs), *args]
        return args

    def _failed_ancestor(self, task_id):
        """The task whose failure reached an errback: up a chain, past the rows that
        ended without running, to the one that ran (or a chord body that failed)."""
        app = _ThisFile(self.storage)
        result = AsyncResult(task_id, app)
        for _ in range(100_000):
            row = result._fetch()
            if not row or row["attempt"] or not row.get("parent_id") or \
                    row.get("waits") not in ("link", "link_si"):
                break
            above = AsyncResult(row["parent_id"], app)
            if _stands_in(above._fetch()):
                break            # a task of a chord's group body: it failed as the body
            result = above
        return result

    def _unknown_message(self, name):
        """Why a name cannot run here: a module this worker cannot import, or nobody's."""
        module = self.storage.module_of(name)
        if not isinstance(module, str):
            return _unknown_task_message(name, self.tasks)
        if module in sys.modules:
            return (f"task {name!r} was registered by module {module!r}, which this worker "
                    f"imported, but it does not define that task (renamed or removed?)")
        if not self.spec.autoimport:
            return (f"task {name!r} is registered by module {module!r}, which this worker "
                    f"did not import: auto-import is off; pass -A {module}")
        return (f"task {name!r} is registered by module {module!r}, which this worker "
                f"cannot import from its directory {self.spec.cwd} (start the worker "
                f"in that module's directory, or pass -A {module})")

    def _find_late(self, name):
        """A name this child does not know: maybe a producer registered a new module.
        One indexed read; a module already looked at is not looked at again."""
        if not self.spec.autoimport:
            return None
        module = self.storage.module_of(name)
        if not isinstance(module, str) or module in self.tried_modules:
            return None
        _autoimport([module], self.spec.cwd, self.tried_modules)
        self.tasks, _ = _collect_tasks(self.spec.db)
        self._note_async()
        return self.tasks.get(name)


class _Offloading:
    """The rows a child runs off its main thread: coroutine tasks on its event loop
    (_LoopRunner), sync tasks on its threads under -P threads (_ThreadRunner). _dispatch
    begins them and hands them over, _collect ends those that came back. _Child
    inherits it; the attributes are _Child's."""

    def _note_async(self):
        """Whether any row may run off the main thread (a coroutine task, or -P threads)."""
        self.has_async = any(getattr(t, "is_async", False) for t in self.tasks.values())
        self.offloading = bool(self.threads) or self.has_async
        self.last_claim = (True, self.has_async)     # did it bring sync rows, coroutines

    def _kind(self, row):
        """Where a claimed row runs: _ON_MAIN, _OFF_LOOP or _OFF_THREAD. A row the child
        cannot run (unknown name...) is settled on the main thread."""
        task = self.tasks.get(row.name)
        if task is None:
            return _ON_MAIN
        if task.is_async:
            return _OFF_LOOP
        return _OFF_THREAD if self.threads else _ON_MAIN

    def _free(self):
        """Slots free on the loop and on the threads."""
        return (self.async_limit - self.off[_OFF_LOOP],
                self.threads - self.off[_OFF_THREAD])

    def _want(self):
        """How many rows to claim: the adaptive batch for the main thread, plus as many as
        the loop and the threads have free slots for (0: wait for a slot). A claim takes
        rows in queue order whatever they run on, so each kind the last claim did not
        bring is asked for once only (one row to notice it again), so that a child does
        not take rows it has no slot for from the other processes."""
        if not self.offloading:
            return self.batch
        free_loop, free_threads = self._free()
        sync, coroutines = self.last_claim
        if not self.has_async:
            free_loop = 0
        elif not coroutines:
            free_loop = min(free_loop, 1)
        if self.threads:
            on_main = 0
            if not sync:
                free_threads = min(free_threads, 1)
        else:
            on_main, free_threads = (self.batch if sync else 0), 0
        return min(on_main + free_loop + free_threads, _OFFLOAD_CLAIM_MAX)

    def _dispatch(self):
        """Hand the claimed rows that run off the main thread to the loop or the threads,
        in order, as many of each kind as have a free slot; a row with no free slot does
        not hold up the rows of the other kind behind it (a sync row waiting for a busy
        thread, coroutines behind it). With nothing to hand, wait for a slot."""
        free = dict(zip((_OFF_LOOP, _OFF_THREAD), self._free()))
        batch, kept = [], collections.deque()
        for row in self.pending.claimed:
            kind = self._kind(row)
            if kind != _ON_MAIN and free[kind] > 0:
                free[kind] -= 1
                batch.append((row, kind))
            else:
                kept.append(row)
        self.pending.claimed = kept
        if not batch:
            on_main = [row for row in kept if self._kind(row) == _ON_MAIN]
            if on_main:               # step() settles it on the main thread next
                kept.remove(on_main[0])
                kept.appendleft(on_main[0])
                return True
            self._wait_done(self.poll_max)
            return True
        runs = []
        for row, kind in batch:
            run = self.flights[row.seq] = _Run(row, kind)
            self.off[kind] += 1
            runs.append(run)
        # As _still_ours: record them as running, then look for revokes.
        self._record_flights()
        revocations = self.revocations.value()
        if revocations != self.revocations_seen:
            self.revocations_seen = revocations
            seqs = [run.row.seq for run in runs]
            states = _waiting_out(lambda: self.storage.states_of(seqs, locked=True),
                                  "reading revoked rows again")
            for run in [r for r in runs if states.get(r.row.seq) != STARTED]:
                runs.remove(run)
                self._land(run)
        started = []
        for run in runs:
            ended = self._begin(run)
            if ended is not None:
                self._land(run)
                self._end(run, ended, 0.0)
            else:
                started.append(run)
        self._record_flights()            # with their hard deadlines
        if any(run.deadline for run in started):
            self.control_bell.ring()      # the supervisor enforces the hard limits
        for kind in (_OFF_LOOP, _OFF_THREAD):
            mine = [run for run in started if run.kind == kind]
            if mine:
                self._runner(kind).submit(mine)
        return True

    def _runner(self, kind):
        """The loop or the threads, started on first use."""
        if kind == _OFF_LOOP:
            if self.loop_runner is None:
                self.loop_runner = _LoopRunner(self._report)
            return self.loop_runner
        if self.thread_runner is None:
            self.thread_runner = _ThreadRunner(self.threads, self._report)
        return self.thread_runner

    def open_storage(self, busy_timeout=None):
        """A connection of the child's own, for a thread other than the main one."""
        conf = self.spec.settings
        return _Storage(self.spec.db, synchronous=conf["synchronous"],
                        busy_timeout=conf["busy_timeout"] if busy_timeout is None
                        else busy_timeout, autocheckpoint=0, busy_steps=_BUSY_STEPS_WORKER)

    def _meta_writer(self):
        if self.meta_writer is None:
            self.meta_writer = _SharedMetaWriter(self.open_storage)
        return self.meta_writer

    def _report(self, seq, value, exc, tb, seconds):
        """A runner thread: a flight ended. The main thread collects it."""
        self.done.put((seq, value, exc, tb, seconds))

    def _land(self, flight):
        """A flight is over (collected, or dropped before it began)."""
        del self.flights[flight.row.seq]
        self.off[flight.kind] -= 1

    def _record_flights(self):
        """Write the lock record: what runs off the main thread, and what waits to be
        committed."""
        self.lock.set_entries([(f.row.seq, f.deadline, f.kind) for f in self.flights.values()])
        self.lock.executing(0, begun=self.pending.begun)

    def _collect(self):
        """Turn the flights that ended into outcomes for the next commit, commit them, and
        claim rows for the slots they freed."""
        for seq, value, exc, tb, seconds in self.done.take():
            flight = self.flights.get(seq)
            if flight is None:
                continue
            self._land(flight)
            if isinstance(exc, _Terminated):
                logger.warning("Task %s[%s] was revoked and terminated", flight.row.name,
                               flight.row.id)
                continue                  # its row is REVOKED already
            self._end(flight, self._safely(flight, self._finish, flight, value, exc, tb),
                      seconds)
        self._record_flights()
        if self.pending.outcomes:
            stopping = self.stopping or self.orphaned
            rows = self._commit(self.pending.take(), 0 if stopping else
                                max(0, self._want() - len(self.pending.claimed)))
            self.pending.claimed.extend(rows)
        self._cancel_revoked()

    def _cancel_revoked(self):
        """Cancel the coroutines revoked with terminate (the revoke counter moved)."""
        revocations = self.revocations.value()
        if revocations == self.revocations_seen or not self.off[_OFF_LOOP]:
            return
        self.revocations_seen = revocations
        seqs = [seq for seq, f in self.flights.items() if f.kind == _OFF_LOOP]
        states = self.storage.states_of(seqs)
        killing = False
        for seq in seqs:
            if states.get(seq) == REVOKED:
                flight = self.flights[seq]
                self.loop_runner.cancel(flight, _TERMINATED)
                # A coroutine that blocks its loop cannot be cancelled: as for a hard time
                # limit, the supervisor kills the process if it has not ended by then.
                limit = time.time() + _LOOP_KILL_GRACE
                if not flight.deadline or flight.deadline > limit:
                    flight.deadline, killing = limit, True
        if killing:
            self._record_flights()
            self.control_bell.ring()


class _Child(_RunPipeline, _Offloading):
    """One worker process: claims rows, runs them, records results. Sync tasks run on its
    main thread (prefork, solo) or on its threads (-P threads); coroutine tasks run on its
    event loop thread (_LoopRunner), up to worker_async_concurrency at once."""

    def __init__(self, spec, pool=None):
        spec = spec if isinstance(spec, _ChildSpec) else _ChildSpec(**spec)
        self.spec = spec
        self.given_pool = pool         # the supervisor's pool socket (None: one of its own)
        self.worker_id = spec.worker_id
        self.pid = os.getpid()
        self.queues = spec.queues
        self.hostname = spec.hostname
        self.poll_max = spec.poll_interval          # the longest idle sleep between looks
        self.threads = spec.threads                 # -P threads: how many (else 0)
        self.solo = spec.solo                       # -P solo: one task at a time, sync or not
        self.async_limit = spec.async_concurrency   # coroutines at once on the loop
        self.max_memory = spec.max_memory           # KiB; _open() may raise it
        conf = spec.settings
        self.default_max_retries = conf["task_max_retries"]
        self.prefetch = max(1, int(conf["worker_prefetch"]))   # the largest claim
        # State of the loop.
        self.running = False           # set once it has started and begins to claim
        self.stopping = False          # finish what runs, commit, exit (SIGTERM, max tasks)
        self.burst = False             # stop once no row is ready (work_until_empty)
        self.orphaned = False          # the supervisor died: as stopping
        self.in_task = False           # a sync task runs on this thread (soft limit armed)
        self.tasks_done = 0            # for worker_max_tasks_per_child
        self._queue_turn = 0           # the next queue to claim from, round robin
        self._durations = {}           # task name -> moving average of its run time
        self.pending = _Pending()      # outcomes to commit, rows claimed not begun
        self.claim_queue = self.queues[0]     # the queue the held claimed rows came from
        self.frees_slot = False               # an outcome to commit holds a concurrency slot
        # Rows to claim at once, never more than a fair share of the ready rows: 1 while
        # the tasks' durations are unknown (a slow task must not hold rows an idle sibling
        # could run); fast tasks multiply it by 4, up to worker_prefetch; a slow one
        # drops it to 1 again.
        self.batch = 1
        self.last_duration = 0.0       # of the last task run on this thread, seconds
        self.deadline_set = False      # the lock record holds a hard deadline
        # Off the main thread: coroutines on the loop, sync tasks on -P threads threads.
        self.flights = {}              # seq -> _Run, of the rows off the main thread
        self.off = {_OFF_LOOP: 0, _OFF_THREAD: 0}     # flights of each kind
        self.done = _Mailbox()         # (seq, value, exc, tb, seconds) from runners
        self.loop_runner = self.thread_runner = self.meta_writer = None   # on first use
        self.has_async = self.offloading = False      # set by _note_async()
        self.last_claim = (True, False)               # did it bring sync rows, coroutines
        # Resources, opened by _open().
        self.storage = self.lock = self.sleeper = None
        self.pool_socket = self.waitset = None   # new-work rings, shared with the siblings
        self.control_bell = self.done_bell = self.work_bell = None
        self.revocations = None        # the revoke counter, and its value when last read
        self.revocations_seen = None
        self.tasks = {}                # name -> Task, of the code this child imported
        self.tried_modules = set()     # module names auto-import has looked at
        self.stats = _Stats(self.worker_id)
        self.sig_r = None              # the read end of the signal wake-up pipe
        self.parent_sentinel = None    # ready once the supervisor has died
        self.ppid = None               # the supervisor's pid (a reparented child is orphaned)
        self.watch = None              # a _Watch: hands back rows claimed beside a long task

    def run(self):
        """Open everything the child needs, register, and run rows until told to stop.
        Returns its exit code."""
        self._open()
        self._install_signal_handlers()
        self.running = True
        _JOIN_BLOCKS[0] = True           # a task's get() raises here (see _JOIN_BLOCKS)
        try:
            self._loop()
        except BaseException:
            # The lock file keeps naming the row being run, for the supervisor to charge;
            # the lock itself goes with the process.
            self.sleeper.close()
            raise
        self.close()
        return 0

    def work_until_empty(self):
        """Run every ready row, and the rows their ends queue, in this process until
        none is ready and none runs; then close. arq's burst and huey's work_on_tasks:
        the steps of a child, driven by a test, with no signal handler installed."""
        self.burst = True
        self._open()
        self.running = True
        try:
            self._loop()
        finally:
            self.close()
        return self.tasks_done

    def _open(self):
        """Everything step() needs: storage, task code, lock file, registration and
        wake-up sockets (a test can then call step() in its own process)."""
        spec = self.spec
        conf = spec.settings
        side = _SideDir(spec.db)
        self.control_bell = _Doorbell(side, "sched")
        self.storage = _Storage(spec.db, synchronous=conf["synchronous"],
                                busy_timeout=conf["busy_timeout"], autocheckpoint=0,
                                busy_steps=_BUSY_STEPS_WORKER,
                                on_wal_growth=self.control_bell.ring)
        self.storage.claim_share = max(1, spec.processes)
        self.tasks, _, _, _ = _load_worker_code(spec.db, spec.cwd, spec.modules,
                                                spec.autoimport, self.storage,
                                                self.tried_modules)
        signals.worker_process_init.send(sender=None)    # Celery's: in each pool process
        self.lock = _waiting_out(lambda: _WorkerLock(side, self.worker_id),
                                 "creating the lock file again")
        self.revocations = _RevokeCounter(side)
        self.revocations_seen = self.revocations.value()     # read before the first claim
        if self.max_memory:
            baseline = _resident_kib()
            if baseline * 1.1 >= self.max_memory:
                # A fresh child already near the limit would be replaced after every task,
                # for ever (Celery's respawn loop): allow it some room instead.
                self.max_memory = int(baseline * 1.5)
                logger.warning("max memory per child %d KiB is below a fresh child's %d KiB; "
                               "using %d KiB", spec.max_memory, baseline, self.max_memory)
        row = {"id": self.worker_id, "parent": spec.parent_id, "hostname": spec.hostname,
               "pid": self.pid, "queues": ",".join(self.queues),
               "concurrency": spec.threads or 1, "started_at": time.time(), "pool": None}
        _waiting_out(lambda: self.storage.register_worker(row), "registering again")
        self.sleeper = _Sleeper(side, "child", self.worker_id)
        self._open_pool(side)
        self.done_bell = _Doorbell(side, "done", keep=False)
        self.work_bell = _Doorbell(side, "work")
        self.sig_r, self._sig_w = os.pipe()
        os.set_blocking(self._sig_w, False)
        parent = multiprocessing.parent_process()
        self.parent_sentinel = parent.sentinel if parent else None
        self.ppid = os.getppid()
        self.waitset = _Waitset([w for w in (self.pool_socket, self.sleeper, self.sig_r,
                                             self.done, self.parent_sentinel)
                                 if w is not None])
        self.watch = _Watch(self)      # its thread starts now
        self._note_async()

    def _open_pool(self, side):
        """The socket that producers ring for new work (work/<supervisor's id>): the
        supervisor's, shared by its children (a producer sends one datagram a
        supervisor, not one a child), or, for a child on its own (a test's), one of its
        own."""
        self.pool_socket = _Sleeper(side, "work", self.worker_id) if self.given_pool is None \
            else _Sleeper.shared(self.given_pool)

    def _install_signal_handlers(self):
        """SIGALRM: a sync task's soft time limit; SIGTERM: stop after the running task.
        Both wake the loop through the pipe _open() made."""
        signal.signal(signal.SIGALRM, self._on_soft_limit)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.set_wakeup_fd(self._sig_w)

    def close(self):
        """Unregister and let go of the lock file, after a clean end."""
        for runner in (self.loop_runner, self.thread_runner):
            if runner is not None:
                runner.close()
        self.watch.stop()
        self.sleeper.close()
        self.pool_socket.close()
        self.waitset.close()
        with contextlib.suppress(Exception):
            stats = self.stats.take(force=True)
            if stats:
                self.storage.add_stats(stats)
        with contextlib.suppress(Exception):
            self.storage.unregister_worker(self.worker_id)
        self.lock.release()
        self.storage.close()
        # The rest goes with the process anyway; a child run in a test's process
        # (work_until_empty) must not leave its descriptors behind.
        for bell in (self.control_bell, self.done_bell, self.work_bell):
            bell.close()
        self.revocations.close()
        self.done.close()
        os.close(self.sig_r)
        os.close(self._sig_w)

    def _on_soft_limit(self, signum, frame):
        """SIGALRM: the running task passed its soft time limit."""
        if self.in_task:
            self.in_task = False
            raise SoftTimeLimitExceeded("the task ran past its soft time limit")

    def _on_sigterm(self, signum, frame):
        # One is enough: a second (a group signal plus the supervisor's) must not kill
        # the child while it finishes its task or exits.
        """SIGTERM from the supervisor (warm shutdown): finish the task, then stop."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stopping = True

    def _next_queue(self):
        """The queues served, in turn, so that no queue starves another."""
        queue = self.queues[self._queue_turn % len(self.queues)]
        self._queue_turn += 1
        return queue

    def _loop(self):
        """Run rows until told to stop: a short loop over step()."""
        while self.step():
            pass

    def step(self):
        """One pass: claim rows if none is held, else run the next one (or hand the next
        ones to the loop or the threads). Returns False when the child should exit."""
        if self.done:
            self._collect()
        if not self.pending.claimed:
            return self._refill()
        if self.offloading and self._kind(self.pending.claimed[0]) != _ON_MAIN:
            return self._dispatch()
        if self.flights and self.solo:
            self._wait_done(self.poll_max)       # solo: one task at a time, sync or not
            return True
        row = self.pending.claimed.popleft()
        begun = self.pending.begun
        if self._still_ours(row, begun):
            self._run(row, begun)
        return self._after_run()

    def _refill(self):
        """Commit what ran and claim the next batch, sleeping until there is one. False
        once the child is stopping (or orphaned) and has committed everything."""
        if self._parent_gone():
            self.orphaned = True
        stopping = self.stopping or self.orphaned
        want = 0 if stopping else self._want()
        rows = self._commit(self.pending.take(), want)
        if stopping:
            if self.flights:               # they finish first (their time limits hold)
                self._wait_done(self.poll_max)
                return True
            return False
        if want == 0:                      # every slot is taken: wait for one to end
            self._wait_done(self.poll_max)
            return True
        if not rows and self.burst:        # work_until_empty(): look at every queue
            for _ in self.queues[1:]:
                rows = self._commit([], want)
                if rows:
                    break
            else:
                if not self.flights:           # done once nothing is ready or runs
                    return False
                self._wait_done(self.poll_max)
                return True
        if not rows:
            # The batch size survives idleness: it was learnt from how fast the tasks
            # run, and any slow task resets it.
            rows = self._idle()
            if rows is None:
                return True
        # Claim more at once only while the backlog is deep and tasks are fast.
        if len(rows) >= self.batch and self.last_duration < _GROUP_COMMIT_WINDOW:
            self.batch = min(self.batch * 4, self.prefetch)
        self.pending.claimed.extend(rows)
        return True

    def _wait_done(self, timeout):
        """Sleep until a flight ends, a signal, the supervisor's end, or timeout."""
        self.watch.sleep()
        waitables = [self.done, self.sig_r, self.sleeper]
        if self.parent_sentinel is not None:
            waitables.append(self.parent_sentinel)
        ready = _wait_readable(waitables, self._flush_idle_stats(timeout))
        if self.sig_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self.sig_r, 64)
        if self.sleeper in ready:
            self.sleeper.drain()
            self._cancel_revoked()
        if self.parent_sentinel in ready:
            self.orphaned = True

    def _run(self, row, begun):
        """Run one row and keep its outcome for the next commit."""
        if begun and self._durations.get(row.name, 1.0) > _GROUP_COMMIT_WINDOW:
            self._commit(self.pending.take(), 0)   # this task may be slow: commit first
            begun = []
        run = _Run(row, _ON_MAIN)
        self.watch.begin(row.seq, run.started)
        # If anything ends this process before the next line, the lock record still
        # names the row, and the supervisor charges the row with it.
        try:                         # as _safely() does, one call less on the hot path
            outcome = self._run_here(run, begun)
        except Exception as exc:
            outcome = self._unhandled(run, exc)
        self.watch.end()
        self.last_duration = duration = time.monotonic() - run.started
        self._end(run, outcome, duration)
        if self.deadline_set or not self.pending.claimed:
            # Otherwise the next row's _still_ours writes the record, with this one among
            # the begun rows, before anything else can happen.
            self.lock.executing(0, begun=self.pending.begun)
            self.deadline_set = False
        self._durations[row.name] = 0.7 * self._durations.get(row.name, duration) + 0.3 * duration
        if duration > _GROUP_COMMIT_WINDOW:
            self.batch = 1

    def _after_run(self):
        """Commit once the group-commit window has passed; give the claimed rows back
        when stopping, or after a slow task so that idle children can have them."""
        pending = self.pending
        if not pending.claimed:
            return True                 # the next step commits, then claims
        if self.stopping or self._parent_gone():
            self._commit(pending.take(), 0, release=pending.unclaim())
            return bool(self.flights)     # the loop's and threads' tasks finish first
        if self.last_duration > _GROUP_COMMIT_WINDOW:
            self._commit(pending.take(), 0, release=pending.unclaim())
        elif pending.since is not None and \
                time.monotonic() - pending.since > _GROUP_COMMIT_WINDOW:
            self._commit(pending.take(), 0)
        return True

    def _used_up(self):
        """True once this child should be replaced (max tasks or memory per child)."""
        max_tasks = self.spec.max_tasks
        if max_tasks and self.tasks_done >= max_tasks:
            logger.info("child %s ran %d tasks: replacing it", self.worker_id, self.tasks_done)
            return True
        if self.max_memory and _resident_kib() > self.max_memory:
            logger.info("child %s uses %d KiB (limit %d): replacing it", self.worker_id,
                        _resident_kib(), self.max_memory)
            return True
        return False

    def _parent_gone(self):
        """True once the supervisor has died (this child was given another parent)."""
        if self.parent_sentinel is None:
            return False
        return os.getppid() != self.ppid      # reparented: one system call, no poll

    def _commit(self, outcomes, want, release=()):
        """Record outcomes, hand back `release`, and claim up to `want` rows from the
        next queue in turn."""
        if not outcomes and not want and not release:
            return []
        rows, claimed = [], []
        expected = _WorkflowRun.take_expected() if outcomes else ()
        queues_left = len(self.queues) if want else 1
        while True:
            queue = self._next_queue()
            rows, rejected, follow = self._write(outcomes, queue, want, release)
            if rows:
                self.claim_queue = queue
                if self.offloading:
                    kinds = [self._kind(row) for row in rows]
                    self.last_claim = ((_ON_MAIN in kinds or _OFF_THREAD in kinds),
                                       _OFF_LOOP in kinds)
            release = ()
            if rejected:
                logger.warning("%d stale completion(s) rejected: the task was rescued and "
                               "given to another worker", rejected)
            if outcomes:
                self.done_bell.ring_tasks([o.tag for o in outcomes if o.tag is not None])
                if self.frees_slot:   # a process held back by a concurrency limit may start
                    self.frees_slot = False
                    self.work_bell.ring()
                if any(o.state == RETRY or o.state is _SUSPENDED and o.eta is not None
                       for o in outcomes):
                    self.control_bell.ring()  # the scheduler must learn the retry's ETA
                outcomes = []
            if follow is not None:
                self._ring_follow_ups(follow)
            claimed += rows
            queues_left -= 1
            if rows or queues_left <= 0:
                if expected and not expected <= {row.id for row in claimed}:
                    # A step its run left unrung for this claim went unclaimed (this
                    # process stops, or it claimed other rows first): siblings must.
                    self.work_bell.ring()
                return rows

    def _ring_follow_ups(self, follow):
        """After a commit that queued followers or ended rows without running them."""
        if follow.woken:
            self.work_bell.ring()
            self.control_bell.ring()      # a follower with a countdown is SCHEDULED
        self.done_bell.ring_tasks(follow.ended)

    def _write(self, outcomes, queue, want, release):
        """complete_and_claim, waiting out a busy write lock or a full disk with the
        outcomes kept (their rows stay STARTED and fenced meanwhile); a claim alone is
        given up and tried again later. An outcome the database refuses for itself is
        stored as a FAILURE that says why."""
        while True:
            try:
                if not outcomes and not release:
                    return self.storage.complete_and_claim(
                        outcomes, self.worker_id, self.pid, time.time(), queue, want, release)
                stats = self.stats.take()       # counters ride along, once a second
                return _waiting_out(
                    lambda: self.storage.complete_and_claim(
                        outcomes, self.worker_id, self.pid, time.time(), queue, want, release,
                        stats),
                    f"keeping {len(outcomes)} result(s) and trying again")
            except (DatabaseBusy, DiskFull):
                return _Committed([], 0, None)    # nothing to keep: claim again later
            except Exception as exc:         # the database's refusal, or what _settle raised
                if not outcomes:
                    raise
                self._store_one_by_one(outcomes, exc)
                outcomes = []

    def _store_one_by_one(self, outcomes, exc):
        """The database (or settling what a row's end sets in motion) refused a group of
        outcomes (a result too big, say): store each alone, so the others of the group are
        not charged for it, and one it refuses as a FAILURE naming the reason, which
        settles nothing."""
        logger.warning("storing %d result(s) one by one: %s: %s", len(outcomes),
                       type(exc).__name__, exc)
        for o in outcomes:
            try:
                follow = self._store([o]).follow_ups
                if follow is not None:
                    self._ring_follow_ups(follow)
            except Exception as refused:
                message = f"its outcome could not be stored: {type(refused).__name__}: {refused}"
                logger.error("task row %d failed: %s", o.seq, message)
                self._store([_Outcome(FAILURE, _encode_error(ValueError(message)), seq=o.seq,
                                      attempt=o.attempt, tag=o.tag)])

    def _store(self, outcomes):
        """Commit outcomes and nothing else, waiting out a busy lock or a full disk."""
        return _waiting_out(
            lambda: self.storage.complete_and_claim(outcomes, self.worker_id, self.pid,
                                                    time.time(), None, 0, ()),
            f"keeping {len(outcomes)} result(s) and trying again")

    def _idle(self):
        """Sleep until rung, the data changes, or a stop; never takes the write lock
        unless a read has seen a ready row. Returns claimed rows, or None to go round the
        loop again."""
        self.watch.sleep()
        poll = _POLL_MIN
        version = self.storage.data_version()
        look = True
        start_at = None       # when a rate-limited ready row may start
        while not self.stopping:
            if look:
                # A ready row first (what a ring is for), then the next start or eta.
                want = max(1, self._want())
                now = time.time()
                ready_now = sum(self.storage.ready_rows(q, now, want + 1) for q in self.queues)
                start_at = None if ready_now else self._next_start()
                if ready_now or start_at is not None and start_at <= time.time():
                    rows = self._commit([], want)
                    if rows:
                        if ready_now > len(rows):
                            # Rows are left. The ring that woke this child was one datagram
                            # on the pool socket, and it has read it: a sibling that woke
                            # later found nothing to read and slept on. Pass the ring on.
                            self.work_bell.ring()
                        return rows
                    start_at = None
                    if not self.storage.registered(self.worker_id):
                        # Declared dead: a rescuer may no longer see rows claimed under
                        # this id, so it claims none (the claim checks too) and makes way
                        # for a fresh child.
                        logger.error("child %s is no longer in the workers table; it stops "
                                     "claiming and exits", self.worker_id)
                        self.stopping = True
                        return None
            wait = self._flush_idle_stats(poll)
            if start_at is not None:
                wait = max(0.0, min(wait, start_at - time.time()))
            ready = self.waitset.wait(wait)
            if self.sig_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.sig_r, 64)
            if self.parent_sentinel in ready:
                self.orphaned = True
                return None
            if self.done in ready:
                return None               # a coroutine or thread ended: collect it
            if self._rung(ready):
                look = True
            elif start_at is not None and start_at <= time.time():
                look = True                   # an eta or a rate-limited row's start has come
            else:
                # Writers that do not ring (other languages, the sqlite3 shell) still
                # change data_version; reading it costs no lock.
                new_version = self.storage.data_version()
                look, version = new_version != version, new_version
            # Longer each time: a look that found nothing to claim means the file's
            # changes were not new work for this child, which rings would have said.
            poll = min(poll * 2, self.poll_max)
        return None

    def _rung(self, ready):
        """Read the rings among the ready waitables: True if there was one. The pool's
        rings mean new work; the child's own, an eta near or a revoke to look at."""
        rung = False
        if self.pool_socket in ready:
            self.pool_socket.drain()
            rung = True
        if self.sleeper in ready:
            self.sleeper.drain()
            self._cancel_revoked()
            rung = True
        return rung

    def _next_start(self):
        """When to look again without a ring: the earliest start time of a rate-limited
        ready row of the queues served, or the next eta of any row (one index read). The
        supervisor rings the children _ETA_PREWAKE ahead of an eta, so that they are
        awake, and claim the row as it falls due (_DUE_ROWS)."""
        times = [self.storage.next_due_after(time.time())]
        if self.storage.has_limits():
            times += map(self.storage.next_start, self.queues)
        times = [t for t in times if _is_time(t)]
        return min(times) if times else None

    def _flush_idle_stats(self, wait):
        """While idle, write the counters once their interval is over (a write only when
        there is something to count); returns how long to sleep before looking again."""
        if not self.stats.rows:
            return wait
        left = self.stats.last + _STATS_FLUSH - time.monotonic()
        if left > 0:
            return min(wait, left)
        rows = self.stats.take(force=True)
        with contextlib.suppress(DatabaseBusy, DiskFull):
            self.storage.add_stats(rows)
        return wait


# A child's exit code when it cannot start (its side directory or database is unusable).
_CHILD_CANNOT_RUN = 3


# A child's first statements. `multiprocessing` runs them by calling exec (a builtin, so
# unpickling the process imports nothing): they make the supervisor's module from its
# marshalled code, then unpickle the spec and run the child. The code is read from a
# sealed memory file of the supervisor's (_module_code_file), not sent down the start
# pipe: multiprocessing writes that pipe while it holds the child's end open, so a child
# killed before it had read 0.7 MB left the supervisor blocked in the write for good.
# The spec is the settings and options multiprocessing would pickle anyway (a
# beat_schedule may hold crontab objects, which need the module first); no task data
# goes through pickle, which stays msgpack.
_CHILD_BOOT = """
import hashlib, importlib.util, marshal, pickle, sys, types
module = types.ModuleType(name)
module.__file__, module.__spec__ = path, importlib.util.spec_from_file_location(name, path)
sys.modules[name] = module
try:
    with open(code_file, "rb") as f:
        code = f.read()
    if hashlib.sha256(code).hexdigest() != digest:
        raise ValueError(f"{code_file} is not the supervisor's code")
    exec(marshal.loads(code), module.__dict__)
except BaseException:
    del sys.modules[name]
    raise
del code
module._child_main(pickle.loads(spec), pool)
"""


@functools.cache
def _module_code_file():
    """(path another process opens, sha256) of a sealed memory file holding this module's
    marshalled code (about 0.7 MB), made once; None if there is none (a module inside a
    package, no frame to take the code from, or no memfd here)."""
    if _MODULE_CODE is None or "." in __name__ or not __file__:
        return None
    blob = marshal.dumps(_MODULE_CODE)
    try:
        fd = os.memfd_create("litequeue-code", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        with open(fd, "wb", closefd=False) as f:
            f.write(blob)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW |
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    except (AttributeError, OSError):
        return None
    # Only this user (or root) may open another process's descriptors through /proc.
    return f"/proc/{os.getpid()}/fd/{fd}", hashlib.sha256(blob).hexdigest()


def _child_process(ctx, spec, name, pool=None):
    """A multiprocessing Process (not started) that runs _child_main(spec, pool): from
    this module's code when it can, so a child neither reads nor compiles the file (74 ms
    for this module when bytecode caching is off, and a child that read an edited file
    would run other code than its supervisor); else by importing this module by name.
    The pool socket goes down as a descriptor (multiprocessing passes a socket in a
    spawned process's arguments through the exec)."""
    spec = spec._asdict()
    code = _module_code_file()
    if code is None:
        return ctx.Process(target=_child_main, args=(spec, pool), name=name)
    return ctx.Process(target=exec, name=name, args=(_CHILD_BOOT, {
        "name": __name__, "path": os.path.abspath(__file__), "code_file": code[0],
        "digest": code[1], "spec": pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL),
        "pool": pool}))


def _child_main(spec, pool=None):
    """Entry point of a worker child process (spawned, so it shares no connection)."""
    spec = _ChildSpec(**spec)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which decides
    _quiet_config_notices()         # the supervisor has shown them
    _configure_logging(spec.loglevel)
    if spec.solo_tty:
        # -P solo from a terminal: breakpoint() and pdb in a task read from it.
        with contextlib.suppress(OSError):
            sys.stdin = open("/dev/tty")      # noqa: SIM115 (for the process's life)
    child = _Child(spec, pool)
    try:
        code = child.run()
    except LitequeueError as exc:
        logger.error("worker child %s: %s", "stopped" if child.running else "cannot run", exc)
        code = 1 if child.running else _CHILD_CANNOT_RUN
    sys.exit(code)


# ---------------------------------------------------------------------------
# Alerts: failure mails and systemd notify
# ---------------------------------------------------------------------------

class _Notify:
    """systemd's notify protocol (Type=notify) over $NOTIFY_SOCKET, with the standard
    library: READY=1 once the children run, STOPPING=1 at shutdown, WATCHDOG=1 every half
    WATCHDOG_USEC. Without $NOTIFY_SOCKET it does nothing."""

    def __init__(self, environ=os.environ):
        path = environ.get("NOTIFY_SOCKET") or ""
        self.address = ("\0" + path[1:]) if path.startswith("@") else \
            (path if path.startswith("/") else None)
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID")
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and \
            (not pid or pid == str(os.getpid())) and self.address else None

    def send(self, text):
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(text.encode(), self.address)
        except OSError as exc:
            logger.warning("cannot notify systemd at %s: %s", _saferepr(self.address), exc)


# Failures are mailed once they are this many seconds old: a commit's finish time is read
# before it waits for the write lock, so a younger one could still appear behind the cursor.
_ALERT_MARGIN = 5.0


# A subject longer than this is clipped (the digest's body names every task anyway).
_MAIL_SUBJECT_MAX = 200
# A failure mail that fails is tried again after email_interval, doubled for each failure
# in a row, but never later than this many seconds: a server down for long is not hammered,
# and the failures reach it within some minutes once it is back.
_MAIL_BACKOFF_MAX = 600.0
# While a mail is being sent, the supervisor looks this often whether it is done: about
# the time an SMTP exchange takes on a local network.
_MAIL_POLL = 0.2


def _send_failure_mail(settings, failures, host):
    """One digest mail of failures [(id, name, result, traceback, finished_at)]: per task
    name its count and its latest error. Raises whatever fails (building the mail, or any
    SMTP step); returns once the server accepted the mail."""
    import email.message
    import smtplib
    by_name = {}
    for task_id, name, result, tb, finished in failures:
        entry = by_name.setdefault(_shown(name), [0, None])
        entry[0] += 1
        entry[1] = (task_id, result, tb, finished)
    total = sum(n for n, _ in by_name.values())
    msg = email.message.EmailMessage()
    names = ", ".join(sorted(by_name))
    msg["Subject"] = _one_line(f"[litequeue] {total} task failure(s) on {host}: {names}",
                               _MAIL_SUBJECT_MAX)
    msg["From"] = _one_line(settings["server_email"], 1000)
    msg["To"] = _one_line(", ".join(f"{name} <{addr}>" for name, addr in settings["admins"]),
                          1000)
    lines = [f"{total} task(s) failed on {_printable(host)} since the last mail.", ""]
    for name, (count, (task_id, result, tb, finished)) in sorted(by_name.items()):
        exc = _rebuild_error(result, None)
        when = _from_unix(finished)
        lines += [f"{name}: {count} failure(s); the latest:",
                  f"  id        {_shown(task_id)}",
                  f"  finished  {when.isoformat(timespec='seconds') if when else '?'}",
                  f"  error     {type(exc).__name__}: {_shown(str(exc), 500)}", ""]
        if isinstance(tb, str) and tb:
            lines += ["  " + line for line in _clipped(tb.rstrip(), 4000).splitlines()] + [""]
    msg.set_content("\n".join(lines))
    smtp_class = smtplib.SMTP_SSL if settings["email_use_ssl"] else smtplib.SMTP
    with smtp_class(settings["email_host"], settings["email_port"],
                    timeout=settings["email_timeout"]) as smtp:
        if settings["email_use_tls"] and not settings["email_use_ssl"]:
            smtp.starttls()
        if settings["email_host_user"]:
            smtp.login(settings["email_host_user"], settings["email_host_password"] or "")
        smtp.send_message(msg)
    return msg["To"]


class _FailureMailer:
    """The supervisor's failure mails, as a step: read the failures after the shared
    cursor, mail them from a thread (SMTP never blocks the loop), and move the cursor only
    once the server accepted the mail. A mail that fails for any reason leaves the cursor,
    so its failures go with the next attempt, after a backoff; the log says why once per
    streak of failed attempts. An flock on DB-lq/mail.lock, held from the read to the
    cursor's move, keeps supervisors of one database from mailing the same failures."""

    def __init__(self, storage, side, settings, host):
        self.storage, self.side, self.settings, self.host = storage, side, settings, host
        self.sending = None     # (thread, until, count, [outcome]) while a mail is out
        self.streak = 0         # attempts that failed in a row
        self.lock_fd = None

    def step(self, now):
        """One look; returns the monotonic time of the next."""
        if self.sending is not None:
            if self.sending[0].is_alive():
                return now + _MAIL_POLL
            return self._finish(now)
        if not self._lock():
            return now + self.settings["email_interval"]
        try:
            until = time.time() - _ALERT_MARGIN
            _, failures = self.storage.unmailed_failures(until)
        except BaseException:
            self._unlock()
            raise
        if not failures:
            self._unlock()
            return now + self.settings["email_interval"]
        outcome = []
        thread = threading.Thread(target=self._send, name="litequeue-mail", daemon=True,
                                  args=(failures, outcome))
        self.sending = (thread, until, len(failures), outcome)
        thread.start()
        return now + _MAIL_POLL

    def _send(self, failures, outcome):
        try:
            outcome.append(("sent", _send_failure_mail(self.settings, failures, self.host)))
        except Exception as exc:
            outcome.append(("failed", exc))

    def _finish(self, now):
        """The mail thread ended: move the cursor if the mail was accepted, else back off."""
        _, until, count, outcome = self.sending
        self.sending = None
        try:
            kind, value = outcome[0] if outcome else (
                "failed", RuntimeError("the mail thread ended without an outcome"))
            if kind == "sent":
                self.storage.mark_mailed(until)
                logger.info("mailed %d failure(s) to %s", count, value)
                if self.streak:
                    logger.info("failure mails work again after %s",
                                _plural(self.streak, "failed attempt"))
                self.streak = 0
                return now + self.settings["email_interval"]
            self.streak += 1
            interval = self.settings["email_interval"]
            delay = min(interval * 2 ** self.streak, max(interval, _MAIL_BACKOFF_MAX))
            if self.streak == 1:
                logger.error("cannot mail %d failure(s) via %s:%s: %s: %s; they are kept and "
                             "tried again, backing off up to %s s", count,
                             self.settings["email_host"], self.settings["email_port"],
                             type(value).__name__, _saferepr(value),
                             max(interval, _MAIL_BACKOFF_MAX))
            return now + delay
        finally:
            self._unlock()

    def _lock(self):
        """Take DB-lq/mail.lock without waiting; False if another supervisor holds it."""
        base = self.side.open()
        try:
            fd = self.side.open_file(base, "mail.lock", os.O_RDWR | os.O_CREAT,
                                     os.path.join(self.side.path, "mail.lock"))
        finally:
            os.close(base)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        return True

    def _unlock(self):
        if self.lock_fd is not None:
            os.close(self.lock_fd)      # drops the flock
            self.lock_fd = None


# ---------------------------------------------------------------------------
# Worker: the supervisor
# ---------------------------------------------------------------------------

class _ChildHandle:
    def __init__(self, process, worker_id, started):
        self.process = process
        self.worker_id = worker_id
        self.started = started
        self.killed_for = None      # "time limit" or "revoked" once the supervisor kills it
        self.culprits = ()          # then the seqs it was killed for
        self.retiring = False       # True: told to end (a shrunk pool), not to be replaced

    def kill(self, why, culprits):
        self.killed_for = why
        self.culprits = frozenset(culprits)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)


class _Fatal(Exception):
    """A supervisor failure it cannot recover from: the worker ends with exit code 2."""


def _pool_words(pool, processes, threads, async_concurrency):
    """A worker's pool as a sentence for its log and systemd's status line."""
    if pool == "solo":
        return "solo (1 process, 1 task at a time)"
    coroutines = f"up to {_plural(async_concurrency, 'coroutine task')} at once"
    if pool == "threads":
        return f"1 process running sync tasks on {_plural(threads, 'thread')} and {coroutines}"
    if processes == 1:
        return f"1 process running one sync task at a time and {coroutines}"
    return f"{processes} processes, each running one sync task at a time and {coroutines}"


class _Guard:
    """Runs one supervisor step and contains its errors; returns its result, or default.
    A busy write lock or a full disk is waited out (logged once per
    _TROUBLE_LOG_INTERVAL); any other error is logged, counted, and followed by
    after_error (the quarantine: bad rows set aside); the _STEP_FAILURES_MAX-th failure
    of a step in a row raises _Fatal, which ends the worker."""

    def __init__(self, after_error=None):
        self.after_error = after_error
        self.failures = {}           # step -> errors in a row
        self.troubled = {}           # step -> when a busy lock or full disk was last logged

    def __call__(self, step, action, *args, default=None):
        try:
            result = action(*args)
        except (DatabaseBusy, DiskFull, apsw.BusyError, apsw.FullError) as exc:
            last = self.troubled.get(step)
            if last is None or time.monotonic() - last > _TROUBLE_LOG_INTERVAL:
                logger.warning("%s: %s; waiting it out", step, exc)
                self.troubled[step] = time.monotonic()
            return default
        except Exception as exc:
            failures = self.failures[step] = self.failures.get(step, 0) + 1
            logger.error("%s failed (%d in a row): %s: %s", step, failures,
                         type(exc).__name__, _saferepr(exc), exc_info=failures == 1)
            if failures >= _STEP_FAILURES_MAX:
                raise _Fatal(f"{step} failed {failures} times in a row: "
                             f"{type(exc).__name__}: {_saferepr(exc)}") from None
            if step != "quarantine" and self.after_error is not None:
                self("quarantine", self.after_error)
            return default
        if self.failures.pop(step, None) or self.troubled.pop(step, None):
            logger.info("%s works again", step)
        return result


class _Timers:
    """Named jobs, each run when its time has come, on the clock the caller passes (the
    shape of sched.run(blocking=False)): step(now) runs the due ones, next_due() says when
    to look again. The supervisor's janitor is one: rescue, sweep, prune, checkpoint,
    failure mails and the systemd watchdog."""

    def __init__(self):
        self.due = {}           # name -> when it is next due (monotonic; None: off)
        self.jobs = {}          # name -> (interval, action)

    def add(self, name, first, interval, action):
        """action(now) runs when due and returns when it is next due, or None for now +
        interval. first=None leaves the job off."""
        self.jobs[name] = (interval, action)
        self.due[name] = first

    def step(self, now, held=()):
        """Run every due job, in the order they were added, but those named in held."""
        for name, (interval, action) in self.jobs.items():
            due = self.due[name]
            if due is None or now < due or name in held:
                continue
            self.due[name] = now + interval     # a job that fails waits its interval too
            when = action(now)
            if when is not None:
                self.due[name] = when

    def next_due(self, held=()):
        return min((due for name, due in self.due.items()
                    if due is not None and name not in held), default=None)


class _Scheduler:
    """Due ETA rows and periodic fires. step(now) promotes the rows whose eta has come and
    queues the fires that are due, rings the children, and returns the next due time (unix
    time, or None). It runs when something is due or a producer rang; it never ticks."""

    def __init__(self, storage, work_bell, quarantine):
        self.storage = storage
        self.work_bell = work_bell
        self.quarantine = quarantine    # sets aside rows whose times are not numbers
        self.prerung = None             # the due time the children were last rung ahead of

    def step(self, now):
        storage = self.storage
        due, fire = storage.next_due_and_fire()   # a read: most rings are not for us
        if not all(t is None or _is_time(t) for t in (due, fire)):
            self.quarantine()
            due, fire = storage.next_due_and_fire()
        promoted = fired = 0
        if _is_time(due) and due <= now - _DUE_CLAIM_GRACE:
            promoted = storage.promote_due(now, after_batch=self.work_bell.ring)
        elif _is_time(due) and due <= now:
            self.work_bell.ring()       # the children claim due rows as they stand
        if _is_time(fire) and fire <= now:
            fired = storage.fire_due_schedules(now, _plan_fires)
            if fired:
                self.work_bell.ring()
        if promoted or fired:
            logger.debug("scheduler: %d due task(s) promoted, %d periodic fire(s) queued",
                         promoted, fired)
        wake = storage.next_wakeup(now)
        if wake is None or wake <= now:
            return wake
        if wake - now > _ETA_PREWAKE:
            return wake - _ETA_PREWAKE          # to ring the children ahead of it
        if wake != self.prerung:
            self.prerung = wake
            self.work_bell.ring()               # they wait for the eta themselves
        return wake


class _Supervisor:
    """The worker's parent process.

    It starts N children and replaces dead ones, runs the scheduler (due ETA rows, periodic
    fires), polices hard time limits and terminating revokes, and runs the janitor: rescue
    of dead workers' rows, quarantine of rows nothing can read, pruning, checkpoints and a
    sweep of stale wake-up sockets. SIGTERM/SIGINT start a warm shutdown; a second signal
    or the end of the grace period makes it cold (self.shutdown: running, warm, cold).

    Every step runs under _guard: a busy write lock or a full disk is waited out, an error
    sets bad rows aside and is retried, and a step that keeps failing ends the whole
    worker with one clear line and exit code 2, never a half-alive process.
    """

    def __init__(self, db, *, concurrency, queues, modules, loglevel, settings, autoimport,
                 poll_interval, grace, tasks, periodic=None):
        self.db = os.path.abspath(db)
        self.tasks = tasks
        self.periodic = periodic or {}
        self.concurrency = concurrency
        self.pool = settings["worker_pool"]
        # prefork: one child per slot; threads: one child of `concurrency` threads; solo:
        # one child, one task at a time.
        self.processes = concurrency if self.pool == "prefork" else 1
        self.queues = queues
        self.modules = modules
        self.loglevel = loglevel
        self.settings = settings
        self.autoimport = autoimport
        self.poll_interval = poll_interval
        self.grace = grace
        self.worker_id = _new_worker_id()
        self.hostname = socket.gethostname()
        self.cwd = os.getcwd()
        self.registry_mark = None    # max(rowid) of the registry when last looked at
        self.tried_modules = set()
        self.children = {}
        self.restarts = []           # (when, slot) pending restarts
        self.fast_deaths = 0
        self.failed_starts = 0       # children in a row that exited _CHILD_CANNOT_RUN
        # Every step runs under it: self._guard(step, action, *args, default=...).
        self._guard = _Guard(after_error=self._quarantine)
        self.ctx = multiprocessing.get_context("spawn")

    def _spec(self, worker_id):
        """What a new child needs to know (the one place a _ChildSpec is built)."""
        solo = self.pool == "solo"
        return _ChildSpec(
            db=self.db, worker_id=worker_id, parent_id=self.worker_id, queues=self.queues,
            modules=self.modules, loglevel=self.loglevel, settings=self.settings,
            autoimport=self.autoimport, poll_interval=self.poll_interval, cwd=os.getcwd(),
            hostname=self.hostname, time_limit=self.settings["task_time_limit"],
            soft_time_limit=self.settings["task_soft_time_limit"],
            max_tasks=self.settings["worker_max_tasks_per_child"],
            max_memory=self.settings["worker_max_memory_per_child"],
            threads=self.concurrency if self.pool == "threads" else 0,
            processes=self.processes,
            async_concurrency=1 if solo else self.settings["worker_async_concurrency"],
            solo=solo, solo_tty=solo and os.isatty(0))

    def _pool_text(self):
        """The pool in words, for the log and systemd's status line."""
        return _pool_words(self.pool, self.processes, self.concurrency,
                           self.settings["worker_async_concurrency"])

    def _start_child(self):
        """Spawn one child with a fresh worker id."""
        worker_id = _new_worker_id()
        process = _child_process(self.ctx, self._spec(worker_id), f"litequeue-{worker_id[:6]}",
                                 self.pool_socket.sock)
        process.start()
        self.children[process.sentinel] = _ChildHandle(process, worker_id, time.monotonic())
        logger.debug("started child %s (pid %d)", worker_id, process.pid)

    # -- life cycle ------------------------------------------------------------------

    def run(self):
        """Run until a signal stops it. Returns the exit code: 0 warm, 1 cold, 2 when a
        failure it cannot recover from ended it."""
        self._open()
        sig_r, restore = self._install_signal_handlers()
        self._log_start()
        try:
            try:
                self._guard("rescue", self._rescue_dead_workers)
                for _ in range(self.processes):
                    self._start_child()
                self.notify.send(f"READY=1\nSTATUS=serving {_plural(len(self.tasks), 'task')}"
                                 f" with {self._pool_text()}\nMAINPID={os.getpid()}")
                signals.worker_ready.send(sender=self)
                try:
                    return self._loop(sig_r)
                finally:
                    signals.worker_shutdown.send(sender=self)
            except _Fatal as exc:
                why = str(exc)
            except Exception as exc:    # a bug: end loudly rather than live on half-dead
                why = f"unexpected error: {type(exc).__name__}: {_saferepr(exc)}"
            with contextlib.suppress(Exception):
                self._stop_cold()
            logger.critical("litequeue worker stopped: %s", why)   # the last line
            return 2
        finally:
            self.notify.send("STOPPING=1")
            restore()
            self.close()

    def _open(self):
        """The database, the lock file, the bells, this supervisor's row and its periodic
        tasks, and the scheduler."""
        self.notify = _Notify()
        self.side = _SideDir(self.db)
        self.storage = _waiting_out(lambda: _Storage(
            self.db, synchronous=self.settings["synchronous"],
            busy_timeout=self.settings["busy_timeout"], autocheckpoint=0,
            busy_steps=_BUSY_STEPS_WORKER), "opening the database again")
        self.lock = _waiting_out(lambda: _WorkerLock(self.side, self.worker_id),
                                 "creating the lock file again")
        self.locks = self.lock.locks
        # Its children share a socket for new work (work/<id>: a producer's ring is one
        # datagram); this bell rings each child's own (child/: an eta near, a revoke).
        self.pool_socket = _Sleeper(self.side, "work", self.worker_id)
        self.work_bell = _Doorbell(self.side, "child")
        self.done_bell = _Doorbell(self.side, "done", keep=False)
        self.mailer = _FailureMailer(self.storage, self.side, self.settings, self.hostname)
        _waiting_out(self._register, "registering again")
        _waiting_out(self._sync_definitions, "syncing the periodic tasks again")
        self.sched_sleeper = _Sleeper(self.side, "sched", self.worker_id)
        self.scheduler = _Scheduler(self.storage, self.work_bell, self._quarantine)

    def _install_signal_handlers(self):
        """SIGTERM and SIGINT write to a pipe the loop waits on. Returns its read end and
        the function that puts the previous handlers back."""
        sig_r, sig_w = os.pipe()
        os.set_blocking(sig_r, False)
        os.set_blocking(sig_w, False)
        previous = {s: signal.signal(s, lambda *a: None) for s in (signal.SIGTERM, signal.SIGINT)}
        old_wakeup = signal.set_wakeup_fd(sig_w)

        def restore():
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in previous.items():
                signal.signal(s, handler)
            os.close(sig_r)
            os.close(sig_w)
        return sig_r, restore

    def _log_start(self):
        own = sorted(name for name in self.tasks if not name.startswith("litequeue."))
        logger.info("litequeue worker %s: %s; %s %s; time zone %s; %s: %s", self.db,
                    self._pool_text(), "queue" if len(self.queues) == 1 else "queues",
                    ", ".join(self.queues), self.settings["timezone"],
                    _plural(len(own), "task"), ", ".join(own) or "none")
        if self.pool == "threads" and (self.settings["task_soft_time_limit"] or any(
                t.soft_time_limit and not t.is_async for t in self.tasks.values())):
            logger.warning("-P threads: soft time limits of sync tasks are not enforced (a "
                           "thread cannot be interrupted); hard limits end the whole process")
        if not self.tasks:
            logger.warning("this worker serves no task yet: it imports the modules that "
                           "producers register when their file is under %s. To serve your "
                           "tasks from the start, pass the module that defines them: "
                           "litequeue worker %s -A tasks", self.cwd, self.db)

    def _ring_follow_ups(self, follow):
        """After a rescue or quarantine that failed rows: wake what their end queued, and
        the waiters of the rows it ended."""
        if follow is None:
            return
        if follow.woken:
            self.work_bell.ring()
        self.done_bell.ring_tasks(follow.ended)

    def _register(self):
        """Insert (or put back) this supervisor's workers row."""
        self.storage.register_worker({
            "id": self.worker_id, "parent": None, "hostname": self.hostname,
            "pid": os.getpid(), "queues": ",".join(self.queues),
            "concurrency": self.concurrency, "started_at": time.time(), "pool": self.pool})

    def _sync_definitions(self):
        """Register the served task names and sync the periodic definitions."""
        tasks = self.tasks
        now = time.time()
        limits = self.settings["queue_concurrency"]
        self.storage.upsert_registry([t._registry_row(now) for t in tasks.values()],
                                     {queue: limits.get(queue) for queue in self.queues})
        owned = {t.module for t in tasks.values()} | {p["module"] for p in self.periodic.values()}
        owned |= {_module_spec_name(m) for m in self.modules}
        owned |= {_module_spec_name(m) for m in self.settings["imports"]}
        self.storage.sync_schedules(list(self.periodic.values()), sorted(owned), time.time(),
                                    _plan_sync)

    def close(self):
        """Unregister, release the lock, and close what _open() opened."""
        self.sched_sleeper.close()
        self.pool_socket.close()
        with contextlib.suppress(Exception):
            self.storage.unregister_worker(self.worker_id)
        self.lock.release()
        for bell in (self.work_bell, self.done_bell):
            bell.close()
        self.storage.close()

    # -- the loop ----------------------------------------------------------------------

    def _loop(self, sig_r):
        """Wait, then run step(), until a step returns an exit code."""
        self.shutdown = "running"        # then "warm" (until warm_deadline), or "cold"
        self.warm_deadline = None
        self.janitor = self._janitor(time.monotonic())
        self.rescan_at = time.monotonic() + _SCHEDULER_RESCAN
        self.wal_seen = None
        self.due_at = self._schedule()   # unix time of the next ETA or periodic fire
        self.hard_deadline = None        # unix time a running task's time limit ends
        while True:
            code = self.step(self._wait(sig_r), sig_r)
            if code is not None:
                return code

    def _held(self):
        """Janitor jobs that wait while the worker shuts down."""
        return ("prune",) if self.shutdown != "running" else ()

    def _wait(self, sig_r):
        """Sleep until a child exits, a signal, a ring, or the next thing is due."""
        running = self.shutdown == "running"
        deadlines = [self.janitor.next_due(self._held()), self.rescan_at,
                     *(when for when, _ in self.restarts),
                     None if running else self.warm_deadline]
        timeout = max(0.0, min(d for d in deadlines if d is not None) - time.monotonic())
        due_at = self.due_at if running else None
        for unix_deadline in (due_at, self.hard_deadline):
            if unix_deadline is not None:
                timeout = max(0.0, min(timeout, unix_deadline - time.time()))
        waitables = list(self.children) + [sig_r, self.sched_sleeper.fileno()]
        eta_first = due_at is not None and due_at - time.time() <= timeout + _ETA_FINE_WAIT
        if eta_first:
            # _wait_readable() rounds its timeout up to a whole millisecond: stop short
            # of the ETA and sleep the rest, which is precise to some microseconds.
            timeout = max(0.0, timeout - _ETA_FINE_WAIT)
        ready = _wait_readable(waitables, timeout)
        if eta_first and not ready:
            time.sleep(max(0.0, min(due_at - time.time(), _ETA_FINE_WAIT)))
        return ready

    def step(self, ready, sig_r):
        """One pass over the named steps after a wait; returns an exit code to stop."""
        # Producers (ETAs), children (retries, time limits, WAL growth) and revoke() ring.
        rung = self.sched_sleeper.fileno() in ready
        if rung:
            self.sched_sleeper.drain()
            self.wal_seen = self._guard("checkpoint", self._checkpoint_if_grown,
                                        self.wal_seen, default=self.wal_seen)
        rescan = time.monotonic() >= self.rescan_at
        if rescan:
            # Writers that do not ring (the sqlite3 shell) are seen within this interval.
            self.rescan_at = time.monotonic() + _SCHEDULER_RESCAN
        if self.shutdown == "running" and (rung or rescan or (
                self.due_at is not None and time.time() >= self.due_at)):
            self.due_at = self._schedule()
        if rung or rescan or (self.hard_deadline is not None and
                              time.time() >= self.hard_deadline):
            self.hard_deadline = self._guard("police", self._police_children)
        if rung or rescan:
            self._guard("control", self._obey_operator)
        if sig_r in ready:
            self._on_signals(sig_r)
        reaped = [s for s in ready if s in self.children]
        for sentinel in reaped:
            child = self.children.pop(sentinel)
            self._reap(child, restart=self.shutdown == "running" and not child.retiring)
        if reaped:   # a lost task may now wait to be retried
            self.due_at = self._guard("scheduler", self.storage.next_wakeup,
                                      default=time.time() + _TROUBLE_BACKOFF_MAX)
        code = self._shutdown_step()
        if code is not None:
            return code
        self._restart_step()
        self.janitor.step(time.monotonic(), self._held())
        return None

    def _schedule(self):
        """The scheduler's step under _guard: the next due time, or a retry soon."""
        return self._guard("scheduler", self.scheduler.step, time.time(),
                           default=time.time() + _TROUBLE_BACKOFF_MAX)

    def _on_signals(self, sig_r):
        """SIGTERM/SIGINT: the first starts a warm shutdown, the next makes it cold."""
        try:
            signals = os.read(sig_r, 64)
        except BlockingIOError:
            signals = b""
        for _ in signals:
            if self.shutdown == "running":
                self._begin_warm_shutdown("signal again to stop at once")
            else:
                self.shutdown = "cold"

    def _begin_warm_shutdown(self, how_cold):
        logger.warning("warm shutdown: finishing running tasks (%s)", how_cold)
        self.notify.send("STOPPING=1")
        self.shutdown = "warm"
        self.warm_deadline = time.monotonic() + self.grace
        self.restarts.clear()
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGTERM)

    def _obey_operator(self):
        """Act on what an operator asked in this supervisor's row (`litequeue control`,
        the dashboard): a warm shutdown, or a new pool size."""
        asked = self.storage.worker_asked(self.worker_id)
        if asked is None or self.shutdown != "running":
            return
        wanted, stop_asked = asked
        if stop_asked is not None:
            logger.warning("an operator asked this worker to shut down")
            self._begin_warm_shutdown("SIGTERM to stop at once")
        elif wanted is not None:
            if type(wanted) is not int or not 1 <= wanted <= _POOL_MAX or \
                    self.pool != "prefork":
                logger.warning("ignored a pool size of %s asked for a %s pool",
                               _saferepr(wanted, 40), self.pool)
            elif wanted != self.processes:
                self._resize(wanted)
            self.storage.worker_resized(self.worker_id, self.concurrency)

    def _resize(self, wanted):
        """Grow the pool to `wanted` processes at once, or shrink it: the surplus
        children, idle ones first, get SIGTERM, finish their running task and are not
        replaced."""
        logger.info("pool: %d -> %s, as an operator asked", self.processes,
                    _plural(wanted, "process", "processes"))
        serving = [c for c in self.children.values() if not c.retiring]
        surplus = len(serving) + len(self.restarts) - wanted
        self.processes = self.concurrency = wanted
        for _ in range(-surplus):
            self._start_child()
        while surplus > 0 and self.restarts:
            self.restarts.pop()
            surplus -= 1
        serving.sort(key=lambda c: bool(self.locks.running(c.worker_id)))
        for child in serving[:max(0, surplus)]:
            child.retiring = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGTERM)

    def _shutdown_step(self):
        """The exit code once a shutdown is complete (0 warm, 1 cold), else None."""
        if self.shutdown == "warm" and time.monotonic() >= self.warm_deadline \
                and self.children:
            logger.warning("grace period of %.0f s is over", self.grace)
            self.shutdown = "cold"
        if self.shutdown == "cold":
            self._stop_cold()
            return 1
        if self.shutdown == "warm" and not self.children:
            logger.info("warm shutdown complete")
            return 0
        return None

    def _restart_step(self):
        """Start the children whose (backed-off) restart time has come."""
        now = time.monotonic()
        for r in [r for r in self.restarts if r[0] <= now]:
            self.restarts.remove(r)
            self._start_child()

    def _janitor(self, now):
        """The janitor's jobs, in the order they run when several are due."""
        janitor = _Timers()
        settings = self.settings
        janitor.add("watchdog", now if self.notify.watchdog else None, self.notify.watchdog,
                    lambda now: self.notify.send("WATCHDOG=1"))
        mails = settings["task_error_emails"] and settings["admins"]
        janitor.add("alerts", now if mails else None, settings["email_interval"],
                    lambda now: self._guard("alerts", self.mailer.step, now))
        janitor.add("rescue", now + _RESCUE_INTERVAL, _RESCUE_INTERVAL, self._rescue_step)
        janitor.add("sweep", now, _SWEEP_INTERVAL, self._sweep_step)
        expires = settings["result_expires"]
        # Prune about four times per expiry period, but at most once a second.
        every = min(60.0, max(1.0, expires / 4)) if expires else None
        janitor.add("prune", now + every if every else None, every, self._prune_step)
        janitor.add("checkpoint", now + _CHECKPOINT_INTERVAL, _CHECKPOINT_INTERVAL,
                    self._checkpoint_step)
        return janitor

    def _rescue_step(self, now):
        self._guard("rescue", self._rescue_dead_workers)
        self._guard("quarantine", self._quarantine)
        self._guard("modules", self._load_new_modules)

    def _sweep_step(self, now):
        removed = self._guard("sweep", _sweep_stale_sockets, self.side, default=0)
        if removed:
            logger.info("removed %d wake-up socket(s) left by killed processes", removed)

    def _prune_step(self, now):
        expires = self.settings["result_expires"]
        pruned = self._guard("prune", self.storage.prune, time.time() - expires)
        if pruned:
            logger.info("pruned %d finished task(s) older than %s s", pruned, expires)

    def _checkpoint_step(self, now):
        """Checkpoint, and look again soon while the WAL keeps changing."""
        previous = self.wal_seen
        self.wal_seen = self._guard("checkpoint", self._checkpoint_if_grown, previous,
                                    default=previous)
        return now + (_CHECKPOINT_BUSY_INTERVAL if self.wal_seen != previous
                      else _CHECKPOINT_INTERVAL)

    # -- steps -------------------------------------------------------------------------

    def _police_children(self):
        """Kill children past their task's hard time limit, or running a task revoked with
        terminate. Returns the next hard deadline (unix time) or None."""
        running = {}
        for child in self.children.values():
            if child.killed_for is None:
                entries = self.locks.running(child.worker_id)
                if entries:
                    running[child] = entries
        if not running:
            return None
        # Only a revoke with terminate kills: a plain one took a row the child had not
        # begun, which it skips itself (even if its lock record named it a moment ago).
        states, terminated = self.storage.police_states(
            seq for entries in running.values() for seq, _, _ in entries)
        now, next_deadline, cancel = time.time(), None, False
        for child, entries in running.items():
            revoked = [seq for seq, _, kind in entries
                       if seq in terminated and kind != _OFF_LOOP]
            late = [seq for seq, deadline, _ in entries if deadline and deadline <= now]
            # A revoked coroutine is cancelled by its own process, woken by a ring.
            cancel = cancel or any(states.get(seq) == REVOKED and kind == _OFF_LOOP
                                   for seq, _, kind in entries)
            if late:
                logger.error("killing child %s: %d task(s) ran past their hard time limit",
                             child.worker_id, len(late))
                child.kill("time limit", late)
            elif revoked:
                logger.warning("terminating child %s: its task was revoked", child.worker_id)
                child.kill("revoked", revoked)
            else:
                for _, deadline, _ in entries:
                    if deadline:
                        next_deadline = min(next_deadline or deadline, deadline)
        if cancel:
            self.work_bell.ring()
        return next_deadline

    def _lost(self, exc):
        """How the rows of a process that died of exc end (_settle_lost)."""
        return _settle_lost(exc, self.tasks, self.settings["task_max_retries"])

    def _load_new_modules(self):
        """Import modules that producers registered since the last look (files under the
        worker's directory only), and sync the task names and periodic tasks they define,
        so that a new module's schedules fire without a restart. One index read when
        nothing is new."""
        if not self.autoimport:
            return
        mark = self.storage.registry_mark()
        if mark == self.registry_mark:
            return
        self.registry_mark = mark
        _autoimport(self.storage.registry().values(), self.cwd, self.tried_modules)
        tasks, _, periodic = _collect_apps(self.db)
        if tasks.keys() == self.tasks.keys() and periodic.keys() == self.periodic.keys():
            return
        self.tasks, self.periodic = tasks, periodic
        self._sync_definitions()
        logger.info("now serving %d task(s) and %d periodic task(s)", len(tasks), len(periodic))

    def _quarantine(self):
        """Set aside rows nothing can read: a waiting task whose eta is not a time ends
        FAILURE, a schedule whose times are not numbers is disabled, a rate limit or pause
        no claim can use is repaired (_BAD_LIMIT), a STARTED row that names no worker is
        requeued. A read first: idle, it never takes the write lock."""
        if not self.storage.needs_quarantine(time.time()):
            return
        failed, disabled, repaired, follow = self.storage.quarantine(time.time())
        self._ring_follow_ups(follow)
        for line in repaired:
            logger.error("%s (another client wrote a value litequeue cannot use)", line)
        if repaired:
            self.work_bell.ring()       # rows a bad limit or pause held may run now
        for task_id, name in failed:
            logger.error("Task %s[%s] failed: its eta is not a unix time", _saferepr(name, 200),
                         _saferepr(task_id, 100))
        for name in disabled:
            logger.error("periodic task %s disabled: its fire times are not unix times",
                         _saferepr(name, 200))
        released = self.storage.release_unowned()
        if released:
            logger.warning("requeued %d STARTED task(s) that named no worker", released)
            self.work_bell.ring()

    def _checkpoint_if_grown(self, seen):
        """Checkpoint here, off the task path, whenever the WAL changed since last time."""
        try:
            st = os.stat(self.db + "-wal")
        except FileNotFoundError:
            return seen
        if (st.st_size, st.st_mtime_ns) != seen and st.st_size:
            with contextlib.suppress(apsw.BusyError):
                self.storage.checkpoint(truncate=st.st_size > _WAL_TRUNCATE_BYTES)
        return (st.st_size, st.st_mtime_ns)

    def _reap(self, child, restart):
        """Settle a dead child's rows (charging the one it ran) and plan its restart."""
        process = child.process
        process.join()
        code = process.exitcode
        # Killed for some of its tasks: only those are charged, the others it was running
        # go back uncharged. Died of itself: every task it was running is charged.
        crashed = child.culprits if child.killed_for else \
            {seq for seq, _, _ in self.locks.running(child.worker_id)}
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if child.killed_for == "time limit":
            exc = TimeLimitExceeded(f"the task ran past its hard time limit; worker process "
                                    f"{process.pid} was killed")
        else:
            exc = WorkerLostError(f"worker process {process.pid} died ({how}) while running "
                                  "the task")
        # If this fails, the lock file stays: the next rescue pass settles the rows.
        counts = self._guard("rescue", self.storage.rescue, child.worker_id, crashed,
                             self._lost(exc), time.time())
        requeued, failed, follow = counts or (0, 0, None)
        if counts is not None:
            self.locks.remove(child.worker_id)
            self._ring_follow_ups(follow)
        if requeued:
            self.work_bell.ring()
        if failed or requeued or (code != 0 and child.killed_for is None):
            logger.warning("child %s (pid %d) ended with %s%s; %d task(s) requeued, %d failed",
                           child.worker_id, process.pid, how,
                           f" ({child.killed_for})" if child.killed_for else "", requeued, failed)
        if restart:
            self._plan_restart(child, code)

    def _plan_restart(self, child, code):
        # A child that exits 0 was recycled on purpose; one that keeps dying at start-up
        # (an import error, say) is restarted with backoff instead of in a tight loop.
        """Restart a child at once, or with backoff if children keep dying at start; end the
        worker if they cannot start at all."""
        if code != 0 and child.killed_for is None and \
                time.monotonic() - child.started < _FAST_DEATH:
            self.fast_deaths += 1
        else:
            self.fast_deaths = 0
        self.failed_starts = self.failed_starts + 1 if code == _CHILD_CANNOT_RUN else 0
        if self.failed_starts >= _STEP_FAILURES_MAX:
            raise _Fatal(f"{self.failed_starts} children in a row could not start (the "
                         "log says why)")
        delay = 0 if self.fast_deaths == 0 else min(0.1 * 2 ** self.fast_deaths,
                                                    _RESTART_BACKOFF_MAX)
        self.restarts.append((time.monotonic() + delay, None))

    def _stop_cold(self):
        """Kill the children and requeue what they held, uncharged."""
        logger.warning("cold shutdown: killing children and requeueing their tasks")
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signal.SIGKILL)
        for child in self.children.values():
            child.process.join()
            # Not the task's fault: everything it held goes back without a retry charged.
            if self._guard("rescue", self.storage.rescue, child.worker_id, None, None,
                           time.time()) is not None:
                self.locks.remove(child.worker_id)
        self.children.clear()

    def _rescue_dead_workers(self):
        """Requeue the rows of every dead process that holds rows or is registered (its
        lock file is free or was never made), and register again if another process
        removed this supervisor's row."""
        ours = {self.worker_id} | {c.worker_id for c in self.children.values()}
        registered = {w["id"]: w for w in self.storage.workers()}
        if self.worker_id not in registered:
            logger.warning("this supervisor's workers row was removed; registering again")
            self._register()
        suspects = (set(registered) | set(self.storage.claiming_workers())) - ours - {None}
        for worker_id in suspects:
            if not self.locks.dead(worker_id):
                continue
            info = registered.get(worker_id)
            crashed = {seq for seq, _, _ in self.locks.running(worker_id)}
            who = (f"worker process {info['pid']} on {info['hostname']}" if info else
                   f"worker {_saferepr(worker_id, 40)}")
            exc = WorkerLostError(f"{who} died while running the task")
            requeued, failed, follow = self.storage.rescue(worker_id, crashed,
                                                           self._lost(exc), time.time())
            self.locks.remove(worker_id)
            self._ring_follow_ups(follow)
            logger.warning("worker %s is gone; rescued %d task(s), %d failed",
                           _saferepr(worker_id, 40), requeued, failed)
            if requeued:
                self.work_bell.ring()


def _configured_supervisor(db, conf, tasks, periodic, autoimport, *, modules, loglevel,
                           concurrency=None, queues=None, poll_interval=None, grace=None):
    """A _Supervisor of db for the code _load_worker_code loaded (tasks, periodic) and the
    settings conf, the options not given taken from conf (run_worker; a test opens one
    with _open() and drives its steps)."""
    return _Supervisor(
        db, concurrency=concurrency or conf["worker_concurrency"],
        queues=list(queues or [conf["task_default_queue"]]), modules=modules,
        loglevel=loglevel, settings={k: conf[k] for k in DEFAULTS}, autoimport=autoimport,
        poll_interval=conf["worker_poll_interval"] if poll_interval is None else poll_interval,
        grace=conf["worker_shutdown_grace"] if grace is None else grace, tasks=tasks,
        periodic=periodic)


def run_worker(db, *, concurrency=None, queues=None, modules=(), loglevel="INFO",
               autoimport=None, poll_interval=None, grace=None, settings=None):
    """Run a worker supervisor in this process until it is signalled; returns the exit
    code. The CLI's ``worker`` command calls this."""
    db = os.path.abspath(db)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    modules = list(modules)
    # Before the file is touched: a module that cannot be imported leaves it as it is.
    tasks, conf, periodic, _ = _load_worker_code(db, cwd, modules, autoimport, None)
    others = _other_databases(db)
    if not tasks and others:
        raise ConfigurationError(f"the task modules' app uses {others[0]}, not {db}: run "
                                 f"`litequeue worker {others[0]}`, or give the app this path")

    def load():
        probe = _Storage(db, create=True)
        try:
            _SideDir(db).check()    # refuse an unusable side directory before any child runs
            return _load_worker_code(db, cwd, modules, autoimport, probe)
        finally:
            probe.close()
    tasks, conf, periodic, autoimport = _waiting_out(load, "opening the database again")
    conf = _merged_settings(conf, settings or {})
    return _configured_supervisor(db, conf, tasks, periodic, autoimport, modules=modules,
                                  loglevel=loglevel, concurrency=concurrency, queues=queues,
                                  poll_interval=poll_interval, grace=grace).run()


# ---------------------------------------------------------------------------
# Monitoring: health checks, Prometheus metrics, Flower's task view
# ---------------------------------------------------------------------------

# A WAL past this size means checkpoints are not keeping up (health check "wal").
_HEALTH_WAL_MAX = 64 * 1024 * 1024
# A periodic fire this late is missed (health check "schedules").
_HEALTH_FIRE_LATE = 60.0


def _check(name, ok, value, threshold, detail):
    return {"name": name, "ok": bool(ok), "value": value, "threshold": threshold,
            "detail": detail}


def _health_checks(app, max_wait=300.0, now=None, counts=None):
    """The health checks of `litequeue health` and /healthcheck: [{name, ok, value,
    threshold, detail}]. Reads only; never imports task code. counts: Admin.state_counts()
    when the caller has read them already."""
    now = time.time() if now is None else now
    storage, admin = app._storage(), app.admin
    checks = []
    mode = storage.journal_mode()
    checks.append(_check("schema", mode == "wal", f"version {SCHEMA_VERSION}, {mode}",
                         "wal", "schema current, WAL mode" if mode == "wal" else
                         f"journal mode is {mode}, not wal"))
    supervisors = admin.workers()
    live = [w for w in supervisors if w["alive"] is not False]
    dead = [w for w in supervisors if w["alive"] is False]
    checks.append(_check("workers", bool(live), len(live), ">= 1",
                         f"{len(live)} live supervisor(s)" + (
                             f", {len(dead)} dead (their tasks are rescued by a live one)"
                             if dead else "") if live else "no live worker supervisor"))
    served = {q for w in live for q in str(w["queues"]).split(",")}
    counts, oldest = counts or admin.state_counts()
    paused = admin.paused()          # a paused queue's waiting is on purpose
    oldest = {q: t for q, t in oldest.items() if q not in paused}
    served |= set(paused)
    unserved = sorted(q for q, states in counts.items()
                      if states.get(PENDING) and q not in served)
    checks.append(_check("queues served", not unserved, len(unserved), 0,
                         "every queue with waiting tasks has a live worker" if not unserved
                         else "waiting tasks in queue(s) no live worker serves: "
                         + ", ".join(map(_shown, unserved))))
    oldest_age = max((now - t for t in oldest.values()), default=0.0)
    checks.append(_check("oldest waiting", oldest_age <= max_wait, round(oldest_age, 3),
                         max_wait, f"the oldest waiting task waited {oldest_age:.1f} s"))
    late = [r["name"] for r in admin.schedules() if r["error"] is None and
            _is_time(r["next_fire"]) and r["next_fire"] < now - _HEALTH_FIRE_LATE]
    disabled = [r["name"] for r in admin.schedules()
                if r["error"] is not None and r["error"] != _SCHEDULE_OFF]
    checks.append(_check("schedules", not late and not disabled, len(late) + len(disabled), 0,
                         "no periodic fire missed" if not late and not disabled else
                         "; ".join(filter(None, [
                             late and f"fire overdue: {', '.join(map(_shown, late))}",
                             disabled and f"disabled: {', '.join(map(_shown, disabled))}"]))))
    limit = app.conf["task_time_limit"]
    overrun = []
    if limit:
        for sup in supervisors:
            for child in sup["children"]:
                overrun += [i for i, _, started in child["running"]
                            if _is_time(started) and now - started > limit + 5]
    checks.append(_check("time limits", not overrun, len(overrun), 0,
                         "no task runs past its time limit" if not overrun else
                         "running past the time limit: " + ", ".join(map(_shown, overrun))))
    wal = storage.wal_bytes()
    checks.append(_check("wal", wal <= _HEALTH_WAL_MAX, wal, _HEALTH_WAL_MAX,
                         f"WAL is {wal / 1048576:.1f} MiB"))
    return checks


def _metric_line(name, labels, value):
    if labels:
        inner = ",".join(f'{k}="{_metric_label(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def _metric_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metrics_text(app):
    """Prometheus text exposition of the queue, the workers and the last day's runs."""
    admin = app.admin
    lines = []

    def metric(name, kind, help_text, samples):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(_metric_line(name, labels, value) for labels, value in samples)

    now = time.time()
    counts, oldest = admin.state_counts()
    metric("litequeue_queue_length", "gauge", "Tasks waiting to run (PENDING) per queue.",
           [({"queue": q}, s.get(PENDING, 0)) for q, s in sorted(counts.items())])
    metric("litequeue_queue_oldest_age_seconds", "gauge",
           "Age of the oldest waiting task per queue.",
           [({"queue": q}, round(now - t, 3)) for q, t in sorted(oldest.items())])
    metric("litequeue_tasks", "gauge", "Tasks by queue and state (waiting, running, failed).",
           [({"queue": q, "state": st}, n) for q, s in sorted(counts.items())
            for st, n in sorted(s.items())])
    stats = admin.task_stats()
    metric("litequeue_task_runs", "gauge",
           "Task runs by name and outcome over the last 24 hours (from worker counters).",
           [({"task": t["name"], "state": state}, t[key]) for t in stats
            for state, key in ((SUCCESS, "succeeded"), (FAILURE, "failed"), (RETRY, "retried"))])
    samples = []
    for t in stats:
        total = 0
        for bound, n in zip((*map(str, _RUNTIME_BUCKETS), "+Inf"), t["buckets"]):
            total += n
            samples.append(({"task": t["name"], "le": bound}, total))
    lines.append("# HELP litequeue_task_runtime_seconds Task run time over the last 24 hours.")
    lines.append("# TYPE litequeue_task_runtime_seconds histogram")
    lines.extend(_metric_line("litequeue_task_runtime_seconds_bucket", l, v) for l, v in samples)
    for t in stats:
        runs = sum(t["buckets"])
        lines.append(_metric_line("litequeue_task_runtime_seconds_sum", {"task": t["name"]},
                                  round(t["runtime"], 6)))
        lines.append(_metric_line("litequeue_task_runtime_seconds_count", {"task": t["name"]},
                                  runs))
    supervisors = admin.workers()
    metric("litequeue_worker_processes", "gauge", "Live worker processes (supervisors and "
           "their children).", [({}, sum(1 + len(s["children"]) for s in supervisors
                                        if s["alive"] is not False))])
    metric("litequeue_wal_bytes", "gauge", "Size of the write-ahead log.",
           [({}, app._storage().wal_bytes())])
    return "\n".join(lines) + "\n"


def _schedule_view(row, count=3):
    """A periodic task as the dashboard shows it: next fires in its zone, with the fires
    whose UTC offset differs from the one before marked (a DST change)."""
    view = {k: _display(row[k]) for k in ("name", "task", "schedule", "tz", "queue",
                                          "catch_up", "fires", "error")}
    view["last_fire"] = None
    view["next"] = []
    view["off"] = row["error"] == _SCHEDULE_OFF
    kind, _, spec = view["schedule"].partition(":") if isinstance(view["schedule"], str) \
        else ("", "", "")
    with contextlib.suppress(ValueError, OverflowError):
        if kind == "every":                          # as people write it: every 20 s
            view["schedule"] = f"every {float(spec):g} s"
        elif kind == "cron":
            view["schedule"] = f"cron {spec}"
    try:
        zone = _zone(row["tz"])
        # A disabled or set-aside schedule fired before: it says when, and no next fire.
        if row["fires"] and _is_time(row["last_fire"]):
            view["last_fire"] = _from_unix(row["last_fire"]).astimezone(zone).isoformat()
        if row["error"] is not None:
            return view
        schedule = _schedule_from_text(row["schedule"], zone)
        t = _dt.datetime.fromtimestamp(max(row["next_fire"] - 1e-6, 0), _UTC)
        offset = None
        for _ in range(count):
            t = schedule.next_after(t, zone)
            local = t.astimezone(zone)
            view["next"].append({"at": local.isoformat(),
                                 "dst_change": offset is not None and
                                 local.utcoffset() != offset})
            offset = local.utcoffset()
    except Exception as exc:           # a row no planner can read: say so, show the rest
        view["error"] = f"cannot plan its fires: {type(exc).__name__}: {exc}"
    return view


def _flower_task(info):
    """A task in Flower's API shape (field names of flower/api/tasks.py)."""
    state = info["state"]
    return {"uuid": info["id"], "name": info["name"], "state": state,
            "args": info["args"], "kwargs": info["kwargs"],
            "result": info["result"] if state == SUCCESS else info["exception"],
            "received": info["created"], "started": info["started"],
            "succeeded": info["finished"] if state == SUCCESS else None,
            "failed": info["finished"] if state == FAILURE else None,
            "timestamp": info["finished"] or info["started"] or info["created"],
            "runtime": info["runtime"], "worker": info["worker"], "retries": info["retries"],
            "exception": info["exception"], "eta": info["eta"], "expires": info["expires"],
            "routing_key": info["queue"]}


# ---------------------------------------------------------------------------
# Dashboard: the HTTP server, its security and its bounds
# ---------------------------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The dashboard's token, as Jupyter's: 32 random bytes (never guessed, so never throttled),
# new at each start, written 0600 into the verified side directory for scripts, one file
# per port (two dashboards of one file each have their own). Only ever sent in an
# Authorization header: never in a cookie, which a browser would also send to a page that
# another user serves on another port of 127.0.0.1 (cookies ignore the port).
_DASHBOARD_TOKEN_FILE = "dashboard-{port}.token"
# Paths that carry no task data, served without a token under --metrics-public.
_DASHBOARD_PUBLIC = ("/metrics", "/healthcheck")
# The page's paths: each gets the same page, code without data, served to anyone; its
# script asks for the data with the token (see _check_auth).
_DASHBOARD_SHELLS = r"/(tasks|workers|queues|schedules|workflows)?|/task/[^/]+"
# Where `dashboard --auth USER` reads the password when no --auth-file is given: never argv,
# which every user of the machine can read in ps.
_DASHBOARD_PASSWORD_ENV = "LITEQUEUE_DASHBOARD_PASSWORD"
# The password is kept as scrypt(password, random salt) only. n=2**14, r=8: about 40 ms and
# 16 MiB a check (OWASP's minimum is n=2**17 for stored hashes; this one never leaves
# memory, and checks run one at a time, so a flood of guesses costs one core at most).
_DASHBOARD_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


class _PasswordCheck:
    """A user name and the scrypt hash of a password; check() compares in constant time,
    one check at a time, always on the same thread: each takes 16 MiB, which the C
    allocator keeps in the arena of the thread that asked, so checks on every serving
    thread held 8 × 16 MiB for good."""

    def __init__(self, user, password):
        if not user or ":" in user:
            raise ConfigurationError("the --auth user name must be non-empty, without ':'")
        if not password:
            raise ConfigurationError("the dashboard password is empty")
        self.user = user.encode("utf-8")
        self.salt = secrets.token_bytes(16)
        self.digest = self._hash(password.encode("utf-8"))
        self._lock = threading.Lock()
        self._hasher = None           # one thread for every check after the first

    def _hash(self, password):
        return hashlib.scrypt(password, salt=self.salt, maxmem=64 << 20, **_DASHBOARD_SCRYPT)

    def check(self, credentials):
        """credentials: the decoded bytes of an HTTP basic header, b"user:password"."""
        user, _, password = credentials.partition(b":")
        with self._lock:
            if self._hasher is None:
                import concurrent.futures
                self._hasher = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="litequeue-scrypt")
            digest = self._hasher.submit(self._hash, password).result()
        return hmac.compare_digest(user, self.user) & hmac.compare_digest(digest, self.digest)


# Seconds a connection may take to send a request's line and headers, or sit idle between
# requests; also the timeout of each socket read and write (a body, a client that does not
# read its answer). A browser sends a request at once; keep-alive costs a reconnect.
_DASHBOARD_IDLE = 5.0
# Connections open at once. One thread waits on all of them for their requests' heads, so
# an idle or slow one costs a descriptor, not a thread: the cap is the descriptor limit
# less _DASHBOARD_RESERVE (and 4 per serving thread: its pooled database connection), and
# at most this. At the cap a new connection closes the one idle longest; if every one is
# busy with a request, the new one gets 503 at once.
_DASHBOARD_CONNECTIONS = 4096
_DASHBOARD_RESERVE = 64
# Threads that serve complete requests; more requests wait for one, in order of arrival.
_DASHBOARD_THREADS = 8
# A request's line and headers, read before anything else and never beyond: at most this
# many bytes (a longer request line is a 414, a longer head a 431).
_DASHBOARD_HEAD = 64 << 10
# The listen backlog, as long as the system allows (the kernel lowers it to
# net.core.somaxconn, 4096 by default since Linux 5.4): when it is full, a browser's SYN is
# dropped and retried a second later (its first data segment, 0.2 s later). A queued
# connection waits for those before it, accepted at tens of thousands a second.
_DASHBOARD_BACKLOG = 65535
# Password checks: a bucket of 5 per client address refilled at one every 2 s, and one of
# 20 for all addresses refilled at 2 a second. A correct password gives its token back.
_DASHBOARD_GUESSES = ((5, 0.5), (20, 2.0))
# Client addresses whose buckets are remembered; past this, full buckets are forgotten.
_DASHBOARD_GUESSERS = 4096


class _Throttle:
    """Token buckets: one per key and one for all keys. take(key) spends a token from both
    (False, spending none, when either is empty); give(key) returns it."""

    def __init__(self, per_key, total, clock=time.monotonic):
        (self.burst, self.rate), (total_burst, total_rate) = per_key, total
        self.clock = clock
        self.total = [float(total_burst), clock(), total_burst, total_rate]
        self.buckets = {}
        self._lock = threading.Lock()

    @staticmethod
    def _level(bucket, now):
        bucket[0] = min(bucket[2], bucket[0] + (now - bucket[1]) * bucket[3])
        bucket[1] = now
        return bucket[0]

    def take(self, key):
        with self._lock:
            now = self.clock()
            if len(self.buckets) >= _DASHBOARD_GUESSERS:
                self.buckets = {k: b for k, b in self.buckets.items()
                                if self._level(b, now) < b[2]}
            bucket = self.buckets.setdefault(key, [float(self.burst), now, self.burst,
                                                   self.rate])
            if self._level(bucket, now) < 1 or self._level(self.total, now) < 1:
                return False
            bucket[0] -= 1
            self.total[0] -= 1
            return True

    def give(self, key):
        with self._lock:
            for bucket in (self.buckets.get(key), self.total):
                if bucket is not None:
                    bucket[0] = min(bucket[2], bucket[0] + 1)

    def wait(self, key):
        """Seconds until take(key) may succeed."""
        with self._lock:
            bucket = self.buckets.get(key)
            return max((1 - b[0]) / b[3] for b in (bucket, self.total) if b is not None)


def _dashboard_password(auth_file):
    """The --auth password, from --auth-file (a plain file of this user, mode 0600 or
    stricter) or else the environment variable, which is then removed from os.environ."""
    if auth_file is None:
        return os.environ.pop(_DASHBOARD_PASSWORD_ENV, None)
    try:
        fd = os.open(auth_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigurationError(f"cannot read --auth-file {auth_file}: {exc.strerror}") \
            from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigurationError(
                f"--auth-file {auth_file} must be a plain file owned by this user (uid "
                f"{os.geteuid()}) with mode 0600; it is uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):o}")
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read(4096).decode("utf-8")
    finally:
        os.close(fd)
    return text[:-1] if text.endswith("\n") else text


def _write_dashboard_token(db_path, token, port):
    """Write the token to DB-lq/dashboard-PORT.token, mode 0600: a new file renamed over
    an old one inside the verified directory, so that a link there is replaced, never
    followed. SideDirectoryError if the directory cannot be trusted."""
    name = _DASHBOARD_TOKEN_FILE.format(port=port)
    fd = _SideDir(db_path).open()
    try:
        temporary = f"{name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=fd)
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            os.fchmod(out, 0o600)
            os.write(out, token.encode() + b"\n")
        finally:
            os.close(out)
        os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        return os.path.join(db_path + "-lq", name)
    finally:
        os.close(fd)


def _remove_dashboard_token(db_path, token, port):
    """Remove DB-lq/dashboard-PORT.token at the end if it still holds this token (a
    dashboard started since on the same port keeps its own)."""
    name = _DASHBOARD_TOKEN_FILE.format(port=port)
    with contextlib.suppress(OSError, SideDirectoryError):
        fd = _SideDir(db_path).open(create=False)
        try:
            held = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                           dir_fd=fd)
            try:
                if os.read(held, 256).strip() == token.encode():
                    os.unlink(name, dir_fd=fd)
            finally:
                os.close(held)
        finally:
            os.close(fd)


def _dashboard_server(*args):
    """The dashboard's server, bound to its port. http.server (which brings http.client,
    email and ssl: 14 ms) is imported here, not by every worker process."""
    import http.server
    server_class = type("_DashboardServer", (_Dashboard, http.server.HTTPServer), {})
    handler_class = type("_DashboardRequest", (_DashboardHandler,
                                               http.server.BaseHTTPRequestHandler), {})
    return server_class(handler_class, *args)


class _DashboardConnection:
    """A client's connection: its socket, and the bytes read of its next request (the head,
    which the selector thread reads; a request's body is read by the thread serving it)."""

    __slots__ = ("sock", "address", "head", "line_end", "deadline", "nodelay")

    def __init__(self, sock, address, deadline):
        self.sock, self.address, self.deadline = sock, address, deadline
        self.head = bytearray()
        self.line_end = None        # where the request line's "\n" is in head, once read
        self.nodelay = False

    def head_end(self, data):
        """Where the request's head (its line and headers, up to the empty line that ends
        them, as http.server reads them) ends in head + data, or None. Scans data only."""
        base = len(self.head)
        if self.line_end is None:
            found = data.find(b"\n")
            if found < 0:
                return None
            self.line_end = base + found
        # The last two bytes already read, and data: the empty line may straddle them.
        offset = max(base - 2, 0)
        window = bytes(self.head[offset:]) + data
        start = max(self.line_end - offset, 0)
        ends = [found + len(mark) for mark in (b"\n\n", b"\n\r\n")
                if (found := window.find(mark, start)) >= 0]
        return offset + min(ends) if ends else None


class _DashboardReader:
    """A request's rfile: the bytes the selector thread read (its head), then the socket,
    each read within the socket's timeout. It reads no further than asked, so nothing of
    the next request is taken from the socket."""

    def __init__(self, conn):
        self.conn, self.pos = conn, 0

    def readline(self, limit=-1):
        head = self.conn.head
        while True:
            start = self.pos
            stop = len(head) if limit < 0 else min(len(head), start + limit)
            end = head.find(b"\n", start, stop)
            if end >= 0 or stop - start == limit:     # a line, or as much as was asked
                stop = stop if end < 0 else end + 1
                break
            chunk = self.conn.sock.recv(1 << 16)
            if not chunk:
                break
            head += chunk
        self.pos = stop
        return bytes(head[start:stop])

    def read(self, size=-1):
        head = self.conn.head
        parts = [bytes(head[self.pos:] if size < 0 else head[self.pos:self.pos + size])]
        self.pos += len(parts[0])
        missing = None if size < 0 else size - len(parts[0])
        while missing is None or missing > 0:
            chunk = self.conn.sock.recv(1 << 16 if missing is None else min(missing, 1 << 18))
            if not chunk:
                break
            parts.append(chunk)
            if missing is not None:
                missing -= len(chunk)
        return b"".join(parts)

    def rest(self):
        """The bytes read but not consumed (the start of a next request)."""
        return self.conn.head[self.pos:]

    def close(self):
        pass


class _DashboardWriter:
    """A request's wfile: each write goes out at once, within the socket's timeout."""

    def __init__(self, sock):
        self.sock = sock

    def write(self, data):
        self.sock.sendall(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


class _Dashboard:
    """`litequeue dashboard`: the page, its JSON, Flower's API, /metrics and /healthcheck,
    over the admin surface. Mixed into http.server's HTTPServer by _dashboard_server().

    serve_forever() runs one selector loop: it accepts connections and reads their
    requests' heads without blocking, so an idle or slow client costs a descriptor, not a
    thread. A complete head goes to a few threads (_DASHBOARD_THREADS) that read the body,
    answer, and give a kept-alive connection back to the loop. Each request borrows a
    connection to the database from the server's pool; reads never take the write lock."""

    allow_reuse_address = True
    request_queue_size = _DASHBOARD_BACKLOG

    def __init__(self, handler_class, app, host="127.0.0.1", port=5555, auth=None,
                 read_only=False, max_wait=300.0, token=None, metrics_public=False):
        if host not in _LOOPBACK and not auth:
            raise ConfigurationError(f"the dashboard listens on {host} only with --auth "
                                     "USER (anyone who can reach it could revoke "
                                     "and queue tasks); without --auth it binds 127.0.0.1")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler_class)
        self.app, self.read_only, self.max_wait = app, read_only, max_wait
        # (user, password) is kept as a salted hash only.
        self.auth = _PasswordCheck(*auth) if isinstance(auth, tuple) else auth
        self.token = token or secrets.token_urlsafe(32)
        self.metrics_public = metrics_public
        self.pool = queue.SimpleQueue()      # idle read connections, lent to requests
        self.port = self.server_address[1]
        # On loopback a browser uses a host name of its own, new at each start:
        # RANDOM.localhost, which browsers resolve to loopback. Its origin is one no other
        # user can know, so none can have planted a script there (a service worker,
        # registered while this port was theirs) to read the token as the page gets it.
        self.site = f"{secrets.token_hex(8)}.localhost" if host in _LOOPBACK else None
        # Behind --auth on another address any Host is served: the password guards it.
        names = {host, "localhost", self.site} if host in _LOOPBACK else None
        self.hosts = None if names is None else \
            {f"[{n}]:{self.port}" if ":" in n else f"{n}:{self.port}" for n in names}
        if self.hosts is not None and self.port == 80:        # browsers omit :80
            self.hosts |= {f"[{n}]" if ":" in n else n for n in names}
        self.guesses = _Throttle(*_DASHBOARD_GUESSES)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        spare = _DASHBOARD_CONNECTIONS if soft == resource.RLIM_INFINITY else \
            soft - _DASHBOARD_RESERVE - 4 * _DASHBOARD_THREADS
        self.max_connections = max(16, min(_DASHBOARD_CONNECTIONS, spare))
        # Every open connection, by socket. The selector thread adds them and owns those
        # waiting for a request's head (`idle`, oldest first: its deadlines in order); a
        # serving thread owns the one it serves, and closes it or gives it back.
        self.connections = {}
        self.connections_lock = threading.Lock()
        self.idle = collections.OrderedDict()
        self.ready = queue.SimpleQueue()         # complete heads, for the serving threads
        self.returned = collections.deque()      # kept-alive connections, for the loop
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector = None
        self.threads = []
        self._stopping = False
        self._stopped = threading.Event()
        self._paused_until = None                # accepting stopped: out of descriptors

    def url(self):
        host = self.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    def browser_url(self):
        """The address a person opens: on loopback, under this start's own host name."""
        return self.url() if self.site is None else f"http://{self.site}:{self.port}/"

    def token_ok(self, given):
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    # -- the loop: accept, read heads, hand them on; bounded in number and in time ------

    def serve_forever(self, poll_interval=0.5):
        """Serve until shutdown() or an exception (KeyboardInterrupt, as SIGTERM raises in
        the CLI), which leaves the loop at once."""
        import selectors
        self._stopped.clear()
        for i in range(_DASHBOARD_THREADS - len(self.threads)):
            thread = threading.Thread(target=self._serve_requests, daemon=True,
                                      name=f"litequeue-dashboard-{i}")
            thread.start()
            self.threads.append(thread)
        self.selector = selectors.DefaultSelector()
        self._readable = selectors.EVENT_READ
        self.socket.setblocking(False)
        try:
            self.selector.register(self.socket, self._readable, self._accept)
            self.selector.register(self._wake_r, self._readable, self._take_back)
            while not self._stopping:
                now = time.monotonic()
                timeout = poll_interval
                if self.idle:
                    timeout = min(timeout, next(iter(self.idle.values())).deadline - now)
                if self._paused_until is not None:
                    timeout = min(timeout, self._paused_until - now)
                for key, _ in self.selector.select(max(timeout, 0)):
                    try:
                        if callable(key.data):
                            key.data()
                        else:
                            self._read_head(key.data)
                    except Exception:            # a bug of ours: not the whole server
                        logger.exception("dashboard: serving connections failed")
                        if not callable(key.data):
                            with contextlib.suppress(Exception):
                                self._drop(key.data)
                self._sweep(time.monotonic())
        finally:
            self.selector.close()
            self._stopped.set()

    def shutdown(self):
        """Stop serve_forever() (from another thread) and wait for it to end."""
        self._stopping = True
        self._wake()
        self._stopped.wait()

    def _accept(self):
        for _ in range(256):            # a batch, then the other sockets get their turn
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    continue            # that client went away before its accept
                if self.idle:           # out of descriptors: free one, else wait a moment
                    self._drop(next(iter(self.idle.values())))
                    continue
                logger.debug("dashboard: out of descriptors, accepting again in 0.1 s")
                self.selector.unregister(self.socket)
                self._paused_until = time.monotonic() + 0.1
                return
            try:
                data = sock.recv(_DASHBOARD_HEAD + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":             # come and gone (a connect flood): nothing to keep
                sock.close()
                continue
            if len(self.connections) >= self.max_connections:
                if not self.idle:               # every connection is busy with a request
                    self._answer(sock, 503, "too many connections")
                    continue
                self._drop(next(iter(self.idle.values())))
            sock.setblocking(False)
            conn = _DashboardConnection(sock, address, time.monotonic() + _DASHBOARD_IDLE)
            with self.connections_lock:
                self.connections[sock] = conn
            self._take_head(conn, data)     # a browser's request has often come already

    def _read_head(self, conn):
        """Read what has come of conn's request head."""
        try:
            data = conn.sock.recv(_DASHBOARD_HEAD + 1 - len(conn.head), socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        self._take_head(conn, data)

    def _take_head(self, conn, data):
        """data (peeked: b"" at the end, None if nothing came): take what belongs to the
        request's head, and nothing beyond it (the body is read only once the request is
        authorized). Hand a complete head to the serving threads, refuse one too long, or
        wait for more."""
        sock, head = conn.sock, conn.head
        if data == b"":                 # gone (or half-closed before a whole head)
            return self._drop(conn)
        if data is not None:
            end = conn.head_end(data)
            take = len(data) if end is None else end - len(head)
            try:
                while take:                     # already there: it comes at once
                    got = sock.recv(take)
                    if not got:
                        return self._drop(conn)
                    head += got
                    take -= len(got)
            except OSError:
                return self._drop(conn)
            if end is not None:
                if conn.sock in self.idle:
                    del self.idle[conn.sock]
                    self.selector.unregister(conn.sock)
                self.ready.put(conn)
                return
            if len(head) > _DASHBOARD_HEAD:
                long_line = conn.line_end is None or conn.line_end >= _DASHBOARD_HEAD
                self._drop(conn, 414 if long_line else 431,
                           f"request {'line' if long_line else 'head'} over "
                           f"{_DASHBOARD_HEAD >> 10} KiB")
                return
        if conn.sock not in self.idle:
            self.idle[conn.sock] = conn
            self.selector.register(conn.sock, self._readable, conn)

    def _take_back(self):
        """Kept-alive connections from the serving threads: wait for their next request."""
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while self.returned:
            conn = self.returned.popleft()
            conn.sock.setblocking(False)
            conn.deadline = time.monotonic() + _DASHBOARD_IDLE
            # Bytes of the next request read with the last one: none, as the serving
            # threads read no further than a body; scanned all the same.
            read, conn.head, conn.line_end = bytes(conn.head), bytearray(), None
            end = conn.head_end(read) if read else None
            conn.head += read
            if end is not None:
                self.ready.put(conn)
            else:
                self._read_head(conn)

    def _sweep(self, now):
        """Close the connections whose head is late (a slowloris); accept again if paused."""
        while self.idle:
            conn = next(iter(self.idle.values()))
            if conn.deadline > now:
                break
            self._drop(conn)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self.selector.register(self.socket, self._readable, self._accept)

    def _drop(self, conn, status=None, message=None):
        """Close a connection of the loop's (answering status first, if given)."""
        if self.idle.pop(conn.sock, None) is not None:
            self.selector.unregister(conn.sock)
        with self.connections_lock:
            self.connections.pop(conn.sock, None)
        if status is None:
            conn.sock.close()
        else:
            self._answer(conn.sock, status, message)

    @staticmethod
    def _answer(sock, status, message):
        """Answer a short JSON error without waiting (a new socket's send buffer takes it
        whole) and close."""
        import http.server
        body = json.dumps({"error": message}).encode()
        reason = http.server.BaseHTTPRequestHandler.responses[status][0]
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                      f"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
                      .encode() + body)
        sock.close()

    def _wake(self):
        with contextlib.suppress(OSError):       # full: the loop is awake already
            self._wake_w.send(b"\0")

    # -- the serving threads ------------------------------------------------------------

    def _serve_requests(self):
        while (conn := self.ready.get()) is not None:
            keep = False
            try:
                handler = self.RequestHandlerClass(conn, conn.address, self)
                keep = not handler.close_connection and not self._stopping
            except Exception:
                self.handle_error(conn.sock, conn.address)
            if keep:
                conn.head = bytearray(handler.rfile.rest())
                self.returned.append(conn)
                self._wake()
            else:
                with self.connections_lock:
                    self.connections.pop(conn.sock, None)
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_WR)   # the answer, then FIN
                conn.sock.close()

    def server_close(self):
        """Close the listening socket and every connection; the serving threads end."""
        super().server_close()
        self._stopping = True
        with self.connections_lock:
            conns = list(self.connections.values())
        for conn in conns:               # wakes a thread blocked on its socket
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        for conn in list(self.idle.values()):
            conn.sock.close()
        self.idle.clear()
        for _ in self.threads:
            self.ready.put(None)
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request, client_address):
        """A client that went away or timed out is no error of ours: no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("dashboard client %s: %s", client_address, exc)
        else:
            logger.error("dashboard request from %s failed", client_address, exc_info=True)


class _HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _DashboardHandler:
    """One request to the dashboard; mixed into http.server's BaseHTTPRequestHandler."""

    server_version = "litequeue"
    sys_version = ""
    extra_headers = ()
    timeout = _DASHBOARD_IDLE             # each read and write on the socket
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body of a
    # kept-alive response waited for the client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    # (method, compiled path pattern, handler name); the first match wins.
    ROUTES = [(m, re.compile(p), h) for m, p, h in (
        ("GET", _DASHBOARD_SHELLS, "page"),
        ("GET", r"/login", "login"),
        ("GET", r"/data/overview", "data_overview"),
        ("GET", r"/data/tasks", "data_tasks"),
        ("GET", r"/data/task/(?P<id>[^/]+)", "data_task"),
        ("GET", r"/data/workers", "data_workers"),
        ("GET", r"/data/queues", "data_queues"),
        ("GET", r"/data/schedules", "data_schedules"),
        ("GET", r"/metrics", "metrics"),
        ("GET", r"/healthcheck", "healthcheck"),
        ("GET", r"/api/workers", "api_workers"),
        ("GET", r"/api/tasks", "api_tasks"),
        ("GET", r"/api/task/types", "api_task_types"),
        ("GET", r"/api/task/info/(?P<id>[^/]+)", "api_task_info"),
        ("GET", r"/api/task/result/(?P<id>[^/]+)", "api_task_result"),
        ("GET", r"/api/queues/length", "api_queues_length"),
        ("POST", r"/api/task/revoke/(?P<id>[^/]+)", "api_revoke"),
        ("POST", r"/api/task/async-apply/(?P<name>[^/]+)", "api_async_apply"),
        ("POST", r"/api/task/apply/(?P<name>[^/]+)", "api_apply"),
        ("POST", r"/api/task/send-task/(?P<name>[^/]+)", "api_send_task"),
        ("POST", r"/action/(?P<action>revoke|terminate|retry)/(?P<id>[^/]+)", "act_task"),
        ("POST", r"/action/purge/(?P<queue>[^/]+)", "act_purge"),
        ("POST", r"/action/(?P<action>pause|resume)/(?P<queue>[^/]+)", "act_pause"),
        ("POST", r"/action/retry-failed", "act_retry_failed"),
        ("GET", r"/data/states", "data_states"),
        ("GET", r"/data/rate-limits", "data_rate_limits"),
        ("GET", r"/data/workflow/(?P<id>[^/]+)", "data_workflow"),
        ("GET", r"/data/workflows", "data_workflows"),
        ("GET", r"/data/concurrency-limits", "data_concurrency_limits"),
        ("POST", r"/action/fork/(?P<id>[^/]+)", "act_fork"),
        ("POST", r"/action/schedule/(?P<action>run|enable|disable)/(?P<name>[^/]+)",
         "act_schedule"),
        ("POST", r"/api/task/rate-limit/(?P<name>[^/]+)", "api_rate_limit"),
        ("POST", r"/api/worker/shutdown/(?P<name>[^/]+)", "api_worker_shutdown"),
        ("POST", r"/api/worker/pool/(?P<action>grow|shrink)/(?P<name>[^/]+)", "api_worker_pool"),
    )]

    def log_message(self, fmt, *args):
        logger.debug("dashboard %s: %s", self.address_string(), fmt % args)

    def setup(self):
        """self.request is a _DashboardConnection whose request head has been read; the
        body is read from its socket, each read and write within `timeout`."""
        conn = self.request
        self.connection = conn.sock
        self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm and not conn.nodelay:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            conn.nodelay = True
        self.rfile = _DashboardReader(conn)
        self.wfile = _DashboardWriter(conn.sock)

    def handle(self):
        """One request. The server gives a kept-alive connection back to its selector
        loop to wait for the next one: no thread waits on an idle connection."""
        self.close_connection = True
        self.handle_one_request()

    def finish(self):
        pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (400, 414, 431, 501...) as JSON, like ours."""
        self.close_connection = True
        self.extra_headers = []
        text = message or self.responses.get(code, ("error",))[0]
        with contextlib.suppress(OSError):
            self._send(code, "application/json", json.dumps({"error": text}).encode(),
                       [("Connection", "close")])

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method):
        # Lend the serving thread a connection from the server's pool for this request
        # (opening one per request would cost more than most requests).
        local = self.server.app._local
        try:
            local.storage, local.pid = self.server.pool.get_nowait(), os.getpid()
        except queue.Empty:
            pass
        try:
            self._route(method)
        finally:
            storage = getattr(local, "storage", None)
            if storage is not None and getattr(local, "pid", None) == os.getpid():
                local.storage = None
                self.server.pool.put(storage)

    def _route(self, method):
        self.extra_headers = []
        self.authed_by = None
        keep_alive = not self.close_connection
        # Until the body is read, an answer closes the connection: left unread, the body
        # would be taken for the start of the next request.
        self.close_connection = True
        try:
            self.raw = b""
            if self.headers.get("Transfer-Encoding") is not None:
                raise _HTTPError(411, "send a Content-Length, not Transfer-Encoding")
            given = self.headers.get_all("Content-Length") or ["0"]
            if len(given) != 1 or not re.fullmatch(r"[0-9]{1,18}", given[0].strip()):
                raise _HTTPError(400, "Content-Length must be one number (ASCII digits)")
            length = int(given[0])
            if length > 1 << 20:
                raise _HTTPError(413, "request body over 1 MiB")
            # Who may ask is settled before a byte of the body is read.
            url = urllib.parse.urlsplit(self.path)
            self._check_host()
            self.authed_by = self._check_auth(method, url.path)
            try:
                self.raw = self.rfile.read(length) if length else b""
            except OSError:                 # timed out or gone: nobody to answer
                return
            if len(self.raw) != length:
                return
            self.close_connection = not keep_alive
            self._check_request(method)
            self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            # A form-encoded body's fields are arguments too, after the query's (as
            # Flower reads them): curl -d 'terminate=True' sends one.
            content_type = self.headers.get("Content-Type", "").partition(";")[0]
            if content_type.strip().lower() == "application/x-www-form-urlencoded":
                self.query.update({k: v[-1] for k, v in urllib.parse.parse_qs(
                    self.raw.decode("utf-8", "replace")).items()})
            # Match the path as sent (an id may hold an encoded "/"), then decode the parts.
            path = url.path
            for route_method, pattern, name in self.ROUTES:
                match = pattern.fullmatch(path)
                if match:
                    if route_method != method:
                        raise _HTTPError(405, f"{path} takes {route_method}")
                    return getattr(self, name)(**{k: urllib.parse.unquote(v) for k, v
                                                  in match.groupdict().items()})
            raise _HTTPError(404, f"no page at {path}")
        except _HTTPError as exc:
            self._json({"error": str(exc)}, exc.status)
        except TaskNotFound as exc:
            self._json({"error": str(exc)}, 404)
        except (UnknownTask, UnknownWorker) as exc:
            self._json({"error": str(exc)}, 404)
        except (LitequeueError, ValueError, TypeError) as exc:
            self._json({"error": f"{type(exc).__name__}: {exc}"}, 400)
        except Exception as exc:
            logger.exception("dashboard request %s failed", _saferepr(self.path))
            self._json({"error": f"internal error: {type(exc).__name__}"}, 500)

    # -- security ---------------------------------------------------------------------

    def _check_host(self):
        if self.server.hosts is not None and self.headers.get("Host", "") not in \
                self.server.hosts:
            raise _HTTPError(421, "the Host header does not name this dashboard "
                                  "(DNS rebinding is refused)")

    def _check_auth(self, method, path):
        """How the request may go on: "shell" (the page's code, which holds no data),
        "public" (/metrics and /healthcheck under --metrics-public), "bearer" (the
        token) or "basic" (the --auth password); else 401. The token travels only in the
        Authorization header: a browser keeps it in the page's own storage, which no
        other port's page can read, where a cookie would go to every port of the host."""
        server = self.server
        if method == "GET" and re.fullmatch(_DASHBOARD_SHELLS, path):
            return "shell"
        if server.metrics_public and method == "GET" and path in _DASHBOARD_PUBLIC:
            return "public"
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and server.token_ok(given.strip()):
            return "bearer"
        if server.auth is not None and scheme.lower() == "basic":
            try:
                credentials = base64.b64decode(given.strip(), validate=True)
            except (ValueError, binascii.Error):
                credentials = b""
            client = self.client_address[0]
            if not server.guesses.take(client):
                wait = math.ceil(server.guesses.wait(client))
                self.extra_headers.append(("Retry-After", str(max(1, wait))))
                raise _HTTPError(429, f"too many wrong passwords: try again in {wait} s (the "
                                      "token is never throttled)")
            if server.auth.check(credentials):
                server.guesses.give(client)
                return "basic"
        raise _HTTPError(401, "authentication required: open the URL the dashboard "
                              "printed at start, or send 'Authorization: Bearer TOKEN' (the "
                              f"token is in DB-lq/{_DASHBOARD_TOKEN_FILE.format(port=server.port)})"
                         + (", or the --auth user and password (a browser: open /login)"
                            if server.auth else ""))

    def _check_request(self, method):
        server = self.server
        host = self.headers.get("Host", "")
        if method == "POST":
            if server.read_only:
                raise _HTTPError(403, "the dashboard is read-only")
            origin = self.headers.get("Origin")
            site = self.headers.get("Sec-Fetch-Site")
            if site is not None and site not in ("same-origin", "none"):
                raise _HTTPError(403, "cross-site request refused")
            if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
                raise _HTTPError(403, "cross-origin request refused")
            # A browser sends a password it was given by itself, to any site's form; the
            # token only when the page's script adds it.
            if (origin is not None or site is not None) and self.authed_by != "bearer":
                raise _HTTPError(403, "a browser's change needs the token in the "
                                      "Authorization header (the page sends it)")

    def _send(self, status, content_type, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        if status == 401:
            # A wrong token from the page's script must not make the browser ask for a
            # password: only a request without one is offered Basic.
            basic = self.server.auth and not self.headers.get("Authorization", "").lower() \
                .startswith("bearer")
            self.send_header("WWW-Authenticate", 'Basic realm="litequeue"' if basic
                             else 'Bearer realm="litequeue"')
        extra = (*extra, *self.extra_headers)
        if self.close_connection and not any(n == "Connection" for n, _ in extra):
            extra += (("Connection", "close"),)      # a kept-alive client must know
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=200):
        self._send(status, "application/json", json.dumps(_display(obj)).encode())

    def _body(self):
        raw = self.raw
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _HTTPError(400, f"the body is not JSON: {exc}") from None
        except RecursionError:
            raise _HTTPError(400, "the body is JSON nested too deep") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "the body must be a JSON object")
        return body

    # -- the page ---------------------------------------------------------------------

    def login(self):
        """GET /login, with the --auth password (or the token): the page, holding the token
        for its script to keep (in the page's storage), which then shows the overview. On
        loopback only under the dashboard's own host name (see _Dashboard.site)."""
        site = self.server.site
        if site is not None and self.headers.get("Host", "").rpartition(":")[0] != site:
            self._send(303, "application/json", b'{"ok": true}',
                       [("Location", f"{self.server.browser_url()}login")])
            return
        self.page(token=self.server.token)

    def page(self, token=None):
        nonce = secrets.token_urlsafe(16)
        config = json.dumps({"readOnly": self.server.read_only, "version": __version__,
                             "auth": self.server.auth is not None, "token": token,
                             "ownSite": self.server.site is not None})
        # The config goes in a JSON script element: </ cannot close it early.
        html = (_DASHBOARD_PAGE.replace("{nonce}", nonce)
                .replace("{config}", config.replace("</", "<\\/")))
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
        self._send(200, "text/html; charset=utf-8", html.encode(),
                   [("Content-Security-Policy", csp)])

    # -- the page's data --------------------------------------------------------------

    def data_overview(self):
        admin = self.server.app.admin
        counts, oldest = admin.state_counts()
        now = time.time()
        day = admin.throughput(24 * 60)
        checks = _health_checks(self.server.app, self.server.max_wait, counts=(counts, oldest))
        self._json({"counts": counts,
                    "oldest": {q: now - t for q, t in oldest.items()},
                    "hour": admin.throughput(60),
                    "day": [day[i:i + 20] for i in range(0, len(day), 20)],
                    "health": checks, "healthy": all(c["ok"] for c in checks)})

    def data_tasks(self):
        q = self.query
        tasks, following = self.server.app.admin.page(
            q.get("before"), q.get("state"), q.get("queue"), q.get("name"), q.get("q"),
            q.get("limit", 50))
        self._json({"tasks": tasks, "next": following})

    def data_task(self, id):
        self._json(self.server.app.admin.task(id))

    def data_workers(self):
        self._json(self.server.app.admin.workers())

    def data_queues(self):
        admin = self.server.app.admin
        counts, oldest = admin.state_counts()
        served = {}
        for sup in admin.workers():
            if sup["alive"] is not False:
                for q in str(sup["queues"]).split(","):
                    served[q] = served.get(q, 0) + len(sup["children"])
        now = time.time()
        hour = {_shown(q): (ok or 0, bad or 0) for q, ok, bad in
                self.server.app._storage().stats_by_queue(int(now // 60) - 59)}
        paused = admin.paused()
        queues = sorted(set(counts) | set(served) | set(hour) | set(paused))
        self._json([{"name": q, "counts": counts.get(q, {}),
                     "oldest_age": now - oldest[q] if q in oldest else None,
                     "processes": served.get(q, 0), "last_hour": hour.get(q, (0, 0)),
                     "paused": q in paused}
                    for q in queues])

    def data_schedules(self):
        self._json([_schedule_view(row) for row in self.server.app.admin.schedules()])

    def metrics(self):
        self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                   _metrics_text(self.server.app).encode())

    def healthcheck(self):
        checks = _health_checks(self.server.app, self.server.max_wait)
        bad = [c for c in checks if not c["ok"]]
        text = "OK\n" if not bad else "".join(f"FAIL {c['name']}: {c['detail']}\n" for c in bad)
        self._send(503 if bad else 200, "text/plain; charset=utf-8", text.encode())

    # -- Flower's API -----------------------------------------------------------------

    def api_workers(self):
        out = {}
        for sup in self.server.app.admin.workers():
            active, reserved = ([{"id": i, "name": n, "time_start": t} for c in sup["children"]
                                 for i, n, t in c[kind]] for kind in ("running", "reserved"))
            out[f"{sup['hostname']}-{sup['id']}"] = {
                "alive": sup["alive"], "pid": sup["pid"], "active": active,
                "reserved": reserved,
                "active_queues": [{"name": q} for q in str(sup["queues"]).split(",")],
                "stats": {"pid": sup["pid"], "pool": {"max-concurrency": sup["concurrency"],
                                                      "processes": [c["pid"] for c in
                                                                    sup["children"]]}}}
        self._json(out)

    def api_tasks(self):
        q = self.query
        limit = max(1, min(int(q.get("limit", 100)), 1000))
        offset = max(0, int(q.get("offset", 0)))
        tasks, _ = self.server.app.admin.page(None, q.get("state"), None, q.get("taskname"),
                                              None, min(offset + limit, 1500))
        self._json({t["id"]: _flower_task(t) for t in tasks[offset:offset + limit]})

    def api_task_types(self):
        self._json({"task-types": sorted(self.server.app.admin.registry())})

    def api_task_info(self, id):
        info = self.server.app.admin.task(id)
        flower = _flower_task(info)
        flower.update(traceback=info["traceback"], parent_id=info["parent_id"],
                      root_id=info["root_id"], children=info["children"])
        self._json(flower)

    def api_task_result(self, id):
        result = self.server.app.AsyncResult(id)
        if result.detailed_state == UNKNOWN:
            raise TaskNotFound(f"no task with id {id!r}")
        if "timeout" in self.query:
            timeout = float(self.query["timeout"])
            if not math.isfinite(timeout) or timeout < 0:
                raise ValueError("timeout must be a number of seconds >= 0")
            with contextlib.suppress(TimeoutError):
                result.get(timeout=min(timeout, 60), propagate=False)
        info = _task_summary(result._fetch())
        self._json({"task-id": id, "state": info["state"],
                    "result": info["result"] if info["state"] == SUCCESS else
                    info["exception"]})

    def api_queues_length(self):
        counts, _ = self.server.app.admin.state_counts()
        self._json({"active_queues": [{"name": q, "messages": s.get(PENDING, 0)}
                                      for q, s in sorted(counts.items())]})

    # Flower reads a boolean argument with strtobool.
    _TRUE, _FALSE = ("1", "true", "t", "yes", "y", "on"), ("", "0", "false", "f", "no", "n",
                                                           "off")

    def api_revoke(self, id):
        terminate = self.query.get("terminate", "").strip().lower()
        if terminate not in self._TRUE + self._FALSE:
            raise _HTTPError(400, f"terminate must be true or false, not {terminate!r}")
        revoked = self.server.app.admin.revoke(id, terminate=terminate in self._TRUE)
        self._json({"message": f"Revoked '{id}'" if revoked else
                    f"'{id}' was not revoked: it has finished or is running"})

    def _send_from_body(self, name):
        """Queue task `name` as Flower's apply, async-apply and send-task do: the JSON
        body's "args" and "kwargs", and every other field an apply_async option (an
        unknown one is refused); eta and expires as ISO 8601 (or Flower's
        "%Y-%m-%d %H:%M:%S.%f"), expires also as seconds. Returns the AsyncResult."""
        options = self._body()
        args, kwargs = options.pop("args", []), options.pop("kwargs", {})
        if not isinstance(args, list):
            raise TypeError("args must be a JSON array")
        if not isinstance(kwargs, dict):
            raise TypeError("kwargs must be a JSON object")
        unknown = sorted(set(options) - self._SEND_OPTIONS)
        if unknown:                          # an API client gets told, not a warning
            raise TypeError(f"unsupported option(s): {', '.join(unknown)}")
        for key in ("countdown", "expires", "eta"):
            if isinstance(options.get(key), str):
                options[key] = self._time_option(key, options[key])
        return self.server.app.send_task(name, args, kwargs, **options)

    _SEND_OPTIONS = frozenset({"task_id", "priority", "queue", "countdown", "eta", "expires",
                               "unique_key"}) | frozenset(_CALL_OPTIONS) | _BROKER_OPTIONS

    @staticmethod
    def _time_option(key, text):
        """countdown, expires or eta given as text: seconds (countdown, expires) or an
        ISO 8601 time (eta, expires)."""
        if key in ("countdown", "expires"):
            with contextlib.suppress(ValueError):
                return float(text)
        if key in ("eta", "expires"):
            with contextlib.suppress(ValueError):
                return _dt.datetime.fromisoformat(text)
        raise _HTTPError(400, f"{key} must be " + ("seconds" if key == "countdown" else
                                                   "an ISO 8601 time" if key == "eta" else
                                                   "seconds or an ISO 8601 time")
                         + f", not {text!r}")

    def api_async_apply(self, name):
        result = self._send_from_body(name)
        self._json({"task-id": result.id, "state": result.detailed_state})

    def api_send_task(self, name):
        result = self._send_from_body(name)
        self._json({"task-id": result.id, "state": result.detailed_state})

    def api_apply(self, name):
        """Queue the task and answer once it has finished, as Flower's apply does (it
        waits as long as the task takes)."""
        result = self._send_from_body(name)
        result.get(propagate=False)
        info = _task_summary(result._fetch())
        answer = {"task-id": result.id, "state": info["state"],
                  "result": info["result"] if info["state"] == SUCCESS else info["exception"]}
        if info["state"] == FAILURE:
            answer["traceback"] = result.traceback
        self._json(answer)

    # -- the page's actions -----------------------------------------------------------

    def act_task(self, action, id):
        admin = self.server.app.admin
        if action == "retry":
            done = admin.requeue(id)
        else:
            done = admin.revoke(id, terminate=action == "terminate")
        self._json({"ok": bool(done)})

    def act_purge(self, queue):
        self._json({"purged": self.server.app.admin.purge(queue)})

    def act_pause(self, action, queue):
        admin = self.server.app.admin
        self._json({"ok": admin.pause(queue) if action == "pause" else admin.resume(queue)})

    def act_retry_failed(self):
        name = self._body().get("name")
        self._json({"requeued": self.server.app.admin.requeue_failed(name)})

    def data_states(self):
        self._json(self.server.app.admin.states())

    def data_rate_limits(self):
        self._json(self.server.app.admin.rate_limits())

    def data_workflow(self, id):
        self._json(self.server.app.admin.workflow(id))

    def data_workflows(self):
        """Durable workflows, newest first (?state=WAITING...), with what each waits for."""
        self._json(self.server.app.admin.workflows(self.query.get("state") or None, 100))

    def data_concurrency_limits(self):
        storage = self.server.app._storage()
        self._json({"tasks": [{"name": _display(k), "max": m, "per_key": p}
                              for k, m, p in storage.concurrency_limits()],
                    "queues": [{"queue": _display(q), "max": m, "running": storage.running_in(q)}
                               for q, m in storage.queue_limits().items()]})

    def act_fork(self, id):
        """Fork a workflow: a new run that keeps its steps before index "from"."""
        n = self._body().get("from")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1 << 31:
            raise _HTTPError(400, "give \"from\": the index of the first step to run again")
        self._json({"ok": True, "task": self.server.app.admin.fork_workflow(id, n).id})

    def act_schedule(self, action, name):
        admin = self.server.app.admin
        if action == "run":
            self._json({"ok": True, "task": admin.run_schedule(name)})
        else:
            done = admin.enable_schedule(name) if action == "enable" else \
                admin.disable_schedule(name)
            self._json({"ok": done})

    def api_rate_limit(self, name):
        """Flower's POST /api/task/rate-limit/NAME with ratelimit=10/s (form or JSON);
        0 or an empty value drops the limit."""
        rate = self.query["ratelimit"] if "ratelimit" in self.query else \
            self._body().get("ratelimit")
        if rate is None:
            raise _HTTPError(400, "give ratelimit, e.g. ratelimit=10/s")
        if isinstance(rate, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", rate):
            rate = float(rate)
        rate = self.server.app.admin.set_rate_limit(name, rate or None)
        self._json({"message": f"new rate limit set successfully: {rate}" if rate else
                    "rate limit removed"})

    def api_worker_shutdown(self, name):
        """Flower's POST /api/worker/shutdown/NAME: a warm shutdown (NAME: an id,
        hostname-id as /api/workers names it, or a hostname)."""
        ids = self.server.app.admin.shutdown_worker(name)
        self._json({"message": f"shutting down {', '.join(ids)}", "workers": ids})

    def api_worker_pool(self, action, name):
        """Flower's POST /api/worker/pool/grow/NAME and .../shrink/NAME, with n=1."""
        given = self.query["n"] if "n" in self.query else self._body().get("n", 1)
        if isinstance(given, str) and re.fullmatch(r"[0-9]{1,4}", given.strip()):
            given = int(given)
        if type(given) is not int or given < 1:
            raise _HTTPError(400, "n must be a whole number of processes, 1 or more")
        asked = self.server.app.admin.resize_pool(name, given if action == "grow" else -given)
        self._json({"message": "; ".join(f"pool of {w} will have {n} process(es)"
                                         for w, n in asked.items()), "workers": asked})


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

class _Group(click.Group):
    """Turns every LitequeueError into one clear line: exit code 1, or 2 for a task or
    config module that cannot be loaded (its file, line and error)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _BrokenModule as exc:       # the code given cannot be loaded: as bad usage
            error = click.ClickException(str(exc))
            error.exit_code = 2
            raise error from None
        except LitequeueError as exc:
            raise click.ClickException(str(exc)) from None
        except apsw.Error as exc:
            raise click.ClickException(f"database error: {exc}") from None


def _json_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_option(kind):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}") from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}")
        return parsed
    return convert


def _iso_datetime(ctx, param, value):
    if value is None:
        return None
    try:
        return _dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date and time "
                                 "(e.g. 2026-11-24T09:00:00+08:00)") from None


def _seconds_or_iso(ctx, param, value):
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return _iso_datetime(ctx, param, value)


def _zone_option(ctx, param, value):
    if value is None:
        return None
    try:
        _zone(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _config_zone(cwd):
    """The timezone that the config module a worker in cwd reads sets (see
    _config_module), or None: what a naive time means to the app there. Its warnings are
    the worker's to show."""
    name = _config_module(cwd)
    if name is None:
        return None
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LitequeueWarning)
            settings = _settings_of(name)
            return _merged_settings({}, settings).get("timezone")
    except ImportError as exc:
        raise ConfigurationError(f"cannot import config module {name!r}: {exc}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _priority_option(ctx, param, value):
    """--priority: a whole number within 64 bits, or a usage error saying the range."""
    if value is None:
        return None
    try:
        return _checked_priority(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _open_app(db, read_only=False, **settings):
    """The app of an existing database for a command (paths are the current directory's).
    With read_only, the command creates and changes no file: a file that holds no
    litequeue database yet is refused as it is."""
    db = os.path.abspath(db)
    if not os.path.exists(db):
        raise DatabaseError(f"no database at {db}")
    app = LiteQueue(db, **settings)
    app._create = not read_only
    return app


def _nonempty(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def _setting_option(*decls, setting, **kwargs):
    """A worker option that sets a setting: its help and its check come from the settings
    table, so the CLI, LiteQueue(...) and config modules accept the same values."""
    def check(ctx, param, value):
        if value is None:
            return None
        try:
            return _checked_setting(setting, value)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc)) from None
    help_text = _SETTINGS[setting].help
    return click.option(*decls, setting, callback=check, expose_value=True,
                        help=help_text[0].upper() + help_text[1:] + ".", **kwargs)


def _resolve_task_name(app, name):
    """A registered name, or the one registered name that ends with '.name'."""
    name = _checked_name(name)
    registry = app.admin.registry()
    if name in registry:
        return name
    matches = [n for n in registry if n.rsplit(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownTask(f"task name {name!r} is ambiguous: "
                          f"{', '.join(sorted(map(_shown, matches)))}")
    raise UnknownTask(_unknown_task_message(name, registry))


def _print_result(result, as_json):
    state = result.detailed_state
    if as_json:
        out = {"id": result.id, "state": state, "date_done": None, "result": None,
               "traceback": _display(result.traceback),
               "retries": _display(result.retries),
               "errors": _display(result.errors)}
        if result.date_done:
            out["date_done"] = result.date_done.isoformat()
        value = result.result
        out["result"] = repr(value) if isinstance(value, BaseException) else _display(value)
        click.echo(json.dumps(out))
    elif state == SUCCESS:
        click.echo(json.dumps(_display(result.result)))
    elif state == FAILURE:
        click.echo(_printable(f"FAILURE: {result.result!r}"))
        if isinstance(result.traceback, str) and result.traceback:
            click.echo(_printable(result.traceback.rstrip()), err=True)
    else:
        click.echo(state)
    errors = [] if as_json else result.errors
    for error in (errors if isinstance(errors, list) else []):
        if not isinstance(error, dict):
            continue
        when = _from_unix(error.get("time"))
        when = when.isoformat(timespec="milliseconds") if when else "?"
        click.echo(_printable(f"  attempt {error.get('attempt', '?')} at {when}: "
                              f"{error.get('type')}: {error.get('message')}"), err=True)
    return 1 if state == FAILURE else 0


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="litequeue")
def cli():
    """litequeue: background tasks in one SQLite file. Every command takes the database
    path first."""


@cli.command("worker")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("-A", "--app", "modules", multiple=True, metavar="MODULE",
              help="Task module to import (repeatable): tasks, pkg.tasks or tasks.py.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Worker processes [default: number of CPUs].")
@click.option("-Q", "--queues", help="Comma-separated queues to serve [default: default].")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("--autoimport/--no-autoimport", default=None,
              help="Import task modules that producers registered (only files under the "
                   "current directory) [default: on].")
@_setting_option("--poll-interval", setting="worker_poll_interval", type=float)
@_setting_option("--grace", setting="worker_shutdown_grace", type=float)
@_setting_option("--synchronous", setting="synchronous",
                 type=click.Choice(["NORMAL", "FULL"], case_sensitive=False))
@_setting_option("--time-limit", setting="task_time_limit", type=float)
@_setting_option("--soft-time-limit", setting="task_soft_time_limit", type=float)
@_setting_option("--max-tasks-per-child", setting="worker_max_tasks_per_child", type=int)
@_setting_option("--max-memory-per-child", setting="worker_max_memory_per_child", type=int,
                 metavar="KIB")
@_setting_option("-P", "--pool", setting="worker_pool", metavar="prefork|threads|solo")
@_setting_option("--async-concurrency", setting="worker_async_concurrency", type=int,
                 metavar="N")
def _cmd_worker(db, modules, concurrency, queues, loglevel, autoimport, **settings):
    """Run a pool of worker processes on DB until SIGTERM/SIGINT (twice: at once)."""
    _configure_logging(loglevel.upper())
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if queues is not None and not queue_list:
        raise click.BadParameter("no queue named", param_hint="-Q")
    if not os.path.exists(db) and (os.path.isfile(db + ".py") or
                                   os.path.isfile(os.path.join(db, "__init__.py"))):
        raise ConfigurationError(f"{db!r} is a module, not a database: the database comes "
                                 f"first, then the module, as in `litequeue worker jobs.sqlite "
                                 f"-A {db}`")
    settings = {name: value for name, value in settings.items() if value is not None}
    code = run_worker(db, concurrency=concurrency, queues=queue_list, modules=modules,
                      loglevel=loglevel.upper(), autoimport=autoimport, settings=settings)
    sys.exit(code)


class _CallCommand(click.Command):
    """`call`: unknown options reach ARGS, so that -1 can be an argument, and call()
    refuses those that are not numbers; after `--` everything is an argument, whatever
    it looks like. parse_args() notes how many tokens came after the `--`."""

    def parse_args(self, ctx, args):
        takes_value = {opt for p in self.params if isinstance(p, click.Option)
                       and not p.is_flag for opt in p.opts}
        ctx.meta["after_double_dash"], i = 0, 0
        while i < len(args):
            if args[i] == "--":
                ctx.meta["after_double_dash"] = len(args) - i - 1
                break
            i += 2 if args[i] in takes_value else 1       # an option's value is not "--"
        return super().parse_args(ctx, args)


@cli.command("call", cls=_CallCommand, context_settings={"ignore_unknown_options": True})
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("task")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--args", "args_json", callback=_json_option(list), help="Arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", callback=_json_option(dict),
              help="Keyword arguments as a JSON object.")
@click.option("--queue", "-q", callback=_nonempty, help="Queue to send to.")
@click.option("--priority", type=int, callback=_priority_option, help="Higher runs first.")
@click.option("--id", "task_id", callback=_nonempty, help="Task id to use instead of a new uuid.")
@click.option("--countdown", type=click.FloatRange(min=0), help="Run no sooner than seconds from now.")
@click.option("--eta", callback=_iso_datetime, help="Run no sooner than this ISO 8601 time.")
@click.option("--expires", callback=_seconds_or_iso,
              help="Never start after this: seconds from now, or an ISO 8601 time.")
@click.option("--tz", callback=_zone_option,
              help="Zone of an --eta/--expires without an offset [default: the app's "
                   "timezone setting, from the config module a worker here reads "
                   "(celeryconfig.py), else this machine's zone, "
                   f"{_SETTINGS['timezone'].default}].")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=click.FloatRange(min=0), help="With --wait: give up after seconds.")
def _cmd_call(db, task, args, args_json, kwargs_json, queue, priority, task_id, countdown, eta,
         expires, tz, wait, timeout):
    """Queue TASK with ARGS (each a JSON value; other text is a string). Prints the id.
    After `--`, every word is an argument, even one that starts with a dash."""
    literal = click.get_current_context().meta.get("after_double_dash", 0)
    for arg in args[:max(0, len(args) - literal)]:     # unknown options reach ARGS too
        if arg.startswith("-") and not isinstance(_json_value(arg), (int, float)):
            raise click.NoSuchOption(arg.split("=", 1)[0])
    if args and args_json is not None:
        raise click.UsageError("give arguments either positionally or with --args, not both")
    if countdown is not None and eta is not None:
        raise click.UsageError("give --countdown or --eta, not both")
    if tz is None and any(isinstance(t, _dt.datetime) and t.tzinfo is None
                          for t in (eta, expires)):
        tz = _config_zone(os.getcwd())      # a naive time is in the app's zone, as in Celery
    app = _open_app(db, **({"timezone": tz} if tz else {}))
    eta_at, expires_at = app._timing(time.time(), countdown, eta, expires)
    if expires_at is not None and eta_at is not None and expires_at < eta_at:
        raise ConfigurationError("expires is earlier than eta: the task could never run")
    name = _resolve_task_name(app, task)
    call_args = args_json if args_json is not None else [_json_value(a) for a in args]
    result = app.send_task(name, call_args, kwargs_json or {}, queue=queue, priority=priority,
                           task_id=task_id, countdown=countdown, eta=eta, expires=expires)
    if not wait:
        click.echo(result.id)
        return
    result.get(timeout=timeout, propagate=False)
    sys.exit(_print_result(result, as_json=False))


@cli.command("result")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait until the task is ready.")
@click.option("--timeout", type=click.FloatRange(min=0), help="With --wait: give up after seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print state, result and traceback as JSON.")
def _cmd_result(db, task_id, wait, timeout, as_json):
    """Print a task's result (JSON), or its state if it is not finished."""
    app = _open_app(db, read_only=not wait)
    res = app.AsyncResult(task_id)
    if res.detailed_state == UNKNOWN:
        raise TaskNotFound(f"no task with id {task_id!r}")
    if wait:
        _wait_showing_progress(res, timeout)
    sys.exit(_print_result(res, as_json))


def _progress_line(state, info):
    """A progress bar for meta that carries current and total, else None."""
    if not isinstance(info, dict):
        return None
    current, total = info.get("current"), info.get("total")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (current, total)) or total <= 0:
        return None
    done = max(0.0, min(1.0, current / total))
    filled = int(done * 30)
    return _printable(f"{_clipped(str(state), 20)} [{'#' * filled}{'.' * (30 - filled)}] "
                      f"{done:4.0%} {current}/{total}")


def _wait_showing_progress(res, timeout):
    """get() for the CLI: while the task runs, a progress bar on stderr when its
    update_state() meta carries current and total (redrawn in place on a terminal)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = None
    tty = sys.stderr.isatty()
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = 0.25 if left is None else max(0.0, min(0.25, left))
            try:
                res.get(timeout=step, propagate=False)
                return
            except TimeoutError:
                if left is not None and left <= step:
                    raise TimeoutError(f"task {res.id} not ready after {timeout} s "
                                       f"(state {res.detailed_state})") from None
            line = _progress_line(res.detailed_state, res.info)
            if line is not None and line != shown:
                click.echo(("\r" + line) if tty else line, err=True, nl=not tty)
                shown = line
    finally:
        if shown is not None and tty:
            click.echo("", err=True)


@cli.command("revoke")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("task_id")
@click.option("--terminate", is_flag=True, help="Also kill the process running it.")
def _cmd_revoke(db, task_id, terminate):
    """Revoke a task: a waiting one never runs; with --terminate a running one is killed."""
    app = _open_app(db)
    res = app.AsyncResult(task_id)
    if res.detailed_state == UNKNOWN:
        raise TaskNotFound(f"no task with id {task_id!r}")
    if res.revoke(terminate=terminate):
        click.echo(f"revoked {task_id}")
    else:
        click.echo(f"not revoked: the task is {res.detailed_state}"
                   + ("" if terminate or res.detailed_state != STARTED else " (use --terminate)"))
        sys.exit(1)


@cli.command("retry")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("task_id")
def _cmd_retry(db, task_id):
    """Queue a failed, revoked or expired task again, with a fresh retry budget."""
    app = _open_app(db)
    if not app.admin.requeue(task_id):
        state = app.AsyncResult(task_id).detailed_state
        click.echo(f"not queued again: the task is {state}; only FAILURE, REVOKED and "
                   "EXPIRED tasks can be" if state not in (FAILURE, REVOKED, EXPIRED) else
                   "not queued again: another task with its unique key waits or runs",
                   err=True)
        sys.exit(1)
    click.echo(f"queued {task_id} again")


@cli.command("purge")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--queue", "-q", help="Only this queue [default: every queue].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def _cmd_purge(db, queue, yes):
    """Delete every task waiting to run (PENDING, SCHEDULED, RETRY); running and finished
    tasks and periodic schedules are kept."""
    app = _open_app(db)
    where = f"queue {queue!r}" if queue else "every queue"
    if not yes:
        click.confirm(f"Delete every waiting task in {where} of {db}?", abort=True)
    click.echo(f"purged {app.admin.purge(queue)} waiting task(s) from {where}")


@cli.command("status")
@click.argument("db", type=click.Path(dir_okay=False))
def _cmd_status(db):
    """Counts by queue and state, the workers, and disabled periodic tasks."""
    admin = _open_app(db, read_only=True).admin
    counts = [(_shown(queue), _shown(state), n) for queue, state, n in admin.counts()]
    click.echo("tasks:")
    if not counts:
        click.echo("  (none)")
    width = max([16] + [len(queue) for queue, _, _ in counts])
    for queue, state, n in counts:
        click.echo(f"  {queue:<{width}} {state:<10} {n}")
    supervisors = admin.workers()
    click.echo("workers:")
    if not supervisors:
        click.echo("  (none)")
    for sup in supervisors:
        alive = {True: "alive", False: "DEAD (a live worker will rescue its tasks)",
                 None: "alive?"}[sup["alive"]]
        click.echo(f"  {_shown(sup['id'])} pid {sup['pid']} on {_shown(sup['hostname'])} "
                   f"queues {_shown(sup['queues'])} {alive}")
        for child in sup["children"]:
            running = child["running"]
            doing = ", ".join(f"{_shown(n)}[{_shown(i)}]" for i, n, _ in running[:3])
            if len(running) > 3:
                doing += f" and {len(running) - 3} more"
            if child["reserved"]:
                doing += f"{', ' if doing else ''}{len(child['reserved'])} reserved (claimed, " \
                    "not begun)"
            click.echo(f"    child {_shown(child['id'])} pid {child['pid']}: {doing or 'idle'}")
    for queue, since in sorted(admin.paused().items()):
        when = _from_unix(since)
        click.echo(f"queue {_shown(queue)} PAUSED since "
                   f"{when.isoformat(timespec='seconds') if when else '?'}")
    for limit in admin.rate_limits():
        click.echo(f"task {_shown(limit['name'])} rate-limited to {_shown(limit['rate'])} "
                   f"(every worker on this file)")
    rows = admin.schedules()
    disabled = [row for row in rows if row["error"] is not None]
    if rows:
        click.echo(f"schedules: {len(rows)} periodic task(s), {len(disabled)} disabled")
    for row in disabled:
        click.echo(f"  {_shown(row['name'])} DISABLED: {_shown(row['error'], 500)}")


@cli.command("schedules")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("-n", "--next", "count", default=3, show_default=True, type=click.IntRange(0, 100),
              help="How many upcoming fire times to show.")
@click.option("--run", "run_name", metavar="NAME",
              help="Queue one call of periodic task NAME now (its fire times stay).")
@click.option("--disable", metavar="NAME",
              help="Stop NAME's fires until --enable (or until a worker defining it starts).")
@click.option("--enable", metavar="NAME", help="Let a disabled NAME fire again.")
def _cmd_schedules(db, count, run_name, disable, enable):
    """List periodic tasks: schedule, zone, last fire and the next fire times, in their zone;
    or run, disable or enable one."""
    actions = [(n, a) for n, a in ((run_name, "run"), (disable, "disable"), (enable, "enable"))
               if n is not None]
    if len(actions) > 1:
        raise click.UsageError("give one of --run, --disable and --enable")
    if actions:
        name, action = actions[0]
        admin = _open_app(db).admin
        if action == "run":
            click.echo(f"queued {_shown(name)} now: task {admin.run_schedule(name)}")
        else:
            changed = getattr(admin, f"{action}_schedule")(name)
            click.echo(f"periodic task {_shown(name)} {action}d" if changed else
                       f"periodic task {_shown(name)} was already {action}d")
        return
    rows = _open_app(db, read_only=True).admin.schedules()
    if not rows:
        click.echo("no periodic tasks (a worker syncs them from your modules when it starts)")
    for row in rows:
        click.echo(f"{_shown(row['name'])}  ->  {_shown(row['task'])}")
        try:
            lines = _schedule_lines(row, count)
        except Exception as exc:      # not disabled yet: no worker has met it
            lines = [f"  DISABLED  cannot be read: {type(exc).__name__}: {_saferepr(exc, 300)}"]
        for line in lines:
            click.echo(line)


def _schedule_lines(row, count):
    """What `schedules` prints of one row after its name."""
    if row["error"] is not None:
        return [f"  schedule  {_shown(row['schedule'])}  zone {_shown(row['tz'], 100)}",
                f"  DISABLED  {_shown(row['error'], 500)}"]
    zone = _zone(row["tz"])
    schedule = _schedule_from_text(row["schedule"], zone)
    shown = row["schedule"].partition(":")[2]
    last = _from_unix(row["last_fire"]).astimezone(zone).isoformat() \
        if row["fires"] and row["last_fire"] is not None else "never"
    lines = [f"  schedule  {shown}  ({row['schedule'].partition(':')[0]}, "
             f"catch_up={row['catch_up']}, queue={row['queue']})",
             f"  zone      {row['tz']}",
             f"  last fire {last}"]
    t = _dt.datetime.fromtimestamp(max(row["next_fire"] - 1e-6, 0), _UTC)
    for i in range(count):
        t = schedule.next_after(t, zone)
        lines.append(f"  {'next' if i == 0 else '':<9} {t.astimezone(zone).isoformat()}")
    return lines


@cli.command("dashboard")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --auth.")
@click.option("--port", default=5555, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free one).")
@click.option("--auth", metavar="USER",
              help=f"Also accept HTTP basic auth as USER, with the password from --auth-file "
                   f"or ${_DASHBOARD_PASSWORD_ENV} (never the command line).")
@click.option("--auth-file", type=click.Path(dir_okay=False),
              help="A file (yours, mode 0600) holding the --auth password.")
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option("--metrics-public", is_flag=True,
              help="Serve /metrics and /healthcheck (no task data) without the token.")
@click.option("--max-wait", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Health: the oldest waiting task may have waited this many seconds.")
def _cmd_dashboard(db, host, port, auth, auth_file, read_only, metrics_public, max_wait):
    """Serve the live web dashboard, Flower's HTTP API, /metrics and /healthcheck.
    Every request for data needs the token printed at start (also in
    DB-lq/dashboard-PORT.token)."""
    if auth is not None and ":" in auth:
        raise click.UsageError(f"--auth takes USER only: a password on the command line is "
                               f"visible to every user in ps; put it in ${_DASHBOARD_PASSWORD_ENV}"
                               f" or a 0600 file given with --auth-file")
    if auth_file is not None and auth is None:
        raise click.UsageError("--auth-file needs --auth USER")
    if auth is not None:
        password = _dashboard_password(auth_file)
        if password is None:
            raise click.UsageError(f"--auth {auth} needs a password: set "
                                   f"${_DASHBOARD_PASSWORD_ENV} or give --auth-file")
        auth = _PasswordCheck(auth, password)      # the hash only, from here on
        del password
    app = _open_app(db)
    token = secrets.token_urlsafe(32)
    try:
        server = _dashboard_server(app, host, port, auth, read_only, max_wait, token,
                                   metrics_public)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    token_path = _write_dashboard_token(app.path, token, server.port)
    click.echo(f"litequeue dashboard for {app.path} on {server.url()}"
               f"{' (read-only)' if read_only else ''}", err=True)
    click.echo(f"  open {server.browser_url()}#token={token}\n  scripts: send 'Authorization: "
               f"Bearer TOKEN', the token is in {token_path} (mode 0600)"
               + (f"\n  or log in at {server.browser_url()}login with the --auth password"
                  if auth else ""), err=True)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        _remove_dashboard_token(app.path, token, server.port)


@cli.command("health")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--max-wait", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="The oldest waiting task may have waited this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check.")
def _cmd_health(db, max_wait, as_json):
    """Check the queue's health: exit 0 healthy, 1 unhealthy (one line per check), 3 when
    it cannot tell (no database, not litequeue's, unreadable). Imports no task code."""
    try:
        app = _open_app(db, read_only=True)
        checks = _health_checks(app, max_wait)
    except (LitequeueError, apsw.Error, OSError) as exc:
        click.echo(f"UNKNOWN cannot check {db}: {exc}", err=True)
        sys.exit(3)
    for c in checks:
        if as_json:
            click.echo(json.dumps(_display(c)))
        else:
            click.echo(_printable(f"{'OK  ' if c['ok'] else 'FAIL'} {c['name']}: "
                                  f"{c['detail']}"))
    sys.exit(0 if all(c["ok"] for c in checks) else 1)


@cli.command("pause")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("queue", callback=_nonempty)
def _cmd_pause(db, queue):
    """Pause a queue: workers stop claiming from it (within a claim); its tasks wait."""
    _pause_or_resume(db, queue, "pause", "paused", "was already paused")


@cli.command("resume")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("queue", callback=_nonempty)
def _cmd_resume(db, queue):
    """Resume a paused queue: workers claim from it again at once."""
    _pause_or_resume(db, queue, "resume", "resumed", "was not paused")


def _pause_or_resume(db, queue, action, done, unchanged):
    admin = _open_app(db).admin
    changed = getattr(admin, action)(queue)
    line = f"queue {_shown(queue)} {done if changed else unchanged}"
    if action == "pause":           # a typo pauses nothing anyone uses: say so
        known = {q for q, _, _ in admin.counts()} | {
            q for w in admin.workers() if w["alive"] is not False
            for q in str(w["queues"]).split(",")}
        if queue not in known:
            line += (f", but no task or live worker of this database names that queue "
                     f"(known queues: {', '.join(sorted(map(_shown, known))) or 'none'})")
    click.echo(line)


_CONTROLS = ("shutdown", "pool_grow", "pool_shrink", "rate_limit")


@cli.command("control", context_settings={"ignore_unknown_options": True})
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("action", metavar="ACTION",
                type=click.Choice(_CONTROLS + tuple(c.replace("_", "-") for c in _CONTROLS)))
@click.argument("arguments", nargs=-1, metavar="[ARGS]...")
@click.option("-d", "--destination", "worker", metavar="WORKER",
              help="One worker: its id, hostname-id or hostname (`status` lists them); "
                   "by default every live worker.")
def _cmd_control(db, action, arguments, worker):
    """Tell running workers what to do, as `celery control` does.

    \b
      shutdown               warm shutdown: running tasks finish, then the worker exits
      pool_grow [N]          N more processes (default 1; prefork pools)
      pool_shrink [N]        N fewer processes; those going finish their task first
      rate_limit TASK RATE   for every worker on the file: 10/s, 100/m, 0 drops it
    """
    action = action.replace("-", "_")
    want = {"shutdown": (0, 0), "pool_grow": (0, 1), "pool_shrink": (0, 1),
            "rate_limit": (2, 2)}[action]
    if not want[0] <= len(arguments) <= want[1]:
        raise click.UsageError(f"{action} takes {want[1]} argument(s), not {len(arguments)}")
    admin = _open_app(db).admin
    if action == "shutdown":
        ids = admin.shutdown_worker(worker)
        click.echo(f"asked {_plural(len(ids), 'worker')} to shut down: {', '.join(ids)}"
                   if ids else "no live worker to shut down")
    elif action == "rate_limit":
        if worker is not None:
            raise click.UsageError("a rate limit holds for every worker on the file: "
                                   "drop --destination")
        task, rate = arguments
        rate = float(rate) if re.fullmatch(r"\s*\d+(\.\d*)?\s*", rate) else rate
        rate = admin.set_rate_limit(task, rate or None)
        click.echo(f"task {_shown(task)} rate-limited to {rate}" if rate else
                   f"task {_shown(task)} is not rate-limited")
    else:
        try:
            n = int(arguments[0]) if arguments else 1
        except ValueError:
            raise click.UsageError(f"N must be a whole number, not {arguments[0]!r}") from None
        if n < 1:
            raise click.UsageError("N must be 1 or more")
        asked = admin.resize_pool(worker, n if action == "pool_grow" else -n)
        if not asked:
            click.echo("no live prefork worker to resize")
        for worker_id, processes in asked.items():
            click.echo(f"worker {worker_id}: pool of {_plural(processes, 'process', 'processes')} asked")


_STATES = sorted(_ENDED_STATES | {PENDING, SCHEDULED, STARTED, RETRY, WAITING, IGNORED, REJECTED})


@cli.command("workflows")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("workflow_id", required=False)
@click.option("--state", callback=_nonempty, help=f"One of {', '.join(_STATES)} (any case).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--fork-from", type=click.IntRange(0), metavar="N",
              help="Queue a new run of WORKFLOW_ID that keeps its steps before index N and "
                   "runs the rest again; prints the new run's id.")
def _cmd_workflows(db, workflow_id, state, limit, as_json, fork_from):
    """List workflows, newest first, with their steps and what they wait for; with a
    WORKFLOW_ID, that workflow's steps in call order. `litequeue retry DB ID` resumes a
    failed or revoked workflow: the steps that succeeded are kept, the failed ones run
    again."""
    if fork_from is not None:
        if workflow_id is None:
            raise click.UsageError("--fork-from needs a WORKFLOW_ID")
        click.echo(_open_app(db).admin.fork_workflow(workflow_id, fork_from).id)
        return
    admin = _open_app(db, read_only=True).admin
    if workflow_id is not None:
        items = admin.steps(workflow_id)
        if not items and admin.app.AsyncResult(workflow_id)._fetch() is None:
            raise TaskNotFound(f"no task with id {workflow_id!r}")
    else:
        items = admin.workflows(state.upper() if state else None, limit)
    for item in items:
        if as_json:
            click.echo(json.dumps({k: _cut(v, _LOG_REPR_MAX) if isinstance(v, str) else v
                                   for k, v in item.items()}))
        elif workflow_id is not None:
            what = f" task {item['task_id']}" if item["task_id"] else ""
            tail = f": {_shown(json.dumps(item['outcome']), 120)}" \
                if item["outcome"] is not None else ""
            click.echo(_printable(f"{item['index']:>4}  {item['state']:<9} {item['kind']:<6} "
                                  f"{_shown(item['name'])}{what}{tail}"))
        else:
            click.echo(_printable(f"{_shown(item['id'])}  {_shown(item['state']):<9} "
                                  f"{_shown(item['name'])}  {item['steps']} step(s)"
                                  + (f"; {item['waiting']}" if item["waiting"] else "")))


@cli.command("tasks")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--state", callback=_nonempty, help=f"One of {', '.join(_STATES)} (any case), "
              "or a custom state a running task set with update_state (e.g. PROGRESS).")
@click.option("--queue", "-q")
@click.option("--name", "-n", help="Task name.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task.")
def _cmd_tasks(db, state, queue, name, limit, as_json):
    """List tasks, newest first: id, state, name, and when it was queued."""
    admin = _open_app(db, read_only=True).admin
    custom = state is not None and state.upper() not in _STATES
    if state is not None and not custom:
        state = state.upper()
    rows, before = [], None
    while len(rows) < limit:        # a custom state is a running (STARTED) task's meta
        page, before = admin.page(before, STARTED if custom else state, queue, name, None,
                                  500 if custom else min(limit - len(rows), 500))
        rows += [t for t in page if not custom or t["state"] == state]
        if before is None:
            break
    if custom and not rows:
        close = difflib.get_close_matches(state.upper(), _STATES, n=1)
        click.echo(f"no running task is in the custom state {_shown(state)}"
                   + (f" (did you mean {close[0]}?)" if close else
                      f" (the built-in states are {', '.join(_STATES)})"), err=True)
    for t in rows[:limit]:
        if as_json:
            click.echo(json.dumps({k: _cut(v, _LOG_REPR_MAX) if isinstance(v, str) else v
                                   for k, v in t.items()}))
        else:
            when = _from_unix(t["created"])
            click.echo(_printable(f"{_shown(t['id'])}  {_shown(t['state']):<9} "
                                  f"{_shown(t['name'])}  "
                                  f"{when.isoformat(timespec='seconds') if when else '?'}"))


@cli.command("inspect")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("what", type=click.Choice(["active", "scheduled", "reserved", "registered",
                                           "stats"]))
def _cmd_inspect(db, what):
    """Answer Celery's `inspect` questions from the database, as JSON."""
    admin = _open_app(db, read_only=True).admin
    if what == "registered":
        out = admin.registry()
    elif what == "stats":
        counts, oldest = admin.state_counts()
        out = {"workers": admin.workers(), "counts": counts,
               "last_hour": [dict(zip(("minute", "succeeded", "failed", "retried",
                                       "mean_runtime"), m)) for m in admin.throughput(60)
                             if any(m[1:4])]}
    elif what == "scheduled":
        out, _ = admin.page(None, SCHEDULED, None, None, None, 500)
    else:
        # Celery's meaning: active tasks have begun; reserved ones were prefetched by a
        # worker process and wait for it to begin them.
        ids = {task[0] for sup in admin.workers() for child in sup["children"]
               for task in child["running" if what == "active" else "reserved"]}
        out, before = [], None
        while ids:                  # every STARTED row, a page at a time
            page, before = admin.page(before, STARTED, None, None, None, 500)
            out += [t for t in page if t["id"] in ids]
            if before is None:
                break
    if isinstance(out, list):       # task rows: their arguments as JSON values, as Celery's
        out = [_with_arguments(admin.app, t) for t in out]
    click.echo(json.dumps(_display(out), indent=2))


def _with_arguments(app, task):
    """A task row (dashboard form) with its args and kwargs as values, not their repr."""
    result = app.AsyncResult(task["id"])
    return dict(task, args=_display(result.args), kwargs=_display(result.kwargs))


@cli.command("unregister")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("names", nargs=-1, required=True)
def _cmd_unregister(db, names):
    """Forget NAMES in the registry that `call` and auto-import read: each a task name
    (tasks.add) or a module, whose every task is forgotten. Task rows stay. A worker or
    producer that defines a name registers it again when it starts or first queues it."""
    for name in _open_app(db).admin.unregister(names):
        click.echo(f"unregistered {_shown(name)}")


def _program():
    """This program as the user can run it again: `litequeue` (the console script on
    PATH), or `python path/to/litequeue.py`, naming the interpreter by path unless
    `python` on PATH is this one."""
    import shlex
    import shutil
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "litequeue"
    if not argv0.endswith(".py"):
        found = shutil.which("litequeue")
        same = found and os.path.abspath(found) == os.path.abspath(shutil.which(argv0) or argv0)
        return "litequeue" if same else shlex.quote(os.path.abspath(argv0))
    python = shutil.which("python")
    if not (python and os.path.dirname(os.path.abspath(python)) ==
            os.path.dirname(os.path.abspath(sys.executable)) and
            os.path.realpath(python) == os.path.realpath(sys.executable)):
        python = shlex.quote(sys.executable)
    else:
        python = "python"
    return f"{python} {shlex.quote(argv0)}"


# The module the demo's worker imports; its names are forgotten when the demo ends.
_DEMO_MODULE = "litequeue_demo_tasks"


def _refuse_a_served_database(db):
    """The demo queues its tasks into db for its own worker: another worker on the file
    would claim them and fail them (it has not the demo's code), so such a file is
    refused, in one line with exit code 2."""
    if not os.path.exists(db):
        return
    live = [w for w in _open_app(db, read_only=True).admin.workers() if w["alive"] is not False]
    if live:
        error = click.ClickException(
            f"a worker (pid {live[0]['pid']}) serves {db}, and its tasks and the demo's "
            f"would mix: run the demo on a file of its own, such as "
            f"`{_program()} demo demo.sqlite`")
        error.exit_code = 2
        raise error


@cli.command("demo")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("-n", "--tasks", "count", default=12, show_default=True, type=click.IntRange(1, 10000))
def _cmd_demo(db, count):
    """Start a 2-process worker on DB, queue some demo tasks and show them being done.
    A file that a worker serves is refused. When the demo ends, its tasks stay in DB (to
    look at) and their names are unregistered."""
    import shlex
    import subprocess
    import tempfile
    shown, db = shlex.quote(db), os.path.abspath(db)
    _refuse_a_served_database(db)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, f"{_DEMO_MODULE}.py"), "w") as f:
            f.write(_DEMO_TASKS % {"db": db})
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [tmp, os.path.dirname(os.path.abspath(__file__))]))
        command = [sys.executable, os.path.abspath(__file__), "worker", db, "-c", "2",
                   "-A", _DEMO_MODULE]
        click.echo("starting a worker with 2 processes on the demo's tasks (it stops when "
                   "the demo ends)")
        worker_process = subprocess.Popen(command, env=env)
        app = None
        try:
            sys.path.insert(0, tmp)
            tasks = importlib.import_module(_DEMO_MODULE)
            app = tasks.app
            results = [(f"add({i}, {i})", tasks.add.delay(i, i)) for i in range(count // 2)]
            results += [(f"slow_square({i})", tasks.slow_square.delay(i))
                        for i in range(count - count // 2 - 1)]
            results.append(("divide(1, 0)", tasks.divide.delay(1, 0)))
            click.echo(f"queued {len(results)} tasks; waiting for the worker...")
            for label, res in results:
                value = res.get(timeout=60, propagate=False)
                shown_value = f"{type(value).__name__}: {value}" if res.failed() else repr(value)
                click.echo(f"  {label:<18} -> {res.detailed_state:<8} {shown_value}")
        finally:
            worker_process.send_signal(signal.SIGTERM)
            worker_process.wait(timeout=60)
            if app is not None:     # nothing is left to wait for a name nobody knows
                for _, res in results:
                    if not res.ready():
                        res.revoke()
                with contextlib.suppress(UnknownTask):
                    app.admin.unregister([_DEMO_MODULE])
    program = _program()
    click.echo(f"done. The demo's tasks stay in {shown} (their names are unregistered); "
               f"look at them with:")
    for command in (f"status {shown}", f"tasks {shown} --state FAILURE",
                    f"result {shown} {results[0][1].id}"):
        click.echo(f"  $ {program} {command}")


def _app_start(app, argv=None):
    """Celery's app.start() and app.worker_main(): ``python myapp.py worker -l INFO``
    runs the CLI, a `worker` command serving this app's file and module; any other
    command is the CLI's own (``python myapp.py status jobs.sqlite``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "worker" and not any(a in ("-h", "--help") for a in args):
        args = ["worker", app.path, "-A", app._module, *args[1:]]
    try:
        cli.main(args, prog_name=os.path.basename(sys.argv[0] or "litequeue"))
    except SystemExit as done:
        if done.code:
            raise


LiteQueue.start = _app_start
LiteQueue.worker_main = _app_start


# ---------------------------------------------------------------------------
# Assets
# The demo's tasks and the dashboard's page, kept last as bottle keeps its
# templates; then the script's entry point.
# ---------------------------------------------------------------------------

_DEMO_TASKS = """
import random, time
from litequeue import LiteQueue

app = LiteQueue(%(db)r)

@app.task
def add(x, y):
    return x + y

@app.task
def slow_square(x):
    time.sleep(random.uniform(0.05, 0.3))
    return x * x

@app.task
def divide(x, y):
    return x / y
"""


# The dashboard's page: one HTML/CSS/JS asset, no external request. Every value the
# server sends is put in the page with textContent (data is never parsed as HTML), and
# the script and style run under a Content-Security-Policy nonce. {nonce} and {config}
# are filled in per request.
_DASHBOARD_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>litequeue</title>
<link rel="icon" href="data:,">
<style nonce="{nonce}">
:root{--fg:#1d2430;--mute:#667085;--line:#e4e7ec;--bg:#f7f8fa;--ok:#12805c;--bad:#c4320a;--warn:#b54708;--acc:#2e5aac}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:18px;align-items:center;padding:10px 20px;background:#fff;border-bottom:1px solid var(--line)}
header b{font-size:16px}nav a{margin-right:14px;color:var(--mute);text-decoration:none;font-weight:500}nav a.on{color:var(--acc)}
#live{margin-left:auto;color:var(--mute);font-size:12px}main{padding:16px 20px;max-width:1280px}
h2{font-size:15px;margin:18px 0 8px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:120px}
.card .n{font-size:22px;font-weight:600}.card .l{color:var(--mute);font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line);border-radius:8px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top;max-width:420px;overflow-wrap:break-word}th{white-space:nowrap}
th{font-size:12px;color:var(--mute);font-weight:600}
.st{font-weight:600;font-size:12px;white-space:nowrap}td:nth-child(2){white-space:nowrap}.SUCCESS{color:var(--ok)}.FAILURE,.REVOKED,.EXPIRED{color:var(--bad)}.RETRY,.STARTED{color:var(--warn)}
.ok{color:var(--ok)}.bad{color:var(--bad)}.muted{color:var(--mute);font-size:12px}
pre{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px;overflow:auto;max-height:360px;white-space:pre-wrap}
button{font:inherit;padding:4px 10px;border:1px solid var(--line);border-radius:6px;background:#fff;cursor:pointer;margin-right:6px}
button.danger{color:var(--bad);border-color:#f3b8a5}input,select{font:inherit;padding:4px 6px;border:1px solid var(--line);border-radius:6px;margin-right:6px}
.chart{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px;margin-bottom:10px}
.chart svg{display:block;overflow:visible}.legend{font-size:12px;color:var(--mute)}
.tick{font-size:11px;fill:#667085}.tick.here{font-weight:700;fill:#1d2430}.bar:hover rect:not([fill=transparent]){opacity:.75}.bar:hover rect[fill=transparent]{fill:#f2f4f7}
.keys .key{margin-right:14px;white-space:nowrap}.key .sw{display:inline-block;margin-right:4px;vertical-align:-1px}
.scroll{overflow-x:auto}th.sortable{cursor:pointer;user-select:none}th.sortable:hover{color:var(--fg)}.cardlink{text-decoration:none;color:inherit}.cardlink .card:hover{border-color:var(--acc)}
header{flex-wrap:wrap}#filters{display:flex;flex-wrap:wrap;gap:6px 0}
td.long{overflow-wrap:anywhere;min-width:9em;max-width:300px}td.when{white-space:nowrap}
@media (max-width:640px){.scroll table,.scroll tbody,.scroll tr,.scroll td{display:block}.scroll thead{display:none}
.scroll tr{border-bottom:1px solid var(--line);padding:6px 0}.scroll td{border:none;padding:2px 8px;max-width:none}
.scroll td[data-label]::before{content:attr(data-label) ": ";color:var(--mute)}.scroll td:empty{display:none}main{padding:10px}header{gap:6px 14px;padding:8px 10px}nav a{margin-right:10px}.card{min-width:96px;padding:8px 10px}.card .n{font-size:18px}progress{width:160px}}
a{color:var(--acc)}.why{padding:8px 10px;background:#fffaeb;border:1px solid #fedf89;border-radius:8px;margin:8px 0}
progress{width:320px;height:14px}.kv td:first-child{color:var(--mute);width:140px;white-space:nowrap;overflow-wrap:normal}
</style></head><body>
<header><b>litequeue</b><nav id="nav"></nav><span id="live">connecting</span></header>
<main id="main"></main>
<script type="application/json" id="config">{config}</script>
<script nonce="{nonce}">
"use strict";
const CFG = JSON.parse(document.getElementById("config").textContent);
const main = document.getElementById("main");
// The token: from the printed URL's fragment (#token=..., never sent to a server) or from
// /login, kept in this origin's storage, which a page on another port cannot read, and
// sent only in the Authorization header (a cookie would go to every port of the host).
const TOKEN_KEY = "litequeue-token";
// On loopback the token is used only under the dashboard's own host name (RANDOM.localhost,
// new at each start), never under 127.0.0.1 or localhost, where another user could have
// left a script while the port was theirs.
const OWN_SITE = !CFG.ownSite || /^[0-9a-f]{16}[.]localhost$/.test(location.hostname);
{ const given = new URLSearchParams(location.hash.slice(1)).get("token") || CFG.token;
  // The address without the token, and without any user:password in it (fetch refuses
  // relative URLs under such an address).
  const clean = location.origin + (location.pathname === "/login" ? "/" : location.pathname + location.search);
  if (given || location.hash || new URL(location.href).username) history.replaceState(null, "", clean);
  if (given && OWN_SITE) localStorage.setItem(TOKEN_KEY, given); }
class LoggedOut extends Error {}
function authorized(headers) {
  const token = OWN_SITE ? localStorage.getItem(TOKEN_KEY) : null;
  if (!token) throw new LoggedOut();
  return Object.assign({"Authorization": "Bearer " + token}, headers);
}
function checkAuth(r) { if (r.status === 401) throw new LoggedOut(); }
const SVG = "http://www.w3.org/2000/svg";
// Every value from the server is put in the page with textContent: data is never HTML.
function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
function svg(tag, attrs) { const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); return e; }
// A time in a schedule's own zone (ISO with its offset), as "2026-12-07 14:20:00".
function zoned(iso) { return iso ? String(iso).slice(0, 19).replace("T", " ") : ""; }
function when(t) { return t ? new Date(t * 1000).toLocaleString([], {hour12: false}) : ""; }
// A duration as an operator reads it: 4.0 ms, 12.3 s, 1 min 48 s, 3 h 2 min, 2 d 4 h.
function secs(s) {
  if (s === null || s === undefined || s === "" || isNaN(s)) return "";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const f = Math.floor, units = s < 3600 ? [[f(s / 60), "min"], [f(s % 60), "s"]] : s < 86400 ?
    [[f(s / 3600), "h"], [f(s % 3600 / 60), "min"]] : [[f(s / 86400), "d"], [f(s % 86400 / 3600), "h"]];
  return units.filter(([n], i) => i === 0 || n).map(([n, u]) => n + " " + u).join(" ");
}
function hhmm(t, seconds) { return new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, hour12: false}); }
function day(t) { return new Date(t * 1000).toLocaleDateString([], {month: "short", day: "numeric"}); }
function stateCell(s) { return el("td", {}, el("span", {class: "st " + s, text: s})); }
const seen = {};
let auto = false;      // true while the timer redraws: an unchanged answer redraws nothing
class Unchanged extends Error {}
async function getJSON(path) {
  const r = await fetch(path, {headers: authorized({"Accept": "application/json"})});
  checkAuth(r);
  const text = await r.text();
  const body = JSON.parse(text);
  if (!r.ok) throw new Error(body.error || r.statusText);
  const same = seen[path] === text;
  seen[path] = text; parsed[path] = body;
  if (same && auto) throw new Unchanged();
  return body;
}
const parsed = {};
// Several reads for one view: it is redrawn when any of them changed.
async function getMany(...paths) {
  const was = auto; auto = false;
  try {
    const before = paths.map(p => seen[p]);
    const out = await Promise.all(paths.map(p => getJSON(p)));
    if (was && paths.every((p, i) => before[i] === seen[p])) throw new Unchanged();
    return out;
  } finally { auto = was; }
}
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: authorized({
    "Content-Type": "application/json"}), body: JSON.stringify(body || {})});
  checkAuth(r);
  const out = await r.json();
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}
function link(path, text) {
  return el("a", {href: path, text: text, on: {click: e => { e.preventDefault(); go(path); }}});
}
const PAGES = [["/", "Overview"], ["/tasks", "Tasks"], ["/workflows", "Workflows"], ["/workers", "Workers"],
               ["/queues", "Queues"], ["/schedules", "Schedules"]];
function drawNav() {
  const nav = document.getElementById("nav"); nav.replaceChildren();
  const here = location.pathname;
  for (const [p, t] of PAGES) { const a = link(p, t);
    if (here === p || (p !== "/" && here.startsWith(p.slice(0, -1)))) a.className = "on";
    nav.append(a); }
}
// Charts are drawn at the width they are shown (text keeps its size on a phone), with a
// time axis, a value axis, a colour key and a <title> per bar or point (the hover value).
function chartWidth() { const m = getComputedStyle(main);      // main's content box, less the chart's padding
  return Math.max(260, main.clientWidth - parseFloat(m.paddingLeft) - parseFloat(m.paddingRight) - 20); }
function niceMax(v) { if (v <= 0) return 1; const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map(m => m * p).find(m => m >= v); }
function axes(s, w, h, L, B, t0, t1, max, fmtY, dated, seconds) {
  const ph = h - B - 6;
  for (const f of fmtY ? [0, 0.5, 1] : [0]) { const y = h - B - f * ph;
    s.append(svg("line", {x1: L, y1: y, x2: w, y2: y, stroke: f ? "#eef0f3" : "#c9ced6"}));
    if (!fmtY) continue;
    const label = svg("text", {x: L - 4, y: y + 4, "text-anchor": "end", class: "tick"}); label.textContent = fmtY(max * f); s.append(label); }
  const span = Math.max(1, t1 - t0), pw = w - L;
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const step = steps.find(st => pw / (span / st) >= (dated ? 78 : 54)) || 86400;
  const offset = new Date(t0 * 1000).getTimezoneOffset() * 60;      // ticks on local round times
  let lastDay = "";
  for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) {
    const x = L + (t - t0) / span * pw;
    s.append(svg("line", {x1: x, y1: h - B, x2: x, y2: h - B + 4, stroke: "#98a2b3"}));
    const d = day(t), text = svg("text", {x: x, y: h - 3, "text-anchor": "middle", class: "tick"});
    text.textContent = (dated && d !== lastDay ? d + " " : "") + hhmm(t, seconds); lastDay = d; s.append(text);
  }
}
function legend(series) {
  return el("div", {class: "legend keys"}, ...series.map(([k, color, label]) =>
    el("span", {class: "key"}, swatch(color), label)));
}
function swatch(color) {        // an SVG square: the page's policy refuses style attributes
  const s = svg("svg", {width: 10, height: 10, class: "sw"}); s.append(svg("rect", {width: 10, height: 10, rx: 2, fill: color})); return s;
}
function barChart(title, points, series, stepSecs, dated) {
  const box = el("div", {class: "chart"}, el("div", {class: "legend", text: title}));
  const w = chartWidth(), h = 150, L = 34, B = 18, ph = h - B - 6;
  const s = svg("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title});
  const max = niceMax(Math.max(0, ...points.map(p => series.reduce((a, [k]) => a + p[k], 0))));
  const t0 = points.length ? points[0].t : 0, t1 = t0 + points.length * stepSecs;
  axes(s, w, h, L, B, t0, t1, max, v => +v.toFixed(1), dated, false);
  const bw = (w - L) / Math.max(1, points.length);
  points.forEach((p, i) => { let y = h - B; const g = svg("g", {class: "bar"});
    const tip = svg("title", {}); tip.textContent = (dated ? day(p.t) + " " : "") + hhmm(p.t) + "–" + hhmm(p.t + stepSecs) + ": " +
      series.map(([k, c, label]) => label + " " + p[k]).join(", ");
    g.append(tip, svg("rect", {x: L + i * bw, y: 6, width: bw, height: ph, fill: "transparent"}));
    for (const [k, color] of series) { const bh = p[k] / max * ph;
      if (bh > 0) { g.append(svg("rect", {x: L + i * bw + 0.5, y: y - bh, width: Math.max(1, bw - 1), height: bh, fill: color})); y -= bh; } }
    s.append(g); });
  box.append(s, legend(series));
  return box;
}
function lineChart(title, points, stepSecs, label) {
  const box = el("div", {class: "chart"}, el("div", {class: "legend", text: title}));
  const w = chartWidth(), h = 150, L = 50, B = 18, ph = h - B - 6;
  const s = svg("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title});
  const max = niceMax(Math.max(0, ...points.map(p => p.v)));
  const t0 = points.length ? points[0].t : 0, t1 = t0 + points.length * stepSecs;
  axes(s, w, h, L, B, t0, t1, max, v => v ? secs(v) : "0", false, false);
  const x = i => L + (i + 0.5) * (w - L) / Math.max(1, points.length), y = v => h - B - v / max * ph;
  s.append(svg("polyline", {fill: "none", stroke: "#2e5aac", "stroke-width": 1.5,
    points: points.map((p, i) => `${x(i).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ")}));
  points.forEach((p, i) => { if (!p.n) return; const c = svg("circle", {cx: x(i), cy: y(p.v), r: 2.5, fill: "#2e5aac"});
    const tip = svg("title", {}); tip.textContent = hhmm(p.t) + ": " + label + " " + secs(p.v) + " over " + p.n + " run(s)"; c.append(tip); s.append(c); });
  box.append(s, legend([["v", "#2e5aac", label + " (points: minutes with runs)"]]));
  return box;
}
function table(headers, rows) {
  // Each cell carries its column's name: on a phone a row reads as a card of "name: value".
  const names = headers.map(h => h instanceof Node ? h.textContent : h);
  for (const r of rows) [...r.children].forEach((td, i) => { if (names[i]) td.setAttribute("data-label", names[i]); });
  return el("div", {class: "scroll"}, el("table", {}, el("thead", {}, el("tr", {}, ...headers.map(h => h instanceof Node ? h : el("th", {text: h})))),
            el("tbody", {}, ...rows)));
}
const SERIES = [["ok", "#12805c", "succeeded"], ["retry", "#e0a800", "retried"], ["bad", "#c4320a", "failed"]];
async function overview() {
  const d = await getJSON("/data/overview");
  const totals = {};
  for (const states of Object.values(d.counts)) for (const [s, n] of Object.entries(states)) totals[s] = (totals[s] || 0) + n;
  const hour = d.hour.map(([t, ok, bad, retry, rt]) => ({t, ok, bad, retry, v: rt, n: ok + bad + retry}));
  const dayPoints = d.day.map(g => ({t: g[0][0], ok: g.reduce((a, m) => a + m[1], 0), bad: g.reduce((a, m) => a + m[2], 0), retry: g.reduce((a, m) => a + m[3], 0)}));
  const sum = (xs, k) => xs.reduce((a, x) => a + x[k], 0);
  const card = (n, label, href, cls) => { const c = el("div", {class: "card"}, el("div", {class: "n " + (cls || ""), text: n}), el("div", {class: "l", text: label}));
    return href ? el("a", {class: "cardlink", href: href, on: {click: e => { e.preventDefault(); go(href); }}}, c) : c; };
  const cards = el("div", {class: "cards"},
    ...["PENDING", "SCHEDULED", "WAITING", "STARTED", "RETRY", "FAILURE"].map(s =>
      card(totals[s] || 0, s === "FAILURE" ? "failed (kept)" : s.toLowerCase(), "/tasks?state=" + s)),
    card(sum(hour, "ok"), "succeeded, last hour"),
    card(sum(hour, "bad"), "failed, last hour", null, sum(hour, "bad") ? "bad" : ""));
  const health = el("div", {class: "card", id: "health"},
    el("div", {class: "n " + (d.healthy ? "ok" : "bad"), text: d.healthy ? "healthy" : "unhealthy"}),
    ...d.health.map(c => el("div", {class: c.ok ? "l" : "l bad", text: (c.ok ? "✓ " : "✗ ") + c.name + ": " + c.detail})));
  const queues = Object.entries(d.counts).map(([q, s]) => el("tr", {}, el("td", {}, link("/tasks?queue=" + encodeURIComponent(q), q)),
    ...["PENDING", "SCHEDULED", "WAITING", "STARTED", "RETRY", "FAILURE"].map(k => el("td", {text: s[k] || 0})),
    el("td", {text: d.oldest[q] !== undefined ? secs(d.oldest[q]) : ""})));
  main.replaceChildren(el("h2", {text: "Now"}), cards, el("h2", {text: "Health"}), health,
    el("h2", {text: "Last hour, per minute"}),
    barChart("tasks finished per minute", hour, SERIES, 60, false),
    lineChart("mean run time per minute", hour, 60, "mean run time"),
    el("h2", {text: "Last day, per 20 minutes"}),
    barChart("tasks finished per 20 minutes", dayPoints, SERIES, 1200, true),
    el("h2", {text: "Queues"}), table(["queue", "pending", "scheduled", "waiting", "started", "retry", "failed", "oldest waiting"], queues));
}
// The task list's filters and sort live in the URL (/tasks?state=FAILURE&sort=-runtime):
// read on every draw, written with history.replaceState when changed.
const FILTERS = ["state", "queue", "name", "q", "sort"];
function query() { const p = new URLSearchParams(location.search); return Object.fromEntries(FILTERS.map(k => [k, p.get(k) || ""])); }
function setQuery(values) {
  const p = new URLSearchParams(Object.entries(values).filter(([k, v]) => v && FILTERS.includes(k)));
  history.replaceState(null, "", location.pathname + (p.toString() ? "?" + p : ""));
}
let pageBefore = [];
const COLUMNS = [["id", "id"], ["name", "name"], ["state", "state"], ["args", "args"], ["result", "result"], ["created", "queued"], ["runtime", "runtime"], ["worker", "worker"]];
function sortRows(tasks, sort) {
  if (!sort) return tasks;
  const key = sort.replace(/^-/, ""), dir = sort.startsWith("-") ? -1 : 1;
  const val = t => key === "result" ? (t.exception || (t.result === null ? "" : JSON.stringify(t.result))) : t[key];
  return [...tasks].sort((a, b) => { const x = val(a), y = val(b);
    if (x === y) return 0; if (x === null || x === undefined || x === "") return 1; if (y === null || y === undefined || y === "") return -1;
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir; });
}
async function tasksPage() {
  const f = query();
  const params = new URLSearchParams(Object.entries(f).filter(([k, v]) => v && k !== "sort"));
  if (pageBefore.length) params.set("before", pageBefore[pageBefore.length - 1]);
  const [states, d] = await getMany("/data/states", "/data/tasks?" + params);
  const change = () => { const v = {state: st.value, sort: f.sort}; ["queue", "name", "q"].forEach((k, i) => v[k] = inputs[i].value.trim()); pageBefore = []; setQuery(v); render(); };
  const st = el("select", {id: "f-state", on: {change: change}}, ...["", ...states, ...(f.state && !states.includes(f.state) ? [f.state] : [])].map(s => { const o = el("option", {value: s, text: s || "any state"}); if (s === f.state) o.selected = true; return o; }));
  const inputs = ["queue", "name", "q"].map(k => el("input", {id: "f-" + k, placeholder: k === "q" ? "search id, name or args" : k, value: f[k],
    on: {keydown: e => { if (e.key === "Enter") change(); }}}));
  const form = el("div", {id: "filters"}, st, ...inputs, el("button", {text: "Filter", on: {click: change}}),
    el("button", {text: "Clear", on: {click: () => { pageBefore = []; setQuery({}); render(); }}}));
  if (!CFG.readOnly) form.append(el("button", {class: "danger", text: "Retry all failed" , on: {click: async () => { const r = await post("/action/retry-failed", {name: f.name || null}); document.getElementById("live").textContent = "requeued " + r.requeued; render(); }}}));
  const rows = sortRows(d.tasks, f.sort).map(t => el("tr", {}, el("td", {}, link("/task/" + encodeURIComponent(t.id), t.id)), el("td", {text: t.name}), stateCell(t.state),
    el("td", {class: "long", text: t.args}), el("td", {class: "long", text: t.exception || (t.result === null ? "" : JSON.stringify(t.result))}), el("td", {text: when(t.created)}), el("td", {text: secs(t.runtime)}), el("td", {text: t.worker || ""})));
  const heads = COLUMNS.map(([key, label]) => { const on = f.sort.replace(/^-/, "") === key, down = f.sort === "-" + key;
    return el("th", {class: "sortable", "data-key": key, title: "sort by " + label, "aria-sort": on ? (down ? "descending" : "ascending") : "none",
      on: {click: () => { setQuery(Object.assign(query(), {sort: on && !down ? "-" + key : on ? "" : key})); render(); }}}, label + (on ? (down ? " ▼" : " ▲") : "")); });
  const pager = el("div", {}, pageBefore.length ? el("button", {text: "Newer", on: {click: () => { pageBefore.pop(); render(); }}}) : null,
    d.next ? el("button", {text: "Older", on: {click: () => { pageBefore.push(d.next); render(); }}}) : null,
    el("span", {class: "muted", text: d.tasks.length + " task(s) on this page" + (f.sort ? ", sorted on this page" : ", newest first")}));
  main.replaceChildren(el("h2", {text: "Tasks"}), form, el("p"), table(heads, rows), el("p"), pager);
}
// What an operator can do to a task depends on its state.
const WAITS = ["PENDING", "SCHEDULED", "WAITING", "RETRY"], ENDED = ["FAILURE", "REVOKED", "EXPIRED"], DONE = ["SUCCESS", ...ENDED];
function actionsFor(state) {
  if (WAITS.includes(state)) return [["Revoke", "revoke", ""]];
  if (ENDED.includes(state)) return [["Retry", "retry", ""]];
  if (state === "SUCCESS") return [];
  return [["Terminate", "terminate", "danger"]];        // STARTED or an update_state() state
}
function whyBox(t) {
  const box = el("div", {class: "why", id: "why"}, "Why it is not running: ");
  const at = t.parent_id ? t.why.indexOf(t.parent_id) : -1;
  if (at < 0) box.append(t.why);
  else box.append(t.why.slice(0, at), link("/task/" + encodeURIComponent(t.parent_id), t.parent_id), t.why.slice(at + t.parent_id.length));
  return box;
}
// A workflow's members as bars on one time axis: queued (light), running (its state's colour).
const COLORS = {SUCCESS: "#12805c", FAILURE: "#c4320a", REVOKED: "#c4320a", EXPIRED: "#c4320a", RETRY: "#e0a800", STARTED: "#e0a800",
  WAITING: "#d0d5dd", SCHEDULED: "#d0d5dd", PENDING: "#d0d5dd"};   // a workflow between its runs waits: not running
function timeline(flow, current) {
  const now = Date.now() / 1000, w = chartWidth(), L = Math.min(220, w * 0.38), row = 20, top = 6, B = 18;
  const ends = flow.flatMap(t => [t.created, t.started, t.finished]).filter(x => x), t0 = Math.min(...ends);
  const t1 = Math.max(t0 + 1, ...ends, flow.some(t => !t.finished) ? now : 0), span = t1 - t0;
  const h = top + flow.length * row + B, x = t => L + (t - t0) / span * (w - L - 6);
  const s = svg("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": "workflow timeline", id: "timeline"});
  axes(s, w - 6, h, L, B, t0, t1, 0, null, false, span < 600);
  const byId = Object.fromEntries(flow.map(t => [t.id, t]));
  flow.forEach((t, i) => { const y = top + i * row, g = svg("g", {class: "member", "data-id": t.id});
    const name = svg("text", {x: 4, y: y + 14, class: "tick" + (t.id === current ? " here" : "")});
    name.textContent = (t.id === current ? "▶ " : "") + t.name.split(".").pop() + " " + t.id.slice(-6);
    const a = document.createElementNS(SVG, "a"); a.setAttribute("href", "/task/" + encodeURIComponent(t.id)); a.append(name);
    a.addEventListener("click", e => { e.preventDefault(); go("/task/" + encodeURIComponent(t.id)); });
    const start = t.started || (t.finished ? t.finished : now), end = t.finished || now;
    // A step of a chain or a chord's body waits for the step before it, then is queued.
    const before = t.parent_id && byId[t.parent_id];
    const ready = before ? Math.min(start, Math.max(t.created, before.finished || start)) : t.created;
    const tip = svg("title", {}); tip.textContent = t.name + " " + t.id + " · " + t.state + "\nqueued " + when(t.created) +
      (before ? "\nready " + when(ready) + " (the step before it ended)" : "") +
      (t.started ? "\nstarted " + when(t.started) + " (queued " + secs(t.started - ready) + ")" : "") +
      (t.finished ? "\nended " + when(t.finished) + (t.started ? " (ran " + secs(t.finished - t.started) + ")" : "") : "");
    g.append(tip, a, svg("rect", {x: x(t.created), y: y + 9, width: Math.max(0, x(ready) - x(t.created)), height: 2, fill: "#98a2b3"}),
      svg("rect", {x: x(ready), y: y + 7, width: Math.max(1, x(start) - x(ready)), height: 6, fill: "#d0d5dd"}));
    if (t.started) g.append(svg("rect", {x: x(t.started), y: y + 3, width: Math.max(2, x(end) - x(t.started)), height: 14, rx: 2, fill: COLORS[t.state] || "#e0a800"}));
    s.append(g); });
  return el("div", {class: "chart"}, el("div", {class: "legend", text: "timeline of its workflow (" + flow.length + " tasks, " + secs(span) + ")"}), s,
    legend([["w", "#98a2b3", "waiting for the step before"], ["q", "#d0d5dd", "queued"], ["s", "#12805c", "ran, succeeded"], ["f", "#c4320a", "ran, failed or revoked"], ["r", "#e0a800", "running or retried"]]));
}
function stepsTimeline(steps) {
  // A workflow's steps in call order: each from its start to its end (or now), by state.
  const now = Date.now() / 1000, w = chartWidth(), L = Math.min(220, w * 0.38), row = 20, top = 6, B = 18;
  const ends = steps.flatMap(st => [st.started, st.finished, st.until]).filter(x => x), t0 = Math.min(...ends);
  const t1 = Math.max(t0 + 1, ...ends.filter(x => x <= now), steps.some(st => !st.finished) ? now : 0), span = t1 - t0;
  const h = top + steps.length * row + B, x = t => L + (Math.min(t, t1) - t0) / span * (w - L - 6);
  const s = svg("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": "workflow steps", id: "steps"});
  axes(s, w - 6, h, L, B, t0, t1, 0, null, false, span < 600);
  steps.forEach((st, i) => { const y = top + i * row, g = svg("g", {class: "step"});
    const name = svg("text", {x: 4, y: y + 14, class: "tick"}); name.textContent = st.index + " " + st.kind + " " + st.name.split(".").pop();
    const tip = svg("title", {}); tip.textContent = st.kind + " " + st.name + ": " + st.state + (st.outcome !== null ? " → " + JSON.stringify(st.outcome) : "") +
      "\nstarted " + when(st.started) + (st.finished ? "\nended " + when(st.finished) : "") + (st.until ? "\nuntil " + when(st.until) : "");
    const end = st.finished || now, open = !st.finished;
    g.append(name, tip, svg("rect", {x: x(st.started), y: y + 3, width: Math.max(2, x(end) - x(st.started)), height: 14, rx: 2,
      fill: open ? "#d0d5dd" : COLORS[st.state] || "#e0a800"}));
    s.append(g); });
  return el("div", {class: "chart"}, el("div", {class: "legend", text: "its steps (" + steps.length + ")"}), s,
    legend([["s", "#12805c", "ended, succeeded"], ["f", "#c4320a", "ended, failed"], ["o", "#d0d5dd", "running or waiting"]]));
}
async function taskPage(id) {
  const [t, flow] = await getMany("/data/task/" + encodeURIComponent(id), "/data/workflow/" + encodeURIComponent(id));
  const kv = (k, v) => el("tr", {}, el("td", {text: k}), v instanceof Node ? el("td", {}, v) : el("td", {text: v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v)}));
  const rel = ids => el("span", {}, ...ids.map(i => el("span", {}, link("/task/" + encodeURIComponent(i), i), " ")));
  const rows = [kv("name", t.name), kv("state", el("span", {class: "st " + t.state, text: t.state})), kv("queue", t.queue), kv("args", t.args), kv("kwargs", t.kwargs),
    kv("result", t.exception || t.result), kv("queued", when(t.created)), kv("started", when(t.started)), kv("finished", when(t.finished)), kv("runtime", secs(t.runtime)),
    kv("eta", when(t.eta)), kv("expires", when(t.expires)), kv("attempts", t.attempt), kv("retries", t.retries), kv("worker", t.worker ? t.worker + " (pid " + t.pid + ")" : ""),
    kv("parent", t.parent_id ? rel([t.parent_id]) : ""), kv("root", rel([t.root_id])), kv("group", t.group_id), kv("children", rel(t.children))];
  const parts = [el("h2", {text: "Task " + t.id})];
  if (t.why) parts.push(whyBox(t));
  if (t.progress && t.progress[1] && typeof t.progress[1].current === "number" && typeof t.progress[1].total === "number") {
    const p = t.progress[1]; parts.push(el("div", {}, el("span", {text: t.progress[0] + " "}), el("progress", {value: p.current, max: p.total}), el("span", {text: " " + p.current + " / " + p.total})));
  } else if (t.progress) parts.push(kv("progress", t.progress));
  if (!CFG.readOnly) {
    const act = (label, action, cls) => el("button", {class: cls, text: label, on: {click: async () => {
      try { const r = await post("/action/" + action + "/" + encodeURIComponent(t.id)); actResult = r.ok ? label + ": done" : label + ": not possible now"; } catch (e) { actResult = e.message; }
      render(); }}});
    const acts = actionsFor(t.state);
    parts.push(el("div", {id: "actions"}, ...acts.map(a => act(...a)), acts.length ? null : el("span", {class: "muted", text: "finished: nothing to do "}), el("span", {id: "act-result", text: actResult}),
      forked ? link("/task/" + encodeURIComponent(forked), forked) : null));
    if (t.steps && t.steps.length) parts.push(forkBox(t));
  }
  if (t.steps && t.steps.length) {
    parts.push(el("h2", {text: "Its steps"}), stepsTimeline(t.steps), table(["#", "state", "kind", "name", "task", "outcome", "started", "ended"],
      t.steps.map(st => el("tr", {}, el("td", {text: st.index}), el("td", {}, el("span", {class: "st " + st.state, text: st.state})), el("td", {text: st.kind}), el("td", {text: st.name}),
        el("td", {}, st.task_id ? link("/task/" + encodeURIComponent(st.task_id), st.task_id) : ""), el("td", {class: "long", text: st.outcome === null ? "" : typeof st.outcome === "string" ? st.outcome : JSON.stringify(st.outcome)}),
        el("td", {text: when(st.started)}), el("td", {text: st.finished ? when(st.finished) : st.until ? "until " + when(st.until) : ""})))));
  }
  if (flow.length > 1) parts.push(el("h2", {text: "Its workflow"}), timeline(flow, t.id));
  parts.push(el("p"), el("div", {class: "scroll"}, el("table", {class: "kv"}, el("tbody", {}, ...rows))));
  if (t.traceback) parts.push(el("h2", {text: "Traceback"}), el("pre", {text: t.traceback}));
  if (t.errors && t.errors.length) parts.push(el("h2", {text: "Errors of every attempt"}), table(["attempt", "time", "type", "message"], t.errors.map(e => el("tr", {}, el("td", {text: e.attempt}), el("td", {text: when(e.time)}), el("td", {text: e.type}), el("td", {text: e.message})))));
  main.replaceChildren(...parts);
}
let actResult = "";
async function workersPage() {
  const ws = await getJSON("/data/workers");
  const rows = [];
  for (const w of ws) {
    // The supervisor's own row holds the totals of its children that have ended.
    const done = w.children.reduce((a, c) => a + (c.processed || 0), w.processed || 0), bad = w.children.reduce((a, c) => a + (c.failed || 0), w.failed || 0);
    const stopping = w.stop_asked !== null && w.stop_asked !== undefined, prefork = !w.pool || w.pool === "prefork";
    const controls = CFG.readOnly || w.alive === false || stopping ? [] : [
      ...(prefork ? [workerButton(w, "+1", "pool/grow", "Add a process"), workerButton(w, "\u22121", "pool/shrink", "Remove a process (it finishes its task first)")] : []),
      workerButton(w, "Shut down", "shutdown", "Warm shutdown: running tasks finish, then the worker exits", "danger")];
    rows.push(el("tr", {}, el("td", {text: w.hostname + " " + w.id}), el("td", {text: w.pid}), el("td", {class: w.alive === false || stopping ? "bad" : "ok", text: w.alive === false ? "dead" : stopping ? "shutting down" : "alive"}),
      el("td", {text: w.queues}), el("td", {text: secs(Date.now() / 1000 - w.started_at)}), el("td", {text: done + " / " + bad}),
      el("td", {}, el("div", {text: w.children.length + " process(es)" + (w.pool ? " \u00b7 " + w.pool : "") + (Number.isInteger(w.wanted) && w.wanted !== w.children.length ? ", " + w.wanted + " asked" : "")}), ...controls)));
    for (const c of w.children) rows.push(el("tr", {}, el("td", {text: "  └ " + c.id}), el("td", {text: c.pid}), el("td", {text: ""}), el("td", {text: ""}), el("td", {text: secs(Date.now() / 1000 - c.started_at)}), el("td", {text: (c.processed || 0) + " / " + (c.failed || 0)}),
      el("td", {}, ...(c.running.length ? c.running.map(([id, name]) => el("div", {}, link("/task/" + encodeURIComponent(id), name + " " + id))) : ["idle"]),
        ...(c.reserved && c.reserved.length ? [el("div", {class: "muted", text: c.reserved.length + " reserved (claimed, not begun)"})] : []))));
  }
  main.replaceChildren(el("h2", {text: "Workers"}), table(["worker", "pid", "state", "queues", "up", "processed / failed", "running"], rows), el("p", {id: "worker-result", class: "muted", text: workerResult}));
}
let workerResult = "";
function workerButton(w, label, action, title, cls) {
  return el("button", {class: cls, text: label, title: title, on: {click: async () => {
    if (action === "shutdown" && !confirm("Shut down worker " + w.hostname + " " + w.id + "?")) return;
    try { const r = await post("/api/worker/" + action + "/" + encodeURIComponent(w.id)); workerResult = r.message; } catch (e) { workerResult = e.message; }
    render(); }}});
}
async function queuesPage() {
  const [qs, limits, bounds] = await getMany("/data/queues", "/data/rate-limits", "/data/concurrency-limits");
  const rows = qs.map(q => el("tr", {}, el("td", {}, link("/tasks?queue=" + encodeURIComponent(q.name), q.name), q.paused ? " (paused)" : ""), el("td", {text: q.counts.PENDING || 0}), el("td", {text: q.counts.SCHEDULED || 0}), el("td", {text: q.counts.STARTED || 0}),
    el("td", {text: q.oldest_age === null ? "" : secs(q.oldest_age)}), el("td", {text: q.last_hour[0] + " / " + q.last_hour[1]}), el("td", {class: q.processes ? "" : "bad", text: q.processes}),
    el("td", {}, CFG.readOnly ? null : el("button", {text: q.paused ? "Resume" : "Pause", on: {click: async () => { await post("/action/" + (q.paused ? "resume/" : "pause/") + encodeURIComponent(q.name)); render(); }}}),
      CFG.readOnly ? null : el("button", {class: "danger", text: "Purge", on: {click: async () => { if (confirm("Delete every waiting task of " + q.name + "?")) { await post("/action/purge/" + encodeURIComponent(q.name)); render(); } }}}))));
  const limitRows = limits.map(l => el("tr", {}, el("td", {}, link("/tasks?name=" + encodeURIComponent(l.name), l.name)), el("td", {text: l.rate}), el("td", {text: secs(l.interval)}),
    el("td", {}, CFG.readOnly ? null : el("button", {text: "Remove", on: {click: () => setLimit(l.name, "0")}}))));
  const parts = [el("h2", {text: "Queues"}), table(["queue", "pending", "scheduled", "running", "oldest waiting", "done / failed, last hour", "worker processes", ""], rows),
    el("h2", {text: "Rate limits (for every worker on this file)"}), limitRows.length ? table(["task", "rate", "between starts", ""], limitRows) : el("p", {class: "muted", text: "no task name is rate-limited"})];
  if (!CFG.readOnly) { const n = el("input", {id: "rl-name", placeholder: "task name"}), r = el("input", {id: "rl-rate", placeholder: "10/s, 100/m, 0 = none", size: 16});
    parts.push(el("p", {}, n, r, el("button", {id: "rl-set", text: "Set rate limit", on: {click: () => setLimit(n.value.trim(), r.value.trim())}}), el("span", {id: "rl-result", class: "muted", text: limitResult}),
      el("div", {class: "muted", text: "lasts until a worker or producer that defines the task registers it again with its own rate_limit"}))); }
  const boundRows = [...bounds.queues.map(q => el("tr", {}, el("td", {text: "queue " + q.queue}), el("td", {text: q.max}), el("td", {text: ""}), el("td", {text: q.running}))),
    ...bounds.tasks.map(b => el("tr", {}, el("td", {}, link("/tasks?name=" + encodeURIComponent(b.name), b.name)), el("td", {text: b.max === null ? "" : b.max}), el("td", {text: b.per_key === null ? "" : b.per_key}), el("td", {text: ""})))];
  parts.push(el("h2", {text: "Concurrency limits (for every worker on this file)"}),
    boundRows.length ? table(["task or queue", "at once", "per key", "running"], boundRows) : el("p", {class: "muted", text: "no task or queue has a concurrency limit: concurrency= on a task, queue_concurrency in the settings"}));
  main.replaceChildren(...parts);
}
let limitResult = "";
async function setLimit(name, rate) {
  try { const r = await post("/api/task/rate-limit/" + encodeURIComponent(name), {ratelimit: rate}); limitResult = " " + r.message; } catch (e) { limitResult = " " + e.message; }
  render();
}
async function schedulesPage() {
  const ss = await getJSON("/data/schedules");
  const act = (s, label, action) => el("button", {text: label, on: {click: async () => {
    try { const r = await post("/action/schedule/" + action + "/" + encodeURIComponent(s.name)); scheduleResult = label + " " + s.name + (r.task ? ": queued " + r.task : r.ok ? ": done" : ": no change"); } catch (e) { scheduleResult = e.message; }
    render(); }}});
  const rows = ss.map(s => el("tr", {}, el("td", {text: s.name}), el("td", {}, link("/tasks?name=" + encodeURIComponent(s.task), s.task)), el("td", {class: "when", text: s.schedule}), el("td", {text: s.tz}), el("td", {class: "when", text: zoned(s.last_fire) || "never"}),
    el("td", {class: "when"}, ...(s.off ? [el("span", {class: "bad", text: "disabled"})] : s.error ? [el("span", {class: "bad", text: s.error})] : s.next.map(n => el("div", {text: zoned(n.at) + (n.dst_change ? "  (UTC offset changes)" : "")})))), el("td", {text: s.fires}),
    el("td", {}, ...(CFG.readOnly ? [] : [act(s, "Run now", "run"), s.error ? act(s, "Enable", "enable") : act(s, "Disable", "disable")]))));
  main.replaceChildren(el("h2", {text: "Periodic tasks"}), table(["name", "task", "schedule", "zone", "last fire", "next fires", "fires", ""], rows), el("p", {id: "sched-result", class: "muted", text: scheduleResult}));
}
let scheduleResult = "";
async function workflowsPage() {
  const state = new URLSearchParams(location.search).get("state") || "";
  const ws = await getJSON("/data/workflows" + (state ? "?state=" + encodeURIComponent(state) : ""));
  const pick = el("select", {id: "wf-state", on: {change: e => go("/workflows" + (e.target.value ? "?state=" + e.target.value : ""))}},
    ...["", "WAITING", "SCHEDULED", "PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"].map(v => el("option", {value: v, text: v || "every state"})));
  pick.value = state;
  const rows = ws.map(w => el("tr", {}, el("td", {}, link("/task/" + encodeURIComponent(w.id), w.id)), el("td", {text: w.name}), el("td", {}, el("span", {class: "st " + w.state, text: w.state})),
    el("td", {text: w.steps}), el("td", {class: "long", text: w.waiting || ""}), el("td", {text: when(w.created)})));
  main.replaceChildren(el("h2", {text: "Durable workflows"}), el("p", {}, pick, el("span", {class: "muted", text: " newest first; open one for its steps, to cancel, resume or fork it"})),
    rows.length ? table(["workflow", "name", "state", "steps", "waiting for", "queued"], rows) : el("p", {class: "muted", text: "no workflow" + (state ? " in state " + state : "")}));
}
function forkBox(t) {
  // A new run of this workflow that keeps its steps before the one picked and runs the rest again.
  const pick = el("select", {id: "fork-from"}, ...t.steps.map(st => el("option", {value: st.index, text: "step " + st.index + " (" + st.kind + " " + st.name.split(".").pop() + ")"})));
  return el("div", {id: "fork"}, el("span", {text: "Fork a new run from "}), pick, el("button", {id: "fork-go", text: "Fork", on: {click: async () => {
    try { const r = await post("/action/fork/" + encodeURIComponent(t.id), {from: +pick.value}); actResult = "forked: "; forked = r.task; } catch (e) { actResult = e.message; forked = null; }
    render(); }}}), el("span", {class: "muted", text: " (the steps before it are kept, the rest run again)"}));
}
let forked = null;
async function render(timer) {
  auto = timer === true;
  if (!auto) for (const k of Object.keys(seen)) delete seen[k];
  drawNav();
  const p = location.pathname;
  try {
    if (p === "/") await overview();
    else if (p === "/tasks") await tasksPage();
    else if (p.startsWith("/task/")) await taskPage(decodeURIComponent(p.slice(6)));
    else if (p === "/workers") await workersPage();
    else if (p === "/queues") await queuesPage();
    else if (p === "/schedules") await schedulesPage();
    else if (p === "/workflows") await workflowsPage();
    document.getElementById("live").textContent = "live · " + clock();
  } catch (e) {
    if (e instanceof Unchanged) document.getElementById("live").textContent = "live · " + clock();
    else if (e instanceof LoggedOut) loggedOut();
    else document.getElementById("live").textContent = "error: " + e.message;
  } finally { auto = false; }
}
function clock() { return new Date().toLocaleTimeString([], {hour12: false, timeZoneName: "short"}); }
function loggedOut() {
  if (OWN_SITE) localStorage.removeItem(TOKEN_KEY);
  document.getElementById("live").textContent = "not logged in";
  main.replaceChildren(...[el("h2", {text: "This dashboard needs its token"}),
    el("p", {text: "Open the address the dashboard printed when it started: http://RANDOM.localhost:" + (location.port || "80") + "/#token=... " +
      "(the token is also in the database's side directory, in dashboard-" + (location.port || "80") + ".token, readable by its user only)."}),
    OWN_SITE ? null : el("p", {text: "On this machine the page takes the token only under the host name the dashboard printed, " +
      "new at each start: no other user can have left a script at that address."}),
    CFG.auth && OWN_SITE ? el("p", {}, "Or ", el("a", {href: "/login", text: "log in with the password"}), ".") : null].filter(Boolean));
}
function go(path) { actResult = ""; forked = null; history.pushState(null, "", path); render(); }
window.addEventListener("popstate", render);
let busy = false;
// Live: the current view is read again every second, except while the user types in it.
setInterval(async () => { if (busy || (document.activeElement && ["INPUT", "SELECT"].includes(document.activeElement.tagName))) return;
  busy = true; try { await render(true); } finally { busy = false; } }, 1000);
render();
</script></body></html>
"""

if _RUN_AS_SCRIPT:
    sys.exit(cli())
