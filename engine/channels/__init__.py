"""Platform modules behind one interface; adding a platform is one module and one line here."""

from __future__ import annotations

from engine.channels.base import Channel
from engine.channels.messenger import MessengerChannel
from engine.channels.slack import SlackChannel
from engine.channels.telegram import TelegramChannel
from engine.channels.whatsapp import WhatsAppChannel
from engine.models import ChannelType

REGISTRY: dict[ChannelType, Channel] = {}
for _channel in (TelegramChannel(), WhatsAppChannel(), MessengerChannel(), SlackChannel()):
    for _type in _channel.types:
        REGISTRY[_type] = _channel


def get(channel_type: ChannelType) -> Channel:
    return REGISTRY[channel_type]
