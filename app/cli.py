"""Operator commands registered on the `flask` CLI."""
from __future__ import annotations

import sys
from typing import Any

import click
import psycopg2
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError
from psycopg2 import sql
from sqlalchemy.engine import make_url

from app.errors import HeraldError
from app.schemas.users import RegisterSchema
from app.services import accounts, bounces, demo

users = AppGroup("users", help="Manage merchant accounts.")
bounce_mail = AppGroup("bounces", help="Mail the bounces process kept because it changed nothing.")


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

    app.cli.add_command(users)
    app.cli.add_command(bounce_mail)
    app.cli.add_command(load_demo)


def _refused(problem: str, errors: Any = None) -> click.ClickException:
    details = "".join(f"\n  {field}: {'; '.join(map(str, messages))}" for field, messages in (errors or {}).items())
    return click.ClickException(problem + details)


@users.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Asked for when not given (keeps it out of the shell history).")
@click.option("--first-name")
@click.option("--last-name")
@click.option("--company-name")
@click.option("--verified", is_flag=True, help="Mark the address verified: no verification mail, can launch at once.")
def create_user(email: str, password: str, first_name: str | None, last_name: str | None,
                company_name: str | None, verified: bool) -> None:
    """Create a merchant account (checked like a registration)."""
    given = {"email": email, "password": password, "firstName": first_name, "lastName": last_name,
             "companyName": company_name}
    try:
        data = RegisterSchema().load({key: value for key, value in given.items() if value is not None})
        user = accounts.create_user(verified=verified, **data)
    except ValidationError as exc:
        raise _refused("The account was not created.", exc.messages) from None
    except HeraldError as exc:
        raise _refused(exc.message, exc.errors) from None
    state = "verified" if user.is_verified else "verification mail queued"
    click.echo(f"created {user.email} ({state}), id {user.id}")


@bounce_mail.command("unparsed")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_unparsed(limit: int) -> None:
    """The newest kept mail: when, envelope, why it changed nothing, and its headers."""
    kept = bounces.kept_mail(limit)
    if not kept:
        click.echo("no kept bounce mail")
    for mail in kept:
        click.echo(f"{mail.id}  {mail.received_at:%Y-%m-%d %H:%M:%S} UTC\n"
                   f"  envelope  from <{mail.mail_from}> to {', '.join(mail.recipients)}\n  reason    {mail.reason}")
        for name, value in mail.headers.items():
            click.echo(f"  {name + ':':<11}{value}")


@bounce_mail.command("show")
@click.argument("mail_id", type=click.UUID)
def show_unparsed(mail_id) -> None:
    """One kept mail, whole, byte for byte as received."""
    try:
        raw = bounces.kept_mail_raw(mail_id)
    except HeraldError as exc:
        raise _refused(exc.message) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@click.command("demo")
@with_appcontext
@click.option("--email", default=demo.DEMO_EMAIL, show_default=True, help="The demo merchant's login.")
@click.option("--password", help="The demo merchant's password (default: a new random one, printed).")
def load_demo(email: str, password: str | None) -> None:
    """Load a demo merchant: verified account, pixel source with events, contacts, a draft campaign."""
    if current_app.config["HERALD_SETTINGS"].env == "production":
        raise click.ClickException("Demo data is for development: HERALD_ENV is production.")
    try:
        loaded = demo.load_demo_merchant(email, password)
    except HeraldError as exc:
        raise _refused(exc.message, exc.errors) from None
    click.echo(f"""demo merchant loaded
  login        {loaded.email}  password {loaded.password}
  contacts     {loaded.contacts}, with {loaded.events} pixel events over the past six days
  data source  {loaded.source_id}  (facebook_pixel; ingest key {loaded.ingest_key})
  campaign     {loaded.campaign_id}  (draft: an email to everyone subscribed; launch it to send)""")
