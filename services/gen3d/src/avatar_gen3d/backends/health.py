"""How the gen3d service tells whether its 3D and style servers are up (for /upstreamz)."""

import httpx

from avatar_shared.health import Status, UpstreamCheck, probe_url


def reachable_check(base_url: str) -> UpstreamCheck:
    # The 3D server's API is settled by the gen3d issue; until then "answers at all" is the test.
    async def check(client: httpx.AsyncClient) -> Status:
        return await probe_url(client, base_url)

    return check
