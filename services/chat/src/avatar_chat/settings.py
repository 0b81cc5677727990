from typing import Literal

from pydantic import Field

from avatar_shared.settings import PeerUrls, SharedSettings


class ChatSettings(SharedSettings, PeerUrls):
    llm_service: Literal["ollama", "vllm"] = Field(
        "ollama", description="Which LLM server to speak to: ollama or vllm (OpenAI-compatible)."
    )
    ollama_base_url: str = Field("http://localhost:11434", description="Ollama server.")
    vllm_base_url: str = Field(
        "http://localhost:8002",
        description="OpenAI-compatible server; may carry a path prefix such as /vllm.",
    )
    vllm_api_key: str = Field("", description="Bearer token for the OpenAI-compatible server.")
    default_model: str = Field(
        "gemma-3-27b-it", description="Model used when a request names none."
    )
