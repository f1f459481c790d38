"""celery.canvas: litequeue's canvas. Celery's `_chain` is the chain class itself, which
litequeue's `chain` is."""
from litequeue import Signature, chain, chord, group, signature, subtask  # noqa: F401

from ._missing import missing_class

_chain = chain
StampingVisitor = missing_class("StampingVisitor", "StampingVisitor (canvas stamping)")
