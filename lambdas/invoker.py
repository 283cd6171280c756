"""The one seam between the Lambdas: call the next function and get its answer.

In AWS it is a synchronous `lambda:Invoke` (RequestResponse). Locally and in tests it is
a direct call of the next handler, so the whole webhook -> risk -> router chain runs
for real without a Lambda runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Payload = dict[str, Any]


class DownstreamError(RuntimeError):
    """The next Lambda failed (raised, timed out, or answered something unusable)."""


class Invoker(Protocol):
    def __call__(self, payload: Payload) -> Payload: ...


@dataclass
class LambdaInvoker:
    """Synchronous invocation of a deployed function by name or ARN."""

    function_name: str
    client: Any  # boto3 "lambda" client

    def __call__(self, payload: Payload) -> Payload:
        response = self.client.invoke(
            FunctionName=self.function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(payload).encode(),
        )
        raw = response["Payload"].read()
        if response.get("FunctionError"):
            raise DownstreamError(
                f"{self.function_name} failed: {raw[:500].decode(errors='replace')}"
            )
        try:
            answer = json.loads(raw)
        except ValueError:
            raise DownstreamError(
                f"{self.function_name} answered non-JSON: {raw[:200]!r}"
            ) from None
        if not isinstance(answer, dict):
            raise DownstreamError(f"{self.function_name} answered {answer!r}, not an object")
        return answer


@dataclass
class LocalInvoker:
    """Calls a handler in this process, through JSON as the real invocation would, so a
    payload that would not survive serialisation fails here too."""

    handler: Callable[[Payload, Any], Payload]
    context: Any = None

    def __call__(self, payload: Payload) -> Payload:
        try:
            answer = self.handler(json.loads(json.dumps(payload)), self.context)
        except Exception as e:  # the real invoke reports any handler error as FunctionError
            raise DownstreamError(f"{type(e).__name__}: {e}") from e
        return json.loads(json.dumps(answer))
