from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection

from escrow import services as escrow_services
from escrow.audit import ledger_audit
from execution.engine.receipts import signing_key
from reputation.audit import reputation_audit


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "corrupts_ledger: tampers with money rows on purpose; skip the closing audit"
    )
    if os.environ.get("PYTEST_XDIST_WORKER"):
        config.pluginmanager.register(_XdistSchedule(), "xdist-schedule")


BROWSER_TESTS = Path(__file__).resolve().parent / "browser"
# The longest tests (measured on 2 cores, a minute or more each), longest first: started
# before everything else under pytest-xdist, so that none of them is left running alone at
# the end. A test missing here is only scheduled less well.
LONGEST_TESTS = (
    "tests/test_distributed.py::",
    "tests/test_worker_load.py::",
    "tests/test_earnings_postgres.py::test_the_sweep_releases_a_thousand_tasks",
    "tests/test_worker_crash.py::test_random_sigkills",
    "tests/test_webhooks_worker.py::test_the_first_retry_comes_within_a_minute",
    "tests/test_production_defaults.py::test_the_dev_funding_provider_is_off",
    "tests/test_ledger_model.py::test_ledger_matches_a_simple_model",
    "tests/test_reputation_migration.py::",
    "tests/test_withdrawals.py::test_withdrawal_throughput_under_concurrency",
    "tests/test_fair_share.py::test_one_requesters_backlog_of_ten_thousand",
    "tests/test_worker_stall.py::test_thirty_sigkills",
    "tests/test_webhooks_worker.py::test_a_worker_killed_between_commit_and_delivery",
    "tests/test_webhooks_worker.py::test_an_event_whose_message_was_lost",
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for item in items:
            if Path(item.path).resolve().is_relative_to(BROWSER_TESTS):
                item.add_marker(pytest.mark.xdist_group("browser"))
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (run through make test)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


class _XdistSchedule:
    """Under pytest-xdist (`-n N --dist loadgroup --no-loadscope-reorder`, as `make test`
    runs): the browser tests form one group (marked above), run one after another on one
    process so that they share a Chromium (tests/browser/conftest.py); and within each of
    pytest-django's blocks (database tests, then transactional ones, then the rest: every
    process still runs them in that order) the long tests come first, LONGEST_TESTS then real
    workers and browsers then PostgreSQL's, so that the processes start on them together and
    none is left running one alone at the end. xdist gives a process its next tests while it
    still has up to 3 to run and never takes them back: two short tests after each long one
    keep two long ones from queueing on one process while another is free. Every process
    collects the same order: it depends only on the items."""

    @pytest.hookimpl(trylast=True)  # after pytest-django has put them in its blocks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        blocks: dict[int, list[pytest.Item]] = {}
        for item in items:
            blocks.setdefault(_django_block(item), []).append(item)
        order: list[pytest.Item] = []
        for block in sorted(blocks):
            ranked = sorted(blocks[block], key=_rank)
            long = [item for item in ranked if _rank(item)[0] < 2]
            rest = [item for item in ranked if _rank(item)[0] >= 2]
            for item in long:
                order.append(item)
                order.extend(rest[:2])
                del rest[:2]
            order.extend(rest)
        items[:] = order


def _django_block(item: pytest.Item) -> int:
    """pytest-django's order: database tests (0), transactional ones (1), the rest (2)."""
    marker = item.get_closest_marker("django_db")
    names = getattr(item, "fixturenames", ())
    transactional = bool(
        marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences"))
    )
    if transactional or "transactional_db" in names or "live_server" in names:
        return 1
    return 0 if marker or "db" in names else 2


def _rank(item: pytest.Item) -> tuple[int, int]:
    for position, prefix in enumerate(LONGEST_TESTS):
        if item.nodeid.startswith(prefix):
            return (0, position)
    if "slow" in item.keywords or "browser" in item.keywords:
        return (1, 0)
    return (2, 0) if "postgres" in item.keywords else (3, 0)


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


@pytest.fixture(autouse=True)
def _fresh_cache(request: pytest.FixtureRequest):
    """Rate limits count in the database cache (marketplace migration 0012), whose table a
    transactional test's flush leaves as it was: every test that reaches the database starts
    with an empty cache, so that one test's logins or uploads never throttle the next."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    transactional = bool({"transactional_db", "live_server"} & set(names)) or bool(
        marker and marker.kwargs.get("transaction")
    )
    if marker or transactional or "db" in names:
        request.getfixturevalue("transactional_db" if transactional else "db")
        cache.clear()


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


@pytest.fixture
def rich_alice(alice):
    """alice with 10 CR, deposited through the dev provider whichever one the test uses."""
    from escrow.services import deposit_create

    deposit_create(user_id=alice.pk, amount=10_000_000, provider="dev")
    return alice


@pytest.fixture
def requester(funded_alice):
    """alice, with 10 CR in her wallet, as the one who submits tasks."""
    return funded_alice


@pytest.fixture
def agent(bob):
    """bob's agent `echo` (1,000 µCR a run, 2,000 µCR per million fuel) with a current
    binary that is a row without stored bytes: for the money and state rules."""
    from tests.factories import make_agent

    return make_agent(bob)


@pytest.fixture
def provider(settings, tmp_path, monkeypatch):
    """Deposits and withdrawals go to the test provider (`tests/funding_provider.py`), with a
    store of this test's own, answering `ok`; the fixture sets its mode."""
    from tests.funding_provider import funding_mode_set

    monkeypatch.setenv("TEST_FUNDING_STORE", str(tmp_path / "funding.sqlite3"))
    settings.FUNDING_PROVIDER = "test"
    funding_mode_set("ok")
    return funding_mode_set


@pytest.fixture
def demo_settings(settings, tmp_path, monkeypatch):
    """Settings for `manage.py load_demo`: its files in a temporary data directory and the
    admin password from the environment. The receipt key is loaded (and cached) from the
    real data directory first, so moving DATA_DIR cannot change which key signs."""
    signing_key()
    settings.DATA_DIR = tmp_path
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "admin-password-for-tests")
    return settings


@pytest.fixture
def judge(charlie):
    """charlie's evaluator `judge`: 500 µCR a run, 1,000 µCR per million fuel."""
    from tests.factories import make_agent

    return make_agent(charlie, slug="judge", base_fee=500, fuel_price=1_000)


@pytest.fixture
def evaluated_agent(agent, judge):
    """bob's agent `echo`, which accepts `judge` as its evaluator."""
    agent.accepted_evaluators.add(judge)
    return agent
