"""Fixtures: one OpenBao and one PostgreSQL per session; a fresh bot, Slack fake and
database per test; a fault proxy in front of OpenBao for the tests that want one."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sandbox.faultproxy import FaultProxy
from bot.sandbox.slack_fake import FakeSlack
from bot.sandbox.stack import Backends, Bot, Clock, start_bot

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    b = Backends.start()
    yield b
    b.stop()


@pytest.fixture
def vault_proxy(backends: Backends) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's OpenBao; point a bot at `vault_proxy.url`."""
    with FaultProxy("127.0.0.1", backends.bao.port) as proxy:
        yield proxy


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        backends: Backends = request.getfixturevalue("backends")
        return backends.pg.create_database(f"bg_test_{next(_db_names)}")
    return f"sqlite:///{tmp_path / 'breakglass.db'}"


@pytest.fixture
def bot(
    backends: Backends, slack: FakeSlack, clock: Clock, database_url: str, tmp_path: Path
) -> Iterator[Bot]:
    b = start_bot(backends, slack, database_url, clock=clock, workdir=tmp_path)
    yield b
    b.stop()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, from every logger, as production would emit them."""
    caplog.set_level(logging.DEBUG)
    return caplog
