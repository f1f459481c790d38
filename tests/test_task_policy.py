"""Task policy: the retry budget and decision and the options it reads, pure functions
with an injected clock.
"""

import datetime as dt

import pytest

import litequeue
from litequeue import FAILURE, RETRY, LiteQueue, Retry

pytestmark = pytest.mark.timeout(120)


class TestRetryOptions:

    def test_max_retries_reads_the_app_default_until_the_task_sets_it(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), task_max_retries=5)

        @app.task
        def plain():
            pass

        @app.task(max_retries=None)
        def forever():
            pass
        assert (plain.max_retries, forever.max_retries) == (5, None)
        app.conf.task_max_retries = 7
        assert plain.max_retries == 7

    def test_a_naive_retry_eta_is_read_in_the_app_s_zone(self, tmp_path):
        app = LiteQueue(str(tmp_path / "x.sqlite"), timezone="Asia/Shanghai")

        @app.task
        def job():
            pass
        naive = dt.datetime(2030, 1, 1, 9, 0)
        now = dt.datetime(2030, 1, 1, 0, 0, tzinfo=dt.timezone.utc).timestamp()
        delay = litequeue._retry_delay(job, Retry(eta=naive), 0, now)
        assert delay == 3600.0          # 09:00 in Shanghai is 01:00 UTC


class TestTaskPolicy:
    """The one retry policy, as a pure function with an injected clock: the same rules
    for a task that raised and for a row whose process died."""

    NOW = 1_800_000_000.0

    def decide(self, retries, budget, wants_retry=True, delay=5.0, history=()):
        error = litequeue._error_entry(ValueError("boom"), retries + 1, self.NOW)
        return litequeue._after_failure(retries=retries, budget=budget,
                                        wants_retry=wants_retry, delay=lambda: delay,
                                        now=self.NOW, history=list(history), error=error)

    def test_a_retry_within_the_budget_is_due_after_its_delay(self):
        state, eta, retried, history = self.decide(retries=2, budget=3, delay=7.5)
        assert (state, eta, retried) == (RETRY, self.NOW + 7.5, 1)
        assert history == [{"type": "builtins.ValueError", "message": "boom",
                            "time": self.NOW, "attempt": 3}]

    def test_a_spent_budget_or_no_wish_to_retry_fails(self):
        assert self.decide(retries=3, budget=3)[:3] == (FAILURE, None, 0)
        assert self.decide(retries=0, budget=3, wants_retry=False)[:3] == (FAILURE, None, 0)

    def test_no_budget_means_no_bound_and_the_history_grows(self):
        earlier = [{"type": "x.Y", "message": "old", "time": 1.0, "attempt": 1}]
        state, _, _, history = self.decide(retries=10_000, budget=None, history=earlier)
        assert state == RETRY and history[0] == earlier[0] and len(history) == 2

    def test_delay_is_only_drawn_for_a_retry(self):
        drawn = []
        litequeue._after_failure(retries=3, budget=3, wants_retry=True,
                                 delay=lambda: drawn.append(1) or 1.0, now=self.NOW,
                                 history=[], error={})
        assert drawn == []

    def test_the_budget_comes_from_the_request_then_the_row_then_the_task_then_the_app(self):
        budget, unset = litequeue._retry_budget, litequeue._UNSET
        assert budget(1, 2, 3, 4) == 1
        assert budget(None, 2, 3, 4) == 2
        assert budget(None, None, 3, 4) == 3
        assert budget(None, None, unset, 4) == 4
        assert budget(None, None, None, 4) is None      # max_retries=None: no bound

    def test_an_unreadable_history_starts_over_with_a_note(self):
        assert litequeue._history(b"\xc1")[0]["type"] == "litequeue.CorruptResult"
        assert litequeue._history(None) == []
