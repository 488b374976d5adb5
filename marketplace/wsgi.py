import os

from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
application = get_wsgi_application()
# gunicorn runs no system checks: a host whose keys differ from the other hosts' refuses to
# serve here (marketplace/checks.py), as `manage.py qcluster` does.
call_command("check", "--tag", "hosts")
