"""Simultaneous first sign-ins from one address, each in its own thread, app context and
database connection: none fails on the throttle's primary key, and every failure is counted."""
import threading

from sqlalchemy import select

from app.auth.services import SignInRefused, _keys, authenticate
from app.extensions import db
from app.models import LoginThrottle
from app.unit_of_work import commit

SIGN_INS = 4  # fewer than LOGIN_MAX_FAILURES: each is counted, none refused as locked


def test_simultaneous_first_sign_ins_from_one_address_are_all_counted(app, make_user):
    make_user("pat@x.test")
    barrier = threading.Barrier(SIGN_INS, timeout=30)
    outcomes = [None] * SIGN_INS

    def sign_in(index):
        with app.app_context():
            try:
                barrier.wait()
                authenticate("pat@x.test", "not the password", "203.0.113.9", "pytest")
            except SignInRefused:
                commit()  # as the route does: the failure and its event are kept
                outcomes[index] = "refused"
            except Exception as exc:  # noqa: BLE001 - what the test is about
                db.session.rollback()
                outcomes[index] = f"{exc.__class__.__name__}: {exc}"
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(SIGN_INS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["refused"] * SIGN_INS
    db.session.expire_all()
    email_key, ip_key = _keys("pat@x.test", "203.0.113.9")
    by_ip = db.session.scalars(select(LoginThrottle).where(LoginThrottle.key == ip_key)).one()
    assert by_ip.failures == SIGN_INS  # no lost update
    by_email = db.session.scalars(select(LoginThrottle).where(LoginThrottle.key == email_key)).one()
    assert by_email.failures == SIGN_INS
