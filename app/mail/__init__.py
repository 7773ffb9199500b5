"""Outgoing mail: sending over SMTP and the log of what was sent, for admins to read."""
