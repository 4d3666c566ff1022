"""Task routing between services, over the work queue."""

from meetq.dispatch._dispatcher import TaskDispatcher

__all__ = ["TaskDispatcher"]
