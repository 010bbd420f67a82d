"""Flower never starts open."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from run_flower import basic_auth_problem  # noqa: E402


@pytest.mark.parametrize("value", ["", "admin", "admin:", ":secret", "admin:pw,broken"])
def test_missing_or_malformed_password_is_refused(value):
    assert basic_auth_problem(value)


def test_user_password_pairs_are_accepted():
    assert basic_auth_problem("admin:s3cret,ops:other") is None


def test_wrapper_exits_without_a_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_flower.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "FLOWER_BASIC_AUTH" in proc.stderr
