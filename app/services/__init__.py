"""The domain: one module per aggregate. Services own the transaction and never touch the request."""
