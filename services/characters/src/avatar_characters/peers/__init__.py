"""The other Avatar Forge services the characters service calls over HTTP, one client each
(on the shared `PeerClient`)."""
