"""One Lambda execution environment: `python -m jobtriggers.local.worker REQUESTS REPLIES MARKER MODULE ATTR`.

Started by jobtriggers.local.invoke.Worker in the function's code directory, with the function's
environment. Like Lambda's runtime: the handler's module is imported once from the code directory
(the init phase), then invocations are served one at a time: an event in, a result or an error
out. Requests and replies are length-prefixed JSON on two pipes (file descriptors REQUESTS and
REPLIES); stdout and stderr are the function's log. After each invocation the MARKER line tells
the runtime that the invocation's output is complete.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _log_error(error: dict[str, Any]) -> None:
    # What Lambda's Python runtime writes to the function's log for an unhandled exception.
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
    print("Traceback (most recent call last):\n" + "".join(error["stackTrace"]), end="", file=sys.stderr)


def main(argv: list[str]) -> int:
    requests_fd, replies_fd, marker, module_name, attr = argv
    from jobtriggers.local.invoke import FakeLambdaContext, read_frame, write_frame

    replies = os.fdopen(int(replies_fd), "wb")
    requests = int(requests_fd)
    sys.path.insert(0, os.getcwd())
    try:
        handler = getattr(importlib.import_module(module_name), attr)
        if not callable(handler):
            raise AttributeError(f"{module_name}.{attr} is not callable")
    except Exception as exc:
        kind = "Runtime.HandlerNotFound" if isinstance(exc, AttributeError) else "Runtime.ImportModuleError"
        error = _error(exc, kind)
        _log_error(error)
        write_frame(replies, {"init_error": error})
        return 1
    write_frame(replies, {"ready": True})

    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", module_name)
    memory = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    region = os.environ.get("AWS_REGION", "us-east-1")
    while True:
        request = read_frame(requests)
        if request is None:  # the runtime closed the pipe: shut down
            return 0
        context = FakeLambdaContext(
            function_name=function_name,
            memory_limit_in_mb=memory,
            region=region,
            aws_request_id=request["request_id"],
            log_group_name=f"/aws/lambda/{function_name}",
            deadline=request["deadline"],
        )
        try:
            result = handler(request["event"], context)
            try:
                reply = json.dumps({"ok": True, "result": result}, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise _MarshalError(f"Unable to marshal response: {exc}") from exc
        except Exception as exc:
            error = _error(exc, "Runtime.MarshalError" if isinstance(exc, _MarshalError) else None)
            _log_error(error)
            reply = json.dumps({"ok": False, **error})
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"{marker} {request['request_id']}\n".encode())
        data = reply.encode()
        replies.write(len(data).to_bytes(4, "big") + data)
        replies.flush()


class _MarshalError(Exception):
    pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
