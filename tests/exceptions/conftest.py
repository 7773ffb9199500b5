"""Fixtures for the exceptions' mail: the real SMTP server and outbox relay of the approval
mails, and the policy fixtures (two admins, an active policy) for routing by rule."""
from tests.approvals.conftest import inbox, relaying  # noqa: F401  (fixtures)
from tests.policy.conftest import admins, make_policy  # noqa: F401  (fixtures)
