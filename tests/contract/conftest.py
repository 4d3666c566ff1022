"""Start the strict-mode subprocess run as soon as its test is selected.

It takes about as long as the memory binding does in-process, mostly waiting, so it runs
beside the rest of the session instead of after it (tests/contract/test_strict_mode.py).
"""

from __future__ import annotations

import pytest
import test_strict_mode


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.option.collectonly and any(
        item.name == test_strict_mode.TEST_NAME for item in items
    ):
        test_strict_mode.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # A session that ends early (-x) must not leave the run behind.
    test_strict_mode.stop()
