"""The README's Python snippets run as pasted: each ```python block in a fresh interpreter, with the
environment variables the README documents (HF_ROUTER_URL, HF_ENDPOINT, HF_TOKEN, DEEPINFRA_API_BASE, ...)
pointing at the local upstream servers. A block the test cannot run is marked in the README by an
``<!-- not run: why -->`` comment on the line before it; one marked ``<!-- with the proxy: ... -->`` runs while the
set-up section's main command (``polyroute serve --config configs/proxy.yaml``) serves on 127.0.0.1:4000."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import REPO, polyroute_argv, wait_until_healthy
from tests.upstreams import DeepInfraUpstream, HFRouterUpstream, HubUpstream, OpenAICompatUpstream, TGIUpstream

README = REPO / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>.+?)\s*-->")
WITH_PROXY = re.compile(r"<!--\s*with the proxy:.*-->")
PROXY_PORT = 4000  # the address the README's clients use
MASTER_KEY = "change-me"  # the set-up command's
MAX_NOT_RUN = 1  # exclusions stay few: raise this only with a reason in the README


@dataclass
class Snippet:
    line: int  # of the opening fence
    code: str
    not_run: str | None  # why, when marked
    with_proxy: bool  # runs while the README's proxy serves


def snippets() -> list[Snippet]:
    lines = README.read_text(encoding="utf-8").splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            body: list[str] = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = lines[start - 1] if start else ""
            marker = NOT_RUN.search(before)
            found.append(
                Snippet(
                    start + 1,
                    "\n".join(body) + "\n",
                    marker["why"] if marker else None,
                    bool(WITH_PROXY.search(before)),
                )
            )
        i += 1
    return found


SNIPPETS = snippets()


def test_the_readme_has_snippets_and_few_honest_exclusions() -> None:
    assert len(SNIPPETS) >= 7
    skipped = [s for s in SNIPPETS if s.not_run is not None]
    assert len(skipped) <= MAX_NOT_RUN, [(s.line, s.not_run) for s in skipped]
    assert all(len(s.not_run or "x" * 20) >= 20 for s in skipped), "say why a block is not run"


def test_the_set_up_section_keeps_exactly_its_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, re.DOTALL)
    assert commands == [
        'python3 -m pip install -e ".[fast]" && POLYROUTE_MASTER_KEY=change-me python3 -m router.cli serve '
        "--config configs/proxy.yaml\n",
        'python3 -m pip install -e ".[test]" && python3 -m pytest -q\n',
    ]
    assert "virtualenv" in setup and "python3 -m venv" in setup


def test_the_deepinfra_base_the_readme_asks_for_is_the_default_shape() -> None:
    from providers.registry import default_registry

    default = default_registry().get("deepinfra").base_url
    assert default.endswith("/v1/openai")
    assert f"must end in `/v1/openai` (default `{default}`)" in README.read_text(encoding="utf-8")


def test_the_unknown_prefix_error_and_the_readme_suggest_the_same_call() -> None:
    from providers.errors import InvalidRequestArgumentError
    from providers.registry import Registry

    with pytest.raises(InvalidRequestArgumentError) as caught:
        Registry().resolve("acme/acme-large")
    suggested = re.search(r"(default_registry\(\)\.register)\(", caught.value.message)
    assert suggested is not None, caught.value.message
    assert any(suggested[1] in s.code for s in SNIPPETS if s.not_run is None)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"README.md:{s.line}" for s in SNIPPETS])
def test_readme_snippet_runs_as_pasted(
    snippet: Snippet,
    hf: HFRouterUpstream,
    hub: HubUpstream,
    deepinfra: DeepInfraUpstream,
    tgi: TGIUpstream,
    oai: OpenAICompatUpstream,
    tmp_path: Path,
) -> None:
    if snippet.not_run is not None:
        pytest.skip(f"README.md:{snippet.line} not run: {snippet.not_run}")
    dropped = ("HF_", "HUGGINGFACE", "DEEPINFRA", "OPENAI", "TOGETHER", "GROQ", "ACME", "TGI_", "POLYROUTE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)} | {
        # what the README says to set, pointed at the local upstreams
        "HF_ROUTER_URL": hf.url,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "hf_readme_token_123456",
        "DEEPINFRA_API_BASE": deepinfra.url + "/v1/openai",
        "DEEPINFRA_API_KEY": "di-readme-key-abcdef",
        "ACME_API_BASE": oai.url + "/v1",
        "ACME_API_KEY": "sk-acme-readme-123456",
        "TGI_URL": tgi.url,
        "POLYROUTE_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO),
    }
    if snippet.with_proxy:
        env["POLYROUTE_MASTER_KEY"] = MASTER_KEY  # the proxy's, and its clients' API key
    with the_readmes_proxy(env, tmp_path) if snippet.with_proxy else contextlib.nullcontext():
        out = subprocess.run(
            [sys.executable, "-c", snippet.code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, f"README.md:{snippet.line}\n{snippet.code}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr


@contextlib.contextmanager
def the_readmes_proxy(env: dict[str, str], cwd: Path) -> Iterator[None]:
    """The set-up section's main command (without its install) on 127.0.0.1:4000, its store in ``cwd``."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", PROXY_PORT))
        except OSError:
            pytest.skip(f"port {PROXY_PORT}, where the README's clients expect the proxy, is in use")
    argv = polyroute_argv("serve", "--config", str(REPO / "configs" / "proxy.yaml"))
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{PROXY_PORT}", server)
        yield
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0 and "Traceback" not in output, output
