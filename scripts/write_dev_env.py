"""Write a development `.env` with freshly generated secrets (run once by `make run`)."""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet


def main(path: str = ".env") -> None:
    target = Path(path)
    if target.exists():
        return
    target.write_text(
        "\n".join(
            [
                "# Development settings written by `make run`; never commit this file.",
                "HERALD_ENV=development",
                "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/herald",
                "REDIS_URL=redis://127.0.0.1:6379/0",
                f"SECRET_KEY={secrets.token_urlsafe(48)}",
                f"JWT_SECRET_KEY={secrets.token_urlsafe(48)}",
                f"DATA_ENCRYPTION_KEY={Fernet.generate_key().decode()}",
                "PUBLIC_BASE_URL=http://127.0.0.1:5000",
                "SMTP_URL=smtp://127.0.0.1:1025",
                "MAIL_FROM=Herald <no-reply@localhost>",
                f"FLOWER_BASIC_AUTH=admin:{secrets.token_urlsafe(18)}",
                "FLOWER_PORT=5555",
                "",
            ]
        )
    )
    target.chmod(0o600)
    print(f"wrote {target} with new secrets", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
