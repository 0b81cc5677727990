"""Command line: ``python -m avatar_emulators {ollama|openai|gpt-sovits|hunyuan3d} --port N``.

Runs one emulator with uvicorn (for tests and `make demo` only). For gpt-sovits,
``--first-token-latency`` is the delay before the first audio byte; for hunyuan3d, how long
one generation takes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from avatar_emulators import gpt_sovits, hunyuan3d, ollama, openai_compat

KINDS = ("ollama", "openai", "gpt-sovits", "hunyuan3d")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_emulators", description="Run an upstream emulator."
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-latency", type=float, default=0.0, metavar="S")
    parser.add_argument("--tokens-per-second", type=float, default=0.0, metavar="N")
    parser.add_argument(
        "--reply-words", type=int, default=0, metavar="N", help="llm: every reply N words long"
    )
    parser.add_argument("--api-key", default=None, metavar="K", help="openai only")
    parser.add_argument("--path-prefix", default="", metavar="P", help="openai only")
    parser.add_argument(
        "--model", action="append", default=None, help="served model (repeatable; llm only)"
    )
    parser.add_argument("--fail-status", type=int, default=None, help="answer with this status")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, metavar="S", help="gpt-sovits stream pacing"
    )
    parser.add_argument(
        "--real-time-factor",
        type=float,
        default=0.0,
        metavar="F",
        help="gpt-sovits: seconds of synthesis per second of audio",
    )
    parser.add_argument(
        "--enable-tex",
        action="store_true",
        help="hunyuan3d: textures as the real server started with --enable_tex (else shape only)",
    )
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace) -> FastAPI:
    """Turn the command-line options into the chosen emulator's config and app."""
    if args.kind == "hunyuan3d":
        config = hunyuan3d.Hunyuan3DConfig(
            latency_s=args.first_token_latency,
            fail=args.fail_status is not None,
            enable_tex=args.enable_tex,
        )
        return hunyuan3d.create_app(config)
    if args.kind == "gpt-sovits":
        return gpt_sovits.create_app(
            gpt_sovits.GptSovitsConfig(
                latency_s=args.first_token_latency,
                chunk_delay_s=args.chunk_delay,
                real_time_factor=args.real_time_factor,
                fail_status=args.fail_status,
            )
        )
    common: dict[str, Any] = {
        "first_token_latency_s": args.first_token_latency,
        "tokens_per_second": args.tokens_per_second,
        "reply_words": args.reply_words,
        "fail_status": args.fail_status,
    }
    if args.model:
        common["models"] = args.model
    if args.kind == "ollama":
        return ollama.create_app(ollama.OllamaConfig(**common))
    return openai_compat.create_app(
        openai_compat.OpenAICompatConfig(
            **common, api_key=args.api_key, path_prefix=args.path_prefix
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    app = build_app(args)
    # One line for scripts waiting on the emulator; uvicorn's own logs go to stderr.
    print(f"avatar-emulators: {args.kind} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
