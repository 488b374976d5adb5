"""Page-number paging for every list endpoint.

Its own small module: REST framework imports the pagination class named in the settings
while its generic views are being defined, so this module must not import those views.
"""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination

PAGE_SIZE_MAX = 200


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = PAGE_SIZE_MAX
