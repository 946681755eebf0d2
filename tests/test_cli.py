"""`polyroute chat` streams an answer to the terminal; errors are one readable line with an exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.upstreams import HFRouterUpstream


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))} | env
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def _env(hf: HFRouterUpstream) -> dict[str, str]:
    return {"HF_ROUTER_URL": hf.url, "HF_TOKEN": "hf_cli_token_123456"}


def test_chat_streams_the_answer(hf: HFRouterUpstream) -> None:
    out = _run(["chat", "--model", "huggingface/together/Qwen/Qwen3-8B", "hello", "world"], _env(hf))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Echo: hello world\n"
    assert "together" in out.stderr and "tokens" in out.stderr
    assert hf.requests[0].json["stream"] is True


def test_chat_reads_stdin_and_no_stream(hf: HFRouterUpstream) -> None:
    out = _run(["chat", "-m", "huggingface/Qwen/Qwen3-8B", "--no-stream", "-q"], _env(hf), stdin="from stdin")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Echo: from stdin\n" and out.stderr == ""


def test_chat_errors(hf: HFRouterUpstream) -> None:
    bad_model = _run(["chat", "-m", "nope/x", "hi"], _env(hf))
    assert bad_model.returncode == 2 and "unknown provider prefix 'nope'" in bad_model.stderr
    hf.valid_tokens = {"other"}
    denied = _run(["chat", "-m", "huggingface/Qwen/Qwen3-8B", "hi"], _env(hf))
    assert denied.returncode == 1 and "AuthenticationError" in denied.stderr
    assert "hf_cli_token_123456" not in denied.stderr
    no_key = _run(["chat", "-m", "huggingface/Qwen/Qwen3-8B", "hi"], {"HF_ROUTER_URL": hf.url})
    assert no_key.returncode == 2 and "HF_TOKEN" in no_key.stderr
