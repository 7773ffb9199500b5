"""The local mail sink, read back for a developer: `flask mail last-link` prints the newest
approval link the sink caught, decoded from its quoted-printable body and usable; the Sent mail
page shows the caught links in development only. A real aiosmtpd server with the handler
`make run` uses writes the log; a real worker process sends the mail."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Debugging

from tests.approvals.conftest import free_port, run_worker


@pytest.fixture
def sink(app, tmp_path):
    path = tmp_path / "mail.log"
    with path.open("w", buffering=1) as stream:  # line by line, as `python -u` writes it
        port = free_port()
        controller = Controller(Debugging(stream), hostname="127.0.0.1", port=port)
        controller.start()
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port,
                          APP_BASE_URL="http://cleardesk.test")
        try:
            yield path
        finally:
            controller.stop()


@pytest.fixture
def two_mailed(relaying, sink, team, make_user, make_item):
    """Two approvals routed to two approvers, their mails caught by the sink."""
    make_user("bea@x.test", [team["tenant"]], roles=("approver",), limit="60000")
    first = make_item(team["tenant"], amount="1200.00", requester=team["requester"],
                      details={"reason": "A reason long enough that quoted-printable wraps "
                                         "this line of the mail body with a soft line break"})
    second = make_item(team["tenant"], amount="900.00", requester=team["requester"])
    run_worker(relaying)
    return first, second


def test_last_link_prints_a_decoded_link_that_opens_the_approval(two_mailed, sink, runner,
                                                                 client):
    raw = sink.read_text()
    assert "=\n" in raw or "=3D" in raw  # the log itself is quoted-printable

    result = runner.invoke(args=["mail", "last-link", "--log", str(sink)])

    assert result.exit_code == 0, result.output
    link = result.output.strip()
    assert link.startswith("http://cleardesk.test/a/") and "=" not in link
    page = client.get(urlsplit(link).path)
    assert page.status_code == 200
    assert "Approve" in page.text and "Reject" in page.text


def test_last_link_to_one_person_is_theirs(two_mailed, sink, runner, client):
    for address in ("ann@x.test", "bea@x.test"):
        result = runner.invoke(args=["mail", "last-link", "--to", address, "--log", str(sink)])
        assert result.exit_code == 0, result.output
        assert client.get(urlsplit(result.output.strip()).path).status_code == 200

    nobody = runner.invoke(args=["mail", "last-link", "--to", "nobody@x.test", "--log",
                                 str(sink)])
    assert nobody.exit_code != 0 and "No approval link" in nobody.output


def test_last_link_without_a_log_says_where_it_looked(runner, tmp_path):
    result = runner.invoke(args=["mail", "last-link", "--log", str(tmp_path / "none.log")])
    assert result.exit_code != 0 and "No mail log" in result.output


def test_sent_mail_page_shows_the_caught_links_in_development_only(two_mailed, sink, app,
                                                                   client, auth, make_user,
                                                                   team):
    make_user("root@x.test", [team["tenant"]], roles=("admin",))
    app.config.update(MAIL_SINK_LOG=str(sink), APP_ENV="development")
    auth.login("root@x.test")

    page = client.get("/admin/mail/").text

    assert page.count('class="sink-link" href="http://cleardesk.test/a/') == 2  # clickable
    assert "Open the approval link" in page
    assert "cleardesk.test/a/[link token redacted]" in page  # the stored body stays redacted
    # A phone scrolls the table, not the page.
    assert '<div class="table-scroll"><table class="queue-table" id="sent-mails">' in page

    app.config["APP_ENV"] = "staging"
    assert 'class="sink-link"' not in client.get("/admin/mail/").text
