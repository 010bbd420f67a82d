"""Outbound message transports: one provider per channel behind one small protocol."""
