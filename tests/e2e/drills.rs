//! Fault drills: the gateway killed in the middle of workflow writes, and its store's disk full.
//! What must hold afterwards: nothing half-written (an approval without its agreement, an
//! agreement without its approved application, a withdrawal half recorded), the refused writes
//! changing nothing, and service coming back on its own.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::Gateway;
use crate::workflows::{application, call, platform, principal, MARKET};

/// Users applying at once, each for one agreement on the demo's conditional `enterprises`.
const USERS: usize = 24;

fn terms() -> Value {
    json!({"columns": ["uscc", "name", "legal_rep_mobile"], "masks": {"legal_rep_mobile": "cn_mobile"},
           "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 100, "burst": 100},
           "quota": {"requests_per_day": 1000, "rows_per_day": 1000000, "bytes_per_day": 1000000000}})
}

/// The owner's key and the ids of `USERS` submitted applications.
async fn submitted(g: &Gateway) -> (String, Vec<String>) {
    let market = principal(g, "market", "owner", Some(MARKET)).await;
    let mut ids = Vec::new();
    for i in 0..USERS {
        let key = principal(g, &format!("user-{i}"), "user", None).await;
        let (status, applied) =
            call(g, Method::POST, "/v1/applications", Some(&key), Some(application("enterprises"))).await;
        assert_eq!(status, 201, "{applied}");
        ids.push(applied["id"].as_str().unwrap().to_owned());
    }
    (market, ids)
}

/// Approves every application, withdraws and reopens `air-quality` over and over, all at once,
/// and kills the gateway with SIGKILL once the first approval has been answered.
async fn kill_during_writes(g: &mut Gateway, market: &str, ids: &[String]) {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let first_tx = std::sync::Arc::new(first_tx);
    let mut tasks = Vec::new();
    for id in ids {
        let (url, market, id, first_tx) = (g.url(""), market.to_owned(), id.clone(), first_tx.clone());
        tasks.push(tokio::spawn(async move {
            let answer = crate::fixture::client()
                .post(format!("{url}/v1/applications/{id}/approve"))
                .bearer_auth(&market)
                .json(&terms())
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 200) {
                if let Some(tx) = first_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        }));
    }
    let (admin, token) = (g.admin.clone(), g.admin_token());
    tasks.push(tokio::spawn(async move {
        for _ in 0..50 {
            let _ = crate::fixture::client()
                .post(format!("{admin}/admin/datasets/air-quality/withdraw"))
                .bearer_auth(&token)
                .json(&json!({"reason": "drill: a privacy leak reported"}))
                .send()
                .await;
            let _ = crate::fixture::client()
                .post(format!("{admin}/admin/datasets/air-quality/reopen"))
                .bearer_auth(&token)
                .send()
                .await;
        }
    }));
    tokio::time::timeout(Duration::from_secs(30), first_rx).await.expect("an approval answered").unwrap();
    g.kill();
    for task in tasks {
        let _ = task.await;
    }
}

/// What the store holds is whole: every approved application has its agreement (the user's, on
/// the dataset applied for), every agreement made by an approval has its approved application,
/// undecided applications have none; and the dataset withdrawn and reopened is in one state or
/// the other, as every part of the gateway sees it. Returns the applications still undecided.
async fn assert_whole(g: &Gateway, declared: &HashSet<String>) -> Vec<String> {
    let (status, applications) = g.admin(Method::GET, "/admin/applications", None).await;
    assert_eq!(status, 200, "{applications}");
    let (status, agreements) = g.admin(Method::GET, "/admin/agreements", None).await;
    assert_eq!(status, 200, "{agreements}");
    let agreements: HashMap<String, Value> = agreements["agreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_owned(), a.clone()))
        .collect();
    let mut undecided = Vec::new();
    let mut made_by_approval = HashSet::new();
    for application in applications["applications"].as_array().unwrap() {
        let id = application["id"].as_str().unwrap().to_owned();
        match application["status"].as_str().unwrap() {
            "approved" => {
                let agreement = application["agreement"].as_str().unwrap_or_else(|| panic!("{application}"));
                let found =
                    agreements.get(agreement).unwrap_or_else(|| panic!("approved without agreement: {application}"));
                assert_eq!(found["principal"], application["applicant"], "{found}");
                assert_eq!(found["datasets"][0]["dataset"], "enterprises", "{found}");
                made_by_approval.insert(agreement.to_owned());
            }
            "submitted" => {
                assert!(application["agreement"].is_null(), "undecided with an agreement: {application}");
                undecided.push(id);
            }
            other => panic!("{other}: {application}"),
        }
    }
    for id in agreements.keys() {
        assert!(
            declared.contains(id) || made_by_approval.contains(id),
            "agreement {id} without its approved application: {}",
            agreements[id]
        );
    }
    // Withdrawn or open, the same to the catalog, the dataset's page and the operators.
    let page = call(g, Method::GET, "/v1/datasets/air-quality", None, None).await.0;
    let (_, catalog) = call(g, Method::GET, "/v1/catalog?per_page=100", None, None).await;
    let listed = catalog.to_string().contains("\"air-quality\"");
    let (reopened, _) = g.admin(Method::POST, "/admin/datasets/air-quality/reopen", None).await;
    match page {
        410 => assert!(!listed && reopened == 200, "withdrawn: listed {listed}, reopen {reopened}"),
        200 => assert!(listed && reopened == 404, "open: listed {listed}, reopen {reopened}"),
        other => panic!("air-quality answers {other}"),
    }
    assert_eq!(call(g, Method::GET, "/v1/datasets/air-quality", None, None).await.0, 200, "reopened");
    undecided
}

async fn declared_agreements(g: &Gateway) -> HashSet<String> {
    let (status, agreements) = g.admin(Method::GET, "/admin/agreements", None).await;
    assert_eq!(status, 200, "{agreements}");
    agreements["agreements"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
}

/// The drill on whichever store `g` runs on; `restart` starts it again on the same state.
async fn drill(mut g: Gateway) {
    let declared = declared_agreements(&g).await;
    let (market, ids) = submitted(&g).await;
    kill_during_writes(&mut g, &market, &ids).await;
    let g = g.restart();
    let undecided = assert_whole(&g, &declared).await;
    assert!(undecided.len() < USERS, "the first approval was answered, so it was kept");
    // The store goes on: what was left undecided can be decided now, and is whole too.
    for id in &undecided {
        let (status, answer) =
            call(&g, Method::POST, &format!("/v1/applications/{id}/approve"), Some(&market), Some(terms())).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert!(assert_whole(&g, &declared).await.is_empty());
}

#[tokio::test]
async fn killed_during_approvals_and_withdrawals_on_sqlite_nothing_is_half_written() {
    let (_dir, config, data_dir) = platform("");
    drill(Gateway::with_config(&config, &data_dir)).await;
}

#[tokio::test]
async fn killed_during_approvals_and_withdrawals_on_postgresql_nothing_is_half_written() {
    let Some((db, redis)) = crate::cluster::services("killed_on_postgresql") else { return };
    let (_dir, config, data_dir) = crate::cluster::cluster_config(&db, &redis, "");
    drill(Gateway::instance(&config, &data_dir, "drill", crate::cluster::TOKEN)).await;
}

/// The SQLite store's file system full (no file may grow: RLIMIT_FSIZE at 1 byte): workflow
/// writes answer 503 and leave nothing behind, reads go on; with room again, writes succeed
/// without a restart.
#[tokio::test]
async fn a_full_disk_under_the_store_refuses_writes_with_503_keeps_reads_and_recovers() {
    let (_dir, config, data_dir) = platform("");
    let g = Gateway::with_config(&config, &data_dir);
    let declared = declared_agreements(&g).await;
    let (market, ids) = submitted(&g).await;
    let (_, before) = g.admin(Method::GET, "/admin/applications", None).await;

    g.limit_file_size("1:unlimited");
    let (status, answer) =
        call(&g, Method::POST, &format!("/v1/applications/{}/approve", ids[0]), Some(&market), Some(terms())).await;
    assert_eq!(status, 503, "{answer}");
    let user = principal_key_refused(&g).await;
    assert_eq!(user, 503, "a new principal is a write too");
    // Reads go on: the catalog, rows of open data, the applications as they were.
    assert_eq!(call(&g, Method::GET, "/v1/catalog", None, None).await.0, 200);
    assert_eq!(call(&g, Method::GET, "/v1/datasets/air-quality/rows?limit=3", None, None).await.0, 200);
    let (_, during) = g.admin(Method::GET, "/admin/applications", None).await;
    assert_eq!(during, before, "a refused write changes nothing");

    g.limit_file_size("unlimited:unlimited");
    let (status, answer) =
        call(&g, Method::POST, &format!("/v1/applications/{}/approve", ids[0]), Some(&market), Some(terms())).await;
    assert_eq!(status, 200, "{answer}");
    let undecided = assert_whole(&g, &declared).await;
    assert_eq!(undecided.len(), USERS - 1);
}

/// Creating a principal through the operators' API: its status.
async fn principal_key_refused(g: &Gateway) -> u16 {
    let body = json!({"id": "late-user", "name": "late-user", "role": "user"});
    g.admin(Method::POST, "/admin/principals", Some(body)).await.0
}

/// A PostgreSQL server of the test's own (a new cluster in a temporary directory, run as the
/// `postgres` user on a free port), which the test stops and starts again.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<std::process::Child>,
}

impl OwnPostgres {
    /// `None` (after saying why) where PostgreSQL's programs or the `postgres` user are missing.
    fn start(test: &str) -> Option<OwnPostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|mut d| d.next()).and_then(|e| e.ok());
        let Some(bin) = bin.map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()) else {
            crate::services::skip_or_fail(test, "PostgreSQL's programs (initdb, postgres) are not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let chown = std::process::Command::new("chown").args(["-R", "postgres", dir.path().to_str().unwrap()]).status();
        if !chown.is_ok_and(|s| s.success()) {
            crate::services::skip_or_fail(test, "the temporary directory cannot be given to the postgres user");
            return None;
        }
        let data = dir.path().join("data");
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut pg = OwnPostgres { dir, port, server: None };
        pg.run();
        Some(pg)
    }

    fn bin() -> std::path::PathBuf {
        let version = std::fs::read_dir("/usr/lib/postgresql").unwrap().next().unwrap().unwrap();
        version.path().join("bin")
    }

    /// Starts the server and waits until it takes connections.
    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let server = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Self::bin().join("postgres"))
            .args(["-D", data.to_str().unwrap(), "-p", &self.port.to_string(), "-k", self.dir.path().to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !crate::services::reachable(&self.admin_url(), self.port) {
            assert!(std::time::Instant::now() < deadline, "the test's PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once, as a crash or an operator's immediate shutdown does.
    fn stop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let status = std::process::Command::new("kill").args(["-QUIT", &pid]).status().unwrap();
        assert!(status.success());
        if let Some(mut server) = self.server.take() {
            server.wait().unwrap();
        }
        while crate::services::reachable(&self.admin_url(), self.port) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
    }
}

/// Calls made while PostgreSQL goes away and comes back: (seconds since the start, status).
type Calls = Vec<(f64, u16)>;

#[tokio::test]
async fn postgresql_restarted_under_load_conditional_calls_fail_closed_and_service_returns() {
    let test = "postgresql_restarted_under_load";
    let redis = crate::services::redis_url();
    if !crate::services::reachable(&redis, 6379) {
        crate::services::skip_or_fail(test, &format!("Redis at {redis} is not reachable"));
        return;
    }
    let Some(mut pg) = OwnPostgres::start(test) else { return };
    let db = crate::services::Database::create(&pg.admin_url());
    let (_dir, config, data_dir) = crate::cluster::cluster_config(&db, &redis, "instances = 1");
    let g = Gateway::instance(&config, &data_dir, "drill", crate::cluster::TOKEN);
    let (key, agreement) = crate::cluster::holder(&g, "acme", json!({"per_second": 100000, "burst": 100000})).await;

    // Conditional and unconditional calls, one after another, until told to stop.
    let started = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |path: &'static str, key: Option<String>, pause: Duration| {
        let (url, stop) = (g.url(path), stop.clone());
        tokio::spawn(async move {
            let mut calls = Calls::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut request = crate::fixture::client().get(&url).timeout(Duration::from_secs(10));
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                let status = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // A call counts as served only once its whole body arrived.
                        if response.bytes().await.is_ok() {
                            status
                        } else {
                            0
                        }
                    }
                    Err(_) => 0,
                };
                calls.push((started.elapsed().as_secs_f64(), status));
                tokio::time::sleep(pause).await;
            }
            calls
        })
    };
    let conditional = load("/v1/datasets/register/rows?limit=3", Some(key.clone()), Duration::from_millis(20));
    // Under the address's anonymous rate (20 a second), whatever a call takes, so that what
    // refuses an open call can only be PostgreSQL's absence.
    let open = load("/v1/datasets/air-quality/rows?limit=3", None, Duration::from_millis(75));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_at = started.elapsed().as_secs_f64();
    pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    // Away long enough for calls to wait out the store's connection timeout (2 s) inside it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let up_at = started.elapsed().as_secs_f64();
    pg = tokio::task::spawn_blocking(move || {
        pg.run();
        pg
    })
    .await
    .unwrap();
    // Service returns on its own, without a restart of the gateway.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = call(&g, Method::GET, "/v1/datasets/register/rows?limit=3", Some(&key), None).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "conditional calls did not come back: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let conditional = conditional.await.unwrap();
    let open = open.await.unwrap();

    // While PostgreSQL was away (after a second's grace for calls under way), conditional calls
    // were refused with 503 and none was served; open data kept flowing.
    let away = |calls: &Calls| -> Vec<u16> {
        calls.iter().filter(|(t, _)| *t > down_at + 1.0 && *t < up_at).map(|(_, s)| *s).collect()
    };
    let refused = away(&conditional);
    assert!(!refused.is_empty(), "no conditional call while PostgreSQL was away ({down_at}..{up_at}): {conditional:?}");
    assert!(refused.iter().all(|s| *s == 503), "conditional calls while PostgreSQL was away: {refused:?}");
    let flowing = away(&open);
    assert!(flowing.iter().filter(|s| **s == 200).count() * 10 >= flowing.len() * 9, "open data: {flowing:?}");
    assert!(conditional.iter().any(|(t, s)| *t > up_at && *s == 200), "served again after PostgreSQL returned");

    // Every conditional call served (the load's, and the one that saw service return) has its
    // completion record, after its intent.
    let served = conditional.iter().filter(|(_, s)| *s == 200).count() + 1;
    let response = crate::fixture::client()
        .get(format!("{}/admin/audit?agreement={agreement}", g.admin))
        .bearer_auth(crate::cluster::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let intents: HashSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["operation"] == "rows")
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    let completed: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "completion" && r["status"] == 200)
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert!(completed.iter().all(|id| intents.contains(id)), "a completion without its intent");
    assert!(completed.len() >= served, "{served} conditional calls served, {} completions recorded", completed.len());
    drop(g);
    drop(db);
    drop(pg);
}
