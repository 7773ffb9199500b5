# The real SMTP server, the relay to the test's queue and the real worker of the approval tests.
from tests.approvals.conftest import inbox, relaying, run_worker  # noqa: F401
