"""The console in headless Chromium (Debian's package) against a real ``mpi serve`` over TLS.

Each role's main journey through the pages a human uses: the steward decides three review
items, merges two persons, is told which constraint blocks a split, revokes it and splits,
and sees both in the person's lineage drawing; exports the keys and downloads them;
the researcher is shown what is wrong with a request, then requests, and downloads once the
agency approver and the steward approved; the auditor filters the log and verifies the chain;
the admin creates a principal (key shown once) and revokes it. A forged form (no or a wrong
CSRF token) and a session of another role are refused. axe-core finds no serious or critical
violation on any page visited.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import A
from tests.support.console import ConsoleSite, console_site

pytestmark = pytest.mark.integration  # a real server and a real browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); "
                "apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")

BAD_IMPACTS = {"serious", "critical"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with console_site(tmp_path_factory.mktemp("console")) as s:
        yield s


@pytest.fixture(scope="module")
def browser(site: ConsoleSite) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox"])
        yield b
        b.close()


class Human:
    """One person in their own browser context, checking each page with axe."""

    def __init__(self, browser: Any, site: ConsoleSite, who: str, findings: list[str]) -> None:
        self.context = browser.new_context(ignore_https_errors=True, accept_downloads=True,
                                           viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.site, self.who, self.findings = site, who, findings
        self.axe = axe_sync.Axe()

    def check(self) -> None:
        """Run axe-core on the current page; keep serious and critical violations."""
        results = self.axe.run(self.page)
        for v in results.response["violations"]:
            if v.get("impact") in BAD_IMPACTS:
                nodes = [n.get("target") for n in v.get("nodes", [])][:3]
                self.findings.append(f"{self.page.url}: {v['id']} ({v['impact']}) {nodes}")

    def go(self, path: str) -> Any:
        response = self.page.goto(self.site.url + path)
        self.check()
        return response

    def sign_in(self, key: str | None = None) -> None:
        self.go("/console/login")
        self.page.fill("#api_key", key or self.site.keys[self.who])
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_url(re.compile(r"/console$"))
        self.check()

    def submit(self, selector: str) -> None:
        with self.page.expect_navigation():
            self.page.click(selector)
        self.check()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def findings() -> Iterator[list[str]]:
    found: list[str] = []
    yield found
    assert not found, "axe-core found serious or critical violations:\n" + "\n".join(found)


def _item_ids(page: Any) -> list[str]:
    return re.findall(r'href="/console/review/(\d+)"', page.content())


def _person_of(h: Human, agency: str, sid: str) -> str:
    h.go("/console/persons")
    h.page.fill("#agency", agency)
    h.page.fill("#source_record_id", sid)
    h.submit("button:has-text('Find')")
    m = re.search(r"/console/persons/(pk_[A-Za-z0-9_-]+)", h.page.url)
    assert m, h.page.content()[:2000]
    return m.group(1)


def test_steward_decides_merges_and_splits(browser: Any, site: ConsoleSite,
                                           findings: list[str]) -> None:
    h = Human(browser, site, "steward", findings)
    h.sign_in()
    for page in ("/console/review?status=all", "/console/constraints", "/console/models",
                 "/console/reports/equity?by=race_ethnicity", "/console/extracts"):
        assert h.go(page).status == 200, page
    # Three decisions from the queue (highest probability first), each with a reason.
    decided = []
    for decision in ("defer", "non_match", "match"):
        h.go("/console/review")
        ids = [i for i in _item_ids(h.page) if i not in decided]
        assert ids, "the queue is empty"
        h.page.click(f"a[href='/console/review/{ids[0]}']")
        h.page.wait_for_url(re.compile(rf"/console/review/{ids[0]}$"))
        h.check()
        assert "Per-field explanation" in h.page.content()
        h.page.check(f"#d-{decision}")
        h.page.fill("#reason", f"console test: {decision}")
        h.submit("button:has-text('Record decision')")
        assert f"Item {ids[0]} decided" in h.page.content(), h.page.content()[:3000]
        decided.append(ids[0])
    # Merge two persons found by their source records.
    recs = site.records[A]
    first = _person_of(h, A, recs[0]["source_record_id"])
    second = next(k for k in (_person_of(h, A, r["source_record_id"]) for r in recs[1:6])
                  if k != first)
    h.go(f"/console/persons/{first}")
    h.page.fill("#merge-keys", second)
    h.page.fill("#merge-reason", "one person, two keys")
    h.submit("button:has-text('Merge')")
    assert "Merged:" in h.page.content()
    merged = re.search(r"/console/persons/(pk_[A-Za-z0-9_-]+)", h.page.url).group(1)  # type: ignore[union-attr]
    # Splitting across the merge's must-links is refused, and the page says why.
    h.page.select_option("#group_0", "2")
    h.page.fill("#split-reason", "two people after all")
    h.submit("button:has-text('Split')")
    assert "must" in h.page.content().lower() and 'role="alert"' in h.page.content()
    # Revoke the merge's constraints, then the split goes through.
    h.go("/console/constraints?kind=must_link")
    while (row := h.page.locator("tr", has_text="merge").filter(
            has=h.page.locator("button:has-text('Revoke')"))).count():
        row.first.locator("input[name=reason]").fill("merged in error")
        with h.page.expect_navigation():
            row.first.locator("button:has-text('Revoke')").click()
        assert "revoked" in h.page.content()
    h.check()
    h.go(f"/console/persons/{merged}")
    h.page.select_option("#group_0", "2")
    h.page.fill("#split-reason", "two people after all")
    h.submit("button:has-text('Split')")
    assert "Split: new key(s)" in h.page.content(), h.page.content()[:3000]
    # The person page draws the lineage (inline SVG, checked by axe in ``submit``): the merge
    # into this key and the split out of it, each also listed in words.
    events = h.page.locator("ol.lineage-list li").all_inner_texts()
    assert any("was merged into" in e for e in events), events
    assert any("had records split off into" in e for e in events), events
    assert h.page.locator("svg.lineage-svg g.edge title").count() == len(events)
    # A decided item can be reopened.
    h.go(f"/console/review/{decided[1]}")
    h.page.fill("#reopen-reason", "second look")
    h.submit("button:has-text('Reopen item')")
    assert "Item reopened." in h.page.content(), h.page.content()[:3000]
    # The revoked constraints take effect at a re-link, run as a job with progress.
    h.go("/console/constraints")
    h.submit("button:has-text('Re-link the registry now')")
    assert re.search(r"/console/jobs/[\w-]+$", h.page.url), h.page.url
    h.page.wait_for_selector("#job[data-running='false']", timeout=120_000)  # updated in place
    assert "State</dt><dd>completed" in h.page.content(), h.page.content()[:3000]
    h.check()
    h.close()
    with site.client("auditor") as c:
        events = c.get("/v1/audit", params={"limit": 1000}).json()["events"]
    mine = {e["action"] for e in events if e["principal"] == site.ids["steward"]}
    assert {"console.login", "review.decide", "persons.merge", "persons.split",
            "constraints.revoke", "review.reopen"} <= mine


def test_steward_exports_keys_and_downloads_them(browser: Any, site: ConsoleSite,
                                                 findings: list[str]) -> None:
    h = Human(browser, site, "steward", findings)
    h.sign_in()
    h.go("/console/keys")
    h.submit("button:has-text('Start a keys export')")
    assert re.search(r"/console/jobs/job_\w+$", h.page.url), h.page.url
    h.page.wait_for_selector("#job[data-running='false']", timeout=120_000)
    link = h.page.locator("a:has-text('Download the keys')")
    h.page.wait_for_selector("a:has-text('Download the keys')", timeout=10_000)
    h.check()
    with h.page.expect_download() as got:
        link.click()
    rows = list(csv.reader(io.StringIO(Path(got.value.path()).read_text())))
    assert rows[0] == ["agency", "source_record_id", "person_key"]
    assert len(rows) > len(site.records[A])
    h.close()


def test_steward_trains_a_candidate_and_previews_its_impact(browser: Any, site: ConsoleSite,
                                                             findings: list[str]) -> None:
    h = Human(browser, site, "steward", findings)
    h.sign_in()
    h.go("/console/models")
    h.page.fill("#t-name", "console")
    h.submit("button:has-text('Start training')")
    h.page.wait_for_selector("#job[data-running='false']", timeout=180_000)
    assert "State</dt><dd>completed" in h.page.content(), h.page.content()[:3000]
    version = re.search(r"version: (console-v\d+)", h.page.content())
    assert version, h.page.content()[:3000]
    h.check()
    h.go(f"/console/models/{version.group(1)}")
    chart = h.page.locator("img[alt^='match weights']")
    chart.scroll_into_view_if_needed()  # loading="lazy"
    h.page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=chart.element_handle(),
                             timeout=60_000)
    h.page.click("a:has-text('Preview the impact')")
    h.page.wait_for_selector("#confirm")
    h.check()
    assert "records changing key" in h.page.content()
    h.close()


def test_steward_asks_the_agencies_to_verify(browser: Any, site: ConsoleSite,
                                             findings: list[str]) -> None:
    s = Human(browser, site, "steward", findings)
    s.sign_in()
    s.go("/console/review?sort=probability_asc")
    item = _item_ids(s.page)[0]
    s.go(f"/console/review/{item}")
    s.page.fill("#question", "Same person? Please check the birth dates.")
    s.submit("button:has-text('Ask agencies to verify')")
    assert "Verification requested" in s.page.content(), s.page.content()[:3000]
    assert s.page.locator("td", has_text="Please check the birth dates").count() >= 1
    agencies = sorted(set(re.findall(r"<td>(agency_[ab])</td>", s.page.content())))
    assert agencies
    for agency in agencies:
        a = Human(browser, site, agency, findings)
        a.sign_in()
        a.go("/console/verifications?status=open")
        row = a.page.locator("tr", has_text="Please check the birth dates").first
        row.locator("input[value=different]").check()
        row.locator("input[name=note]").fill("birth dates differ")
        with a.page.expect_navigation():
            row.locator("button:has-text('Answer')").click()
        a.check()
        assert "answered." in a.page.content()
        a.close()
    s.go(f"/console/review/{item}")
    assert s.page.locator("td", has_text="birth dates differ").count() == len(agencies)
    s.close()


def test_researcher_requests_approver_approves_researcher_downloads(
        browser: Any, site: ConsoleSite, findings: list[str], tmp_path: Path) -> None:
    r = Human(browser, site, "researcher", findings)
    r.sign_in()
    r.go("/console/datasets")
    r.page.check(f"input[value='{A}/enrolment/program']")
    r.submit("button:has-text('Submit request')")  # nothing else filled: every field named
    text = r.page.content()
    assert "not submitted" in text and "title" in text and "cohort_agency" in text
    r.page.check(f"input[value='{A}/enrolment/birth_year']")
    r.page.fill("#title", "Programs by birth year")
    r.page.fill("#purpose", "Program evaluation")
    r.page.fill("#agreement_ref", "DUA-7")
    r.page.select_option("#cohort_agency", A)
    r.page.fill("#k", "2")
    r.submit("button:has-text('Submit request')")
    assert "Request submitted" in r.page.content(), r.page.content()[:3000]
    xid = r.page.url.rsplit("/", 1)[-1].split("?")[0]
    for who in ("approver", "steward"):
        h = Human(browser, site, who, findings)
        h.sign_in()
        h.go("/console/extracts")
        h.page.click(f"a[href='/console/extracts/{xid}']")
        h.page.wait_for_url(re.compile(xid))
        h.check()
        assert "Program code." in h.page.content()  # the dictionary entry is shown
        h.page.check("#x-approve")
        h.page.fill("#x-reason", "agreement in place")
        h.submit("button:has-text('Record decision')")
        assert "Recorded: approve" in h.page.content()
        h.close()
    deadline = time.monotonic() + 90
    while "Download the signed package" not in r.page.content():
        assert time.monotonic() < deadline, r.page.content()[:3000]
        time.sleep(0.5)
        r.go(f"/console/extracts/{xid}")
    with r.page.expect_download() as info:
        r.page.click("a:has-text('Download the signed package')")
    target = tmp_path / "package.zip"
    info.value.save_as(target)
    assert target.stat().st_size > 0 and target.read_bytes()[:2] == b"PK"
    r.go(f"/console/extracts/{xid}")
    assert "1 of" in r.page.content()
    r.close()


def test_auditor_verifies_the_chain(browser: Any, site: ConsoleSite,
                                    findings: list[str]) -> None:
    h = Human(browser, site, "auditor", findings)
    h.sign_in()
    h.go("/console/audit")
    h.page.fill("#au-action", "console.login")
    h.submit("button:has-text('Apply')")
    assert h.page.locator("tbody tr", has_text="console.login").count() >= 1
    h.page.click("a:has-text('Verify the hash chain')")
    h.page.wait_for_url(re.compile(r"/console/audit/verify$"))
    h.check()
    assert "Chain intact" in h.page.content()
    h.close()


def test_admin_creates_and_revokes_a_principal(browser: Any, site: ConsoleSite,
                                               findings: list[str]) -> None:
    h = Human(browser, site, "admin", findings)
    h.sign_in()
    h.go("/console/admin")
    h.page.fill("#np-name", "new analyst")
    h.page.fill("#np-email", "new.analyst@example.org")
    h.page.select_option("#np-role", "researcher")
    h.submit("button:has-text('Create principal')")
    key = h.page.input_value("#new-key")
    assert key.startswith("mpi_") and "shown this once" in h.page.content()
    h.go("/console/admin")
    assert key not in h.page.content()  # shown once only
    h.submit("button[aria-label='Revoke new analyst']")
    assert "revoked." in h.page.content()
    h.close()
    gone = Human(browser, site, "researcher", findings)
    gone.go("/console/login")
    gone.page.fill("#api_key", key)
    gone.submit("button:has-text('Sign in')")
    assert "Unknown or revoked API key" in gone.page.content()
    gone.close()


def test_forged_forms_and_other_roles_are_refused(browser: Any, site: ConsoleSite,
                                                  findings: list[str]) -> None:
    s = Human(browser, site, "steward", findings)
    s.sign_in()
    s.go("/console/review")
    item = _item_ids(s.page)[0]
    for form in ({"decision": "defer", "reason": "forged"},
                 {"decision": "defer", "reason": "forged", "csrf": "not-the-token"}):
        r = s.page.request.post(f"{site.url}/console/review/{item}/decision", form=form,
                                max_redirects=0)
        assert r.status == 403 and "security token" in r.text()
    s.go(f"/console/review/{item}")
    assert "forged" not in s.page.content()
    s.close()
    r = Human(browser, site, "researcher", findings)
    r.sign_in()
    for path in ("/console/review", "/console/admin", "/console/audit"):
        response = r.go(path)
        assert response.status == 403 and "may not use this page" in r.page.content()
    response = r.page.request.post(f"{site.url}/console/admin/agencies",
                                   form={"agency": "x", "csrf": "whatever"})
    assert response.status == 403
    r.close()
    with site.client("auditor") as c:
        events = c.get("/v1/audit", params={"limit": 1000, "after": 0}).json()["events"]
    denied = [e for e in events if e["action"] == "auth" and e["outcome"] == "denied"]
    assert any(e["principal"] == site.ids["steward"] for e in denied)
    assert any(e["principal"] == site.ids["researcher"] for e in denied)
