"""The console's sign-in, session cookie, CSRF checks, idle timeout and role refusals, through
the real app (``TestClient`` over https://testserver so that Secure cookies travel).

Owns: what a browser-less client sees of api/console/session.py and guard.py: the cookie's
attributes, 403 for a form without the session's token, 401 (the sign-in page) for no, an idle
or a revoked session, 403 (audited) for another role's page, API-key callers served without a
cookie, and the console's response headers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.console.session import SessionStore
from tests.support.api import World, build_world, close_world
from tests.support.console import browser, sign_in


def test_sign_in_sets_a_strict_session_cookie(world: World) -> None:
    c = browser(world)
    r = c.get("/console/login")
    login_cookie = r.headers["set-cookie"].lower()
    for attr in ("httponly", "secure", "samesite=strict", "path=/console"):
        assert attr in login_cookie
    form = re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    r = c.post("/console/login", data={"login_token": form, "api_key": world.keys["steward"]},
               follow_redirects=False)
    session_cookie = r.headers["set-cookie"].lower()
    for attr in ("mpi_console=", "httponly", "secure", "samesite=strict", "path=/console"):
        assert attr in session_cookie
    assert world.keys["steward"] not in r.text and world.keys["steward"] not in session_cookie
    page = c.get("/console/review")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    actions = [(e["principal"], e["action"]) for e in world.audit()]
    assert (world.ids["steward"], "console.login") in actions
    assert (world.ids["steward"], "review.list") in actions  # the page used the audited use case


def test_sign_in_refusals(world: World) -> None:
    c = browser(world)
    r = c.post("/console/login", data={"api_key": world.keys["steward"]})
    assert r.status_code == 403 and "sign-in form expired" in r.text  # no double-submit token
    token = re.search(r'name="login_token" value="([^"]+)"',
                      c.get("/console/login").text).group(1)  # type: ignore[union-attr]
    r = c.post("/console/login", data={"login_token": token, "api_key": "mpi_wrong"})
    assert r.status_code == 401 and "Unknown or revoked API key" in r.text
    assert "mpi_wrong" not in r.text
    denied = [e for e in world.audit() if e["action"] == "auth" and e["outcome"] == "denied"]
    assert denied and denied[-1]["principal"] == "unauthenticated"
    r = c.get("/console/review")
    assert r.status_code == 401 and 'id="api_key"' in r.text  # the sign-in page


def test_forms_need_the_session_token(world: World) -> None:
    c = browser(world)
    csrf = sign_in(c, world.keys["admin"])
    r = c.post("/console/admin/agencies", data={"agency": "agency_c"})
    assert r.status_code == 403 and "security token" in r.text
    r = c.post("/console/admin/agencies", data={"agency": "agency_c", "csrf": csrf + "x"})
    assert r.status_code == 403
    listed = world.client.get("/v1/agencies", headers=world.h("admin")).json()["agencies"]
    assert "agency_c" not in {a["agency"] for a in listed}
    r = c.post("/console/admin/agencies", data={"agency": "agency_c", "csrf": csrf},
               follow_redirects=False)
    assert r.status_code == 303
    refusals = [e for e in world.audit() if e["action"] == "auth"
                and (e.get("detail") or "").find("csrf") >= 0]
    assert len(refusals) == 2 and all(e["principal"] == world.ids["admin"] for e in refusals)
    events = [e for e in world.audit() if e["action"] == "agencies.create"]
    assert [e["principal"] for e in events][-1] == world.ids["admin"]


def test_another_roles_session_is_refused_and_audited(world: World) -> None:
    c = browser(world)
    csrf = sign_in(c, world.keys["researcher"])
    for path in ("/console/review", "/console/admin", "/console/audit", "/console/models"):
        r = c.get(path)
        assert r.status_code == 403 and "may not use this page" in r.text, path
    r = c.post("/console/admin/principals/p_x/revoke", data={"csrf": csrf})
    assert r.status_code == 403
    denied = [e for e in world.audit() if e["action"] == "auth" and e["outcome"] == "denied"]
    assert {e["principal"] for e in denied} == {world.ids["researcher"]}
    assert c.get("/console/datasets").status_code == 200


def test_logout_and_revocation_end_the_session(world: World) -> None:
    c = browser(world)
    csrf = sign_in(c, world.keys["auditor"])
    assert c.get("/console/audit").status_code == 200
    r = c.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert c.get("/console/audit").status_code == 401
    c2 = browser(world)
    sign_in(c2, world.keys["auditor"])
    r = world.client.post(f"/v1/principals/{world.ids['auditor']}/revoke", headers=world.h("admin"))
    assert r.status_code == 200
    r = c2.get("/console/audit")
    assert r.status_code == 401 and "revoked or rotated" in r.text


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path, console_idle_minutes=0.005)  # 0.3 s
    yield w
    close_world(w)


def test_idle_sessions_end(quick: World) -> None:
    c = browser(quick)
    sign_in(c, quick.keys["steward"])
    assert c.get("/console/review").status_code == 200
    time.sleep(0.4)
    r = c.get("/console/review")
    assert r.status_code == 401 and "idle" in r.text


def test_session_store_expires_and_bounds() -> None:
    now = [0.0]
    store = SessionStore(10.0, clock=lambda: now[0])
    s = store.open("p_1", "mpi_k")
    assert store.get(s.session_id) is s and store.get("nope") is None and store.get(None) is None
    now[0] = 9.0
    assert store.get(s.session_id) is s  # touching restarts the idle clock
    now[0] = 18.0
    assert store.get(s.session_id) is s
    now[0] = 28.5
    assert store.get(s.session_id) is None and store.count() == 0
    assert "mpi_k" not in repr(s)


def test_api_key_callers_need_no_cookie(world: World) -> None:
    r = world.client.get("/console/review", headers=world.h("steward"))
    assert r.status_code == 200 and "Review queue" in r.text
    r = world.client.get("/console/review", headers=world.h("auditor"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = world.client.post("/console/admin/agencies", data={"agency": "agency_k"},
                          headers=world.h("admin"), follow_redirects=False)
    assert r.status_code == 303


def test_static_css_is_local(world: World) -> None:
    c = browser(world)
    page = c.get("/console/login").text
    assert "http://" not in page and "https://" not in page.replace("https://testserver", "")
    css = c.get("/console/static/console.css")
    assert css.status_code == 200 and ":focus-visible" in css.text


def _labelled(html: str) -> list[str]:
    """Ids of visible form controls without a ``<label for=...>`` (should be empty)."""
    ids = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', html)
    labels = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    bare = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")(?![^>]*\bid=)[^>]*>', html)
    return [i for i in ids if i not in labels] + bare


def test_every_page_renders_with_landmarks_and_labels(world: World) -> None:
    from api.policy import POLICY, PUBLIC
    pages = [k.split(" ", 1)[1] for k in POLICY
             if k.startswith("GET /console") and "{" not in k]
    assert len(pages) >= 10
    clients: dict[str, TestClient] = {}
    for path in pages:
        roles = POLICY[f"GET {path}"]
        who = "steward" if "steward" in roles or roles == PUBLIC else sorted(roles)[0]
        who = {"agency": "agency_a"}.get(who, who)
        if who not in clients:
            clients[who] = browser(world)
            sign_in(clients[who], world.keys[who])
        c = clients[who] if roles != PUBLIC else browser(world)
        r = c.get(path + ("?by=race_ethnicity" if path.endswith("equity") else ""))
        assert r.status_code in (200, 422), (path, r.status_code)
        html = r.text
        assert html.count("<h1") == 1 and 'href="#main"' in html and '<main id="main"' in html
        title = re.search(r"<title>(.*?)</title>", html, re.S)
        assert title and "<" not in title.group(1), (path, title and title.group(1)[:80])
        assert '<nav aria-label=' in html or roles == PUBLIC, path
        assert _labelled(html) == [], (path, _labelled(html))
        assert "<script" not in html and "style=" not in html  # CSP: nothing inline


def test_names_are_escaped(world: World) -> None:
    c = browser(world)
    csrf = sign_in(c, world.keys["admin"])
    r = c.post("/console/admin/principals", data={
        "csrf": csrf, "name": "<script>alert(1)</script>", "role": "researcher",
        "human_email": "x@example.org"})
    assert r.status_code == 201 and "shown this once" in r.text
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;alert(1)" in r.text
    r = c.post("/console/admin/principals", data={"csrf": csrf, "name": "y", "role": "nobody"})
    assert r.status_code == 422 and "role" in r.text  # the domain's problem, field named
