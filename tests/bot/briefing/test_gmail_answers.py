"""The briefing meets Gmail's answers as Google's own clients meet them: a 401 is healed by one refresh, a
batch keeps the parts that worked; against the fake Google and the fake Slack, on the real services."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import MARKUP, Serve, block_text, dms, healthy

RECONNECT_DM = "Your Gmail needs reconnecting"


def inbox(fake: FakeGoogle, email: str, count: int) -> list[str]:
    """`count` unread messages, newest first; their ids in that order."""
    return [
        fake.add_message(
            email, sender=f"Sender {n}", subject=f"Subject {n}", snippet="x", age=timedelta(minutes=5 + n)
        )
        for n in range(count)
    ]


async def test_an_access_token_that_died_before_its_expiry_is_refreshed_and_the_digest_posted(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0A", locale="en-US")
    account = await healthy(app, fake_google, "U0A")  # its stored expiry is 50 minutes ahead
    inbox(fake_google, "u0a@gmail.com", 2)
    assert fake_google.kill_access_tokens("u0a@gmail.com") == 1  # a password change, say; the grant lives
    before = await app[SERVICES].accounts.read_tokens(account.id)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.DIGEST]
    (digest,) = dms(fake_slack, "U0A")  # the digest, and no Reconnect DM
    assert "Subject 0" in block_text(digest["blocks"]) and RECONNECT_DM not in block_text(digest["blocks"])
    after = await app[SERVICES].accounts.get(account.id)
    assert after.status is Status.HEALTHY and after.last_fetch_result == "ok"
    stored = await app[SERVICES].accounts.read_tokens(account.id)
    assert before is not None and stored is not None and stored.access_token != before.access_token
    assert len(fake_google.calls_to("/token")) == 1
    searches = fake_google.calls_to("/gmail/v1/users/me/messages")
    assert [call.status for call in searches] == [401, 200]  # the same search again, with the new token
    assert await app[SERVICES].prompts.open_for("U0A") is None


async def test_a_401_whose_refresh_says_the_grant_is_dead_prompts_the_user(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0B", locale="en-US")
    account = await healthy(app, fake_google, "U0B")
    fake_google.kill_access_tokens("u0b@gmail.com")  # access removed in the Google account: the access
    fake_google.revoke_refresh_token("1//U0B")  # token stops working, and so does the refresh token

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    after = await app[SERVICES].accounts.get(account.id)
    assert after.status is Status.EXPIRED and "invalid_grant" in (after.status_cause or "")
    (prompt,) = dms(fake_slack, "U0B")
    assert RECONNECT_DM in block_text(prompt["blocks"])
    assert len(fake_google.calls_to("/token")) == 1


async def test_a_401_right_after_a_good_refresh_is_reported_and_not_retried_again(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0C", locale="en-US")
    account = await healthy(app, fake_google, "U0C")
    fake_google.fail_gmail(401, times=5)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    (line,) = report.accounts
    assert line.result is Result.FAILED and line.detail is not None
    assert "right after a successful refresh" in line.detail
    assert len(fake_google.calls_to("/token")) == 1  # one refresh, no loop
    assert len(fake_google.calls_to("/gmail/v1/users/me/messages")) == 2
    after = await app[SERVICES].accounts.get(account.id)
    assert after.status is Status.HEALTHY  # the refresh worked: a reconnection would not be what helps
    assert dms(fake_slack, "U0C") == []


async def test_a_401_when_google_cannot_refresh_now_changes_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0D", locale="en-US")
    account = await healthy(app, fake_google, "U0D")
    fake_google.kill_access_tokens("u0d@gmail.com")
    fake_google.fail_token(503, times=3)  # every attempt of the refresh

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.UNAVAILABLE]
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.HEALTHY
    assert dms(fake_slack, "U0D") == []


async def test_a_digest_of_a_partly_failed_batch_shows_what_was_read_and_says_how_many_were_not(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    for slack_id, locale in (("U0E", "en-US"), ("U0K", "ko-KR")):
        fake_slack.add_user(slack_id, locale=locale)
        await healthy(app, fake_google, slack_id)
    english, korean = inbox(fake_google, "u0e@gmail.com", 10), inbox(fake_google, "u0k@gmail.com", 10)
    for ids in (english, korean):
        fake_google.fail_gmail_message(ids[2], 403)
        fake_google.fail_gmail_message(ids[5], 403)
        fake_google.fail_gmail_message(ids[7], 429)  # Gmail's "too many concurrent requests": asked again

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert {line.result for line in report.accounts} == {Result.DIGEST}
    for slack_id, note in (
        ("U0E", "⚠️ 2 of them could not be read from Gmail just now"),
        ("U0K", "⚠️ 그중 2개는 지금 Gmail에서 읽어 오지 못했습니다."),
    ):
        (digest,) = dms(fake_slack, slack_id)
        text = block_text(digest["blocks"])
        shown = re.findall(r"\*Subject (\d+)\*", text)
        assert shown == ["0", "1", "3", "4", "6", "7", "8", "9"] and note in text, slack_id
        assert "(10" in text  # the title still counts all ten
        assert "…" not in text  # nothing is left out but the two: no "…and N more in Gmail"


async def test_a_hundred_long_messages_full_of_markup_fit_in_one_digest_within_slacks_limits(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(BRIEFING_MAX_MESSAGES="100")
    fake_slack.add_user("U0F", locale="en-US")
    await healthy(app, fake_google, "U0F")
    long = (MARKUP + " ") * 18  # about 1,000 characters, and four times as many once escaped
    for n in range(100):
        fake_google.add_message(
            "u0f@gmail.com",
            sender=f"{MARKUP} <sender{n}@example.com>",
            subject=f"{n:03d} {long}"[:1000],
            snippet=long[:1000],
            age=timedelta(minutes=5 + n),
        )

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.DIGEST]
    (call,) = fake_slack.calls_to("chat.postMessage")  # the fake refuses what Slack would refuse
    blocks = call.args["blocks"]
    assert len(blocks) <= 50 and len(call.args["text"]) <= 4000
    texts = [block["text"]["text"] for block in blocks if block["type"] == "section"]
    assert all(len(text) <= 3000 for text in texts)
    shown = re.findall(r"^\*(\d{3}) ", "\n".join(texts), re.MULTILINE)
    assert shown == [f"{n:03d}" for n in range(100)]  # every message, newest first
    assert len(block_text(blocks)) <= 9000  # Slack refuses blocks of about 12,000 characters in all
    everything = block_text(blocks) + call.args["text"]
    assert "<" not in everything and ">" not in everything  # no control sequence of Slack's at all
    assert not re.search(r"&(?!amp;|lt;|gt;)", everything)  # no entity cut in half
