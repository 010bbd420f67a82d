"""The migrated database must hold the nine seed tables exactly as TypeORM makes them.

The contract DDL (tests/contract/schema.sql, a copy of the shared contract) is loaded into a scratch
database and both catalogs are read the same way, so any drift — a column, type, nullability,
default, or a PK/unique/FK constraint with its name and ON DELETE rule — fails with the difference.
"""
from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import SEED_TABLES, TEST_DATABASE_URL, recreate_database

CONTRACT_SQL = Path(__file__).parent / "contract" / "schema.sql"
_base = make_url(TEST_DATABASE_URL)
CONTRACT_URL = _base.set(database=f"{_base.database}_contract").render_as_string(hide_password=False)

COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""
CONSTRAINTS = """
SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
WHERE c.relname = ANY(%s) AND k.contype IN ('p', 'u', 'f', 'c')
"""


def _connect(url: str):
    u = make_url(url)
    return psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)


def _read_catalog(cur) -> tuple[set[tuple], set[tuple]]:
    cur.execute(COLUMNS, (list(SEED_TABLES),))
    columns = set(cur.fetchall())
    cur.execute(CONSTRAINTS, (list(SEED_TABLES),))
    return columns, set(cur.fetchall())


def _catalog(url: str) -> tuple[set[tuple], set[tuple]]:
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            return _read_catalog(cur)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def contract_catalog() -> tuple[set[tuple], set[tuple]]:
    recreate_database(CONTRACT_URL)
    conn = _connect(CONTRACT_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(CONTRACT_SQL.read_text())
    conn.close()
    return _catalog(CONTRACT_URL)


def test_contract_defines_the_nine_tables(contract_catalog):
    columns, _ = contract_catalog
    assert {row[0] for row in columns} == set(SEED_TABLES)


def test_columns_match_contract(app, contract_catalog):
    expected, _ = contract_catalog
    actual, _ = _catalog(TEST_DATABASE_URL)
    assert sorted(actual - expected) == [], "columns differing from the contract (ours)"
    assert sorted(expected - actual) == [], "contract columns missing or different"


def test_constraints_match_contract(app, contract_catalog):
    _, expected = contract_catalog
    _, actual = _catalog(TEST_DATABASE_URL)
    assert sorted(actual - expected) == [], "constraints not in the contract (ours)"
    assert sorted(expected - actual) == [], "contract constraints missing or different"


@pytest.mark.parametrize(
    "drift",
    [
        """ALTER TABLE campaigns ALTER COLUMN status SET DEFAULT 'paused'""",
        """ALTER TABLE users ALTER COLUMN "firstName" SET NOT NULL""",
        """ALTER TABLE data_sources ADD COLUMN extra text""",
        """ALTER TABLE messages DROP CONSTRAINT "FK_e5663ce0c730b2de83445e2fd19",
           ADD CONSTRAINT "FK_e5663ce0c730b2de83445e2fd19" FOREIGN KEY ("conversationId")
           REFERENCES conversations(id) ON DELETE SET NULL""",
    ],
)
def test_comparison_notices_drift(app, contract_catalog, drift):
    """The comparison itself is sharp: each kind of drift, applied and rolled back, is reported."""
    conn = _connect(TEST_DATABASE_URL)
    try:
        with conn.cursor() as cur:
            cur.execute(drift)
            columns, constraints = _read_catalog(cur)
        assert (columns, constraints) != contract_catalog
    finally:
        conn.rollback()
        conn.close()
