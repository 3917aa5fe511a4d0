"""A JSON Web Key Set fetched over HTTP and kept, for checking the signatures of tokens from an issuer.

PyJWT parses the keys and checks the signatures. Its own PyJWKClient fetches with urllib, which would block
the event loop, so the set is fetched here, on the bot's aiohttp session, and handed to PyJWT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jwt

from bot.errors import GmailReconnectError

log = logging.getLogger(__name__)

# Keys are kept this long; a token naming a key the set does not hold makes one fetch at most this often.
KEEP_SECONDS = 3600
REFETCH_UNKNOWN_AFTER_SECONDS = 60
FETCH_TIMEOUT_SECONDS = 10


class KeysUnavailable(GmailReconnectError):
    """The key set could not be fetched or read, or holds no key for the token."""


class KeysUnreachable(KeysUnavailable):
    """The key set could not be fetched or read just now (the token itself may be fine)."""


class KeyNotFetchedYet(KeysUnreachable):
    """The token names a key the set did not hold when it was last fetched, too recently to fetch it again: the
    issuer may have just rotated its keys, so the token may be fine once the set is fetched again."""


class SigningKeys:
    """The keys published at `url`, fetched when first needed and again when a token names an unknown key."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, token: str) -> jwt.PyJWK:
        """The published key that signed `token` (named by its `kid`); KeysUnavailable if there is none."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as error:
            raise KeysUnavailable(f"the token's header cannot be read ({type(error).__name__})") from None
        if not isinstance(kid, str) or not kid:
            raise KeysUnavailable("the token names no key (no kid in its header)")
        fetched = False
        async with self._lock:
            if self._stale(KEEP_SECONDS) or (
                kid not in self._keys and self._stale(REFETCH_UNKNOWN_AFTER_SECONDS)
            ):
                await self._fetch()
                fetched = True
        key = self._keys.get(kid)
        if key is None and not fetched:
            # Refused for good now, a token signed with a key published since the last fetch would be lost: the
            # sender is asked to come back once the set may be fetched again.
            raise KeyNotFetchedYet(
                f"no key {kid!r} was published at {self.url} when the keys were last read; they are read again "
                f"within {REFETCH_UNKNOWN_AFTER_SECONDS} s"
            )
        if key is None:
            raise KeysUnavailable(f"no key {kid!r} is published at {self.url}")
        return key

    def _stale(self, seconds: float) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= seconds

    async def _fetch(self) -> None:
        document = await fetch_json(self.session, self.url, KeysUnreachable)
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except (jwt.PyJWTError, TypeError, AttributeError) as error:
            raise KeysUnreachable(f"{self.url} holds no usable key set ({error})") from None
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self._fetched_at = time.monotonic()
        log.info("Read %d signing keys from %s", len(self._keys), self.url)


async def fetch_json(session: aiohttp.ClientSession, url: str, failure: type[Exception]) -> Any:
    """The JSON document at `url` (an issuer's keys or configuration); `failure` when it cannot be had."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)) as response:
            if response.status != 200:
                raise failure(f"{url} answered HTTP {response.status}")
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise failure(f"{url} could not be read ({type(error).__name__})") from None
