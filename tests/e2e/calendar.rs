//! Application deadlines across a year the calendar file does not have yet: counted on the
//! statutory holidays and said to be provisional, then counted again on the official
//! arrangement once it is added (reload or restart), with the overdue flag, the reminders and
//! the metrics on the recounted day; and `kaifang calendar check`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{Gateway, BIN};
use crate::metrics::{samples, scrape, value};
use crate::workflows::{application, call, platform, principal, receiver, Delivery, MARKET};

/// The shipped calendar: the State Council's arrangements for 2025 and 2026.
const SHIPPED_CALENDAR: &str = include_str!("../../config/calendar/cn.toml");

/// A 2027 arrangement for the tests (not the published one): 1 to 4 January off, one day more
/// than the statute's New Year's Day.
const TEST_2027: &str =
    "\n[[years]]\nyear = 2027\nsource = \"test arrangement\"\nholidays = [\"2027-01-01/2027-01-04\"]\n";

/// Monday 28 December 2026, 10:00 in Beijing.
const SUBMITTED: &str = "2026-12-28T02:00:00Z";

/// Counted by hand from Mon 28 Dec 2026 on the statutory holidays of 2027: 29 30 31,
/// [Fri 1 Jan New Year's Day], 4 5 6 7 8 | 11 12.
const PROVISIONAL_DUE: &str = "2027-01-12";
/// And on [`TEST_2027`]: 29 30 31, [1-4 Jan off], 5 6 7 8 | 11 12 13.
const OFFICIAL_DUE: &str = "2027-01-13";

/// The platform with the shipped calendar and a webhook for the market department's owners.
fn site(webhook: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (dir, config, data_dir) = platform(&format!("\n[webhooks]\nowners = {{ \"{MARKET}\" = \"{webhook}\" }}\n"));
    std::fs::write(calendar_file(&config), SHIPPED_CALENDAR).unwrap();
    (dir, config, data_dir)
}

fn calendar_file(config: &Path) -> std::path::PathBuf {
    config.parent().unwrap().join("calendar/cn.toml")
}

fn add_2027(config: &Path) {
    std::fs::write(calendar_file(config), format!("{SHIPPED_CALENDAR}{TEST_2027}")).unwrap();
}

/// The due day as an answer shows it: `due_by`, `due_by_provisional`, `due_by_provisional_years`.
fn due(answer: &Value) -> (String, bool, Value) {
    (
        answer["due_by"].as_str().unwrap_or_else(|| panic!("no due_by in {answer}")).to_owned(),
        answer["due_by_provisional"].as_bool().unwrap_or_else(|| panic!("no due_by_provisional in {answer}")),
        answer["due_by_provisional_years"].clone(),
    )
}

fn provisional() -> (String, bool, Value) {
    (PROVISIONAL_DUE.to_owned(), true, json!([2027]))
}

fn official() -> (String, bool, Value) {
    (OFFICIAL_DUE.to_owned(), false, json!([]))
}

/// The application as the applicant, the owner and the operators see it, one by one and in
/// the lists.
async fn every_answer(g: &Gateway, id: &str, user: &str, owner: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for key in [user, owner] {
        let (status, one) = call(g, Method::GET, &format!("/v1/applications/{id}"), Some(key), None).await;
        assert_eq!(status, 200, "{one}");
        answers.push(one);
        let (status, list) = call(g, Method::GET, "/v1/applications", Some(key), None).await;
        assert_eq!(status, 200, "{list}");
        answers.push(list["applications"][0].clone());
    }
    let (status, list) = g.admin(Method::GET, "/admin/applications", None).await;
    assert_eq!(status, 200, "{list}");
    answers.push(list["applications"][0].clone());
    answers
}

/// The next notification of `event` the receiver gets, within 30 s.
async fn next_event(received: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivery = tokio::time::timeout_at(deadline, received.recv())
            .await
            .unwrap_or_else(|_| panic!("no {event} notification within 30 s"))
            .expect("the receiver runs");
        if delivery.body["event"] == event {
            return delivery.body;
        }
    }
}

async fn gauge(g: &Gateway, name: &str) -> f64 {
    value(&samples(&scrape(g).await), name)
}

#[tokio::test]
async fn an_application_into_an_unpublished_year_is_due_provisionally_until_the_year_is_added_and_reloaded() {
    let (url, mut received) = receiver(0).await;
    let (_dir, config, data_dir) = site(&url);
    let g = Gateway::with_clock(&config, &data_dir, SUBMITTED);
    let acme = principal(&g, "acme", "user", None).await;
    let owner = principal(&g, "market-owner", "owner", Some(MARKET)).await;

    // Submitted on 28 December 2026: its 10 working days reach into 2027, which the calendar
    // file lacks. Counted on the statutory holidays, not refused.
    let (status, applied) =
        call(&g, Method::POST, "/v1/applications", Some(&acme), Some(application("enterprises"))).await;
    assert_eq!(status, 201, "{applied}");
    assert_eq!(applied["submitted_at"].as_str().unwrap().get(..10), Some("2026-12-28"), "{applied}");
    assert_eq!(due(&applied), provisional());
    assert_eq!(applied["overdue"], false);
    let id = applied["id"].as_str().unwrap().to_owned();
    for answer in every_answer(&g, &id, &acme, &owner).await {
        assert_eq!(due(&answer), provisional(), "{answer}");
    }
    let submitted = next_event(&mut received, "application_submitted").await;
    assert_eq!(
        (&submitted["details"]["due_by"], &submitted["details"]["due_by_provisional"]),
        (&json!(PROVISIONAL_DUE), &json!(true)),
        "{submitted}"
    );
    assert_eq!(gauge(&g, "kaifang_applications_due_provisionally").await, 1.0);

    // The 2027 arrangement is added and the configuration reloaded: counted again, officially.
    add_2027(&config);
    let (status, reloaded) = g.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["applications_recounted"], 1, "{reloaded}");
    assert_eq!(reloaded["restart_required"], json!([]), "a calendar takes effect on reload: {reloaded}");
    for answer in every_answer(&g, &id, &acme, &owner).await {
        assert_eq!(due(&answer), official(), "{answer}");
    }
    assert_eq!(gauge(&g, "kaifang_applications_due_provisionally").await, 0.0);
    // Nothing more to count: a second reload changes nothing.
    let (_, again) = g.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!(again["applications_recounted"], 0, "{again}");

    // Monday 11 January 2027: two working days are left (11, 12 were the provisional count's
    // last). The owner is reminded of the recounted day.
    let g = g.restart_at("2027-01-11T02:00:00Z");
    let reminder = next_event(&mut received, "deadline_approaching").await;
    assert_eq!(reminder["details"]["application"], json!(id));
    assert_eq!(
        (
            &reminder["details"]["due_by"],
            &reminder["details"]["due_by_provisional"],
            &reminder["details"]["working_days_left"]
        ),
        (&json!(OFFICIAL_DUE), &json!(false), &json!(2)),
        "{reminder}"
    );

    // Wednesday 13 January 2027: past the provisional day, not past the recounted one.
    let g = g.restart_at("2027-01-13T02:00:00Z");
    for answer in every_answer(&g, &id, &acme, &owner).await {
        assert_eq!(due(&answer), official(), "a restart keeps the recounted day: {answer}");
        assert_eq!(answer["overdue"], false, "{answer}");
    }
    assert_eq!(gauge(&g, "kaifang_applications_overdue").await, 0.0);

    // Thursday 14 January 2027: overdue.
    let g = g.restart_at("2027-01-14T02:00:00Z");
    let (_, shown) = call(&g, Method::GET, &format!("/v1/applications/{id}"), Some(&acme), None).await;
    assert_eq!((due(&shown), &shown["overdue"]), (official(), &json!(true)), "{shown}");
    assert_eq!(gauge(&g, "kaifang_applications_overdue").await, 1.0);
}

#[tokio::test]
async fn a_year_added_while_the_gateway_is_stopped_is_counted_on_at_the_next_start() {
    let (url, _received) = receiver(0).await;
    let (_dir, config, data_dir) = site(&url);
    let g = Gateway::with_clock(&config, &data_dir, SUBMITTED);
    let acme = principal(&g, "acme", "user", None).await;
    let (status, applied) =
        call(&g, Method::POST, "/v1/applications", Some(&acme), Some(application("enterprises"))).await;
    assert_eq!((status, due(&applied)), (201, provisional()), "{applied}");
    let id = applied["id"].as_str().unwrap().to_owned();

    // A restart on the same file keeps it provisional; one after the year is added does not.
    let g = g.restart();
    let (_, shown) = call(&g, Method::GET, &format!("/v1/applications/{id}"), Some(&acme), None).await;
    assert_eq!(due(&shown), provisional(), "{shown}");
    add_2027(&config);
    let g = g.restart();
    let (_, shown) = call(&g, Method::GET, &format!("/v1/applications/{id}"), Some(&acme), None).await;
    assert_eq!(due(&shown), official(), "{shown}");
}

#[tokio::test]
async fn a_calendar_file_is_checked_with_its_official_and_provisional_years() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cn.toml");
    let check = |file: &Path| Command::new(BIN).args(["calendar", "check", file.to_str().unwrap()]).output().unwrap();

    std::fs::write(&file, SHIPPED_CALENDAR).unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("official: 2025-2026\n"), "{stdout}");
    assert!(stdout.contains("no make-up working days): 2027-2100\n"), "{stdout}");
    // The next provisional year's days off, with the days given back for weekend holidays.
    for line in [
        "2027-02-05 Fri  Spring Festival (春节)",
        "2027-02-09 Tue  Spring Festival (春节), given back",
        "2027-04-05 Mon  Qingming (清明节)",
        "2027-10-05 Tue  National Day (国庆节), given back",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }

    std::fs::write(&file, format!("{SHIPPED_CALENDAR}{TEST_2027}")).unwrap();
    let out = check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("official: 2025-2027\n") && stdout.contains("): 2028-2100\n"), "{stdout}");
    // The test arrangement works on statutory days (Qingming and the rest): said, not refused.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let year_line = SHIPPED_CALENDAR.lines().count() + 3;
    let warning = format!(":{year_line}: years[2].year: 2027-04-05 (Qingming (清明节)) is a statutory holiday");
    assert!(stderr.contains(&warning), "{warning} in {stderr}");

    // Mistakes are refused with file and line, and the file is left as it was.
    let bad = "[[years]]\nyear = 2027\nholidays = [\n  \"2027-01-01\",\n  \"2027-02-30\",\n]\n\
               make_up_workdays = [\"2027-02-03\"]\n\n[[years]]\nyear = 2027\nholidays = []\n";
    std::fs::write(&file, bad).unwrap();
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let shown = file.display();
    for line in [
        format!("{shown}:5: years[0].holidays[1]: `2027-02-30` is not a date"),
        format!("{shown}:7: years[0].make_up_workdays[0]: 2027-02-03 is a make-up working day but not a weekend day"),
    ] {
        assert!(stderr.contains(&line), "{line} in {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing listed for a refused file");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), bad);
    std::fs::write(&file, "[[years]]\nyear = 2027\nholidays = []\n\n[[years]]\nyear = 2027\nholidays = []\n").unwrap();
    let stderr = String::from_utf8_lossy(&check(&file).stderr).into_owned();
    assert!(stderr.contains(&format!("{shown}:6: years[1].year: 2027 is listed twice")), "{stderr}");
}
