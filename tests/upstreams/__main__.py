"""Run one fake upstream in the foreground: ``python -m tests.upstreams --kind openai [--port 0]``.

Prints ``READY http://127.0.0.1:<port>`` once listening and serves until SIGTERM / SIGINT. Any
non-empty bearer token is accepted and requests are not recorded (benchmark mode).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .base import FakeUpstream
from .deepinfra import DeepInfraUpstream
from .hf_router import HFRouterUpstream
from .openai_compat import OpenAICompatUpstream
from .tgi import TGIUpstream

KINDS: dict[str, Callable[[], FakeUpstream]] = {
    "openai": OpenAICompatUpstream,
    "hf_router": HFRouterUpstream,
    "deepinfra": DeepInfraUpstream,
    "tgi": TGIUpstream,
    "tgi2": lambda: TGIUpstream("2.x"),
}


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until a signal arrives."""
    parser = argparse.ArgumentParser(prog="python -m tests.upstreams", description=__doc__)
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = KINDS[args.kind]()
    server.record = False
    server.serve_forever(args.port, announce=lambda url: print(f"READY {url}", flush=True))


if __name__ == "__main__":
    main()
