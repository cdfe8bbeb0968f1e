"""Screenshots of each main console page at 1280x800, for people to look at (not committed).

  python scripts/console_screenshots.py OUT_DIR [--full-page]

Starts the real ``mpi serve`` over TLS on a temporary registry filled as the console's browser
tests fill it (tests/support/console.py: 400 synthetic people at two agencies, one principal
per role, data dictionaries, plus one extract request; the steward also asks the agencies to
verify one item and starts a re-link and a keys export; one person is split and the split-off
key merged into another, so that its page shows a lineage), signs in as each role in headless
Chromium (Debian's ``/usr/bin/chromium``, Decision 83) and writes ``<role>-<page>.png`` to
OUT_DIR. Prints the files written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tests.support.api import A  # noqa: E402
from tests.support.console import ConsoleSite, console_site  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def _request_extract(site: ConsoleSite) -> str:
    body = {"title": "Programs by birth year", "purpose": "Program evaluation",
            "agreement_ref": "DUA-7", "cohort": {"agency": A}, "k": 2,
            "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"},
                           {"agency": A, "dataset": "enrolment", "name": "birth_year"}],
            "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=60)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}
    with site.client("researcher") as c:
        r = c.post("/v1/extracts", json=body)
        r.raise_for_status()
        return str(r.json()["extract_id"])


def _split_and_merge(site: ConsoleSite) -> str:
    """Split a two-record person and merge the split-off key into another person, over the
    API; the surviving key (its lineage has a split and a merge)."""
    with site.client("steward") as c:
        keys = []
        for rec in site.records[A][:60]:
            r = c.get(f"/v1/records/{rec['source_record_id']}", params={"agency": A})
            if r.status_code == 200 and r.json().get("person_key"):
                keys.append(r.json()["person_key"])
        person = next(p for p in (c.get(f"/v1/persons/{k}").json() for k in keys)
                      if len(p["records"]) >= 2)
        recs = person["records"]
        r = c.post(f"/v1/persons/{person['person_key']}/split",
                   json={"groups": [[recs[0]], recs[1:]], "reason": "two people"})
        r.raise_for_status()
        new = r.json()["new_keys"][0]
        other = next(k for k in keys if k not in (person["person_key"], new))
        r = c.post(f"/v1/persons/{new}/merge", json={"person_keys": [other],
                                                     "reason": "one person"})
        r.raise_for_status()
        return str(r.json()["person_key"])


def _sign_in(page: Page, site: ConsoleSite, who: str) -> None:
    page.goto(site.url + "/console/login")
    page.fill("#api_key", site.keys[who])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/console$"))


def main() -> None:
    """Write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--full-page", action="store_true", help="whole pages, not 1280x800")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, console_site(Path(tmp)) as site, \
            sync_playwright() as p:
        xid = _request_extract(site)
        lineage = _split_and_merge(site)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        written = []

        def shoot(page: Page, name: str, path: str) -> None:
            page.goto(site.url + path)
            # charts load lazily: load them all before a (full-page) screenshot
            page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
            page.wait_for_function("() => [...document.images].every(i => i.complete)",
                                   timeout=120_000)
            target = args.out / f"{name}.png"
            page.screenshot(path=str(target), full_page=args.full_page)
            written.append(target)

        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        shoot(ctx.new_page(), "login", "/console/login")
        ctx.close()
        pages = {
            "steward": ["/console", "/console/review", "@item", "@person",
                        f"/console/persons/{lineage}", "/console/persons", "/console/keys",
                        "@keys",
                        "/console/constraints?status=all", "/console/models", "@model",
                        "/console/reports/equity?by=race_ethnicity", f"/console/extracts/{xid}",
                        "@verify", "@relink"],
            A: ["/console/verifications"],
            "approver": ["/console/extracts", f"/console/extracts/{xid}"],
            "researcher": ["/console/datasets", "/console/extracts"],
            "auditor": ["/console/audit", "/console/audit/verify"],
            "admin": ["/console/admin"],
        }
        for who, paths in pages.items():
            ctx = browser.new_context(ignore_https_errors=True,
                                      viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            _sign_in(page, site, who)
            for path in paths:
                if path == "@item":
                    page.goto(site.url + "/console/review")
                    item = re.findall(r'href="/console/review/(\d+)"', page.content())[0]
                    path = f"/console/review/{item}"
                elif path == "@person":
                    person = re.findall(r'href="/console/persons/(pk_[^"]+)"', page.content())[0]
                    path = f"/console/persons/{person}"
                elif path in ("@verify", "@relink", "@keys"):
                    if path == "@keys":
                        page.goto(site.url + "/console/keys")
                        page.click("button:has-text('Start a keys export')")
                        page.wait_for_selector("#job[data-running='false']", timeout=120_000)
                    elif path == "@verify":
                        page.goto(site.url + "/console/review?sort=probability_asc")
                        item = re.findall(r'href="/console/review/(\d+)"', page.content())[0]
                        page.goto(site.url + f"/console/review/{item}")
                        page.click("button:has-text('Ask agencies to verify')")
                    else:
                        page.goto(site.url + "/console/models")
                        page.click("button:has-text('Start a re-link')")
                    page.wait_for_load_state()
                    path = page.url.removeprefix(site.url)
                elif path == "@model":
                    page.goto(site.url + "/console/models")
                    version = re.findall(r'href="/console/models/([^"?/]+)"', page.content())[-1]
                    path = f"/console/models/{version}?impact=1"
                name = re.sub(r"[^a-z0-9]+", "-", path.split("?")[0].removeprefix("/console"))
                shoot(page, f"{who}{name.rstrip('-') or '-home'}", path)
            ctx.close()
        browser.close()
    for f in written:
        print(f)


if __name__ == "__main__":
    main()
