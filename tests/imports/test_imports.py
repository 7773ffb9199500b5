"""CSV imports: a file with bad rows is refused whole with row numbers and reasons; a clean
10,000-row file imports in full through a real worker while its progress shows; the same
file again creates nothing new."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.admin.people import grant_membership
from app.audit.models import AuditEvent
from app.extensions import db
from app.imports import services as import_services
from app.imports.models import ImportJob
from app.models import WorkItem
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from tests.conftest import SYSTEM, actor, csrf_from, empty_queues
from tests.dashboard.recompute import expected_rollups, stored_rollups

ROOT = Path(__file__).resolve().parents[2]
BILLING_HEADER = "exception_id,invoice_number,customer,exception_type,amount,currency,region\n"


@pytest.fixture
def analyst(auth, make_tenant, make_user):
    tenant = make_tenant()
    make_user("analyst@x.test", [tenant], roles=("analyst",))
    auth.login("analyst@x.test")
    return tenant


def _upload(client, text, fmt="billing_export", name="export.csv", raw=None):
    """Post the upload form as a browser does (multipart), built here: the test client's own
    encoder spills bodies over 500 KB to a temporary file that it never closes."""
    page = client.get("/imports/")
    boundary = "cleardesk-test-boundary"
    fields = {"csrf_token": csrf_from(page.text), "format": fmt}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
             f'filename="{name}"\r\nContent-Type: text/csv\r\n\r\n').encode()
    body += (raw if raw is not None else text.encode()) + f"\r\n--{boundary}--\r\n".encode()
    return client.post("/imports/", data=body,
                       content_type=f"multipart/form-data; boundary={boundary}")


def _errors(html):
    table = html.split('id="row-errors"')[1].split("</table>")[0]
    cells = re.findall(r"<tr><td class=\"num\">([^<]*)</td><td><code>([^<]*)</code></td>"
                       r"<td>([^<]*)</td></tr>", table)
    return [(row, field, message) for row, field, message in cells]


def test_a_file_with_bad_rows_is_refused_with_row_numbers_and_reasons(client, analyst):
    text = BILLING_HEADER + "\n".join([
        "EX-1,INV-1,Acme,payment_failed,120.00,USD,us",       # row 2: fine
        "EX-2,INV-2,Acme,payment_failed,,USD,us",             # row 3: no amount
        "EX-3,INV-3,Globex,card_melted,10.00,USD,us",         # row 4: unknown type
        "EX-4,INV-4,Initech,payment_failed,10.00,EUR,eu",     # row 5: wrong currency
        "EX-1,INV-5,Hooli,payment_failed,5.00,USD,us",        # row 6: same reference as row 2
        "EX-6,INV-6,Umbrella,payment_failed,1.005,USD,us",    # row 7: three decimals
        "EX-7,INV-7,Stark,payment_failed,9.00,USD,us,extra",  # row 8: a cell too many
    ]) + "\n"
    response = _upload(client, text)
    assert response.status_code == 303
    page = client.get(response.headers["Location"])
    assert "Refused: nothing was imported." in page.text
    errors = _errors(page.text)
    rows = {row: (field, message) for row, field, message in errors}
    assert set(rows) == {"3", "4", "5", "6", "7", "8"}
    assert rows["3"] == ("amount", "is required")
    assert rows["4"][0] == "exception_type" and "unknown type" in rows["4"][1]
    assert rows["5"] == ("currency", "this tenant works in USD")
    assert rows["6"] == ("exception_id", "the same reference as row 2")
    assert rows["7"][0] == "amount" and "2 decimal places" in rows["7"][1]
    assert rows["8"][0] == "row"
    job = db.session.scalars(select(ImportJob)).one()
    assert job.status == "refused" and job.error_rows == 6 and job.total_rows == 7
    # A refused file cannot be started, and nothing of it exists.
    start = client.post(f"/imports/{job.id}/start", data={"csrf_token": csrf_from(page.text)})
    assert start.status_code == 409
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 0


@pytest.mark.parametrize("text, words", [
    ("exception_id,customer,amount\nEX-1,Acme,1.00\n", "Missing column(s): invoice_number"),
    (BILLING_HEADER, "no rows"),
    ("", "empty"),
])
def test_a_malformed_file_is_refused_whole(client, analyst, text, words):
    page = client.get(_upload(client, text).headers["Location"])
    assert words in page.text and "Refused" in page.text


def test_a_file_that_is_not_utf8_is_refused(client, analyst):
    raw = BILLING_HEADER.encode() + b"EX-1,I,\xff\xfe,payment_failed,1\n"
    response = _upload(client, "", raw=raw, name="x.csv")
    assert "not UTF-8" in client.get(response.headers["Location"]).text


def test_partner_statement_rows_become_disputes(client, analyst):
    text = ("statement_ref,line_id,partner,claim_type,claimed_amount,calculated_amount,period\n"
            "ST-9,1,Contoso Partners,commission,1200.00,900.00,2026-10\n")
    page = client.get(_upload(client, text, fmt="partner_statement").headers["Location"])
    assert "1 rows" in page.text and "ST-9:1" in page.text


def _worker(app) -> subprocess.Popen:
    config = app.config
    env = dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
               REDIS_URL=config["REDIS_URL"], RQ_QUEUE=config["RQ_QUEUE"],
               SECRET_KEY=config["SECRET_KEY"], IMPORT_BATCH_ROWS="500",
               # The items' own outbox messages (one items.created per batch) stay
               # unrelayed: this test is about the import.
               OUTBOX_RELAY_ON_COMMIT="0")
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--without-scheduler"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _run_with_progress(app, client, import_id) -> list[int]:
    """Confirm the import, let a real worker run it, and poll the progress fragment the way
    the page's htmx does; returns the processed counts seen."""
    seen = []
    worker = _worker(app)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            fragment = client.get(f"/imports/{import_id}/progress",
                                  headers={"HX-Request": "true"})
            assert fragment.status_code == 200
            seen.append(int(re.search(r'data-processed="(\d+)"', fragment.text).group(1)))
            if "import-summary" in fragment.text:
                assert "hx-trigger" not in fragment.text  # the polling stops when done
                return seen
            assert 'hx-trigger="every 1s"' in fragment.text
            time.sleep(0.2)
        pytest.fail(f"the import did not finish; progress seen: {seen[-5:]}")
    finally:
        worker.terminate()
        worker.wait(30)


def _big_file(rows: int) -> str:
    return BILLING_HEADER + "".join(
        f"EX-{n},INV-{n},Customer {n % 97},payment_failed,{n % 5000 + 1}.25,USD,us\n"
        for n in range(rows))


def _import(app, client, text, rows):
    location = _upload(client, text, name="big.csv").headers["Location"]
    page = client.get(location)
    assert f"{rows:,} rows</strong> passed every check" in page.text
    import_id = int(location.rsplit("/", 1)[1])
    start = client.post(f"/imports/{import_id}/start", data={"csrf_token": csrf_from(page.text)})
    assert start.status_code == 303
    return import_id, page, _run_with_progress(app, client, import_id)


# The 10,000-row file, on both databases (the batch path writes a batch in a few
# statements).
BIG_ROWS = 10_000


def test_a_big_file_shows_progress_and_imports_in_full(app, client, analyst):
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    try:
        import_id, _page, seen = _import(app, client, _big_file(BIG_ROWS), BIG_ROWS)
    finally:
        empty_queues(app)
    assert seen[-1] == BIG_ROWS
    assert any(0 < s < BIG_ROWS for s in seen), seen  # the bar moved between the ends
    assert seen == sorted(seen)
    db.session.expire_all()
    job = db.session.get(ImportJob, import_id)
    assert (job.status, job.created_count, job.existing_count) == ("succeeded", BIG_ROWS, 0)
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == BIG_ROWS
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "item.created")) == BIG_ROWS
    # Policy evaluation and webhooks take the new items in batches: one outbox message per
    # batch of 500 rows (the worker's IMPORT_BATCH_ROWS), none per item.
    topics = dict(db.session.execute(select(OutboxMessage.topic, func.count())
                                     .group_by(OutboxMessage.topic)).all())
    assert topics.get("items.created") == BIG_ROWS // 500 and "item.created" not in topics
    assert stored_rollups() == expected_rollups()


def test_the_same_file_imported_twice_creates_nothing_new(app, client, analyst):
    app.config["OUTBOX_RELAY_ON_COMMIT"] = True
    text = _big_file(300)
    try:
        first, _page, _seen = _import(app, client, text, 300)
        second, page, seen = _import(app, client, text, 300)
    finally:
        empty_queues(app)
    assert "Importing it again creates nothing new" in page.text
    db.session.expire_all()
    assert (db.session.get(ImportJob, second).created_count,
            db.session.get(ImportJob, second).existing_count) == (0, 300)
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 300


def test_a_confirmed_file_that_no_longer_passes_is_refused_whole_when_its_job_runs(
        app, client, analyst):
    """The importer lost the analyst role between confirming and the job: the job checks every
    row through the write path before writing any, and refuses the file, nothing imported."""
    from app.imports.jobs import run_import
    from app.models import Membership, MembershipRole, User

    location = _upload(client, _big_file(50), name="late.csv").headers["Location"]
    page = client.get(location)
    import_id = int(location.rsplit("/", 1)[1])
    client.post(f"/imports/{import_id}/start", data={"csrf_token": csrf_from(page.text)})
    user = db.session.scalars(select(User).where(User.email == "analyst@x.test")).one()
    membership = db.session.scalars(select(Membership).where(
        Membership.user_id == user.id)).one()
    for role in db.session.scalars(select(MembershipRole).where(
            MembershipRole.membership_id == membership.id)):
        role.role = "approver"
    commit()
    assert run_import(import_id) == "refused"
    db.session.expire_all()
    job = db.session.get(ImportJob, import_id)
    assert job.status == "refused" and "roles" in job.errors[0]["message"]
    assert db.session.scalar(select(func.count()).select_from(WorkItem)) == 0
    assert db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.action == "import.refused")).all() == ["import.refused"]


# ---------------------------------------------------------------------------------------------
# Who sees an import: those who may import in its tenant (its file name and rows are that
# tenant's data), as the upload page already decided.


@pytest.fixture
def uploaded(make_tenant, make_user):
    """A clean file uploaded by an analyst of northwind; contoso is another tenant."""
    northwind, contoso = make_tenant("northwind"), make_tenant("contoso", currency="EUR")
    analyst = make_user("analyst@x.test", [northwind], roles=("analyst",))
    job = import_services.upload(actor(analyst), northwind.id, format_name="billing_export",
                                 filename="northwind-december.csv",
                                 raw=(BILLING_HEADER + "EX-1,INV-1,Acme,payment_failed,"
                                      "120.00,USD,us\n").encode())
    commit()
    return northwind, contoso, job.id


@pytest.mark.parametrize(("roles", "where", "status"), [
    (("analyst",), "northwind", 200),
    (("manager",), "northwind", 200),
    (("requester",), "northwind", 403),
    (("approver",), "northwind", 403),
    (("auditor",), "northwind", 403),
    (("admin",), "northwind", 403),
    (("analyst", "manager"), "contoso", 404),
    # Imports in contoso, only audits northwind: importing elsewhere is not importing here.
    (("analyst",), "contoso and an auditor of northwind", 403),
])
@pytest.mark.parametrize("page", ["", "/progress"])
def test_an_import_is_shown_only_to_those_who_may_import_in_its_tenant(
        client, auth, make_user, uploaded, roles, where, status, page):
    northwind, contoso, import_id = uploaded
    viewer = make_user("viewer@x.test", [contoso if where.startswith("contoso") else northwind],
                       roles=roles)
    if where == "contoso and an auditor of northwind":
        grant_membership(SYSTEM, user=viewer, tenant=northwind, roles=["auditor"],
                         approval_limit="0")
        commit()
    auth.login("viewer@x.test")

    response = client.get(f"/imports/{import_id}{page}")

    assert response.status_code == status
    shown = "northwind-december.csv" in response.text
    assert shown == (status == 200)
    assert ("INV-1" in response.text) == (status == 200 and page == "")
