"""Reads of payment channels. A channel is visible to the user paying from it and to the
owner of its agent; anybody else is told it does not exist."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from escrow.models import PaymentChannel, Voucher
from marketplace.selectors.access import NO_SUCH_CHANNEL, Refusal


def channels_of(user: Any) -> QuerySet[PaymentChannel]:
    """Channels the user pays from or whose agent they own, newest first."""
    return (
        PaymentChannel.objects.filter(Q(requester=user) | Q(agent__owner=user))
        .select_related("agent", "requester")
        .order_by("-created_at")
    )


def channels_paid_by(user: Any) -> QuerySet[PaymentChannel]:
    return (
        PaymentChannel.objects.filter(requester=user)
        .select_related("agent")
        .order_by("-created_at")
    )


def channels_to_agents_of(user: Any) -> QuerySet[PaymentChannel]:
    return (
        PaymentChannel.objects.filter(agent__owner=user)
        .exclude(requester=user)
        .select_related("agent", "requester")
        .order_by("-created_at")
    )


def channel_for(
    user: Any, channel_id: Any, *, missing: Refusal = NO_SUCH_CHANNEL
) -> PaymentChannel:
    """A channel the user pays from or whose agent they own; anybody else gets `missing`."""
    channel = channels_of(user).filter(pk=channel_id).first()
    if channel is None:
        raise missing()
    return channel


def open_channels_of(user: Any) -> QuerySet[PaymentChannel]:
    """The user's channels that can pay for a new task."""
    return channels_paid_by(user).filter(
        status=PaymentChannel.Status.OPEN, expires_at__gt=timezone.now()
    )


def channel_vouchers(channel: PaymentChannel) -> list[Voucher]:
    return list(
        Voucher.objects.filter(channel=channel)
        .select_related("task")
        .defer("task__stdout", "task__stderr", "task__input")
        .order_by("-nonce")
    )


def channel_available(channel: PaymentChannel) -> int:
    """What a new task on the channel can still budget: not redeemed, not drawn for an
    evaluator and not in flight."""
    return channel.deposit - channel.redeemed - channel.drawn - channel.reserved
