"""The request of a plain call, of a call with options, of a group member and of a task
that another task sent."""
from datetime import datetime, timedelta, timezone

from tasks import app, direct, dump_context, limits, spawn


def shown(context, own_id, parent=None, root=None):
    """The context with the ids a run cannot know in advance named."""
    names = {own_id: "<own id>", parent: "<parent id>", root: "<root id>"}
    return {k: (names.get(v, v) if k in ("id", "root_id", "parent_id", "group") else v)
            for k, v in context.items()}


def observe(seen):
    r = dump_context.delay(1, 2, z=3)
    seen("plain call", lambda: shown(r.get(timeout=10), r.id))
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    r = dump_context.apply_async((1, 2), countdown=0.2, expires=expires)
    got = {}
    seen("countdown and expires", lambda: {k: v for k, v in shown(
        got.setdefault("c", r.get(timeout=10)), r.id).items() if k not in ("eta", "expires")})
    seen("eta is set", lambda: isinstance(got["c"]["eta"], str))
    seen("expires is set", lambda: isinstance(got["c"]["expires"], str))
    seen("called directly", direct, 1, 2)
    seen("queued", lambda: direct.delay(1, 2).get(timeout=10))
    parent = spawn.delay()
    child_id = parent.get(timeout=10)
    seen("sent from a task", lambda: shown(app.AsyncResult(child_id).get(timeout=10), child_id,
                                           parent.id, parent.id))
    seen("per-task time limits", lambda: limits.delay().get(timeout=10))
