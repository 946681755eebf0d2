"""The ``polyroute`` command.

``polyroute chat --model M "prompt"`` streams an answer to the terminal; usage, provider and
latency go to stderr so stdout stays the answer alone.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def complain(message: str, code: int) -> int:
    """Say what went wrong on stderr; the exit code the command returns with it."""
    print(message, file=sys.stderr)
    return code


def _chat(args: argparse.Namespace) -> int:
    from .api import completion
    from .errors import InvalidRequestArgumentError, PolyrouteError
    from .streaming import Stream
    from .types import ChatCompletion

    prompt = " ".join(args.prompt) if args.prompt else ""
    if not prompt or prompt == "-":
        if sys.stdin.isatty():
            return complain("polyroute chat: give a prompt, or pipe one on stdin", 2)
        prompt = sys.stdin.read()
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    color = sys.stdout.isatty()
    call: dict[str, Any] = {
        "model": args.model,
        "messages": messages,
        "api_base": args.api_base,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "timeout": args.timeout,
    }
    try:
        if args.no_stream:
            result = completion(stream=False, **call)
            assert isinstance(result, ChatCompletion)
            message = result.choices[0].message
            reasoning = getattr(message, "reasoning_content", None)
            if reasoning and args.show_reasoning:
                print(f"\033[2m{reasoning}\033[0m" if color else reasoning)
            print(message.content or "")
            meta, usage = result.meta, result.usage
        else:
            stream = completion(stream=True, **call)
            assert isinstance(stream, Stream)
            in_reasoning = False
            with stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        reasoning = getattr(choice.delta, "reasoning_content", None)
                        if reasoning and args.show_reasoning:
                            if color and not in_reasoning:
                                sys.stdout.write("\033[2m")
                            in_reasoning = True
                            sys.stdout.write(reasoning)
                        if choice.delta.content:
                            if in_reasoning:
                                sys.stdout.write("\033[0m\n" if color else "\n")
                                in_reasoning = False
                            sys.stdout.write(choice.delta.content)
                        sys.stdout.flush()
            if in_reasoning and color:
                sys.stdout.write("\033[0m")
            sys.stdout.write("\n")
            meta, usage = stream.meta, stream.usage
    except InvalidRequestArgumentError as err:
        return complain(f"polyroute: {err.message}", 2)
    except PolyrouteError as err:
        return complain(f"\npolyroute: {err}", 1)
    except KeyboardInterrupt:
        return complain("\npolyroute: interrupted", 130)
    if not args.quiet and usage is not None:
        estimated = " (estimated)" if meta.usage_estimated else ""
        print(
            f"[{meta.provider} · {meta.model} · {usage.prompt_tokens}+{usage.completion_tokens} tokens{estimated}"
            f" · {meta.latency_ms:.0f} ms]",
            file=sys.stderr,
        )
    return 0


def package_version() -> str:
    """The installed distribution's version; from a source tree that is not installed, its pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("polyroute")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        found = None
    return f"{found.group(1)} (source tree, not installed)" if found else "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyroute", description="Call many LLM providers with one API.")
    parser.add_argument("--version", action="version", version=f"polyroute {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="ask a model and stream the answer to the terminal")
    chat.add_argument("prompt", nargs="*", help="the prompt ('-' or nothing: read stdin)")
    chat.add_argument("--model", "-m", required=True, help="e.g. huggingface/Qwen/Qwen3-8B:cheapest")
    chat.add_argument("--system", "-s", help="a system message")
    chat.add_argument("--api-base", help="base URL (TGI server, OpenAI-compatible server, HF router override)")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--timeout", type=float, default=600.0, help="total seconds (default 600)")
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    chat.add_argument("--show-reasoning", action="store_true", help="print reasoning text (dimmed) too")
    chat.add_argument("--quiet", "-q", action="store_true", help="no usage line on stderr")
    chat.set_defaults(func=_chat)
    from .batch.cli import add_parser as add_batch
    from .models_cli import add_parser as add_models
    from .proxy.server import add_parser as add_serve

    add_models(sub)
    add_serve(sub)
    add_batch(sub)
    return parser


def _stdout_closed() -> int:
    """The reader of stdout went away (``polyroute models | head``): stop quietly, as a CLI killed by SIGPIPE
    does (exit 141), without a traceback. Python ignores SIGPIPE so that sockets raise instead of killing the
    process; stdout's file descriptor now points at /dev/null so the flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return 128 + 13  # 128 + SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse ignores a closed stdout for --help and --version itself
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        return _stdout_closed()
    return code


if __name__ == "__main__":
    sys.exit(main())
