//! The platform's workflows end to end over HTTP: catalog drafts and publication, applications
//! and their decisions, agreements changed by owners, withdrawal, objections, webhooks; each
//! with its wrong-role refusals and a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Weekday};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fixture::{client, Gateway, BIN};
use crate::metrics::{samples, scrape, value};

pub const MARKET: &str = "Municipal Market Supervision Administration";
pub const TRANSPORT: &str = "Municipal Transport Bureau";

/// The shipped configuration with demo data of 300 rows, a calendar of weekends only for this
/// year and the next (so due dates can be counted by hand here), and `extra` appended.
pub fn platform(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixture::copy_shipped_config(dir.path());
    let year = chrono::Utc::now().year();
    std::fs::write(
        dir.path().join("calendar/cn.toml"),
        format!("[[years]]\nyear = {year}\nholidays = []\n\n[[years]]\nyear = {}\nholidays = []\n", year + 1),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    let data_dir = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["demo-data", "--rows", "300", "--out", data_dir.join("demo").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The market department's folder for the files of its drafts, as the shipped [sources] says.
    std::fs::create_dir_all(data_dir.join("sources/market")).unwrap();
    std::fs::copy(data_dir.join("demo/enterprises.arrow"), data_dir.join("sources/market/licences.arrow")).unwrap();
    (dir, config, data_dir)
}

/// A request on the data port with an optional key and JSON body; status and JSON answer.
pub async fn call(g: &Gateway, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, g.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Creates a principal and returns a key of it.
pub async fn principal(g: &Gateway, id: &str, role: &str, department: Option<&str>) -> String {
    let mut body = json!({"id": id, "name": id, "role": role});
    if let Some(d) = department {
        body["department"] = json!(d);
    }
    let (status, answer) = g.admin(Method::POST, "/admin/principals", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let (status, key) = g.admin(Method::POST, "/admin/keys", Some(json!({"principal": id}))).await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// A call expected to be refused: method, path, key, body, status.
type Attempt<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, u16);

/// Everything the workflows keep, as the operators see it.
async fn snapshot(g: &Gateway) -> Value {
    let mut all = Vec::new();
    for path in ["/admin/drafts", "/admin/applications", "/admin/objections", "/admin/agreements"] {
        let (status, mut body) = g.admin(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        // What agreements used today is counting, not a workflow's state: it is saved every
        // second, so a gateway killed meanwhile loses the last second of it.
        for agreement in body["agreements"].as_array_mut().into_iter().flatten() {
            agreement.as_object_mut().unwrap().remove("used_today");
        }
        all.push(body);
    }
    let (_, catalog) = call(g, Method::GET, "/v1/catalog?per_page=100", None, None).await;
    all.push(catalog);
    Value::Array(all)
}

/// The 10th day after `from` that is neither Saturday nor Sunday.
pub(crate) fn tenth_weekday_after(from: NaiveDate) -> NaiveDate {
    let mut date = from;
    let mut counted = 0;
    while counted < 10 {
        date = date.succ_opt().unwrap();
        if !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
            counted += 1;
        }
    }
    date
}

fn today_in_china() -> NaiveDate {
    (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive()
}

/// A draft of a new conditionally open dataset on the demo's enterprises file.
pub(crate) fn licences_draft(fields: &Value) -> Value {
    json!({
        "title": "Business licences", "description": "Licences issued, with the holder's representative.",
        "open_type": "conditional", "format": "arrow_ipc", "update_frequency": "daily",
        "license": "Agreement", "keywords": ["licence"], "source": {"file": "sources/market/licences.arrow"},
        "fields": fields,
    })
}

pub fn application(dataset: &str) -> Value {
    json!({"dataset": dataset, "purpose": "Supplier due diligence", "scenario": "Internal procurement checks",
           "security_measures": "Encrypted storage, access by two named staff", "columns": ["uscc", "name", "legal_rep_mobile"]})
}

pub(crate) fn terms() -> Value {
    json!({"columns": ["uscc", "name", "legal_rep_mobile"], "row_filter": "district = 'Haizhou'",
           "masks": {"legal_rep_mobile": "cn_mobile"}, "valid_until": "2099-01-01T00:00:00Z",
           "rate": {"per_second": 100, "burst": 100},
           "quota": {"requests_per_day": 1000, "rows_per_day": 1000000, "bytes_per_day": 1000000000}})
}

#[tokio::test]
async fn owner_drafts_operator_publishes_user_applies_owner_approves_and_a_restart_keeps_it_all() {
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let transport = principal(&g, "transport", "owner", Some(TRANSPORT)).await;
    let acme = principal(&g, "acme", "user", None).await;
    let beta = principal(&g, "beta", "user", None).await;
    let (_, enterprises) = call(&g, Method::GET, "/v1/datasets/enterprises", None, None).await;
    let draft = licences_draft(&enterprises["fields"]);

    // A key names its principal: what the portal asks to know whose pages to show.
    let (status, me) = call(&g, Method::GET, "/v1/me", Some(&market), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me, json!({"id": "market", "name": "market", "role": "owner", "department": MARKET}));
    let (status, me) = call(&g, Method::GET, "/v1/me", Some(&acme), None).await;
    assert_eq!((status, me), (200, json!({"id": "acme", "name": "acme", "role": "user"})));
    let (status, refused) = call(&g, Method::GET, "/v1/me", None, None).await;
    assert_eq!((status, &refused["error"]["code"]), (401, &json!("key_required")));

    // Wrong roles first: each is refused and leaves everything as it was.
    let before = snapshot(&g).await;
    let wrong: Vec<Attempt> = vec![
        (Method::PUT, "/v1/datasets/licences/draft", None, Some(draft.clone()), 401),
        (Method::PUT, "/v1/datasets/licences/draft", Some(&acme), Some(draft.clone()), 403),
        (Method::PUT, "/v1/datasets/enterprises/draft", Some(&transport), Some(draft.clone()), 403),
        (Method::POST, "/v1/datasets/enterprises/withdraw", Some(&transport), Some(json!({"reason": "x"})), 403),
        (Method::POST, "/v1/datasets/enterprises/withdraw", Some(&acme), Some(json!({"reason": "x"})), 403),
        (Method::POST, "/v1/applications", Some(&market), Some(application("enterprises")), 403),
        (Method::POST, "/v1/applications", None, Some(application("enterprises")), 401),
        (Method::POST, "/v1/agreements/demo-enterprises/revoke", Some(&transport), None, 404),
        (Method::POST, "/v1/agreements/demo-enterprises/suspend", Some(&acme), None, 403),
    ];
    for (method, path, key, body, status) in wrong {
        let (got, answer) = call(&g, method.clone(), path, key, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
    }
    assert_eq!(snapshot(&g).await, before, "refused calls change nothing");

    // The owner drafts; the draft is not served, listed or visible to others.
    let (status, written) =
        call(&g, Method::PUT, "/v1/datasets/licences/draft", Some(&market), Some(draft.clone())).await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["entry"]["owner"], MARKET, "an owner's entries are its department's");
    let (status, _) = call(&g, Method::GET, "/v1/datasets/licences", None, None).await;
    assert_eq!(status, 404, "drafts are not served");
    assert_eq!(call(&g, Method::GET, "/v1/datasets/licences/draft", Some(&market), None).await.0, 200);
    // Another department's draft reads like none.
    assert_eq!(call(&g, Method::GET, "/v1/datasets/licences/draft", Some(&transport), None).await.0, 404);
    assert_eq!(call(&g, Method::GET, "/v1/datasets/licences/draft", Some(&acme), None).await.0, 404);
    // Another owner cannot take over the draft either.
    assert_eq!(
        call(&g, Method::PUT, "/v1/datasets/licences/draft", Some(&transport), Some(draft.clone())).await.0,
        409
    );
    let mut broken = draft.clone();
    broken["source"] = json!({"file": "../../etc/passwd"});
    let (status, answer) = call(&g, Method::PUT, "/v1/datasets/licences/draft", Some(&market), Some(broken)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("bad_entry")), "{answer}");
    let (_, drafts) = g.admin(Method::GET, "/admin/drafts", None).await;
    assert_eq!(drafts["drafts"].as_array().unwrap().len(), 1);
    assert_eq!(
        drafts["drafts"][0]["entry"]["source"]["file"], "sources/market/licences.arrow",
        "the bad one changed nothing"
    );
    let reviewed = drafts["drafts"][0]["draft_version"].clone();
    assert_eq!(reviewed, written["draft_version"]);
    // On the data port, an owner lists its department's drafts and no other's; a user, none.
    let (status, own) = call(&g, Method::GET, "/v1/drafts", Some(&market), None).await;
    assert_eq!((status, own["drafts"].as_array().unwrap().len()), (200, 1), "{own}");
    assert_eq!(own["drafts"][0]["entry"]["id"], "licences");
    let (_, other) = call(&g, Method::GET, "/v1/drafts", Some(&transport), None).await;
    assert_eq!(other["drafts"], json!([]), "another department's drafts read like none");
    assert_eq!(call(&g, Method::GET, "/v1/drafts", Some(&acme), None).await.1["drafts"], json!([]));

    // The operators publish the revision reviewed (here with an operator's key on the data
    // port, as the portal does): listed and described from the next request, version 1, updated
    // now. Owners and users may not publish.
    let ops = principal(&g, "ops", "operator", None).await;
    let published_at = chrono::Utc::now();
    let review = json!({"draft_version": reviewed});
    for (key, who) in [(&market, "the owner"), (&acme, "a user")] {
        let (status, refused) =
            call(&g, Method::POST, "/v1/datasets/licences/publish", Some(key), Some(review.clone())).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("wrong_role")), "{who}: {refused}");
    }
    let (status, published) =
        call(&g, Method::POST, "/v1/datasets/licences/publish", Some(&ops), Some(review.clone())).await;
    assert_eq!(status, 200, "{published}");
    let (status, meta) = call(&g, Method::GET, "/v1/datasets/licences", None, None).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["open_objections"], 0);
    let updated: chrono::DateTime<chrono::Utc> = meta["last_updated"].as_str().unwrap().parse().unwrap();
    assert!((updated - published_at).num_seconds().abs() < 30, "{updated} vs {published_at}");
    let (_, catalog) = call(&g, Method::GET, "/v1/catalog?q=licence", None, None).await;
    assert_eq!(catalog["datasets"][0]["id"], "licences", "{catalog}");
    assert_eq!(
        g.admin(Method::POST, "/admin/datasets/licences/publish", Some(review)).await.0,
        404,
        "nothing left to publish"
    );
    assert_eq!(call(&g, Method::GET, "/v1/drafts", Some(&market), None).await.1["drafts"], json!([]));

    // A user applies; the due date is 10 working days on (weekends only in this calendar).
    let submitted_on = today_in_china();
    let (status, applied) =
        call(&g, Method::POST, "/v1/applications", Some(&acme), Some(application("licences"))).await;
    assert_eq!(status, 201, "{applied}");
    assert_eq!(applied["status"], "submitted");
    assert_eq!(applied["overdue"], false);
    let due: NaiveDate = applied["due_by"].as_str().unwrap().parse().unwrap();
    // A test running across midnight in China may see the next day's count.
    let expected = [tenth_weekday_after(submitted_on), tenth_weekday_after(today_in_china())];
    assert!(expected.contains(&due), "due {due}, expected {expected:?}");
    let id = applied["id"].as_str().unwrap().to_owned();
    for (body, code) in [
        (application("bus-arrivals"), "not_conditional"),
        (
            json!({"dataset": "licences", "purpose": "x", "scenario": "x", "security_measures": "x", "columns": ["nope"]}),
            "bad_body",
        ),
        (
            json!({"dataset": "licences", "purpose": "", "scenario": "x", "security_measures": "x", "columns": ["name"]}),
            "bad_body",
        ),
        (json!({"dataset": "licences", "purpose": "x"}), "bad_body"),
    ] {
        let (status, answer) = call(&g, Method::POST, "/v1/applications", Some(&acme), Some(body)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{answer}");
    }
    // Before approval the user has no agreement on it.
    assert_eq!(call(&g, Method::GET, "/v1/datasets/licences/rows?limit=1", Some(&acme), None).await.0, 403);

    // Who sees the application: the applicant, the owner; to another user or owner it is unknown.
    let path = format!("/v1/applications/{id}");
    assert_eq!(call(&g, Method::GET, &path, Some(&acme), None).await.0, 200);
    assert_eq!(call(&g, Method::GET, &path, Some(&market), None).await.0, 200);
    assert_eq!(call(&g, Method::GET, &path, Some(&beta), None).await.0, 404);
    assert_eq!(call(&g, Method::GET, &path, Some(&transport), None).await.0, 404);
    let (_, listed) = call(&g, Method::GET, "/v1/applications?status=submitted", Some(&market), None).await;
    assert_eq!(listed["applications"].as_array().unwrap().len(), 1, "{listed}");
    let (_, listed) = call(&g, Method::GET, "/v1/applications", Some(&transport), None).await;
    assert_eq!(listed["applications"].as_array().unwrap().len(), 0, "{listed}");

    // Decisions: only the owner, and a rejection needs its reason; refusals change nothing.
    let before = snapshot(&g).await;
    for (key, decision, body, status) in [
        (&transport, "approve", terms(), 404),
        (&acme, "approve", terms(), 403),
        (&market, "reject", json!({}), 400),
        (&market, "reject", json!({"reason": "   "}), 400),
        (&market, "approve", json!({"valid_until": "2099-01-01T00:00:00Z"}), 400),
    ] {
        let (got, answer) = call(&g, Method::POST, &format!("{path}/{decision}"), Some(key), Some(body)).await;
        assert_eq!(got, status, "{decision}: {answer}");
    }
    let (_, answer) = call(&g, Method::POST, &format!("{path}/reject"), Some(&market), Some(json!({}))).await;
    assert_eq!(answer["error"]["code"], "reason_required");
    assert_eq!(snapshot(&g).await, before, "refused decisions change nothing");

    // Approval with masks: the applicant's key reads within scope from its next request.
    let (status, approved) = call(&g, Method::POST, &format!("{path}/approve"), Some(&market), Some(terms())).await;
    assert_eq!(status, 200, "{approved}");
    let agreement = approved["agreement"]["id"].as_str().unwrap().to_owned();
    assert_eq!(approved["application"]["status"], "approved");
    assert_eq!(approved["application"]["agreement"], agreement.as_str());
    let (status, rows) =
        call(&g, Method::GET, "/v1/datasets/licences/rows?format=json&limit=100", Some(&acme), None).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let mut keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["legal_rep_mobile", "name", "uscc"], "only the approved columns");
        let mobile = row["legal_rep_mobile"].as_str().unwrap();
        assert!(mobile.len() == 11 && &mobile[3..7] == "****", "masked: {mobile}");
    }
    let (status, answer) =
        call(&g, Method::GET, "/v1/datasets/licences/rows?columns=district", Some(&acme), None).await;
    assert_eq!(status, 403, "outside the scope: {answer}");
    assert_eq!(call(&g, Method::GET, "/v1/datasets/licences/rows?limit=1", Some(&beta), None).await.0, 403);
    let again = call(&g, Method::POST, &format!("{path}/reject"), Some(&market), Some(json!({"reason": "late"}))).await;
    assert_eq!((again.0, again.1["error"]["code"].as_str()), (409, Some("already_decided")));
    // Owners list the agreements on their datasets; the holder lists its own.
    let (_, owned) = call(&g, Method::GET, "/v1/agreements", Some(&market), None).await;
    let owned: Vec<&str> = owned["agreements"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(owned.contains(&agreement.as_str()) && owned.contains(&"demo-enterprises"), "{owned:?}");
    let (_, none) = call(&g, Method::GET, "/v1/agreements", Some(&transport), None).await;
    assert_eq!(none["agreements"], json!([]));

    // A second application, rejected with its reason.
    let (_, second) = call(&g, Method::POST, "/v1/applications", Some(&beta), Some(application("licences"))).await;
    let second = second["id"].as_str().unwrap().to_owned();
    let reason = "The stated purpose does not need the representative's mobile number";
    let (status, rejected) = call(
        &g,
        Method::POST,
        &format!("/v1/applications/{second}/reject"),
        Some(&market),
        Some(json!({"reason": reason})),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!((rejected["status"].as_str(), rejected["reason"].as_str()), (Some("rejected"), Some(reason)));

    let s = samples(&scrape(&g).await);
    assert_eq!(value(&s, r#"kaifang_applications{state="approved"}"#), 1.0);
    assert_eq!(value(&s, r#"kaifang_applications{state="rejected"}"#), 1.0);
    assert_eq!(value(&s, r#"kaifang_applications{state="submitted"}"#), 0.0);
    assert_eq!(value(&s, "kaifang_applications_overdue"), 0.0);

    // A restart keeps every piece of it.
    let kept = snapshot(&g).await;
    let g = g.restart();
    assert_eq!(snapshot(&g).await, kept);
    let (status, rows) =
        call(&g, Method::GET, "/v1/datasets/licences/rows?format=json&limit=5", Some(&acme), None).await;
    assert_eq!(status, 200, "{rows}");
    let (_, meta) = call(&g, Method::GET, "/v1/datasets/licences", None, None).await;
    assert_eq!(meta["version"], 1);

    // The owner drafts a change; publishing it makes version 2 and moves last_updated on.
    let mut change = draft.clone();
    change["title"] = json!("Business licences (with 2026 renewals)");
    let (status, changed) = call(&g, Method::PUT, "/v1/datasets/licences/draft", Some(&market), Some(change)).await;
    assert_eq!(status, 200);
    let (_, meta) = call(&g, Method::GET, "/v1/datasets/licences", None, None).await;
    assert_eq!(meta["title"], "Business licences", "the published entry stays until the change is published");
    let review = json!({"draft_version": changed["draft_version"]});
    assert_eq!(g.admin(Method::POST, "/admin/datasets/licences/publish", Some(review)).await.0, 200);
    let (_, meta) = call(&g, Method::GET, "/v1/datasets/licences", None, None).await;
    assert_eq!(
        (meta["version"].as_u64(), meta["title"].as_str()),
        (Some(2), Some("Business licences (with 2026 renewals)"))
    );
    let later: chrono::DateTime<chrono::Utc> = meta["last_updated"].as_str().unwrap().parse().unwrap();
    assert!(later > updated);
}

#[tokio::test]
async fn overdue_applications_are_flagged_and_counted_and_an_uncovered_year_is_refused() {
    // On 28 December 2100 the 10 working days reach into 2101, which neither the calendar file
    // nor the statutory rule (2025 to 2100) covers: refused, not guessed.
    let (_dir, config, data_dir) = platform("");
    std::fs::write(config.parent().unwrap().join("calendar/cn.toml"), "[[years]]\nyear = 2025\nholidays = []\n")
        .unwrap();
    let g = Gateway::with_clock(&config, &data_dir, "2100-12-28T02:00:00Z");
    let acme = principal(&g, "acme", "user", None).await;
    let (status, answer) =
        call(&g, Method::POST, "/v1/applications", Some(&acme), Some(application("enterprises"))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("calendar_not_covered")), "{answer}");
    let (_, applications) = g.admin(Method::GET, "/admin/applications", None).await;
    assert_eq!(applications["applications"], json!([]), "nothing stored");

    // An application submitted in June 2025 and never answered is overdue; one decided is not.
    let old = |id: &str, status: &str| {
        json!({"id": id, "applicant": "acme", "dataset": "enterprises", "purpose": "p", "scenario": "s",
               "security_measures": "m", "columns": ["name"], "status": status,
               "submitted_at": "2025-06-02T02:00:00Z", "due_by": "2025-06-16"})
    };
    let db = rusqlite::Connection::open(data_dir.join("kaifang.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for (id, status) in [("ap-old", "submitted"), ("ap-done", "rejected")] {
        db.execute(
            "INSERT INTO applications (id, submitted_at, record) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, "2025-06-02T02:00:00+00:00", old(id, status).to_string()],
        )
        .unwrap();
    }
    let (_, shown) = g.admin(Method::GET, "/admin/applications", None).await;
    let overdue: Vec<(&str, bool)> = shown["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["overdue"].as_bool().unwrap()))
        .collect();
    assert_eq!(overdue, vec![("ap-done", false), ("ap-old", true)]);
    let (_, mine) = call(&g, Method::GET, "/v1/applications/ap-old", Some(&acme), None).await;
    assert_eq!(mine["overdue"], true);
    let s = samples(&scrape(&g).await);
    assert_eq!(value(&s, "kaifang_applications_overdue"), 1.0);
    assert_eq!(value(&s, r#"kaifang_applications{state="submitted"}"#), 1.0);
}

/// A conditionally open dataset of about `bytes` of CSV, owned by the market administration.
pub fn big_register(bytes: usize) -> String {
    format!(
        "\n[[datasets]]\nid = \"register\"\ntitle = \"Register\"\nowner = \"{MARKET}\"\nopen_type = \"conditional\"\n\
         format = \"csv\"\nupdate_frequency = \"daily\"\nlast_updated = \"2025-01-01T00:00:00Z\"\nlicense = \"Agreement\"\n\
         source = {{ file = \"register.csv\" }}\n\
         fields = [{{ name = \"n\", type = \"int64\" }}, {{ name = \"text\", type = \"string\" }}]\n# {bytes}\n"
    )
}

pub fn write_register(data_dir: &Path, bytes: usize) {
    let mut text = String::from("n,text\n");
    let mut n = 0;
    while text.len() < bytes {
        text.push_str(&format!("{n},entry number {n} of the register\n"));
        n += 1;
    }
    std::fs::write(data_dir.join("register.csv"), text).unwrap();
}

/// An agreement for `user` on the whole register, made by the admin API.
async fn register_agreement(g: &Gateway, user: &str) -> String {
    let (status, agreement) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({"principal": user, "dataset": "register", "columns": ["n", "text"],
                        "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 100, "burst": 100},
                        "quota": {"requests_per_day": 1000, "rows_per_day": 100000000, "bytes_per_day": 100000000000u64}})),
        )
        .await;
    assert_eq!(status, 201, "{agreement}");
    agreement["id"].as_str().unwrap().to_owned()
}

/// Reads an answer's body until it ends or breaks; returns whether it broke and the bytes read.
async fn drain(mut response: reqwest::Response) -> (bool, usize) {
    let mut read = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => return (false, read),
            Err(_) => return (true, read),
        }
    }
}

#[tokio::test]
async fn suspending_or_revoking_an_agreement_cuts_its_answer_in_flight_and_refuses_the_next() {
    const SIZE: usize = 48 << 20;
    let (_dir, config, data_dir) = platform(&big_register(SIZE));
    write_register(&data_dir, SIZE);
    let g = Gateway::with_config(&config, &data_dir);
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let acme = principal(&g, "acme", "user", None).await;
    let agreement = register_agreement(&g, "acme").await;
    let url = g.url("/v1/datasets/register/rows?format=csv");

    for (action, resume) in [("suspend", true), ("revoke", false)] {
        let mut response = client().get(&url).bearer_auth(&acme).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().unwrap().len();
        let (status, changed) =
            call(&g, Method::POST, &format!("/v1/agreements/{agreement}/{action}"), Some(&market), None).await;
        assert_eq!(status, 200, "{changed}");
        let changed_at = Instant::now();
        let (broke, read) = drain(response).await;
        assert!(broke, "{action}: the answer must break off, not end as if complete");
        assert!(first + read < SIZE, "{action}: read {} of {SIZE}", first + read);
        assert!(changed_at.elapsed() < Duration::from_secs(1), "{action}: cut after {:?}", changed_at.elapsed());
        let (status, answer) = call(&g, Method::GET, "/v1/datasets/register/rows?limit=1", Some(&acme), None).await;
        assert_eq!(status, 403, "{action}: {answer}");
        if resume {
            let (status, resumed) =
                call(&g, Method::POST, &format!("/v1/agreements/{agreement}/resume"), Some(&market), None).await;
            assert_eq!((status, resumed["status"].as_str()), (200, Some("active")), "{resumed}");
            assert_eq!(call(&g, Method::GET, "/v1/datasets/register/rows?limit=1", Some(&acme), None).await.0, 200);
        }
    }
    let (status, answer) =
        call(&g, Method::POST, &format!("/v1/agreements/{agreement}/resume"), Some(&market), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("already_revoked")), "revoked for good");

    // Every served call has its completion on record; the two cut ones did not complete.
    let audit = client()
        .get(format!("{}/admin/audit?agreement={agreement}", g.admin))
        .bearer_auth(g.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let records: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |kind: &str| records.iter().filter(|r| r["kind"] == kind).collect::<Vec<_>>();
    assert_eq!(of("intent").len(), 3, "two cut answers and the call after resuming:\n{audit}");
    let outcomes: Vec<&str> = of("completion").iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 3, "{audit}");
    assert_eq!(outcomes.iter().filter(|o| **o == "complete").count(), 1, "{outcomes:?}");
}

#[tokio::test]
async fn withdrawal_cuts_answers_in_flight_refuses_every_protocol_traces_recipients_and_reopens() {
    const SIZE: usize = 48 << 20;
    let (_dir, config, data_dir) = platform(&big_register(SIZE));
    write_register(&data_dir, SIZE);
    let g = Gateway::with_config(&config, &data_dir);
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let transport = principal(&g, "transport", "owner", Some(TRANSPORT)).await;
    let mut readers = Vec::new();
    for user in ["acme", "beta", "gamma"] {
        let key = principal(&g, user, "user", None).await;
        register_agreement(&g, user).await;
        readers.push(key);
    }
    // acme and beta receive rows of the register; gamma holds an agreement but reads nothing.
    for key in &readers[..2] {
        let (status, _) = call(&g, Method::GET, "/v1/datasets/register/rows?limit=3", Some(key), None).await;
        assert_eq!(status, 200);
    }

    // A long answer is under way, over HTTP and over Flight, when the owner withdraws.
    let mut http =
        client().get(g.url("/v1/datasets/register/rows?format=csv")).bearer_auth(&readers[0]).send().await.unwrap();
    assert_eq!(http.status(), 200);
    let first = http.chunk().await.unwrap().unwrap().len();
    let mut flight = crate::flight::connect(&g, Some(&readers[1])).await;
    let mut batches = flight.do_get(arrow_flight::Ticket::new("register")).await.unwrap();
    use futures_util::StreamExt;
    assert!(batches.next().await.unwrap().is_ok());

    let (status, answer) =
        call(&g, Method::POST, "/v1/datasets/register/withdraw", Some(&transport), Some(json!({"reason": "x"}))).await;
    assert_eq!(status, 403, "another department cannot withdraw it: {answer}");
    let (status, answer) =
        call(&g, Method::POST, "/v1/datasets/register/withdraw", Some(&market), Some(json!({}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("reason_required")));
    let reason = "Personal data found in the text column";
    let (status, withdrawn) =
        call(&g, Method::POST, "/v1/datasets/register/withdraw", Some(&market), Some(json!({"reason": reason}))).await;
    assert_eq!(status, 200, "{withdrawn}");
    let withdrawn_at = Instant::now();
    let (broke, read) = drain(http).await;
    assert!(broke && first + read < SIZE, "the HTTP answer is cut ({} of {SIZE})", first + read);
    let mut flight_error = None;
    while let Some(item) = batches.next().await {
        if let Err(e) = item {
            flight_error = Some(e);
            break;
        }
    }
    assert!(withdrawn_at.elapsed() < Duration::from_secs(1), "cut after {:?}", withdrawn_at.elapsed());
    let status = crate::flight::status(flight_error.expect("the Flight stream ends in an error"));
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");

    // From the next request: 410 on HTTP with the reason, FailedPrecondition on Flight, not listed.
    for path in ["/v1/datasets/register", "/v1/datasets/register/rows", "/v1/datasets/register/download"] {
        let (status, answer) = call(&g, Method::GET, path, Some(&readers[0]), None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (410, Some("dataset_withdrawn")), "{path}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(reason));
    }
    let e = flight.do_get(arrow_flight::Ticket::new("register")).await.map(|_| ()).unwrap_err();
    assert_eq!(crate::flight::status(e).code(), tonic::Code::FailedPrecondition);
    let (_, catalog) = call(&g, Method::GET, "/v1/catalog?per_page=100", None, None).await;
    assert!(!catalog.to_string().contains("\"register\""), "{catalog}");
    let (status, _) =
        call(&g, Method::POST, "/v1/datasets/register/withdraw", Some(&market), Some(json!({"reason": reason}))).await;
    assert_eq!(status, 409, "already withdrawn");

    // The trace names exactly who received it: acme and beta, not gamma.
    let (status, trace) = g.admin(Method::GET, "/admin/datasets/register/trace", None).await;
    assert_eq!(status, 200, "{trace}");
    let mut principals: Vec<&str> =
        trace["recipients"].as_array().unwrap().iter().map(|r| r["principal"].as_str().unwrap()).collect();
    principals.sort();
    assert_eq!(principals, vec!["acme", "beta"], "{trace}");

    // The owner finds its withdrawals (another department and users do not).
    let (status, listed) = call(&g, Method::GET, "/v1/withdrawals", Some(&market), None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["withdrawals"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (&listed["withdrawals"][0]["dataset"], &listed["withdrawals"][0]["reason"]),
        (&json!("register"), &json!(reason))
    );
    assert_eq!(call(&g, Method::GET, "/v1/withdrawals", Some(&transport), None).await.1["withdrawals"], json!([]));
    let (status, refused) = call(&g, Method::GET, "/v1/withdrawals", Some(&readers[0]), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("wrong_role")), "{refused}");

    // It stays withdrawn across a restart, and reopening is explicit.
    let g = g.restart();
    assert_eq!(call(&g, Method::GET, "/v1/datasets/register", None, None).await.0, 410);
    assert_eq!(call(&g, Method::POST, "/v1/datasets/register/reopen", Some(&transport), None).await.0, 403);
    let (status, reopened) = g.admin(Method::POST, "/admin/datasets/register/reopen", None).await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(reopened["reason"], reason);
    assert!(reopened["reopened_at"].is_string());
    let (status, _) = call(&g, Method::GET, "/v1/datasets/register/rows?limit=1", Some(&readers[2]), None).await;
    assert_eq!(status, 200);
    assert_eq!(g.admin(Method::POST, "/admin/datasets/register/reopen", None).await.0, 404, "not withdrawn now");
}

#[tokio::test]
async fn objections_are_filed_by_anyone_seen_by_their_owner_and_resolved() {
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let transport = principal(&g, "transport", "owner", Some(TRANSPORT)).await;
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let acme = principal(&g, "acme", "user", None).await;
    let path = "/v1/datasets/bus-arrivals/objections";

    let before = snapshot(&g).await;
    let (status, answer) = call(&g, Method::POST, path, None, Some(json!({"description": "Stop 12 is missing"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("bad_body")), "anonymous without contact");
    let (status, _) = call(&g, Method::POST, path, Some(&acme), Some(json!({"description": " "}))).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &g,
        Method::POST,
        "/v1/datasets/subsistence-allowance/objections",
        None,
        Some(json!({"description": "x", "contact": "a@example.org"})),
    )
    .await;
    assert_eq!(status, 404, "non-open datasets take no objections: they are not there");
    assert_eq!(snapshot(&g).await, before);

    let (status, anonymous) = call(
        &g,
        Method::POST,
        path,
        None,
        Some(json!({"description": "Stop 12 (Haizhou Rd) is missing since June", "contact": "resident@example.org"})),
    )
    .await;
    assert_eq!(status, 201, "{anonymous}");
    let (status, keyed) =
        call(&g, Method::POST, path, Some(&acme), Some(json!({"description": "Delays are negative on route K1"})))
            .await;
    assert_eq!(status, 201, "{keyed}");
    let (_, meta) = call(&g, Method::GET, "/v1/datasets/bus-arrivals", None, None).await;
    assert_eq!(meta["open_objections"], 2);

    // Anyone follows an objection; only the owner (and the operators) see the filer's contact.
    let anonymous_id = anonymous["id"].as_str().unwrap();
    let (status, public) = call(&g, Method::GET, &format!("/v1/objections/{anonymous_id}"), None, None).await;
    assert_eq!((status, public["status"].as_str()), (200, Some("open")));
    assert!(public.get("contact").is_none(), "{public}");
    let (_, owned) = call(&g, Method::GET, &format!("/v1/objections/{anonymous_id}"), Some(&transport), None).await;
    assert_eq!(owned["contact"], "resident@example.org");
    let (_, other) = call(&g, Method::GET, &format!("/v1/objections/{anonymous_id}"), Some(&market), None).await;
    assert!(other.get("contact").is_none(), "another owner does not see it: {other}");

    // The owner sees the open objections on its datasets; others do not.
    let (_, open) = call(&g, Method::GET, "/v1/objections?status=open", Some(&transport), None).await;
    assert_eq!(open["objections"].as_array().unwrap().len(), 2, "{open}");
    let (_, none) = call(&g, Method::GET, "/v1/objections?status=open", Some(&market), None).await;
    assert_eq!(none["objections"], json!([]));
    assert_eq!(call(&g, Method::GET, "/v1/objections", Some(&acme), None).await.0, 403);
    assert_eq!(call(&g, Method::GET, "/v1/objections", None, None).await.0, 401);

    // Resolving: the owner only, with a response; refusals change nothing.
    let resolve = format!("/v1/objections/{anonymous_id}/resolve");
    let before = snapshot(&g).await;
    let response = json!({"response": "Stop 12 was added in today's release"});
    assert_eq!(call(&g, Method::POST, &resolve, Some(&market), Some(response.clone())).await.0, 403);
    assert_eq!(call(&g, Method::POST, &resolve, Some(&acme), Some(response.clone())).await.0, 403);
    assert_eq!(call(&g, Method::POST, &resolve, None, Some(response.clone())).await.0, 401);
    let (status, answer) = call(&g, Method::POST, &resolve, Some(&transport), Some(json!({"response": ""}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("response_required")));
    assert_eq!(snapshot(&g).await, before);
    let (status, resolved) = call(&g, Method::POST, &resolve, Some(&transport), Some(response)).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved_by"], "transport");
    assert_eq!(call(&g, Method::POST, &resolve, Some(&transport), Some(json!({"response": "again"}))).await.0, 409);

    let (_, meta) = call(&g, Method::GET, "/v1/datasets/bus-arrivals", None, None).await;
    assert_eq!(meta["open_objections"], 1);
    let (_, catalog) = call(&g, Method::GET, "/v1/catalog?q=bus", None, None).await;
    assert_eq!(catalog["datasets"][0]["open_objections"], 1);
    // The counts are held in memory between changes: catalog calls do not read the store.
    let lookups = |s: &std::collections::HashMap<String, f64>, result: &str| {
        value(s, &format!(r#"kaifang_cache_lookups_total{{cache="objections",result="{result}"}}"#))
    };
    let before = samples(&scrape(&g).await);
    for _ in 0..20 {
        let (_, catalog) = call(&g, Method::GET, "/v1/catalog?q=bus", None, None).await;
        assert_eq!(catalog["datasets"][0]["open_objections"], 1);
    }
    let after = samples(&scrape(&g).await);
    assert_eq!(lookups(&after, "miss"), lookups(&before, "miss"), "a catalog call read the store");
    assert_eq!(lookups(&after, "hit") - lookups(&before, "hit"), 20.0);
    // A wrong method is a 405 naming the methods the endpoint takes, whoever calls.
    for (method, path, allow) in [
        (Method::GET, "/v1/datasets/bus-arrivals/objections", "POST"),
        (Method::DELETE, "/v1/applications", "GET, HEAD, POST"),
        (Method::POST, "/v1/datasets/bus-arrivals/draft", "GET, HEAD, PUT"),
    ] {
        let r = client().request(method.clone(), g.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    let s = samples(&scrape(&g).await);
    assert_eq!(value(&s, r#"kaifang_objections{state="open"}"#), 1.0);
    assert_eq!(value(&s, r#"kaifang_objections{state="resolved"}"#), 1.0);

    let g = g.restart();
    let (_, public) = call(&g, Method::GET, &format!("/v1/objections/{anonymous_id}"), None, None).await;
    assert_eq!(public["response"], "Stop 12 was added in today's release");
}

/// A webhook receiver that answers 500 to the first `failures` calls and 204 after; it sends
/// every body it took on the channel, with the time it came.
/// A notification as a webhook receiver got it.
#[derive(Debug)]
pub struct Delivery {
    pub at: Instant,
    /// When it arrived, for its timestamp to be checked against.
    received: std::time::SystemTime,
    pub body: Value,
    raw: Vec<u8>,
    timestamp: Option<String>,
    signature: Option<String>,
}

impl Delivery {
    /// Checks the signature headers as a receiver holding `key` would, and that the timestamp
    /// is this attempt's.
    pub fn assert_signed(&self, key: &str) {
        let timestamp = self.timestamp.as_deref().expect("an X-Kaifang-Timestamp header");
        let sent: i64 = timestamp.parse().unwrap();
        let received = self.received.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((received - sent).abs() <= 2, "timestamp {sent}, received at {received}");
        assert!(self.signed_with(key), "signature {:?} of {}", self.signature, self.body);
    }

    /// Whether `X-Kaifang-Signature` is that of the timestamp and body under `key`.
    fn signed_with(&self, key: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{}.", self.timestamp.as_deref().unwrap_or_default()).as_bytes());
        mac.update(&self.raw);
        self.signature == Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
    }
}

/// A department's webhook key, computed as a receiver's documentation says: the hex
/// HMAC-SHA256 of the department's name under the platform's signing secret.
pub fn department_key(secret: &str, department: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(department.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub async fn receiver(failures: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/market", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut calls = 0;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            // Read the head, then as much body as Content-Length says.
            let (mut timestamp, mut signature) = (None, None);
            let body = loop {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let header = |name: &str| {
                        text[..end].lines().find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                    };
                    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                    (timestamp, signature) = (header("x-kaifang-timestamp"), header("x-kaifang-signature"));
                    if request.len() >= end + 4 + length {
                        break Some(request[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            calls += 1;
            let status = if calls <= failures { "500 Internal Server Error" } else { "204 No Content" };
            let _ = socket
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
            let _ = tx.send(Delivery {
                at: Instant::now(),
                received: std::time::SystemTime::now(),
                body: serde_json::from_slice(&body).unwrap(),
                raw: body,
                timestamp,
                signature,
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn owners_hear_of_applications_objections_and_deadlines_by_webhook_retried_with_backoff() {
    let (url, mut received) = receiver(2).await;
    // Reminders when 20 working days or fewer are left: every new application is that close.
    let (_dir, config, data_dir) =
        platform(&format!("\n[webhooks]\nremind_within_working_days = 20\nowners = {{ \"{MARKET}\" = \"{url}\" }}\n"));
    let g = Gateway::with_config(&config, &data_dir);
    let acme = principal(&g, "acme", "user", None).await;
    let (status, applied) =
        call(&g, Method::POST, "/v1/applications", Some(&acme), Some(application("enterprises"))).await;
    assert_eq!(status, 201, "{applied}");
    let (status, _) = call(
        &g,
        Method::POST,
        "/v1/datasets/enterprises/objections",
        Some(&acme),
        Some(json!({"description": "Two enterprises share one credit code"})),
    )
    .await;
    assert_eq!(status, 201);
    // Transport has no webhook: its objections notify nobody.
    let (status, _) = call(
        &g,
        Method::POST,
        "/v1/datasets/bus-arrivals/objections",
        Some(&acme),
        Some(json!({"description": "Route K9 is missing"})),
    )
    .await;
    assert_eq!(status, 201);

    // The first two attempts fail (500); each failed one is sent again, a second or more later.
    let mut delivered = Vec::new();
    let started = Instant::now();
    while delivered.len() < 5 && started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(30), received.recv()).await {
            delivered.push(item);
        }
    }
    assert_eq!(delivered.len(), 5, "three notifications, two of them tried twice: {delivered:?}");
    // Every attempt is signed with the department's key, which the operator's command prints
    // and which is derived from the secret the gateway made in its data directory.
    let printed = Command::new(BIN)
        .args(["webhooks", "key", "--department", MARKET, "--config", config.to_str().unwrap()])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let key = String::from_utf8(printed.stdout).unwrap().trim().to_owned();
    let secret = std::fs::read_to_string(data_dir.join("webhook-signing.key")).unwrap();
    assert_eq!(key, department_key(secret.trim(), MARKET));
    for delivery in &delivered {
        delivery.assert_signed(&key);
    }
    let unknown = Command::new(BIN)
        .args(["webhooks", "key", "--department", "Nobody", "--config", config.to_str().unwrap()])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no webhook is configured"));
    let delivered: Vec<(Instant, Value)> = delivered.into_iter().map(|d| (d.at, d.body)).collect();
    let mut retried = 0;
    for (i, (at, body)) in delivered.iter().enumerate() {
        if let Some((again, _)) = delivered[i + 1..].iter().find(|(_, b)| b["id"] == body["id"]) {
            retried += 1;
            let gap = *again - *at;
            assert!(gap >= Duration::from_millis(900), "backoff of at least a second, not {gap:?}");
        }
    }
    assert_eq!(retried, 2, "{delivered:?}");
    let mut events: Vec<(String, String)> = delivered
        .iter()
        .map(|(_, body)| (body["id"].as_str().unwrap().to_owned(), body["event"].as_str().unwrap().to_owned()))
        .collect();
    events.sort();
    events.dedup();
    let mut kinds: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, vec!["application_submitted", "deadline_approaching", "objection_filed"], "{events:?}");
    for (_, body) in &delivered {
        assert_eq!(body["department"], MARKET);
    }
    let application = delivered.iter().find(|(_, b)| b["event"] == "application_submitted").unwrap();
    assert_eq!(application.1["details"]["application"], applied["id"]);
    assert_eq!(application.1["details"]["due_by"], applied["due_by"]);

    // The outbox says the same, and the metrics count the attempts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, outbox) = g.admin(Method::GET, "/admin/notifications", None).await;
    let outbox = outbox["notifications"].as_array().unwrap();
    assert_eq!(outbox.len(), 3);
    assert!(outbox.iter().all(|n| n["delivered_at"].is_string()), "{outbox:?}");
    let s = samples(&scrape(&g).await);
    assert_eq!(value(&s, r#"kaifang_webhook_deliveries_total{result="delivered"}"#), 3.0);
    assert_eq!(value(&s, r#"kaifang_webhook_deliveries_total{result="retried"}"#), 2.0);

    // A reminder is sent once per application, also across a restart.
    let g = g.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, outbox) = g.admin(Method::GET, "/admin/notifications", None).await;
    assert_eq!(outbox["notifications"].as_array().unwrap().len(), 3);
}
