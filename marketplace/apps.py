from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # `checks` registers the `hosts` startup checks (shared keys of a distributed
        # deployment); `account_tokens` connects the receiver that revokes the account token
        # when the password changes.
        from marketplace import account_tokens, checks  # noqa: F401
