"""Outgoing webhooks, the adapter half: the catalogue of event types, how a request is signed, which
URLs may receive one, and the HTTP request itself. The outbox, the endpoints and the delivery runs
are services (app.services.webhook_events, webhooks, webhook_delivery)."""
