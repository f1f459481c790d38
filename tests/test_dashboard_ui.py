"""The dashboard as an operator's tool: dated charts, bookmarkable filters, actions that
fit a task's state, schedule and rate-limit actions, a workflow's timeline. Python-level
tests of the JSON and the actions, then one test that drives the page in Chromium."""

import time

import pytest

import litequeue
from litequeue import UnknownTask, chord

from .helpers import _chromium, insert_schedule, pack, page_click, sql, wait_until


def test_schedule_actions_rate_limits_states_and_workflow(project):
    admin = project.app.admin
    add = project.app.tasks["tasks.add"]
    add.delay(0, 0)                      # creates the file
    insert_schedule(project.db, "nightly", next_fire=time.time() + 3600)
    fired = admin.run_schedule("nightly")
    assert project.state(fired) == "PENDING" and project.row(fired)["name"] == "tasks.add"
    assert admin.disable_schedule("nightly") and not admin.disable_schedule("nightly")
    view = litequeue._schedule_view(admin.schedules()[0])
    assert view["off"] and view["error"] == "disabled by an operator"
    checks = litequeue._health_checks(project.app, 300)
    assert [c["ok"] for c in checks if c["name"] == "schedules"] == [True]
    assert admin.enable_schedule("nightly") and not admin.enable_schedule("nightly")
    with pytest.raises(UnknownTask):
        admin.run_schedule("nope")
    with pytest.raises(UnknownTask):
        admin.disable_schedule("nope")

    assert admin.set_rate_limit("tasks.add", "10/m") == "10/m"
    assert [(r["name"], r["rate"], r["interval"]) for r in admin.rate_limits()] == \
        [("tasks.add", "10/m", 6.0)]
    queued = add.delay(1, 1)
    assert sql(project.db, "SELECT rate_key FROM tasks WHERE id = ?", queued.id) == \
        [("tasks.add",)]
    assert admin.set_rate_limit("tasks.add", None) is None and admin.rate_limits() == []
    with pytest.raises(litequeue.ConfigurationError):
        admin.set_rate_limit("tasks.add", "fast")
    with pytest.raises(UnknownTask):                   # Flower answers 404 for it too
        admin.set_rate_limit("tasks.nosuch", "10/s")
    assert admin.rate_limits() == []

    running = add.delay(2, 2)
    sql(project.db, "UPDATE tasks SET state = 'STARTED', meta = ? WHERE id = ?",
        pack(["PROGRESS", {"current": 1, "total": 3}]), running.id)
    states = admin.states()
    shown = len(litequeue._STATES_SHOWN)
    assert states[:shown] == list(litequeue._STATES_SHOWN) and states[shown:] == ["PROGRESS"]
    tasks, _ = admin.page(state="PROGRESS")
    assert [t["id"] for t in tasks] == [running.id]

    body = chord([add.s(i, i) for i in range(3)])(project.app.tasks["tasks.echo"].s())
    members = [r.id for r in body.parent.results]
    for task_id in (body.id, members[1]):
        flow = admin.workflow(task_id)
        assert [t["id"] for t in flow] == members + [body.id]
        assert {t["group_id"] for t in flow[:3]} == {body.parent.id}
    assert [t["id"] for t in admin.workflow(queued.id)] == [queued.id]


@pytest.mark.worker
def test_the_new_json_and_actions_over_http(project, dashboards):
    project.delay("add", 1, 1)
    insert_schedule(project.db, "nightly", next_fire=time.time() + 3600)
    d = dashboards(project)
    assert d.json("/data/states")[:2] == ["PENDING", "SCHEDULED"]
    body = chord([project.app.tasks["tasks.add"].s(i, i) for i in range(2)])(
        project.app.tasks["tasks.echo"].s())
    assert len(d.json(f"/data/workflow/{body.id}")) == 3
    d.json("/data/workflow/nope", status=404)
    assert d.json("/action/schedule/disable/nightly", "POST") == {"ok": True}
    assert d.json("/data/schedules")[0]["off"] is True
    assert d.json("/action/schedule/enable/nightly", "POST") == {"ok": True}
    fired = d.json("/action/schedule/run/nightly", "POST")["task"]
    assert project.state(fired) == "PENDING"
    d.json("/action/schedule/run/nope", "POST", status=404)
    d.json("/action/fork/nope", "POST", {"from": 0}, status=404)
    d.json(f"/action/fork/{body.id}", "POST", {"from": "1"}, status=400)
    # Flower's form: ratelimit=10/s; a browser without the CSRF token is refused.

    import http.client
    conn = http.client.HTTPConnection(d.host, timeout=30)
    conn.request("POST", "/api/task/rate-limit/tasks.add", body="ratelimit=10/s",
                 headers={"Host": d.host, "Content-Type": "application/x-www-form-urlencoded",
                          "Authorization": f"Bearer {d.token}"})
    response = conn.getresponse()
    assert response.status == 200 and b"10/s" in response.read()
    conn.close()
    assert [r["rate"] for r in d.json("/data/rate-limits")] == ["10/s"]
    assert d.json("/api/task/rate-limit/tasks.add", "POST", {"ratelimit": "0"}) == \
        {"message": "rate limit removed"}
    d.json("/api/task/rate-limit/tasks.add", "POST", {"ratelimit": "quick"}, status=400)
    assert d.request("/action/schedule/disable/nightly", "POST", auth=False,
                     headers={"Origin": f"http://{d.host}"})[0] == 401   # needs the token


@pytest.mark.worker
def test_read_only_refuses_the_new_actions(project, dashboards):
    project.delay("add", 1, 1)
    insert_schedule(project.db, "nightly", next_fire=time.time() + 3600)
    d = dashboards(project, "--read-only")
    d.json("/action/schedule/run/nightly", "POST", status=403)
    d.json("/api/task/rate-limit/tasks.add", "POST", {"ratelimit": "1/s"}, status=403)
    d.json("/action/fork/whatever", "POST", {"from": 0}, status=403)
    assert project.app.admin.rate_limits() == [] and d.json("/data/states")
    assert d.json("/data/workflows") == [] and d.json("/data/concurrency-limits") == {
        "tasks": [], "queues": []}


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_operator_s_views_in_chromium(project, workers, dashboards, tmp_path):
    from selenium.webdriver.common.by import By
    add = project.app.tasks["tasks.add"]
    failed = project.delay("fail", "boom")
    insert_schedule(project.db, "nightly", next_fire=time.time() + 3600)
    w = workers.start(project)
    body = chord([add.s(i, i) for i in range(3)])(project.app.tasks["tasks.echo"].s())
    body.get(timeout=30)
    wait_until(lambda: failed.state == "FAILURE", 30, "the failure")
    parent = add.apply_async((1, 1), countdown=600, link=add.s(5))
    follower = project.app.AsyncResult(project.app.admin.task(parent.id)["children"][0])
    d = dashboards(project)
    browser = _chromium(tmp_path)
    js = browser.execute_script

    def text():
        return js("const m = document.querySelector('main'); return m ? m.innerText : ''")

    def click(css):
        page_click(browser, By.CSS_SELECTOR, css)
    try:
        # 1. Charts: a time axis (HH:MM ticks), a colour key, a hover value per bar.
        browser.get(d.login_url)             # the printed URL: the token in its fragment
        wait_until(lambda: js("return document.querySelectorAll('.chart').length") == 3, 20,
                   "the charts")
        ticks = js("return [...document.querySelectorAll('.chart svg text.tick')]"
                   ".map(t => t.textContent)")
        assert any(len(t) == 5 and t[2] == ":" for t in ticks), ticks
        assert js("return document.querySelectorAll('.keys .key').length") >= 7
        def titles():
            return js("return [...document.querySelectorAll('.chart svg title')]"
                      ".map(t => t.textContent)")
        # The failure reaches the counters within a second; the live page redraws.
        wait_until(lambda: any("succeeded" in t and "failed 1" in t for t in titles()), 20,
                   lambda: f"a chart's hover value to count the failure: {titles()[-3:]}")
        # 2. Filters in the URL: read on load, written on change; headers sort.
        browser.get(d.site_url + "tasks?state=FAILURE")
        wait_until(lambda: failed.id in text(), 20, "the failed task")
        assert body.id not in text()
        assert js("return document.getElementById('f-state').value") == "FAILURE"
        js("const s = document.getElementById('f-state'); s.value = 'SUCCESS';"
           "s.dispatchEvent(new Event('change'))")
        wait_until(lambda: "state=SUCCESS" in browser.current_url and body.id in text(), 10,
                   "the URL and the list to follow the filter")
        click("th[data-key=name]")
        wait_until(lambda: "sort=name" in browser.current_url, 10, "the sort in the URL")

        def names():
            return js("return [...document.querySelectorAll('tbody tr td:nth-child(2)')]"
                      ".map(t => t.textContent)")

        def sorted_by_name():
            shown = names()
            return shown == sorted(shown) and "tasks.echo" in shown
        # The URL changes at the click, the rows once the page's fetch has answered.
        wait_until(sorted_by_name, 10, lambda: f"the rows sorted by name: {names()}")
        # 3. Actions fit the state: a FAILURE offers Retry only.
        browser.get(d.site_url + "task/" + failed.id)
        wait_until(lambda: js("return !!document.getElementById('actions')"), 20, "actions")
        buttons = js("return [...document.querySelectorAll('#actions button')]"
                     ".map(b => b.textContent)")
        assert buttons == ["Retry"]
        # 4. The why box links its parent; durations read as an operator says them.
        browser.get(d.site_url + "task/" + follower.id)
        wait_until(lambda: js("return document.querySelectorAll('#why a').length") == 1, 20,
                   "the why box's link")
        click("#why a")
        wait_until(lambda: browser.current_url.endswith("/task/" + parent.id) and
                   "its ETA is" in text(), 10, "the parent's page")
        assert js("return [secs(108.03), secs(3 * 3600 + 130), secs(2 * 86400 + 4 * 3600),"
                  " secs(0.004), secs(120)]") == ["1 min 48 s", "3 h 2 min", "2 d 4 h",
                                                   "4.0 ms", "2 min"]
        # 6. A chord's task page draws its workflow on one time axis.
        browser.get(d.site_url + "task/" + body.id)
        wait_until(lambda: js("return document.querySelectorAll('#timeline .member').length")
                   == 4, 20, "the timeline's four bars")
        # The body waited for its header (no "queued" for that time), then was queued.
        body_tip = js("return [...document.querySelectorAll('#timeline .member')].pop()"
                      ".querySelector('title').textContent")
        assert "ready " in body_tip and "(the step before it ended)" in body_tip, body_tip
        assert js("return [...document.querySelectorAll('#timeline .member title')]"
                  ".filter(t => t.textContent.includes('ready ')).length") == 1
        assert js("return [...document.querySelectorAll('#actions button')].length") == 0
        # 5. Schedules: disable from the page, then run now.
        browser.get(d.site_url + "schedules")
        wait_until(lambda: "nightly" in text(), 20, "the schedule")
        click("main button:nth-of-type(2)")                  # Disable
        wait_until(lambda: project.app.admin.schedules()[0]["error"] is not None, 10,
                   "the schedule disabled")
        wait_until(lambda: "disabled" in text() and "Enable" in text(), 10, "Enable offered")
        browser.save_screenshot(str(tmp_path / "schedules.png"))
        # 7. Workers: grow the pool from the page, then shut the worker down.
        browser.get(d.site_url + "workers")
        wait_until(lambda: "1 process(es) · prefork" in text(), 20, "the worker's pool")
        click("main button[title^='Add a process']")
        wait_until(lambda: "2 process(es) · prefork" in text(), 20, "the grown pool")
        js("window.confirm = () => true")
        click("main button.danger")
        assert w.wait(30) == 0
        wait_until(lambda: "shutting down" in text() or w.id not in text(), 20,
                   "the page to show the worker going")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()


class _Snoop:
    """A page on another port of 127.0.0.1, as another local user could serve: it asks
    its own server for /steal and keeps every request's headers."""

    PAGE = (b"<!doctype html><html><body><p id=s>snooping</p><script>"
            b"fetch('/steal').then(() => { document.getElementById('s').textContent = 'done'; });"
            b"</script></body></html>")

    def __init__(self):
        import http.server
        import threading
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(_Snoop.PAGE)))
                self.end_headers()
                self.wfile.write(_Snoop.PAGE)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.mark.worker
@pytest.mark.browser
@pytest.mark.timeout(120)
def test_a_page_on_another_loopback_port_gets_no_token_from_the_browser(
        project, dashboards, tmp_path):
    """Cookies ignore the port, and SameSite counts every port of 127.0.0.1 as one site:
    a token cookie would reach a page another user serves on 127.0.0.1. The token is in the
    printed URL's fragment and the dashboard's own storage, sent in a header by its page
    only; the other page's requests carry nothing of it, and cannot read it."""
    project.delay("add", 1, 1)
    d = dashboards(project)
    snoop = _Snoop()
    browser = _chromium(tmp_path)
    js = browser.execute_script
    try:
        browser.get(d.login_url)
        wait_until(lambda: js("return document.querySelectorAll('.chart').length") == 3, 20,
                   "the overview, logged in")
        assert "#token" not in browser.current_url and d.token not in browser.current_url
        browser.get(f"http://127.0.0.1:{snoop.port}/")
        wait_until(lambda: js("return document.getElementById('s').textContent") == "done",
                   20, "the other page's request")
        assert {"/", "/steal"} <= {path for path, _ in snoop.seen}
        for path, headers in snoop.seen:
            assert d.token not in repr(headers), (path, headers)
        assert js("return Object.values(localStorage).join(' ')").find(d.token) < 0
        assert d.token not in js("return document.cookie")
        # Back on the dashboard, in a new page load: still logged in, from its storage.
        # On a phone's width each row reads as a card: nothing to scroll sideways.
        browser.set_window_size(390, 844)
        browser.get(d.site_url + "tasks")
        wait_until(lambda: js("return document.querySelectorAll('main tbody tr').length")
                   >= 1, 20, "the tasks page, logged in")
        assert js("const s = document.querySelector('.scroll');"
                  "return s.scrollWidth - s.clientWidth") <= 1
        assert js("return getComputedStyle(document.querySelector('main tbody td'), "
                  "'::before').content") == '"id: "'
        browser.set_window_size(1400, 1000)
        # Without the token (another browser profile), the page explains how to log in.
        js("localStorage.clear()")
        browser.get(d.site_url)
        wait_until(lambda: "needs its token" in js("return document.body.innerText"), 20,
                   "the login explanation")
        assert "null" not in js("return document.querySelector('main').innerText")
        # Under 127.0.0.1, where another user could have left a script while the port was
        # theirs, the page takes no token, not even from the printed URL's fragment.
        browser.get(f"{d.url}#token={d.token}")
        wait_until(lambda: "needs its token" in js("return document.body.innerText"), 20,
                   "the page refusing the token under 127.0.0.1")
        assert "#token" not in browser.current_url
        assert d.token not in js("return Object.values(localStorage).join(' ')")
    finally:
        browser.quit()
        snoop.close()


def test_a_disabled_schedule_still_says_when_it_last_fired():
    last = 1_780_000_000.0
    row = {"name": "nightly", "task": "tasks.add", "schedule": "every:20.0", "tz": "UTC",
           "queue": "default", "catch_up": "once", "fires": 8, "last_fire": last,
           "next_fire": last + 20, "error": litequeue._SCHEDULE_OFF}
    view = litequeue._schedule_view(row)
    assert view["off"] and view["schedule"] == "every 20 s" and view["next"] == []
    assert view["last_fire"] == "2026-05-28T20:26:40+00:00"
    assert litequeue._schedule_view(dict(row, error=None))["next"]
    cron = litequeue._schedule_view(dict(row, schedule="cron:0 3 * * *", error=None))
    assert cron["schedule"] == "cron 0 3 * * *" and cron["next"][0]["at"].endswith("03:00:00+00:00")
