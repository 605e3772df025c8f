from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devstack.stack import Daemon, Stack, load_stack


@pytest.fixture(scope="session")
def stack() -> Stack:
    return load_stack()


@pytest_asyncio.fixture(scope="session")
async def daemon(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    process = Daemon(stack, tmp_path_factory.mktemp("daemon") / "daemon.log")
    process.start()
    try:
        await process.wait_ready()
        yield process
    finally:
        code = process.stop()
        print(f"\n--- daemon exited {code}; last lines ---\n{process.tail(30)}")
