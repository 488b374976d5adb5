"""The backends `BINARY_STORAGE` picks for `STORAGES["binaries"]` (see marketplace/storage.py).

Read by the settings, so it imports nothing that needs Django set up.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def binary_storage_backend(name: str) -> dict[str, Any]:
    """`file`: MEDIA_ROOT, one machine. `database`: the StoredBinary table, every host reads it
    (the default with PostgreSQL). `s3`: django-storages (`pip install "django-storages[s3]"`)
    on AWS_STORAGE_BUCKET_NAME, AWS_S3_REGION_NAME, AWS_S3_ENDPOINT_URL and AWS_LOCATION;
    boto3 reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an instance role) itself."""
    if name == "file":
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if name == "database":
        return {"BACKEND": "marketplace.storage.DatabaseStorage"}
    if name == "s3":
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME") or None,
                "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
                "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                "location": os.environ.get("AWS_LOCATION") or "binaries",
                "file_overwrite": True,
            },
        }
    raise ImproperlyConfigured(f"BINARY_STORAGE must be file, database or s3, got {name!r}")
