"""The web inbox over real HTTP: sign-in, scope, CSRF, one-time links, decisions, events.

The browser tests (``test_inbox_browser.py``) click through the same pages; these check
the rules a browser cannot easily show: refusals, scope, headers and the event stream.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from loopgate_lc.cli import main
from loopgate_lc.gateway import Loopgate
from loopgate_lc.schema import utcnow
from loopgate_lc.server.inbox import CSP, issue_link
from loopgate_lc.server.tenancy import ApiKey, ApiKeys
from loopgate_lc.stores import open_store
from tests.server.conftest import ServeFn

KEYS = ApiKeys([
    ApiKey("ann", "ann-key-0123456789"),
    ApiKey("eve", "eve-key-0123456789", admin=False, clients=frozenset({"eve-app"})),
])


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def _sign_in(client: httpx.Client, key: str) -> httpx.Response:
    page = client.get("/inbox/signin")
    return client.post("/inbox/signin", data={"csrf": _csrf(page.text), "key": key,
                                              "next": "/inbox/"})


@pytest.fixture
def base(serve: ServeFn) -> str:
    return serve(api_keys=KEYS).url


@pytest.fixture
def ann(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as client:
        assert _sign_in(client, "ann-key-0123456789").status_code == 200
        yield client


def _decide(client: httpx.Client, request_id: str, **fields: str) -> httpx.Response:
    page = client.get(f"/inbox/r/{request_id}")
    return client.post(f"/inbox/r/{request_id}/decide", data={"csrf": _csrf(page.text),
                                                               **fields})


def test_pages_need_a_sign_in_and_a_wrong_key_is_refused(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        first = client.get("/inbox/r/some-id")
        assert first.status_code == 303
        assert first.headers["location"] == "/inbox/signin?next=%2Finbox%2Fr%2Fsome-id"
        refused = _sign_in(client, "not-a-key")
        assert refused.status_code == 403
        assert "that API key is not valid" in refused.text
        assert client.get("/inbox/events").status_code == 401


def test_without_api_keys_the_sign_in_page_names_a_command_that_signs_in_here(
        serve: ServeFn, tmp_path: Path) -> None:
    base = serve().url  # no API keys: only a one-time link signs in
    with httpx.Client(base_url=base, timeout=10) as client:
        page = client.get("/inbox/signin")
    found = re.search(r'<code id="link-command">([^<]+)</code>', page.text)
    assert found, page.text
    command = html.unescape(found.group(1)).replace("NAME", "ann")
    made = subprocess.run(shlex.split(command),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{base}/inbox/link/"), link
    with httpx.Client(timeout=10) as browser:
        shown = browser.get(link)
        assert shown.status_code == 200 and "Sign in as ann" in shown.text


def test_without_api_keys_or_a_shared_store_the_sign_in_page_says_what_would_help(
        serve: ServeFn) -> None:
    with Loopgate("memory://") as alone:  # no other process can make a link for it
        page = httpx.get(f"{serve(alone).url}/inbox/signin", timeout=10).text
    assert "its store is in memory" in page and "LOOPGATE_API_KEYS=name=key" in page
    assert "link-command" not in page


def test_the_sign_in_page_tells_strangers_no_paths_when_the_server_has_api_keys(
        base: str, db_url: str) -> None:
    page = httpx.get(f"{base}/inbox/signin", timeout=10).text
    assert f"inbox-link --as NAME --url {base} --store STORE" in html.unescape(page)
    assert db_url.removeprefix("sqlite:///") not in page
    assert str(Path(sys.executable).parent) not in page


def test_the_cookie_is_http_only_and_strict_and_pages_carry_a_strict_csp(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        response = _sign_in(client, "ann-key-0123456789")
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/inbox" in cookie
        assert "secure" not in cookie  # plain http on loopback; https sets it
        page = client.get("/inbox/")
        assert page.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text and "<script src=\"/inbox/static/inbox.js\"" in page.text


def test_a_key_sees_and_decides_only_inside_its_scope(base: str, gateway: Loopgate) -> None:
    theirs = gateway.submit("Ship eve's build?", kind="approval", client_id="eve-app")
    other = gateway.submit("Drop the ops table?", kind="approval", client_id="ops")
    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as eve:
        _sign_in(eve, "eve-key-0123456789")
        listing = eve.get("/inbox/").text
        assert theirs.id in listing and other.id not in listing
        assert eve.get(f"/inbox/r/{other.id}").status_code == 404
        page = eve.get(f"/inbox/r/{theirs.id}")
        refused = eve.post(f"/inbox/r/{other.id}/decide",
                           data={"csrf": _csrf(page.text), "action": "approve"})
        assert refused.status_code == 404
        assert gateway.get(other.id).pending
        assert _decide(eve, theirs.id, action="approve").status_code == 200
    decided = gateway.get(theirs.id)
    assert (decided.status.value, decided.decided_by, decided.channel) == \
        ("approved", "api:eve", "inbox")


def test_forms_without_a_valid_csrf_token_or_from_another_origin_are_refused(
        ann: httpx.Client, gateway: Loopgate) -> None:
    record = gateway.submit("Restart the API?", kind="approval")
    url = f"/inbox/r/{record.id}/decide"
    assert ann.post(url, data={"action": "approve"}).status_code == 403
    assert ann.post(url, data={"csrf": "forged", "action": "approve"}).status_code == 403
    token = _csrf(ann.get(f"/inbox/r/{record.id}").text)
    cross = ann.post(url, data={"csrf": token, "action": "approve"},
                     headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert gateway.get(record.id).pending
    # the JSON-only rule of the API is untouched: a form posted to /hitl is still refused
    api = ann.post("/hitl/respond", data={"request_id": record.id, "approved": "true"},
                   headers={"Authorization": "Bearer ann-key-0123456789"})
    assert api.status_code == 415
    assert gateway.get(record.id).pending


def test_a_late_click_is_told_who_decided_what_and_when(ann: httpx.Client,
                                                        gateway: Loopgate) -> None:
    record = gateway.submit("Rotate the keys?", kind="approval")
    page = ann.get(f"/inbox/r/{record.id}")
    gateway.respond(record.id, {"type": "reject", "message": "not today"},
                    actor="telegram:42 (@ann)", channel="telegram")
    late = ann.post(f"/inbox/r/{record.id}/decide",
                    data={"csrf": _csrf(page.text), "action": "approve"})
    assert late.status_code == 409
    assert re.search(r"Too late: this request was already rejected by telegram:42 \(@ann\) "
                     r"via telegram at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", late.text)
    assert gateway.get(record.id).status.value == "rejected"


def test_answers_choices_and_reasons_become_the_gateways_decisions(
        ann: httpx.Client, gateway: Loopgate) -> None:
    question = gateway.submit("Which region?", kind="input")
    empty = _decide(ann, question.id, action="respond", message="  ")
    assert empty.status_code == 422 and "write an answer first" in empty.text
    assert _decide(ann, question.id, action="respond", message="eu-west").status_code == 200
    assert gateway.get(question.id).decision["message"] == "eu-west"  # type: ignore[index]

    choice = gateway.submit("Deploy where?", kind="choice",
                            options=["Deploy to staging", "Cancel"])
    page = ann.get(f"/inbox/r/{choice.id}").text
    assert "Deploy to staging" in page and "Cancel" in page
    _decide(ann, choice.id, action="choose", choice="Deploy to staging")
    assert gateway.get(choice.id).status.value == "answered"

    rejected = gateway.submit("Email everyone?", kind="approval")
    _decide(ann, rejected.id, action="reject", message="too <loud>")
    final = gateway.get(rejected.id)
    assert (final.status.value, final.decision["message"]) == ("rejected", "too <loud>")  # type: ignore[index]
    history = ann.get("/inbox/history").text
    assert rejected.id in history and choice.id in history and question.id in history
    trail = ann.get(f"/inbox/r/{rejected.id}").text
    assert "too &lt;loud&gt;" in trail and "too <loud>" not in trail


def test_a_form_the_page_does_not_offer_is_refused_with_the_reason_on_top(
        ann: httpx.Client, gateway: Loopgate) -> None:
    record = gateway.submit("Annotate this", kind="annotation")  # no tool: no editor
    response = _decide(ann, record.id, action="edit", args="{not json")
    assert response.status_code == 422
    assert re.search(r'id="error-form">the arguments are not valid JSON', response.text)
    unknown = _decide(ann, record.id, action="launch")
    assert unknown.status_code == 422 and "unknown action &#39;launch&#39;" in unknown.text
    assert gateway.get(record.id).pending


def _ids(html: str) -> list[str]:
    return re.findall(r'data-request="([^"]+)"', html)


def _next(html: str) -> str | None:
    found = re.search(r'href="([^"]+)" rel="next"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_list_is_newest_first_paged_and_filtered(serve: ServeFn,
                                                     gateway: Loopgate) -> None:
    base = serve(api_keys=KEYS).url
    ids = [gateway.submit(f"Question {n}", kind="input", metadata={"n": n}).id for n in range(23)]
    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as client:
        _sign_in(client, "ann-key-0123456789")
        first = client.get("/inbox/").text
        assert _ids(first) == list(reversed(ids))[:20]
        assert ">20+<" in first  # more follow
        link = _next(first)
        assert link is not None
        second = client.get(link).text
        assert _ids(second) == list(reversed(ids))[20:]
        assert _next(second) is None and 'rel="first"' in second
        assert 'data-request' not in client.get("/inbox/?risk=irreversible").text
        # a cursor outside what the key may see is refused, not followed
        assert client.get("/inbox/?after=no-such-request").status_code == 404


def test_filters_page_in_the_store_with_more_matches_than_a_page(
        serve: ServeFn, gateway: Loopgate) -> None:
    base = serve(api_keys=KEYS).url

    def call(n: int, tool: str, risk: str, session: str) -> str:
        return gateway.submit(f"call {n}", kind="tool_approval", tool_name=tool,
                              args={"n": n}, risk=risk, session_id=session).id

    gateway.register_session("s-a", "app", None)
    gateway.register_session("s-b", "app", None)
    wanted = []
    for n in range(45):
        if n % 3 == 0:
            wanted.append(call(n, "wire_money", "irreversible", "s-a"))
        else:
            call(n, "read_file", "read_only", "s-b" if n % 2 else "s-a")
    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as client:
        _sign_in(client, "ann-key-0123456789")
        seen: list[str] = []
        url: str | None = "/inbox/?tool=wire_money&risk=irreversible&session=s-a"
        for _ in range(5):
            if url is None:
                break
            html = client.get(url).text
            page = _ids(html)
            assert len(page) <= 20
            seen += page
            url = _next(html)
        assert url is None
        assert seen == list(reversed(wanted))  # 15 matches: one page, newest first
        assert _ids(client.get("/inbox/?tool=wire_money&session=s-b").text) == []
        reads = _ids(client.get("/inbox/?tool=read_file&risk=read_only").text)
        assert len(reads) == 20 and wanted[-1] not in reads


def test_a_one_time_link_signs_in_once_and_not_after_it_expires(
        base: str, gateway: Loopgate, db_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPGATE_API_KEYS", "ann=ann-key-0123456789")
    assert main(["inbox-link", "--as", "ann", "--store", db_url, "--url", base]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith(base + "/inbox/link/")
    assert main(["inbox-link", "--as", "nobody", "--store", db_url]) == 2
    assert "no API key is named 'nobody'" in capsys.readouterr().err
    with httpx.Client(timeout=10, follow_redirects=True) as client:
        shown = client.get(url)  # a link preview fetching it does not use it up
        assert shown.status_code == 200 and "Sign in as ann" in shown.text
        again = client.get(url)
        used = client.post(url, data={"csrf": _csrf(again.text)})
        assert used.status_code == 200 and str(used.url) == base + "/inbox/"
        assert "signed in as" in used.text
    with httpx.Client(timeout=10) as stranger:
        replay = stranger.get(url)
        assert replay.status_code == 410 and "already used" in replay.text
    async def stale() -> str:
        async with open_store(db_url) as store:
            return await issue_link(store, "ann", now=utcnow() - timedelta(hours=1))

    token = asyncio.run(stale())
    with httpx.Client(base_url=base, timeout=10) as client:
        expired = client.get(f"/inbox/link/{token}")
        assert expired.status_code == 410 and "expired" in expired.text


def test_the_event_stream_says_who_decided(ann: httpx.Client, gateway: Loopgate) -> None:
    record = gateway.submit("Scale to 10?", kind="approval")
    events: list[str] = []
    with ann.stream("GET", "/inbox/events", params={"request": record.id}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000"
        gateway.respond(record.id, {"type": "approve"}, actor="cli:bob", channel="cli")
        for line in lines:  # bounded: the stream ends after the decided event
            events.append(line)
    data = json.loads(next(e for e in events if e.startswith("data: "))[6:])
    assert "event: decided" in events
    assert (data["status"], data["decided_by"], data["channel"]) == ("approved", "cli:bob",
                                                                      "cli")


def test_a_forged_cookie_or_a_sign_in_without_a_token_gets_nowhere(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        refused = client.post("/inbox/signin", data={"key": "ann-key-0123456789"})
        assert refused.status_code == 403 and "security token" in refused.text
        _sign_in(client, "ann-key-0123456789")
        real = client.cookies["loopgate_inbox"]
        body, _, mac = real.partition(".")
        client.cookies.clear()
        client.cookies.set("loopgate_inbox", body + "x." + mac, path="/inbox")
        assert client.get("/inbox/").status_code == 303


def test_signing_out_ends_the_session(ann: httpx.Client) -> None:
    page = ann.get("/inbox/")
    out = ann.post("/inbox/signout", data={"csrf": _csrf(page.text)})
    assert str(out.url).endswith("/inbox/signin")
    assert ann.get("/inbox/", follow_redirects=False).status_code == 303


def test_an_identity_outside_the_sessions_approvers_is_refused_and_audited(
        ann: httpx.Client, gateway: Loopgate) -> None:
    gateway.register_session("payroll", "hr", None, ["bob"])
    record = gateway.submit("Pay the bonus?", kind="approval", session_id="payroll")
    page = ann.get("/inbox/")
    refused = ann.post(f"/inbox/r/{record.id}/decide",
                       data={"csrf": _csrf(page.text), "action": "approve"})
    assert refused.status_code == 403
    assert "api:ann is not an approver" in refused.text
    assert gateway.get(record.id).pending
    event = gateway.audit(request_id=record.id)[-1]
    assert (event.event, event.actor, event.channel) == ("unauthorized", "api:ann", "inbox")


def test_the_inbox_lists_only_what_the_identity_may_decide(
        ann: httpx.Client, gateway: Loopgate) -> None:
    gateway.register_session("payroll", "hr", None, ["bob"])
    gateway.register_session("team", "hr", None, ["ann", "bob"])
    theirs = gateway.submit("Pay the bonus?", kind="approval", session_id="payroll")
    ours = gateway.submit("Order lunch?", kind="approval", session_id="team")
    open_to_all = gateway.submit("Anyone?", kind="approval")
    listed = _ids(ann.get("/inbox/").text)
    assert ours.id in listed and open_to_all.id in listed
    assert theirs.id not in listed
    page = ann.get(f"/inbox/r/{theirs.id}")
    assert page.status_code == 403
    assert "names its approvers, and ann is not one of them" in page.text
    assert 'name="action"' not in page.text
    assert ann.get(f"/inbox/events?request={theirs.id}").status_code == 403
    # and once decided by its approver, it stays out of ann's history too
    gateway.respond(theirs.id, {"type": "approve"}, actor="bob", approver_id="bob")
    gateway.respond(ours.id, {"type": "approve"}, actor="bob", approver_id="bob")
    history = _ids(ann.get("/inbox/history").text)
    assert ours.id in history and theirs.id not in history


def test_a_page_reads_a_bounded_share_of_requests_one_may_not_decide(
        ann: httpx.Client, gateway: Loopgate) -> None:
    gateway.register_session("payroll", "hr", None, ["bob"])
    mine = [gateway.submit(f"Mine {n}?", kind="approval").id for n in range(3)]
    for n in range(230):  # newer than mine, and none of them ann's to decide
        gateway.submit(f"Bonus {n}?", kind="approval", session_id="payroll")
    first = ann.get("/inbox/").text
    assert _ids(first) == []  # ten batches read, none of them ann's: a short page ...
    seen: list[str] = []
    url = _next(first)
    assert url is not None  # ... that says where to go on from
    for _ in range(5):
        html = ann.get(url).text
        seen += _ids(html)
        url = _next(html)
        if url is None:
            break
    assert seen == list(reversed(mine))


def test_a_vote_under_a_quorum_shows_the_count_and_counts_once(
        ann: httpx.Client, gateway: Loopgate) -> None:
    from loopgate_lc.policy import ApprovalPolicy

    gateway.add_policy(ApprovalPolicy("two", "release", require_explicit=True, quorum=2))
    gateway.register_session("releases", "ci", None, ["ann", "bob"])
    record = gateway.submit("Release?", session_id="releases", tool_name="release",
                            risk="irreversible", confidence=1.0)
    counted = _decide(ann, record.id, action="approve")
    assert counted.status_code == 200
    assert re.search(r'id="votes">Approvals: 1 of 2<', counted.text)
    again = _decide(ann, record.id, action="approve")
    assert again.status_code == 400
    assert "already voted approve" in again.text
    assert len(gateway.get(record.id).votes) == 1
    decided = gateway.respond(record.id, {"type": "approve"}, actor="bob", approver_id="bob")
    assert decided.decided_by == "api:ann, bob"
