"""Transactional outbox: side effects written with the change, relayed to RQ after commit."""
