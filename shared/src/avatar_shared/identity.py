"""The one identity dependency: who is calling.

Every service resolves the caller through `current_user_id` (route signatures use the
`UserId` alias). Until the auth service exists every caller is "anonymous"; JWT verification
(cookie `access_token` or `Authorization: Bearer`) plugs in here and nowhere else. Headers a
client could set freely (X-User-Id and the like) are never trusted.
"""

from typing import Annotated

from fastapi import Depends, Request

from avatar_shared.logs import user_id_var

ANONYMOUS = "anonymous"


async def current_user_id(request: Request) -> str:
    user_id = ANONYMOUS
    request.state.user_id = user_id
    user_id_var.set(user_id)
    return user_id


UserId = Annotated[str, Depends(current_user_id)]
