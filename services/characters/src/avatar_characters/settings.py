from avatar_shared.settings import PeerUrls, SharedSettings


class CharactersSettings(SharedSettings, PeerUrls):
    """The presets file and character limits arrive with the characters issue."""
