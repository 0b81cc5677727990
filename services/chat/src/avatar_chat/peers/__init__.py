"""The other Avatar Forge services chat calls over HTTP, one client each (on the shared
`PeerClient`): where each one's paths, URL layout and limits are known."""
