from pydantic import Field

from avatar_shared.settings import SharedSettings


class TtsSettings(SharedSettings):
    tts_base_url: str = Field("http://localhost:9880", description="GPT-SoVITS api_v2 server.")
    tts_api_path: str = Field("/tts", description="Path of GPT-SoVITS's synthesis endpoint.")
    assets_dir: str = Field("var/user_assets", description="Where per-user audio files are stored.")
