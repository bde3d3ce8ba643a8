"""The database's schema history (Alembic). ``gated.db.open_engine`` brings a database up to date."""
