"""Headers and pages (SPEC §23): the API docs load no code from another host, the TLS proxy's
header is trusted only when the environment says a proxy is in front, and the pages that show
a secret are never cached."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from tests.test_development_env import clean_manage
from tests.test_settings import manage, production_keys
from tests.views.conftest import client_for

PROXY_HEADER = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"


@pytest.mark.django_db
def test_the_api_docs_load_swagger_ui_from_our_own_static_files(settings):
    response = Client().get("/api/v1/docs/")

    assert response.status_code == 200
    page = response.text
    urls = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert urls, page
    assert "://" not in page and '"//' not in page  # no other host, with or without a scheme
    static = [url for url in urls if url.startswith(settings.STATIC_URL) or url.startswith("/")]
    assert static == urls
    for url in urls:
        if "swagger-ui" in url:
            name = url.split("static/", 1)[1]
            assert finders.find(name), f"{name} is not among the static files"
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls)
    assert '"validatorUrl": null' in page  # Swagger UI sends the schema to no validator


def test_the_proxy_header_is_not_trusted_unless_the_environment_names_it(tmp_path: Path):
    def proxy_header(**env: str) -> str:
        result = clean_manage("shell", "-c", PROXY_HEADER, data_dir=tmp_path, DEBUG="true", **env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert proxy_header() == "None"
    assert proxy_header(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto") == (
        "('HTTP_X_FORWARDED_PROTO', 'https')"
    )
    refused = clean_manage(
        "check", data_dir=tmp_path, DEBUG="true", SECURE_PROXY_SSL_HEADER="X-Proto: https"
    )
    assert refused.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header name" in refused.stderr


@pytest.mark.django_db
def test_a_plain_http_request_claiming_tls_is_redirected_without_a_proxy(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = None

    claimed = Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https")

    assert claimed.status_code == 301
    assert claimed["Location"] == "https://testserver/healthz"


@pytest.mark.django_db
def test_behind_a_proxy_its_header_says_the_request_came_over_tls(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    assert Client().get("/healthz", HTTP_X_FORWARDED_PROTO="https").status_code != 301
    assert Client().get("/healthz").status_code == 301


@pytest.mark.django_db
def test_the_page_with_a_new_api_key_is_never_cached(alice):
    response = client_for(alice).post(
        reverse("api-key-list"), {"name": "bot", "scopes": ["wallet:read"]}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_the_page_with_a_new_webhook_secret_is_never_cached(alice):
    response = client_for(alice).post(
        reverse("webhook-list"), {"url": "http://127.0.0.1:9/hooks", "events": ["task.failed"]}
    )

    assert response.status_code == 200
    assert "Its signing secret is shown this once" in response.text
    assert "no-store" in response["Cache-Control"]


def test_in_production_the_docs_page_is_served_from_the_collected_files(tmp_path: Path):
    env = {
        "DEBUG": "false",
        **production_keys(),
        "ALLOWED_HOSTS": "testserver",
        "DATA_DIR": str(tmp_path),
        "SECURE_SSL_REDIRECT": "false",
    }
    assert manage("collectstatic", "--noinput", "-v0", env=env).returncode == 0
    probe = (
        "import re; from django.test import Client; "
        "page = Client().get('/api/v1/docs/').text; "
        'urls = re.findall(r\'(?:src|href)="([^"]*)"\', page); '
        "print([(url, Client().get(url).status_code) for url in urls])"
    )
    result = manage("shell", "-c", probe, env=env)

    served = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert len(served) == 4, served  # the favicon, the stylesheet and two scripts
    assert all(url.startswith("/static/") and status == 200 for url, status in served), served
