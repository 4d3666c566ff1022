"""The work queue: ``MessageQueue`` over a backend's ``WorkQueueBackend``, and
``QueueInfo``, what its ``inspect()`` returns."""

from meetq.queue._inspection import QueueInfo, traceback_summary
from meetq.queue._message_queue import MessageQueue

__all__ = ["MessageQueue", "QueueInfo", "traceback_summary"]
