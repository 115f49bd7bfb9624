"""The schema comes from migrations only: `upgrade head` yields exactly the models, and downgrade works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.db import sqlalchemy_url
from service.migrate import downgrade, upgrade
from service.tables import metadata
from tests.servers import create_database, drop_database


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[str]:
    url = create_database(postgres_server_url)
    yield url
    drop_database(postgres_server_url, url)


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_yields_exactly_the_models_schema(empty_database: str) -> None:
    upgrade(empty_database)
    assert _schema_diff(empty_database) == []


def test_downgrade_to_base_and_back(empty_database: str) -> None:
    upgrade(empty_database)
    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}
    upgrade(empty_database)
    assert _schema_diff(empty_database) == []
