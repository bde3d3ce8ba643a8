"""The schema's history (Alembic, ``gated/migrations``) on real SQLite files: a new database is
brought to the newest revision, and the tables the code defines are exactly what the migrations
make, so a table changed without a migration fails here."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, select, text

from gated.db import BASELINE, open_engine, schema_tables
from gated.store import audit


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _revision(path: Path) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


def test_a_new_database_is_at_the_newest_revision_and_matches_the_code(tmp_path: Path) -> None:
    engine = open_engine(tmp_path / "gated.db")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), schema_tables())
    engine.dispose()
    assert differences == []
    assert _revision(tmp_path / "gated.db") == _head()


def test_opening_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gated.db"
    engine = open_engine(path)
    row = {"id": "a1", "ts": datetime(2026, 12, 3, tzinfo=UTC), "actor": "op", "action": "x", "detail": "{}"}
    with engine.begin() as connection:
        connection.execute(insert(audit).values(**row))
    engine.dispose()
    again = open_engine(path)
    with again.connect() as connection:
        assert connection.execute(select(audit.c.id)).scalars().all() == ["a1"]
    again.dispose()
    assert _revision(path) == _head()


def test_a_database_made_before_migrations_is_taken_as_the_baseline_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    # The schema as it was then: the baseline revision's tables, without Alembic's own table.
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
    with old.begin() as connection:
        connection.execute(
            insert(audit).values(
                id="old-1", ts=datetime(2026, 1, 1, tzinfo=UTC), actor="op", action="x", detail="{}"
            )
        )
    old.dispose()
    assert _revision(path) is None
    engine = open_engine(path)
    with engine.connect() as connection:
        assert connection.execute(select(audit.c.id)).scalars().all() == ["old-1"]
    engine.dispose()
    assert _revision(path) == _head()
    assert _head() >= BASELINE


def test_a_hold_list_from_before_signed_commands_is_kept_but_stale(tmp_path: Path) -> None:
    from datetime import timedelta

    from gated.holds import HoldStore

    path = tmp_path / "old.db"
    old = create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", "gated:migrations")
    when = datetime(2026, 12, 1, tzinfo=UTC)
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO holdlist_state (id, version, updated_at, loaded, loaded_at) VALUES (1, 1, :t, 1, :t)"
            ),
            {"t": when},
        )
        connection.execute(
            text(
                "INSERT INTO holds (container, agency, hold_type, source_message_id, placed_at)"
                " VALUES ('CSQU3054383', 'CBP', 'customs', 'cbp-1', :t)"
            ),
            {"t": when},
        )
    old.dispose()
    engine = open_engine(path)
    holds = HoldStore(engine)
    state = holds.state()
    assert [hold.container for hold in holds.active_holds_for("CSQU3054383")] == ["CSQU3054383"]
    assert state.loaded and state.confirmed_at is None and not state.out_of_step
    assert not state.fresh(when + timedelta(seconds=1), 3600)  # nothing confirmed it yet
    engine.dispose()
    assert _revision(path) == _head()
