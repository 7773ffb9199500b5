"""Approval requests and their chains of steps."""
