"""A chords or chord_slots row that litequeue did not write (a foreign UPDATE) sets its
chord aside: the body fails with a reason naming the bad column, while the workers'
children live on, the members keep the outcome they ran to, and rows that merely ran
beside them are not charged."""

import msgpack
import pytest

import litequeue
from litequeue import FAILURE, SUCCESS, chord

from .helpers import sql, sql_write, wait_until

UNRELATED = 20     # plain add() rows queued beside the chord, all innocent


def _queue_chord_and_adds(project):
    """With no worker yet: chord([record(1), record(2)])(record()) and UNRELATED adds.
    Returns (chord id, body id, member ids, add ids)."""
    record = project.app.tasks["tasks.record"]
    body = chord([record.s(1), record.s(2)])(record.s())
    (chord_id, body_id), = sql(project.db, "SELECT id, body FROM chords")
    assert body_id == body.id
    members = [i for (i,) in sql(project.db, "SELECT id FROM tasks WHERE group_id = ? "
                                             "ORDER BY group_index", chord_id)]
    adds = [project.delay("add", i, i).id for i in range(UNRELATED)]
    return chord_id, body_id, members, adds


def _ledger_runs(project):
    """{task id: times record() ran it}, from every process's ledger."""
    runs = {}
    for ledger in project.marks.glob("ledger.*"):
        for line in ledger.read_text().splitlines():
            task_id = line.split()[0]
            runs[task_id] = runs.get(task_id, 0) + 1
    return runs


def _error_message(project, task_id):
    return msgpack.unpackb(project.row(task_id)["result"], raw=False)["message"]


# (the foreign write, with {chord} for the chord's id; what the body's reason must say)
HOSTILE = {
    "size text": ("UPDATE chords SET size = 'many'", "size is 'many', not a whole number"),
    "size blob": ("UPDATE chords SET size = X'01'", "size is b'\\x01', not a whole number"),
    "size empty": ("UPDATE chords SET size = ''", "size is '', not a whole number"),
    "size zero": ("UPDATE chords SET size = 0", "size is 0, not a count"),
    "size negative": ("UPDATE chords SET size = -1", "size is -1, not a count"),
    "size real": ("UPDATE chords SET size = 2.5", "size is 2.5, not a whole number"),
    "done text": ("UPDATE chords SET done = 'x'", "done is 'x', not a whole number"),
    "fired text": ("UPDATE chords SET fired = 'no'", "fired is 'no', not 0 or 1"),
    # Member 0 counted already, its slot holding text: member 1 completes the chord.
    "slot text": ("UPDATE chords SET done = 1; INSERT INTO chord_slots (chord, idx, result) "
                  "VALUES ('{chord}', 0, 'text')",
                  "slot 0 has result 'text', not msgpack bytes"),
}


def assert_only_the_body_failed(project, chord_id, body_id, members, adds, reason):
    """The unrelated adds and the members succeeded, each member ran once, and the body
    ended FAILURE saying which chord row and why, without running; the chord is fired
    and its slots gone."""
    assert [project.state(i) for i in adds] == [SUCCESS] * UNRELATED
    assert [project.state(i) for i in members] == [SUCCESS, SUCCESS]
    assert project.state(body_id) == FAILURE
    message = _error_message(project, body_id)
    assert message.startswith(f"chord row {chord_id}: ") and reason in message, message
    assert sql(project.db, "SELECT fired FROM chords")[0][0] == 1
    assert sql(project.db, "SELECT count(*) FROM chord_slots")[0][0] == 0
    # Each member ran once, and the body never ran.
    runs = _ledger_runs(project)
    assert [runs.get(i) for i in members] == [1, 1] and body_id not in runs


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_lying_chord_row_fails_its_body_and_spares_the_rest(project, here, case):
    """A worker child's steps, run in this process, meet the lying row: nothing escapes
    them, and the rows end as the test below has them end with two real children."""
    write, reason = HOSTILE[case]
    chord_id, body_id, members, adds = _queue_chord_and_adds(project)
    sql_write(project.db, *write.format(chord=chord_id).split("; "))
    # The members and the adds ran; the body was failed without running.
    assert here(project).work() == len(members) + UNRELATED

    assert_only_the_body_failed(project, chord_id, body_id, members, adds, reason)


@pytest.mark.worker
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_lying_chord_row_fails_its_body_and_kills_no_child(project, workers, case):
    write, reason = HOSTILE[case]
    chord_id, body_id, members, adds = _queue_chord_and_adds(project)
    sql_write(project.db, *write.format(chord=chord_id).split("; "))
    worker = workers.start(project, concurrency=2)
    pids = sorted(c["pid"] for c in worker.live_children())

    every = [*members, *adds, body_id]
    wait_until(lambda: all(project.state(i) in (SUCCESS, FAILURE) for i in every), 30,
               lambda: f"every row to end: {[(i, project.state(i)) for i in every]}\n"
                       f"{worker.log_text()}")
    assert_only_the_body_failed(project, chord_id, body_id, members, adds, reason)
    # No child died: the same two processes are still there.
    assert sorted(c["pid"] for c in worker.live_children()) == pids
    assert "died" not in worker.log_text()


def test_an_unforeseen_error_in_a_chord_part_is_undone_and_sets_the_chord_aside(
        project, monkeypatch):
    """What no type check foresaw (here the body's input cannot be built) is rolled back
    to the savepoint; the member's own end stays, and the chord is set aside."""
    chord_id, body_id, members, _ = _queue_chord_and_adds(project)
    sql_write(project.db, "UPDATE chords SET done = 1",
              f"INSERT INTO chord_slots VALUES ('{chord_id}', 0, X'01')")

    def broken(blobs):
        raise RuntimeError("cannot build the input")
    monkeypatch.setattr(litequeue, "_msgpack_array", broken)
    storage = litequeue._Storage(project.db, create=False)
    try:
        follow = litequeue._FollowUps()
        with storage.write() as conn:
            conn.execute("UPDATE tasks SET state = 'SUCCESS' WHERE id = ?", (members[1],))
            storage._settle(conn, [(members[1], SUCCESS, b"\x02", None)], 1.0, follow)
    finally:
        storage.close()
    assert project.state(members[1]) == SUCCESS
    assert project.state(body_id) == FAILURE
    assert _error_message(project, body_id) == (
        f"chord row {chord_id}: RuntimeError: cannot build the input")
    assert follow.ended == [body_id] and follow.woken == 0
    assert sql(project.db, "SELECT fired FROM chords")[0][0] == 1
    assert sql(project.db, "SELECT count(*) FROM chord_slots")[0][0] == 0
