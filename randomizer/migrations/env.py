"""Alembic environment: runs on the connection handed over by ``randomizer init``."""

from __future__ import annotations

from alembic import context

from randomizer import models  # noqa: F401  (registers the tables)
from randomizer.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `randomizer init`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
