from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the `hosts` startup checks (shared keys of a distributed deployment).
        from marketplace import checks  # noqa: F401
