"""The site client: what a compute site uses to find, claim, run and report jobs over HTTPS.

    with SiteClient(url, client_id, client_secret) as api:
        op = api.claim_next("metag-1.0.0")
        if op:
            api.heartbeat(op.id, {"progress": 0.5})
            api.complete(op.id, {"outputs": ["obj-9"]})

- Tokens come from POST /token (client credentials) and are fetched again shortly before they
  expire, or once when the API answers 401.
- 429, 502, 503, 504 and connection errors are retried with exponential backoff and full jitter
  (honouring Retry-After), a bounded number of times. Claims are safe to retry: a site that holds
  the lease gets the same operation back, and `claim_next` sends an `Idempotency-Key` (one per
  logical claim, the same on each of its retries), so a claim whose answer was lost is answered
  again instead of claiming a second job. A completion retried after its first try went through
  answers 409, which `complete`/`fail` recognise and treat as success.
- Other errors raise typed exceptions that carry the API's `detail`.
Lambda handlers never import this module; it is for sites and the CLI.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import httpx

from jobtriggers.models import Job, Operation

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENCY_HEADER = "Idempotency-Key"


class SiteApiError(Exception):
    """An answer the API gave that is not a success; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: Any, method: str = "", path: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"{method} {path}: {status_code} {detail}".strip())


class BadRequest(SiteApiError):
    pass


class Unauthorized(SiteApiError):
    pass


class Forbidden(SiteApiError):
    pass


class NotFound(SiteApiError):
    pass


class Conflict(SiteApiError):
    pass


class PayloadTooLarge(SiteApiError):
    pass


class Invalid(SiteApiError):
    """422: the request was understood but breaks a rule (detail names the fields)."""


class Unavailable(SiteApiError):
    """The API stayed unreachable or busy through every retry."""


_ERRORS: dict[int, type[SiteApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Invalid,
}


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


class SiteClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "jobtriggers-site-client"},
        )

    def __repr__(self) -> str:  # never the secret
        return f"SiteClient({self.base_url!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SiteClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_backoff_seconds)
        return random.uniform(0, min(self.max_backoff_seconds, self.backoff_seconds * 2**attempt))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on transient failures; the answer, whatever its status."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise Unavailable(0, f"cannot reach {self.base_url}: {exc}", method, path) from exc
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                if attempt >= self.max_retries:
                    return response
            self._sleep(self._backoff(attempt, response))
            attempt += 1

    def _fetch_token(self) -> None:
        started = self._clock()
        response = self._send(
            "POST",
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self._client_secret,
            },
        )
        if response.status_code != 200:
            self._raise(response, "POST", "/token")
        body = response.json()
        expires_in = float(body.get("expires_in") or 3600)
        self._token = str(body["access_token"])
        # Fetch the next one a little before this one ends (a tenth of its life, at most a minute).
        self._token_refresh_at = started + expires_in - min(60.0, expires_in / 10)

    def _raise(self, response: httpx.Response, method: str, path: str) -> None:
        status = response.status_code
        error = _ERRORS.get(status, Unavailable if status in RETRY_STATUSES else SiteApiError)
        raise error(status, _detail(response), method, path)

    def site_id(self) -> str | None:
        """This site's id, as its token names it (`sub`); the API checks the token, not us."""
        import jwt

        if self._token is None or self._clock() >= self._token_refresh_at:
            self._fetch_token()
        try:
            claims = jwt.decode(self._token or "", options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) else None

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """An authenticated request; a typed error for anything but 2xx."""
        if self._token is None or self._clock() >= self._token_refresh_at:
            self._fetch_token()
        for fresh_token in (False, True):
            all_headers = {**(headers or {}), "Authorization": f"Bearer {self._token}"}
            response = self._send(method, path, headers=all_headers, **kwargs)
            if response.status_code == 401 and not fresh_token:
                self._fetch_token()  # revoked or expired early (clock skew): one more try
                continue
            break
        if response.status_code >= 400:
            self._raise(response, method, path)
        return response

    def _pages(self, path: str, params: dict[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        params["max_page_size"] = page_size
        while True:
            body = self.request("GET", path, params=params).json()
            yield from body.get("resources", [])
            token = body.get("next_page_token")
            if not token:
                return
            params["page_token"] = token

    # ------------------------------------------------------------------ jobs

    def list_jobs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        claimable: bool = False,
        site_id: str | None = None,
        workflow_missing: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Every job matching the filters, fetching pages as it goes."""
        params = {
            "workflow_id": workflow_id,
            "status": status,
            "claimable": "true" if claimable else None,
            "site_id": site_id,
            "workflow_missing": None if workflow_missing is None else str(workflow_missing).lower(),
        }
        for item in self._pages("/jobs", params, page_size):
            yield Job.model_validate(item)

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/jobs/{job_id}").json())

    def claim(self, job_id: str) -> Operation:
        """Claim one job; the operation to report on (the same one again if this site holds it)."""
        return Operation.model_validate(self.request("POST", f"/jobs/{job_id}:claim").json())

    def claim_next(
        self, workflow_id: str | None = None, idempotency_key: str | None = None
    ) -> Operation | None:
        """Claim a job this site may run (of one workflow if named), or None when there is none.

        One call is one logical claim: it sends one `Idempotency-Key` (a new one unless given) with
        every retry, so however many times it is sent, at most one job is claimed for it. A 409
        here means a retry overtook the first request with that key, still being answered: it is
        waited out and asked again."""
        body = {"workflow_id": workflow_id} if workflow_id else None
        headers = {IDEMPOTENCY_HEADER: idempotency_key or uuid.uuid4().hex}
        attempt = 0
        while True:
            try:
                response = self.request("POST", "/jobs:claim", json=body, headers=headers)
                break
            except Conflict:
                if attempt >= self.max_retries:
                    raise
                self._sleep(self._backoff(attempt, None))
                attempt += 1
        if response.status_code == 204 or not response.content:
            return None
        return Operation.model_validate(response.json())

    def release(self, job_id: str) -> Operation:
        """Give a held job back: it is pending again, the operation done and cancelled."""
        return Operation.model_validate(self.request("POST", f"/jobs/{job_id}:release").json())

    # ------------------------------------------------------------------ operations

    def get_operation(self, op_id: str) -> Operation:
        return Operation.model_validate(self.request("GET", f"/operations/{op_id}").json())

    def list_operations(self, *, done: bool | None = None, page_size: int = 100) -> Iterator[Operation]:
        params = {"done": None if done is None else str(done).lower()}
        for item in self._pages("/operations", params, page_size):
            yield Operation.model_validate(item)

    def _patch(self, op_id: str, body: dict[str, Any]) -> Operation:
        return Operation.model_validate(self.request("PATCH", f"/operations/{op_id}", json=body).json())

    def heartbeat(self, op_id: str, metadata: dict[str, Any] | None = None) -> Operation:
        """Renew the lease (and merge `metadata` into the operation's)."""
        return self._patch(op_id, {"metadata": metadata} if metadata else {})

    def _finish(self, op_id: str, result: Any, metadata: dict[str, Any] | None) -> Operation:
        body: dict[str, Any] = {"done": True, "result": result}
        if metadata:
            body["metadata"] = metadata
        try:
            return self._patch(op_id, body)
        except Conflict:
            # A retry of a completion that went through the first time: the operation is done
            # with our result. Anything else (fenced off, finished otherwise) is a real conflict.
            op = self.get_operation(op_id)
            if op.done and op.result == result:
                return op
            raise

    def complete(self, op_id: str, result: Any, metadata: dict[str, Any] | None = None) -> Operation:
        """Report success: the job becomes done and keeps `result` (e.g. {"outputs": [object ids]})."""
        return self._finish(op_id, result, metadata)

    def fail(
        self, op_id: str, code: str, message: str, details: Any = None, metadata: dict[str, Any] | None = None
    ) -> Operation:
        """Report an error: the job is retried while attempts remain, else it fails."""
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        return self._finish(op_id, error, metadata)
