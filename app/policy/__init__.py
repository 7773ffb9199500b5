"""Versioned tenant policies: routing rules, auto-approval and its guard rails."""
