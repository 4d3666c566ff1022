"""Run by test_sync_redis.py: a SyncProducer used, then forked (gunicorn's pre-fork).

Parent and child publish at the same time; a connection shared by the two would mix
their replies. Prints the parent's final count; exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

from meetq import Message
from meetq.sync import SyncProducer

url, namespace = sys.argv[1], sys.argv[2]
producer = SyncProducer(
    {
        "redis": {"url": url, "key_prefix": namespace},
        "message_queue": {"type": "redis", "queue_name": namespace},
    }
)
producer.publish(Message(type="job"))  # the parent's pool now holds a live connection
parent_client = producer._backend.client()  # type: ignore[attr-defined]
EACH = 200

pid = os.fork()
if pid == 0:
    try:
        ids = [producer.publish(Message(type="job", payload={"by": "child"})) for _ in range(EACH)]
        rebuilt = producer._backend.client() is not parent_client  # type: ignore[attr-defined]
        os._exit(0 if rebuilt and len(set(ids)) == EACH else 3)
    except BaseException:
        traceback.print_exc()
        os._exit(2)

errors: list[BaseException] = []


def publish() -> None:
    try:
        for _ in range(EACH // 4):
            producer.publish(Message(type="job", payload={"from": "parent"}))
    except BaseException as exc:
        errors.append(exc)


threads = [threading.Thread(target=publish) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
if code != 0 or errors:
    print(f"child exit {code}, parent errors {errors!r}")
    sys.exit(1)
# The child is gone; its exit must not have closed the parent's connections.
producer.publish(Message(type="job"))
assert producer._backend.client() is parent_client  # type: ignore[attr-defined]
print(producer.stats()["total_published"])
producer.close()
