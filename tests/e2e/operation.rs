//! The operation report over a period seeded with known events: each of its figures checked
//! against the seed, on the admin API in each format and from `kaifang report`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, Gateway, BIN};
use crate::workflows::{
    application, call, licences_draft, platform, principal, tenth_weekday_after, terms, MARKET, TRANSPORT,
};

const ECOLOGY: &str = "Municipal Ecology and Environment Bureau";
const CIVIL_AFFAIRS: &str = "Municipal Civil Affairs Bureau";

/// 10:00 in the platform's time zone (UTC+8) on `day`, as the workflows' clock takes it.
fn ten_am(day: NaiveDate) -> String {
    format!("{day}T02:00:00Z")
}

/// The operation report the admin API answers for `query`.
async fn report(g: &Gateway, query: &str) -> reqwest::Response {
    client().get(format!("{}/admin/report?{query}", g.admin)).bearer_auth(g.admin_token()).send().await.unwrap()
}

async fn report_json(g: &Gateway, query: &str) -> Value {
    let r = report(g, query).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// `key`'s principal applies for the enterprises dataset; the application's id.
async fn apply(g: &Gateway, key: &str) -> String {
    let (status, applied) =
        call(g, Method::POST, "/v1/applications", Some(key), Some(application("enterprises"))).await;
    assert_eq!(status, 201, "{applied}");
    applied["id"].as_str().unwrap().to_owned()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[tokio::test]
async fn the_operation_report_gives_every_figure_of_a_seeded_period() {
    // Applications are submitted and decided on the workflows' clock, set to days around today
    // (every other event, and every audit record, is at the real time): the period runs from
    // a Monday four weeks back to five weeks on.
    let today = (Utc::now() + Duration::hours(8)).date_naive();
    let back = today - Duration::days(28);
    let t0 = back - Duration::days(i64::from(back.weekday().num_days_from_monday()));
    let (from, to) = (t0, t0 + Duration::days(40));
    let period = format!("from={from}&to={to}");
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_clock(&config, &data_dir, &ten_am(t0));
    let market = principal(&g, "market", "owner", Some(MARKET)).await;
    let acme = principal(&g, "acme", "user", None).await;
    let beta = principal(&g, "beta", "user", None).await;

    // Day 0: two applications; acme's is approved the same day.
    let a1 = apply(&g, &acme).await;
    let a2 = apply(&g, &beta).await;
    let (status, approved) =
        call(&g, Method::POST, &format!("/v1/applications/{a1}/approve"), Some(&market), Some(terms())).await;
    assert_eq!(status, 200, "{approved}");
    let agreement = approved["agreement"]["id"].as_str().unwrap().to_owned();
    // Day 18 (a Friday): beta's is rejected, 4 working days past its due day (day 14); beta
    // applies again, due on day 32.
    let g = g.restart_at(&ten_am(t0 + Duration::days(18)));
    let reason = "The purpose does not need the mobile numbers";
    let (status, _) = call(
        &g,
        Method::POST,
        &format!("/v1/applications/{a2}/reject"),
        Some(&market),
        Some(json!({"reason": reason})),
    )
    .await;
    assert_eq!(status, 200);
    let a3 = apply(&g, &beta).await;
    // Day 35 (a Monday), a week past today: the third is overdue by one working day.
    let g = g.restart_at(&ten_am(t0 + Duration::days(35)));
    assert_eq!(tenth_weekday_after(t0), t0 + Duration::days(14));
    assert_eq!(tenth_weekday_after(t0 + Duration::days(18)), t0 + Duration::days(32));

    // The catalog: a draft published by the operators, another waiting.
    let (_, enterprises) = call(&g, Method::GET, "/v1/datasets/enterprises", None, None).await;
    let draft = licences_draft(&enterprises["fields"]);
    assert_eq!(call(&g, Method::PUT, "/v1/datasets/licences/draft", Some(&market), Some(draft.clone())).await.0, 200);
    let (status, published) =
        g.admin(Method::POST, "/admin/datasets/licences/publish", Some(json!({"draft_version": 1}))).await;
    assert_eq!(status, 200, "{published}");
    let mut permits = draft.clone();
    permits["title"] = json!("Trade permits");
    assert_eq!(call(&g, Method::PUT, "/v1/datasets/permits/draft", Some(&market), Some(permits)).await.0, 200);

    // Conditional calls: three served (two rows each), one refused.
    for _ in 0..3 {
        let (status, rows) = call(&g, Method::GET, "/v1/datasets/enterprises/rows?limit=2", Some(&acme), None).await;
        assert_eq!((status, rows.as_array().map(Vec::len)), (200, Some(2)), "{rows}");
    }
    let (status, _) =
        call(&g, Method::GET, "/v1/datasets/enterprises/rows?columns=registered_capital", Some(&acme), None).await;
    assert_eq!(status, 403);
    // Unconditional calls, recorded nowhere but in the gateway's counters (the third answered
    // from the answer kept after the second).
    for _ in 0..3 {
        let (status, rows) = call(&g, Method::GET, "/v1/datasets/air-quality/rows?limit=2", None, None).await;
        assert_eq!((status, rows.as_array().map(Vec::len)), (200, Some(2)), "{rows}");
    }
    let (_, used) = call(&g, Method::GET, &format!("/v1/agreements/{agreement}"), Some(&acme), None).await;
    let used = used["used_today"]["requests"].as_u64().unwrap();
    assert!(used >= 3, "{used}");
    // Feedback, objections (one answered), a misuse report, a withdrawal and its reopening.
    let (status, _) = call(
        &g,
        Method::POST,
        &format!("/v1/agreements/{agreement}/feedback"),
        Some(&acme),
        Some(json!({"usage": "Checked 6 suppliers"})),
    )
    .await;
    assert_eq!(status, 201);
    let object = |dataset: &str| {
        let g = &g;
        let path = format!("/v1/datasets/{dataset}/objections");
        async move {
            let body = json!({"description": "A wrong value", "contact": "reader@example.org"});
            let (status, filed) = call(g, Method::POST, &path, None, Some(body)).await;
            assert_eq!(status, 201, "{filed}");
            filed["id"].as_str().unwrap().to_owned()
        }
    };
    let answered = object("enterprises").await;
    let open = object("bus-arrivals").await;
    let (status, _) = call(
        &g,
        Method::POST,
        &format!("/v1/objections/{answered}/resolve"),
        Some(&market),
        Some(json!({"response": "Corrected"})),
    )
    .await;
    assert_eq!(status, 200);
    let misuse = json!({"dataset": "enterprises", "description": "Republished unmasked", "contact": "w@example.org"});
    assert_eq!(call(&g, Method::POST, "/v1/reports", None, Some(misuse)).await.0, 201);
    let withdrawal = "Personal data found in a published column";
    let (status, _) =
        call(&g, Method::POST, "/v1/datasets/enterprises/withdraw", Some(&market), Some(json!({"reason": withdrawal})))
            .await;
    assert_eq!(status, 200);
    assert_eq!(call(&g, Method::POST, "/v1/datasets/enterprises/reopen", Some(&market), None).await.0, 200);
    // The counters and the quotas' usage are kept in the store by a gateway that stops (and
    // every minute and every second while it runs).
    let mut g = g;
    g.signal("TERM");
    assert!(g.wait_exit(std::time::Duration::from_secs(20)).is_some_and(|s| s.success()));
    let g = g.restart_at(&ten_am(t0 + Duration::days(35)));

    let r = report_json(&g, &period).await;
    assert_eq!(r["period"], json!({"from": from.to_string(), "to": to.to_string()}));
    assert_eq!((&r["time_zone"], &r["owner"]), (&json!("+08:00"), &Value::Null));
    let now: DateTime<Utc> = r["generated_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(now.date_naive(), t0 + Duration::days(35), "the workflows' clock");

    // The catalog.
    let owners = &r["catalog"]["by_owner"];
    assert_eq!(
        *owners,
        json!([
            {"owner": CIVIL_AFFAIRS, "unconditional": 0, "conditional": 0, "non_open": 1, "withdrawn_now": 0},
            {"owner": ECOLOGY, "unconditional": 1, "conditional": 0, "non_open": 0, "withdrawn_now": 0},
            {"owner": MARKET, "unconditional": 0, "conditional": 2, "non_open": 0, "withdrawn_now": 0},
            {"owner": TRANSPORT, "unconditional": 2, "conditional": 0, "non_open": 0, "withdrawn_now": 0},
        ])
    );
    let publications = r["catalog"]["published"].as_array().unwrap();
    assert_eq!(publications.len(), 1);
    assert_eq!(
        (&publications[0]["dataset"], &publications[0]["version"], &publications[0]["written_by"]),
        (&json!("licences"), &json!(1), &json!("operator"))
    );
    assert_eq!((&r["catalog"]["changed"], &r["catalog"]["withdrawn"]), (&json!(0), &json!(1)));
    let pending: Vec<&Value> =
        r["catalog"]["drafts_pending"].as_array().unwrap().iter().map(|d| &d["dataset"]).collect();
    assert_eq!(pending, [&json!("permits")]);

    // Data quality: every late entry is late by its declared frequency, as of the report's now.
    let late = r["quality"]["late"].as_array().unwrap();
    let period_of = |frequency: &str| match frequency {
        "realtime" | "hourly" => Duration::hours(1),
        "daily" => Duration::days(1),
        other => panic!("no {other} dataset in the demo"),
    };
    for entry in late {
        let last: DateTime<Utc> = entry["last_updated"].as_str().unwrap().parse().unwrap();
        let days =
            (now - last - period_of(entry["update_frequency"].as_str().unwrap())).num_seconds() as f64 / 86_400.0;
        assert_eq!(entry["days_late"].as_f64().unwrap(), round1(days), "{entry}");
    }
    let mut late_ids: Vec<&str> = late.iter().map(|e| e["dataset"].as_str().unwrap()).collect();
    late_ids.sort_unstable();
    late_ids.retain(|d| *d != "licences");
    assert_eq!(late_ids, ["air-quality", "bus-arrivals", "enterprises", "parking-lots"], "the demo's 2025 data");
    for row in r["quality"]["freshness"].as_array().unwrap() {
        let owner = row["owner"].as_str().unwrap();
        let late_here = late.iter().filter(|e| e["owner"] == owner).count() as u64;
        let datasets = row["datasets"].as_u64().unwrap();
        assert_eq!(row["up_to_date"].as_u64().unwrap(), datasets - late_here, "{row}");
    }
    let objections = &r["quality"]["objections"];
    assert_eq!(
        (&objections["filed"], &objections["resolved"], &objections["open"]),
        (&json!(2), &json!(1), &json!(1)),
        "{objections}"
    );
    let items = objections["items"].as_array().unwrap();
    let resolved = items.iter().find(|o| o["id"] == answered.as_str()).unwrap();
    assert!(resolved["hours_to_resolve"].as_f64().unwrap() < 0.1, "{resolved}");
    assert!(items.iter().any(|o| o["id"] == open.as_str() && o["resolved_at"].is_null()));
    let withdrawals = r["quality"]["withdrawals"].as_array().unwrap();
    assert_eq!(withdrawals.len(), 1);
    assert_eq!((&withdrawals[0]["dataset"], &withdrawals[0]["reason"]), (&json!("enterprises"), &json!(withdrawal)));
    assert!(withdrawals[0]["reopened_at"].is_string());
    let recipients = withdrawals[0]["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "{recipients:?}");
    assert_eq!(
        (&recipients[0]["principal"], &recipients[0]["agreement"], &recipients[0]["calls"], &recipients[0]["rows"]),
        (&json!("acme"), &json!(agreement), &json!(3), &json!(6))
    );

    // Applications: one answered in time, one 4 working days late, one overdue by 1.
    let apps = &r["applications"];
    assert_eq!(
        apps["by_owner"],
        json!([{"owner": MARKET, "received": 3, "approved": 1, "rejected": 1, "decided_in_time": 1,
                "decided_late": 1, "pending": 1, "overdue": 1, "median_working_days_to_decision": 7.0}])
    );
    assert_eq!(
        apps["rejections"],
        json!([{"application": a2, "dataset": "enterprises", "owner": MARKET, "applicant": "beta", "reason": reason}])
    );
    let late_answer = &apps["answered_late"][0];
    assert_eq!((&late_answer["application"], &late_answer["working_days_late"]), (&json!(a2), &json!(4)));
    assert_eq!(late_answer["due_by"], (t0 + Duration::days(14)).to_string());
    let overdue = &apps["overdue"][0];
    assert_eq!((&overdue["application"], &overdue["working_days_late"]), (&json!(a3), &json!(1)));
    assert_eq!(apps["owners_not_in_time"], json!([MARKET]));

    // The use of conditional data.
    let used_in = &r["conditional_use"];
    assert_eq!(
        used_in["by_dataset"],
        json!([{"dataset": "enterprises", "owner": MARKET, "calls": 3, "refused": 1, "rows": 6,
                "bytes": used_in["by_dataset"][0]["bytes"], "consumers": 1}])
    );
    assert!(used_in["by_dataset"][0]["bytes"].as_u64().unwrap() > 0);
    let by_agreement = used_in["by_agreement"].as_array().unwrap();
    let ours = by_agreement.iter().find(|a| a["agreement"] == agreement.as_str()).expect("acme's agreement");
    assert_eq!((&ours["principal"], &ours["calls"], &ours["rows"]), (&json!("acme"), &json!(3), &json!(6)));
    assert_eq!(ours["refused"], json!({"column_outside_scope": 1}), "the refusal, on acme's one agreement");
    assert_eq!(ours["peak_quota_percent"]["requests"].as_f64().unwrap(), round1(used as f64 * 100.0 / 1000.0));
    assert_eq!(used_in["refusals"], json!({"column_outside_scope": 1}));
    assert_eq!(used_in["by_hour"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>(), 3);
    assert_eq!(used_in["consumers"], 1);
    let feedback = used_in["feedback"].as_array().unwrap();
    assert_eq!((feedback.len(), &feedback[0]["usage"]), (1, &json!("Checked 6 suppliers")));
    // Every data call, from the gateway's own counters.
    let traffic = &r["traffic"];
    let by_dataset = traffic["by_dataset"].as_array().unwrap();
    assert_eq!(by_dataset.len(), 2, "{traffic}");
    assert_eq!(
        (&by_dataset[0]["dataset"], &by_dataset[0]["open_type"], &by_dataset[0]["calls"], &by_dataset[0]["refused"]),
        (&json!("enterprises"), &json!("conditional"), &json!(4), &json!(1))
    );
    assert_eq!(
        (&by_dataset[1]["dataset"], &by_dataset[1]["open_type"], &by_dataset[1]["calls"], &by_dataset[1]["failed"]),
        (&json!("air-quality"), &json!("unconditional"), &json!(3), &json!(0))
    );
    assert!(by_dataset.iter().all(|d| d["bytes"].as_u64().unwrap() > 0));
    assert!(by_dataset.iter().all(|d| d["rows"] == 6), "two rows for each served call: {traffic}");
    assert_eq!(traffic["by_hour"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>(), 7);
    for t in traffic["by_open_type"].as_array().unwrap() {
        let calls = if t["open_type"] == "conditional" { 4 } else { 3 };
        assert_eq!((&t["calls"], &t["rows"]), (&json!(calls), &json!(6)), "{t}");
        let (p50, p99) = (t["p50_ms"].as_f64().unwrap(), t["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{t}");
    }
    let platform = &r["platform"];
    assert_eq!(
        (&platform["calls"], &platform["failed"], &platform["availability_percent"]),
        (&json!(7), &json!(0), &json!(100.0))
    );
    assert_eq!((&platform["audit_write_failures"], &platform["limit_refusals"]), (&json!(0), &json!({})));
    let misuse = r["misuse_reports"].as_array().unwrap();
    assert_eq!((misuse.len(), &misuse[0]["description"]), (1, &json!("Republished unmasked")));
    let chains = r["platform"]["audit_chains"].as_array().unwrap();
    assert_eq!((chains.len(), &chains[0]["verified"]), (1, &json!(true)), "{chains:?}");
    assert!(chains[0]["records"].as_u64().unwrap() >= 7, "3 calls served, 1 refused");

    // One owner's report: its datasets only.
    let transport = report_json(&g, &format!("{period}&owner={}", TRANSPORT.replace(' ', "%20"))).await;
    assert_eq!(transport["owner"], TRANSPORT);
    assert_eq!(transport["catalog"]["by_owner"].as_array().unwrap().len(), 1);
    assert_eq!(transport["applications"]["by_owner"], json!([]));
    assert_eq!(transport["conditional_use"]["by_dataset"], json!([]));
    assert_eq!(transport["traffic"]["by_dataset"], json!([]), "the transport bureau's datasets had no call");
    assert_eq!(
        (&transport["quality"]["objections"]["filed"], &transport["quality"]["objections"]["open"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(transport["quality"]["withdrawals"], json!([]));
    assert_eq!(transport["misuse_reports"], json!([]));

    // HTML with its charts inline; PDF where Chromium is installed, a clear refusal where not.
    let html = report(&g, &format!("{period}&format=html")).await;
    assert_eq!(html.status(), 200);
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let html = html.text().await.unwrap();
    assert_eq!(html.matches("<svg").count(), 6, "the charts are inline");
    assert!(html.contains(reason) && html.contains(withdrawal) && html.contains(MARKET));
    assert!(!html.contains("<script"), "nothing to run to read it");
    let pdf = report(&g, &format!("{period}&format=pdf")).await;
    if which("chromium") {
        assert_eq!(pdf.status(), 200);
        assert_eq!(pdf.headers()["content-type"], "application/pdf");
        assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-"));
    } else {
        assert_eq!(pdf.status(), 503);
        let body: Value = pdf.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("Chromium"), "{body}");
    }

    // Bad requests are refused, saying what is wrong.
    for (query, says) in [
        ("to=2026-01-01".to_owned(), "`from` is required"),
        (format!("from=2026-13-01&to={to}"), "`from`: `2026-13-01` is not a day"),
        (format!("from={to}&to={from}"), "ends"),
        (format!("{period}&format=xml"), "`format`: `xml`"),
        ("from=2020-01-01&to=2026-01-01".to_owned(), "at most"),
    ] {
        let r = report(&g, &query).await;
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }

    // `kaifang report` gives the same report from the data directory.
    let out = std::process::Command::new(BIN)
        .args(["report", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .args(["--from", &from.to_string(), "--to", &to.to_string(), "--format", "json"])
        .env("KAIFANG_TEST_NOW", ten_am(t0 + Duration::days(35)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    for section in ["catalog", "applications", "traffic", "conditional_use", "misuse_reports", "platform"] {
        assert_eq!(cli[section], r[section], "{section}");
    }
    let html_out = data_dir.join("report.html");
    let out = std::process::Command::new(BIN)
        .args(["report", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .args(["--from", &from.to_string(), "--to", &to.to_string(), "--out", html_out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&html_out).unwrap().contains("<svg"), "the format follows --out's extension");
}

/// The report's JSON form is documented in the admin API's OpenAPI document.
#[tokio::test]
async fn the_report_is_in_the_admin_document() {
    let g = Gateway::demo();
    let (status, document) = g.admin(Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(status, 200);
    let operation = &document["paths"]["/admin/report"]["get"];
    assert_eq!(
        operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/OperationReport"
    );
    let schema = &document["components"]["schemas"]["OperationReport"];
    for section in
        ["period", "catalog", "quality", "applications", "traffic", "conditional_use", "misuse_reports", "platform"]
    {
        assert!(schema["properties"][section].is_object(), "{section}: {schema}");
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
