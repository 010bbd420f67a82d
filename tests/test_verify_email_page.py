"""The page the verification mail links to: opening it changes nothing, its button verifies."""
from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import EmailVerification, User
from app.services import accounts
from tests.support.accounts import register, unique_email

LINK = re.compile(r"https://herald\.test(/verify-email\?token=[A-Za-z0-9_\-]+)")
HIDDEN_TOKEN = re.compile(r'<input type="hidden" name="token" value="([^"]+)">')


def _mailed_link(client, smtp_sink) -> tuple[str, str]:
    """Register a merchant and send their verification mail (what the worker does): (email, link path)."""
    email = unique_email()
    register(client, email)
    (verification_id,) = db.session.scalars(sa.select(EmailVerification.id)).all()
    accounts.send_verification_email(verification_id)
    (mail,) = smtp_sink.wait_for(1)
    return email, LINK.search(mail.text()).group(1)


def _verified(email: str) -> bool:
    db.session.expire_all()
    return db.session.scalar(sa.select(User.is_verified).where(User.email == email))


def test_the_link_opens_a_page_whose_button_verifies_the_account(client, app_ctx, smtp_sink):
    email, path = _mailed_link(client, smtp_sink)

    opened = client.get(path)
    assert opened.status_code == 200 and opened.mimetype == "text/html"
    page = opened.get_data(as_text=True)
    assert "Confirm your email address" in page and '<button type="submit">' in page
    assert opened.headers["Referrer-Policy"] == "no-referrer" and "no-store" in opened.headers["Cache-Control"]
    assert not _verified(email), "opening the link (as a mail scanner does) must not verify"

    # What the browser sends for the page's form: it posts back to the same URL.
    token = HIDDEN_TOKEN.search(page).group(1)
    confirmed = client.post(path, data={"token": token})
    assert confirmed.status_code == 200 and "Email address confirmed" in confirmed.get_data(as_text=True)
    assert _verified(email)

    again = client.post(path, data={"token": token})
    assert again.status_code == 400 and "Link not valid" in again.get_data(as_text=True)


def test_forged_or_missing_tokens_answer_a_page_and_verify_nothing(client, app_ctx, smtp_sink):
    email, path = _mailed_link(client, smtp_sink)
    assert client.get("/verify-email").status_code == 400
    forged = client.post(path, data={"token": "forged"})
    assert forged.status_code == 400 and "verify-email/resend" in forged.get_data(as_text=True)
    assert client.post(path, data={}).status_code == 400
    assert not _verified(email)


def test_the_token_is_escaped_into_the_page(client, app_ctx):
    page = client.get("/verify-email", query_string={"token": '"><script>x</script>'}).get_data(as_text=True)
    assert "<script>x" not in page and "&lt;script&gt;" in page
