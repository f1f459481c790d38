"""The dashboard as a shared machine's boundary: who may read and act (a token, a
password kept out of argv), and what a hostile client can cost it (connections, bodies,
guesses, malformed requests, shutdown).

Real sockets, a real second uid (created as root, as CI runs), real processes, each
reaped; nothing waits a fixed time.
"""

import base64
import contextlib
import http.client
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from litequeue import PENDING, REVOKED, SCHEDULED

from .helpers import LITEQUEUE_PY, Dashboard, Project, _suppress_lookup, lq, wait_until

pytestmark = pytest.mark.timeout(120)

OTHER = "lqother"
# The other user's client: the system's Python (the venv's lives under /root, 0700).
OTHER_PYTHON = "/usr/bin/python3"

# Run as OTHER: each (method, path, headers) request, and an attempt to read a file.
AS_OTHER = r'''
import json, sys, urllib.error, urllib.request
base, requests, secret_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
out = {"answers": []}
for method, path, headers in requests:
    data = b"{}" if method == "POST" else None
    if data:
        headers = dict(headers, **{"Content-Type": "application/json"})
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            out["answers"].append([method, path, r.status, r.read().decode("utf-8", "replace")])
    except urllib.error.HTTPError as e:
        out["answers"].append([method, path, e.code, e.read().decode("utf-8", "replace")])
try:
    with open(secret_file) as f:
        out["token_file"] = "read: " + f.read()
except OSError as e:
    out["token_file"] = type(e).__name__
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def other_user():
    if os.geteuid() != 0:
        pytest.fail("this test needs root, to create and become a second user")
    if not os.path.exists(OTHER_PYTHON):
        pytest.fail(f"{OTHER_PYTHON} is missing: the second user runs the system Python")
    try:
        return pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", OTHER], check=True)
        return pwd.getpwnam(OTHER)


@pytest.fixture
def shared_project():
    """A project in a directory every user may traverse (as /srv/app would be), made
    under umask 077: the database is 0600 and the other user cannot open it."""
    top = Path(tempfile.mkdtemp(prefix="lq-shared-"))
    old = os.umask(0o077)
    try:
        os.chmod(top, 0o711)
        project = Project(top / "proj")
        os.chmod(project.dir, 0o711)
        yield project
    finally:
        os.umask(old)
        shutil.rmtree(top, ignore_errors=True)


def as_other(user, base, requests, secret_file):
    def drop():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    done = subprocess.run([OTHER_PYTHON, "-I", "-c", AS_OTHER, base, json.dumps(requests),
                           str(secret_file)], capture_output=True, text=True, timeout=60,
                          preexec_fn=drop, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.worker
class TestTheTokenIsTheBoundary:

    def test_another_uid_on_loopback_gets_nothing(self, shared_project, other_user,
                                                  dashboards):
        project = shared_project
        secret = "s3cret-argument-" + os.urandom(4).hex()
        late = project.app.tasks["tasks.echo"].apply_async((secret,), countdown=600)
        assert os.stat(project.db).st_mode & 0o077 == 0        # umask 077: 0600
        d = dashboards(project, "--metrics-public")
        # The token file: 0600, ours. Make its directory traversable, so that the file's
        # own mode is what keeps the other user out.
        path = d.token_file
        st = os.stat(path)
        assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o600)
        os.chmod(path.parent, 0o711)
        token = path.read_text().strip()
        assert len(token) >= 40 and token in d.login_url
        base = d.url.rstrip("/")
        shells = ["/", "/tasks", f"/task/{late.id}", "/?token=wrong"]    # code, no data
        paths = [*shells, "/data/overview", "/data/tasks", "/login",
                 f"/data/task/{late.id}", "/data/workers", "/data/queues", "/data/schedules",
                 "/api/workers", "/api/tasks", "/api/task/types", f"/api/task/info/{late.id}",
                 f"/api/task/result/{late.id}", "/api/queues/length",
                 f"/api/tasks?token={token[:-1]}", f"/api/tasks?token={token}"]
        posts = ["/api/task/async-apply/tasks.add", "/api/task/send-task/tasks.add",
                 f"/api/task/revoke/{late.id}", f"/action/revoke/{late.id}",
                 "/action/pause/default", "/action/purge/default", "/action/retry-failed",
                 "/api/worker/shutdown/any", "/api/worker/pool/grow/any",
                 "/api/task/rate-limit/tasks.echo", "/action/schedule/run/any"]
        wrong = [{}, {"Authorization": "Bearer " + token[:-1] + "x"},
                 {"Cookie": f"litequeue-token-{d.port}={token[:-1]}x"},
                 {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}]
        requests = [["GET", p, h] for p in paths for h in wrong] + \
                   [["POST", p, h] for p in posts for h in wrong] + \
                   [["GET", "/metrics", {}], ["GET", "/healthcheck", {}]]
        out = as_other(other_user, base, requests, path)
        assert out["token_file"] == "PermissionError"
        for method, p, status, body in out["answers"]:
            assert token not in body
            if p in ("/metrics", "/healthcheck"):       # --metrics-public: no task data
                assert status in (200, 503), (p, status, body)
                assert secret not in body and late.id not in body
                continue
            if method == "GET" and p in shells:         # the page's code, without data
                assert status == 200 and "<html" in body.lower(), (p, status)
                assert secret not in body and late.id not in body, p
                continue
            assert status in (401, 403), (method, p, status, body)
            assert secret not in body and late.id not in body, (method, p, body)
            assert "error" in json.loads(body)
        # Nothing changed: no task queued, revoked, purged, paused.
        assert late.detailed_state == SCHEDULED
        assert not project.app.admin.paused()
        counts, _ = project.app.admin.state_counts()
        assert counts == {"default": {SCHEDULED: 1}}
        # The owner, with the token from the file (a script) or the header, gets it all.
        info = d.json(f"/api/task/info/{late.id}", headers={"Authorization": f"Bearer {token}"})
        assert info["args"] == [secret]

    def test_without_metrics_public_metrics_need_the_token_too(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project)
        for path in ("/metrics", "/healthcheck", "/api/tasks", "/data/overview"):
            code, headers, body = d.request(path, auth=False)
            assert code == 401 and "token" in json.loads(body)["error"], (path, body)
        assert d.request("/metrics")[0] == 200
        assert d.request("/healthcheck")[0] in (200, 503)

    def test_the_token_travels_in_the_fragment_and_a_header_never_a_cookie(
            self, project, dashboards):
        """Cookies ignore the port: a cookie for 127.0.0.1 also goes to a page another user
        serves on another port. So the printed URL puts the token in its fragment (which
        the browser keeps to itself), the page keeps it in its own origin's storage and
        sends it in the Authorization header; nothing sets or accepts a cookie."""
        project.delay("add", 1, 1)
        d = dashboards(project)
        # For a browser, under a host name of this start's own (RANDOM.localhost on loopback).
        site = re.fullmatch(r"http://([0-9a-f]{16}\.localhost):(\d+)/#token=(\S+)", d.login_url)
        assert site and int(site.group(2)) == d.port and site.group(3) == d.token
        assert d.request("/data/overview", headers={"Host": f"{site.group(1)}:{d.port}"})[0] == 200
        assert d.request("/data/overview", headers={"Host": f"0123456789abcdef.localhost:{d.port}"}
                         )[0] == 421
        for path in ("/", f"/?token={d.token}", "/tasks?state=FAILURE", "/data/overview"):
            code, headers, page = d.request(path, auth=path.startswith("/data"))
            assert code == 200 and "Set-Cookie" not in headers, (path, headers)
            assert d.token not in page
        cookie = {"Cookie": f"litequeue-token-{d.port}={d.token}; token={d.token}"}
        assert d.request("/data/overview", headers=cookie, auth=False)[0] == 401
        # A browser's change (it sends Origin or Sec-Fetch-Site) needs the token in the
        # header: a password the browser remembers would go with any site's form.
        late = project.app.tasks["tasks.add"].apply_async((1, 1), countdown=600)
        browser = {"Origin": f"http://{d.host}", "Sec-Fetch-Site": "same-origin"}
        code, _, _ = d.request(f"/action/revoke/{late.id}", "POST", {}, auth=False,
                               headers={**browser, **cookie})
        assert code == 401 and late.detailed_state == SCHEDULED
        assert d.json(f"/action/revoke/{late.id}", "POST", {}, headers=browser) == {"ok": True}
        assert late.detailed_state == "REVOKED"

    def test_two_dashboards_of_one_file_keep_their_own_tokens(self, project, dashboards):
        project.delay("add", 1, 1)
        first, second = dashboards(project), dashboards(project)
        assert first.token != second.token and first.token_file != second.token_file
        for d in (first, second):
            assert d.token_file.read_text().strip() == d.token
            assert d.request("/data/overview")[0] == 200
        first.stop()                       # its file goes with it; the other's stays
        wait_until(lambda: not first.token_file.exists(), message="the first token file gone")
        assert second.token_file.exists() and second.request("/data/overview")[0] == 200


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class TestThePasswordStaysOutOfArgv:

    @pytest.mark.worker
    def test_a_password_in_argv_is_refused_in_one_line(self, project):
        project.delay("add", 1, 1)
        done = lq("dashboard", project.db, "--port", "0", "--auth", "ops:s3cret",
                  cwd=project.dir)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "LITEQUEUE_DASHBOARD_PASSWORD" in done.stderr and "--auth-file" in done.stderr
        env = {**os.environ, "LITEQUEUE_DASHBOARD_PASSWORD": ""}
        empty = run_env(project, env, "--auth", "ops")
        assert empty.returncode == 1 and "empty" in empty.stderr, empty.stderr
        env.pop("LITEQUEUE_DASHBOARD_PASSWORD")
        missing = run_env(project, env, "--auth", "ops")
        assert missing.returncode == 2 and "LITEQUEUE_DASHBOARD_PASSWORD" in missing.stderr

    @pytest.mark.worker
    def test_from_the_environment_never_in_ps(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project, "--auth", "ops",
                       env={**os.environ, "LITEQUEUE_DASHBOARD_PASSWORD": "correct horse"})
        with open(f"/proc/{d.proc.pid}/cmdline", "rb") as f:
            assert b"correct horse" not in f.read()
        assert d.request("/data/overview", headers=basic("ops", "correct horse"),
                         auth=False)[0] == 200
        for user, password in (("ops", "correct hors"), ("op", "correct horse"),
                               ("ops", "correct horse "), ("", "")):
            assert d.request("/data/overview", headers=basic(user, password),
                             auth=False)[0] == 401
        # The token still works beside the password.
        assert d.request("/data/overview")[0] == 200
        # A browser logs in at /login with the password: the page it gets holds the token
        # for its script (no cookie); without the password, /login asks for it.
        # Only under the dashboard's own host name (no other user can have left a script
        # there): elsewhere /login sends the browser to it.
        code, headers, page = d.request("/login", headers=basic("ops", "correct horse"),
                                        auth=False)
        assert code == 303 and d.token not in page
        assert headers["Location"] == d.site_url + "login"
        site = {"Host": d.site_url.split("/")[2]}
        code, headers, page = d.request("/login", headers={**basic("ops", "correct horse"),
                                                           **site}, auth=False)
        assert code == 200 and d.token in page and "Set-Cookie" not in headers
        code, headers, _ = d.request("/login", auth=False)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
        # A wrong token from the page's script is not offered a password prompt.
        code, headers, _ = d.request("/data/overview", auth=False,
                                     headers={"Authorization": "Bearer stale"})
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.worker
    def test_from_a_file_only_if_it_is_ours_and_0600(self, project, other_user, dashboards):
        project.delay("add", 1, 1)
        secret = project.dir / "dashboard.password"
        secret.write_text("from a file\n")
        env = {k: v for k, v in os.environ.items() if k != "LITEQUEUE_DASHBOARD_PASSWORD"}
        for mode, owner in ((0o644, 0), (0o640, 0), (0o600, other_user.pw_uid)):
            os.chown(secret, owner, -1)
            os.chmod(secret, mode)
            refused = run_env(project, env, "--auth", "ops", "--auth-file", secret)
            assert refused.returncode == 1 and "mode 0600" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
        os.chown(secret, 0, -1)
        os.chmod(secret, 0o600)
        d = dashboards(project, "--auth", "ops", "--auth-file", secret, env=env)
        assert d.request("/data/overview", headers=basic("ops", "from a file"),
                         auth=False)[0] == 200
        assert d.request("/data/overview", headers=basic("ops", "from a file\n"),
                         auth=False)[0] == 401

    def test_only_a_salted_hash_is_kept(self, project):
        import litequeue
        project.delay("add", 1, 1)
        server = litequeue._dashboard_server(project.app, "127.0.0.1", 0, ("ops", "pa55word"))
        try:
            kept = repr(vars(server)) + repr(vars(server.auth))
            assert "pa55word" not in kept and b"pa55word" not in server.auth.digest
            other = litequeue._dashboard_server(project.app, "127.0.0.1", 0, ("ops", "pa55word"))
            assert other.auth.digest != server.auth.digest       # a random salt each
            other.server_close()
            assert server.auth.check(b"ops:pa55word") and not server.auth.check(b"ops:pa55wor")
        finally:
            server.server_close()


def run_env(project, env, *args):
    """`litequeue dashboard DB --port 0 ARGS` that must exit at once (refused)."""
    done = subprocess.run([sys.executable, str(LITEQUEUE_PY), "dashboard", project.db, "--port",
                           "0", *map(str, args)], cwd=project.dir, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def raw_request(d, data, timeout=10):
    """Send bytes, read the answer to its end (the server closes): (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else None
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


# Attackers, each run as its own process (a real one is; threads of the test's process would
# share its GIL with the client it times). Each prints "ready", then holds on until its stdin
# closes, and prints how many connections it made.
SLOWLORIS = r'''
import resource, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
held = []
for i in range(n):        # connect, and every other one sends half a request line
    s = socket.socket()
    s.settimeout(2)
    held.append(s)
    try:
        s.connect(("127.0.0.1", port))
        if i % 2:
            s.sendall(b"GET /data/overview HTTP/1.1\r\nHost: x")
    except OSError:
        pass
print("ready", flush=True)
sys.stdin.read()
print(n)
'''
FLOOD = r'''
import select, socket, sys, time
port, count, checked = int(sys.argv[1]), 0, time.monotonic()
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        count += 1
        if count == 200:
            print("ready", flush=True)
    except OSError:
        pass
    if time.monotonic() - checked > 0.1:
        checked = time.monotonic()
        if select.select([sys.stdin], [], [], 0)[0]:
            break
print(count)
'''


def start_helper(code, *args):
    """A helper process running code, once it has printed "ready"."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if select.select([proc.stdout], [], [], 60)[0]:
        line = proc.stdout.readline()
    else:
        line = "nothing within 60 s"
    if line.strip() != "ready":
        stop_helper(proc)
        pytest.fail(f"a helper did not start: {line!r}")
    return proc


def stop_helper(proc):
    """Close its stdin, reap it, and return what it printed last."""
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.strip()


@pytest.mark.worker
class TestAHostileClientCostsLittle:

    @pytest.mark.timeout(180)
    def test_slowloris_and_a_connect_flood_leave_it_answering_and_sigterm_quick(
            self, project, dashboards):
        import resource
        project.delay("add", 1, 1)
        # The usual limit of 1,024 descriptors, and more idle sockets than that.
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, limits[1]))
        try:
            d = dashboards(project)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        helpers = []
        try:
            helpers.append(start_helper(SLOWLORIS, d.port, 1100))
            for _ in range(2):
                helpers.append(start_helper(FLOOD, d.port))
            took = []
            for _ in range(50):
                began = time.monotonic()
                code = d.request("/data/overview")[0]
                took.append(time.monotonic() - began)
                assert code == 200
            took.sort()
            # Answered, and not stuck behind the idle sockets (which wait out their 5 s
            # timeout) or the flood. How fast is a figure, printed here, not a timed
            # assertion: bench/dashboard_flood.py measures it. A full listen queue would
            # cost a dropped SYN (1 s); that is what the bound catches.
            print(f"\nslowloris of 1100 + connect flood from 2 processes: /data/overview in "
                  f"median {took[25] * 1000:.1f} ms, worst of 50 {took[-1] * 1000:.1f} ms")
            assert took[-1] < 1.0, took
            # SIGTERM ends it within 2 s, whatever the clients do.
            began = time.monotonic()
            os.killpg(d.proc.pid, signal.SIGTERM)
            d.proc.wait(timeout=10)
            ended = time.monotonic() - began
            print(f"SIGTERM under the same load: exited in {ended * 1000:.0f} ms")
            assert ended < 2.0
        finally:
            counts = [stop_helper(proc) for proc in helpers]
        print(f"connections: slowloris, flooders: {counts}")
        assert "Traceback" not in d.log.read_text()

    def test_an_idle_connection_is_closed_after_its_timeout(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project)
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")                 # then nothing
            assert s.recv(100) == b""                         # closed by the server
        waited = time.monotonic() - began
        print(f"\nan idle connection was closed after {waited:.1f} s")
        assert waited < 15

    @pytest.mark.timeout(180)
    def test_unauthenticated_bodies_are_never_read(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project)
        d.request("/data/overview")                          # warm: a pooled connection
        before = rss_kib(d.proc.pid)
        body = b"x" * (1 << 20)
        head = (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\nHost: {d.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        answers = []

        def send():
            with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
                s.sendall(head)
                with contextlib.suppress(OSError):
                    s.sendall(body)
                with contextlib.suppress(OSError):
                    answers.append(s.recv(100))
        threads = [threading.Thread(target=send) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = rss_kib(d.proc.pid)
        print(f"\n200 x 1 MiB unauthenticated bodies: RSS {before / 1024:.1f} -> "
              f"{after / 1024:.1f} MiB")
        assert after - before < 8 * 1024
        assert any(a.startswith(b"HTTP/1.1 401") for a in answers)
        counts, _ = project.app.admin.state_counts()
        assert sum(counts["default"].values()) == 1          # nothing was queued

    def test_password_guesses_are_throttled(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project, "--auth", "ops",
                       env={**os.environ, "LITEQUEUE_DASHBOARD_PASSWORD": "right"})
        codes = [d.request("/data/overview", headers=basic("ops", f"guess{i}"), auth=False)[0]
                 for i in range(30)]
        assert codes[0] == 401 and codes[-1] == 429, codes
        code, headers, body = d.request("/data/overview", headers=basic("ops", "x"), auth=False)
        assert code == 429 and int(headers["Retry-After"]) >= 1 and json.loads(body)["error"]
        assert d.request("/data/overview")[0] == 200           # the token is never throttled

    def test_malformed_requests_get_json_errors_and_no_tracebacks(self, project, dashboards):
        project.delay("add", 1, 1)
        d = dashboards(project)
        auth = f"Host: {d.host}\r\nAuthorization: Bearer {d.token}\r\n"
        deep = b"[" * 200_000 + b"]" * 200_000
        cases = [
            (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\n{auth}Content-Length: \u00b2"
             "\r\n\r\n".encode(), 400),
            (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\n{auth}Content-Length: +5\r\n"
             "\r\n{}   ".encode(), 400),
            (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\n{auth}Content-Length: 2\r\n"
             "Content-Length: 3\r\n\r\n{} ".encode(), 400),
            (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\n{auth}Content-Length: 2000000"
             "\r\n\r\n".encode(), 413),
            (f"POST /api/task/async-apply/tasks.add HTTP/1.1\r\n{auth}Content-Type: "
             f"application/json\r\nContent-Length: {len(deep)}\r\n\r\n".encode() + deep, 400),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
            (f"GET / HTTP/1.1\r\n{auth}X-Big: {'b' * 70_000}\r\n\r\n".encode(), 431),
            (f"GET / HTTP/1.1\r\n{auth}".encode() + b"".join(b"X-%d: 1\r\n" % i
                                                          for i in range(200)) + b"\r\n", 431),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 421),
            (f"GET /data/overview HTTP/1.1\r\nHost: {d.host}\r\n\r\n".encode(), 401),
        ]
        for data, status in cases:
            code, headers, body = raw_request(d, data)
            assert code == status, (data[:80], code, body[:200])
            assert headers["content-type"] == "application/json", (status, headers)
            assert json.loads(body)["error"], body
        # A 401 whose client has gone: quiet.
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", d.port)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sendall(f"GET /api/tasks HTTP/1.1\r\nHost: {d.host}\r\n\r\n".encode())
        assert d.request("/data/overview")[0] == 200
        log = d.log.read_text()
        assert "Traceback" not in log and "Error" not in log, log
