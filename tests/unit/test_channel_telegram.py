from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
import pytest
from telegram import Bot, CallbackQuery, Chat, Location, Message, PhotoSize, Update, User
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter

from engine.channels.base import MalformedBody, Unauthorized
from engine.channels.telegram import TelegramChannel
from engine.fake_platforms import Fault
from engine.models import Button, ChannelType, MessageType, SendError
from tests.unit import channel_helpers as h

fake = pytest.fixture(h.fake_server)
http = pytest.fixture(h.client_session)

CHANNEL = h.make_channel(ChannelType.TELEGRAM)
TG = TelegramChannel()
TOKEN = CHANNEL.secrets["bot_token"]
SECRET = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret_1"}
ANN = User(id=111, first_name="Ann", is_bot=False, username="ann")
DATE = datetime(2024, 1, 1, tzinfo=UTC)
PRIVATE = Chat(id=111, type="private")


def request_for(update: Update) -> h.WebhookRequest:
    return h.make_request(update.to_json().encode(), SECRET)


def test_verify_secret_token() -> None:
    TG.verify(h.make_request(b"{}", SECRET), CHANNEL)
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
        with pytest.raises(Unauthorized) as err:
            TG.verify(h.make_request(b"{}", headers), CHANNEL)
        assert err.value.status == 401


def test_no_handshake() -> None:
    assert TG.handshake(h.make_request(method="GET"), CHANNEL) is None


def test_parse_text_built_by_python_telegram_bot() -> None:
    message = Message(message_id=5, date=DATE, chat=PRIVATE, from_user=ANN, text="hello")
    (event,) = TG.parse(request_for(Update(update_id=1000, message=message)), CHANNEL)
    assert (event.event_id, event.type, event.text) == ("1000", MessageType.TEXT, "hello")
    assert (event.conversation_key, event.contact_key, event.contact_name) == ("111", "111", "Ann")
    assert event.contact_attributes == {"username": "ann"}
    assert event.timestamp == DATE.timestamp()
    assert event.reply_to == {"chat_id": 111, "message_id": 5}


def test_parse_callback_query() -> None:
    origin = Message(message_id=7, date=DATE, chat=PRIVATE, text="Pick one")
    query = CallbackQuery(id="4382bfdwdsb323b2d9", from_user=ANN, chat_instance="-8734", data="opt_yes", message=origin)
    (event,) = TG.parse(request_for(Update(update_id=1002, callback_query=query)), CHANNEL)
    assert (event.type, event.payload, event.event_id) == (MessageType.BUTTON, "opt_yes", "1002")
    assert event.reply_to == {"chat_id": 111, "callback_query_id": "4382bfdwdsb323b2d9"}


def test_parse_photo_takes_largest_size() -> None:
    photo = (
        PhotoSize(file_id="small", file_unique_id="s", width=90, height=90),
        PhotoSize(file_id="large", file_unique_id="l", width=800, height=800),
    )
    message = Message(message_id=6, date=DATE, chat=PRIVATE, from_user=ANN, photo=photo, caption="look")
    (event,) = TG.parse(request_for(Update(update_id=1001, message=message)), CHANNEL)
    assert (event.type, event.text, event.media["id"]) == (MessageType.MEDIA, "look", "large")  # type: ignore[index]


def test_parse_location_and_group_chat() -> None:
    group = Chat(id=-100123, type="supergroup", title="Team")
    message = Message(message_id=8, date=DATE, chat=group, from_user=ANN, location=Location(13.4, 52.5))
    (event,) = TG.parse(request_for(Update(update_id=1003, message=message)), CHANNEL)
    assert (event.type, event.conversation_key, event.contact_key) == (MessageType.LOCATION, "-100123", "111")


def test_other_update_kinds_are_ignored() -> None:
    raw = json.dumps({"update_id": 1004, "my_chat_member": {"chat": {"id": 1}}}).encode()
    assert TG.parse(h.make_request(raw, SECRET), CHANNEL) == []


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"update_id": "1"}', b'{"update_id": 1, "message": {"text": "x"}}'])
def test_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedBody):
        TG.parse(h.make_request(raw, SECRET), CHANNEL)


# --- sending against the fake Bot API -------------------------------------------------------------------


async def test_send_message_with_buttons(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    message = h.outbound(CHANNEL, "Pick one", buttons=(Button("opt_yes", "Yes"),), reply_to={"chat_id": 111})
    first = await TG.send(http, f"{base}/telegram", CHANNEL, message)
    second = await TG.send(http, f"{base}/telegram", CHANNEL, message)
    assert first.platform_message_id
    assert first.platform_message_id != second.platform_message_id
    sent = recorder.sent("telegram", method="sendMessage", chat="111")
    assert sent[0].path == f"/telegram/bot{TOKEN}/sendMessage"
    assert sent[0].body == {
        "chat_id": 111,
        "text": "Pick one",
        "reply_markup": {"inline_keyboard": [[{"text": "Yes", "callback_data": "opt_yes"}]]},
    }


async def test_answer_callback(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    message = h.outbound(CHANNEL, "", kind="answer_callback", reply_to={"chat_id": 111, "callback_query_id": "cq1"})
    assert (await TG.send(http, f"{base}/telegram", CHANNEL, message)).platform_message_id is None
    (sent,) = recorder.sent("telegram", method="answerCallbackQuery", ok=True)
    assert sent.body == {"callback_query_id": "cq1"}


@pytest.mark.parametrize(
    ("fault", "code", "retryable", "retry_after"),
    [
        (Fault("telegram", status=429, retry_after=7), "429", True, 7.0),
        (Fault("telegram", status=500), "500", True, None),
        (Fault("telegram", status=502), "502", True, None),
        (Fault("telegram", status=403), "403", False, None),
        (Fault("telegram", status=400, error_code="Bad Request: chat not found"), "400", False, None),
    ],
)
async def test_send_errors(
    fake: h.FakeServer,
    http: aiohttp.ClientSession,
    fault: Fault,
    code: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    base, recorder = fake
    recorder.add_fault(fault)
    with pytest.raises(SendError) as err:
        await TG.send(http, f"{base}/telegram", CHANNEL, h.outbound(CHANNEL, reply_to={"chat_id": 111}))
    assert (err.value.code, err.value.retryable, err.value.retry_after) == (code, retryable, retry_after)


async def test_bad_token_is_permanent(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, _ = fake
    channel = h.make_channel(ChannelType.TELEGRAM)
    channel.secrets["bot_token"] = "not-a-token"
    with pytest.raises(SendError) as err:
        await TG.send(http, f"{base}/telegram", channel, h.outbound(channel, reply_to={"chat_id": 111}))
    assert (err.value.code, err.value.retryable) == ("401", False)


async def test_migrated_group_is_resent_to_the_supergroup(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    recorder.add_fault(Fault("telegram", chat="-42", migrate_to_chat_id=-100042))
    result = await TG.send(http, f"{base}/telegram", CHANNEL, h.outbound(CHANNEL, reply_to={"chat_id": -42}))
    assert result.platform_message_id
    assert [(r.chat, r.status) for r in recorder.sent("telegram")] == [("-42", 400), ("-100042", 200)]


async def test_long_text_is_cut_to_the_limit(fake: h.FakeServer, http: aiohttp.ClientSession) -> None:
    base, recorder = fake
    await TG.send(http, f"{base}/telegram", CHANNEL, h.outbound(CHANNEL, "x" * 5000, reply_to={"chat_id": 111}))
    assert len(recorder.sent("telegram", ok=True)[0].body["text"]) == 4096


# PTB warns that RetryAfter.retry_after will become a timedelta in its next major version.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_python_telegram_bot_against_the_fake(fake: h.FakeServer) -> None:
    """A real independent client (form-encoded posts, getMe first) understands the fake's answers."""
    base, recorder = fake
    async with Bot(TOKEN, base_url=f"{base}/telegram/bot") as bot:
        assert bot.username == "fake_123456_bot"
        first = await bot.send_message(chat_id=111, text="hi")
        second = await bot.send_message(chat_id=111, text="again")
        assert first.message_id != second.message_id
        assert first.chat.id == 111
        assert await bot.answer_callback_query("cq1")
        assert await bot.set_webhook("https://example.com/webhooks/telegram/1", secret_token="s")
        recorder.add_fault(Fault("telegram", chat="111", status=429, retry_after=3))
        with pytest.raises(RetryAfter) as flood:
            await bot.send_message(chat_id=111, text="too fast")
        assert flood.value.retry_after == 3
        recorder.add_fault(Fault("telegram", chat="111", status=403))
        with pytest.raises(Forbidden):
            await bot.send_message(chat_id=111, text="blocked")
        recorder.add_fault(Fault("telegram", chat="-1", migrate_to_chat_id=-1001))
        with pytest.raises(ChatMigrated) as migrated:
            await bot.send_message(chat_id=-1, text="moved")
        assert migrated.value.new_chat_id == -1001
        with pytest.raises(BadRequest):
            await bot.send_message(chat_id=111, text="")
    assert [r.method for r in recorder.sent("telegram")][:2] == ["getMe", "sendMessage"]
    assert recorder.sent("telegram", method="sendMessage")[0].body == {"chat_id": "111", "text": "hi"}
    with pytest.raises(InvalidToken):  # initialize() calls getMe, which the fake refuses
        async with Bot("bad", base_url=f"{base}/telegram/bot"):
            pass
