"""Declarative base shared by every model.

The nine seed tables carry TypeORM's constraint names explicitly; the naming convention below only
names constraints of Herald's own tables, so migrations can drop them by a predictable name.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(orm.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Declarative types it as any FromClause; every model here is mapped to a Table.
        __table__: ClassVar[sa.Table]


def uuid_pk() -> orm.MappedColumn[uuid.UUID]:
    """`id uuid DEFAULT uuid_generate_v4()` as TypeORM's @PrimaryGeneratedColumn('uuid') makes it."""
    return orm.mapped_column(pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("uuid_generate_v4()"))


def bulk_uuid_pk() -> orm.MappedColumn[uuid.UUID]:
    """`id uuid DEFAULT gen_random_uuid()`, for tables written hundreds of rows a statement: uuid-ossp's
    uuid_generate_v4() makes system calls for every id, PostgreSQL's own gen_random_uuid() none."""
    return orm.mapped_column(pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()"))


def created_at() -> orm.MappedColumn[datetime]:
    return orm.mapped_column("createdAt", sa.DateTime(), nullable=False, server_default=sa.func.now())


def updated_at() -> orm.MappedColumn[datetime]:
    # TypeORM's @UpdateDateColumn: the ORM stamps it on every UPDATE it issues.
    return orm.mapped_column(
        "updatedAt", sa.DateTime(), nullable=False, server_default=sa.func.now(), onupdate=sa.func.now()
    )


def utcnow() -> datetime:
    """Naive UTC, the form the seed's `timestamp without time zone` columns hold."""
    return datetime.now(UTC).replace(tzinfo=None)
