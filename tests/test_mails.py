"""Failure mails against a real SMTP server (aiosmtpd in a subprocess): headers stay one
line whatever the task names hold, and a mail that fails keeps its failures for the next."""

import contextlib
import email
import email.policy
import mailbox
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

import litequeue

from .helpers import wait_until

pytestmark = pytest.mark.timeout(120)

# Six failing tasks with 80-character names, and one whose name would add a header.
LONG_NAMES = [f"tasks.long_{i}_".ljust(80, "x") for i in range(6)]
EVIL_NAME = "tasks.evil\r\nBcc: x@evil"
LONG_NAMES_SOURCE = f'''\
from tasks import TaskFailed, app


def _failing(name):
    def failing(message):
        raise TaskFailed(message + ": " + name)
    return failing


for _name in {LONG_NAMES + [EVIL_NAME]!r}:
    app.task(name=_name)(_failing(_name))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def smtp_server(port, maildir):
    """aiosmtpd delivering into a Maildir, listening on 127.0.0.1:port until the end."""
    smtpd = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                              "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        def listening():
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, 20, "the SMTP server to listen")
        yield
    finally:
        os.killpg(smtpd.pid, signal.SIGTERM)
        smtpd.wait(timeout=10)


def mails(maildir):
    return [(key, maildir.joinpath("new", key).read_bytes())
            for key in mailbox.Maildir(str(maildir)).keys()] if maildir.exists() else []


def mail_settings(port, interval):
    return {"task_error_emails": True, "admins": [["Ops", "ops@example.com"]],
            "email_host": "127.0.0.1", "email_port": port, "email_interval": interval,
            "server_email": "litequeue@example.com"}


def failure_counts(maildir):
    """{task name as the digest shows it: failures}, summed over every mail."""
    counts = {}
    for _, raw in mails(maildir):
        body = mailbox.MaildirMessage(raw).get_payload(decode=True).decode()
        for name, n in re.findall(r"^(\S.*): (\d+) failure\(s\); the latest:$", body, re.M):
            counts[name] = counts.get(name, 0) + int(n)
    return counts


def test_header_text_is_one_clipped_line():
    text = litequeue._one_line("a\r\nBcc: x@evil\u2028\x85\t" + "y" * 300, 50)
    assert len(text) == 50 and text.endswith("...") and text.isprintable()
    assert text.startswith("a\\r\\nBcc: x@evil\\u2028\\x85\\t")
    assert litequeue._one_line("short", 50) == "short"


@pytest.mark.worker
def test_long_and_hostile_task_names_make_one_mail_with_clean_headers(project, workers,
                                                                      tmp_path):
    (project.dir / "longnames.py").write_text(LONG_NAMES_SOURCE)
    maildir, port = tmp_path / "maildir", free_port()
    with smtp_server(port, maildir):
        # One digest: the failures all finish well inside the first interval.
        workers.start(project, app=("tasks", "longnames"), concurrency=2,
                      settings=mail_settings(port, 8.0))
        results = [project.app.send_task(name, ["boom"]) for name in LONG_NAMES + [EVIL_NAME]]
        for r in results:
            r.get(timeout=30, propagate=False)
        assert {r.state for r in results} == {litequeue.FAILURE}
        wait_until(lambda: mails(maildir), 60, "a failure mail")
        (_, raw), = mails(maildir)
        counts = failure_counts(maildir)
        assert {name: counts.get(name) for name in LONG_NAMES} == dict.fromkeys(LONG_NAMES, 1)
        assert counts.get(litequeue._shown(EVIL_NAME)) == 1
        head = raw.split(b"\n\n", 1)[0].decode()
        # Folded continuation lines start with white space; every header line is a known one.
        names = [line.split(":", 1)[0] for line in head.splitlines() if not line[:1].isspace()]
        assert not {n.lower() for n in names} & {"bcc", "cc"}, head
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message["Bcc"] is None and message["To"] == "Ops <ops@example.com>"
        subject = " ".join(message["Subject"].split())
        assert subject.startswith("[litequeue] 7 task failure(s) on ")
        assert len(subject) <= 200 and subject.endswith("...")
        assert "\r" not in message["Subject"] and "Bcc: x@evil" not in head.replace(
            "\\r\\nBcc: x@evil", "")


@pytest.mark.worker
def test_failures_of_a_refused_mail_come_with_a_later_one(project, workers, tmp_path):
    maildir, port = tmp_path / "maildir", free_port()
    # Nothing listens on the port yet: the first attempt gets "connection refused".
    worker = workers.start(project, concurrency=2, settings=mail_settings(port, 1.0))
    first = [project.delay("fail", f"before {i}") for i in range(3)]
    for r in first:
        r.get(timeout=30, propagate=False)
    wait_until(lambda: "cannot mail" in worker.log_text(), 60,
               lambda: "the refused attempt in the log:\n" + worker.log_text())
    later = [project.delay("fail", f"after {i}") for i in range(2)]
    for r in later:
        r.get(timeout=30, propagate=False)
    with smtp_server(port, maildir):
        wait_until(lambda: failure_counts(maildir).get("tasks.fail") == 5, 60,
                   lambda: f"5 failures mailed, got {failure_counts(maildir)}")
        wait_until(lambda: "failure mails work again" in worker.log_text(), 10,
                   "the mailer to say it works again")
    log = worker.log_text()
    # Said once for the streak of refused attempts, with the reason.
    assert log.count("cannot mail") == 1 and "ConnectionRefusedError" in log, log
