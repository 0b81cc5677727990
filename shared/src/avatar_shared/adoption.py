"""Signing in keeps what the browser made anonymously: the one rule every service that keeps
users' data follows (docs/security.md, "Signing in keeps what you made"), and the peer call
that asks for it.

At a successful sign-in, auth asks each service of its ADOPT_PEERS, at once:
`POST /internal/accounts/adopt` with `{"from": <the browser's anonymous id>, "to": <user id>}`.
The service moves what `from` keeps to `to`, each record in one atomic step: its owner
changed, its indexes moved, its anonymous expiry (ANON_DATA_TTL_S) removed, and counted in
the account's quotas and budgets. What does not fit them stays the anonymous id's, as it was
(expiring). The answer (`Adopted`) says per kind of data how many records moved and how many
stayed. A second call moves nothing more (what moved is no longer `from`'s), so auth may
call again at the next sign-in.

Who may call it: a service of ours, and nobody else, even on the service's own port. The call
carries `X-Avatar-Peer-Signature: <expires> <signature>`: HMAC-SHA256 of `from`, `to` and
`expires` (Unix seconds) under ANON_ID_SECRET, labelled `adopt` (`AnonymousIds.peer_signature`),
the way services already vouch for a caller's address to each other (identity.ADDRESS_HEADER).
That key is enough because its holders can already act as any anonymous id (they can sign
its cookie), and this call does no more than give what an anonymous id keeps to an account.
The expiry (SIGNATURE_LIFETIME_S) stops a recorded call from being replayed later to move
what the id has made since. The path is under registry.PEER_PREFIX: the gateway answers it
404, and no OpenAPI document shows it (its routes are `include_in_schema=False`).

A service joins by serving the path with `VerifiedAdoption` as its body:

    @router.post(ADOPT_PATH, include_in_schema=False)
    async def adopt(adoption: VerifiedAdoption, ...) -> Envelope[Adopted]:
        return ok({"conversations": KindMoved(moved=..., kept=...)})
"""

import hmac
import time
from typing import Annotated

from fastapi import Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from avatar_shared.errors import Forbidden
from avatar_shared.identity import ANON_PREFIX, SHARED_ANON_PREFIX, AnonymousIds
from avatar_shared.registry import PEER_PREFIX
from avatar_shared.state import BaseState, lifespan_state

ADOPT_PATH = PEER_PREFIX + "accounts/adopt"
SIGNATURE_HEADER = "X-Avatar-Peer-Signature"
SIGNATURE_LIFETIME_S = 60  # auth signs each call as it sends it: a minute covers clock skew
PURPOSE = "adopt"


class Adoption(BaseModel):
    """The body: whose data moves (`from`, an anonymous id) and to whom (`to`, an account)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    from_id: str = Field(alias="from", pattern=r"^anon-[A-Za-z0-9_-]{1,64}$")
    to: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")

    @field_validator("from_id")
    @classmethod
    def _not_shared(cls, value: str) -> str:
        # An address's shared id stores nothing (identity.py), and belongs to no one browser.
        if value.startswith(SHARED_ANON_PREFIX):
            raise ValueError("an address's shared anonymous id has nothing to move")
        return value

    @field_validator("to")
    @classmethod
    def _an_account(cls, value: str) -> str:
        if value.startswith(ANON_PREFIX):
            raise ValueError("data moves to an account, not to another anonymous id")
        return value

    def body(self) -> dict[str, str]:
        return {"from": self.from_id, "to": self.to}


class KindMoved(BaseModel):
    moved: int = Field(ge=0, description="Records that are now the account's")
    kept: int = Field(
        ge=0,
        description="Records that stayed the anonymous id's: past the account's quotas or "
        "the kind's budget",
    )


# The answer's `data`, by kind of data: {"characters": {"moved": 2, "kept": 0}, ...}.
Adopted = dict[str, KindMoved]


class NotAPeer(Forbidden):
    code = "not_a_peer"
    message = f"Only Avatar Forge's own services may call this (a valid {SIGNATURE_HEADER})."


def _signed_text(adoption: Adoption, expires: int) -> str:
    # Newlines cannot occur in either id (their patterns), so no two calls sign the same text.
    return f"{adoption.from_id}\n{adoption.to}\n{expires}"


def signature_headers(
    anonymous: AnonymousIds, adoption: Adoption, now: float | None = None
) -> dict[str, str]:
    """The header that makes `adoption` a peer's call, valid for SIGNATURE_LIFETIME_S."""
    expires = int(time.time() if now is None else now) + SIGNATURE_LIFETIME_S
    signature = anonymous.peer_signature(PURPOSE, _signed_text(adoption, expires))
    return {SIGNATURE_HEADER: f"{expires} {signature}"}


def check_signature(
    anonymous: AnonymousIds, adoption: Adoption, header: str | None, now: float
) -> None:
    """Nothing when `header` signs this very adoption and has not expired, else NotAPeer."""
    expires, _, signature = (header or "").partition(" ")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        raise NotAPeer()
    # Bytes: compare_digest refuses str with non-ASCII, which a client may send.
    expected = anonymous.peer_signature(PURPOSE, _signed_text(adoption, int(expires))).encode()
    if not hmac.compare_digest(signature.encode(), expected):
        raise NotAPeer()
    if int(expires) < now:
        raise NotAPeer(f"The {SIGNATURE_HEADER} has expired; sign the call as it is sent.")


async def verified_adoption(
    request: Request,
    adoption: Adoption,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> Adoption:
    """The adoption a peer asked for, once its signature holds (else 403 not_a_peer)."""
    resolver = lifespan_state(request, BaseState)["identity"]
    check_signature(resolver.anonymous, adoption, signature, time.time())
    return adoption


VerifiedAdoption = Annotated[Adoption, Depends(verified_adoption)]
