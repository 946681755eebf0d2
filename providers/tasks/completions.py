"""Legacy text completions (OpenAI's ``/completions``): a prompt in, ``choices[i].text`` out.

OpenAI-compatible servers (vLLM, DeepInfra, OpenAI itself) and TGI serve it; the HF router does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import Target
from ..transport import HttpResponse
from .base import TaskHelper, not_shaped
from .tgi import OnTGI


class CompletionsHelper(TaskHelper):
    """``POST {base}/completions`` with ``{"model", "prompt", ...}``; choices come back in prompt order."""

    task, default_path, what = "completions", "/completions", "text completion"
    inputs_field, listed = "prompt", "choices"

    def payload(self, target: Target, inputs: Any, params: Mapping[str, Any], upstream_model: str | None) -> Any:
        # One prompt goes as a string, as OpenAI's clients send it (some servers take only that form).
        prompt = inputs[0] if len(inputs) == 1 else inputs
        return {"model": self.model(target, upstream_model), "prompt": prompt, **params}

    def parse(self, target: Target, inputs: Any, response: HttpResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
        data = self.load(target, response, secrets)
        choices = []
        for i, choice in enumerate(data["choices"]):
            if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
                raise not_shaped(target, response, f"choices[{i}] of the text completion has no 'text' string")
            choices.append(
                {
                    "index": choice.get("index", i),
                    "text": choice["text"],
                    "logprobs": choice.get("logprobs"),
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            )
        data["choices"] = sorted(choices, key=lambda c: c["index"])
        data["object"] = "text_completion"
        data.setdefault("model", target.model)
        return data


class TGICompletions(OnTGI, CompletionsHelper):
    """TGI's OpenAI-compatible ``/v1/completions``."""

    route = "/v1/completions"
