"""A local HTTP server that speaks the Bedrock Runtime and SageMaker Runtime wire protocols, with faults.

Real boto3 clients reach it through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` and
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` (:func:`aws_environment`). It implements what the runners call:

* ``POST /model/{modelId}/converse`` -- the Converse API;
* ``POST /model/{modelId}/invoke`` -- InvokeModel, answering in the native format of the request it gets
  (Anthropic Messages and text completion, Titan, Llama, Mistral, Cohere) or, for any other body, with
  ``{"generation": ...}``;
* ``POST /endpoints/{name}/invocations`` -- SageMaker InvokeEndpoint, answering as the TGI container does
  (``[{"generated_text": ...}]``) to a body with ``inputs``, and with ``{"generation": ...}`` to any other.

The answer to a prompt is deterministic (:func:`answer`). Faults are asked for inside the prompt itself, so a
test dataset says which record meets which fault, and each is counted per (route, model, prompt):

``[[throttle:N]]`` the first N attempts get 429 ThrottlingException; ``[[unavailable:N]]`` 503;
``[[timeout:N]]`` 408 ModelTimeoutException; ``[[slow:N]]`` the first N attempts answer only after
``slow_s`` (past the client's timeout); ``[[drop:N]]`` the first N attempts have their connection closed
without an answer; ``[[modelerror]]`` always 424 (ModelErrorException / ModelError); ``[[validation]]``
always 400; ``[[filtered]]`` Converse stops with ``content_filtered``.

Every request is logged (route, model, prompt, status, headers) for the tests to inspect.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

FAULT = re.compile(r"\[\[(\w+)(?::(\d+))?\]\]")
ACCESS_KEY = "AKIAEVALKITTESTKEY00"
SECRET_KEY = "evalkit-test-secret/DO+NOT+LEAK+0123456789"  # noqa: S105 - a fake, checked to leak nowhere
SESSION_TOKEN = "evalkit-test-session-token-FQoGZXIvYXdzEJr//////////wEaDN0LEAK"  # noqa: S105


def answer(prompt: str) -> str:
    """The server's answer: the prompt's last twelve words, faults markers removed."""
    words = FAULT.sub("", prompt).split()
    return " ".join(words[-12:])


@dataclass
class Call:
    route: str
    model: str
    prompt: str
    status: int
    headers: dict[str, str]
    body: Any = None
    time: float = 0.0  # time.monotonic() when the request arrived


@dataclass
class ServerState:
    latency_s: float = 0.0  # added to every answer (the benchmark's 200 ms)
    slow_s: float = 3.0  # how long a [[slow]] attempt takes
    calls: list[Call] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, prompt: str | None = None) -> list[Call]:
        """Calls that got a 200 (for one prompt, or all)."""
        return [c for c in self.calls if c.status == 200 and (prompt is None or c.prompt == prompt)]


def _prompt_of(route: str, body: Any) -> str:
    if route == "converse":
        texts = [part.get("text", "") for m in body.get("messages", []) for part in m.get("content", [])]
        return "\n".join(texts)
    if route == "invocations" and isinstance(body, dict) and isinstance(body.get("inputs"), str):
        return body["inputs"]
    if not isinstance(body, dict):
        return json.dumps(body)
    if "messages" in body:  # Anthropic Messages
        return "\n".join(p.get("text", "") for m in body["messages"] for p in m.get("content", []))
    for key in ("inputText", "prompt", "message", "inputs", "text", "text_inputs"):
        if isinstance(body.get(key), str):
            return body[key]
    return json.dumps(body)


def _invoke_answer(body: dict[str, Any], text: str) -> dict[str, Any]:
    if "anthropic_version" in body:
        return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": len(text.split())}}
    if "max_tokens_to_sample" in body:
        return {"completion": text, "stop_reason": "stop_sequence"}
    if "inputText" in body:
        return {"inputTextTokenCount": 10, "results": [{"tokenCount": len(text.split()), "outputText": text,
                                                        "completionReason": "FINISH"}]}
    if "max_gen_len" in body:
        return {"generation": text, "prompt_token_count": 10, "generation_token_count": len(text.split()),
                "stop_reason": "stop"}
    if "message" in body:
        return {"text": text, "finish_reason": "COMPLETE"}
    if str(body.get("prompt", "")).startswith("<s>[INST]"):
        return {"outputs": [{"text": text, "stop_reason": "stop"}]}
    if "prompt" in body:
        return {"generations": [{"text": text, "finish_reason": "COMPLETE"}]}
    return {"generation": text}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        state = self.server.state
        self._arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        match = re.match(r"^/model/([^/]+)/(converse|invoke)$|^/endpoints/([^/]+)/invocations$", self.path)
        if match is None:
            return self._error(404, "UnknownOperationException", f"no route {self.path}", "?", "", raw)
        model = unquote(match.group(1) or match.group(3))
        route = match.group(2) or "invocations"
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            return self._error(400, "ValidationException", "body is not JSON", route, model, raw)
        prompt = _prompt_of(route, body)
        with state.lock:
            state.attempts[(route, model, prompt)] += 1
            attempt = state.attempts[(route, model, prompt)]
        faults = {name: int(n) if n else None for name, n in FAULT.findall(prompt)}

        def first(name: str) -> bool:
            return name in faults and attempt <= (faults[name] or 1)

        validation = "ValidationError" if route == "invocations" else "ValidationException"
        model_error = "ModelError" if route == "invocations" else "ModelErrorException"
        if "validation" in faults:
            return self._error(400, validation, "the request is not valid", route, model, prompt)
        if "modelerror" in faults:
            return self._error(424, model_error, "the model failed on this input", route, model, prompt)
        if first("throttle"):
            return self._error(429, "ThrottlingException", "Too many requests, please wait", route, model, prompt)
        if first("unavailable"):
            code = "ServiceUnavailable" if route == "invocations" else "ServiceUnavailableException"
            return self._error(503, code, "the service is unavailable", route, model, prompt)
        if first("timeout"):
            return self._error(408, "ModelTimeoutException", "the model took too long", route, model, prompt)
        if first("drop"):
            self._log(route, model, prompt, 0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if first("slow"):
            time.sleep(state.slow_s)
        if state.latency_s:
            time.sleep(state.latency_s)
        text = answer(prompt)
        if route == "converse":
            stop = "content_filtered" if "filtered" in faults else "end_turn"
            out: Any = {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
                        "usage": {"inputTokens": len(prompt.split()), "outputTokens": len(text.split()),
                                  "totalTokens": len(prompt.split()) + len(text.split())},
                        "metrics": {"latencyMs": int(1000 * state.latency_s)}}
        elif route == "invoke":
            out = _invoke_answer(body, text)
        elif isinstance(body, dict) and "inputs" in body:
            out = [{"generated_text": text}]  # the TGI container
        else:
            out = {"generation": text}  # any other container, read with a user output path
        self._send(200, out, route, model, prompt, body)
        return None

    def _log(self, route: str, model: str, prompt: str, status: int, body: Any = None) -> None:
        with self.server.state.lock:
            self.server.state.calls.append(Call(route, model, prompt, status, dict(self.headers.items()), body,
                                                self._arrived))

    def _send(self, status: int, payload: Any, route: str, model: str, prompt: str, body: Any = None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self._log(route, model, prompt, status, body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            pass

    def _error(self, status: int, code: str, message: str, route: str, model: str, prompt: Any) -> None:
        self._send(status, {"message": message, "Message": message}, route, model, str(prompt),
                   headers={"x-amzn-ErrorType": code})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: ServerState):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class AWSServer:
    """Start with ``with AWSServer() as server:``; ``server.url``, ``server.state``."""

    def __init__(self, latency_s: float = 0.0, slow_s: float = 3.0):
        self.state = ServerState(latency_s=latency_s, slow_s=slow_s)
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> AWSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def aws_environment(url: str) -> dict[str, str]:
    """Environment variables that send real boto3 clients to ``url`` with fake credentials, and nowhere else."""
    return {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN,
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}
