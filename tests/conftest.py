from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from escrow import services as escrow_services
from escrow.audit import ledger_audit
from reputation.audit import reputation_audit


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "corrupts_ledger: tampers with money rows on purpose; skip the closing audit"
    )


BROWSER_TESTS = Path(__file__).resolve().parent / "browser"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _schedule_for_xdist(items)
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (run through make test)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _schedule_for_xdist(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n N --dist loadgroup`, as `make test` runs): the browser tests
    form one group, run one after another on one worker so that they share a Chromium
    (tests/browser/conftest.py); and the long tests come first (real workers and browsers,
    then PostgreSQL's concurrency tests), so that the processes start on them together and
    do not end on one of them alone. Every process collects the same order: the sort is
    stable and depends only on the items."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(BROWSER_TESTS):
            item.add_marker(pytest.mark.xdist_group("browser"))

    def rank(item: pytest.Item) -> int:
        if "slow" in item.keywords or "browser" in item.keywords:
            return 0
        return 1 if "postgres" in item.keywords else 2

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _audits_pass_after_every_db_test(request: pytest.FixtureRequest):
    """Every test that touched the database leaves a ledger and reputations that add up."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    transactional = "transactional_db" in names or bool(marker and marker.kwargs.get("transaction"))
    if not (marker or transactional or "db" in names):
        yield
        return
    # Set the database up before this fixture so that its teardown (the audit) runs first.
    request.getfixturevalue("transactional_db" if transactional else "db")
    # Transactional tests flush every table, system accounts included: put them back.
    escrow_services.system_accounts_ensure()
    yield
    if request.node.get_closest_marker("corrupts_ledger"):
        return
    ledger = ledger_audit()
    assert ledger.ok, f"ledger audit failed after the test: {ledger.violations}"
    reputation = reputation_audit()
    assert reputation.ok, f"reputation audit failed after the test: {reputation.violations}"


@pytest.fixture
def alice(db):
    from tests.factories import UserFactory

    return UserFactory.create(username="alice")


@pytest.fixture
def bob(db):
    from tests.factories import UserFactory

    return UserFactory.create(username="bob")


@pytest.fixture
def charlie(db):
    from tests.factories import UserFactory

    return UserFactory.create(username="charlie")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The production hasher is slow on purpose; the suite hashes hundreds of passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    # Uploaded binaries go to a directory of the test's own (workers it starts inherit it).
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def funded_alice(alice):
    from escrow.services import deposit_create

    deposit_create(user_id=alice.pk, amount=10_000_000)
    return alice
