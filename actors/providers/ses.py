"""A provider that sends through Amazon SES, API v2 (``SendEmail`` with raw MIME content).

The message is built by :mod:`actors.domain.mime`, like every provider's, and handed to SES
whole (``Content.Raw.Data``), so what SES sends is byte for byte what an SMTP relay
would have got. It is rendered 7-bit (8-bit text parts re-encoded), which SES
accepts everywhere. The envelope recipient is given explicitly
(``Destination.ToAddresses``) so that SES sends to that address only.

aiobotocore is an asyncio library: the client is created in :meth:`SesProvider.open`
and kept open until :meth:`SesProvider.close` (its aiohttp pool keeps connections
alive between sends), and each send crosses ``runtime``'s asyncio edge exactly once.

Credentials and region come from the usual AWS sources (environment variables,
``~/.aws/credentials`` and ``~/.aws/config``, a named profile, container or
instance roles), never from code, config values or logs. botocore's own retries
are off (one HTTP request per send): retries are the email-server's job, and a
blind retry after a timeout could send the email twice.

Classification, for :class:`~actors.domain.edges.SendResult` (see :func:`classify_error`):
``ThrottlingException``, ``TooManyRequestsException``, ``Throttling``, HTTP 429 or
a "Maximum sending rate exceeded" / "quota exceeded" message: THROTTLED.
``MessageRejected``, ``MailFromDomainNotVerifiedException``, ``BadRequestException``
and other 4xx answers about the request: PERMANENT. Network errors, timeouts, 5xx
answers and the account-level refusals that another provider would not share
(``SendingPausedException``, ``AccountSuspendedException``, bad or expired
credentials): TRANSIENT, so that a chain fails over and its breaker counts them.
The SES ``MessageId`` is the result's ``message_id``.

Internationalised addresses: SES does not take SMTPUTF8, so an address with an IDN domain is
sent with its IDNA A-labels (``xn--``) in the envelope and the headers alike (as the SMTP
provider does for a server without SMTPUTF8); one with a non-ASCII local part has no ASCII
form, and its send fails PERMANENT naming the address, without a request.

DKIM: with a signer, the message is signed with its From domain's key as for SMTP, except
Message-ID and Date, which SES replaces with its own values (the SES guide's "manual DKIM
signing": do not sign Message-ID, Date, Return-Path, Bounces-To); SES adds its own
``d=amazonses.com`` signature beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import trio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from actors.domain.dkim import DkimSigner
from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.domain.mime import ascii_email, build_message, final_bytes
from runtime import AsyncioEdge, current_edge

__all__ = [
    "SesCredentialsMissing",
    "SesProvider",
    "SesStatistics",
    "classify_error",
    "resolve_region",
]

MAX_REPLY_CHARS = 500

# Headers SES rewrites in a raw message: a signature over them would not verify.
SES_REWRITTEN_HEADERS = ("message-id", "date")

THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestThrottled",
        "SlowDown",
        "LimitExceededException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MessageRejectedException",
        "MailFromDomainNotVerifiedException",
        "MailFromDomainNotVerified",
        "BadRequestException",
        "InvalidParameterValue",
        "ValidationException",
        "SerializationException",
    }
)
# Refusals that concern this account or these credentials, not the email: another
# provider may well send it, and the condition may clear (keys rotated, sending
# resumed), so they fail over and count towards the breaker.
ACCOUNT_CODES = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",  # e.g. the configuration set does not exist (in this region)
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
_THROTTLE_TEXT = re.compile(
    r"maximum sending rate exceeded|rate exceeded|quota exceeded|throttl|too many requests",
    re.IGNORECASE,
)


class SesCredentialsMissing(RuntimeError):
    """No AWS credentials were found in any of the usual places."""


def classify_error(code: str, message: str, http_status: int | None) -> Failure:
    """The failure class of an SES API error (see the module docstring)."""
    if code in THROTTLE_CODES or http_status == 429 or _THROTTLE_TEXT.search(message):
        return Failure.THROTTLED
    if code in PERMANENT_CODES:
        return Failure.PERMANENT
    if code in ACCOUNT_CODES:
        return Failure.TRANSIENT
    if http_status is None or http_status >= 500:
        return Failure.TRANSIENT
    if http_status in (408,):
        return Failure.TRANSIENT
    return Failure.PERMANENT  # some other 4xx: SES understood the request and refused it


def resolve_region(
    region: str = "", profile: str = "", env: Mapping[str, str] | None = None
) -> str | None:
    """The region to use: ``region`` if set, else ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
    then the profile's ``region`` in ``~/.aws/config`` (or ``AWS_CONFIG_FILE``).

    None when none of them names one. Raises ``botocore.exceptions.ProfileNotFound``
    for a named profile that does not exist.
    """
    if region:
        return region
    environ = os.environ if env is None else env
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if environ.get(var):
            return environ[var]
    import botocore.session

    session = botocore.session.Session(profile=profile or None)
    found = session.get_config_variable("region")
    return str(found) if found else None


@dataclass(frozen=True, slots=True)
class SesStatistics:
    """Counters of one :class:`SesProvider` (a snapshot)."""

    region: str
    sends_in_flight: int
    sent: int
    failed: int
    throttled: int


class SesProvider:
    """Sends email through the SES v2 API of ``region`` (or of ``endpoint_url``).

    Use inside ``runtime.open_asyncio_edge()`` (``open()`` takes the current edge and
    creates the client there). ``profile`` names an AWS profile ("" = the default
    chain: ``AWS_PROFILE``, environment, files, roles). ``configuration_set`` is
    passed as ``ConfigurationSetName`` when set. ``timeout`` bounds connecting and
    reading one answer; ``pool_size`` is the most connections kept open to SES.
    The envelope sender (``FromEmailAddress``) is each email's own sender address.
    """

    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        profile: str | None = None,
        timeout: float = 30.0,
        pool_size: int = 10,
        name: str = "ses",
        signer: DkimSigner | None = None,
    ) -> None:
        if not region:
            raise ValueError("SesProvider needs a region (see resolve_region)")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.name = name
        self.region = region
        self.endpoint_url = endpoint_url or None
        self.configuration_set = configuration_set or None
        self.profile = profile or None
        self.timeout = timeout
        self.pool_size = pool_size
        self.signer = signer.without(SES_REWRITTEN_HEADERS) if signer is not None else None
        self._edge: AsyncioEdge | None = None
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._in_flight = 0
        self._sent = 0
        self._failed = 0
        self._throttled = 0

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"SesProvider({self.region!r}{where}, name={self.name!r})"

    def statistics(self) -> SesStatistics:
        return SesStatistics(
            self.region, self._in_flight, self._sent, self._failed, self._throttled
        )

    async def open(self) -> None:
        """Create the SES client on the current asyncio edge (credentials are looked up here).

        Raises :class:`SesCredentialsMissing` when no AWS credentials are found, and
        ``botocore.exceptions.ProfileNotFound`` for a profile that does not exist.
        """
        edge = current_edge()
        await edge.run(self._open_client)
        self._edge = edge

    async def _open_client(self) -> None:
        session = AioSession(profile=self.profile)
        config = AioConfig(
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            max_pool_connections=self.pool_size,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        stack = contextlib.AsyncExitStack()
        try:
            try:
                credentials = await session.get_credentials()
            except CredentialRetrievalError as exc:
                raise SesCredentialsMissing(f"AWS credentials could not be fetched: {exc}") from exc
            if credentials is None:
                raise SesCredentialsMissing(
                    "no AWS credentials found (looked in AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, ~/.aws/config "
                    "and container / instance roles)"
                )
            self._client = await stack.enter_async_context(
                session.create_client(
                    "sesv2",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        """Close the client and its connection pool (bounded, even when cancelled)."""
        edge, self._edge = self._edge, None
        stack, self._stack = self._stack, None
        self._client = None
        if edge is None or stack is None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5.0
            try:
                await edge.run(stack.aclose)
            except RuntimeError:  # the edge closed first; its loop took the sockets
                pass

    async def send(self, email: OutgoingEmail) -> SendResult:
        edge = self._edge
        if edge is None:
            raise RuntimeError("SesProvider.send() before open() or after close()")
        try:
            # SES has no SMTPUTF8: an internationalised domain goes as its A-labels, in the
            # envelope (Destination, FromEmailAddress) and the headers alike.
            email = ascii_email(email)
        except ValueError as exc:  # a non-ASCII local part has no ASCII form
            self._failed += 1
            return self._failure(Failure.PERMANENT, f"SES does not support SMTPUTF8, and {exc}")
        try:
            data = final_bytes(
                build_message(email),
                eight_bit=False,
                sign=self.signer.sign if self.signer else None,
            )
        except ValueError as exc:
            self._failed += 1
            return self._failure(Failure.PERMANENT, str(exc))
        request: dict[str, Any] = {
            # The bare address: the From header in the message keeps the display name.
            "FromEmailAddress": _address(email.sender),
            # Every envelope recipient; SES sends the raw message as it is (Bcc: no header).
            "Destination": {
                "ToAddresses": [email.recipient],
                **({"CcAddresses": email.cc} if email.cc else {}),
                **({"BccAddresses": email.bcc} if email.bcc else {}),
            },
            "Content": {"Raw": {"Data": data}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        self._in_flight += 1
        try:
            result = await edge.run(self._deliver, self._client, request)
        finally:
            self._in_flight -= 1
        if result.ok:
            self._sent += 1
        else:
            self._failed += 1
            if result.failure is Failure.THROTTLED:
                self._throttled += 1
        return result

    async def _deliver(self, client: Any, request: dict[str, Any]) -> SendResult:
        """asyncio side of one send: one SendEmail request, its answer classified."""
        try:
            answer = await client.send_email(**request)
        except ClientError as exc:
            return self._client_error(exc)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            return self._failure(Failure.TRANSIENT, f"credentials: {exc}")
        except (ConnectionError, HTTPClientError) as exc:  # refused, reset, timeouts
            return self._failure(Failure.TRANSIENT, _describe(exc))
        except (BotoCoreError, OSError, TimeoutError) as exc:
            return self._failure(Failure.TRANSIENT, _describe(exc))
        message_id = answer.get("MessageId")
        return SendResult(provider=self.name, ok=True, message_id=message_id, reply=None)

    def _client_error(self, exc: ClientError) -> SendResult:
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        status = meta.get("HTTPStatusCode")
        failure = classify_error(code, message, status)
        headers = meta.get("HTTPHeaders") or {}
        text = ": ".join(part for part in (code, message) if part) or "error"
        if status is not None:
            text = f"{text} (HTTP {status})"
        return self._failure(failure, text, _retry_after(headers.get("retry-after")))

    def _failure(self, failure: Failure, text: str, retry_after: float | None = None) -> SendResult:
        return SendResult(
            provider=self.name,
            ok=False,
            reply=text[:MAX_REPLY_CHARS],
            failure=failure,
            retry_after=retry_after,
        )


def _retry_after(value: object) -> float | None:
    """Seconds from a ``Retry-After: 12`` header (HTTP dates are not worth parsing here)."""
    if not isinstance(value, str):
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _address(sender: str) -> str:
    """The address part of a From value ("Name <a@b>" -> "a@b")."""
    return parseaddr(sender)[1] or sender


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
