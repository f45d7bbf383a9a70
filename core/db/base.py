"""The ORM base every package's tables hang off, with the constraint naming convention."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, MetaData
from sqlalchemy.orm import DeclarativeBase

# Alembic needs stable constraint names to drop or alter them later; without a convention
# PostgreSQL invents names that differ between a migrated and a created schema.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Key under Table.info naming the timestamp column a table is range-partitioned on, by day.
PARTITION_COLUMN = "partition_by_day"


class Base(DeclarativeBase):
    """Declarative base: timezone-aware timestamps everywhere, named constraints."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {dt.datetime: DateTime(timezone=True)}
