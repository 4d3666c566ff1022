"""TaskScheduler: in-process tasks by strict priority, at a set time, with timeout and retry.

Design (why it looks like this):

- Ready tasks wait in one heap keyed by ``(-priority, sequence)``, so the highest
  priority runs first and tasks of one priority run in the order they became ready.
  Delayed tasks and retries waiting out their backoff wait in a second heap keyed by
  their due time on the event loop's clock.
- Nothing polls. A single ``loop.call_at`` timer is armed for the earliest due time and
  re-armed when an earlier task arrives; when it fires, every due task moves to the
  ready heap. No task sleeps, and a worker never sleeps inside a retry.
- "Workers" is a concurrency limit, not a pool of looping tasks: each attempt runs in an
  asyncio task of its own, started when a slot is free. So cancelling a running task is
  cancelling its asyncio task, an idle scheduler holds no task at all, and a handler's
  exception can only end its own attempt.
- Everything happens on the event loop's thread, so there is no lock to hold across an
  await; the state changes between awaits are plain, synchronous bookkeeping.
- Cancelled waiting tasks are removed lazily (skipped when they reach the top of their
  heap); a heap is rebuilt when more than half of it is stale, so cancelling many
  far-future tasks cannot grow memory.

Tasks carry Python callables: they live in this process only and are never persisted.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from meetq.core._backoff import Backoff
from meetq.core._build import build_config
from meetq.core._lifecycle import AsyncService
from meetq.core._schedules import parse_cadence
from meetq.core._usercode import UserCodeFailed, call_user
from meetq.core._validation import (
    check_key,
    check_name,
    check_seconds,
    is_async_callable,
)
from meetq.core.config import TaskSchedulerConfig
from meetq.core.errors import ClosedError, QueueFull, ValidationError
from meetq.core.tasks import Task, TaskHandler, TaskSnapshot, TaskStatus
from meetq.inprocess._recurring import RecurringTasks

__all__ = ["Task", "TaskHandler", "TaskScheduler", "TaskSnapshot", "TaskStatus"]

log = logging.getLogger("meetq.scheduler")

# A heap is rebuilt without its cancelled entries once they outnumber the live ones
# and it holds at least this many entries.
_COMPACT_MIN = 64


class _Entry:
    """The mutable record of one live (not yet final) task."""

    __slots__ = (
        "attempts",
        "cancel_requested",
        "error",
        "finished",
        "heap_seq",
        "runner",
        "started_at",
        "status",
        "submitted_at",
        "task",
    )

    def __init__(self, task: Task, status: TaskStatus) -> None:
        self.task = task
        self.status = status
        self.attempts = 0
        self.error: str | None = None
        self.submitted_at = time.time()
        self.started_at: float | None = None
        # The sequence number of this entry's live heap item; -1 when in no heap.
        self.heap_seq = -1
        self.runner: asyncio.Task[tuple[str, Any]] | None = None
        self.cancel_requested = False
        # Created on the first wait(); resolved with the final snapshot.
        self.finished: asyncio.Future[TaskSnapshot] | None = None

    def snapshot(self, result: Any = None, finished_at: float | None = None) -> TaskSnapshot:
        return TaskSnapshot(
            task=self.task,
            status=self.status,
            attempts=self.attempts,
            result=result,
            error=self.error,
            submitted_at=self.submitted_at,
            scheduled_at=self.task.scheduled_at,
            started_at=self.started_at,
            finished_at=finished_at,
        )


class TaskScheduler(AsyncService):
    """Runs in-process tasks by strict priority, at a set time, with timeout, retry, cancel.

    Contract:

    - ``submit_task`` never blocks. It raises ``ValidationError`` for a task that is not a
      ``Task``, whose id is already waiting or running, or that is delayed while
      ``enable_delayed_tasks`` is false; ``QueueFull`` when ``buffer_size`` tasks are
      waiting (pending, scheduled or retrying); ``ClosedError`` after ``stop()``.
      Tasks may be submitted before ``start()``; they wait until it runs.
    - **Priority.** Among ready tasks the highest priority starts first (CRITICAL, HIGH,
      NORMAL, LOW), and within a priority the one that became ready first. At most
      ``workers`` attempts run at once. A retry of an accepted task is never refused, so
      the waiting count may pass ``buffer_size`` by at most ``workers``.
    - **Time.** A delayed task becomes ready at its ``scheduled_at``, never before (measured
      on the event loop's clock from the moment of submission), and then queues by its
      priority like any other.
    - **Timeout.** An attempt running past the task's ``timeout`` is cancelled and counts as
      a failed attempt (``error`` says so). A plain handler's thread cannot be stopped: it
      runs on, and its result is discarded.
    - **Retry.** A failed or timed-out attempt is retried while attempts remain, after
      ``min(retry_backoff_max, retry_backoff_base * 2**(attempts-1))`` seconds, shortened
      by up to ``retry_jitter`` of itself. The wait goes through the time heap like a
      delayed task (also when ``enable_delayed_tasks`` is false): nothing sleeps. Then the
      task ends ``failed`` (last attempt raised) or ``timed_out`` (last attempt timed out).
    - **Cancel.** ``cancel_task`` removes a waiting task at once, or cancels the running
      attempt's asyncio task; either way the task ends ``cancelled``.
    - **Stop.** ``stop(grace)`` refuses new tasks, cancels every waiting task (pending,
      scheduled, retrying: status ``cancelled``, the handler never runs again), lets
      running attempts finish for up to ``grace`` seconds, then cancels the rest. An
      attempt that fails during the grace period is not retried: ``cancelled``. ``stop()``
      called from inside a handler does not wait for that handler (it could not finish
      while being waited for); that attempt completes normally after ``stop()`` returns.
      Idempotent; a second caller waits until the first one is done.
    - **Memory.** The snapshots of the last ``keep_finished`` final tasks are kept for
      ``get_task``/``wait``; older ones are forgotten (``get_task`` returns None).
    - Not thread-safe: call it from the event loop's thread (from a plain handler, use
      ``loop.call_soon_threadsafe``). Submitting a delayed task needs a running loop.

    A handler that ``wait``\\ s for another task needs a free worker for that task: with
    ``workers=1`` it would wait forever, so pass a ``timeout`` there.
    """

    def __init__(
        self,
        buffer_size: int | None = None,
        workers: int | None = None,
        *,
        config: TaskSchedulerConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        """Settings are the ``task_scheduler`` config keys: ``config`` (a
        ``TaskSchedulerConfig`` or a mapping of its keys) with ``buffer_size``,
        ``workers`` and keyword ``overrides`` (``enable_delayed_tasks``,
        ``retry_backoff_base``, ``retry_backoff_max``, ``retry_jitter``,
        ``shutdown_grace``, ``keep_finished``) laid over it. A bad one raises
        ``ValidationError`` naming the argument."""
        if buffer_size is not None:
            overrides["buffer_size"] = buffer_size
        if workers is not None:
            overrides["workers"] = workers
        cfg = self.config = build_config(TaskSchedulerConfig, config, overrides, as_arguments=True)
        self._buffer_size = cfg.buffer_size
        self._workers = cfg.workers
        self._enable_delayed = cfg.enable_delayed_tasks
        self._retry_backoff = Backoff(
            cfg.retry_backoff_base, cfg.retry_backoff_max, cfg.retry_jitter
        )
        self._shutdown_grace = cfg.shutdown_grace
        self._keep_finished = cfg.keep_finished

        self._loop: asyncio.AbstractEventLoop | None = None
        # Live tasks (waiting or running) by id; final ones move to _finished.
        self._entries: dict[str, _Entry] = {}
        self._finished: OrderedDict[str, TaskSnapshot] = OrderedDict()
        self._ready: list[tuple[int, int, _Entry]] = []  # (-priority, seq, entry)
        self._timed: list[tuple[float, int, _Entry]] = []  # (due on loop clock, seq, entry)
        self._n_ready = 0
        self._n_timed = 0
        self._seq = 0
        self._running: dict[str, _Entry] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._started = False
        self._stopped: asyncio.Event | None = None
        # Recurring tasks (schedule_task): timers that submit a copy at each fire time.
        self._recurring = RecurringTasks(self.submit_task)
        self._counts = dict.fromkeys(
            (
                "total_submitted",
                "total_completed",
                "total_failed",
                "total_retried",
                "total_cancelled",
                "total_timed_out",
            ),
            0,
        )

    @classmethod
    def from_config(cls, config: TaskSchedulerConfig, **overrides: Any) -> TaskScheduler:
        """A scheduler built from the ``task_scheduler`` section, ``overrides`` laid over."""
        return cls(config=config, **overrides)

    # -- submitting ---------------------------------------------------------------------

    def submit_task(self, task: Task) -> str:
        """Accept ``task`` and return its id without waiting (see the class contract)."""
        if self._stopping:
            raise ClosedError("the task scheduler is stopped; submit to a new TaskScheduler")
        if not isinstance(task, Task):
            raise ValidationError("task", task, "expected a meetq.Task")
        if task.id in self._entries:
            raise ValidationError(
                "id", task.id, "a task with this id is already waiting or running"
            )
        delayed = task.scheduled_at is not None
        if delayed and not self._enable_delayed:
            raise ValidationError(
                "scheduled_at",
                task.scheduled_at,
                "delayed tasks are disabled (task_scheduler.enable_delayed_tasks is false)",
            )
        if self._n_ready + self._n_timed >= self._buffer_size:
            raise QueueFull(
                f"task scheduler buffer is full ({self._buffer_size} tasks waiting); task "
                f"{task.type!r} not accepted",
                capacity=self._buffer_size,
            )
        delay = 0.0
        if task.scheduled_at is not None:
            # Wall clock first, loop clock second: any gap between the two readings makes
            # the due time later, never earlier.
            delay = task.scheduled_at - time.time()
            if delay > 0:
                self._bind_loop()
        # A re-used id of a finished task starts afresh.
        self._finished.pop(task.id, None)
        entry = _Entry(task, TaskStatus.PENDING)
        self._entries[task.id] = entry
        self._counts["total_submitted"] += 1
        if delay > 0:
            entry.status = TaskStatus.SCHEDULED
            self._push_timed(entry, delay)
        else:
            self._push_ready(entry)
            self._dispatch()
        return task.id

    def schedule_task(
        self,
        name: str,
        task: Task,
        *,
        cron: str | None = None,
        every: float | str | None = None,
        timezone: str | None = None,
    ) -> float:
        """Submit a fresh copy of ``task`` (a new id) at every fire time of ``cron`` (in
        ``timezone``, default UTC) or ``every`` seconds (``"30s"``), replacing a recurring
        task of the same ``name``; return the first fire time (Unix seconds).

        **In this process only**: nothing is stored, each process that calls it runs
        its own copy, and ``stop()`` ends it (``MessageQueue.schedule`` fires once across
        processes). The fire times follow the queue's schedules' rules (cron, zones,
        DST); one passed while the event loop was blocked runs once, late. A copy the
        buffer refuses is logged and skipped. Needs a running event loop. Bad input
        raises ``ValidationError`` naming it; ``ClosedError`` after ``stop()``.
        """
        if self._stopping:
            raise ClosedError("the task scheduler is stopped; schedule on a new TaskScheduler")
        check_name("name", name)
        if not isinstance(task, Task):
            raise ValidationError("task", task, "expected a meetq.Task")
        cadence = parse_cadence(cron, every, timezone)
        self._bind_loop()
        return self._recurring.add(name, task, cadence)

    def unschedule_task(self, name: str) -> bool:
        """End the recurring task ``name`` (copies already submitted run on); False when
        there is none."""
        check_key("name", name)
        return self._recurring.remove(name)

    def scheduled_tasks(self) -> dict[str, float]:
        """Each recurring task's name -> its next fire time (Unix seconds), by name."""
        return self._recurring.next_fires()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _push_ready(self, entry: _Entry) -> None:
        entry.status = TaskStatus.PENDING
        entry.heap_seq = seq = self._next_seq()
        heapq.heappush(self._ready, (-entry.task.priority, seq, entry))
        self._n_ready += 1

    def _push_timed(self, entry: _Entry, delay: float) -> None:
        loop = self._bind_loop()
        entry.heap_seq = seq = self._next_seq()
        heapq.heappush(self._timed, (loop.time() + delay, seq, entry))
        self._n_timed += 1
        self._arm_timer()

    def _arm_timer(self) -> None:
        heap = self._timed
        while heap and heap[0][2].heap_seq != heap[0][1]:
            heapq.heappop(heap)  # cancelled
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        when = heap[0][0]
        if self._timer is not None:
            if self._timer_when <= when:
                return  # fires in time; it re-arms for the rest
            self._timer.cancel()
        assert self._loop is not None  # bound by _push_timed
        self._timer = self._loop.call_at(when, self._release_due)
        self._timer_when = when

    def _release_due(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        heap = self._timed
        while heap and heap[0][0] <= now:
            _, seq, entry = heapq.heappop(heap)
            if entry.heap_seq != seq:
                continue  # cancelled
            self._n_timed -= 1
            self._push_ready(entry)
        # call_at may fire up to the clock's resolution early; then this re-arms.
        self._arm_timer()
        self._dispatch()

    # -- running ------------------------------------------------------------------------

    async def _start(self) -> None:
        """Start running tasks (``start()``; the rules are ``AsyncService``'s)."""
        self._bind_loop()
        self._started = True
        self._dispatch()

    def _pop_ready(self) -> _Entry | None:
        heap = self._ready
        while heap:
            _, seq, entry = heapq.heappop(heap)
            if entry.heap_seq == seq:
                entry.heap_seq = -1
                self._n_ready -= 1
                return entry
        return None

    def _dispatch(self) -> None:
        """Start ready tasks, highest priority first, while a worker slot is free."""
        if not self._started or self._stopping:
            return
        loop = self._bind_loop()
        while len(self._running) < self._workers:
            entry = self._pop_ready()
            if entry is None:
                return
            entry.status = TaskStatus.RUNNING
            entry.attempts += 1
            entry.started_at = time.time()
            runner = loop.create_task(
                _attempt(entry.task), name=f"meetq-task-{entry.task.type}-{entry.task.id}"
            )
            entry.runner = runner
            self._running[entry.task.id] = entry
            # A callback, not code after the await: a runner cancelled before its first
            # step never runs its body, and must still be accounted for.
            runner.add_done_callback(functools.partial(self._attempt_done, entry))

    def _attempt_done(self, entry: _Entry, runner: asyncio.Task[tuple[str, Any]]) -> None:
        if entry.runner is not runner:
            return  # already settled (stop() settles what it had to abandon)
        entry.runner = None
        del self._running[entry.task.id]
        outcome: str
        value: Any = None
        if runner.cancelled():
            outcome = "cancelled"
        elif (exc := runner.exception()) is not None:  # not expected: _attempt catches all
            outcome, value = "error", f"{type(exc).__name__}: {exc}"
        else:
            outcome, value = runner.result()
        if entry.cancel_requested:
            outcome = "cancelled"
        if outcome == "completed":
            self._finish(entry, TaskStatus.COMPLETED, "total_completed", result=value)
        elif outcome == "cancelled":
            self._finish(entry, TaskStatus.CANCELLED, "total_cancelled")
        else:
            self._failed_attempt(entry, timed_out=outcome == "timeout", error=value)
        self._dispatch()

    def _failed_attempt(self, entry: _Entry, *, timed_out: bool, error: str) -> None:
        entry.error = error
        task = entry.task
        if self._stopping:
            # No retries once stopping: the task will not run again.
            self._finish(entry, TaskStatus.CANCELLED, "total_cancelled")
        elif entry.attempts <= task.max_retries:
            self._counts["total_retried"] += 1
            delay = self._retry_backoff.delay(entry.attempts)
            log.warning(
                "meetq scheduler: task %s (%s) attempt %d failed, retrying in %.3gs: %s",
                task.id,
                task.type,
                entry.attempts,
                delay,
                error,
            )
            entry.status = TaskStatus.RETRYING
            self._push_timed(entry, delay)
        elif timed_out:
            log.error("meetq scheduler: task %s (%s) timed out: %s", task.id, task.type, error)
            self._finish(entry, TaskStatus.TIMED_OUT, "total_timed_out")
        else:
            log.error(
                "meetq scheduler: task %s (%s) failed after %d attempt(s): %s",
                task.id,
                task.type,
                entry.attempts,
                error,
            )
            self._finish(entry, TaskStatus.FAILED, "total_failed")

    def _finish(self, entry: _Entry, status: TaskStatus, counter: str, result: Any = None) -> None:
        entry.status = status
        self._counts[counter] += 1
        snapshot = entry.snapshot(result=result, finished_at=time.time())
        del self._entries[entry.task.id]
        if self._keep_finished:
            self._finished[entry.task.id] = snapshot
            while len(self._finished) > self._keep_finished:
                self._finished.popitem(last=False)
        if entry.finished is not None and not entry.finished.done():
            entry.finished.set_result(snapshot)

    # -- control ------------------------------------------------------------------------

    def cancel_task(self, task_id: str) -> bool:
        """Cancel a waiting or running task; False when it is unknown, already final, or
        its attempt has already returned.

        A waiting task is removed at once (its status is ``cancelled`` on return). A
        running attempt's asyncio task is cancelled; its status turns ``cancelled`` as soon
        as the handler has unwound (``await wait(task_id)`` to see it).
        """
        check_key("task_id", task_id)
        entry = self._entries.get(task_id)
        if entry is None:
            return False
        if entry.status is TaskStatus.RUNNING:
            assert entry.runner is not None
            if entry.cancel_requested or entry.runner.done():
                # Done but not yet settled: its outcome stands (the handler's side
                # effects happened); cancelling now would throw its result away.
                return False
            entry.cancel_requested = True
            entry.runner.cancel()
            return True
        self._remove_waiting(entry)
        self._finish(entry, TaskStatus.CANCELLED, "total_cancelled")
        return True

    def _remove_waiting(self, entry: _Entry) -> None:
        entry.heap_seq = -1  # its heap item is now stale
        if entry.status is TaskStatus.PENDING:
            self._n_ready -= 1
            if len(self._ready) >= _COMPACT_MIN and len(self._ready) > 2 * self._n_ready:
                self._ready = [item for item in self._ready if item[2].heap_seq == item[1]]
                heapq.heapify(self._ready)
        else:
            self._n_timed -= 1
            if len(self._timed) >= _COMPACT_MIN and len(self._timed) > 2 * self._n_timed:
                self._timed = [item for item in self._timed if item[2].heap_seq == item[1]]
                heapq.heapify(self._timed)
                self._arm_timer()

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new tasks, cancel waiting ones, let running ones finish within ``grace``
        seconds (default ``shutdown_grace``), then cancel the rest. Idempotent."""
        if grace is not None:
            grace = check_seconds("grace", grace)
        current = asyncio.current_task()
        if self._stopped is not None:
            if not self._stopped.is_set() and not self._is_runner(current):
                await self._stopped.wait()
            return
        self._stopped = stopped = asyncio.Event()
        self._recurring.close()
        grace = self._shutdown_grace if grace is None else grace
        try:
            waiting = [e for e in self._entries.values() if e.status is not TaskStatus.RUNNING]
            for entry in waiting:
                self._remove_waiting(entry)
                self._finish(entry, TaskStatus.CANCELLED, "total_cancelled")
            if waiting:
                log.info("meetq scheduler: stop cancelled %d waiting task(s)", len(waiting))
            self._ready.clear()
            self._timed.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            # The handler that called stop() (if one did) cannot finish while waited for.
            others = [
                e.runner
                for e in self._running.values()
                if e.runner is not None and e.runner is not current
            ]
            if others and grace > 0:
                await asyncio.wait(others, timeout=grace)
            late = [e for e in self._running.values() if e.runner in others and e.runner]
            for entry in late:
                entry.cancel_requested = True
                assert entry.runner is not None
                entry.runner.cancel()
            if late:
                log.warning(
                    "meetq scheduler: %d task(s) still running after %.3gs grace; cancelled",
                    len(late),
                    grace,
                )
                await asyncio.gather(*(t for t in others if not t.done()), return_exceptions=True)
            # Done callbacks normally settled these already (they run before the ones
            # asyncio.wait/gather add); settling again is a no-op.
            for entry in list(self._running.values()):
                if entry.runner is not None and entry.runner is not current and entry.runner.done():
                    self._attempt_done(entry, entry.runner)
        finally:
            stopped.set()

    def _is_runner(self, task: asyncio.Task[Any] | None) -> bool:
        return task is not None and any(e.runner is task for e in self._running.values())

    # -- introspection ------------------------------------------------------------------

    def get_task(self, task_id: str) -> TaskSnapshot | None:
        """A snapshot of the task, or None when it is unknown (or a forgotten final one)."""
        check_key("task_id", task_id)
        entry = self._entries.get(task_id)
        if entry is not None:
            return entry.snapshot()
        return self._finished.get(task_id)

    def status(self, task_id: str) -> TaskStatus | None:
        """The task's status, or None when it is unknown (or a forgotten final one)."""
        check_key("task_id", task_id)
        entry = self._entries.get(task_id)
        if entry is not None:
            return entry.status
        snapshot = self._finished.get(task_id)
        return None if snapshot is None else snapshot.status

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskSnapshot:  # noqa: ASYNC109  (waiting without cancelling the task is the point)
        """Wait until the task is final and return its final snapshot.

        Raises ``ValidationError`` for an unknown id and ``TimeoutError`` when ``timeout``
        seconds pass first (the task itself is not affected).
        """
        check_key("task_id", task_id)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        entry = self._entries.get(task_id)
        if entry is None:
            snapshot = self._finished.get(task_id)
            if snapshot is None:
                raise ValidationError(
                    "task_id", task_id, "no such task (never submitted, or finished and forgotten)"
                )
            return snapshot
        if entry.finished is None:
            entry.finished = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait((entry.finished,), timeout=timeout)
        if not done:
            raise TimeoutError(f"task {task_id} is not finished after {timeout}s")
        return entry.finished.result()

    def stats(self) -> dict[str, int]:
        """Counters. Each submitted task is in exactly one place: ``pending`` (ready),
        ``scheduled`` (delayed or waiting out a retry backoff), ``running``, or counted in
        one of ``total_completed``/``total_failed``/``total_timed_out``/``total_cancelled``
        by its final status. ``total_retried`` counts retries scheduled."""
        return {
            **self._counts,
            "pending": self._n_ready,
            "scheduled": self._n_timed,
            "running": len(self._running),
            "workers": self._workers,
            "buffer_size": self._buffer_size,
        }


async def _attempt(task: Task) -> tuple[str, Any]:
    """Run one attempt; return ("completed", result), ("error"|"timeout", description).

    Raises ``CancelledError`` only when the attempt itself is cancelled (``cancel_task``,
    ``stop()``); a ``CancelledError`` the handler raised on its own fails the attempt.
    """
    try:
        result = await call_user(
            task.handler, task, is_async=is_async_callable(task.handler), timeout=task.timeout
        )
    except UserCodeFailed as failure:
        if failure.timeout is not None:
            return "timeout", failure.error
        log.debug("meetq scheduler: task %s handler raised", task.id, exc_info=failure.exc)
        return "error", failure.error
    return "completed", result
