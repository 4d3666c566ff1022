"""One handle per backend and queue name, and one set of limits per queue.

A backend's ``work_queue()`` only builds a handle; keeping one per name and refusing a
second opener with other limits is done here, once, for every backend. Two limits for
one store would make the outcome depend on which ``MessageQueue`` settled last.
"""

from __future__ import annotations

import weakref

from meetq.core._validation import check_queue_options
from meetq.core.protocols import Backend, WorkQueueBackend, WorkQueueOptions

__all__ = ["open_work_queue"]

_OPEN: weakref.WeakKeyDictionary[Backend, dict[str, tuple[WorkQueueOptions, WorkQueueBackend]]]
_OPEN = weakref.WeakKeyDictionary()


def open_work_queue(backend: Backend, name: str, options: WorkQueueOptions) -> WorkQueueBackend:
    """The handle on queue ``name`` of ``backend``: made once, then shared.

    Raises ``ValidationError`` naming the limit when the queue is already open on this
    backend with other ``options``.
    """
    queues = _OPEN.get(backend)
    if queues is None:
        queues = _OPEN[backend] = {}
    held = queues.get(name)
    if held is not None:
        check_queue_options(name, held[0], options)
        return held[1]
    queue = backend.work_queue(name, options)
    queues[name] = (options, queue)
    return queue
