"""The Loopgate usage guide's Python snippets, run against a real server with `requests`.

They are the guide's code with only these changes: the base URL points at the test
server, `while True` loops are bounded and sleep briefly, the person's answer is given
from the test through /hitl/respond, timeouts are fractions of a second, and the
sessions the guide's later snippets assume exist are registered first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.live import LiveServer

BASE: str = ""


@pytest.fixture(autouse=True)
def base_url(live: LiveServer) -> Iterator[None]:
    global BASE
    BASE = live.url
    yield
    BASE = ""


def answer(request_id: str, **fields: Any) -> None:
    """The person, deciding through the HTTP API."""
    response = requests.post(f"{BASE}/hitl/respond", json={"request_id": request_id, **fields},
                             timeout=10)
    assert response.status_code == 200, response.text


def register(session_id: str, client_id: str, telegram_id: int = 123456789) -> None:
    response = requests.post(f'{BASE}/hitl/register', json={
        "session_id": session_id, "client_id": client_id, "telegram_id": telegram_id,
    }, timeout=10)
    assert response.status_code in (200, 409), response.text


def test_registration_approval_and_polling() -> None:
    # Register session
    response = requests.post(f'{BASE}/hitl/register', json={
        "session_id": "approval-bot",
        "client_id": "my-ai",
        "telegram_id": 123456789
    })
    assert response.status_code == 200

    # Request approval
    response = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "approval-bot",
        "client_id": "my-ai",
        "message": "Approve this action?",
        "options": ["Yes", "No"]
    })
    request_id = response.json()["request_id"]
    answer(request_id, response="No")

    # Poll for response
    printed = []
    for _ in range(200):
        poll = requests.get(f'{BASE}/hitl/poll?request_id={request_id}')
        status = poll.json()
        if status["completed"]:
            printed.append(f"Decision: {status['response']}")
            break
        time.sleep(0.02)
    assert printed == ["Decision: No"]
    assert status["approved"] is False  # "No" is never an approval


def test_free_form_input() -> None:
    register("input-bot", "my-ai")
    # Request free-form input
    response = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "input-bot",
        "client_id": "my-ai",
        "message": "Please provide additional context:",
        "request_type": "input"
    })
    request_id = response.json()["request_id"]
    answer(request_id, response="The deploy failed on step 3")
    status = requests.get(f'{BASE}/hitl/poll?request_id={request_id}').json()
    assert (status["completed"], status["response"]) == (True, "The deploy failed on step 3")


def test_multiple_options_choice() -> None:
    register("choice-bot", "my-ai")
    # Present multiple options
    response = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "choice-bot",
        "client_id": "my-ai",
        "message": "Select deployment environment:",
        "options": ["Development", "Staging", "Production"],
        "request_type": "choice"
    })
    request_id = response.json()["request_id"]
    answer(request_id, response="Production")
    status = requests.get(f'{BASE}/hitl/poll?request_id={request_id}').json()
    assert (status["completed"], status["response"]) == (True, "Production")


def test_rich_metadata() -> None:
    register("deploy-bot", "ci-cd")
    # Include rich metadata
    response = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "deploy-bot",
        "client_id": "ci-cd",
        "message": "Deploy new version?",
        "options": ["Deploy", "Cancel", "Review"],
        "metadata": {
            "version": "v2.1.0",
            "tests_passed": 847,
            "code_coverage": "94.2%",
            "environment": "production",
            "commit_hash": "abc123",
            "author": "john.doe@company.com",
            "estimated_downtime": "2 minutes"
        }
    })
    created = response.json()
    assert created["metadata"]["tests_passed"] == 847
    for label, approved in (("Deploy", True), ("Cancel", False), ("Review", False)):
        request_id = requests.post(f'{BASE}/hitl/request', json={
            "session_id": "deploy-bot", "client_id": "ci-cd", "message": "Deploy new version?",
            "options": ["Deploy", "Cancel", "Review"]}).json()["request_id"]
        answer(request_id, response=label)
        status = requests.get(f'{BASE}/hitl/poll?request_id={request_id}').json()
        assert (status["response"], status["approved"]) == (label, approved)


def test_custom_timeout() -> None:
    register("urgent-bot", "alert-system")
    # Set custom timeout
    response = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "urgent-bot",
        "client_id": "alert-system",
        "message": "Critical alert: High CPU usage detected",
        "options": ["Investigate", "Auto-scale", "Ignore"],
        "timeout_seconds": 0.2,  # the guide's 300 (5 minutes), shortened for the test
        "metadata": {
            "severity": "critical",
            "cpu_usage": "95%",
            "affected_servers": 12
        }
    })
    request_id = response.json()["request_id"]
    status = requests.get(f'{BASE}/hitl/poll?request_id={request_id}&wait=10').json()
    assert (status["status"], status["completed"], status["approved"]) == (
        "timeout", True, False)


def test_several_sessions() -> None:
    # Different sessions for different use cases
    sessions = [
        {"session_id": "deploy", "client_id": "ci-cd", "telegram_id": 123456789},
        {"session_id": "alerts", "client_id": "monitoring", "telegram_id": 987654321},
        {"session_id": "approvals", "client_id": "finance", "telegram_id": 555666777}
    ]
    for session in sessions:
        requests.post(f'{BASE}/hitl/register', json=session)
    for session in sessions:
        status = requests.get(f'{BASE}/hitl/status?session_id={session["session_id"]}').json()
        assert (status["active"], status["telegram_id"]) == (True, session["telegram_id"])


class DeploymentApprover:
    def __init__(self, base_url: str = "http://localhost:8080") -> None:
        self.base_url = base_url
        self.session_id = "cicd-pipeline"
        self.client_id = "github-actions"
        self.on_request: Any = None  # the test answers here (a person would, on Telegram)

    def request_deployment_approval(self, version: str, environment: str,
                                    test_results: dict[str, Any]) -> dict[str, Any]:
        message = f"Deploy {version} to {environment}?"
        metadata = {
            "version": version,
            "environment": environment,
            "tests_passed": test_results.get("passed", 0),
            "tests_failed": test_results.get("failed", 0),
            "code_coverage": test_results.get("coverage", "unknown"),
            "build_time": test_results.get("build_time"),
            "security_scan": test_results.get("security", "unknown")
        }
        options = ["Deploy", "Cancel"]
        if environment == "production":
            options.append("Deploy to Staging First")
        return self.send_request(message, options, metadata)

    def send_request(self, message: str, options: list[str],
                     metadata: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f'{self.base_url}/hitl/request', json={
            "session_id": self.session_id,
            "client_id": self.client_id,
            "message": message,
            "options": options,
            "metadata": metadata
        })
        request_id = response.json()["request_id"]
        self.on_request(request_id)
        return self.wait_for_approval(request_id)

    def wait_for_approval(self, request_id: str) -> dict[str, Any]:
        for _ in range(200):
            poll_resp = requests.get(f'{self.base_url}/hitl/poll?request_id={request_id}')
            status = poll_resp.json()
            if status["completed"]:
                return {
                    "approved": status["approved"],
                    "response": status["response"],
                    "request_id": request_id
                }
            time.sleep(0.02)
        raise TimeoutError(request_id)


@pytest.mark.parametrize(("choice", "approved"), [("Deploy", True), ("Cancel", False),
                                                  ("Deploy to Staging First", False)])
def test_deployment_approver_class(choice: str, approved: bool) -> None:
    register("cicd-pipeline", "github-actions")
    approver = DeploymentApprover(BASE)
    approver.on_request = lambda request_id: answer(request_id, response=choice)
    result = approver.request_deployment_approval(
        version="v2.1.0",
        environment="production",
        test_results={
            "passed": 847,
            "failed": 0,
            "coverage": "94.2%",
            "build_time": "3m 24s",
            "security": "passed"
        }
    )
    printed = []
    if result["approved"]:
        printed.append("Deployment approved, proceeding...")
    else:
        printed.append(f"Deployment denied: {result['response']}")
    assert printed == (["Deployment approved, proceeding..."] if approved
                       else [f"Deployment denied: {choice}"])


def test_trading_and_moderation_options_mean_what_they_say() -> None:
    register("trading-bot", "algo-trader")
    options = ["Execute", "Cancel", "Reduce Size", "Wait for Better Price"]
    created = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "trading-bot", "client_id": "algo-trader",
        "message": "Execute BUY trade?", "options": options}).json()
    assert {o["label"]: o["approved"] for o in created["options"]} == {
        "Execute": True, "Cancel": False, "Reduce Size": False,
        "Wait for Better Price": False}
    register("content-mod", "moderation-ai")
    options = ["Approve", "Remove", "Warn User", "Escalate Further", "Request More Context"]
    created = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "content-mod", "client_id": "moderation-ai",
        "message": "Review flagged content (AI confidence: 72.0%)", "options": options}).json()
    assert [o["label"] for o in created["options"] if o["approved"]] == ["Approve"]


def test_error_handling_snippet() -> None:
    data = {"session_id": "never-registered", "client_id": "x", "message": "m"}
    caught = []
    try:
        response = requests.post(f'{BASE}/hitl/request', json=data)
        response.raise_for_status()
        response.json()
    except requests.exceptions.ConnectionError:
        caught.append("Cannot connect to Loopgate server")
    except requests.exceptions.Timeout:
        caught.append("Request timed out")
    except requests.exceptions.HTTPError as e:
        caught.append(f"HTTP error: {e.response.status_code}")
    except ValueError:
        caught.append("Invalid JSON response")
    assert caught == ["HTTP error: 404"]


def ensure_session_active(session_id: str) -> bool:
    try:
        response = requests.get(f'{BASE}/hitl/status?session_id={session_id}')
        if response.status_code == 404:
            print(f"Session {session_id} not found, re-registering...")
            # Re-register session
            return False
        elif response.status_code == 200:
            session_data = response.json()
            if not session_data.get("active", False):
                print(f"Session {session_id} is inactive")
                return False
        return True
    except Exception as e:
        print(f"Error checking session: {e}")
        return False


def test_status_404_handling() -> None:
    assert ensure_session_active("ghost-session") is False
    register("monitored", "ops")
    assert ensure_session_active("monitored") is True
    requests.post(f'{BASE}/hitl/deactivate', json={"session_id": "monitored"})
    assert ensure_session_active("monitored") is False


def poll_with_timeout(request_id: str, max_wait: float = 300) -> dict[str, Any]:
    start_time = time.time()
    while time.time() - start_time < max_wait:
        try:
            poll_resp = requests.get(f'{BASE}/hitl/poll?request_id={request_id}')
            status = poll_resp.json()
            if status["completed"]:
                return status  # type: ignore[no-any-return]
        except Exception as e:
            print(f"Error polling: {e}")
        time.sleep(0.02)  # the guide's 5 seconds, shortened
    # Cancel request on timeout
    requests.post(f'{BASE}/hitl/cancel', json={"request_id": request_id})
    raise TimeoutError(f"Request {request_id} timed out after {max_wait} seconds")


def test_poll_with_timeout_then_cancel() -> None:
    register("impatient", "bot")
    request_id = requests.post(f'{BASE}/hitl/request', json={
        "session_id": "impatient", "client_id": "bot", "message": "Anyone?"}).json()[
        "request_id"]
    with pytest.raises(TimeoutError, match=r"timed out after 0\.2 seconds"):
        poll_with_timeout(request_id, max_wait=0.2)
    status = requests.get(f'{BASE}/hitl/poll?request_id={request_id}').json()
    assert (status["status"], status["completed"], status["approved"]) == (
        "cancelled", True, False)
    late = requests.post(f'{BASE}/hitl/respond', json={"request_id": request_id,
                                                       "approved": True})
    assert late.status_code == 409
