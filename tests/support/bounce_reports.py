"""What mailbox providers send back, built the way they build it: RFC 3464 delivery status
notifications (as Postfix writes them), RFC 5965 complaint reports (as feedback loops send them),
Amazon SNS messages signed with a certificate of our own, served by a local SNS emulator, and
SendGrid event batches signed with an ECDSA P-256 key."""
from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer
from tests.support.smtp_sink import ReceivedMail


def _headers_of(original: ReceivedMail) -> str:
    head = original.raw.split(b"\r\n\r\n", 1)[0].decode()
    return f"Return-Path: <{original.mail_from}>\r\n{head}\r\n"


def dsn(original: ReceivedMail, *, action: str = "failed", status: str = "5.1.1",
        diagnostic: str = "550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table") -> bytes:
    """A Postfix-style bounce of `original`, addressed to its envelope sender."""
    recipient = original.recipients[0]
    text = (f"From: MAILER-DAEMON@mx.mailbox.test (Mail Delivery System)\r\n"
            f"To: {original.mail_from}\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{uuid.uuid4()}@mx.mailbox.test>\r\n"
            f"Auto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN-BOUNDARY"\r\n'
            f"\r\n"
            f"--DSN-BOUNDARY\r\n"
            f"Content-Description: Notification\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n"
            f"\r\n"
            f"I'm sorry to have to inform you that your message could not\r\n"
            f"be delivered to one or more recipients.\r\n"
            f"\r\n"
            f"--DSN-BOUNDARY\r\n"
            f"Content-Description: Delivery report\r\n"
            f"Content-Type: message/delivery-status\r\n"
            f"\r\n"
            f"Reporting-MTA: dns; mx.mailbox.test\r\n"
            f"X-Postfix-Queue-ID: 4B5C21C0A1\r\n"
            f"Arrival-Date: Mon, 07 Dec 2026 09:59:58 +0000\r\n"
            f"\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\n"
            f"Original-Recipient: rfc822;{recipient}\r\n"
            f"Action: {action}\r\n"
            f"Status: {status}\r\n"
            f"Remote-MTA: dns; inbound.mailbox.test\r\n"
            f"Diagnostic-Code: smtp; {diagnostic}\r\n"
            f"\r\n"
            f"--DSN-BOUNDARY\r\n"
            f"Content-Description: Undelivered Message Headers\r\n"
            f"Content-Type: text/rfc822-headers\r\n"
            f"\r\n"
            f"{_headers_of(original)}"
            f"--DSN-BOUNDARY--\r\n")
    return text.encode()


def arf(original: ReceivedMail, feedback_address: str) -> bytes:
    """A feedback loop's complaint (RFC 5965) about `original`, sent to the address registered with it."""
    body = original.raw.decode()
    text = (f"From: feedbackloop@fbl.mailbox.test\r\n"
            f"To: {feedback_address}\r\n"
            f"Subject: Complaint about message from 192.0.2.1\r\n"
            f"Date: Mon, 07 Dec 2026 11:00:00 +0000\r\n"
            f"Message-ID: <{uuid.uuid4()}@fbl.mailbox.test>\r\n"
            f"MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF-BOUNDARY"\r\n'
            f"\r\n"
            f"--ARF-BOUNDARY\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n"
            f"\r\n"
            f"This is an email abuse report for an email message received from IP 192.0.2.1.\r\n"
            f"\r\n"
            f"--ARF-BOUNDARY\r\n"
            f"Content-Type: message/feedback-report\r\n"
            f"\r\n"
            f"Feedback-Type: abuse\r\n"
            f"User-Agent: MailboxFBL/2.1\r\n"
            f"Version: 1\r\n"
            f"Original-Mail-From: <{original.mail_from}>\r\n"
            f"Original-Rcpt-To: <{original.recipients[0]}>\r\n"
            f"Arrival-Date: Mon, 07 Dec 2026 10:58:00 +0000\r\n"
            f"Source-IP: 192.0.2.1\r\n"
            f"\r\n"
            f"--ARF-BOUNDARY\r\n"
            f"Content-Type: message/rfc822\r\n"
            f"Content-Disposition: inline\r\n"
            f"\r\n"
            f"Return-Path: <{original.mail_from}>\r\n"
            f"{body}\r\n"
            f"--ARF-BOUNDARY--\r\n")
    return text.encode()


# --- Amazon SNS ---------------------------------------------------------------------------------

SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


class SnsSigner:
    """A signing key and its self-signed certificate, as SNS keeps one per region."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test-region-1.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate_pem = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).sign(self.key, hashes.SHA256())
        ).public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        # The string to sign as AWS documents it: "name\nvalue\n" for each field, in byte order.
        text = "".join(f"{name}\n{message[name]}\n" for name in SIGNED[message["Type"]] if name in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}


class SnsEmulator(EmulatorServer):
    """Serves the signing certificate and answers subscription confirmations, on 127.0.0.1."""

    def __init__(self, signer: SnsSigner) -> None:
        super().__init__()
        self.signer = signer

    def handle(self, request: Request) -> Response:
        if request.path.endswith(".pem"):
            return Response(self.signer.certificate_pem, mimetype="application/x-pem-file")
        if request.args.get("Action") == "ConfirmSubscription":
            return Response("<ConfirmSubscriptionResponse/>", mimetype="text/xml")
        return Response(status=404)

    @property
    def certificate_url(self) -> str:
        return f"{self.base_url}/SimpleNotificationService-0123456789abcdef.pem"


def sns_message(topic_arn: str, certificate_url: str, notification: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic_arn,
            "Message": json.dumps(notification), "Timestamp": "2026-12-07T10:00:00.000Z",
            "SigningCertURL": certificate_url,
            "UnsubscribeURL": f"{certificate_url.rsplit('/', 1)[0]}/?Action=Unsubscribe"}


def ses_mail(original: ReceivedMail) -> dict[str, Any]:
    """The `mail` object of an SES notification about `original`."""
    return {"timestamp": "2026-12-07T09:59:58.000Z", "source": original.mail_from,
            "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/shop.test",
            "sendingAccountId": "123456789012", "messageId": f"0100018c{uuid.uuid4().hex}-000000",
            "destination": list(original.recipients), "headersTruncated": False,
            "commonHeaders": {"from": [str(original.message["From"])], "to": list(original.recipients),
                              "messageId": str(original.message["Message-ID"]),
                              "subject": str(original.message["Subject"])}}


def ses_bounce(original: ReceivedMail, bounce_type: str = "Permanent", status: str = "5.1.1") -> dict[str, Any]:
    return {"notificationType": "Bounce", "mail": ses_mail(original), "bounce": {
        "bounceType": bounce_type, "bounceSubType": "General", "timestamp": "2026-12-07T10:00:00.000Z",
        "feedbackId": f"0100018c{uuid.uuid4().hex}-000000", "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        "bouncedRecipients": [{"emailAddress": original.recipients[0], "action": "failed", "status": status,
                               "diagnosticCode": f"smtp; 550 {status} user unknown"}]}}


def ses_reject(original: ReceivedMail) -> dict[str, Any]:
    """An SES event (configuration set event publishing): SES found a virus and sent nothing."""
    return {"eventType": "Reject", "mail": ses_mail(original), "reject": {"reason": "Bad content"}}


def ses_complaint(original: ReceivedMail) -> dict[str, Any]:
    return {"notificationType": "Complaint", "mail": ses_mail(original), "complaint": {
        "complainedRecipients": [{"emailAddress": original.recipients[0]}], "timestamp": "2026-12-07T10:00:00.000Z",
        "feedbackId": f"0100018c{uuid.uuid4().hex}-000000", "complaintFeedbackType": "abuse",
        "userAgent": "Mailbox FBL"}}


# --- SendGrid -------------------------------------------------------------------------------------

class SendGridSigner:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()  # as SendGrid's settings page shows it

    def headers(self, body: bytes, timestamp: str = "1765101600") -> dict[str, str]:
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}


def sendgrid_event(original: ReceivedMail, event: str, **fields: Any) -> dict[str, Any]:
    return {"email": original.recipients[0], "timestamp": 1765101600, "event": event,
            "smtp-id": str(original.message["Message-ID"]), "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{uuid.uuid4().hex[:22]}.filterdrecv-5645d9c87f-6r6mz-1-0", **fields}
