"""Failure mails against a real SMTP server (aiosmtpd, on its own thread): headers stay
one line whatever the task names hold, and a mail that fails keeps its failures for the
next. The tasks fail in a worker child's steps and the supervisor's mail step runs, both in
this process (as test_supervisor_steps drives the supervisor's other steps)."""

import contextlib
import email
import email.policy
import logging
import mailbox
import re
import socket

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

import litequeue

from .helpers import closed_at_the_end, wait_until

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
    controller = Controller(Mailbox(str(maildir)), hostname="127.0.0.1", port=port)
    controller.start()          # returns once the server answers
    try:
        yield
    finally:
        controller.stop()


class MailStep:
    """The supervisor's failure mail step (_FailureMailer) on a project's file, with the
    settings of its loaded task modules. once() runs it as the janitor would, on a clock
    that jumps to the time the step asked to be run again: no backoff is waited out. Its
    first run starts the cursor, as a supervisor's first does when it starts."""

    def __init__(self, w):
        self.storage = litequeue._Storage(w.project.db)
        self.mailer = litequeue._FailureMailer(
            self.storage, litequeue._SideDir(w.project.db), dict(w.loaded[0].app.conf),
            socket.gethostname())
        self.clock = 0.0
        self.once()

    def once(self):
        self.clock = self.mailer.step(self.clock)

    def until(self, predicate, timeout, message):
        """Run the step until predicate() holds."""
        wait_until(lambda: self.once() or predicate(), timeout, message)

    def close(self):
        if self.mailer.sending is not None:
            self.mailer.sending[0].join(30)
        self.mailer._unlock()
        self.storage.close()


@pytest.fixture
def mail_step(monkeypatch):
    """mail_step(w): a MailStep, closed at teardown."""
    # Failures are mailed once _ALERT_MARGIN old, for commits that race the cursor; here
    # every failure is committed before the step looks.
    monkeypatch.setattr(litequeue, "_ALERT_MARGIN", 0.0)
    with closed_at_the_end(MailStep) as make:
        yield make


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


def test_long_and_hostile_task_names_make_one_mail_with_clean_headers(project, here,
                                                                      mail_step, tmp_path):
    (project.dir / "longnames.py").write_text(LONG_NAMES_SOURCE)
    maildir, port = tmp_path / "maildir", free_port()
    w = here(project, modules=("tasks", "longnames"), settings=mail_settings(port, 8.0))
    step = mail_step(w)
    with smtp_server(port, maildir):
        results = [project.app.send_task(name, ["boom"]) for name in LONG_NAMES + [EVIL_NAME]]
        assert w.work() == len(results)         # a worker child's steps, in this process
        for r in results:
            r.get(timeout=30, propagate=False)
        assert {r.state for r in results} == {litequeue.FAILURE}
        # One digest: the failures all finish before the step looks again.
        step.until(lambda: mails(maildir), 60, "a failure mail")
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


def test_failures_of_a_refused_mail_come_with_a_later_one(project, here, mail_step,
                                                         tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="litequeue")
    maildir, port = tmp_path / "maildir", free_port()
    # Nothing listens on the port yet: the first attempt gets "connection refused".
    w = here(project, settings=mail_settings(port, 1.0))
    step = mail_step(w)
    first = [project.delay("fail", f"before {i}") for i in range(3)]
    assert w.work() == 3
    for r in first:
        r.get(timeout=30, propagate=False)
    step.until(lambda: "cannot mail" in caplog.text, 60,
               lambda: "the refused attempt in the log:\n" + caplog.text)
    later = [project.delay("fail", f"after {i}") for i in range(2)]
    assert w.work() == 2
    for r in later:
        r.get(timeout=30, propagate=False)
    # A second refused attempt, with the later failures: the same streak.
    step.until(lambda: step.mailer.streak == 2, 60, "a second refused attempt")
    with smtp_server(port, maildir):
        step.until(lambda: failure_counts(maildir).get("tasks.fail") == 5, 60,
                   lambda: f"5 failures mailed, got {failure_counts(maildir)}")
        step.until(lambda: "failure mails work again" in caplog.text, 10,
                   "the mailer to say it works again")
    log = caplog.text
    # Said once for the streak of refused attempts, with the reason.
    assert log.count("cannot mail") == 1 and "ConnectionRefusedError" in log, log
    assert "failure mails work again after 2 failed attempts" in log, log
