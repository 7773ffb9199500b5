"""Outbound webhooks: per-tenant subscriptions, signed deliveries with retries, the log."""
