"""The work queue: ``MessageQueue`` over a backend's ``WorkQueueBackend``."""

from meetq.queue._message_queue import MessageQueue

__all__ = ["MessageQueue"]
