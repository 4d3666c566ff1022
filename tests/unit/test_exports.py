"""The public surface: curated, sorted ``__all__`` lists that are complete and truthful."""

from __future__ import annotations

import builtins
import importlib
import inspect
import types

import pytest

import meetq
from meetq.core import errors


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user could reach on ``module`` that are not submodules or dunders."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }


def test_meetq_all_is_sorted_and_unique() -> None:
    assert meetq.__all__ == sorted(meetq.__all__)
    assert len(set(meetq.__all__)) == len(meetq.__all__)


def test_meetq_all_is_complete_and_every_name_exists() -> None:
    assert _public_names(meetq) == set(meetq.__all__)
    for name in meetq.__all__:
        assert getattr(meetq, name) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from meetq import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(meetq.__all__)


def test_meetq_version_is_set() -> None:
    assert isinstance(meetq.__version__, str)
    assert meetq.__version__.count(".") == 2


def _meetq_errors() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    pending: list[type[BaseException]] = [errors.MeetqError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__ == "meetq.core.errors"}


def test_errors_all_is_sorted_and_lists_every_error() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    assert {cls.__name__ for cls in _meetq_errors()} == set(errors.__all__)
    defined_here = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and value.__module__ == errors.__name__
    }
    assert defined_here == set(errors.__all__)


def test_every_error_is_exported_from_meetq_and_drawn_in_the_tree() -> None:
    doc = inspect.getdoc(errors) or ""
    for cls in _meetq_errors():
        assert getattr(meetq, cls.__name__) is cls
        assert cls.__name__ in doc, f"{cls.__name__} missing from the error tree docstring"
        assert cls.__doc__, f"{cls.__name__} has no docstring"


def test_error_names_do_not_shadow_builtins() -> None:
    builtin_names = set(dir(builtins))
    assert not {cls.__name__ for cls in _meetq_errors()} & builtin_names


@pytest.mark.parametrize(
    "module_name",
    [
        "meetq.manager._system",
        "meetq.core.config",
        "meetq.dispatch._dispatcher",
        "meetq.core.errors",
        "meetq.core.protocols",
        "meetq.core.registry",
        "meetq.inprocess._scheduler",
        "meetq.core.serialization",
        "meetq.core.task_types",
        "meetq.core.types",
        "meetq.plugins",
    ],
)
def test_module_all_names_exist_once_and_are_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    for name in exported:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{module_name}.{name} has no docstring"


def test_contract_mixins_do_not_shadow_each_other() -> None:
    # ContractSuite inherits every mixin: a shared name would silently drop a test.
    from meetq.testing import (
        BackendObjectContract,
        ContractSuite,
        InspectionContract,
        LimitsContract,
        PubSubContract,
        ScheduleContract,
        TaskDispatcherContract,
        TrackingContract,
        WorkQueueContract,
    )

    mixins = (
        WorkQueueContract,
        InspectionContract,
        LimitsContract,
        PubSubContract,
        ScheduleContract,
        TaskDispatcherContract,
        TrackingContract,
        BackendObjectContract,
    )
    # ContractSuite is every mixin and nothing else, so binding it binds the whole suite.
    assert set(ContractSuite.__bases__) == set(mixins)
    seen: dict[str, str] = {}
    for mixin in mixins:
        for name in vars(mixin):
            if name.startswith("test_"):
                assert name not in seen, f"{name} is in {seen.get(name)} and {mixin.__name__}"
                seen[name] = mixin.__name__


def test_task_type_is_exported_with_the_guides_thirteen_values() -> None:
    assert meetq.TaskType.__module__ == "meetq.core.task_types"
    assert "TaskType" in meetq.__all__
    assert [member.value for member in meetq.TaskType] == [
        "speech_recognition",
        "emotion_detection",
        "synthesis_detection",
        "audio_denoising",
        "video_enhancement",
        "text_to_speech",
        "media_processing",
        "stream_control",
        "recording",
        "meeting_control",
        "user_management",
        "signaling",
        "webrtc_negotiation",
    ]
