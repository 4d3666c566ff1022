"""In-process services that never touch a backend: the event bus and the task scheduler."""

from meetq.inprocess._event_bus import LocalEventBus
from meetq.inprocess._scheduler import TaskScheduler

__all__ = ["LocalEventBus", "TaskScheduler"]
