"""`make run` writes the development environment into DATA_DIR/dev.env, and every `manage.py`
command run afterwards in that checkout reads it: no variables to export (SPEC §18). The
environment's own variables win over the file; with no file, production's defaults hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from marketplace.env import development_env_read

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PRINT_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.DEBUG, s.EARNINGS_HOLD_SECONDS, s.DEV_FUNDING_ENABLED)"
)


def clean_manage(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py` as a developer's shell runs it: the project's settings, DATA_DIR, and none of
    the variables `make run` used to export (nor any of the suite's)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_dev_env(data_dir: Path) -> Path:
    """The file exactly as `make run` writes it."""
    result = subprocess.run(
        ["make", "--no-print-directory", "dev-env", f"DATA_DIR={data_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return data_dir / "dev.env"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after `make run`'s set-up: the development file, then `migrate`."""
    data_dir = tmp_path_factory.mktemp("checkout")
    make_dev_env(data_dir)
    migrated = clean_manage("migrate", "--noinput", "-v0", data_dir=data_dir)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return data_dir


def readme_commands() -> set[str]:
    return set(re.findall(r"manage\.py (\w+)", README.read_text()))


def test_make_run_writes_the_development_settings(tmp_path):
    path = make_dev_env(tmp_path)

    assert development_env_read(path) == {"DEBUG": "true", "EARNINGS_HOLD_SECONDS": "60"}


@pytest.mark.parametrize(
    "command",
    [
        ["check"],
        ["audit_ledger"],
        ["audit_reputation"],
        ["verify_receipt", "--help"],
        ["rotate_custodial_keys", "--help"],
    ],
    ids=" ".join,
)
def test_the_readmes_commands_work_in_the_checkout_with_no_variables(checkout, command):
    result = clean_manage(*command, data_dir=checkout)

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_command_the_readme_names_is_known_there(checkout):
    # `--help` needs the settings: a command of the project's apps is unknown without them.
    for command in sorted(readme_commands()):
        result = clean_manage(command, "--help", data_dir=checkout)
        assert result.returncode == 0, (command, result.stdout + result.stderr)


def printed_settings(data_dir: Path, **env: str) -> str:
    result = clean_manage("shell", "-c", PRINT_SETTINGS, data_dir=data_dir, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_the_environment_wins_over_the_file(checkout):
    assert printed_settings(checkout) == "True 60 True"
    assert printed_settings(checkout, EARNINGS_HOLD_SECONDS="5") == "True 5 True"


def test_a_process_given_debug_by_its_environment_reads_no_file(checkout):
    # The suite, the benchmarks and an explicit production environment say DEBUG themselves:
    # a development file left in their data directory changes nothing for them.
    assert printed_settings(checkout, DEBUG="true") == "True 86400 True"

    production = clean_manage("check", data_dir=checkout, DEBUG="false")
    assert production.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in production.stderr


def test_without_the_file_production_defaults_hold(tmp_path):
    result = clean_manage("audit_ledger", data_dir=tmp_path)

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert not any(tmp_path.iterdir())  # no key generated, no database created


def test_a_malformed_line_stops_the_start_with_its_place(tmp_path):
    (tmp_path / "dev.env").write_text("DEBUG=true\nthis is not a setting\n")

    result = clean_manage("check", data_dir=tmp_path)

    assert result.returncode != 0
    assert f"{tmp_path / 'dev.env'}, line 2" in result.stderr


def test_the_file_reads_comments_blank_lines_exports_and_quotes(tmp_path):
    path = tmp_path / "dev.env"
    path.write_text("# made by hand\n\nexport DEBUG=true\nLOG_LEVEL='WARNING'\nA=\"x=y\"\nB=\n")

    assert development_env_read(path) == {
        "DEBUG": "true",
        "LOG_LEVEL": "WARNING",
        "A": "x=y",
        "B": "",
    }
