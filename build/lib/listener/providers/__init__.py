"""Providers: one interface (``base``), a Twilio and an ElasticEmail driver, and a loopback SANDBOX."""

from listener.providers.base import (
    PROVIDER_FOR_CHANNEL,
    OutboundMessage,
    Provider,
    ProviderName,
    SendResult,
    build_providers,
    close_providers,
    unconfigured_channels,
)

__all__ = [
    "PROVIDER_FOR_CHANNEL",
    "OutboundMessage",
    "Provider",
    "ProviderName",
    "SendResult",
    "build_providers",
    "close_providers",
    "unconfigured_channels",
]
