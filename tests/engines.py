"""Close the database engines that CLI commands create inside a test.

Each ``randomizer`` command builds its own app and engine; in a real process they end with
it, but in the test process their pooled connections would be garbage-collected while
still open (a ResourceWarning, which ``filterwarnings = error`` turns into a failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event


@pytest.fixture
def dispose_engines() -> Iterator[None]:
    """Keep every engine used during the test alive, then dispose of them all."""
    engines: list[Engine] = []

    def remember(connection: Any) -> None:
        if connection.engine not in engines:
            engines.append(connection.engine)

    event.listen(Engine, "engine_connect", remember)
    yield
    event.remove(Engine, "engine_connect", remember)
    for engine in engines:
        engine.dispose()
