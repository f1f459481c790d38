"""The guide's "new user" workflow, a group of chains, a chain through a group into a
task, and a chord after a step."""
from tasks import (add, chain, chord, create_user, group, import_contacts, mul,
                   send_welcome_email, tsum)


def observe(seen):
    workflow = create_user.s("ann") | group(import_contacts.s(), send_welcome_email.s())
    seen("task | group", lambda: workflow.delay().get(timeout=10))
    seen("group of chains", lambda: group(add.s(i, i) | mul.s(2) for i in range(4))().get(
        timeout=10))
    seen("chain through a group into a task",
         lambda: chain(add.s(1, 1), group(mul.s(2), mul.s(3)), tsum.s())().get(timeout=10))
    seen("chord after a step", lambda: (add.s(1, 1) | chord([mul.s(5), mul.s(6)], tsum.s()))()
         .get(timeout=10))
    seen("chain after a chord",
         lambda: (chord([add.s(1, 1), add.s(2, 2)], tsum.s()) | mul.s(10))().get(timeout=10))
    seen("group | group",
         lambda: (group(add.s(1, 1), add.s(2, 2)) | group(tsum.s(), tsum.s()))().get(
             timeout=10))
    seen("nested chains", lambda: chain(add.s(1, 1), chain(add.s(2), mul.s(3)), add.s(4))()
         .get(timeout=10))
    seen("chord of chains", lambda: chord([add.s(1, 1) | mul.s(2), add.s(2, 2) | mul.s(2)],
                                          tsum.s())().get(timeout=10))
