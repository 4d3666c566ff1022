"""meetq without its optional packages, each run in a fresh interpreter that cannot import
them (``sys.modules[name] = None`` makes ``import name`` raise ModuleNotFoundError and
``importlib.util.find_spec(name)`` return None, exactly as when it is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from meetq.testing import free_port


def _run_without(blocked: list[str], body: str) -> Any:
    """Run ``body`` (which must ``print(json.dumps(...))`` last) with ``blocked`` missing."""
    script = "import sys\n"
    script += "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    script += textwrap.dedent(body)
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_meetq_testing_helpers_import_and_work_without_pytest() -> None:
    outcome = _run_without(
        ["pytest", "pytest_asyncio", "_pytest"],
        """
        import asyncio, json
        import meetq.testing
        from meetq.testing import RedisServer, RedisServerUnavailable, eventually, free_port
        from meetq.testing import QUICK, RecordingBackend, wait_until
        from meetq import MessageQueue, Message, BackendContext, build_registry
        from meetq import load_config, make_plugin_manager

        ticks = []
        recorded = []
        async def main():
            await eventually(lambda: ticks.append(1) or len(ticks) >= 3, timeout=5)
            await wait_until(lambda: len(ticks) >= 3)
            memory = build_registry(make_plugin_manager(entry_points=False)).create(
                "memory", BackendContext(config=load_config({}), client=None)
            )
            recording = RecordingBackend(memory)
            mq = MessageQueue(recording, **{**QUICK, "queue_name": "no-pytest"})
            await mq.publish(Message(type="t"))
            recorded.append(recording.count("enqueue"))
            await recording.aclose()
        asyncio.run(main())
        try:
            meetq.testing.ContractSuite
        except ImportError as exc:
            error = str(exc)
        else:
            error = None
        print(json.dumps({
            "port": free_port(),
            "ticks": len(ticks),
            "recorded": recorded,
            "server": RedisServer.__name__,
            "unavailable": issubclass(RedisServerUnavailable, RuntimeError),
            "contract_error": error,
            "pytest_loaded": any(
                sys.modules.get(n) is not None for n in ("pytest", "pytest_asyncio")
            ),
        }))
        """,
    )
    assert 0 < outcome["port"] < 65536
    assert outcome["ticks"] == 3
    assert outcome["recorded"] == [1]  # RecordingBackend works without pytest
    assert outcome["server"] == "RedisServer" and outcome["unavailable"] is True
    assert outcome["pytest_loaded"] is False
    assert outcome["contract_error"] == (
        "meetq.testing.ContractSuite is a pytest class and needs the 'pytest' package, "
        "which is not installed; install it with: pip install 'meetq[test]'"
    )


def test_contract_classes_load_lazily_with_pytest() -> None:
    import meetq.testing
    from meetq.testing._suite import ContractSuite
    from meetq.testing.work_queue_suite import WorkQueueContract

    assert meetq.testing.ContractSuite is ContractSuite
    assert meetq.testing.WorkQueueContract is WorkQueueContract
    assert set(meetq.testing.__all__) <= set(dir(meetq.testing))


def test_memory_works_and_type_redis_names_the_extra_without_the_redis_driver() -> None:
    # A free port, so nothing could reach a real server even if the guard failed open.
    url = f"redis://127.0.0.1:{free_port()}/0"
    outcome = _run_without(
        ["redis", "hiredis"],
        f"""
        import asyncio, json
        import meetq

        async def memory_round_trip():
            qm = await meetq.initialize_queue_system({{"message_queue": {{"type": "memory"}}}})
            mq = qm.get_message_queue()
            got = asyncio.get_running_loop().create_future()

            @mq.handler("speech_recognition")
            async def recognise(msg):
                got.set_result(msg.payload["audio_data"])

            async with qm:
                await mq.publish(meetq.Message(type="speech_recognition",
                                               payload={{"audio_data": "base64..."}}))
                return await asyncio.wait_for(got, 10)

        async def redis_selected():
            try:
                await meetq.initialize_queue_system(
                    {{"message_queue": {{"type": "redis"}}, "redis": {{"url": {url!r}}}}}
                )
            except meetq.MissingDependencyError as exc:
                return [type(exc).__name__, exc.backend, exc.package, exc.install, str(exc)]
            return None

        print(json.dumps({{
            "memory": asyncio.run(memory_round_trip()),
            "redis": asyncio.run(redis_selected()),
            "driver_loaded": sys.modules.get("redis") is not None,
        }}))
        """,
    )
    assert outcome["memory"] == "base64..."
    assert outcome["driver_loaded"] is False
    assert outcome["redis"] == [
        "MissingDependencyError",
        "redis",
        "redis",
        "pip install 'meetq[redis]'",
        "backend 'redis' needs the 'redis' package, which is not installed; "
        "install it with: pip install 'meetq[redis]'",
    ]
