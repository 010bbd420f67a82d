"""Credentials: password hashing and policy, opaque tokens, JWT checks."""
