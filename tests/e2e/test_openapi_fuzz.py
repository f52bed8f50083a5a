"""Property-based fuzzing of every service's OpenAPI document, against the running services.

All seven services run as processes (as in ``test_access_matrix``). schemathesis reads each service's own
``/openapi.json`` and, for every operation, generates requests from it (valid ones and, for operations
that take input, invalid ones) and sends them with a key of every role, with no key and with an unknown
key. Every response must:

* not be a server error (no 5xx),
* have a status code the document declares for that operation,
* have a content type and a body matching what the document declares for that status.

Hypothesis runs derandomized (a fixed seed from each test's name) with no example database, so a run is
reproducible. The number of examples is bounded so the test takes a few minutes on a loaded machine: per
operation, the first caller it admits gets ``TOLLGATE_FUZZ_EXAMPLES`` valid and as many invalid requests
(input validation does not depend on the role), every other admitted caller
``TOLLGATE_FUZZ_EXAMPLES_OTHERS`` valid ones, and callers it refuses ``TOLLGATE_FUZZ_EXAMPLES_REFUSED``
(their requests stop at authentication). Failures are
collected, not raised inside Hypothesis, so one bad answer does not cost a shrinking run; the test fails
with every distinct finding and a curl command that reproduces it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.auth_support import RoleKeys
from tests.e2e.test_access_matrix import CALLERS, EXPECTED, OPEN, credentials, start_all

FUZZ_EXAMPLES = int(os.environ.get("TOLLGATE_FUZZ_EXAMPLES", "6"))
FUZZ_EXAMPLES_OTHERS = int(os.environ.get("TOLLGATE_FUZZ_EXAMPLES_OTHERS", "1"))
FUZZ_EXAMPLES_REFUSED = int(os.environ.get("TOLLGATE_FUZZ_EXAMPLES_REFUSED", "1"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# /readyz answers 503 by design while a dependency is slow or away (its document declares it); its answers
# are still checked against the document.
DESIGNED_5XX = {"GET /readyz"}
# Operations whose requests are not fuzzed, with the reason.
SKIPPED: dict[tuple[str, str], str] = {}


def admitted(service: str, operation: str, caller: str) -> bool:
    allowed = EXPECTED[service][operation]
    return bool(allowed == OPEN or caller in allowed)


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    call: Callable[[Any], None],
) -> None:
    """Run ``call`` on ``examples`` generated cases of ``operation`` (Hypothesis, derandomized)."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        call(case)

    run()


def fuzz_service(
    service: str, base: str, document: dict[str, Any], keys: RoleKeys
) -> tuple[int, dict[str, str]]:
    """Fuzz one service with every caller; (requests sent, finding → reproduction)."""
    schema = schemathesis.openapi.from_dict(document)
    findings: dict[str, str] = {}
    sent = 0
    no_negative: set[str] = set()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            name = f"{operation.method.upper()} {operation.path}"
            if (service, name) in SKIPPED:
                continue
            takes_input = bool(operation.body or list(operation.iter_parameters()))
            primary = next(c for c in CALLERS if admitted(service, name, c))
            for caller in CALLERS:
                headers = credentials(caller, keys)
                modes = [GenerationMode.POSITIVE]
                if caller == primary:
                    examples = FUZZ_EXAMPLES
                    if takes_input and name not in no_negative:
                        modes.append(GenerationMode.NEGATIVE)
                elif admitted(service, name, caller):
                    examples = FUZZ_EXAMPLES_OTHERS
                else:
                    examples = FUZZ_EXAMPLES_REFUSED

                def call(
                    case: Any, name: str = name, caller: str = caller, headers: dict[str, str] = headers
                ) -> None:
                    nonlocal sent
                    try:
                        response = case.call(base_url=base, session=session, headers=headers, timeout=30)
                    except requests.RequestException as exc:
                        findings.setdefault(f"{service} {name} as {caller}: {type(exc).__name__}", str(exc))
                        return
                    sent += 1
                    try:
                        checks = CHECKS[1:] if name in DESIGNED_5XX else CHECKS
                        case.validate_response(response, checks=checks, headers=headers)
                    except (Failure, FailureGroup) as exc:
                        for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                            title = failure.title
                            key = f"{service} {name} as {caller} ({response.status_code}): {title}"
                            findings.setdefault(key, str(exc)[:4000])

                for mode in modes:
                    try:
                        fuzz_operation(operation, mode, examples, call)
                    except Unsatisfiable:
                        # Every parameter's schema admits any value: schemathesis has no invalid case to
                        # make (and finding that out is slow, so it is not tried again for other callers).
                        if mode is not GenerationMode.NEGATIVE:
                            raise
                        no_negative.add(name)
    return sent, findings


async def test_fuzz_every_service_openapi_with_every_caller(
    services: Any, api_keys: RoleKeys, tmp_path: Path
) -> None:
    bases = await start_all(services, tmp_path)
    async with httpx.AsyncClient(timeout=60) as client:
        documents = {name: (await client.get(f"{base}/openapi.json")).json() for name, base in bases.items()}
    started = time.monotonic()
    total = 0
    findings: dict[str, str] = {}
    for service, base in bases.items():
        # One service after the other: Hypothesis does not run tests in several threads at once.
        sent, found = await asyncio.to_thread(fuzz_service, service, base, documents[service], api_keys)
        print(f"fuzz: {service}: {sent} requests, {len(found)} findings")
        for key in sorted(found):
            print(f"  {key}")
        total += sent
        findings.update(found)
    print(f"fuzz: {total} requests in {time.monotonic() - started:.0f}s")
    assert total > 0
    assert not findings, f"{len(findings)} findings in {total} requests:\n\n" + "\n\n".join(
        f"{key}\n{detail}" for key, detail in sorted(findings.items())
    )


pytestmark = pytest.mark.timeout(900)
