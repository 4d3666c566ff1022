"""Each component against its protocol in ``meetq/core/protocols.py``, checked by mypy.

The kernel names what a component promises without importing it; this module is where
the two meet, in the one layer that sees every component. It holds no code that runs:
``mypy --strict meetq`` fails here when a component drifts from its protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meetq.broadcast._pubsub import PubSub
    from meetq.core.protocols import (
        LocalEventBusProtocol,
        MessageQueueProtocol,
        PubSubProtocol,
        TaskDispatcherProtocol,
        TaskSchedulerProtocol,
    )
    from meetq.dispatch._dispatcher import TaskDispatcher
    from meetq.inprocess._event_bus import LocalEventBus
    from meetq.inprocess._scheduler import TaskScheduler
    from meetq.queue._message_queue import MessageQueue

    def _conforms(
        queue: MessageQueue,
        pubsub: PubSub,
        bus: LocalEventBus,
        scheduler: TaskScheduler,
        dispatcher: TaskDispatcher,
    ) -> None:
        _queue: MessageQueueProtocol = queue
        _pubsub: PubSubProtocol = pubsub
        _bus: LocalEventBusProtocol = bus
        _scheduler: TaskSchedulerProtocol = scheduler
        _dispatcher: TaskDispatcherProtocol = dispatcher
