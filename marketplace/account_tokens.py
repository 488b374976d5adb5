"""The account token (`Authorization: Token <key>`): the credential that acts for the whole
account, for its owner's own tools. Programs get API keys instead (scoped and capped).

It is DRF's Token row (key, user, created), with a life of its own:
- it expires `TOKEN_TTL_DAYS` after it was issued (401 `token_expired` from then on);
- rotating it issues a new one and the old one is refused at once (its row is gone);
- revoking it deletes it, and nothing answers to it any more;
- any password change (the account's own, the admin's, `set_password` then `save`)
  revokes it, so a leaked token dies with the password it was issued under;
- logging in with the password (`POST /api/v1/auth/token/`) returns the live token, or
  issues a new one when there is none or it has expired.

Issuing and rotating lock the user's row, so two concurrent logins of one account agree on
one token instead of racing on the one-token-per-user index.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from rest_framework.authtoken.models import Token


def account_token_expires_at(token: Token) -> datetime:
    return token.created + timedelta(days=settings.TOKEN_TTL_DAYS)


def account_token_expired(token: Token, *, now: datetime | None = None) -> bool:
    return account_token_expires_at(token) <= (now or timezone.now())


def account_token_of(user: User) -> Token | None:
    """The user's token, live or expired; None when there is none."""
    return Token.objects.filter(user=user).first()


def _issue(user: User, *, keep_live: bool) -> str:
    with transaction.atomic():
        # One issuer per account at a time: the second finds what the first issued.
        User.objects.select_for_update().filter(pk=user.pk).exists()
        current = Token.objects.filter(user=user).first()
        if current is not None:
            if keep_live and not account_token_expired(current):
                return current.key
            current.delete()
        return Token.objects.create(user=user).key


def account_token_live(*, user: User) -> str:
    """The user's live token, issued now if there is none or it has expired (a login)."""
    current = account_token_of(user)
    if current is not None and not account_token_expired(current):
        return current.key
    return _issue(user, keep_live=True)


def account_token_rotate(*, user: User) -> str:
    """A new token for the user; the one before it, if any, is refused from now on."""
    return _issue(user, keep_live=False)


def account_token_revoke(*, user: User) -> bool:
    """Delete the user's token; True if there was one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)


@receiver(post_save, sender=User, dispatch_uid="account_token_password_changed")
def _password_changed(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    # `_password` holds the new raw password from `set_password` until the save that stores
    # it has run (Django's own "password changed" signal to validators); a hash upgrade at
    # login clears it first, so it does not count as a change.
    if not created and getattr(instance, "_password", None) is not None:
        account_token_revoke(user=instance)
