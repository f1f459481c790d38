"""What the API accepts and what it shows: names, ids and queues have a bound at every
entry point; a huge value another client wrote is clipped in every log line and command
output; every error a user can meet is a LitequeueError that says what to do."""

import logging

import apsw
import msgpack
import pytest

import litequeue
from litequeue import ConfigurationError, LitequeueError

from .helpers import lq_here, sql

HUGE = "n" * 10_000_000          # 10 MB
ARGV = "n" * 100_000             # the most one argv string may hold is 128 KiB
SHORT = 4096                     # longest line a command or a log may show of it


def refused(call, *args, **kwargs):
    with pytest.raises(ConfigurationError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500 and "255" in message, message[:600]
    return message


class TestBoundsAtTheAPI:

    def test_every_producer_refuses_a_huge_name_id_or_queue(self, project):
        app, add = project.app, project.app.tasks["tasks.add"]
        refused(add.apply_async, (1, 2), task_id=HUGE)
        refused(add.apply_async, (1, 2), queue=HUGE)
        refused(app.send_task, HUGE, (1, 2))
        refused(app.send_task, "tasks.add", (1, 2), queue=HUGE)
        refused(app.send_task, "tasks.add", (1, 2), task_id=HUGE)
        refused(app.signature, HUGE)
        refused(litequeue.signature, HUGE)
        refused(app.task(name=HUGE), lambda: None)
        refused(app.task(queue=HUGE), lambda: None)
        refused(add.s(1, 2).apply_async, task_id=HUGE)
        # At the limit, accepted; and that is the only row.
        assert add.apply_async((1, 2), task_id="i" * 255, queue="q" * 255).id == "i" * 255
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    def test_the_cli_call_refuses_them_with_one_line(self, project):
        project.delay("add", 1, 1)             # the file and the registry exist
        for args in ([ARGV], ["tasks.add", "--queue", ARGV], ["tasks.add", "--id", ARGV]):
            done = lq_here("call", project.db, *args, cwd=project.dir)
            assert done.returncode == 1 and "255" in done.stderr, done.stderr[:600]
            assert len(done.stderr) < 600 and "Traceback" not in done.stderr
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]

    @pytest.mark.worker
    def test_the_flower_api_refuses_them(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project)
        for path, body in ((f"/api/task/async-apply/{ARGV[:60_000]}", {}),
                           ("/api/task/async-apply/tasks.add", {"queue": ARGV}),
                           ("/api/task/async-apply/tasks.add", {"task_id": ARGV})):
            status, _, text = d.request(path, "POST", body)
            assert status in (400, 404, 414) and len(text) < 2000, (status, text[:600])
        assert sql(project.db, "SELECT count(*) FROM tasks") == [(1,)]


class TestErrorsAUserMeets:

    def test_a_read_only_connection_says_so(self, project):
        result = project.delay("add", 1, 1)
        app = project.app
        app._storage().close()
        app._local.storage = litequeue._Storage(project.db, read_only=True)
        assert result.state == "PENDING"
        with pytest.raises(litequeue.ReadOnlyDatabase, match="read-only.*owner"):
            project.delay("add", 1, 2)
        with pytest.raises(litequeue.ReadOnlyDatabase):
            app.admin.pause("default")

    def test_a_planted_wal_link_is_named(self, tmp_path):
        (tmp_path / "jobs.sqlite-wal").symlink_to(tmp_path / "elsewhere")
        app = litequeue.LiteQueue(str(tmp_path / "jobs.sqlite"))
        with pytest.raises(litequeue.DatabaseError) as info:
            app.send_task("x", ())
        assert f"{tmp_path / 'jobs.sqlite-wal'} is a link where litequeue expects its WAL " \
               f"file" in str(info.value)

    @pytest.mark.parametrize("blob", [b"\xc1", b"\x01\x02", b"", "text"])
    def test_a_corrupt_result_says_why(self, blob):
        with pytest.raises(litequeue.CorruptResult) as info:
            litequeue._unpack_stored(blob, "result", "some-id")
        reason = str(info.value).split("cannot be decoded: ", 1)[1]
        assert reason.split(";")[0].strip(), str(info.value)
        if blob:
            history = litequeue._history(blob)
            assert history[0]["message"].startswith("earlier error history could not be "
                                                    "decoded: ") and \
                len(history[0]["message"]) > 50, history

    def test_wrong_types_are_litequeue_errors(self, project):
        add = project.app.tasks["tasks.add"]
        for options in ({"queue": object()}, {"task_id": 12}, {"priority": "high"},
                        {"countdown": "soon"}):
            with pytest.raises(LitequeueError) as info:
                add.apply_async((1, 2), **options)
            assert "must be" in str(info.value)
        with pytest.raises(TypeError):             # still what Python's own check raises
            add.apply_async((1, 2), queue=object())


def foreign_rows(db):
    """A tasks row with a 10 MB name, one with a 10 MB queue and one with a 10 MB id,
    written by another client."""
    payload = msgpack.packb({"args": [], "kwargs": {}})
    conn = apsw.Connection(str(db))
    try:
        conn.set_busy_timeout(30_000)
        for task_id, name, queue in (("huge-name", HUGE, "default"),
                                     ("huge-queue", "tasks.add", HUGE),
                                     (HUGE, "tasks.add", "default")):
            conn.execute("INSERT INTO tasks (id, name, queue, priority, state, payload, "
                         "created_at) VALUES (?, ?, ?, 0, 'PENDING', ?, 0)",
                         (task_id, name, queue, payload))
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_huge_foreign_values_are_clipped_everywhere(project, here, caplog):
    caplog.set_level(logging.INFO, logger="litequeue")
    project.delay("add", 1, 1).id
    foreign_rows(project.db)
    w = here(project)
    w.work()                                   # a worker child's steps, in this process
    assert project.state("huge-name") == "FAILURE"
    still = project.delay("add", 2, 3)
    assert w.work() == 1 and still.get(timeout=30) == 5            # the worker still runs
    outputs = {}
    for command in (["health"], ["health", "--json"], ["result", "huge-name"],
                    ["result", "huge-name", "--json"], ["status"], ["tasks"],
                    ["tasks", "--json"], ["inspect", "registered"]):
        done = lq_here(command[0], project.db, *command[1:], cwd=project.dir)
        outputs[" ".join(command)] = done.stdout + done.stderr
    outputs["worker log"] = caplog.text
    assert "Task tasks.add[nnnn" in caplog.text          # the huge id's run was logged
    too_long = {where: max(map(len, text.splitlines() or [""]))
                for where, text in outputs.items()}
    assert {where: n for where, n in too_long.items() if n >= SHORT} == {}
