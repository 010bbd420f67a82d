"""Operator commands registered on the `flask` CLI."""
from __future__ import annotations

import click
import psycopg2
from flask import Flask, current_app
from psycopg2 import sql
from sqlalchemy.engine import make_url


def create_database_if_missing(url: str) -> bool:
    """Create the database named by `url` when it does not exist yet; True if it was created."""
    target = make_url(url)
    admin = target.set(database="postgres")
    conn = psycopg2.connect(
        host=admin.host, port=admin.port, user=admin.username, password=admin.password, dbname=admin.database
    )
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
            return True
    finally:
        conn.close()


def register_cli(app: Flask) -> None:
    @app.cli.command("create-db")
    def create_db() -> None:
        """Create the configured PostgreSQL database if it does not exist."""
        url = current_app.config["SQLALCHEMY_DATABASE_URI"]
        name = make_url(url).database
        created = create_database_if_missing(url)
        click.echo(f"database {name}: {'created' if created else 'exists'}")
