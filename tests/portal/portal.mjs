// The portal in Debian's headless Chromium, driven by playwright-core, as people use it.
//
// Starts the given kaifang binary on the embedded demo and checks:
// - the catalog lists the open datasets and never the non-open one; search and each filter
//   narrow it as the API does; stale entries are marked;
// - each open type's dataset page: metadata and fields (sensitive ones marked); the preview of an
//   unconditional dataset shows the rows the API's preview answers, cell for cell; a download
//   link fetches the same bytes as the API; the conditional one shows no rows without a key;
//   the code examples run as shown (Python's, with the packages .ci/run installs) and read rows;
// - a non-open dataset's page answers as an unknown id's does (status and text);
// - an objection filed anonymously with a contact reaches the API;
// - the language switch (Chinese, English) holds across pages;
// - the API page lists every operation of the data API's OpenAPI document;
// - with keys entered on the account page (kept in sessionStorage, no cookie): a user applies on
//   a conditional dataset's page; its owner sees the application with its due date and approves
//   it with a mask and a row filter; the user sees the agreement and today's usage, reports its
//   use, and the preview shows the masked rows in scope, as the API answers them; the demo user
//   applies too, and the owner's rejection without a reason is refused and changes nothing, one
//   with a reason is shown to the applicant; the owner answers an anonymous objection, drafts a
//   new entry that an operator's key publishes, withdraws a dataset and reopens it; a misuse
//   report is filed from a dataset's page;
// - the operation report's HTML renders with its charts;
// - axe-core finds no serious or critical accessibility violation on any page.
// Screenshots of every page at 1280x800 and 390x844 go to the folder given (default
// `portal-screenshots` in the working directory).
//
// Usage: node portal.mjs PATH_TO_KAIFANG [SCREENSHOT_DIR]. Exits non-zero on the first failure.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const SIZES = { desktop: [1280, 800], phone: [390, 844] };
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function fetchRaw(url, { method = "GET", body, key } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: response.status, body: Buffer.from(await response.arrayBuffer()) };
}

async function api(base, path, { key, method = "GET", body, want = 200 } = {}) {
  const { status, body: answer } = await fetchRaw(base + path, { method, body, key });
  check(status === want, `${method} ${path}: ${status} ${answer.toString().slice(0, 300)}`);
  return JSON.parse(answer.toString());
}

const sorted = (values) => [...values].sort();
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Runs `kaifang serve` on the embedded demo in `dataDir`, every listener on a free port; resolves
// with the process and the address of each listener once all three are up.
function startGateway(binary, dataDir) {
  const child = spawn(binary, ["serve", "--data-dir", dataDir, "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0",
    "--admin", "127.0.0.1:0"], { env: { ...process.env, KAIFANG_LOG: "warn" }, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((done, fail) => {
    const addresses = {};
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const listening = line.match(/^kaifang: (\S+) listening on (\S+)/);
      if (listening) addresses[listening[1]] = listening[2];
      if (Object.keys(addresses).length === 3) {
        lines.removeAllListeners("line");
        child.stdout.resume();
        done({ child, addresses });
      }
    });
    child.on("exit", (code) => fail(new Error(`kaifang exited (${code}) before all its listeners were up: ${JSON.stringify(addresses)}`)));
  });
}

class Portal {
  constructor(page, base, flight, shots) {
    Object.assign(this, { page, base, flight, shots, errors: [] });
    page.on("pageerror", (e) => this.errors.push(String(e)));
    // A 404 the page asked for (a dataset that is not there) is logged by the browser itself.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) this.errors.push(m.text());
    });
  }

  async open(path) {
    const response = await this.page.goto(this.base + path);
    await this.ready();
    return response;
  }

  ready() {
    return this.page.waitForSelector("main[data-ready=true]");
  }

  // Clicks a button that loads another page, and waits for that page.
  async submit(button) {
    await Promise.all([this.page.waitForNavigation(), this.page.click(button)]);
    await this.ready();
  }

  // Screenshots at both sizes and an accessibility scan of the page as it is.
  async audit(name) {
    for (const [size, [width, height]] of Object.entries(SIZES)) {
      await this.page.setViewportSize({ width, height });
      await this.page.screenshot({ path: join(this.shots, `${name}-${size}.png`), fullPage: true });
      // Evaluated through the DevTools protocol, so the page's Content-Security-Policy (which
      // allows this origin's script only) does not stop it.
      await this.page.evaluate(AXE);
      const results = await this.page.evaluate(() => globalThis.axe.run());
      const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
      check(bad.length === 0, `${name} at ${size}: ` + bad.map((v) =>
        `${v.id} (${v.impact}): ${JSON.stringify(v.nodes.slice(0, 3).map((n) => n.target))}`).join("; "));
    }
    await this.page.setViewportSize({ width: 1280, height: 800 });
    check(this.errors.length === 0, `${name}: the page logged errors: ${this.errors}`);
  }

  listed() {
    return this.page.$$eval("li.card", (cards) => cards.map((c) => c.dataset.dataset));
  }

  text(selector) {
    return this.page.locator(selector).innerText();
  }
}

async function checkCatalog(portal, base) {
  const everything = await api(base, "/v1/catalog?per_page=100");
  const expected = sorted(everything.datasets.map((d) => d.id));
  await portal.open("/");
  check(same(sorted(await portal.listed()), expected), `catalog: ${await portal.listed()} vs the API's ${expected}`);
  check(!(await portal.listed()).includes("subsistence-allowance"), "the non-open dataset is not listed");
  check(await portal.text("h1") === "数据目录", "the catalog opens in Chinese");
  const stale = everything.datasets.filter((d) => d.stale).map((d) => d.id);
  const marked = await portal.page.$$eval("li.card:has(.badge.stale)", (cs) => cs.map((c) => c.dataset.dataset));
  check(same(sorted(marked), sorted(stale)), `stale marks: ${marked} vs the API's ${stale}`);
  await portal.audit("catalog");

  await portal.page.fill("input[name=q]", "air");
  await portal.submit("form.search button[type=submit]");
  check(same(await portal.listed(), ["air-quality"]), `search 'air': ${await portal.listed()}`);

  for (const [facet, value] of [["open_type", "conditional"], ["format", "csv"], ["update_frequency", "hourly"],
    ["owner", everything.datasets[0].owner]]) {
    await portal.open("/");
    await portal.page.selectOption(`select[name=${facet}]`, value);
    await portal.submit("form.search button[type=submit]");
    const want = sorted((await api(base, `/v1/catalog?${new URLSearchParams({ [facet]: value })}`)).datasets.map((d) => d.id));
    check(want.length > 0 && same(sorted(await portal.listed()), want), `filter ${facet}=${value}: ${await portal.listed()} vs ${want}`);
  }
  console.log(`catalog: ${expected.length} datasets listed, search and the four filters as the API answers`);
}

function numbersEqual(a, b) {
  return a !== "" && b !== "" && !Number.isNaN(Number(a)) && Number(a) === Number(b);
}

// Table cells as text, row by row.
function cells(portal, selector) {
  return portal.page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
}

async function checkUnconditional(portal, base) {
  const response = await portal.open("/datasets/air-quality");
  check(response.status() === 200, `dataset page: ${response.status()}`);
  const dataset = await api(base, "/v1/datasets/air-quality");
  check(await portal.text("h1") === dataset.title, "the dataset's title");
  const fields = await portal.page.$$eval("tr[data-field]", (rows) => rows.map((r) => r.dataset.field));
  check(same(fields, dataset.fields.map((f) => f.name)), `fields: ${fields}`);
  const answer = await api(base, "/v1/datasets/air-quality/preview");
  const columns = await portal.page.$$eval("#preview thead th", (ths) => ths.map((t) => t.textContent));
  check(same(columns, answer.columns), `preview columns: ${columns} vs the API's ${answer.columns}`);
  const shown = await cells(portal, "#preview");
  const want = answer.rows.map((row) => columns.map((c) => (row[c] === null ? "" : String(row[c]))));
  check(shown.length === want.length && shown.length > 0, `preview rows: ${shown.length} vs ${want.length}`);
  shown.forEach((row, i) => row.forEach((cell, j) => {
    check(cell === want[i][j] || numbersEqual(cell, want[i][j]), `preview cell ${cell} vs the API's ${want[i][j]}`);
  }));
  const link = await portal.page.locator("ul.downloads a").first().getAttribute("href");
  const [download] = await Promise.all([portal.page.waitForEvent("download"), portal.page.click(`ul.downloads a[href='${link}']`)]);
  const got = readFileSync(await download.path());
  const original = (await fetchRaw(`${base}/v1/datasets/air-quality/download`)).body;
  check(got.equals(original), `download link: ${got.length} bytes vs ${original.length}`);
  await portal.page.click("button[data-snippet=DuckDB]");
  let code = await portal.text("#snippet-panel code");
  check(code.includes(`${base}/v1/datasets/air-quality/rows.csv`), `DuckDB snippet: ${code}`);
  await portal.page.click("button[data-snippet='pyarrow.flight']");
  code = await portal.text("#snippet-panel code");
  check(code.includes(`grpc://${portal.flight}`) && code.includes('for_path("air-quality")'), `pyarrow.flight snippet: ${code}`);
  await portal.audit("dataset-unconditional");
  console.log(`unconditional dataset page: ${fields.length} fields, ${shown.length} preview rows equal to the API's, download equal`);
}

async function checkConditional(portal, base) {
  const response = await portal.open("/datasets/enterprises");
  check(response.status() === 200, `conditional page: ${response.status()}`);
  check(await portal.page.locator("#preview").count() === 0, "no rows of conditional data without a key");
  const personal = await portal.page.$$eval("tr[data-field]:has(.badge.personal)", (rows) => rows.map((r) => r.dataset.field));
  const want = (await api(base, "/v1/datasets/enterprises")).fields.filter((f) => f.sensitivity === "personal").map((f) => f.name);
  check(want.length > 0 && same(personal, want), `sensitive fields marked: ${personal} vs ${want}`);
  await portal.audit("dataset-conditional");
  console.log(`conditional dataset page: no rows without a key, personal fields marked ${personal}`);
}

// Each code example but DuckDB's (which needs its extension fetched) is run as shown, with the
// demo user's key in KAIFANG_KEY, and must read rows.
const RUN_SNIPPET = {
  curl: (code) => ["bash", ["-c", code]],
  pandas: (code) => ["python3", ["-c", `${code}\nprint(len(df))`]],
  polars: (code) => ["python3", ["-c", `${code}\nprint(len(df))`]],
  "pyarrow.flight": (code) => ["python3", ["-c", `${code}\nprint(table.num_rows)`]],
  ADBC: (code) => ["python3", ["-c", `${code}\nprint(table.num_rows)`]],
};

async function checkSnippets(portal, key) {
  for (const dataset of ["air-quality", "enterprises"]) {
    await portal.open(`/datasets/${dataset}`);
    for (const [name, command] of Object.entries(RUN_SNIPPET)) {
      await portal.page.click(`button[data-snippet='${name}']`);
      const code = await portal.text("#snippet-panel code");
      const [program, args] = command(code);
      const run = spawnSync(program, args, { encoding: "utf8", timeout: 120_000, env: { ...process.env, KAIFANG_KEY: key } });
      check(run.status === 0, `${dataset}, ${name}: ${(run.stderr ?? "").slice(-2000)}\n${code}`);
      const out = run.stdout.trim();
      const rows = name === "curl" ? out.split("\n").length - 1 : Number(out.split("\n").at(-1));
      check(rows > 0 && !out.includes('"error"'), `${dataset}, ${name} read no rows: ${out.slice(-500)}`);
    }
  }
  console.log(`code examples: ${Object.keys(RUN_SNIPPET).join(", ")} run as shown on an unconditional and a conditional dataset`);
}

async function checkNotOpen(portal) {
  const hidden = await portal.open("/datasets/subsistence-allowance");
  const hiddenText = await portal.text("main");
  const unknown = await portal.open("/datasets/no-such-dataset");
  const unknownText = await portal.text("main");
  check(hidden.status() === 404 && unknown.status() === 404, `statuses: ${hidden.status()} ${unknown.status()}`);
  check(hiddenText === unknownText, `pages differ: ${hiddenText} vs ${unknownText}`);
  await portal.audit("not-found");
  console.log("non-open dataset page: answers as an unknown id's (404, same text)");
}

async function checkObjection(portal, base) {
  await portal.open("/datasets/bus-arrivals");
  await portal.page.fill("#objection textarea[name=description]", "Route 3's delays look doubled");
  await portal.page.fill("#objection input[name=contact]", "reader@example.org");
  await portal.page.click("#objection button[type=submit]");
  const filed = portal.page.locator("[data-objection]");
  await filed.waitFor();
  const id = await filed.getAttribute("data-objection");
  check((await filed.innerText()).includes(id), "the page shows the objection's id");
  const objection = await api(base, `/v1/objections/${id}`);
  check(objection.dataset === "bus-arrivals", `objection: ${JSON.stringify(objection)}`);
  console.log(`objection filed anonymously through the page: ${id}`);
}

async function checkLanguage(portal) {
  await portal.open("/");
  await portal.page.click("#language");
  await portal.ready();
  check(await portal.text("h1") === "Data catalog", "switched to English");
  check(await portal.page.evaluate(() => document.documentElement.lang) === "en", "the document's language follows");
  await portal.open("/datasets/bus-arrivals");
  check(await portal.page.locator("h2").first().innerText() === "Fields", "English holds on the next page");
  await portal.audit("dataset-english");
  await portal.page.click("#language");
  await portal.ready();
  check(await portal.page.locator("h2").first().innerText() === "字段", "and back to Chinese");
  console.log("language: Chinese by default, English on switching, kept across pages, and back");
}

async function checkApiPage(portal, base) {
  await portal.open("/docs");
  const document = await api(base, "/openapi.json");
  const methods = ["get", "head", "post", "put", "delete", "patch"];
  const operations = Object.values(document.paths).reduce((n, item) => n + methods.filter((m) => m in item).length, 0);
  const shown = await portal.page.locator("article.operation").count();
  check(shown === operations, `API page: ${shown} operations vs ${operations} in the document`);
  await portal.audit("api");
  console.log(`API page: ${shown} operations, as in the OpenAPI document`);
}

// Enters `key` on the account page, as a person does (after forgetting any other).
async function useKey(portal, key) {
  await portal.open("/account");
  if (await portal.page.locator("#forget").count()) {
    await portal.page.click("#forget");
    await portal.page.waitForSelector("main[data-ready=true] #key");
  }
  await portal.page.fill("#key input[name=key]", key);
  await portal.page.click("#key button[type=submit]");
  await portal.page.waitForSelector("main[data-ready=true] [data-principal]");
  check(await portal.page.evaluate(() => sessionStorage.getItem("kaifang.key")) === key, "the key is kept in sessionStorage");
  check(await portal.page.evaluate(() => document.cookie) === "", "and no cookie is set");
}

async function fillApplication(portal, purpose, scenario, measures, columns) {
  await portal.page.fill("#apply textarea[name=purpose]", purpose);
  await portal.page.fill("#apply textarea[name=scenario]", scenario);
  await portal.page.fill("#apply textarea[name=security_measures]", measures);
  for (const column of columns) await portal.page.check(`#apply input[name=columns][value=${column}]`);
}

async function applied(portal) {
  await portal.page.click("#apply button[type=submit]");
  const shown = portal.page.locator("#apply + p [data-application]");
  await shown.waitFor();
  return { id: await shown.getAttribute("data-application"), text: await shown.innerText() };
}

async function checkWorkflows(portal, base, admin, token, dataDir) {
  const ownerDepartment = (await api(base, "/v1/datasets/enterprises")).owner;
  for (const [id, role, department] of [["market", "owner", ownerDepartment], ["acme", "user", null]]) {
    const body = { id, name: id[0].toUpperCase() + id.slice(1), role };
    if (department) body.department = department;
    await api(admin, "/admin/principals", { key: token, method: "POST", body, want: 201 });
  }
  const owner = (await api(admin, "/admin/keys", { key: token, method: "POST", body: { principal: "market" }, want: 201 })).key;
  const user = (await api(admin, "/admin/keys", { key: token, method: "POST", body: { principal: "acme" }, want: 201 })).key;
  const demo = readFileSync(join(dataDir, "demo-user.key"), "utf8").trim();

  // Anonymous visitors object and report misuse on a dataset's page.
  await portal.open("/datasets/enterprises");
  await portal.page.fill("#objection textarea[name=description]", "Two enterprises share one registration code");
  await portal.page.fill("#objection input[name=contact]", "auditor@example.org");
  await portal.page.click("#objection button[type=submit]");
  const filed = portal.page.locator("[data-objection]");
  await filed.waitFor();
  const objectionId = await filed.getAttribute("data-objection");
  await portal.page.fill("#report textarea[name=description]", "A site republishes these records with the mobiles unmasked");
  await portal.page.click("#report button[type=submit]");
  const refusal = portal.page.locator("#report + p .error");
  await refusal.waitFor();
  check((await refusal.innerText()).includes("contact"), `an anonymous report needs a contact: ${await refusal.innerText()}`);
  await portal.page.fill("#report input[name=contact]", "witness@example.org");
  await portal.page.click("#report button[type=submit]");
  const receipt = portal.page.locator("[data-report]");
  await receipt.waitFor();
  const reportId = await receipt.getAttribute("data-report");
  const reports = (await api(admin, "/admin/reports", { key: token })).reports;
  check(same(reports.filter((r) => r.id === reportId).map((r) => r.contact), ["witness@example.org"]), `reports: ${JSON.stringify(reports)}`);

  // Without a key: the account page asks for one, and the dataset page says how to apply.
  await portal.open("/account");
  check(await portal.page.locator("#key input[type=password]").count() === 1, "the account page asks for the key");
  await portal.audit("account-key");
  await portal.open("/datasets/enterprises");
  check(await portal.page.locator("#apply").count() === 0, "no application form without a key");

  // A user with no agreement yet: the preview is refused, the application form is there.
  await useKey(portal, user);
  check(await portal.page.locator("[data-application]").count() === 0, "a new user has no applications");
  await portal.open("/datasets/enterprises");
  check(await portal.page.locator("#preview").count() === 0, "no rows of conditional data without an agreement");
  check(await portal.page.locator("main .error").count() === 1, "the preview's refusal is shown");
  const wanted = ["name", "district", "legal_rep_mobile"];
  await fillApplication(portal, "Credit scoring of small suppliers", "Monthly batch inside our own data centre",
    "Encrypted at rest; access by two analysts", wanted);
  await portal.audit("apply");
  const first = await applied(portal);
  const application = await api(base, `/v1/applications/${first.id}`, { key: user });
  check(application.status === "submitted" && same(application.columns, wanted), `applied: ${JSON.stringify(application)}`);
  check(first.text.includes(application.due_by), `the due date is shown: ${first.text}`);

  // The owner sees it with its due date, and approves it with a mask and a row filter.
  await useKey(portal, owner);
  let card = portal.page.locator(`li[data-application='${first.id}']`);
  check(await card.locator("[data-due-by]").getAttribute("data-due-by") === application.due_by, "the owner sees the due date");
  await card.locator("details").first().locator("summary").click();
  await card.locator("select[name='mask:legal_rep_mobile']").selectOption("cn_mobile");
  await card.locator("input[name=row_filter]").fill("district = 'Haizhou'");
  await portal.audit("account-owner");
  await card.locator("form.approve button[type=submit]").click();
  await portal.page.waitForSelector(`li[data-application='${first.id}'] .badge.approved`);
  const agreements = (await api(base, "/v1/agreements", { key: user })).agreements;
  check(agreements.length === 1, `the approval made one agreement: ${JSON.stringify(agreements)}`);
  const agreement = agreements[0];
  const terms = agreement.datasets[0];
  check(same(terms.masks, { legal_rep_mobile: "cn_mobile" }) && terms.row_filter === "district = 'Haizhou'" && same(terms.columns, wanted),
    `the agreement's terms: ${JSON.stringify(terms)}`);
  check(await portal.page.locator(`li[data-agreement='${agreement.id}']`).count() === 1, "the owner sees the agreement");

  // The user sees the agreement with its scope and masks, reports its use, reads masked rows.
  await useKey(portal, user);
  card = portal.page.locator(`li[data-agreement='${agreement.id}']`);
  check((await card.locator("[data-mask=legal_rep_mobile]").innerText()).endsWith("cn_mobile"), "the user sees the mask");
  const usage = "Scored 1,204 suppliers; no data left the analysis host";
  await card.locator("textarea[name=usage]").fill(usage);
  await card.locator("form.feedback button[type=submit]").click();
  await card.locator("form.feedback + p span").waitFor();
  const feedback = (await api(admin, `/admin/agreements/${agreement.id}/feedback`, { key: token })).feedback;
  check(same(feedback.map((f) => f.usage), [usage]), `feedback: ${JSON.stringify(feedback)}`);
  await portal.audit("account-user");
  await portal.open("/datasets/enterprises");
  const answer = await api(base, "/v1/datasets/enterprises/preview", { key: user });
  const columns = await portal.page.$$eval("#preview thead th", (ths) => ths.map((t) => t.textContent));
  check(same(columns, answer.columns) && same(columns, wanted), `preview columns: ${columns} vs ${answer.columns}`);
  const rows = await cells(portal, "#preview");
  check(rows.length > 0 && same(rows, answer.rows.map((row) => columns.map((c) => String(row[c])))), "preview rows as the API's");
  check(rows.every((row) => row[2].includes("****")), `masked mobiles: ${rows.slice(0, 3).map((r) => r[2])}`);
  check(rows.every((row) => row[1] === "Haizhou"), "only the agreed rows");
  // The fields a holder is shown are its scope; it may still apply for any field.
  const scope = await portal.page.$$eval("tr[data-field]", (trs) => trs.map((r) => r.dataset.field));
  check(same(scope, wanted), `the holder's fields are its scope: ${scope}`);
  const choices = await portal.page.$$eval("#apply input[name=columns]", (boxes) => boxes.map((b) => b.value));
  const everything = (await api(base, "/v1/datasets/enterprises")).fields.map((f) => f.name);
  check(same(choices, everything), `an application may ask for any field: ${choices}`);
  await portal.audit("dataset-conditional-key");
  // The preview was a call under the agreement: the account page shows it in today's usage.
  await portal.open("/account");
  const used = (await api(base, `/v1/agreements/${agreement.id}`, { key: user })).used_today;
  const shownUse = portal.page.locator(`li[data-agreement='${agreement.id}'] [data-used-requests]`);
  check(used.requests >= 1 && await shownUse.getAttribute("data-used-requests") === String(used.requests),
    `today's usage: ${await shownUse.innerText()} vs the API's ${JSON.stringify(used)}`);

  // The demo user applies through the page too (for a wider scope than its agreement's). The
  // owner's rejection without a reason is refused and changes nothing; with one it is done.
  await useKey(portal, demo);
  await portal.open("/datasets/enterprises");
  await fillApplication(portal, "Capital-weighted risk model", "Quarterly, inside the model server",
    "As in our agreement demo-enterprises", ["registered_capital"]);
  const second = (await applied(portal)).id;
  check(same((await api(base, `/v1/applications/${second}`, { key: demo })).columns, ["registered_capital"]), "the demo user applied");
  await useKey(portal, owner);
  card = portal.page.locator(`li[data-application='${second}']`);
  await card.locator("details").nth(1).locator("summary").click();
  await card.locator("form.reject button[type=submit]").click();
  await card.locator(".decide .error").waitFor();
  check((await api(base, `/v1/applications/${second}`, { key: demo })).status === "submitted", "a rejection without a reason changes nothing");
  const reason = "The purpose does not need the registered capital";
  await card.locator("textarea[name=reason]").fill(reason);
  await card.locator("form.reject button[type=submit]").click();
  await portal.page.waitForSelector(`li[data-application='${second}'] .badge.rejected`);

  // The owner answers the anonymous objection, and the answer is public.
  card = portal.page.locator(`li[data-objection='${objectionId}']`);
  check((await card.innerText()).includes("auditor@example.org"), "the owner sees the filer's contact");
  await card.locator("textarea[name=response]").fill("Corrected in today's update");
  await card.locator("form.resolve button[type=submit]").click();
  await portal.page.waitForSelector(`li[data-objection='${objectionId}'] .badge.approved`);
  const objection = await api(base, `/v1/objections/${objectionId}`);
  check(objection.status === "resolved" && objection.response === "Corrected in today's update", JSON.stringify(objection));

  // The owner drafts a new entry (its file in the department's folder); an operator's key
  // publishes it from the same page.
  const folder = join(dataDir, "sources", "market");
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, "licences.csv"), "licence_no,holder\nL-001,Harbour Bakery\nL-002,Ferry Books\n");
  const entry = {
    title: "Business licences", description: "Licences issued to businesses", open_type: "unconditional", format: "csv",
    update_frequency: "monthly", license: "CC BY 4.0", keywords: ["licence"], source: { file: "sources/market/licences.csv" },
    fields: [{ name: "licence_no", type: "string", description: "Licence number" },
      { name: "holder", type: "string", description: "Holder's registered name" }],
  };
  await portal.page.fill("#new-draft input[name=id]", "licences");
  await portal.page.fill("#new-draft textarea[name=entry]", "{ not json");
  await portal.page.click("#new-draft button[type=submit]");
  await portal.page.locator("#new-draft + p .error").waitFor();
  check((await api(base, "/v1/drafts", { key: owner })).drafts.length === 0, "bad JSON writes nothing");
  await portal.page.fill("#new-draft textarea[name=entry]", JSON.stringify(entry));
  await portal.page.click("#new-draft button[type=submit]");
  await portal.page.waitForSelector("li[data-draft=licences]");
  check(await portal.page.locator("li[data-draft=licences] [data-action=publish]").count() === 0, "owners do not publish");
  await portal.audit("account-owner-console");
  await api(admin, "/admin/principals", { key: token, method: "POST", body: { id: "ops", name: "Platform operations", role: "operator" }, want: 201 });
  const operator = (await api(admin, "/admin/keys", { key: token, method: "POST", body: { principal: "ops" }, want: 201 })).key;
  await useKey(portal, operator);
  await portal.page.click("li[data-draft=licences] [data-action=publish]");
  await portal.page.waitForSelector("li[data-dataset=licences]");
  check(await portal.page.locator("li[data-draft=licences]").count() === 0, "published drafts leave the list");
  const published = await api(base, "/v1/datasets/licences");
  check(published.title === "Business licences" && published.version === 1, `published: ${JSON.stringify(published)}`);

  // The owner withdraws a dataset at once with a reason, and reopens it.
  await useKey(portal, owner);
  card = portal.page.locator("li[data-dataset=enterprises]");
  await card.locator("summary").click();
  await card.locator("textarea[name=reason]").fill("Personal data found in a published column");
  await card.locator("form.withdraw button[type=submit]").click();
  await portal.page.waitForSelector("li[data-withdrawn=enterprises]");
  check((await fetchRaw(`${base}/v1/datasets/enterprises`)).status === 410, "withdrawn: served 410");
  await portal.page.click("li[data-withdrawn=enterprises] [data-action=reopen]");
  await portal.page.waitForSelector("li[data-dataset=enterprises]");
  check(await portal.page.locator("li[data-withdrawn]").count() === 0, "nothing withdrawn after reopening");
  check((await fetchRaw(`${base}/v1/datasets/enterprises`)).status === 200, "served again");

  // The applicant sees the rejection's reason; the key is forgotten on request.
  await useKey(portal, demo);
  card = portal.page.locator(`li[data-application='${second}']`);
  check((await card.innerText()).includes(reason), "the applicant sees the reason");
  await portal.page.click("#forget");
  await portal.ready();
  check(await portal.page.evaluate(() => sessionStorage.getItem("kaifang.key")) === null, "the key is forgotten");
  console.log(`workflows: applied (${first.id}, due ${application.due_by}), approved with a mask into ${agreement.id}, `
    + `feedback kept, ${rows.length} masked preview rows in scope, today's usage shown; the demo user's application `
    + `rejected (refused without a reason); objection ${objectionId} answered, report ${reportId} received, licences `
    + "drafted and published by an operator's key, enterprises withdrawn and reopened");
}

// The operation report's HTML (from the admin API) as Chromium renders it: its charts drawn,
// screenshots at both sizes, and the accessibility scan.
async function checkOperationReport(context, shots, admin, token) {
  // A page of its own: the portal's pages carry the portal's Content-Security-Policy.
  const portal = new Portal(await context.newPage(), "", "", shots);
  const day = (offset) => new Date(Date.now() + 8 * 3600_000 + offset * 86_400_000).toISOString().slice(0, 10);
  const response = await fetch(`${admin}/admin/report?from=${day(-30)}&to=${day(0)}&format=html`,
    { headers: { Authorization: `Bearer ${token}` } });
  check(response.status === 200, `report: ${response.status}`);
  await portal.page.setContent(await response.text());
  check((await portal.text("h1")).includes("Operation report"), "the report's title");
  const charts = await portal.page.locator(".chart svg").count();
  // The chart of calls by dataset is drawn once the gateway's counters were kept (every minute).
  const json = await (await fetch(`${admin}/admin/report?from=${day(-30)}&to=${day(0)}`,
    { headers: { Authorization: `Bearer ${token}` } })).json();
  const expected = json.traffic.by_dataset.length > 0 ? 6 : 5;
  check(charts === expected, `the report's charts are drawn: ${charts} of ${expected}`);
  const box = await portal.page.locator(".chart svg").first().boundingBox();
  check(box && box.width > 300 && box.height > 100, `a chart has its size: ${JSON.stringify(box)}`);
  await portal.audit("operation-report");
  console.log(`operation report: rendered with ${charts} charts`);
}

async function main() {
  const [binaryArg, shotsArg] = process.argv.slice(2);
  check(binaryArg, "usage: node portal.mjs PATH_TO_KAIFANG [SCREENSHOT_DIR]");
  const binary = resolve(binaryArg);
  const shots = resolve(shotsArg ?? "portal-screenshots");
  mkdirSync(shots, { recursive: true });
  const chromiumPath = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"].find(existsSync);
  check(chromiumPath, "Debian's chromium is installed");
  const work = mkdtempSync(join(tmpdir(), "kaifang-portal-"));
  const dataDir = join(work, "data");
  execFileSync(binary, ["demo-data", "--out", join(dataDir, "demo")], { stdio: "ignore" });
  const { child, addresses } = await startGateway(binary, dataDir);
  const base = `http://${addresses.http}`;
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "zh-CN" });
    const portal = new Portal(await context.newPage(), base, addresses.flight, shots);
    await checkCatalog(portal, base);
    await checkUnconditional(portal, base);
    await checkConditional(portal, base);
    await checkSnippets(portal, readFileSync(join(dataDir, "demo-user.key"), "utf8").trim());
    await checkNotOpen(portal);
    await checkObjection(portal, base);
    await checkLanguage(portal);
    await checkApiPage(portal, base);
    const token = readFileSync(join(dataDir, "admin.token"), "utf8").trim();
    await checkWorkflows(portal, base, `http://${addresses.admin}`, token, dataDir);
    await checkOperationReport(context, shots, `http://${addresses.admin}`, token);
  } finally {
    await browser?.close();
    const exited = new Promise((done) => child.once("exit", done));
    child.kill("SIGTERM");
    await exited;
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`portal: every check passed; screenshots in ${shots}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
