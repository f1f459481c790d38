"""Canvas: chains, groups, chords, links and errbacks, progress, hooks and signals, and
SIGKILL in the middle of workflows.
"""

import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import litequeue
from litequeue import (
    FAILURE, PENDING, RETRY, REVOKED, SUCCESS, UNKNOWN, ConfigurationError, GroupResult, LiteQueue,
    TaskNotFound, group,
)

from .helpers import (
    LITEQUEUE_PY, CanvasProject, _suppress_lookup, chaos_kill, lq_here, sql,
    sql_write, wait_until,
)

pytestmark = pytest.mark.timeout(120)


def adder_app(path):
    """(db path, a producer app on it, its add task): the in-process canvas tests' setup."""
    db = str(path)
    app = LiteQueue(db)

    @app.task
    def add(x, y):
        return x + y

    return db, app, add


@pytest.fixture
def canvas(tmp_path):
    return CanvasProject(tmp_path / "canvas")


def start_canvas_worker(workers, canvas, concurrency=2):
    return workers.start(canvas, concurrency=concurrency, app=("canvas_tasks",))


@pytest.fixture
def canvas_here(canvas, here):
    """canvas_tasks.py's worker in this process, not started (work() or start())."""
    return here(canvas, ("canvas_tasks",))


class TestCanvas:

    def test_chain_passes_each_result_on_and_parent_leads_back(self, canvas_here):
        out = canvas_here.start().client('''
            r = (add.s(1, 2) | sub.s(10) | mul.s(10)).apply_async()
            c = chain(add.s(1, 1), add.si(5, 5), sub.s(1))()
            p = r.parent.parent
            print(json.dumps({
                "values": [r.get(timeout=30), r.parent.get(), p.get(), c.get(timeout=30)],
                "ids": [r.parent_id == r.parent.id, r.root_id == p.id, p.parent is None,
                        p.root_id == p.id], "last_id": r.id, "first_id": p.id,
                "children": [x.id for x in p.children] == [r.parent.id],
                "args": [p.args, r.parent.args, r.args, r.name]}))
        ''')
        # Celery's rule: a parent's result goes first: sub(3, 10) = -7, then mul(-7, 10).
        assert out["values"] == [-70, -7, 3, 9]
        assert all(out["ids"]) and out["children"]
        assert out["args"] == [[1, 2], [3, 10], [-7, 10], "canvas_tasks.mul"]

    @pytest.mark.worker
    def test_a_chains_relations_are_read_back_in_another_process(self, canvas, canvas_here):
        out = canvas_here.client('''
            r = (add.s(1, 2) | sub.s(10) | mul.s(10)).apply_async()
            print(json.dumps({"last_id": r.id, "first_id": r.parent.parent.id}))
        ''')
        assert canvas_here.work() == 3
        # Any process reads the relations back from the database.
        again = canvas.client(f'''
            r = app.AsyncResult({out["last_id"]!r})
            print(json.dumps([r.parent.parent.id, r.root_id, r.state]))
        ''')
        assert again == [out["first_id"], out["first_id"], SUCCESS]

    def test_partial_arguments_go_first_as_in_celery(self, canvas_here):
        out = canvas_here.start().client('''
            s = sub.s(2)
            print(json.dumps([s.delay(10).get(timeout=30), s.clone((20,)).apply_async().get(
                timeout=30), sub.si(1, 2).delay(99).get(timeout=30), s.apply((5,)).get(),
                s(7), repr(s), signature("canvas_tasks.sub", (9, 4)).delay().get(timeout=30)]))
        ''')
        assert out == [8, 18, -1, 3, 5, "canvas_tasks.sub(2)", 5]

    def test_links_and_errbacks_are_queued_by_the_commit_that_ends_the_parent(
            self, canvas, canvas_here):
        out = canvas_here.start().client('''
            cb = add.s(100).set(task_id=str(uuid.uuid4()))
            eb = errback3.s().set(task_id=str(uuid.uuid4()))
            ok = add.apply_async((1, 2), link=[cb, mul.s(2)], link_error=eb)
            ok_children = lambda: sorted(c.name for c in ok.children)
            link_value = app.AsyncResult(cb.id).get(timeout=30)
            bad = fail.apply_async(("broken",), link=add.s(1), link_error=[errback3.s(),
                                                                        errback1.s()])
            bad.get(timeout=30, propagate=False)
            kids = bad.children
            print(json.dumps({
                "link": link_value, "ok": ok.get(timeout=30),
                "ok_children": ok_children(),
                "dropped_errback": app.AsyncResult(eb.id).detailed_state,
                "bad_id": bad.id,
                "bad_children": sorted([c.name, c.get(timeout=30, propagate=False)
                                        if c.name != "canvas_tasks.add" else c.state]
                                       for c in kids)}))
        ''')
        assert out["link"] == 103 and out["ok"] == 3
        assert out["ok_children"] == ["canvas_tasks.add", "canvas_tasks.mul"]
        # An errback of a task that succeeded never runs: its row is gone.
        assert out["dropped_errback"] == UNKNOWN
        bad = out["bad_id"]
        # The link of a failed task ends as it did; both errback forms ran, once each.
        assert out["bad_children"] == [["canvas_tasks.add", FAILURE],
                                       ["canvas_tasks.errback1", f"errback1 {bad}"],
                                       ["canvas_tasks.errback3", f"errback3 {bad}"]]
        assert sorted(canvas.logged("errbacks")) == sorted([
            [bad, "canvas_tasks.fail", ["broken"], "ValueError", "broken", True], [bad]])

    def test_a_failure_ends_the_rest_of_the_chain_and_its_errback_runs_once(
            self, canvas, canvas_here):
        out = canvas_here.start().client('''
            r = (add.s(1, 1) | fail.s() | add.s(1) | add.s(1)).on_error(errback3.s()).delay()
            try:
                r.get(timeout=30)
            except ValueError as exc:
                raised = [type(exc).__name__, str(exc)]
            failing = r.parent.parent
            states = [r.state, r.parent.state, failing.state, failing.parent.state]
            # As in Celery, the chain's errback follows each step and the failing one
            # queued it: it is that step's child; the steps it took down have none.
            errbacks = lambda res: [c for c in res.children if c.name.endswith("errback3")]
            (eb,) = errbacks(failing)
            print(json.dumps({"raised": raised, "states": states, "failing": failing.id,
                              "errback": eb.get(timeout=30),
                              "taken_down": [len(errbacks(r)), len(errbacks(r.parent))]}))
        ''')
        assert out["raised"] == ["ValueError", "2"]
        assert out["states"] == [FAILURE, FAILURE, FAILURE, SUCCESS]
        assert out["errback"] == f"errback3 {out['failing']}" and out["taken_down"] == [0, 0]
        assert canvas.logged("errbacks") == [
            [out["failing"], "canvas_tasks.fail", [2], "ValueError", "2", True]]

    def test_only_the_failing_steps_own_errbacks_run_not_those_of_the_steps_after_it(
            self, canvas, canvas_here):
        """Each step with an errback of its own (Celery runs only the failing step's: the
        later steps never run); a chain of 20 such steps makes one errback call."""
        out = canvas_here.start().client('''
            steps = [add.s(1, 1).on_error(errback1.s())]
            steps += [fail.s().on_error(errback1.s())]
            steps += [add.s(1).on_error(errback1.s()) for _ in range(18)]
            r = chain(*steps).delay()
            r.get(timeout=30, propagate=False)
            failing = r
            while failing.parent is not None and failing.parent.state == FAILURE:
                failing = failing.parent
            (eb,) = [c for c in failing.children if c.name.endswith("errback1")]
            print(json.dumps([eb.get(timeout=30), failing.id]))
        '''.replace("FAILURE", repr(FAILURE)))
        assert out[0] == f"errback1 {out[1]}"
        assert canvas.logged("errbacks") == [[out[1]]]

    def test_a_groups_link_runs_once_after_its_first_member_as_in_celery(
            self, canvas, canvas_here):
        """Celery links a group's callback to its first member, immutable: it runs once
        (a chord is what waits for all); apply_async(link=) on a group is refused."""
        out = canvas_here.start().client('''
            g = group(add.s(1, 1), add.s(2, 2), add.s(3, 3))
            cb = g.link(errback1.s("linked"))
            r = g.apply_async()
            r.get(timeout=30)
            first = r.results[0]
            (linked,) = [c for c in first.children if c.name.endswith("errback1")]
            try:
                group(add.s(1, 1)).apply_async(link=errback1.si("x"))
                refused = None
            except TypeError as exc:
                refused = str(exc)
            print(json.dumps([linked.get(timeout=30), cb.immutable,
                              [len(m.children) for m in r.results[1:]], refused]))
        ''')
        assert out[:3] == ["errback1 linked", True, [0, 0]]
        assert "use a chord" in out[3]
        assert canvas.logged("errbacks") == [["linked"]]

    def test_a_chord_body_gets_every_result_in_header_order_once(self, canvas, canvas_here):
        queued = canvas_here.client('''
            # Each member on a queue of its own, for the worker to run them last to first.
            r = chord([nap_echo.s(i, 0).set(queue=f"q{i}") for i in range(10)])(collect.s())
            print(json.dumps([r.id, r.parent.id]))
        ''')
        # Later members finish first: the body still sees header order.
        for i in reversed(range(10)):
            assert canvas_here.work(queues=(f"q{i}",)) == 1
        ended = sql(canvas.db, "SELECT group_index FROM tasks WHERE group_id = ? "
                               "ORDER BY finished_at", queued[1])
        assert ended == [(i,) for i in reversed(range(10))]
        out = canvas_here.start().client(f'''
            r_id, header_id = {queued!r}
            r = app.AsyncResult(r_id)
            other = chord([add.s(i, i) for i in range(30)], collect.s())()
            empty = chord([], collect.s()).apply_async()
            print(json.dumps({{"body": r.get(timeout=30), "other": other.get(timeout=30),
                               "empty": empty.get(timeout=30), "group": header_id,
                               "restored": app.GroupResult(header_id).get(timeout=30),
                               "parent": app.AsyncResult(r.id).parent.id == header_id}}))
        ''')
        assert out["body"] == list(range(10)) and out["empty"] == []
        assert out["other"] == [2 * i for i in range(30)]
        assert out["restored"] == list(range(10)) and out["parent"]
        # Counted in the database: a counter and one slot per member, emptied once fired.
        assert sql(canvas.db, "SELECT size, done, fired FROM chords WHERE id = ?",
                   out["group"]) == [(10, 10, 1)]
        assert sql(canvas.db, "SELECT count(*) FROM chord_slots")[0][0] == 0

    def test_a_failing_member_fails_the_body_with_chord_error(self, canvas, canvas_here):
        out = canvas_here.start().client('''
            r = chord([add.s(1, 1), fail.s("member"), nap_echo.s(3, 0.2)],
                      collect.s()).on_error(errback1.s()).apply_async()
            exc = r.get(timeout=30, propagate=False)
            members = r.parent
            members.join(timeout=30, propagate=False)
            try:
                r.get(timeout=30)
            except Exception as raised_exc:
                raised = [type(raised_exc).__name__, str(raised_exc),
                          type(raised_exc.__cause__).__name__]
            print(json.dumps({"raised": raised, "type": type(exc).__name__, "is_chord_error":
                              isinstance(exc, ChordError), "message": str(exc),
                              "bad": members[1].id, "states": [m.state for m in members],
                              "body": r.id, "errback": r.children[0].get(timeout=30)}))
        ''')
        assert out["type"] == "ChordError" and out["is_chord_error"]
        assert out["message"] == f"Dependency {out['bad']} raised ValueError('member')"
        # get() raises the member's own exception, as Celery 5.7 on Redis does.
        assert out["raised"] == ["ValueError", "member", "ChordError"]
        # The other members still run; the body's errback runs once, for the body.
        assert out["states"] == [SUCCESS, FAILURE, SUCCESS]
        assert out["errback"] == f"errback1 {out['body']}"
        assert canvas.logged("errbacks") == [[out["body"]]]

    @pytest.mark.worker
    def test_group_id_is_saved_and_read_back_in_another_process(self, canvas, canvas_here):
        gid = canvas_here.start().client('''
            g = group(add.s(i, 1) for i in range(5)).apply_async()
            g.get(timeout=30)
            print(json.dumps(g.save().id))
        ''')
        out = canvas.client(f'''
            from litequeue import GroupResult
            g = app.GroupResult({gid!r})
            print(json.dumps([g.get(timeout=30), g.completed_count(),
                              GroupResult.restore({gid!r}).id, GroupResult.restore("nope")]))
        ''')
        assert out == [[1, 2, 3, 4, 5], 5, gid, None]

    def test_relations_of_subtasks_queued_inside_a_task(self, canvas_here):
        out = canvas_here.start().client('''
            r = spawner.delay(3)
            ids = r.get(timeout=30)
            kids = [app.AsyncResult(i) for i in ids]
            print(json.dumps([[k.parent_id == r.id and k.root_id == r.id for k in kids],
                              sorted(c.id for c in r.children) == sorted(ids),
                              [k.get(timeout=30) for k in kids]]))
        ''')
        assert out == [[True, True, True], True, [0, 2, 4]]

    def test_update_state_shows_progress_and_is_coalesced(self, canvas, canvas_here):
        w = canvas_here.start()
        # Count every write of the meta column with a trigger: real SQLite, no mock.
        assert w.client("print(json.dumps(add.delay(0, 0).get(timeout=30)))") == 0
        sql_write(canvas.db, "CREATE TABLE meta_writes (at REAL)",
                  "CREATE TRIGGER count_meta AFTER UPDATE OF meta ON tasks BEGIN "
                  "INSERT INTO meta_writes VALUES (julianday('now')); END")
        task_id = w.client('''
            print(json.dumps(progress.delay(20000, "go").id))
        ''')
        # The last of 20 000 reports reaches the database, though the loop is long over.
        out = w.client(f'''
            r = app.AsyncResult({task_id!r})
            deadline = time.monotonic() + 30
            while not (isinstance(r.info, dict) and r.info.get("current") == 20000):
                assert time.monotonic() < deadline, (r.state, r.info)
                time.sleep(0.01)
            print(json.dumps([r.state, r.info, r.ready()]))
        ''')
        assert out == ["PROGRESS", {"current": 20000, "total": 20000}, False]
        writes = sql(canvas.db, "SELECT count(*), (max(at) - min(at)) * 86400 FROM "
                                "meta_writes")[0]
        # At most one write per 0.2 s of reporting (plus the first and the last).
        assert writes[0] <= (writes[1] or 0) / 0.2 + 3, writes
        done = lq_here("result", canvas.db, task_id, cwd=canvas.dir)
        assert done.stdout.strip() == "PROGRESS" and done.returncode == 0
        (canvas.marks / "go").touch()
        assert w.client(f"print(json.dumps([app.AsyncResult({task_id!r}).get(timeout=30),"
                        f" app.AsyncResult({task_id!r}).info]))") == [20000, 20000]

    @pytest.mark.worker
    def test_result_wait_draws_a_progress_bar(self, canvas, canvas_here):
        task_id = canvas_here.start().client('print(json.dumps(progress.delay(4, "go").id))')
        waiter = subprocess.Popen([sys.executable, str(LITEQUEUE_PY), "result", canvas.db,
                                   task_id, "--wait", "--timeout", "60"], cwd=canvas.dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(waiter.stderr), daemon=True)
        reader.start()
        try:
            # stderr is not a terminal: one line per change of the bar.
            wait_until(lambda: any("4/4" in line for line in lines), 30,
                       lambda: f"a full progress bar, saw {lines}")
            (canvas.marks / "go").touch()
            out = waiter.stdout.read()
            waiter.wait(timeout=60)
            reader.join(timeout=10)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        err = "".join(lines)
        assert waiter.returncode == 0 and out.strip() == "4"
        assert "PROGRESS [" in err and "100% 4/4" in err, err

    def test_hooks_and_signals_run_and_a_raising_handler_breaks_nothing(self, canvas,
                                                                        canvas_here, caplog):
        out = canvas_here.start().client('''
            ok, bad, again = hooked.delay("ok"), hooked.delay("fail"), hooked.delay("retry")
            then = add.s(1).set(task_id=str(uuid.uuid4()))
            print(json.dumps([ok.id, ok.get(timeout=30), bad.id,
                              bad.get(timeout=30, propagate=False).__class__.__name__,
                              again.id, again.get(timeout=30), quiet.delay(21).get(timeout=30),
                              quiet.apply_async((21,), link=then) and
                              app.AsyncResult(then.id).get(timeout=30)]))
        ''')
        ok, bad, again = out[0], out[2], out[4]
        assert out[1] == "ok" and out[3] == "KeyError" and out[5] == "retry"
        # ignore_result: nothing of the return value is kept, but a link still gets it.
        assert out[6] is None and out[7] == 43
        hooks = canvas.logged("hooks")
        assert ["on_success", ok, "ok", ["ok"]] in hooks
        assert ["on_failure", bad, "KeyError", True] in hooks
        assert ["on_retry", again, "OSError"] in hooks
        assert ["on_success", again, "retry", ["retry"]] in hooks
        # after_return follows a task's last run only, as Celery's (not its retries).
        assert {tuple(h[1:]) for h in hooks if h[0] == "after_return"} == {
            (ok, SUCCESS), (bad, FAILURE), (again, SUCCESS)}
        logged = canvas.logged("signals")
        assert ["task_prerun", ok, "canvas_tasks.hooked"] in logged
        assert ["task_postrun", ok, SUCCESS] in logged
        assert ["task_success", "canvas_tasks.hooked", "ok"] in logged
        assert ["task_failure", bad, "KeyError"] in logged
        assert ["task_retry", again, "Retry"] in logged       # Celery: reason is the Retry
        # What the handler and the hook raised is logged; the outcomes above are unchanged.
        assert "a signal handler that breaks" in caplog.text
        assert "its after_return hook raised" in caplog.text

    @pytest.mark.worker
    def test_a_worker_sends_ready_and_shutdown_and_logs_a_raising_handler(self, canvas,
                                                                          workers):
        worker = start_canvas_worker(workers, canvas, concurrency=1)
        out = canvas.client('''
            print(json.dumps(hooked.delay("ok").get(timeout=30)))
        ''')
        assert out == "ok"
        assert ["worker_ready"] in canvas.logged("signals")
        # The worker's log shows what the handler and the hook raised.
        assert "a signal handler that breaks" in worker.log_text()
        assert "its after_return hook raised" in worker.log_text()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert canvas.logged("signals")[-1] == ["worker_shutdown"]

    def test_bad_canvas_input_is_refused_and_writes_nothing(self, canvas, canvas_here):
        out = canvas_here.client('''
            add.delay(0, 0)      # the file exists, with one row
            errors = []
            for build in (
                    lambda: add.apply_async((1, 1), link=signature("canvas_tasks.nope")),
                    lambda: chord([add.s(1, 1)], body=add),
                    lambda: (add.s(1, 1) | add.s(object()) | add.s(2)).delay(),
                    lambda: chord([add.s(i, i) for i in range(50)] + [add.s({1}, 1)])(
                        collect.s()),
                    lambda: group(add.s(1, 1), "add").delay(),
                    lambda: add.apply_async((1, 1), link=add),
                    lambda: chord([add.s(1, 1)], collect.s().set(queue=7)).delay()):
                try:
                    build()
                    errors.append(None)
                except Exception as exc:
                    errors.append(type(exc).__name__)
            print(json.dumps(errors))
        ''')
        # A queue of the wrong type is WrongType: a LitequeueError that is a TypeError.
        assert out == ["NotRegistered", "TypeError", "SerializationError", "SerializationError",
                       "TypeError", "TypeError", "WrongType"]
        # Only the first add was written.
        assert canvas.count() == 1
        assert canvas.count("name = 'canvas_tasks.nope'") == 0

    def test_revoking_a_waiting_step_ends_the_rest_of_its_chain(self, canvas_here):
        out = canvas_here.start().client('''
            r = (nap_echo.s(1, 0.5) | add.s(1) | add.s(1)).delay()
            middle = r.parent
            revoked = middle.revoke()
            try:
                r.get(timeout=30)
            except Exception as exc:
                raised = type(exc).__name__
            print(json.dumps([revoked, raised, middle.state, r.state,
                              r.parent.parent.get(timeout=30)]))
        ''')
        assert out == [True, "TaskRevokedError", REVOKED, REVOKED, 1]

    def test_a_countdown_inside_a_chain_counts_from_the_previous_step(self, canvas_here):
        out = canvas_here.start().client('''
            r = (add.s(1, 1) | add.s(1).set(countdown=0.5)).delay()
            value = r.get(timeout=30)
            first = r.parent
            print(json.dumps([value, r.date_started.timestamp() -
                              first.date_done.timestamp()]))
        ''')
        assert out[0] == 3 and out[1] >= 0.5

    def test_options_of_a_signature_and_send_task_with_links(self, tmp_path):
        db, app, add = adder_app(tmp_path / "o.sqlite")
        r = add.s(1, 2).apply_async(task_id="fixed", queue="q", priority=3)
        assert (r.id, r.state, r.queue) == ("fixed", PENDING, "q")
        r = app.send_task(add.name, (1, 2), link=add.s(3), link_error=add.si(0, 0))
        kids = sql(db, "SELECT name, state, waits, parent_id FROM tasks WHERE parent_id = ? "
                       "ORDER BY seq", r.id)
        assert kids == [(add.name, "WAITING", "link", r.id), (add.name, "WAITING", "error_si",
                                                              r.id)]
        assert [k.state for k in r.children] == [PENDING, PENDING]   # as Celery shows it
        assert sql(db, "SELECT followers FROM tasks WHERE id = ?", r.id) == [(1,)]

    def test_pruning_results_also_prunes_saved_groups_and_chords(self, tmp_path):
        db, app, add = adder_app(tmp_path / "p.sqlite")
        from litequeue import chord
        g = group(add.s(1, 1), add.s(2, 2)).apply_async()
        c = chord([add.s(1, 1)], add.s(1)).apply_async()
        sql_write(db, "UPDATE tasks SET state = 'SUCCESS', finished_at = 1",
                  "UPDATE chords SET fired = 1", "UPDATE groups SET created_at = 1")
        assert app.GroupResult(g.id).id == g.id
        assert app._storage().prune(time.time()) == 4
        assert sql(db, "SELECT (SELECT count(*) FROM groups), (SELECT count(*) FROM chords)") \
            == [(0, 0)]
        assert GroupResult.restore(g.id, app=app) is None and c.detailed_state == UNKNOWN
        with pytest.raises(TaskNotFound):
            app.GroupResult(g.id)

    def test_requeueing_a_failed_step_resumes_its_chain(self, canvas, canvas_here):
        w = canvas_here.start()
        out = w.client('''
            r = (add.s(1, 1) | fails_once.s("ok") | add.s(1)).delay()
            r.get(timeout=30, propagate=False)
            print(json.dumps([r.id, r.parent.id, r.state]))
        ''')
        tail, step, state = out
        assert state == FAILURE
        # The tail never ran: it cannot be requeued alone (it has no input).
        refused = lq_here("retry", canvas.db, tail, cwd=canvas.dir)
        assert refused.returncode == 1
        (canvas.marks / "ok").touch()
        assert lq_here("retry", canvas.db, step, cwd=canvas.dir).returncode == 0
        assert w.client(f"print(json.dumps(app.AsyncResult({tail!r}).get(timeout=30)))") == 3

    def test_an_errback_chain_of_a_success_leaves_nothing_waiting(self, canvas, canvas_here):
        out = canvas_here.start().client('''
            r = add.apply_async((1, 2), link_error=chain(errback1.s(), collect.s()))
            print(json.dumps(r.get(timeout=30)))
        ''')
        assert out == 3
        wait_until(lambda: canvas.count("state = 'WAITING'") == 0, 10, "no WAITING rows")

    def test_options_set_on_a_chain_group_or_chord_reach_every_task(self, tmp_path):
        db, app, add = adder_app(tmp_path / "set.sqlite")
        from litequeue import chain, chord
        chain(add.s(1, 1), add.s(1)).set(queue="q1", priority=3).apply_async()
        group(add.s(1, 1), add.s(2, 2)).set(queue="q2").apply_async()
        chord([add.s(1, 1)], add.s(1), queue="q3").apply_async()
        assert sorted(sql(db, "SELECT queue, count(*) FROM tasks GROUP BY queue")) == [
            ("q1", 2), ("q2", 2), ("q3", 2)]
        with pytest.raises(ConfigurationError, match="countdown"):
            (add.s(1, 1) | add.s(1).set(eta=dt.datetime.now(dt.timezone.utc))).delay()
        with pytest.warns(litequeue.LitequeueWarning, match="'routing_keys' is not one"):
            chain(add.s(1, 1), add.s(1)).set(routing_keys="x").delay()
        with pytest.warns(litequeue.LitequeueWarning, match="routing_key"):
            chain(add.s(1, 1), add.s(1)).set(routing_key="x").delay()

    def test_purging_a_queue_drops_what_waited_on_it_elsewhere(self, tmp_path):
        db, app, add = adder_app(tmp_path / "purge.sqlite")
        (add.s(1, 1).set(queue="a") | add.s(1).set(queue="b") | add.s(2).set(queue="c")).delay()
        assert app.admin.purge("a") == 1
        assert sql(db, "SELECT count(*) FROM tasks")[0][0] == 0

    def test_eager_mode_runs_the_whole_canvas_inline(self, tmp_path):
        app = LiteQueue(str(tmp_path / "eager.sqlite"), task_always_eager=True)

        @app.task
        def add(x, y):
            return x + y

        @app.task
        def total(values):
            return sum(values)

        @app.task
        def boom(x):
            raise ValueError(x)

        seen = []

        @app.task
        def eb(task_id):
            seen.append(task_id)

        from litequeue import chain, chord
        assert (add.s(1, 2) | add.s(3)).delay().get() == 6
        assert chord([add.s(i, i) for i in range(4)])(total.s()).get() == 12
        r = chain(add.s(1, 1), boom.s(), add.s(1)).on_error(eb.s()).delay()
        with pytest.raises(ValueError):
            r.get()
        assert len(seen) == 1
        bad = chord([add.s(1, 1), boom.s(2)], total.s()).delay()
        with pytest.raises(litequeue.ChordError):
            bad.get()
        told = []

        @app.task
        def eb3(request, exc, traceback):
            told.append((request.id, type(exc).__name__, "Traceback" in traceback))

        r = boom.apply_async((3,), link_error=chain(eb3.s(), add.si(1, 1)))
        assert told == [(r.id, "ValueError", True)]
        assert add.apply_async((1, 1), link=add.s(5)).successful()
        assert not (tmp_path / "eager.sqlite").exists()

    def test_shared_task_registers_with_every_app(self, tmp_path):
        @litequeue.shared_task
        def shared_double(x):
            return 2 * x

        try:
            a = LiteQueue(str(tmp_path / "a.sqlite"), task_always_eager=True)
            name = [n for n in a.tasks if n.endswith("shared_double")]
            assert name and shared_double.delay(21).get() == 42
            assert shared_double(2) == 4 and shared_double.name == name[0]
        finally:
            litequeue._shared_tasks.pop()

    def test_signals_are_importable_by_their_celery_names(self):
        from litequeue.signals import task_failure
        from litequeue import signals
        assert task_failure is signals.task_failure
        calls = []

        @task_failure.connect
        def handler(sender=None, **kwargs):
            calls.append(sender)

        try:
            task_failure.send(sender="x")
            assert calls == ["x"]
        finally:
            task_failure.disconnect(handler)
        task_failure.send(sender="y")
        assert calls == ["x"]


# The canvas chaos test's producer: chains of five steps and chords of twelve, printed
# as [kind, id of the result to check, the value it must have].
CANVAS_CHAOS_PRODUCER = '''
import json, sys
from canvas_tasks import collect, step
from litequeue import chain, chord
out = []
for n in range(int(sys.argv[1])):
    r = chain(step.s(n, "chain"), *[step.s("chain") for _ in range(4)]).delay()
    out.append(["chain", r.id, n + 5])
for n in range(int(sys.argv[2])):
    r = chord([step.s(n + i, "chord") for i in range(12)])(collect.s())
    out.append(["chord", r.id, [n + i + 1 for i in range(12)]])
print(json.dumps(out))
'''


class TestCeleryCanvasShapes:
    """The canvas shapes of Celery's canvas guide that a port of its programs meets."""

    def test_map_starmap_chunks_and_invert_give_celerys_answers(self, canvas_here):
        out = canvas_here.start().client('''
            print(json.dumps({
                "~": ~add.s(2, 2),
                "map": ~collect.map([[1, 2], [3, 4, 5]]),
                "starmap": ~add.starmap(zip(range(4), range(4))),
                "chunks": add.chunks(zip(range(7), range(7)), 3).apply_async().get(timeout=30),
                "chunks.group": add.chunks(zip(range(4), range(4)), 2).group()
                    .skew(start=0, step=0.01).apply_async().get(timeout=30),
                "~chunks": ~add.chunks([(1, 1), (2, 2)], 1),
                "repr": repr(add.starmap([(1, 2)])),
            }))
        ''')
        assert out == {"~": 4, "map": [[1, 2], [3, 4, 5]], "starmap": [0, 2, 4, 6],
                       "chunks": [[0, 2, 4], [6, 8, 10], [12]], "chunks.group": [[0, 2], [4, 6]],
                       "~chunks": [[2], [4]],
                       "repr": "[canvas_tasks.add(*x) for x in [[1, 2]]]"}

    def test_a_signature_given_as_an_argument_travels_as_celerys_dict(self, canvas_here):
        """Celery sends a signature argument as a dict, and signature(d) rebuilds it: a
        chain, a group and a chord too, with their links."""
        out = canvas_here.start().client('''
            plain = add.s(1, 2)
            shapes = [add.s(1, 2).set(countdown=0), add.s(1, 2) | mul.s(3),
                      group(add.s(1, 1), mul.s(2, 2)), chord([add.s(1, 1), add.s(2, 2)], collect.s())]
            got = [identity.delay(s).get(timeout=30) for s in shapes]
            print(json.dumps({"dict": got[0], "types": [g["subtask_type"] for g in got],
                              "rebuilt": [signature(g).delay().get(timeout=30) for g in got],
                              "getitem": [plain["task"], plain["args"]]}))
        ''')
        assert out["dict"] == {"task": "canvas_tasks.add", "args": [1, 2], "kwargs": {},
                               "options": {"countdown": 0}, "subtask_type": None,
                               "immutable": False, "chord_size": None}
        assert out["types"] == [None, "chain", "group", "chord"]
        assert out["rebuilt"] == [3, 9, [2, 4], [2, 4]]
        assert out["getitem"] == ["canvas_tasks.add", [1, 2]]

    def test_replace_hands_the_tasks_id_and_place_over_to_its_replacement(self, canvas_here):
        """Whoever waits on a replaced task's id gets the replacement's result, in a chain
        and in a chord too; a failing replacement fails it; a plain call runs it inline."""
        out = canvas_here.start().client('''
            def outcome(r):
                try:
                    return r.get(timeout=30)
                except Exception as exc:
                    return [type(exc).__name__, str(exc)]
            plain = [outcome(replacer.delay(how)) for how in ("sig", "chain", "group", "fail")]
            print(json.dumps({
                "plain": plain,
                "in chain": (replacer.s("sig") | add.s(100)).delay().get(timeout=30),
                "in chord": chord([replacer.s("chain"), replacer.s("group"), add.s(1, 1)],
                                  collect.s()).delay().get(timeout=30),
                "called": replacer("chain"),
            }))
        ''')
        assert out == {"plain": [5, 20, [2, 4], ["ValueError", "replaced"]],
                       "in chain": 105, "in chord": [20, [2, 4], 2], "called": 20}

    def test_collect_graph_result_sets_and_on_message_as_in_celery(self, canvas_here):
        out = canvas_here.start().client('''
            from litequeue import ResultSet
            r = spawner.delay(2)
            ids = r.get(timeout=30)
            [app.AsyncResult(i).get(timeout=30) for i in ids]
            collected = [[node.id == r.id, value] for node, value in r.collect()]
            graph = {node.id: [c.id for c in children] for node, children in r.graph.items()}
            rs = ResultSet([add.delay(1, 1), add.delay(2, 2)])
            g = group(add.s(3, 3), add.s(4, 4)).delay()
            seen = []

            def on_message(meta):          # the task waits for the marker until PROGRESS
                seen.append([meta["status"], meta["result"]])
                if meta["status"] == "PROGRESS":
                    open(os.path.join(MARKS, "go"), "w").close()
            progress.delay(2, "go").get(timeout=30, on_message=on_message)
            print(json.dumps({
                "collected": collected, "graph": graph == {r.id: ids, ids[0]: [], ids[1]: []},
                "set": [rs.get(timeout=30), rs.join(timeout=30), rs.completed_count(), len(rs)],
                "repr": [repr(rs) == f"<ResultSet: [{rs[0].id}, {rs[1].id}]>",
                         repr(g) == f"<GroupResult: {g.id} [{g[0].id}, {g[1].id}]>"],
                "messages": [seen[0], seen[-2], seen[-1]]}))
        ''')
        assert out["collected"] == [[True, out["collected"][0][1]], [False, 0], [False, 2]]
        assert out["graph"] and out["repr"] == [True, True]
        assert out["set"] == [[2, 4], [2, 4], 2, 2]
        # Reports are coalesced: at least one PROGRESS shows before SUCCESS; Celery's
        # result channel carries no PENDING or STARTED.
        first, progress, last = out["messages"]
        assert first[0] == "PROGRESS" and last == ["SUCCESS", 2]
        assert progress[0] == "PROGRESS" and progress[1]["total"] == 2

    def test_a_group_followed_by_a_group_or_a_chord_is_a_chord_with_that_body(self,
                                                                              canvas_here):
        """Celery's group | task is a chord; its body may be a group (each member gets
        the header's results) or, nested from the right, another chord."""
        out = canvas_here.start().client('''
            g = group(add.s(1, 1), add.s(2, 2))
            print(json.dumps([
                type(g | collect.s()).__name__,
                (g | group(collect.s(), identity.s())).delay().get(timeout=30),
                chain(g, group(collect.s(), collect.s()), collect.s()).delay().get(timeout=30),
                chord([add.s(1, 1)], group(identity.s(), identity.s())).delay().get(timeout=30),
                # A step after a chord whose body is a group waits for that whole group.
                chain(chord([add.s(1, 1), add.s(2, 2)], group(collect.s(), collect.s())),
                      collect.s()).delay().get(timeout=30),
            ]))
        ''')
        assert out == ["_chord", [[2, 4], [2, 4]], [[2, 4], [2, 4]], [[2], [2]],
                       [[2, 4], [2, 4]]]

    def test_empty_parts_are_left_out_nested_groups_gather_and_chains_freeze(self,
                                                                             canvas_here):
        """Celery's: an empty chain in a group or a chord's header, or an empty group in a
        chain, has nothing to run and is left out; a chain's id is its last task's once
        frozen; replacing a task with an empty chain fails it."""
        out = canvas_here.start().client('''
            last = add.s(2).set(task_id="last-one")
            c = add.s(4) | last
            ids = [c.id, c.freeze().id, c.id]
            try:
                replacer.delay("empty").get(timeout=30)
            except Exception as exc:
                replaced = [type(exc).__name__, str(exc)]
            # A group member that ends in a group is one member, its results a list.
            nested = [group(identity.si(1), identity.si(2), chain(identity.si(5), group(
                identity.si(3), identity.si(4)))).delay().get(timeout=30),
                chain(add.si(1, 0), group(add.si(1, 100), chain(add.si(1, 200), group(
                    add.si(1, 1000), add.si(1, 2000)))), identity.s()).delay().get(timeout=30)]
            print(json.dumps(nested + [[
                group(chain(), add.s(1, 2), chain(), add.s(3, 4)).apply_async().get(timeout=30),
                chord([chain()], collect.s())().get(timeout=30),
                chord([chain(), add.s(1, 1)], collect.s())().get(timeout=30),
                chain(group(add.s(2, 2), add.s(4, 4)), group(), group())().get(timeout=30),
                chain(group(), add.s(10)).apply_async((5,)).get(timeout=30),
                chain(chain(group(), add.s(10)), add.s(20)).apply_async((5,)).get(timeout=30),
                ids, replaced]]))
        ''')
        assert out[:-1] == [[1, 2, [3, 4]], [101, [1001, 2001]]]
        out = out[-1]
        assert out == [[3, 7], [], [2], [4, 8], 15, 35, [None, "last-one", "last-one"],
                       ["ConfigurationError", "Cannot replace with an empty chain"]]

    def test_a_canvas_countdown_delays_its_first_tasks_and_errbacks_come_in_any_form(
            self, canvas, canvas_here):
        """Celery's: a chain's countdown delays its first task only (the next follows at
        once); link_error may be one signature, a list, or Celery's dict; with
        task_allow_error_cb_on_chord_header a chord's errback follows its header too."""
        w = canvas_here
        tasks = w.loaded[0]
        first = tasks.add.s(1, 1) | tasks.add.s(1)
        r = first.apply_async(countdown=30)
        rows = dict(litequeue._Storage(canvas.db).conn.execute(
            "SELECT id, coalesce(eta, 0) > 0 FROM tasks WHERE id IN (?, ?)",
            (r.id, r.parent.id)).fetchall())
        assert rows == {r.parent.id: 1, r.id: 0}
        failing = tasks.fail.s("once").set(link_error=tasks.errback1.s())
        as_dict = tasks.fail.s("dict").set(link_error=dict(tasks.errback1.s()))
        tasks.app.conf.task_allow_error_cb_on_chord_header = True
        c = litequeue.chord([tasks.fail.s("member")], tasks.collect.s()).on_error(
            tasks.errback1.s())
        bad = [failing.delay(), as_dict.delay(), c.delay()]
        w.work_until(lambda: all(x.ready() for x in bad) and
                     len(canvas.logged("errbacks")) == 4, 20)
        # The chord's errback ran twice: for the failed header task and for the body.
        assert sorted(e[0] for e in canvas.logged("errbacks")) == sorted(
            [bad[0].id, bad[1].id, bad[2].id, bad[2].parent[0].id])

    def test_a_chain_ending_in_a_group_leads_back_to_its_first_step(self, canvas_here):
        out = canvas_here.start().client('''
            r = chain(add.s(1, 1), group(add.s(1), add.s(2))).apply_async()
            print(json.dumps([r.get(timeout=30), r.parent.get(timeout=30),
                              chain(group(add.s(1, 1), add.s(1, 2)), collect.s())().get(timeout=30)]))
        ''')
        assert out == [[3, 4], 2, [2, 3]]

    def test_canvases_are_signatures_and_results_have_celerys_shape(self, canvas_here):
        """Celery's: chain, group and chord are Signatures; a chord's body has the header
        task that started it as parent_id, and its .parent is the header, whose .parent
        is the step before; as_tuple() names each node once; a group of one task in a
        chain is that task; group(a | group(b, c)) gives b's and c's results."""
        out = canvas_here.start().client('''
            from litequeue import GroupResult, ResultSet, Signature
            root = ids.si(1)
            root.freeze()
            r = chain(root, ids.si(2), chord(group(ids.si(i) for i in range(3, 6)), ids.s()))()
            body = r.get(timeout=30)
            header = r.parent
            shape = chain(add.si(1, 0), group(add.s(1), add.s(2)), group(collect.s(), collect.s()),
                          collect.s()).apply_async()
            shape.get(timeout=30)

            def walk(t, seen):
                (node, parent), members = t
                seen.append(node)
                for m in members or ():
                    walk(m, seen)
                if parent:
                    walk(parent, seen)
                return seen
            tuple_ids = walk(json.loads(json.dumps(shape.as_tuple())), [])
            empty = group([]).apply_async().save()
            rs, seen = ResultSet([add.delay(1, 1), add.delay(2, 2)]), []
            rs.join(timeout=30, callback=lambda task_id, value: seen.append([task_id == rs[len(seen)].id, value]))
            print(json.dumps({
                "signatures": [isinstance(x, Signature) for x in (
                    chain(add.s(1, 1), add.s(1)), group(add.s(1, 1)), chord([add.s(1, 1)], collect.s()))],
                "body": [body[0] == root.id, body[1] in header.results,
                         [member[2] for member in body[2][0]]],
                "parents": [type(header).__name__, header.parent.get(timeout=30)[2],
                            r.parent.parent.parent.id == root.id],
                "as_tuple": [len(tuple_ids), len(set(tuple_ids))],
                "one member": chain(group(add.s(0, 0)), add.s(-1))().get(timeout=30),
                "group of a chain ending in a group":
                    group(add.s(1, 2) | group(add.s(1), add.s(2)))().get(timeout=30),
                "join": seen,
                "empty": GroupResult.restore(empty.id).results,
                "equal to its id": shape == shape.id,
            }))
        ''')
        assert out == {"signatures": [True, True, True], "body": [True, True, [[3], [4], [5]]],
                       "parents": ["GroupResult", [2], True], "as_tuple": [8, 8],
                       "one member": -1, "group of a chain ending in a group": [4, 5],
                       "join": [[True, 2], [True, 4]], "empty": [], "equal to its id": True}

    def test_errbacks_of_a_replaced_task_and_of_a_group_body_run_as_in_celery(
            self, canvas, canvas_here):
        """A replaced task's errbacks run when its replacement fails; when a chord's
        header fails, each task of its group body fails as the body: its own errbacks
        and the chord's (once per task) run, each given that task's id."""
        w = canvas_here
        tasks = w.loaded[0]
        replaced = tasks.replacer.s("fail").set(link_error=tasks.errback1.s()).delay()
        own = tasks.collect.s().set(link_error=tasks.errback1.s())
        body = litequeue.chord([tasks.add.si(1, 1), tasks.fail.si("header")],
                               litequeue.group(own, tasks.collect.s())).apply_async(
            link_error=tasks.errback1.si("chord"))
        w.work_until(lambda: replaced.ready() and body.ready() and
                     len(canvas.logged("errbacks")) == 4, 20)
        members = [m.id for m in body.results]
        failed = [e[0] for e in canvas.logged("errbacks")]
        assert failed.count("chord") == 2 and members[0] in failed, (failed, members)
        (replacement,) = set(failed) - {"chord", members[0]}
        assert tasks.app.AsyncResult(replacement).name == "canvas_tasks.fail"
        assert replaced.state == "FAILURE"

    def test_add_to_chord_grows_the_chord_once_per_call_even_when_run_again(self,
                                                                            canvas_here):
        out = canvas_here.start().client('''
            def body(how, nums=(1, 2, 3)):
                return (group([grows_chord.s(list(nums), how)]) | collect.s())().get(timeout=30)
            try:
                grows_chord.delay([1], "tasks").get(timeout=30)
            except ValueError as exc:
                alone = str(exc)
            print(json.dumps([sorted(body("tasks")), body("chord"), body("retry", [1]), alone]))
        ''')
        assert out == [[0, 5, 6, 7], [0, [5, 6, 7]], [0, 5],
                       "Current task is not member of any chord"]

    def test_add_to_chord_on_a_chord_whose_size_lies_fails_that_task_only(self, canvas,
                                                                         canvas_here):
        w = canvas_here
        tasks = w.loaded[0]
        body = (litequeue.group([tasks.grows_chord.s([1], "tasks")]) | tasks.collect.s())()
        member = body.parent.results[0]
        with litequeue._Storage(canvas.db).write() as conn:
            conn.execute("UPDATE chords SET size = 'many'")
        after = tasks.add.delay(2, 2)
        w.work_until(lambda: body.ready() and after.ready(), 20)
        assert member.state == "FAILURE" and "not a count" in str(member.result)
        assert body.state == "FAILURE" and after.get() == 4

    def test_a_link_of_a_chord_with_a_group_body_runs_once_after_the_whole_group(
            self, canvas_here):
        out = canvas_here.start().client('''
            r = chord([add.si(1, 1), add.si(2, 2)], group(collect.s(), collect.s())).apply_async(
                link=identity.s())
            values = r.get(timeout=30)
            links = app._storage().conn.execute(
                "SELECT id FROM tasks WHERE name = 'canvas_tasks.identity'").fetchall()
            print(json.dumps([values, [app.AsyncResult(i).get(timeout=30) for (i,) in links]]))
        ''')
        assert out == [[[2, 4], [2, 4]], [[[2, 4], [2, 4]]]]

    def test_errbacks_run_once_per_failure_that_ran_and_a_lone_group_keeps_its_options(
            self, canvas, canvas_here):
        """A chain's errbacks run for the tasks of a group body that fail as the body, not
        again for the step after it; a failure upstream of a chord runs them once; a group
        of one task in a chain is that task, with the group's errbacks and queue."""
        w = canvas_here
        t = w.loaded[0]
        chain, chord, group = litequeue.chain, litequeue.chord, litequeue.group
        header_fails = chain(chord([t.fail.s("h"), t.add.s(1, 1)], group(
            t.identity.s(), t.identity.s())), t.identity.s()).on_error(t.errback1.si("a"))
        upstream_fails = chain(t.fail.s("u"), chord([t.add.s(1), t.add.s(2)], group(
            t.identity.s(), t.identity.s())), t.identity.s()).on_error(t.errback1.si("b"))
        lone = chain(t.add.s(1, 1), group(t.fail.s()).on_error(t.errback1.si("c")))
        queued = chain(t.add.s(1, 1), group(t.identity.s()).set(queue="elsewhere")).delay()
        # A chord's errbacks are its body's: a chain body's follow each step; a header
        # chain that fails part way fails the body, whose errbacks run.
        partway = chain(t.identity.si(42), t.fail.s(), t.identity.si(42))
        in_header = chord((partway,), t.identity.s()).on_error(t.errback1.si("d"))
        in_body = chord((t.identity.si(42),), partway._copy()).on_error(t.errback1.si("e"))
        runs = [header_fails.delay(), upstream_fails.delay(), lone.delay(), in_header.delay(),
                in_body.delay()]
        w.work_until(lambda: all(r.ready() for r in runs) and
                     len(canvas.logged("errbacks")) == 6, 20)
        assert w.work() == 0                 # nothing more was queued: no errback twice
        assert sorted(e[0] for e in canvas.logged("errbacks")) == ["a", "a", "b", "c", "d",
                                                                   "e"]
        assert queued.parent.get(timeout=5) == 2 and queued.queue == "elsewhere"

    def test_celerys_shapes_of_pipes_freezes_and_reprs(self, canvas_here):
        out = canvas_here.start().client('''
            g = group(add.s(1, 1), add.s(2, 2))
            frozen = g.freeze()
            r = g.apply_async()
            print(json.dumps([
                (add.s(1, 1) | group(identity.s()) | identity.s()).delay().get(timeout=30),
                chain(add.s(1, 1), group(identity.s()), identity.s()).delay().get(timeout=30),
                [type(frozen).__name__, frozen.id == r.id, r.get(timeout=30)],
                repr(add.chunks([(1, 1), (2, 2)], 1)),
            ]))
        ''')
        assert out == [[2], 2, ["GroupResult", True, [2, 4]],
                       "canvas_tasks.add.chunks(2 chunk(s) of 1)"]

    def test_task_received_is_sent_by_the_worker_with_the_stamps(self, canvas, canvas_here):
        class Visitor(litequeue.StampingVisitor):
            def on_signature(self, sig, **headers):
                return {"stamp": 42}

        w = canvas_here
        sig = w.loaded[0].add.si(1, 1)
        sig.stamp(visitor=Visitor())
        r = sig.apply_async()
        w.work_until(lambda: r.ready() and canvas.logged("received"), 20)
        assert canvas.logged("received") == [[r.id, {"stamp": 42}]]


@pytest.mark.worker
class TestCanvasChaos:

    @pytest.mark.chaos
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    def test_sigkill_during_chains_and_chords_loses_and_repeats_nothing(self, canvas,
                                                                         workers):
        """Two `-c 2` supervisors run 150 chains of five steps and 50 chords of twelve
        members while, every 0.1-0.3 s for at least 12 s, a random child (sometimes a
        supervisor's whole group) is SIGKILLed; dead supervisors are restarted. Every
        chain ends once with the right value, every chord body runs with every member's
        result in order, and no row of the canvas is queued twice."""
        seed = int(os.environ.get("LQ_CHAOS_SEED", time.time_ns() % 10**6))
        rng = random.Random(seed)
        chains, chords, chaos_for = 150, 50, 12.0

        def start_supervisor():
            return workers.start(canvas, concurrency=2, app=("canvas_tasks",),
                                 loglevel="WARNING", ready=False)

        supervisors = [start_supervisor(), start_supervisor()]
        for s in supervisors:
            s.wait_ready()
        producer = subprocess.Popen([sys.executable, "-c", CANVAS_CHAOS_PRODUCER, str(chains),
                                     str(chords)], cwd=canvas.dir, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)
        kills = collections.Counter()
        began = time.monotonic()
        try:
            while time.monotonic() - began < chaos_for:
                time.sleep(rng.uniform(0.1, 0.3))
                kind, _ = chaos_kill(supervisors, start_supervisor, rng)
                if kind is not None:
                    kills[kind] += 1
            out, err = producer.communicate(timeout=60)
        finally:
            if producer.poll() is None:
                with _suppress_lookup():
                    os.killpg(producer.pid, signal.SIGKILL)
                producer.wait()
        assert producer.returncode == 0, err
        expected = json.loads(out)
        for i, s in enumerate(supervisors):
            if s.proc.poll() is not None:
                supervisors[i] = start_supervisor()

        def unfinished():
            return sql(canvas.db, "SELECT count(*) FROM tasks WHERE state != 'SUCCESS'")[0][0]
        wait_until(lambda: unfinished() == 0, 120,
                   lambda: f"every row to succeed (seed {seed}; {unfinished()} not yet: "
                   f"{sql(canvas.db, 'SELECT state, count(*) FROM tasks GROUP BY state')})")
        values = canvas.client(f'''
            print(json.dumps([app.AsyncResult(i).get(timeout=30) for i in
                              {[e[1] for e in expected]!r}]))
        ''')
        assert values == [e[2] for e in expected], f"seed {seed}"
        # One row per task of the canvas: 5 per chain, 12 + 1 per chord, none twice.
        assert canvas.count() == 5 * chains + 13 * chords
        # Every start of a step was a claim of its one row (attempt counts the claims).
        starts = collections.Counter()
        for path in canvas.marks.glob("runs.*"):
            for line in path.read_text().splitlines():
                task_id, attempt = json.loads(line)
                starts[task_id] = max(starts[task_id], attempt)
        attempts = dict(sql(canvas.db, "SELECT id, attempt FROM tasks WHERE name = "
                                       "'canvas_tasks.step'"))
        assert starts == attempts, f"seed {seed}"
        assert sql(canvas.db, "SELECT count(*), sum(done = size AND fired = 1) "
                              "FROM chords")[0] == (chords, chords)
        assert sql(canvas.db, "SELECT count(*) FROM chord_slots")[0][0] == 0
        assert sum(kills.values()) >= 20, kills
        print(f"canvas chaos seed {seed}: {dict(kills)}")
