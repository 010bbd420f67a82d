"""Marshmallow schemas: one module per resource (create / update / output / query)."""
