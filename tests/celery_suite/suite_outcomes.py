"""A pytest plugin (-p suite_outcomes) for run.py: one record per test of Celery's suite,
with what run.py needs to name a failure's cause, written as JSON to $LQ_SUITE_OUTCOMES.

Also sets every test's timeout to $LQ_SUITE_TIMEOUT seconds, in place of the marks the
suite gives (Celery's @flaky sets 300 s), so that one hung test costs the same on either
engine. Works under xdist: the records travel in the reports' user_properties.
"""
import inspect
import json
import os
import re
import sys

import pytest

KEY = "suite_outcome"
TEST_FILE = "test_canvas.py"
# Signals a worker sends while it runs a task: a handler the test connects in its own
# process hears them only from Celery's embedded worker (a thread of the test process).
WORKER_SIGNALS = {"task_received", "task_prerun", "task_postrun", "task_success",
                  "task_failure", "task_retry", "task_revoked", "task_rejected",
                  "task_unknown", "task_internal_error"}


def _source(item):
    try:
        return inspect.getsource(item.function)
    except (OSError, TypeError, AttributeError):
        return ""


def _backend_internals(source):
    """The Redis result backend's own parts the test's code reads."""
    return sorted(set(re.findall(r"\b(get_key_for_group|result_consumer)\b", source)))


def _worker_signals(source):
    """The worker-side signals the test's own code connects a handler to."""
    return sorted(set(re.findall(r"(\w+)\.connect\b", source)) & WORKER_SIGNALS)


# Tests that wait out ten-second silences by design (one per header of seven chords, to
# show a body or a second errback never comes): past 90 s on either engine, they keep
# Celery's own limit for its flaky tests.
LONG_TESTS = {"test_disabling_flag_allow_error_cb_on_chord_header": 300.0,
              "test_enabling_flag_allow_error_cb_on_chord_header": 300.0}


def pytest_collection_modifyitems(config, items):
    seconds = os.environ.get("LQ_SUITE_TIMEOUT")
    if not seconds:
        return
    for item in items:
        item.own_markers[:] = [m for m in item.own_markers if m.name != "timeout"]
        limit = max(float(seconds), LONG_TESTS.get(getattr(item, "originalname", ""), 0.0))
        item.add_marker(pytest.mark.timeout(limit))


def _frame(entry):
    try:
        line = str(entry.statement).strip().splitlines()[0]
    except Exception:
        line = ""
    return {"file": os.path.basename(str(entry.path)), "line": entry.lineno + 1,
            "function": entry.name, "code": line[:200]}


def _failure(excinfo):
    exc = excinfo.value
    text = str(exc).strip()
    frames = [_frame(e) for e in excinfo.traceback]
    in_test = [f for f in frames if f["file"] == TEST_FILE]
    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": text.splitlines()[0][:300] if text else "",
        "test_frame": in_test[-1] if in_test else None,
        "raised_at": frames[-1] if frames else None,
        "frames": frames[-12:],
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    record = {"when": call.when, "outcome": report.outcome,
              "wasxfail": getattr(report, "wasxfail", None)}
    if report.failed and call.excinfo is not None:
        record["failure"] = _failure(call.excinfo)
        source = _source(item)
        record["failure"].update(worker_signals=_worker_signals(source),
                                 backend_internals=_backend_internals(source))
    elif report.failed:
        record["failure"] = {"type": "Failed", "module": "",
                             "message": str(report.longrepr).strip().splitlines()[0][:300]
                             if report.longrepr else "", "test_frame": None,
                             "raised_at": None, "frames": []}
    if report.skipped and isinstance(report.longrepr, tuple):
        record["skip_reason"] = str(report.longrepr[2])
    if call.when == "setup":
        record["celery"] = getattr(sys.modules.get("celery"), "__file__", None)
    report.user_properties.append((KEY, record))


_records = {}
_collect_errors = []


def pytest_collectreport(report):
    if report.failed:
        _collect_errors.append({"nodeid": report.nodeid,
                                "longrepr": str(report.longrepr)[-3000:]})


def pytest_runtest_logreport(report):
    for key, record in report.user_properties:
        if key != KEY:
            continue
        entry = _records.setdefault(report.nodeid, {"nodeid": report.nodeid, "phases": {},
                                                    "subtests": [], "duration": 0.0})
        context = getattr(report, "context", None)       # a subtest's report
        if context is not None:
            record["subtest"] = getattr(context, "msg", None) or str(context)
            entry["subtests"].append(record)
        else:
            entry["phases"][record["when"]] = record
            entry["duration"] += report.duration
        break


def pytest_sessionfinish(session):
    path = os.environ.get("LQ_SUITE_OUTCOMES")
    if not path or hasattr(session.config, "workerinput"):
        return
    with open(path, "w") as out:
        json.dump({"collect_errors": _collect_errors, "tests": list(_records.values())},
                  out, indent=1)
