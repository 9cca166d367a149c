"""Amazon SageMaker endpoints (JumpStart or your own): ``sagemaker:<endpoint name>``.

InvokeEndpoint with, by default, the payload of the Text Generation Inference container that JumpStart's
text-generation models use -- ``{"inputs": prompt, "parameters": {"max_new_tokens": N, "do_sample": false,
...}}`` -- and the text at ``[0].generated_text`` of the response. Everything is configurable in
``--model-config``: ``content_template`` (JSON with ``$prompt``), ``output_path`` (JMESPath),
``content_type``, ``accept``, ``target_variant``, ``inference_component`` and ``custom_attributes`` (e.g.
``accept_eula=true`` for gated JumpStart models).

IAM: ``sagemaker:InvokeEndpoint`` on the endpoint.
"""

from __future__ import annotations

import json
from typing import Any

from evalkit.errors import UsageError
from evalkit.runners.aws import classify_aws, decode_body, make_client, render_content, resolve_region, search_output
from evalkit.runners.base import RUNNERS, Request, Result, Runner, RunnerOptions
from evalkit.runners.config import check_backend_keys

DEFAULT_OUTPUT_PATH = "[0].generated_text"


def tgi_payload(prompt: str, options: RunnerOptions) -> dict[str, Any]:
    """The Text Generation Inference request: greedy unless a temperature is set."""
    parameters: dict[str, Any] = {"max_new_tokens": options.max_new_tokens, "return_full_text": False}
    if options.temperature:
        parameters.update(do_sample=True, temperature=options.temperature)
    else:
        parameters["do_sample"] = False
    if options.top_p is not None:
        parameters["top_p"] = options.top_p
    if options.stop_sequences:
        parameters["stop"] = list(options.stop_sequences)
    return {"inputs": prompt, "parameters": parameters}


class SageMakerRunner(Runner):
    batched = False
    default_concurrency = 4

    def __init__(self, target: str, options: RunnerOptions):
        self.endpoint = target.strip()
        self.options = options
        self.spec = f"sagemaker:{self.endpoint}"
        backend = options.backend
        check_backend_keys("sagemaker", backend)
        if backend.get("content_template") and not backend.get("output_path"):
            raise UsageError("sagemaker: a content_template needs its output_path (JMESPath into the response)")
        self.template = backend.get("content_template")
        self.output_path = backend.get("output_path") or DEFAULT_OUTPUT_PATH
        self.content_type = backend.get("content_type") or "application/json"
        self.accept = backend.get("accept") or "application/json"
        self.region = resolve_region(self.endpoint)
        self.client = make_client("sagemaker-runtime", self.region, options)

    def identity(self) -> dict[str, Any]:
        backend = self.options.backend
        return {"runner": "sagemaker", "endpoint": self.endpoint, "region": self.region,
                "target_variant": backend.get("target_variant"),
                "inference_component": backend.get("inference_component"),
                "endpoint_url": self.client.meta.endpoint_url}

    def params(self) -> dict[str, Any]:
        o = self.options
        return {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "top_p": o.top_p,
                "stop_sequences": list(o.stop_sequences), "content_template": self.template,
                "output_path": self.output_path, "content_type": self.content_type, "accept": self.accept,
                "custom_attributes": o.backend.get("custom_attributes"), "system_prompt": o.system_prompt}

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "runner": "sagemaker", "identity": self.identity(), "params": self.params(),
                "concurrency": self.options.concurrency or self.default_concurrency, "max_rps": self.options.max_rps,
                "timeout_s": self.options.timeout_s, "max_attempts": self.options.max_attempts,
                "botocore_retries": "off (total_max_attempts 1); the executor retries"}

    def classify(self, error: BaseException) -> tuple[str, str]:
        return classify_aws(error)

    def call(self, request: Request) -> Result:
        if request.messages:
            raise UsageError("sagemaker: endpoints take prompts, not chat messages")
        prompt = request.prompt or ""
        system = request.system if request.system is not None else self.options.system_prompt
        if system:
            prompt = f"{system}\n\n{prompt}"
        body = render_content(self.template, prompt) if self.template else \
            json.dumps(tgi_payload(prompt, self.options)).encode("utf-8")
        kwargs: dict[str, Any] = {"EndpointName": self.endpoint, "Body": body, "ContentType": self.content_type,
                                  "Accept": self.accept}
        backend = self.options.backend
        for key, name in (("target_variant", "TargetVariant"), ("inference_component", "InferenceComponentName"),
                          ("custom_attributes", "CustomAttributes")):
            if backend.get(key):
                kwargs[name] = backend[key]
        response = self.client.invoke_endpoint(**kwargs)
        decoded = decode_body(response["Body"].read(), f"endpoint {self.endpoint}")
        return Result(id=request.id, text=search_output(self.output_path, decoded))


@RUNNERS.register("sagemaker")
def create_sagemaker_runner(target: str, options: RunnerOptions) -> SageMakerRunner:
    return SageMakerRunner(target, options)
