"""Amazon Bedrock runners.

``bedrock:<model id | ARN>`` -- the Converse API, one request format for every Converse model family:
foundation model ids (``anthropic.claude-3-haiku-20240307-v1:0``), cross-region inference profiles
(``us.anthropic...``), and the ARNs of inference profiles, custom models and provisioned throughput. The
prompt is the user turn; ``system_prompt``, ``max_new_tokens`` (``maxTokens``), ``temperature``, ``top_p``
and ``stop_sequences`` go into the request. A stop for a content filter or guardrail is a ``filtered``
result.

``bedrock-invoke:<model id>`` -- InvokeModel with the native request and response of the model's family,
chosen from the model id: Anthropic Messages (or the legacy ``prompt``/``completion`` API with
``anthropic_api: text_completion``), Amazon Titan text, Meta Llama, Mistral, Cohere Command (R and
legacy). For anything else -- or an ARN, whose family cannot be read off -- give ``content_template`` (JSON
with ``$prompt``) and ``output_path`` (a JMESPath into the response), as fmeval's runners take them.

IAM: ``bedrock:InvokeModel`` on the model (it also covers Converse).
"""

from __future__ import annotations

import json
from typing import Any

from evalkit.errors import UsageError
from evalkit.runners.aws import (
    classify_aws,
    decode_body,
    make_client,
    render_content,
    resolve_region,
    search_output,
)
from evalkit.runners.base import FILTERED, RUNNERS, Request, Result, Runner, RunnerOptions
from evalkit.runners.config import check_backend_keys

FILTER_STOPS = {"content_filtered", "guardrail_intervened"}


class BedrockRunner(Runner):
    """What both Bedrock APIs share: the client, the identity and error classification."""

    batched = False
    default_concurrency = 4
    api = ""

    def __init__(self, target: str, options: RunnerOptions):
        self.model_id = target.strip()
        self.options = options
        self.spec = f"{self.prefix}:{self.model_id}"
        check_backend_keys(self.prefix, options.backend)
        self.region = resolve_region(self.model_id)
        self.client = make_client("bedrock-runtime", self.region, options)

    @property
    def prefix(self) -> str:
        return "bedrock" if self.api == "converse" else "bedrock-invoke"

    def identity(self) -> dict[str, Any]:
        return {"runner": "bedrock", "api": self.api, "model_id": self.model_id, "region": self.region,
                "endpoint": self.client.meta.endpoint_url}

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "top_p": o.top_p,
                "stop_sequences": list(o.stop_sequences), "system_prompt": o.system_prompt, "backend": o.backend}

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "runner": self.prefix, "identity": self.identity(), "params": self.params(),
                "concurrency": self.options.concurrency or self.default_concurrency, "max_rps": self.options.max_rps,
                "timeout_s": self.options.timeout_s, "max_attempts": self.options.max_attempts,
                "botocore_retries": "off (total_max_attempts 1); the executor retries"}

    def classify(self, error: BaseException) -> tuple[str, str]:
        return classify_aws(error)


class BedrockConverseRunner(BedrockRunner):
    api = "converse"

    def call(self, request: Request) -> Result:
        o = self.options
        messages = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in request.messages] \
            if request.messages else [{"role": "user", "content": [{"text": request.prompt or ""}]}]
        inference: dict[str, Any] = {"maxTokens": o.max_new_tokens, "temperature": o.temperature}
        if o.top_p is not None:
            inference["topP"] = o.top_p
        if o.stop_sequences:
            inference["stopSequences"] = list(o.stop_sequences)
        kwargs: dict[str, Any] = {"modelId": self.model_id, "messages": messages, "inferenceConfig": inference}
        system = request.system if request.system is not None else o.system_prompt
        if system:
            kwargs["system"] = [{"text": system}]
        if o.backend.get("additional_model_request_fields"):
            kwargs["additionalModelRequestFields"] = o.backend["additional_model_request_fields"]
        response = self.client.converse(**kwargs)
        content = response.get("output", {}).get("message", {}).get("content", [])
        text = "".join(part.get("text", "") for part in content)
        stop = response.get("stopReason")
        usage = response.get("usage") or {}
        result = Result(id=request.id, text=text, finish_reason=stop,
                        usage={"input_tokens": usage.get("inputTokens"), "output_tokens": usage.get("outputTokens")})
        if stop in FILTER_STOPS:
            result.error, result.error_kind = f"the model's answer was stopped: {stop}", FILTERED
        return result


# family -> (request body builder, response reader): the native formats of InvokeModel
def _anthropic_messages(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": o.max_new_tokens,
                            "temperature": o.temperature,
                            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}
    if o.top_p is not None:
        body["top_p"] = o.top_p
    if o.stop_sequences:
        body["stop_sequences"] = list(o.stop_sequences)
    if system:
        body["system"] = system
    return body


def _read_anthropic_messages(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    text = "".join(part.get("text", "") for part in body.get("content", []) if part.get("type") == "text")
    usage = body.get("usage") or {}
    return text, body.get("stop_reason"), {"input_tokens": usage.get("input_tokens"),
                                           "output_tokens": usage.get("output_tokens")}


def _anthropic_text(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": f"{system or ''}\n\nHuman: {prompt}\n\nAssistant:",
                            "max_tokens_to_sample": o.max_new_tokens, "temperature": o.temperature}
    if o.top_p is not None:
        body["top_p"] = o.top_p
    if o.stop_sequences:
        body["stop_sequences"] = list(o.stop_sequences)
    return body


def _titan(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"maxTokenCount": o.max_new_tokens, "temperature": o.temperature}
    if o.top_p is not None:
        config["topP"] = o.top_p
    if o.stop_sequences:
        config["stopSequences"] = list(o.stop_sequences)
    return {"inputText": prompt if not system else f"{system}\n\n{prompt}", "textGenerationConfig": config}


def _read_titan(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    first = (body.get("results") or [{}])[0]
    return first.get("outputText", ""), first.get("completionReason"), {
        "input_tokens": body.get("inputTextTokenCount"), "output_tokens": first.get("tokenCount")}


def _llama(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt if not system else f"{system}\n\n{prompt}",
                            "max_gen_len": o.max_new_tokens, "temperature": o.temperature}
    if o.top_p is not None:
        body["top_p"] = o.top_p
    return body


def _read_llama(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    return body.get("generation", ""), body.get("stop_reason"), {
        "input_tokens": body.get("prompt_token_count"), "output_tokens": body.get("generation_token_count")}


def _mistral(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    text = prompt if not system else f"{system}\n\n{prompt}"
    body: dict[str, Any] = {"prompt": f"<s>[INST] {text} [/INST]", "max_tokens": o.max_new_tokens,
                            "temperature": o.temperature}
    if o.top_p is not None:
        body["top_p"] = o.top_p
    if o.stop_sequences:
        body["stop"] = list(o.stop_sequences)
    return body


def _read_mistral(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    first = (body.get("outputs") or [{}])[0]
    return first.get("text", ""), first.get("stop_reason"), None


def _cohere_chat(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": prompt, "max_tokens": o.max_new_tokens, "temperature": o.temperature}
    if system:
        body["preamble"] = system
    if o.top_p is not None:
        body["p"] = o.top_p
    if o.stop_sequences:
        body["stop_sequences"] = list(o.stop_sequences)
    return body


def _read_cohere_chat(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    return body.get("text", ""), body.get("finish_reason"), None


def _cohere_text(prompt: str, o: RunnerOptions, system: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt if not system else f"{system}\n\n{prompt}",
                            "max_tokens": o.max_new_tokens, "temperature": o.temperature}
    if o.top_p is not None:
        body["p"] = o.top_p
    if o.stop_sequences:
        body["stop_sequences"] = list(o.stop_sequences)
    return body


def _read_cohere_text(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    first = (body.get("generations") or [{}])[0]
    return first.get("text", ""), first.get("finish_reason"), None


def _read_anthropic_text(body: dict[str, Any]) -> tuple[str, str | None, dict[str, int] | None]:
    return body.get("completion", ""), body.get("stop_reason"), None


FAMILIES = {
    "anthropic": (_anthropic_messages, _read_anthropic_messages),
    "anthropic-text": (_anthropic_text, _read_anthropic_text),
    "titan": (_titan, _read_titan),
    "llama": (_llama, _read_llama),
    "mistral": (_mistral, _read_mistral),
    "cohere-chat": (_cohere_chat, _read_cohere_chat),
    "cohere-text": (_cohere_text, _read_cohere_text),
}


def family_of(model_id: str, backend: dict[str, Any]) -> str | None:
    """The native format of ``model_id`` (``backend['family']`` wins); None when it cannot be told."""
    if backend.get("family"):
        family = str(backend["family"])
        if family not in FAMILIES:
            raise UsageError(f"bedrock-invoke: unknown family {family!r}; known: {', '.join(FAMILIES)}")
        return family
    name = model_id.split("/")[-1] if model_id.startswith("arn:") else model_id
    parts = name.split(".")
    geography = {"us", "eu", "apac", "us-gov", "global", "jp", "au"}  # cross-region inference profile prefixes
    provider = parts[1] if len(parts) > 2 and parts[0] in geography else parts[0]
    if provider == "anthropic":
        return "anthropic-text" if backend.get("anthropic_api") == "text_completion" else "anthropic"
    if provider == "amazon" and "titan-text" in name:
        return "titan"
    if provider == "meta":
        return "llama"
    if provider == "mistral":
        return "mistral"
    if provider == "cohere":
        return "cohere-chat" if "command-r" in name else "cohere-text"
    return None


class BedrockInvokeRunner(BedrockRunner):
    api = "invoke"

    def __init__(self, target: str, options: RunnerOptions):
        super().__init__(target, options)
        backend = options.backend
        self.template = backend.get("content_template")
        self.output_path = backend.get("output_path")
        if bool(self.template) != bool(self.output_path):
            raise UsageError("bedrock-invoke: content_template and output_path go together")
        self.family = None if self.template else family_of(self.model_id, backend)
        if self.template is None and self.family is None:
            raise UsageError(f"bedrock-invoke: cannot tell the request format of {self.model_id!r}; give "
                             "content_template and output_path in --model-config (or family: one of "
                             f"{', '.join(FAMILIES)})")

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "format": self.family or "content_template"}

    def call(self, request: Request) -> Result:
        if request.messages:
            raise UsageError("bedrock-invoke takes prompts; use bedrock: (Converse) for chat messages")
        prompt = request.prompt or ""
        system = request.system if request.system is not None else self.options.system_prompt
        if self.template:
            body = render_content(self.template, prompt)
        else:
            body = json.dumps(FAMILIES[self.family][0](prompt, self.options, system)).encode("utf-8")
        response = self.client.invoke_model(modelId=self.model_id, body=body, contentType="application/json",
                                            accept="application/json")
        decoded = decode_body(response["body"].read(), f"InvokeModel {self.model_id}")
        if self.template:
            return Result(id=request.id, text=search_output(self.output_path, decoded))
        text, stop, usage = FAMILIES[self.family][1](decoded)
        result = Result(id=request.id, text=text, finish_reason=stop, usage=usage)
        if stop in FILTER_STOPS or stop == "CONTENT_FILTERED":
            result.error, result.error_kind = f"the model's answer was stopped: {stop}", FILTERED
        return result


@RUNNERS.register("bedrock")
def create_converse_runner(target: str, options: RunnerOptions) -> BedrockConverseRunner:
    return BedrockConverseRunner(target, options)


@RUNNERS.register("bedrock-invoke")
def create_invoke_runner(target: str, options: RunnerOptions) -> BedrockInvokeRunner:
    return BedrockInvokeRunner(target, options)
