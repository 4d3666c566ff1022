"""A tour of meetq on the memory backend: no server needed.

Run it with ``bash scripts/demo.sh``. Switching ``type: memory`` to ``type: redis`` (and
``event_bus.type`` to ``redis_pubsub``) in CONFIG runs the same code on Redis.
"""

from __future__ import annotations

import asyncio
import logging

import meetq
from meetq import Message, Priority, PubSubMessage

CONFIG = {
    "message_queue": {
        "type": "memory",
        "queue_name": "ai_tasks",
        "workers": 1,  # one at a time, so the priority order is easy to see
        "visibility_timeout": 30,
        "poll_interval": 100,
        "max_retries": 2,
        "retry_backoff_base": "50ms",
    },
    "event_bus": {"type": "memory", "buffer_size": 1000, "workers": 4},
    "task_scheduler": {"buffer_size": 1000, "workers": 2},
    "task_dispatcher": {"service_name": "media"},
}


async def work_queue_tour(qm: meetq.QueueManager) -> None:
    mq = qm.get_message_queue()
    assert mq is not None
    order: list[str] = []
    all_done = asyncio.Event()
    broken = True

    @mq.handler("speech_recognition")
    async def recognise(msg: Message) -> None:
        order.append(f"{msg.priority.name:<8} {msg.payload['clip']}")
        if len(order) == 4:
            all_done.set()

    @mq.handler("thumbnail")
    async def thumbnail(msg: Message) -> None:
        print(f"  thumbnail attempt {msg.attempt}: {'fails' if broken else 'succeeds'}")
        if broken:
            raise RuntimeError("image service unreachable")

    # Published before the workers start, lowest priority first.
    await mq.publish_batch(
        [
            Message(type="speech_recognition", priority=Priority.LOW, payload={"clip": "archive"}),
            Message(type="speech_recognition", payload={"clip": "meeting-42"}),
            Message(type="speech_recognition", priority=Priority.HIGH, payload={"clip": "live"}),
            Message(
                type="speech_recognition", priority=Priority.CRITICAL, payload={"clip": "alarm"}
            ),
        ]
    )
    print("1. priorities: four messages published LOW, NORMAL, HIGH, CRITICAL; handled as:")
    await qm.start()  # every handler is registered by now
    await asyncio.wait_for(all_done.wait(), 10)
    for line in order:
        print(f"  {line}")

    print("2. a failing handler is retried with backoff, then dead-lettered:")
    await mq.publish(Message(type="thumbnail", payload={"frame": 7}, max_retries=2))
    while await mq.dead_letter_count() == 0:
        await asyncio.sleep(0.01)
    [dead] = await mq.dead_letters()
    print(f"  dead letter {dead.id[:8]}: {dead.attempts} attempts, error: {dead.error}")

    print("3. the service is fixed; requeue the dead letter:")
    broken = False
    print(f"  requeued {await mq.requeue_dead_letters(100)} message(s)")
    while (await mq.stats())["total_processed"] < 5:
        await asyncio.sleep(0.01)
    stats = await mq.stats()
    print(
        f"  processed={stats['total_processed']} failed={stats['total_failed']} "
        f"retried={stats['total_retried']} dead_letter_count={stats['dead_letter_count']}"
    )


async def events_tour(qm: meetq.QueueManager) -> None:
    ps, bus = qm.get_pubsub(), qm.get_event_bus()
    assert ps is not None and bus is not None
    got = asyncio.Event()

    async def on_meeting(msg: PubSubMessage) -> None:
        print(f"  broadcast on {msg.channel}: {msg.type} {dict(msg.payload)}")
        got.set()

    print("4. broadcast with PubSub:")
    await ps.subscribe("meeting_events", on_meeting)
    await ps.publish(
        "meeting_events",
        PubSubMessage(type="user_joined", payload={"user_id": 123, "meeting_id": 456}),
    )
    await asyncio.wait_for(got.wait(), 10)

    print("5. in-process events with LocalEventBus:")
    handled = asyncio.Event()

    async def on_stream(event: meetq.LocalEvent) -> None:
        print(f"  local event {event.type} from {event.source}: {dict(event.payload)}")
        handled.set()

    bus.on("stream_started", on_stream)
    bus.emit("stream_started", {"stream_id": "stream_123"}, "media_service")
    await asyncio.wait_for(handled.wait(), 10)


def register_media_service(qm: meetq.QueueManager) -> None:
    """The dispatcher's serving side: registered before start, like every handler."""
    dispatcher = qm.get_task_dispatcher()
    assert dispatcher is not None

    @dispatcher.task("video_processing")
    async def transcode(task: meetq.ReceivedTask) -> dict[str, object]:
        return {"video": task.payload["video_id"], "renditions": ["720p", "360p"]}


async def tasks_tour(qm: meetq.QueueManager) -> None:
    scheduler, dispatcher = qm.get_task_scheduler(), qm.get_task_dispatcher()
    assert scheduler is not None and dispatcher is not None

    print("6. TaskScheduler: both workers busy; LOW submitted, then CRITICAL; they ran:")
    ran: list[str] = []
    gate = asyncio.Event()

    async def record(task: meetq.Task) -> str:
        await gate.wait()
        ran.append(task.type)
        return task.type

    # Two workers: occupy both, so the next two tasks wait and priority decides.
    ids = [scheduler.submit_task(meetq.Task(type=f"busy-{i}", handler=record)) for i in range(2)]
    ids.append(
        scheduler.submit_task(meetq.Task(type="cleanup", handler=record, priority=Priority.LOW))
    )
    ids.append(
        scheduler.submit_task(
            meetq.Task(type="security_scan", handler=record, priority=Priority.CRITICAL)
        )
    )
    gate.set()
    for task_id in ids:
        await scheduler.wait(task_id, timeout=10)
    print(f"  {', '.join(ran[2:])}")

    print("7. TaskDispatcher: a task routed to the service that owns its type:")
    sent = await dispatcher.dispatch_task(
        meetq.TaskRequest(type="video_processing", payload={"video_id": "v42"})
    )
    final = await dispatcher.wait(sent.task_id, timeout=10)
    print(f"  {sent.status.value} -> {final.status.value}, result {final.result}")


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    # Build, register handlers, then start: nothing is consumed before handlers exist.
    qm = await meetq.initialize_queue_system(CONFIG)
    register_media_service(qm)
    try:
        await work_queue_tour(qm)
        await events_tour(qm)
        await tasks_tour(qm)
        stats = await qm.stats()
        print("8. statistics from qm.stats():")
        for component, keys in (
            ("message_queue", ("total_published", "total_processed", "total_dead_letter")),
            ("pubsub", ("total_published", "total_received", "channel_count")),
            ("event_bus", ("total_events", "processed_events", "dropped_events")),
        ):
            print(f"  {component}: " + ", ".join(f"{k}={stats[component][k]}" for k in keys))
    finally:
        await qm.stop()


if __name__ == "__main__":
    asyncio.run(main())
