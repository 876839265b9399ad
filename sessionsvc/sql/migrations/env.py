"""Alembic's environment for the audit schema: runs on the connection
:mod:`sessionsvc.sql.migrate` passes, online only."""

from __future__ import annotations

from alembic import context

from sessionsvc.sql.tables import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the audit migrations with sessionsvc.sql.migrate.upgrade(url)")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
