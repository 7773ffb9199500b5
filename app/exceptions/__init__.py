"""Billing exceptions and partner settlement disputes."""
