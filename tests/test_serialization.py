"""Exceptions and serialization: the exception tree, and msgpack envelopes and errors that
round-trip exactly (property-based, no process).
"""

import datetime as dt
import decimal
import uuid

import msgpack
import pytest
from hypothesis import given, settings as hsettings, strategies as st

import litequeue
from litequeue import (
    ConfigurationError, LitequeueError, RemoteError, SerializationError, UnknownTask,
)

from .helpers import msgpack_values, pack, same

pytestmark = pytest.mark.timeout(120)


class TestSerialization:

    def test_envelope_round_trip(self):
        when = dt.datetime(2024, 3, 10, 2, 30, tzinfo=dt.timezone.utc)
        args = (1, -2**63, 2**64 - 1, 1.5, "ü", b"\x00\xff", None, True, [1, [2]], {"k": 1}, when)
        payload = litequeue._pack_envelope("t", args, {"x": (1, 2)})
        assert msgpack.unpackb(payload, timestamp=3)["args"][0] == 1
        got_args, got_kwargs = litequeue._unpack_envelope(payload)
        assert got_args == [1, -2**63, 2**64 - 1, 1.5, "ü", b"\x00\xff", None, True, [1, [2]],
                            {"k": 1}, when]
        assert got_kwargs == {"x": [1, 2]}

    @pytest.mark.parametrize("value", [
        dt.datetime(2024, 1, 1, 12, 30), dt.date(2024, 1, 1), decimal.Decimal("1.10"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"), 2**64, -2**63 - 1, 10**4000,
    ], ids=["naive-datetime", "date", "decimal", "uuid", "int-2**64", "int-below-int64",
            "int-4000-digits"])
    def test_what_celerys_json_carries_round_trips_too(self, value):
        """Celery's JSON carries these; msgpack has no type for them: extensions do."""
        args, _ = litequeue._unpack_envelope(litequeue._pack_envelope("t", (value,), {}))
        assert args == [value] and type(args[0]) is type(value)

    @pytest.mark.parametrize("data", [(1, b"yesterday"), (2, b"\xff"), (3, b"lots"),
                                      (4, b"short"), (5, b"12a"), (5, b"9" * 5000)],
                             ids=["naive", "date", "decimal", "uuid", "int", "int-too-long"])
    def test_an_extension_another_client_spoiled_is_an_unreadable_payload(self, data):
        payload = msgpack.packb({"args": [msgpack.ExtType(*data)], "kwargs": {}})
        with pytest.raises(ValueError, match="not valid msgpack"):
            litequeue._unpack_envelope(payload)

    @pytest.mark.parametrize("value", [{1, 2}, object()], ids=["set", "object"])
    def test_unencodable_arguments(self, value):
        with pytest.raises(SerializationError, match="cannot be encoded as msgpack") as info:
            litequeue._pack_envelope("tasks.add", (value,), {})
        assert "tasks.add" in str(info.value)
        assert isinstance(info.value, TypeError) and isinstance(info.value, LitequeueError)

    @pytest.mark.parametrize("payload, message", [
        ("text", "not msgpack bytes"),
        (b"\xc1", "not valid msgpack"),
        (pack({"args": []}) + b"\x01", "not valid msgpack"),
        (pack([1, 2]), "envelope is list, not a map"),
        (pack({"args": 1}), "'args' is not an array"),
        (pack({"kwargs": [1]}), "'kwargs' is not a map"),
        (pack({"kwargs": {1: 2}}), "'kwargs' is not a map with string keys"),
    ], ids=["text", "bad-byte", "trailing-data", "list", "args-int", "kwargs-list",
            "kwargs-int-keys"])
    def test_invalid_envelopes(self, payload, message):
        with pytest.raises(ValueError, match=message):
            litequeue._unpack_envelope(payload)

    def test_missing_args_and_kwargs_default_to_empty(self):
        assert litequeue._unpack_envelope(pack({})) == ([], {})

    def test_error_rebuilt_as_its_type_or_a_stand_in(self):
        exc = litequeue._rebuild_error(litequeue._encode_error(KeyError("k")), "tb text")
        assert type(exc) is KeyError and exc.args == ("k",)
        assert any("tb text" in note for note in exc.__notes__)
        blob = pack({"type": "nowhere.Missing", "message": "gone", "args": ["gone"]})
        stand_in = litequeue._rebuild_error(blob, "remote tb")
        assert isinstance(stand_in, RemoteError)
        assert (stand_in.exc_type, stand_in.exc_message) == ("nowhere.Missing", "gone")
        assert stand_in.remote_traceback == "remote tb"
        assert str(stand_in) == "nowhere.Missing: gone"

    def test_exception_tree(self):
        for name in litequeue.__all__:
            obj = getattr(litequeue, name)
            if isinstance(obj, type) and issubclass(obj, BaseException) and \
                    name not in ("Retry", "Ignore", "Reject") and not issubclass(obj, Warning):
                assert issubclass(obj, LitequeueError), name
        # A task raises these to steer its own end: `except LitequeueError` must not catch them.
        for control in (litequeue.Retry, litequeue.Ignore, litequeue.Reject):
            assert not issubclass(control, LitequeueError)
        assert issubclass(litequeue.LitequeueWarning, UserWarning)   # shown by default
        assert issubclass(litequeue.TimeoutError, TimeoutError)
        assert issubclass(UnknownTask, KeyError) and issubclass(ConfigurationError, ValueError)

    @hsettings(max_examples=300, deadline=None, database=None)
    @given(args=st.lists(msgpack_values(), max_size=4),
           kwargs=st.dictionaries(st.text(), msgpack_values(), max_size=3))
    def test_every_supported_value_round_trips_exactly(self, args, kwargs):
        got_args, got_kwargs = litequeue._unpack_envelope(
            litequeue._pack_envelope("tasks.echo", args, kwargs))
        assert same(args, got_args), (args, got_args)
        assert same(kwargs, got_kwargs), (kwargs, got_kwargs)

    @pytest.mark.parametrize("value", [
        {(1, 2): "x"},
        dt.datetime(1, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ], ids=["tuple-dict-key", "datetime-before-year-1-in-utc", "datetime-after-9999-in-utc"])
    def test_what_delay_accepts_a_worker_can_read(self, value):
        try:
            payload = litequeue._pack_envelope("tasks.echo", [value], {})
        except SerializationError:
            return                              # refused at delay(): fine, and documented
        litequeue._unpack_envelope(payload)     # accepted: then a worker must read it back
