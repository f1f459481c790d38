"""Monitoring: health and inspect, the dashboard and its API, mails and systemd notify,
queue pause, and the page in a real browser.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import apsw
import pytest

from litequeue import FAILURE, PENDING, REVOKED, SCHEDULED, SUCCESS

from .helpers import _chromium, lq, lq_here, page_click, sql, sql_write, wait_until

pytestmark = pytest.mark.timeout(120)


class TestHealthAndCommands:

    def test_health_says_what_is_wrong_and_exits_by_verdict(self, project, here):
        assert lq_here("health", project.db, cwd=project.dir).returncode == 3   # no file yet
        project.delay("add", 1, 1)
        done = lq_here("health", project.db, cwd=project.dir)
        assert done.returncode == 1
        assert "FAIL workers: no live worker supervisor" in done.stdout
        assert "FAIL queues served: waiting tasks in queue(s) no live worker serves: " \
               "default" in done.stdout
        here(project).start()                   # a worker child's loop on a thread
        wait_until(lambda: lq_here("health", project.db, cwd=project.dir).returncode == 0, 30,
                   "health to pass once a worker drains the queue")
        out = lq_here("health", project.db, "--json", cwd=project.dir)
        checks = [json.loads(line) for line in out.stdout.splitlines()]
        assert {c["name"] for c in checks} >= {"schema", "workers", "queues served",
                                               "oldest waiting", "schedules", "time limits",
                                               "wal"} and all(c["ok"] for c in checks)
        assert lq_here("health", project.db, "--max-wait", "-1",
                       cwd=project.dir).returncode == 2
        (project.dir / "junk.sqlite").write_bytes(b"not a database" * 10)
        bad = lq_here("health", project.dir / "junk.sqlite", cwd=project.dir)
        assert bad.returncode == 3 and "UNKNOWN" in bad.stderr and "Traceback" not in bad.stderr

    def test_tasks_and_inspect_answer_from_the_database(self, project, here):
        ids = [project.delay("add", i, i).id for i in range(3)]
        later = project.app.tasks["tasks.add"].apply_async((9, 9), countdown=600).id
        listed = lq_here("tasks", project.db, "--state", "PENDING", cwd=project.dir)
        assert listed.returncode == 0 and [line.split()[0] for line in
                                           listed.stdout.splitlines()] == ids[::-1]
        # Celery's meaning: reserved rows were prefetched by a worker; queued ones are not.
        reserved = json.loads(lq_here("inspect", project.db, "reserved",
                                      cwd=project.dir).stdout)
        assert reserved == []
        scheduled = json.loads(lq_here("inspect", project.db, "scheduled",
                                       cwd=project.dir).stdout)
        assert [t["id"] for t in scheduled] == [later]
        assert "tasks.add" in json.loads(lq_here("inspect", project.db, "registered",
                                                 cwd=project.dir).stdout)
        assert here(project).work() == 3        # a worker's steps, in this process
        for task_id in ids:
            project.app.AsyncResult(task_id).get(timeout=30)
        rows = [json.loads(line) for line in lq_here(
            "tasks", project.db, "--json", "--state", "SUCCESS",
            cwd=project.dir).stdout.splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(ids)
        nope = lq_here("tasks", project.db, "--state", "NOPE", cwd=project.dir)  # a custom state
        assert (nope.returncode, nope.stdout) == (0, ""), nope.stderr


@pytest.mark.worker
class TestDashboard:

    def test_flower_api_metrics_and_healthcheck(self, project, workers, dashboards):
        project.delay("add", 0, 0)              # the file exists
        d = dashboards(project)
        assert d.request("/healthcheck")[0] == 503            # no worker yet
        workers.start(project, concurrency=2)
        ok = project.delay("add", 2, 3)
        bad = project.delay("fail", "broken")
        ok.get(timeout=30), bad.get(timeout=30, propagate=False)
        code, _, text = d.request("/healthcheck")
        assert (code, text) == (200, "OK\n")
        tasks = d.json("/api/tasks?limit=10")
        assert tasks[ok.id]["state"] == SUCCESS and tasks[ok.id]["result"] == 5
        assert tasks[bad.id]["state"] == FAILURE and "broken" in tasks[bad.id]["exception"]
        assert set(tasks[ok.id]) >= {"uuid", "name", "state", "args", "kwargs", "result",
                                     "received", "started", "succeeded", "runtime", "worker"}
        assert d.json("/api/tasks?state=FAILURE&limit=5").keys() == {bad.id}
        info = d.json(f"/api/task/info/{bad.id}")
        assert info["uuid"] == bad.id and "TaskFailed" in info["traceback"]
        assert d.json(f"/api/task/result/{ok.id}") == {"task-id": ok.id, "state": SUCCESS,
                                                         "result": 5}
        assert "tasks.add" in d.json("/api/task/types")["task-types"]
        assert d.json("/api/queues/length") == {"active_queues": [
            {"name": "default", "messages": 0}]}
        assert any(w["alive"] for w in d.json("/api/workers").values())
        assert d.json("/api/task/info/nope", status=404)["error"]
        # async-apply: the door for other languages, checked as delay() checks.
        queued = d.json("/api/task/async-apply/tasks.add", "POST", {"args": [20, 22]})
        assert project.app.AsyncResult(queued["task-id"]).get(timeout=30) == 42
        assert "tasks.nope" in d.json("/api/task/async-apply/tasks.nope", "POST",
                                      {"args": []}, status=404)["error"]
        assert d.json("/api/task/async-apply/tasks.add", "POST", {"args": "1, 2"},
                      status=400)["error"].startswith("TypeError")
        late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        assert "Revoked" in d.json(f"/api/task/revoke/{late.id}", "POST")["message"]
        assert late.state == REVOKED
        # The workers' per-minute counters feed /metrics.
        wait_until(lambda: 'litequeue_task_runs{task="tasks.add",state="SUCCESS"}' in
                   d.request("/metrics")[2], 30, "the counters to reach /metrics")
        metrics = d.request("/metrics")[2]
        assert 'litequeue_queue_length{queue="default"} 0' in metrics
        assert 'litequeue_task_runtime_seconds_bucket{task="tasks.add",le="+Inf"}' in metrics
        assert 'litequeue_tasks{queue="default",state="FAILURE"} 1' in metrics
        assert re.search(r"^litequeue_worker_processes 3$", metrics, re.M)

    def test_counters_outlive_pruned_results(self, project, workers, dashboards):
        workers.start(project)
        for i in range(5):
            project.delay("add", i, i).get(timeout=30)
        wait_until(lambda: sql(project.db, "SELECT sum(succeeded) FROM stats")[0][0] == 5, 30,
                   "the worker's counters")
        wait_until(lambda: sql(project.db, "SELECT sum(processed), sum(failed) FROM workers")
                   == [(5, 0)], 30, "each worker process's totals")
        sql_write(project.db, "DELETE FROM tasks")          # as result_expires would
        d = dashboards(project)
        hour = d.json("/data/overview")["hour"]
        assert len(hour) == 60 and sum(m[1] for m in hour) == 5

    def test_odd_requests_get_clear_answers(self, project, dashboards):
        odd = project.app.tasks["tasks.add"].apply_async((1, 1), task_id="id/with/slash",
                                                          countdown=600)
        d = dashboards(project)
        assert d.json("/data/task/id%2Fwith%2Fslash")["id"] == odd.id
        assert d.json("/data/tasks?before=99999999999999999999999", status=400)["error"]
        assert d.json(f"/api/task/result/{odd.id.replace('/', '%2F')}?timeout=nan",
                      status=400)["error"]
        import http.client
        conn = http.client.HTTPConnection(d.host, timeout=10)
        conn.putrequest("POST", "/api/task/revoke/id%2Fwith%2Fslash")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 411
        conn.close()
        assert odd.detailed_state == SCHEDULED
        assert "Revoked" in d.json("/api/task/revoke/id%2Fwith%2Fslash", "POST")["message"]

    def test_reads_never_wait_for_the_write_lock(self, project, dashboards):
        task_id = project.delay("add", 1, 1).id
        d = dashboards(project)
        holder = apsw.Connection(project.db)
        holder.execute("BEGIN IMMEDIATE")             # another process's long write
        try:
            for path in ("/data/overview", "/data/tasks", f"/data/task/{task_id}",
                         "/data/workers", "/data/queues", "/data/schedules", "/metrics",
                         "/healthcheck", "/api/tasks", "/api/queues/length", "/", "/tasks"):
                began = time.monotonic()
                code, _, _ = d.request(path)
                assert code in (200, 503) and time.monotonic() - began < 5, path
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    def test_security_host_origin_csrf_auth_and_read_only(self, project, dashboards):
        late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        d = dashboards(project)
        assert d.url.startswith("http://127.0.0.1:")
        # DNS rebinding: a page served under another name cannot read the API.
        assert d.request("/data/overview", headers={"Host": f"evil.example:{d.host.split(':')[1]}"})[0] == 421
        # A cross-site POST changes nothing, even with the token; a same-origin one needs it.
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            assert d.request(f"/action/revoke/{late.id}", "POST", {}, headers)[0] == 403
        assert d.request(f"/action/revoke/{late.id}", "POST", {}, auth=False,
                         headers={"Origin": f"http://{d.host}"})[0] == 401
        assert late.detailed_state == SCHEDULED
        page = d.request("/", auth=False)              # the page: code, no data, no secret
        config = json.loads(re.search(r'id="config">(.*?)</script>', page[2]).group(1))
        assert config["token"] is None and d.token not in page[2]
        assert "nonce-" in page[1]["Content-Security-Policy"]
        assert "default-src 'none'" in page[1]["Content-Security-Policy"]
        assert d.json(f"/action/revoke/{late.id}", "POST", {}, {
            "Origin": f"http://{d.host}"}) == {"ok": True}
        assert late.state == REVOKED
        # Any address but loopback needs --auth, said in one line.
        refused = lq("dashboard", project.db, "--host", "0.0.0.0", cwd=project.dir)
        assert refused.returncode == 1 and "--auth" in refused.stderr
        assert "Traceback" not in refused.stderr
        locked = dashboards(project, "--auth", "ops", "--read-only",
                            env={**os.environ, "LITEQUEUE_DASHBOARD_PASSWORD": "s3cret"})
        assert locked.request("/data/overview", auth=False)[0] == 401
        basic = {"Authorization": "Basic " + __import__("base64").b64encode(
            b"ops:s3cret").decode()}
        assert locked.request("/data/overview", headers=basic)[0] == 200
        wrong = {"Authorization": "Basic " + __import__("base64").b64encode(
            b"ops:guess").decode()}
        assert locked.request("/data/overview", headers=wrong)[0] == 401
        assert locked.request("/data/overview", headers=wrong, auth=False)[0] == 401
        other = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        assert locked.request(f"/api/task/revoke/{other.id}", "POST", {}, basic)[0] == 403
        assert other.detailed_state == SCHEDULED
        assert json.loads(re.search(r'id="config">(.*?)</script>', locked.request(
            "/", headers=basic)[2]).group(1))["readOnly"] is True


@pytest.mark.worker
class TestAlertsAndSystemd:

    @pytest.mark.timeout(120)
    def test_failures_are_mailed_as_a_digest_to_a_real_smtp_server(self, project, workers,
                                                                    tmp_path):
        maildir = tmp_path / "maildir"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        smtpd = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l",
                                  f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Mailbox",
                                  str(maildir)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def listening():
                with socket.socket() as probe:
                    return probe.connect_ex(("127.0.0.1", port)) == 0
            wait_until(listening, 20, "the SMTP server to listen")
            worker = workers.start(project, concurrency=2, settings={
                "task_error_emails": True, "admins": [["Ops", "ops@example.com"]],
                "email_host": "127.0.0.1", "email_port": port, "email_interval": 1.0,
                "server_email": "litequeue@example.com"})
            failed = [project.delay("fail", f"storm {i}") for i in range(40)]
            for r in failed:
                r.get(timeout=30, propagate=False)
            project.delay("add", 1, 1).get(timeout=30)

            def mails():
                import mailbox
                return list(mailbox.Maildir(str(maildir))) if maildir.exists() else []

            def counted():
                return sum(int(re.search(r"tasks\.fail: (\d+) failure", m.get_payload())
                               .group(1)) for m in mails())
            wait_until(lambda: counted() == 40, 60,
                       lambda: f"40 failures mailed, got {counted()} in {len(mails())} mail(s)")
            # A storm of 40 failures is a digest or two, not 40 mails.
            assert 1 <= len(mails()) <= 3
            first = mails()[0]
            assert first["To"] == "Ops <ops@example.com>"
            assert first["From"] == "litequeue@example.com"
            assert "tasks.fail" in first["Subject"]
            assert "TaskFailed: storm" in first.get_payload()
            assert "mailed" in worker.log_text() and "MainProcess" in worker.log_text()
        finally:
            os.killpg(smtpd.pid, signal.SIGTERM)
            smtpd.wait(timeout=10)

    def test_worker_speaks_systemd_notify(self, project, workers, tmp_path, monkeypatch):
        path = str(tmp_path / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(30)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            monkeypatch.setenv("WATCHDOG_USEC", "400000")      # a ping every 0.2 s
            worker = workers.start(project, concurrency=1, ready=False)
            got = []
            while not any(m.startswith("READY=1") for m in got):
                got.append(sock.recv(4096).decode())
            assert f"MAINPID={worker.pid}" in got[-1]
            pings = 0
            began = time.monotonic()
            while pings < 3:
                if sock.recv(4096).decode() == "WATCHDOG=1":
                    pings += 1
            assert time.monotonic() - began < 5
            worker.signal(signal.SIGTERM)
            message = ""
            while message != "STOPPING=1":
                message = sock.recv(4096).decode()
            assert worker.wait(30) == 0


def pause_default_and_queue_beside_it(project, cli):
    """Pause queue default (cli: lq or lq_here) and queue a task on it and one on queue
    other: the other runs while this one waits. Returns the waiting task's result."""
    assert "queue default paused" in cli("pause", project.db, "default",
                                         cwd=project.dir).stdout
    held = project.delay("add", 1, 1)
    other = project.app.tasks["tasks.add"].apply_async((2, 2), queue="other")
    assert other.get(timeout=30) == 4
    assert held.state == PENDING
    return held


class TestQueuePause:

    def test_a_paused_queue_waits_and_resumes_at_once(self, project, here):
        # A worker child's loop on a thread (no process), serving both queues.
        here(project).start(queues=("default", "other"))
        held = pause_default_and_queue_beside_it(project, lq_here)
        assert "PAUSED since" in lq_here("status", project.db, cwd=project.dir).stdout
        assert held.state == PENDING
        resumed_at = time.monotonic()
        assert "queue default resumed" in lq_here("resume", project.db, "default",
                                                  cwd=project.dir).stdout
        assert held.get(timeout=30) == 2
        assert time.monotonic() - resumed_at < 5
        assert "was not paused" in lq_here("resume", project.db, "default",
                                           cwd=project.dir).stdout
        assert lq_here("pause", project.db, "", cwd=project.dir).returncode == 2

    @pytest.mark.worker
    def test_the_dashboard_shows_a_paused_queue(self, project, workers, dashboards):
        """With a worker's and a dashboard's processes (pausing and resuming itself:
        test_a_paused_queue_waits_and_resumes_at_once)."""
        workers.start(project, "-Q", "default,other", concurrency=2)
        held = pause_default_and_queue_beside_it(project, lq)
        d = dashboards(project)
        assert "is paused" in d.json(f"/data/task/{held.id}")["why"]
        assert [q["paused"] for q in d.json("/data/queues") if q["name"] == "default"] == [True]
        assert all(c["ok"] for c in d.json("/data/overview")["health"]
                   if c["name"] in ("queues served", "oldest waiting"))
        assert held.state == PENDING
        resumed_at = time.monotonic()
        assert "queue default resumed" in lq("resume", project.db, "default",
                                             cwd=project.dir).stdout
        assert held.get(timeout=30) == 2
        assert time.monotonic() - resumed_at < 5


@pytest.mark.worker
@pytest.mark.browser
class TestDashboardInChromium:

    @pytest.mark.timeout(180)
    def test_the_page_in_a_real_browser(self, project, workers, dashboards, tmp_path):
        from selenium.webdriver.common.by import By
        hostile = "<img src=x onerror=alert(1)>"
        project.delay("echo", hostile)           # queued before any worker: shows PENDING
        d = dashboards(project)
        browser = _chromium(tmp_path)

        def text():
            """What the page shows now, read in one step (the view redraws every second)."""
            return browser.execute_script(
                "const m = document.querySelector('main'); return m ? m.innerText : ''")

        def click(xpath):
            page_click(browser, By.XPATH, xpath)
        try:
            browser.get(d.login_url)             # the printed URL: the token in its fragment
            assert "token" not in browser.current_url
            wait_until(lambda: "Health" in text() and "live" in browser.find_element(
                By.ID, "live").text, 20, "the overview to load")
            browser.save_screenshot(str(tmp_path / "overview-empty.png"))
            # The tasks page shows the hostile argument as text, and no script ran.
            click("//nav/a[text()='Tasks']")
            wait_until(lambda: hostile in text(), 20, "the hostile text, as text")
            assert browser.execute_script("return document.querySelectorAll('main img').length") == 0
            # A task finishing appears within 2 s, live.
            workers.start(project)
            finished = project.delay("add", 20, 22)
            finished.get(timeout=30)
            done_at = time.monotonic()
            wait_until(lambda: finished.id in text(), 2.0,
                       "the finished task on the page within 2 s")
            assert time.monotonic() - done_at < 2.0
            browser.save_screenshot(str(tmp_path / "tasks.png"))
            # Revoke a scheduled task with its button.
            late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
            browser.get(d.site_url + "task/" + late.id)
            wait_until(lambda: "its ETA is" in text(), 20, "the why-not-running line")
            click("//button[text()='Revoke']")
            wait_until(lambda: late.state == REVOKED, 10, "the revoke click to work")
            wait_until(lambda: REVOKED in text(), 10, "the page to show REVOKED")
            browser.save_screenshot(str(tmp_path / "task.png"))
            # The overview's charts draw from the workers' counters.
            browser.get(d.site_url)
            wait_until(lambda: browser.execute_script(
                "return document.querySelectorAll('svg rect').length") >= 1, 20,
                "the charts' bars")
            browser.save_screenshot(str(tmp_path / "overview.png"))
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
        finally:
            browser.quit()
