"""Suite-wide: the order the workers take the test files in.

The tests that run the real engine (marked ``engine``) take minutes per file, most others seconds. With
``--dist loadfile --no-loadscope-reorder`` (pytest.ini) the workers take whole files in collection order,
so the engine files go first and the short ones fill in around them: the workers end together instead
of one of them starting a ten-minute file last.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("engine") is None)  # stable: files stay whole
