#!/usr/bin/env python3
"""The portal in headless Chromium (Debian's, driven by Playwright), as a person uses it.

Starts the given kaifang binary on the embedded demo and checks:
- the catalog lists the open datasets and never the non-open one; search and each filter
  narrow it as the API does; stale entries are marked;
- each open type's dataset page: metadata and fields (sensitive ones marked); the preview of an
  unconditional dataset shows the rows the API's preview answers, cell for cell; a download
  link fetches the same bytes as the API; the conditional one shows no rows without a key;
- a non-open dataset's page answers as an unknown id's does (status and text);
- an objection filed anonymously with a contact reaches the API;
- the language switch (Chinese, English) holds across pages;
- the API page lists every operation of the data API's OpenAPI document;
- with keys entered on the account page (kept in sessionStorage, no cookie): a user applies on a
  conditional dataset's page; its owner sees the application with its due date and approves it
  with a mask and a row filter; the user sees the agreement, reports its use, and the preview
  shows the masked rows in scope, as the API answers them; a rejection without a reason is
  refused and changes nothing, one with a reason is shown to the user; the owner answers an
  anonymous objection, drafts a new entry that an operator's key publishes, withdraws a dataset
  and reopens it; a misuse report is filed from a dataset's page;
- axe-core finds no serious or critical accessibility violation on any page.
Screenshots of every page at 1280x800 and 390x844 go to the folder given (default
`portal-screenshots` in the working directory).

Usage: portal_chromium.py PATH_TO_KAIFANG [SCREENSHOT_DIR]. Exits non-zero on the first failure.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

from demo_gateway import start_listeners

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def fetch(url, method="GET", body=None, key=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def api(base, path, key=None, method="GET", body=None, want=200):
    status, _, answer = fetch(base + path, method, body, key)
    check(status == want, f"{method} {path}: {status} {answer[:300]!r}")
    return json.loads(answer)


class Portal:
    def __init__(self, browser, base, flight, shots):
        self.browser, self.base, self.flight, self.shots = browser, base, flight, shots
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # A 404 the page asked for (a dataset that is not there) is logged by the browser itself.
        self.page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                     and self.errors.append(m.text))
        self.axe = Axe()

    def open(self, path):
        response = self.page.goto(self.base + path)
        self.page.wait_for_selector("main[data-ready=true]")
        return response

    def submit(self, button):
        """Clicks a button that loads another page, and waits for that page."""
        with self.page.expect_navigation():
            self.page.click(button)
        self.page.wait_for_selector("main[data-ready=true]")

    def audit(self, name):
        """Screenshots at both sizes and an accessibility scan of the page as it is."""
        for size, (width, height) in SIZES.items():
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=os.path.join(self.shots, f"{name}-{size}.png"), full_page=True)
            results = self.axe.run(self.page)
            bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
            check(not bad, f"{name} at {size}: " + "; ".join(
                f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in bad))
        self.page.set_viewport_size({"width": 1280, "height": 800})
        check(not self.errors, f"{name}: the page logged errors: {self.errors}")

    def listed(self):
        return self.page.eval_on_selector_all("li.card", "cards => cards.map(c => c.dataset.dataset)")


def check_catalog(portal, base):
    everything = api(base, "/v1/catalog?per_page=100")
    expected = sorted(d["id"] for d in everything["datasets"])
    portal.open("/")
    check(sorted(portal.listed()) == expected, f"catalog: {portal.listed()} vs the API's {expected}")
    check("subsistence-allowance" not in portal.listed(), "the non-open dataset is not listed")
    check(portal.page.locator("h1").inner_text() == "数据目录", "the catalog opens in Chinese")
    stale = [d["id"] for d in everything["datasets"] if d["stale"]]
    marked = portal.page.eval_on_selector_all("li.card:has(.badge.stale)", "cs => cs.map(c => c.dataset.dataset)")
    check(sorted(marked) == sorted(stale), f"stale marks: {marked} vs the API's {stale}")
    portal.audit("catalog")

    portal.page.fill("input[name=q]", "air")
    portal.submit("form.search button[type=submit]")
    check(portal.listed() == ["air-quality"], f"search 'air': {portal.listed()}")

    for facet, value in [("open_type", "conditional"), ("format", "csv"), ("update_frequency", "hourly"),
                         ("owner", everything["datasets"][0]["owner"])]:
        portal.open("/")
        portal.page.select_option(f"select[name={facet}]", value)
        portal.submit("form.search button[type=submit]")
        want = sorted(d["id"] for d in api(base, "/v1/catalog?" + urllib.parse.urlencode({facet: value}))["datasets"])
        check(want and sorted(portal.listed()) == want, f"filter {facet}={value}: {portal.listed()} vs {want}")
    print(f"catalog: {len(expected)} datasets listed, search and the four filters as the API answers")


def check_unconditional(portal, base):
    response = portal.open("/datasets/air-quality")
    check(response.status == 200, f"dataset page: {response.status}")
    dataset = api(base, "/v1/datasets/air-quality")
    check(portal.page.locator("h1").inner_text() == dataset["title"], "the dataset's title")
    fields = portal.page.eval_on_selector_all("tr[data-field]", "rows => rows.map(r => r.dataset.field)")
    check(fields == [f["name"] for f in dataset["fields"]], f"fields: {fields}")
    answer = api(base, "/v1/datasets/air-quality/preview")
    preview = answer["rows"]
    columns = portal.page.eval_on_selector_all("#preview thead th", "ths => ths.map(t => t.textContent)")
    check(columns == answer["columns"], f"preview columns: {columns} vs the API's {answer['columns']}")
    cells = portal.page.eval_on_selector_all("#preview tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    want = [["" if row[c] is None else (json.dumps(row[c]) if isinstance(row[c], bool) else str(row[c])) for c in columns]
            for row in preview]
    check(len(cells) == len(preview) > 0, f"preview rows: {len(cells)} vs {len(preview)}")
    for shown, expected in zip(cells, want):
        for a, b in zip(shown, expected):
            same = a == b or (a and b and _numbers_equal(a, b))
            check(same, f"preview cell {a!r} vs the API's {b!r}")
    link = portal.page.locator("ul.downloads a").first.get_attribute("href")
    with portal.page.expect_download() as download:
        portal.page.click(f"ul.downloads a[href='{link}']")
    got = open(download.value.path(), "rb").read()
    _, _, original = fetch(base + "/v1/datasets/air-quality/download")
    check(got == original, f"download link: {len(got)} bytes vs {len(original)}")
    portal.page.click("button[data-snippet=DuckDB]")
    code = portal.page.locator("#snippet-panel code").inner_text()
    check(f"{base}/v1/datasets/air-quality/rows.csv" in code, f"DuckDB snippet: {code}")
    portal.page.click("button[data-snippet='pyarrow.flight']")
    code = portal.page.locator("#snippet-panel code").inner_text()
    check(f"grpc://{portal.flight}" in code and 'for_path("air-quality")' in code, f"pyarrow.flight snippet: {code}")
    portal.audit("dataset-unconditional")
    print(f"unconditional dataset page: {len(fields)} fields, {len(cells)} preview rows equal to the API's, download equal")


def _numbers_equal(a, b):
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def check_conditional(portal, base):
    response = portal.open("/datasets/enterprises")
    check(response.status == 200, f"conditional page: {response.status}")
    check(portal.page.locator("#preview").count() == 0, "no rows of conditional data without a key")
    personal = portal.page.eval_on_selector_all("tr[data-field]:has(.badge.personal)", "rows => rows.map(r => r.dataset.field)")
    want = [f["name"] for f in api(base, "/v1/datasets/enterprises")["fields"] if f["sensitivity"] == "personal"]
    check(personal == want and want, f"sensitive fields marked: {personal} vs {want}")
    portal.audit("dataset-conditional")
    print(f"conditional dataset page: no rows without a key, personal fields marked {personal}")


RUN_SNIPPET = {
    "curl": lambda code: ["bash", "-c", code],
    "pandas": lambda code: [sys.executable, "-c", code + "\nprint(len(df))"],
    "polars": lambda code: [sys.executable, "-c", code + "\nprint(len(df))"],
    "pyarrow.flight": lambda code: [sys.executable, "-c", code + "\nprint(table.num_rows)"],
    "ADBC": lambda code: [sys.executable, "-c", code + "\nprint(table.num_rows)"],
}


def check_snippets(portal, key):
    """Every code example but DuckDB's (which needs its extension fetched) is run as shown,
    with the demo user's key in KAIFANG_KEY, and must read rows."""
    for dataset in ["air-quality", "enterprises"]:
        portal.open(f"/datasets/{dataset}")
        for name, command in RUN_SNIPPET.items():
            portal.page.click(f"button[data-snippet='{name}']")
            code = portal.page.locator("#snippet-panel code").inner_text()
            run = subprocess.run(command(code), capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "KAIFANG_KEY": key})
            check(run.returncode == 0, f"{dataset}, {name}: {run.stderr[-2000:]}\n{code}")
            out = run.stdout.strip()
            rows = int(out.splitlines()[-1]) if name != "curl" else out.count("\n")
            check(rows > 0 and '"error"' not in out, f"{dataset}, {name} read no rows: {out[-500:]}")
    print(f"code examples: {', '.join(RUN_SNIPPET)} run as shown on an unconditional and a conditional dataset")


def use_key(portal, key):
    """Enters `key` on the account page, as a person does (after forgetting any other)."""
    portal.open("/account")
    if portal.page.locator("#forget").count():
        portal.page.click("#forget")
        portal.page.wait_for_selector("main[data-ready=true] #key")
    portal.page.fill("#key input[name=key]", key)
    portal.page.click("#key button[type=submit]")
    portal.page.wait_for_selector("main[data-ready=true] [data-principal]")
    check(portal.page.evaluate("sessionStorage.getItem('kaifang.key')") == key, "the key is kept in sessionStorage")
    check(portal.page.evaluate("document.cookie") == "", "and no cookie is set")


def wait_ready(portal):
    portal.page.wait_for_selector("main[data-ready=true]")


def check_workflows(portal, base, admin, token, data_dir):
    """A user applies on a conditional dataset's page; its owner sees the application with its
    due date on the account page and approves it with a mask; the user sees the agreement,
    reports how it used the data and reads masked rows in the preview; rejections with and
    without a reason. Then the owner's console: an anonymous objection answered, a new entry
    drafted and published by an operator's key, a dataset withdrawn and reopened; and a misuse
    report filed from a dataset's page."""
    owner_department = api(base, "/v1/datasets/enterprises")["owner"]
    for principal, role, department in [("market", "owner", owner_department), ("acme", "user", None)]:
        body = {"id": principal, "name": principal.capitalize(), "role": role}
        if department:
            body["department"] = department
        api(admin, "/admin/principals", token, "POST", body, want=201)
    owner = api(admin, "/admin/keys", token, "POST", {"principal": "market"}, want=201)["key"]
    user = api(admin, "/admin/keys", token, "POST", {"principal": "acme"}, want=201)["key"]

    # Anonymous visitors object and report misuse on a dataset's page.
    portal.open("/datasets/enterprises")
    portal.page.fill("#objection textarea[name=description]", "Two enterprises share one registration code")
    portal.page.fill("#objection input[name=contact]", "auditor@example.org")
    portal.page.click("#objection button[type=submit]")
    filed = portal.page.locator("[data-objection]")
    filed.wait_for()
    objection_id = filed.get_attribute("data-objection")
    portal.page.fill("#report textarea[name=description]", "A site republishes these records with the mobiles unmasked")
    portal.page.click("#report button[type=submit]")
    error = portal.page.locator("#report + p .error")
    error.wait_for()
    check("contact" in error.inner_text(), f"an anonymous report needs a contact: {error.inner_text()}")
    portal.page.fill("#report input[name=contact]", "witness@example.org")
    portal.page.click("#report button[type=submit]")
    receipt = portal.page.locator("[data-report]")
    receipt.wait_for()
    report_id = receipt.get_attribute("data-report")
    reports = api(admin, "/admin/reports", token)["reports"]
    check([r["contact"] for r in reports if r["id"] == report_id] == ["witness@example.org"], f"reports: {reports}")

    # Without a key: the account page asks for one, and the dataset page says how to apply.
    portal.open("/account")
    check(portal.page.locator("#key input[type=password]").count() == 1, "the account page asks for the key")
    portal.audit("account-key")
    portal.open("/datasets/enterprises")
    check(portal.page.locator("#apply").count() == 0, "no application form without a key")

    # The user, with no agreement yet: the preview is refused, the application form is there.
    use_key(portal, user)
    check(portal.page.locator("[data-application]").count() == 0, "a new user has no applications")
    portal.open("/datasets/enterprises")
    check(portal.page.locator("#preview").count() == 0, "no rows of conditional data without an agreement")
    check(portal.page.locator("main .error").count() == 1, "the preview's refusal is shown")
    portal.page.fill("#apply textarea[name=purpose]", "Credit scoring of small suppliers")
    portal.page.fill("#apply textarea[name=scenario]", "Monthly batch inside our own data centre")
    portal.page.fill("#apply textarea[name=security_measures]", "Encrypted at rest; access by two analysts")
    wanted = ["name", "district", "legal_rep_mobile"]
    for column in wanted:
        portal.page.check(f"#apply input[name=columns][value={column}]")
    portal.audit("apply")
    portal.page.click("#apply button[type=submit]")
    shown = portal.page.locator("#apply + p [data-application]")
    shown.wait_for()
    application_id = shown.get_attribute("data-application")
    application = api(base, f"/v1/applications/{application_id}", user)
    check(application["status"] == "submitted" and application["columns"] == wanted, f"applied: {application}")
    check(application["due_by"] in shown.inner_text(), f"the due date is shown: {shown.inner_text()}")

    # The owner sees it with its due date, and approves it with a mask.
    use_key(portal, owner)
    card = portal.page.locator(f"li[data-application='{application_id}']")
    check(card.locator("[data-due-by]").get_attribute("data-due-by") == application["due_by"], "the owner sees the due date")
    card.locator("details").first.locator("summary").click()
    card.locator("select[name='mask:legal_rep_mobile']").select_option("cn_mobile")
    card.locator("input[name=row_filter]").fill("district = 'Haizhou'")
    portal.audit("account-owner")
    card.locator("form.approve button[type=submit]").click()
    portal.page.wait_for_selector(f"li[data-application='{application_id}'] .badge.approved")
    agreements = api(base, "/v1/agreements", user)["agreements"]
    check(len(agreements) == 1, f"the approval made one agreement: {agreements}")
    agreement = agreements[0]
    terms = agreement["datasets"][0]
    check(terms["masks"] == {"legal_rep_mobile": "cn_mobile"} and terms["row_filter"] == "district = 'Haizhou'"
          and terms["columns"] == wanted, f"the agreement's terms: {terms}")
    check(portal.page.locator(f"li[data-agreement='{agreement['id']}']").count() == 1, "the owner sees the agreement")

    # The user sees the agreement with its scope and masks, reports its use, reads masked rows.
    use_key(portal, user)
    card = portal.page.locator(f"li[data-agreement='{agreement['id']}']")
    check(card.locator("[data-mask=legal_rep_mobile]").inner_text().endswith("cn_mobile"), "the user sees the mask")
    card.locator("textarea[name=usage]").fill("Scored 1,204 suppliers; no data left the analysis host")
    card.locator("form.feedback button[type=submit]").click()
    card.locator("form.feedback + p span").wait_for()
    feedback = api(admin, f"/admin/agreements/{agreement['id']}/feedback", token)["feedback"]
    check([f["usage"] for f in feedback] == ["Scored 1,204 suppliers; no data left the analysis host"], f"feedback: {feedback}")
    portal.audit("account-user")
    portal.open("/datasets/enterprises")
    answer = api(base, "/v1/datasets/enterprises/preview", user)
    columns = portal.page.eval_on_selector_all("#preview thead th", "ths => ths.map(t => t.textContent)")
    check(columns == answer["columns"] == wanted, f"preview columns: {columns} vs {answer['columns']}")
    cells = portal.page.eval_on_selector_all("#preview tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    check(cells == [[str(row[c]) for c in columns] for row in answer["rows"]] and cells, "preview rows as the API's")
    check(all("****" in row[2] for row in cells), f"masked mobiles: {[row[2] for row in cells][:3]}")
    check(all(row[1] == "Haizhou" for row in cells), "only the agreed rows")
    # The fields a holder is shown are its scope; it may still apply for any field.
    shown = portal.page.eval_on_selector_all("tr[data-field]", "rows => rows.map(r => r.dataset.field)")
    check(shown == wanted, f"the holder's fields are its scope: {shown}")
    choices = portal.page.eval_on_selector_all("#apply input[name=columns]", "boxes => boxes.map(b => b.value)")
    everything = [f["name"] for f in api(base, "/v1/datasets/enterprises")["fields"]]
    check(choices == everything, f"an application may ask for any field: {choices}")
    portal.audit("dataset-conditional-key")
    # The preview was a call under the agreement: the account page shows it in today's usage.
    portal.open("/account")
    used = api(base, f"/v1/agreements/{agreement['id']}", user)["used_today"]
    shown = portal.page.locator(f"li[data-agreement='{agreement['id']}'] [data-used-requests]")
    check(used["requests"] >= 1 and shown.get_attribute("data-used-requests") == str(used["requests"]),
          f"today's usage: {shown.inner_text()} vs the API's {used}")

    # The demo user applies through the page too (for a wider scope than its agreement's). The
    # owner's rejection without a reason is refused and changes nothing; with one it is done.
    with open(os.path.join(data_dir, "demo-user.key")) as f:
        demo = f.read().strip()
    use_key(portal, demo)
    portal.open("/datasets/enterprises")
    portal.page.fill("#apply textarea[name=purpose]", "Capital-weighted risk model")
    portal.page.fill("#apply textarea[name=scenario]", "Quarterly, inside the model server")
    portal.page.fill("#apply textarea[name=security_measures]", "As in our agreement demo-enterprises")
    portal.page.check("#apply input[name=columns][value=registered_capital]")
    portal.page.click("#apply button[type=submit]")
    applied = portal.page.locator("#apply + p [data-application]")
    applied.wait_for()
    second = applied.get_attribute("data-application")
    check(api(base, f"/v1/applications/{second}", demo)["columns"] == ["registered_capital"], "the demo user applied")
    use_key(portal, owner)
    card = portal.page.locator(f"li[data-application='{second}']")
    card.locator("details").nth(1).locator("summary").click()
    card.locator("form.reject button[type=submit]").click()
    card.locator(".decide .error").wait_for()
    check(api(base, f"/v1/applications/{second}", demo)["status"] == "submitted", "a rejection without a reason changes nothing")
    card.locator("textarea[name=reason]").fill("The purpose does not need the registered capital")
    card.locator("form.reject button[type=submit]").click()
    portal.page.wait_for_selector(f"li[data-application='{second}'] .badge.rejected")
    # The owner answers the anonymous objection, and the answer is public.
    card = portal.page.locator(f"li[data-objection='{objection_id}']")
    check("auditor@example.org" in card.inner_text(), "the owner sees the filer's contact")
    card.locator("textarea[name=response]").fill("Corrected in today's update")
    card.locator("form.resolve button[type=submit]").click()
    portal.page.wait_for_selector(f"li[data-objection='{objection_id}'] .badge.approved")
    objection = api(base, f"/v1/objections/{objection_id}")
    check(objection["status"] == "resolved" and objection["response"] == "Corrected in today's update", f"{objection}")

    # The owner drafts a new entry (its file in the department's folder); an operator's key
    # publishes it from the same page.
    folder = os.path.join(data_dir, "sources", "market")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "licences.csv"), "w") as f:
        f.write("licence_no,holder\nL-001,Harbour Bakery\nL-002,Ferry Books\n")
    entry = {"title": "Business licences", "description": "Licences issued to businesses", "open_type": "unconditional",
             "format": "csv", "update_frequency": "monthly", "license": "CC BY 4.0", "keywords": ["licence"],
             "source": {"file": "sources/market/licences.csv"},
             "fields": [{"name": "licence_no", "type": "string", "description": "Licence number"},
                        {"name": "holder", "type": "string", "description": "Holder's registered name"}]}
    portal.page.fill("#new-draft input[name=id]", "licences")
    portal.page.fill("#new-draft textarea[name=entry]", "{ not json")
    portal.page.click("#new-draft button[type=submit]")
    portal.page.locator("#new-draft + p .error").wait_for()
    check(api(base, "/v1/drafts", owner)["drafts"] == [], "bad JSON writes nothing")
    portal.page.fill("#new-draft textarea[name=entry]", json.dumps(entry))
    portal.page.click("#new-draft button[type=submit]")
    portal.page.wait_for_selector("li[data-draft=licences]")
    check(portal.page.locator("li[data-draft=licences] [data-action=publish]").count() == 0, "owners do not publish")
    portal.audit("account-owner-console")
    api(admin, "/admin/principals", token, "POST", {"id": "ops", "name": "Platform operations", "role": "operator"}, want=201)
    operator = api(admin, "/admin/keys", token, "POST", {"principal": "ops"}, want=201)["key"]
    use_key(portal, operator)
    portal.page.click("li[data-draft=licences] [data-action=publish]")
    portal.page.wait_for_selector("li[data-dataset=licences]")
    check(portal.page.locator("li[data-draft=licences]").count() == 0, "published drafts leave the list")
    published = api(base, "/v1/datasets/licences")
    check(published["title"] == "Business licences" and published["version"] == 1, f"published: {published}")

    # The owner withdraws a dataset at once with a reason, and reopens it.
    use_key(portal, owner)
    card = portal.page.locator("li[data-dataset=enterprises]")
    card.locator("summary").click()
    card.locator("textarea[name=reason]").fill("Personal data found in a published column")
    card.locator("form.withdraw button[type=submit]").click()
    portal.page.wait_for_selector("li[data-withdrawn=enterprises]")
    status, _, _ = fetch(base + "/v1/datasets/enterprises")
    check(status == 410, f"withdrawn: {status}")
    portal.page.click("li[data-withdrawn=enterprises] [data-action=reopen]")
    portal.page.wait_for_selector("li[data-dataset=enterprises]")
    check(portal.page.locator("li[data-withdrawn]").count() == 0, "nothing withdrawn after reopening")
    check(fetch(base + "/v1/datasets/enterprises")[0] == 200, "served again")

    use_key(portal, demo)
    card = portal.page.locator(f"li[data-application='{second}']")
    check("The purpose does not need the registered capital" in card.inner_text(), "the applicant sees the reason")
    portal.page.click("#forget")
    wait_ready(portal)
    check(portal.page.evaluate("sessionStorage.getItem('kaifang.key')") is None, "the key is forgotten")
    print(f"workflows: applied ({application_id}, due {application['due_by']}), approved with a mask into "
          f"{agreement['id']}, feedback kept, {len(cells)} masked preview rows in scope; rejection refused without a "
          f"reason and done with one; objection {objection_id} answered, report {report_id} received, licences drafted and "
          "published by an operator's key, enterprises withdrawn and reopened")


def check_not_open(portal):
    hidden = portal.open("/datasets/subsistence-allowance")
    hidden_text = portal.page.locator("main").inner_text()
    unknown = portal.open("/datasets/no-such-dataset")
    unknown_text = portal.page.locator("main").inner_text()
    check(hidden.status == unknown.status == 404, f"statuses: {hidden.status} {unknown.status}")
    check(hidden_text == unknown_text, f"pages differ: {hidden_text!r} vs {unknown_text!r}")
    portal.audit("not-found")
    print("non-open dataset page: answers as an unknown id's (404, same text)")


def check_objection(portal, base):
    portal.open("/datasets/bus-arrivals")
    portal.page.fill("#objection textarea[name=description]", "Route 3's delays look doubled")
    portal.page.fill("#objection input[name=contact]", "reader@example.org")
    portal.page.click("#objection button[type=submit]")
    filed = portal.page.locator("[data-objection]")
    filed.wait_for()
    objection_id = filed.get_attribute("data-objection")
    check(objection_id in filed.inner_text(), "the page shows the objection's id")
    objection = api(base, f"/v1/objections/{objection_id}")
    check(objection["dataset"] == "bus-arrivals", f"objection: {objection}")
    print(f"objection filed anonymously through the page: {objection_id}")


def check_language(portal):
    portal.open("/")
    portal.page.click("#language")
    portal.page.wait_for_selector("main[data-ready=true]")
    check(portal.page.locator("h1").inner_text() == "Data catalog", "switched to English")
    check(portal.page.evaluate("document.documentElement.lang") == "en", "the document's language follows")
    portal.open("/datasets/bus-arrivals")
    check(portal.page.locator("h2").first.inner_text() == "Fields", "English holds on the next page")
    portal.audit("dataset-english")
    portal.page.click("#language")
    portal.page.wait_for_selector("main[data-ready=true]")
    check(portal.page.locator("h2").first.inner_text() == "字段", "and back to Chinese")
    print("language: Chinese by default, English on switching, kept across pages, and back")


def check_api_page(portal, base):
    portal.open("/docs")
    document = api(base, "/openapi.json")
    operations = sum(1 for item in document["paths"].values() for m in ("get", "head", "post", "put", "delete", "patch") if m in item)
    shown = portal.page.locator("article.operation").count()
    check(shown == operations, f"API page: {shown} operations vs {operations} in the document")
    portal.audit("api")
    print(f"API page: {shown} operations, as in the OpenAPI document")


def main():
    binary = os.path.abspath(sys.argv[1])
    shots = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "portal-screenshots")
    os.makedirs(shots, exist_ok=True)
    chromium = shutil.which("chromium")
    check(chromium is not None, "Debian's chromium is installed")
    with tempfile.TemporaryDirectory() as work:
        data_dir = os.path.join(work, "data")
        subprocess.run([binary, "demo-data", "--out", os.path.join(data_dir, "demo")], check=True, stdout=subprocess.DEVNULL)
        process, addresses = start_listeners(binary, data_dir)
        base = f"http://{addresses['http']}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
                portal = Portal(browser, base, addresses["flight"], shots)
                check_catalog(portal, base)
                check_unconditional(portal, base)
                check_conditional(portal, base)
                with open(os.path.join(data_dir, "demo-user.key")) as f:
                    check_snippets(portal, f.read().strip())
                check_not_open(portal)
                check_objection(portal, base)
                check_language(portal)
                check_api_page(portal, base)
                with open(os.path.join(data_dir, "admin.token")) as f:
                    check_workflows(portal, base, f"http://{addresses['admin']}", f.read().strip(), data_dir)
                browser.close()
        finally:
            process.terminate()
            process.wait()
    print(f"portal: every check passed; screenshots in {shots}")


if __name__ == "__main__":
    main()
