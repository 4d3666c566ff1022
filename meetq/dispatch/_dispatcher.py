"""TaskDispatcher: route typed task requests to the service that owns the type, run them
there, and track their status in the process that dispatched them (guide section 5).

Built only on ``MessageQueue`` (and optionally ``PubSub``) public calls, so it behaves the
same on every backend. How a task travels:

- ``dispatch_task`` publishes one ``Message`` whose type is ``"<task type>@<service>"``
  (routing on) or the bare task type (routing off). Only processes that ``serve`` that
  type in that service claim it, so the routing table decides who runs a task.
- The serving process runs the handler and reports ``running``, ``retrying``,
  ``completed`` or ``failed`` as small messages of type ``meetq.task_result@<dispatcher>``
  on the same queue: a per-dispatcher type, so each report reaches exactly the process
  that holds the task's record, at least once. Reports may also be broadcast on PubSub
  for observers (at most once).
- The dispatching process applies reports idempotently and in any order, enforces a
  deadline of its own (``timed_out``) and runs each task's callback once.
- A task's id is its message's id, and the serving handler returns the task's result
  to the queue, so on a backend with tracking ``task_status``, ``task_result`` and
  ``cancel_task`` work from any process (``MessageQueue.status/result/cancel``); a
  cancelled running task reports ``cancelled`` to its dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs

from meetq.broadcast._pubsub import PubSub
from meetq.core._backoff import Backoff
from meetq.core._build import build_config
from meetq.core._lifecycle import AsyncService
from meetq.core._usercode import UserCodeFailed, call_user
from meetq.core._validation import (
    MAX_TYPE_LENGTH,
    check_key,
    check_seconds,
    check_text,
    is_async_callable,
    name_validator,
    plain_str,
)
from meetq.core.config import TaskDispatcherConfig
from meetq.core.errors import ConfigError, HandlerTimeout, MeetqError, ValidationError
from meetq.core.tasks import DispatchStatus, ReceivedTask, TaskRequest, TaskResponse
from meetq.core.tracking import MessageStatus
from meetq.core.types import (
    Message,
    Priority,
    PubSubMessage,
    new_id,
)
from meetq.queue._message_queue import MessageQueue
from meetq.queue._tracking import current_delivery

__all__ = ["DispatchStatus", "ReceivedTask", "TaskDispatcher", "TaskRequest", "TaskResponse"]

log = logging.getLogger("meetq.dispatcher")

TaskHandler = Callable[["ReceivedTask"], Any]
H = TypeVar("H", bound=TaskHandler)

TASK_ID_HEADER = "meetq-task-id"
REPLY_TO_HEADER = "meetq-reply-to"
TASK_TYPE_HEADER = "meetq-task-type"
TIMEOUT_HEADER = "meetq-task-timeout"
META_PREFIX = "meta."
RESULT_TYPE = "meetq.task_result"
# The queue's own handler timeout sits this far behind the task's, as a backstop: the
# serving wrapper enforces the task timeout itself so that it can report it.
_BACKSTOP = 10.0
_CALLBACK_GRACE = 5.0


class _Record:
    __slots__ = ("callback", "done", "response", "timer")

    def __init__(
        self, response: TaskResponse, callback: Callable[[TaskResponse], Any] | None
    ) -> None:
        self.response = response
        self.callback = callback
        self.done = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None


class _Manager(Protocol):
    # meetq.manager.QueueManager, named here without importing it (layers: the manager
    # builds the dispatcher, not the reverse).
    def get_task_dispatcher(self) -> TaskDispatcher | None: ...


def _check_service(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or "@" in value or len(value) > 100:
        raise ValidationError(field, value, "expected a non-empty name without '@', <= 100 chars")
    check_text(field, value)
    return value


class TaskDispatcher(AsyncService):
    """Routes ``TaskRequest``\\ s to the owning service and tracks their status.

    Build it before its ``MessageQueue`` starts (it registers a handler for task results);
    the queue must run for tasks to be served and results to arrive. The contract is the
    docstring of ``meetq.core.protocols.TaskDispatcherProtocol``; ``docs/task-dispatcher.md``
    explains it with examples.
    """

    def __init__(
        self,
        message_queue: MessageQueue,
        pubsub: PubSub | None = None,
        *,
        config: TaskDispatcherConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        """Settings are the ``task_dispatcher`` config keys: ``config`` (a
        ``TaskDispatcherConfig`` or a mapping of its keys) with keyword ``overrides``
        (``enable_routing``, ``enable_callbacks``, ``service_name``, ``status_channel``,
        ``keep_finished``, ``deadline_margin``) laid over it. A bad one raises
        ``ValidationError`` naming the argument."""
        if not isinstance(message_queue, MessageQueue):
            raise ValidationError("message_queue", message_queue, "expected a MessageQueue")
        if pubsub is not None and not isinstance(pubsub, PubSub):
            raise ValidationError("pubsub", pubsub, "expected a PubSub or None")
        cfg = self.config = build_config(TaskDispatcherConfig, config, overrides, as_arguments=True)
        service_name = cfg.service_name
        self.message_queue = message_queue
        self.pubsub = pubsub
        self.enable_routing = cfg.enable_routing
        self.enable_callbacks = cfg.enable_callbacks
        self.service_name = service_name
        self.status_channel = cfg.status_channel
        self.keep_finished = cfg.keep_finished
        self.deadline_margin = cfg.deadline_margin
        # One result type per dispatcher object: its records live in this process only.
        self.reply_to = f"{RESULT_TYPE}@{service_name or 'client'}:{new_id()[:12]}"
        self._routes: dict[str, str] = {}
        self._served: set[str] = set()
        self._records: dict[str, _Record] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._stop_began = False  # a second stop() returns (new/running/stopped: the base)
        self._counts = dict.fromkeys(
            [
                "dispatched",
                "completed",
                "failed",
                "timed_out",
                "cancelled",
                "late_results",
                "callbacks_failed",
                "unknown_results",
                "served",
            ],
            0,
        )
        try:
            message_queue.register_handler(self.reply_to, self._on_result)
        except ValidationError as exc:
            raise ValidationError(
                "message_queue",
                message_queue.name,
                "build the TaskDispatcher before starting its MessageQueue: it registers "
                f"a handler for task results ({exc.problem})",
            ) from None

    @classmethod
    def from_config(
        cls,
        config: TaskDispatcherConfig,
        message_queue: MessageQueue,
        pubsub: PubSub | None = None,
        **overrides: Any,
    ) -> TaskDispatcher:
        """Build from the ``task_dispatcher`` config section; ``overrides`` as in ``__init__``."""
        return cls(message_queue, pubsub, config=config, **overrides)

    @classmethod
    def from_manager(cls, manager: _Manager) -> TaskDispatcher:
        """The guide's ``NewTaskDispatcher()``: the dispatcher ``manager`` (a
        ``QueueManager``) built on its message queue from its ``task_dispatcher`` section,
        the one ``manager.get_task_dispatcher()`` returns, started and stopped with it.
        ``ConfigError`` when that section is disabled."""
        get = getattr(manager, "get_task_dispatcher", None)
        if not callable(get):
            raise ValidationError("manager", manager, "expected a QueueManager")
        dispatcher = get()
        if not isinstance(dispatcher, TaskDispatcher):
            raise ConfigError(
                "task_dispatcher.enabled",
                False,
                "the manager has no task dispatcher; enable the section, or build "
                "TaskDispatcher(mq, pubsub) before the queue starts",
            )
        return dispatcher

    # -- routing and serving -------------------------------------------------------------

    def register_route(self, task_type: str, service: str) -> None:
        """Send tasks of ``task_type`` to ``service`` (replacing an earlier route)."""
        task_type = plain_str(task_type)  # a TaskType member: kept and sent as its string
        name_validator(None, attrs.fields(TaskRequest).type, task_type)
        _check_service("service", service)
        if len(task_type) + 1 + len(service) > MAX_TYPE_LENGTH:
            raise ValidationError("task_type", task_type, "type@service is over 200 characters")
        self._routes[task_type] = service

    @property
    def routes(self) -> dict[str, str]:
        """The routing table: task type to owning service."""
        return dict(self._routes)

    def serve(self, task_type: str, handler: TaskHandler) -> None:
        """Run ``handler(task: ReceivedTask)`` for tasks of ``task_type`` sent to this
        service (and for unrouted ones); its JSON-serializable return value is the result.

        Register before the queue starts. With a ``service_name`` and no route for the
        type yet, this dispatcher routes the type to itself.
        """
        task_type = plain_str(task_type)  # a TaskType member: kept and sent as its string
        name_validator(None, attrs.fields(TaskRequest).type, task_type)
        if not callable(handler):
            raise ValidationError("handler", handler, "expected a callable taking a ReceivedTask")
        if task_type in self._served:
            raise ValidationError("task_type", task_type, "this dispatcher already serves it")

        async def run(message: Message) -> Any:
            # The result goes back to the queue too: kept there (result_ttl) for
            # task_result() in any process.
            return await self._run_task(task_type, handler, message)

        wire_types = [task_type]
        if self.service_name is not None:
            wire_types.append(f"{task_type}@{self.service_name}")
        taken = [w for w in wire_types if w in self.message_queue.handled_types]
        if taken:
            raise ValidationError("task_type", task_type, f"the queue already handles {taken[0]!r}")
        # Handlers first: if the queue refuses them (it runs already), no route is left
        # pointing at a service that will never serve the type.
        for wire in wire_types:
            self.message_queue.register_handler(wire, run)
        if self.service_name is not None:
            self.register_route(task_type, self._routes.get(task_type, self.service_name))
        self._served.add(task_type)

    def task(self, task_type: str) -> Callable[[H], H]:
        """Decorator form of ``serve``."""

        def decorate(func: H) -> H:
            self.serve(task_type, func)
            return func

        return decorate

    async def _run_task(self, task_type: str, handler: TaskHandler, message: Message) -> Any:
        headers = message.headers
        task_id = headers.get(TASK_ID_HEADER, message.id)
        reply_to = headers.get(REPLY_TO_HEADER)
        max_attempts = (message.max_retries or 0) + 1
        task = ReceivedTask(
            id=task_id,
            type=task_type,
            payload=message.payload,
            metadata={
                k[len(META_PREFIX) :]: v for k, v in headers.items() if k.startswith(META_PREFIX)
            },
            priority=message.priority,
            attempt=message.attempt,
            max_attempts=max_attempts,
        )
        timeout = float(headers.get(TIMEOUT_HEADER, 0)) or None
        report = {
            "task_id": task_id,
            "type": task_type,
            "attempt": message.attempt,
            "service": self.service_name,
        }
        await self._report(reply_to, {**report, "status": "running"}, must_arrive=False)
        try:
            result = await call_user(
                handler, task, is_async=is_async_callable(handler), timeout=timeout
            )
        except asyncio.CancelledError:
            if current_delivery().cancelled:  # cancel_task(), not a shutdown: say so
                self._report_later(reply_to, {**report, "status": "cancelled"})
            raise
        except UserCodeFailed as failure:
            await self._report_failure(reply_to, report, failure.error, max_attempts)
            # Raised on to the queue, which records the attempt (and retries it).
            if failure.timeout is not None:
                raise HandlerTimeout(failure.timeout) from None
            raise failure.exc from None
        self._counts["served"] += 1
        try:
            await self._report(reply_to, {**report, "status": "completed", "result": result})
        except ValidationError as exc:  # the result cannot be encoded: retrying won't help
            error = f"the handler's result is not JSON-serializable: {exc}"
            await self._report(reply_to, {**report, "status": "failed", "error": error})
            return None
        return result

    def _report_later(self, reply_to: str | None, payload: dict[str, Any]) -> None:
        """A best-effort report from a task being cancelled (it cannot await itself)."""
        task = asyncio.get_running_loop().create_task(
            self._report(reply_to, payload, must_arrive=False)
        )
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)

    async def _report_failure(
        self, reply_to: str | None, report: dict[str, Any], error: str, max_attempts: int
    ) -> None:
        final = report["attempt"] >= max_attempts
        status = "failed" if final else "retrying"
        await self._report(
            reply_to, {**report, "status": status, "error": error}, must_arrive=final
        )

    async def _report(
        self, reply_to: str | None, payload: dict[str, Any], *, must_arrive: bool = True
    ) -> None:
        """Send one status report. A final one must be stored (an error fails the attempt,
        so the task runs again); running/retrying reports are best effort."""
        payload["updated_at"] = time.time()
        if reply_to is not None:
            try:
                await self.message_queue.publish(
                    Message(
                        type=reply_to,
                        payload=payload,
                        priority=Priority.HIGH,
                        source=self.service_name,
                    )
                )
            except MeetqError as exc:
                if must_arrive or isinstance(exc, ValidationError):
                    raise
                log.warning("meetq: task %s: status report lost: %s", payload["task_id"], exc)
        if self.pubsub is not None:
            try:
                await self.pubsub.publish(
                    self.status_channel, PubSubMessage(type="meetq.task_status", payload=payload)
                )
            except Exception as exc:  # best effort: must not fail an attempt already reported
                log.warning("meetq: task status broadcast failed: %r", exc)

    # -- dispatching ---------------------------------------------------------------------

    def _message_for(self, request: object, field: str) -> tuple[Message, str | None]:
        if not isinstance(request, TaskRequest):
            raise ValidationError(field, request, "expected a meetq.TaskRequest")
        if request.callback is not None and not self.enable_callbacks:
            raise ValidationError(
                f"{field}.callback",
                request.callback,
                "callbacks are disabled (task_dispatcher.enable_callbacks: false)",
            )
        service: str | None = None
        wire = request.type
        if self.enable_routing:
            service = self._routes.get(request.type)
            if service is None:
                known = ", ".join(sorted(self._routes)) or "none"
                raise ValidationError(
                    f"{field}.type",
                    request.type,
                    f"no service owns this task type (known types: {known}); "
                    "add one with register_route(task_type, service)",
                )
            wire = f"{request.type}@{service}"
        if request.id in self._records:
            raise ValidationError(f"{field}.id", request.id, "a task with this id is tracked")
        headers = {f"{META_PREFIX}{k}": v for k, v in request.metadata.items()}
        headers.update(
            {
                TASK_ID_HEADER: request.id,
                REPLY_TO_HEADER: self.reply_to,
                TASK_TYPE_HEADER: request.type,
                TIMEOUT_HEADER: repr(request.timeout),
            }
        )
        message = Message(
            type=wire,
            payload=request.payload,
            priority=request.priority,
            id=request.id,
            max_retries=request.max_retries,
            timeout=request.timeout + _BACKSTOP,
            source=self.service_name,
            destination=service,
            headers=headers,
        )
        return message, service

    def _track(self, request: TaskRequest, service: str | None) -> _Record:
        now = time.time()
        response = TaskResponse(
            task_id=request.id,
            type=request.type,
            status=DispatchStatus.PENDING,
            service=service,
            created_at=now,
            updated_at=now,
        )
        record = _Record(response, request.callback)
        self._records[request.id] = record
        cfg = self.message_queue.config
        # The longest the queue's retry waits can take (jitter only shortens them).
        backoff = Backoff(cfg.retry_backoff_base, cfg.retry_backoff_max).total_ceiling(
            request.max_retries
        )
        deadline = request.timeout * (request.max_retries + 1) + backoff + self.deadline_margin
        record.timer = asyncio.get_running_loop().call_later(
            deadline, self._expire, request.id, deadline
        )
        return record

    def _untrack(self, task_id: str) -> None:
        record = self._records.pop(task_id, None)
        if record is not None and record.timer is not None:
            record.timer.cancel()

    async def dispatch_task(self, request: TaskRequest) -> TaskResponse:
        """Publish ``request`` to its service and return at once with status ``pending``.

        Raises ``ValidationError`` naming ``request.<field>`` (nothing is published) and
        ``ClosedError`` after ``stop()``."""
        self._check_open()
        message, service = self._message_for(request, "request")
        assert isinstance(request, TaskRequest)
        # Tracked before publishing: the result may arrive before publish() returns.
        record = self._track(request, service)
        try:
            await self.message_queue.publish(message)
        except BaseException as exc:
            self._untrack(request.id)
            if isinstance(exc, ValidationError):
                raise _rename(exc, "message", "request") from None
            raise
        self._counts["dispatched"] += 1
        return record.response

    async def dispatch_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResponse]:
        """Validate every request, then publish them all or none in one round trip.

        A bad request raises ``ValidationError`` naming ``requests[i].<field>``."""
        self._check_open()
        if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
            raise ValidationError("requests", requests, "expected a list of TaskRequest")
        built = [self._message_for(r, f"requests[{i}]") for i, r in enumerate(requests)]
        ids = [m.id for m, _ in built]
        if len(set(ids)) != len(ids):
            raise ValidationError("requests", ids, "two requests have the same id")
        records = [self._track(r, service) for r, (_, service) in zip(requests, built, strict=True)]
        try:
            await self.message_queue.publish_batch([m for m, _ in built])
        except BaseException as exc:
            for task_id in ids:
                self._untrack(task_id)
            if isinstance(exc, ValidationError):
                raise _rename(exc, "messages", "requests") from None
            raise
        self._counts["dispatched"] += len(records)
        return [r.response for r in records]

    # -- status --------------------------------------------------------------------------

    def get_task_status(self, task_id: str) -> TaskResponse | None:
        """The latest known status, or None for an unknown (or evicted) task."""
        check_key("task_id", task_id)
        record = self._records.get(task_id)
        return None if record is None else record.response

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResponse:  # noqa: ASYNC109
        """Wait for the task's final status and return it; ``TimeoutError`` after
        ``timeout`` seconds. An unknown task id raises ``ValidationError``."""
        check_key("task_id", task_id)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        record = self._records.get(task_id)
        if record is None:
            raise ValidationError(
                "task_id", task_id, "no such task is tracked (unknown or evicted)"
            )
        await asyncio.wait_for(record.done.wait(), timeout)
        return record.response

    async def task_status(self, task_id: str) -> MessageStatus:
        """The task's message as the queue knows it, from any process (it need not have
        dispatched it): waiting, running (which worker, attempt, progress), retrying,
        dead, done, cancelled or unknown. Needs a backend with tracking
        (``MessageQueue.status``); ``get_task_status`` is this dispatcher's own record."""
        check_key("task_id", task_id)
        return await self.message_queue.status(task_id)

    async def task_result(self, task_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109  (waits without cancelling the task)
        """The task handler's return value, from any process, waiting up to ``timeout``
        seconds (``MessageQueue.result``: needs ``message_queue.result_ttl`` on the
        serving side; ``ResultError`` for a failed, cancelled or unknown task)."""
        check_key("task_id", task_id)
        return await self.message_queue.result(task_id, timeout)

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a dispatched task from any process (``MessageQueue.cancel``): True when
        it was waiting (it never runs) or running (its handler is cancelled where it
        runs; not retried), False for an unknown or finished one. A record this
        dispatcher holds ends ``cancelled`` (its callback runs once)."""
        check_key("task_id", task_id)
        cancelled = await self.message_queue.cancel(task_id)
        record = self._records.get(task_id)
        if cancelled and record is not None and not record.response.status.is_final:
            record.response = attrs.evolve(
                record.response,
                status=DispatchStatus.CANCELLED,
                error="cancelled by cancel_task()",
                updated_at=time.time(),
            )
            self._finish(record)
        return cancelled

    async def _on_result(self, message: Message) -> None:
        # async so it runs on the loop, not in a thread. Never raises: a report that
        # cannot be applied would only be retried in vain.
        p = message.payload
        record = self._records.get(str(p.get("task_id")))
        try:
            status = DispatchStatus(str(p.get("status")))
            attempt = int(p.get("attempt", 0))
        except (ValueError, TypeError):
            log.warning("meetq: ignoring a malformed task result %s", message.id)
            return
        if record is None:
            self._counts["unknown_results"] += 1
            return
        current = record.response
        late = current.status is DispatchStatus.TIMED_OUT and status.is_final
        if current.status.is_final and not late:
            return  # a duplicate
        if not status.is_final and (attempt, status is DispatchStatus.RETRYING) <= (
            current.attempts,
            current.status is DispatchStatus.RETRYING,
        ):
            return  # a duplicate, or overtaken by a newer report
        record.response = attrs.evolve(
            current,
            status=status,
            result=p.get("result"),
            # "running" keeps the previous attempt's error visible.
            error=current.error if status is DispatchStatus.RUNNING else p.get("error"),
            attempts=max(attempt, current.attempts),
            service=p.get("service") or current.service,
            updated_at=float(p.get("updated_at") or time.time()),
        )
        if late:
            self._counts["late_results"] += 1
            self._counts[status.value] += 1
        elif status.is_final:
            self._finish(record)

    def _expire(self, task_id: str, deadline: float) -> None:
        record = self._records.get(task_id)
        if record is None or record.response.status.is_final:
            return
        error = f"no final status within {deadline:g}s of dispatch"
        record.response = attrs.evolve(
            record.response, status=DispatchStatus.TIMED_OUT, error=error, updated_at=time.time()
        )
        self._finish(record)

    def _finish(self, record: _Record) -> None:
        response = record.response
        self._counts[response.status.value] += 1
        if record.timer is not None:
            record.timer.cancel()
        record.done.set()
        self._finished[response.task_id] = None
        while len(self._finished) > self.keep_finished:
            old, _ = self._finished.popitem(last=False)
            self._records.pop(old, None)
        if record.callback is not None:
            task = asyncio.get_running_loop().create_task(self._callback(record.callback, response))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    async def _callback(
        self, callback: Callable[[TaskResponse], Any], response: TaskResponse
    ) -> None:
        try:
            await call_user(callback, response, is_async=is_async_callable(callback))
        except UserCodeFailed as failure:  # a callback must never take the dispatcher down
            self._counts["callbacks_failed"] += 1
            log.error(
                "meetq: callback of task %s failed: %s",
                response.task_id,
                failure.error,
                exc_info=failure.exc,
            )

    def stats(self) -> dict[str, Any]:
        """Counts of this dispatcher's tasks (this process only)."""
        states = [r.response.status for r in self._records.values()]
        c = self._counts
        return {
            "service_name": self.service_name,
            "total_dispatched": c["dispatched"],
            "total_completed": c["completed"],
            "total_failed": c["failed"],
            "total_timed_out": c["timed_out"],
            "total_cancelled": c["cancelled"],
            "late_results": c["late_results"],
            "pending": states.count(DispatchStatus.PENDING),
            "in_progress": states.count(DispatchStatus.RUNNING)
            + states.count(DispatchStatus.RETRYING),
            "routes": dict(self._routes),
            "served_types": sorted(self._served),
            "total_served": c["served"],
            "callbacks_failed": c["callbacks_failed"],
            "unknown_results": c["unknown_results"],
        }

    # -- lifecycle -----------------------------------------------------------------------

    def _check_open(self) -> None:
        self._refuse_if_stopped()

    async def _start(self) -> None:
        """Mark the dispatcher running (``start()``; the rules are ``AsyncService``'s).
        Start the MessageQueue too (the QueueManager does): tasks are served and results
        arrive only while it runs."""

    async def stop(self) -> None:
        """Stop tracking (idempotent): unfinished tasks become ``cancelled`` (their
        callbacks run), waiters wake, and callbacks get a few seconds to finish. It does
        not stop the MessageQueue nor tasks already running in a service."""
        if self._stop_began:
            return
        self._stop_began = True
        for record in list(self._records.values()):
            if not record.response.status.is_final:
                record.response = attrs.evolve(
                    record.response,
                    status=DispatchStatus.CANCELLED,
                    error="the dispatcher stopped before the task finished",
                    updated_at=time.time(),
                )
                self._finish(record)
        if self._callback_tasks:
            _, late = await asyncio.wait(set(self._callback_tasks), timeout=_CALLBACK_GRACE)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)


def _rename(exc: ValidationError, old: str, new: str) -> ValidationError:
    """``messages[2].payload.x`` reads better for a caller as ``requests[2].payload.x``."""
    return type(exc)(new + exc.field.removeprefix(old), exc.value, exc.problem)
