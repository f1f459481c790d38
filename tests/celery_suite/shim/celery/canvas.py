"""celery.canvas: litequeue's canvas. Celery's `_chain` is the chain class itself, which
litequeue's `chain` is."""
from litequeue import Signature, chain, chord, group, signature  # noqa: F401

from ._missing import litequeue_or, missing_class

_chain = chain
StampingVisitor = litequeue_or("StampingVisitor", missing_class(
    "StampingVisitor", "StampingVisitor (canvas stamping)"))
