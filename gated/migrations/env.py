"""Alembic's entry point: runs the migrations on the connection ``gated.db`` hands over."""

from __future__ import annotations

from alembic import context

from gated.db import metadata, schema_tables

schema_tables()  # every module that defines tables, so autogenerate sees them all
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
