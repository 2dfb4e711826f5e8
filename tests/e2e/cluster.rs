//! Several gateway instances on one PostgreSQL and one Redis, acting as one: revocations seen
//! everywhere at once, one rate limit per agreement, one audit trail, the limiter's fallback.
//!
//! The servers' URLs come from `KAIFANG_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `KAIFANG_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`). Each test works in a database and a Redis key prefix of its own.
//! Without the servers these tests say SKIPPED loudly and pass, unless
//! `KAIFANG_REQUIRE_SERVICES=1` (as `.ci/run` sets), where they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{client, Gateway};
use crate::metrics::{samples, scrape, value};
use crate::services::{self, postgres_admin, reachable, Database};
use crate::workflows::{big_register, call, principal, write_register};

pub(crate) const TOKEN: &str = "cluster-operator-token";
const SIGNING_SECRET: &str = "cluster-webhook-signing-secret";

/// The test's database and Redis URL, or `None` (after a loud SKIPPED line) without servers.
pub(crate) fn services(test: &str) -> Option<(Database, String)> {
    let (pg, redis) = (services::postgres_url(), services::redis_url());
    let (pg_up, redis_up) = (reachable(&pg, 5432), reachable(&redis, 6379));
    if !(pg_up && redis_up) {
        let why = format!("PostgreSQL at {pg} reachable: {pg_up}; Redis at {redis} reachable: {redis_up}");
        services::skip_or_fail(test, &format!("the cluster tests need PostgreSQL and Redis ({why})"));
        return None;
    }
    Some((Database::create(&pg), redis))
}

/// The shipped configuration with demo data, a big conditional register and a `[cluster]`
/// section on these servers; all instances share the data directory (sources only: the state is
/// in PostgreSQL).
pub(crate) fn cluster_config(db: &Database, redis: &str, settings: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let extra = format!(
        "{}\n[masks]\nhash_key = \"shared-by-the-instances\"\n\n[cluster]\ninstance = \"unnamed\"\nstore = \"{}\"\n\
         limiter = \"{redis}\"\nlimiter_prefix = \"{prefix}\"\n{settings}\n",
        big_register(16 << 20),
        db.url
    );
    let (dir, config, data_dir) = crate::workflows::platform(&extra);
    write_register(&data_dir, 16 << 20);
    (dir, config, data_dir)
}

/// A user with a key and an agreement on the register at `rate`, made through `g`.
pub(crate) async fn holder(g: &Gateway, id: &str, rate: Value) -> (String, String) {
    let key = principal(g, id, "user", None).await;
    let (status, agreement) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({"principal": id, "dataset": "register", "columns": ["n", "text"],
                        "valid_until": "2099-01-01T00:00:00Z", "rate": rate,
                        "quota": {"requests_per_day": 100000, "rows_per_day": 100000000, "bytes_per_day": 100000000000u64}})),
        )
        .await;
    assert_eq!(status, 201, "{agreement}");
    (key, agreement["id"].as_str().unwrap().to_owned())
}

async fn status_of(g: &Gateway, path: &str, key: &str) -> u16 {
    call(g, Method::GET, path, Some(key), None).await.0
}

#[tokio::test]
async fn changes_through_one_instance_hold_on_the_others_from_their_next_request() {
    let Some((db, redis)) = services("changes_through_one_instance") else { return };
    let (_dir, config, data_dir) = cluster_config(&db, &redis, "instances = 3");
    let gs: Vec<Gateway> = ["a", "b", "c"].iter().map(|n| Gateway::instance(&config, &data_dir, n, TOKEN)).collect();
    let (key, _) = holder(&gs[0], "acme", json!({"per_second": 1000, "burst": 1000})).await;
    let rows = "/v1/datasets/register/rows?limit=1";
    for g in &gs {
        assert_eq!(status_of(g, rows, &key).await, 200, "the key made on a works everywhere");
    }
    // Revoked through a: refused by b and c on their very next request (their caches held it).
    let key_id = key.split('_').nth(1).unwrap();
    let (status, _) = gs[0].admin(Method::DELETE, &format!("/admin/keys/{key_id}"), None).await;
    assert_eq!(status, 200);
    for g in &gs[1..] {
        assert_eq!(status_of(g, rows, &key).await, 401, "{}", g.base);
    }

    // An agreement suspended through b: refused on a and c at once, and their answers in
    // flight are cut.
    let key = principal(&gs[0], "beta", "user", None).await;
    let (status, answer) = gs[0]
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({"principal": "beta", "dataset": "register", "columns": ["n", "text"],
                        "valid_until": "2099-01-01T00:00:00Z", "rate": {"per_second": 1000, "burst": 1000},
                        "quota": {"requests_per_day": 100000, "rows_per_day": 100000000, "bytes_per_day": 100000000000u64}})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let beta_agreement = answer["id"].as_str().unwrap().to_owned();
    let mut streaming =
        client().get(gs[2].url("/v1/datasets/register/rows?format=csv")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(streaming.status(), 200);
    streaming.chunk().await.unwrap();
    let (status, _) = gs[1].admin(Method::POST, &format!("/admin/agreements/{beta_agreement}/suspend"), None).await;
    assert_eq!(status, 200);
    let suspended = Instant::now();
    assert_eq!(status_of(&gs[0], rows, &key).await, 403);
    let mut broke = false;
    loop {
        match streaming.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the answer on c is cut");
    assert!(suspended.elapsed() < Duration::from_secs(1), "cut after {:?}", suspended.elapsed());
    assert_eq!(status_of(&gs[2], rows, &key).await, 403);

    // A dataset withdrawn through c: 410 on a and b.
    let (status, _) = gs[2]
        .admin(Method::POST, "/admin/datasets/air-quality/withdraw", Some(json!({"reason": "sensor fault"})))
        .await;
    assert_eq!(status, 200);
    for g in &gs[..2] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (status, _) = call(g, Method::GET, "/v1/datasets/air-quality", None, None).await;
            if status == 410 {
                break;
            }
            assert!(Instant::now() < deadline, "{} still serves the withdrawn dataset after a second", g.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_rate_spread_over_three_instances_admits_what_one_instance_would() {
    let Some((db, redis)) = services("a_rate_spread_over_three_instances") else { return };
    let (_dir, config, data_dir) = cluster_config(&db, &redis, "instances = 3");
    let gs: Vec<Gateway> = ["a", "b", "c"].iter().map(|n| Gateway::instance(&config, &data_dir, n, TOKEN)).collect();
    const RATE: u64 = 10;
    const BURST: u64 = 10;
    let (key, agreement) = holder(&gs[0], "acme", json!({"per_second": RATE, "burst": BURST})).await;
    // Each instance decodes the register into its cache on its first call, which takes seconds
    // in a debug build: done before the window, under another agreement, so that the window
    // measures admission alone and acme's bucket is untouched.
    let (warm, _) = holder(&gs[0], "warm", json!({"per_second": RATE, "burst": BURST})).await;
    for g in &gs {
        let r = client().get(g.url("/v1/datasets/register/rows?limit=1")).bearer_auth(&warm).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Six clients, two per instance, as fast as they can for three seconds; each call's send and
    // answer times are kept.
    let started = Instant::now();
    let window = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = gs[i % 3].url("/v1/datasets/register/rows?limit=1");
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut calls = Vec::new();
            while started.elapsed() < window {
                let sent = started.elapsed().as_secs_f64();
                let status = client.get(&url).bearer_auth(&key).send().await.unwrap().status().as_u16();
                assert!(status == 200 || status == 429, "status {status}");
                calls.push((sent, started.elapsed().as_secs_f64(), status == 200));
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.unwrap());
    }
    let admitted: Vec<&(f64, f64, bool)> = calls.iter().filter(|c| c.2).collect();
    let refused = calls.len() - admitted.len();
    // The limit decides each call between its sending and its answer. Over the span from the
    // first admitted call's sending to the last one's answer, one instance alone admits at most
    // the burst and RATE a second; with the clients always pressing, at least that much over
    // the span from the first admitted answer to the last admitted sending.
    let first_sent = admitted.iter().map(|c| c.0).fold(f64::MAX, f64::min);
    let last_answered = admitted.iter().map(|c| c.1).fold(0.0, f64::max);
    let first_answered = admitted.iter().map(|c| c.1).fold(f64::MAX, f64::min);
    let last_sent = admitted.iter().map(|c| c.0).fold(0.0, f64::max);
    let most = BURST as f64 + RATE as f64 * (last_answered - first_sent) + 1.0;
    let least = BURST as f64 + RATE as f64 * (last_sent - first_answered).max(0.0) - 2.0;
    let n = admitted.len() as f64;
    assert!(refused > admitted.len(), "the clients pressed hard enough: {n} admitted, {refused} refused");
    assert!(
        least <= n && n <= most,
        "{n} admitted; one instance alone would admit between {least:.1} and {most:.1} (calls: {calls:?})"
    );

    // Every instance shows the agreement's usage across all three: each admitted call one
    // request, and (once each instance has pushed its rows, every second) one row.
    let admitted = admitted.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    for g in &gs {
        loop {
            let (status, shown) = call(g, Method::GET, &format!("/v1/agreements/{agreement}"), Some(&key), None).await;
            assert_eq!(status, 200, "{shown}");
            assert_eq!(shown["used_today"]["requests"], admitted, "{}: {shown}", g.base);
            if shown["used_today"]["rows"] == admitted {
                break;
            }
            assert!(Instant::now() < deadline, "{}: the rows never reached {admitted}: {shown}", g.base);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn audit_records_of_all_instances_trace_as_one_and_a_killed_instance_loses_none() {
    let Some((db, redis)) = services("audit_records_of_all_instances") else { return };
    let (_dir, config, data_dir) = cluster_config(&db, &redis, "instances = 3");
    let mut gs: Vec<Gateway> =
        ["a", "b", "c"].iter().map(|n| Gateway::instance(&config, &data_dir, n, TOKEN)).collect();
    let (key, agreement) = holder(&gs[0], "acme", json!({"per_second": 1000, "burst": 1000})).await;
    for g in &gs {
        assert_eq!(status_of(g, "/v1/datasets/register/rows?limit=3", &key).await, 200);
    }
    // An answer under way on c when c is killed: its intent record is already durable.
    let mut streaming =
        client().get(gs[2].url("/v1/datasets/register/rows?format=csv")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(streaming.status(), 200);
    streaming.chunk().await.unwrap();
    gs[2].kill();

    let (status, trace) = gs[0].admin(Method::GET, "/admin/datasets/register/trace", None).await;
    assert_eq!(status, 200, "{trace}");
    let recipients = trace["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "{trace}");
    let acme = &recipients[0];
    assert_eq!((acme["principal"].as_str(), acme["agreement"].as_str()), (Some("acme"), Some(agreement.as_str())));
    assert_eq!(acme["calls"], 3, "one completed call through each instance: {trace}");
    assert_eq!(acme["unfinished_calls"], 1, "the killed instance's call: {trace}");
    assert_eq!(acme["rows"], 9);
    // The same from b.
    let (_, from_b) = gs[1].admin(Method::GET, "/admin/datasets/register/trace", None).await;
    assert_eq!(from_b["recipients"], trace["recipients"]);

    // Every instance's chain verifies.
    let out = Command::new(crate::fixture::BIN)
        .args(["audit", "verify", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for instance in ["a", "b", "c"] {
        assert!(stdout.contains(&format!("audit chain of {instance} intact")), "{stdout}");
    }
    // c comes back and its chain goes on.
    let c = gs.pop().unwrap().restart();
    assert_eq!(status_of(&c, "/v1/datasets/register/rows?limit=1", &key).await, 200);
    let verify = || {
        let out = Command::new(crate::fixture::BIN)
            .args(["audit", "verify", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    verify();

    // Retention: a's records, made older than `retention_days` (their time column only, which
    // the hash does not cover), are removed when a starts again; what remains still verifies,
    // and a's chain goes on from the anchor.
    let count = |instance: &'static str| {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_one("SELECT count(*) FROM audit_records WHERE instance = $1", &[&instance])
                .unwrap()
                .get::<_, i64>(0)
        })
        .join()
        .unwrap()
    };
    let before = count("a");
    assert!(before >= 2, "{before}");
    postgres_admin(&db.url, "UPDATE audit_records SET time = time - interval '4000 days' WHERE instance = 'a'".into())
        .unwrap();
    let a = gs.remove(0).restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("a") > 0 {
        assert!(Instant::now() < deadline, "a's old records were not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_of(&a, "/v1/datasets/register/rows?limit=1", &key).await, 200);
    let report = verify();
    let a_line = report.lines().find(|l| l.contains("chain of a")).unwrap_or_else(|| panic!("{report}"));
    assert!(a_line.contains("intact: 2 records verified"), "{report}");
    assert!(report.contains("removed by retention"), "what could not be checked is said: {report}");
    assert!(report.contains("chain of b intact") && report.contains("chain of c intact"), "{report}");

    // A forged anchor claiming b's records were removed hides nothing: they are checked all the
    // same, and an anchor past the last of them is a break in itself.
    postgres_admin(
        &db.url,
        format!("INSERT INTO audit_anchors (instance, seq, hash) VALUES ('b', 100, '{}')", "ab".repeat(32)),
    )
    .unwrap();
    let out = Command::new(crate::fixture::BIN)
        .args(["audit", "verify", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr.contains("audit chain of b broken at seq 100: the anchor says records up to seq 100 were removed"),
        "{stderr}"
    );
}

/// A Redis server of the test's own, to kill.
struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) runs the limiter fallback test");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reachable(&url, port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn without_redis_conditional_calls_fall_back_as_configured() {
    let Some((db, _)) = services("without_redis_conditional_calls_fall_back") else { return };
    let mut redis = OwnRedis::start();
    // a shares the agreement's rate locally (1/3 each); d refuses conditional calls.
    let (_dir, shared_config, data_dir) =
        cluster_config(&db, &redis.url, "instances = 3\non_limiter_failure = \"local_share\"");
    let closed_config = shared_config.with_file_name("closed.toml");
    let text = std::fs::read_to_string(&shared_config).unwrap();
    std::fs::write(
        &closed_config,
        text.replace("on_limiter_failure = \"local_share\"", "on_limiter_failure = \"fail_closed\""),
    )
    .unwrap();
    let a = Gateway::instance(&shared_config, &data_dir, "a", TOKEN);
    let d = Gateway::instance(&closed_config, &data_dir, "d", TOKEN);
    let (key, _) = holder(&a, "acme", json!({"per_second": 1, "burst": 30})).await;
    let rows = "/v1/datasets/register/rows?limit=1";
    assert_eq!(status_of(&a, rows, &key).await, 200);
    assert_eq!(status_of(&d, rows, &key).await, 200);
    let (status, ready) = crate::fixture::get_json(&d.url("/readyz")).await;
    assert_eq!((status, ready["checks"]["limiter"].as_str()), (200, Some("reachable")), "{ready}");

    redis.kill();
    // a: the local share is a third of the burst (10), at a third of the rate (at least 1/s).
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(status_of(&a, rows, &key).await);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let most = 10 + started.elapsed().as_secs_f64().ceil() as usize;
    assert!((10..=most).contains(&admitted), "local share of a burst of 30 over 3 instances: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, ready) = crate::fixture::get_json(&a.url("/readyz")).await;
    assert_eq!(status, 200, "the local share keeps a serving: {ready}");
    assert!(ready["checks"]["limiter"].as_str().unwrap().starts_with("unreachable"), "{ready}");
    let s = samples(&scrape(&a).await);
    assert!(value(&s, "kaifang_limiter_fallbacks_total") >= 20.0);
    assert_eq!(value(&s, r#"kaifang_backend_up{backend="limiter"}"#), 0.0);

    // d: conditional calls fail closed; open data flows on local limits; not ready.
    let (status, answer) = call(&d, Method::GET, rows, Some(&key), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("limiter_unavailable")), "{answer}");
    assert_eq!(call(&d, Method::GET, "/v1/datasets/bus-arrivals/rows?limit=1", None, None).await.0, 200);
    let (status, _) = crate::fixture::get_json(&d.url("/readyz")).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_notification_is_sent_by_one_instance_only() {
    let Some((db, redis)) = services("a_notification_is_sent_by_one_instance_only") else { return };
    let (url, mut received) = crate::workflows::receiver(0).await;
    let settings = format!(
        "instances = 3\n\n[webhooks]\nsigning_secret = \"{SIGNING_SECRET}\"\nowners = {{ \"{}\" = \"{url}\" }}\n",
        crate::workflows::MARKET
    );
    let (_dir, config, data_dir) = cluster_config(&db, &redis, &settings);
    let gs: Vec<Gateway> = ["a", "b", "c"].iter().map(|n| Gateway::instance(&config, &data_dir, n, TOKEN)).collect();
    // Each instance holds the open objections its catalog shows (none yet)...
    for g in &gs {
        assert_eq!(call(g, Method::GET, "/v1/datasets/enterprises", None, None).await.1["open_objections"], 0);
    }
    let (status, filed) = call(
        &gs[1],
        Method::POST,
        "/v1/datasets/enterprises/objections",
        None,
        Some(json!({"description": "A cancelled company is listed as active", "contact": "x@example.org"})),
    )
    .await;
    assert_eq!(status, 201, "{filed}");
    let first = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    // Whichever instance sent it, it is signed with the department's one key.
    first.assert_signed(&crate::workflows::department_key(SIGNING_SECRET, crate::workflows::MARKET));
    let first = first.body;
    assert_eq!(first["details"]["objection"], filed["id"]);
    // Three senders poll the one outbox; none sends it again.
    let again = tokio::time::timeout(Duration::from_secs(3), received.recv()).await;
    assert!(again.is_err(), "sent twice: {again:?}");
    for g in &gs {
        let (_, outbox) = g.admin(Method::GET, "/admin/notifications", None).await;
        assert!(outbox["notifications"][0]["delivered_at"].is_string(), "{outbox}");
    }
    // ...and each learns of the one filed through another instance, as the store announces it.
    for g in &gs {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, meta) = call(g, Method::GET, "/v1/datasets/enterprises", None, None).await;
            if meta["open_objections"] == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the objection filed elsewhere is not counted: {meta}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An instance started by [`instances_started_together_on_a_fresh_database_all_start`]; killed
/// when dropped.
struct Starting {
    name: &'static str,
    child: Child,
    /// The `http listening on` address once printed, or `None` when stdout closed first.
    listening: std::sync::mpsc::Receiver<Option<String>>,
}

impl Starting {
    fn spawn(config: &std::path::Path, data_dir: &std::path::Path, name: &'static str) -> Starting {
        let mut child = Command::new(crate::fixture::BIN)
            .args(["serve", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
            .args(["--instance", name, "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env("KAIFANG_ADMIN_TOKEN", TOKEN)
            .env("KAIFANG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kaifang");
        let stdout = child.stdout.take().unwrap();
        let (tx, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let found = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|line| line.strip_prefix("kaifang: http listening on ").map(str::to_owned));
            let _ = tx.send(found);
        });
        Starting { name, child, listening }
    }

    /// The instance's HTTP address once it listens, or what it said when it stopped.
    fn listening(&mut self) -> Result<String, String> {
        match self.listening.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => Ok(addr),
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                use std::io::Read;
                let status = self.child.wait().unwrap();
                let mut stderr = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut stderr);
                Err(format!("{} stopped ({status}) without listening: {}", self.name, stderr.trim()))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!("{} did not listen within 60 s", self.name)),
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Instances started at the same moment on an empty database each try to create the schema;
/// the store's and the audit log's tables are made by one migration sequence under one lock, so
/// every instance starts and is ready, whichever gets there first.
#[tokio::test]
async fn instances_started_together_on_a_fresh_database_all_start() {
    let Some((db, redis)) = services("instances_started_together_on_a_fresh_database") else { return };
    let prefix = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (_dir, config, data_dir) = crate::workflows::platform(&format!(
        "\n[masks]\nhash_key = \"shared-by-the-instances\"\n\n[cluster]\ninstance = \"unnamed\"\n\
         store = \"STORE\"\nlimiter = \"{redis}\"\nlimiter_prefix = \"{prefix}\"\ninstances = 3\n"
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    const ATTEMPTS: usize = 20;
    for attempt in 1..=ATTEMPTS {
        let fresh = Database::create(&db.admin_url);
        let attempt_config = config.with_file_name(format!("attempt-{attempt}.toml"));
        std::fs::write(&attempt_config, text.replace("STORE", &fresh.url)).unwrap();
        let mut instances: Vec<Starting> =
            ["a", "b", "c"].into_iter().map(|name| Starting::spawn(&attempt_config, &data_dir, name)).collect();
        let addrs = tokio::task::spawn_blocking(move || {
            let addrs: Vec<Result<String, String>> = instances.iter_mut().map(Starting::listening).collect();
            (instances, addrs)
        });
        let (instances, addrs) = addrs.await.unwrap();
        let failed: Vec<&String> = addrs.iter().filter_map(|a| a.as_ref().err()).collect();
        assert!(failed.is_empty(), "attempt {attempt} of {ATTEMPTS}: {failed:#?}");
        // One at a time: the instances share the data directory readyz probes.
        for (instance, addr) in instances.iter().zip(&addrs) {
            let (status, ready) = crate::fixture::get_json(&format!("http://{}/readyz", addr.as_ref().unwrap())).await;
            assert_eq!(status, 200, "attempt {attempt}: {} not ready: {ready}", instance.name);
        }
        drop(instances);
    }
}

/// The operation report of a cluster reads and verifies every instance's audit chain, counts the
/// conditional calls of all, and the traffic each instance kept.
#[tokio::test]
async fn the_operation_report_covers_every_instance() {
    let Some((db, redis)) = services("the_operation_report_covers_every_instance") else { return };
    let (_dir, config, data_dir) = cluster_config(&db, &redis, "instances = 2");
    let mut gs: Vec<Gateway> = ["a", "b"].iter().map(|n| Gateway::instance(&config, &data_dir, n, TOKEN)).collect();
    let (key, agreement) = holder(&gs[0], "acme", json!({"per_second": 1000, "burst": 1000})).await;
    for g in &gs {
        assert_eq!(status_of(g, "/v1/datasets/register/rows?limit=1", &key).await, 200);
    }
    // b stops: what its counters grew by is kept in the store.
    gs[1].signal("TERM");
    assert!(gs[1].wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let path = format!("/admin/report?from={}&to={today}", today - chrono::Duration::days(1));
    let (status, report) = gs[0].admin(Method::GET, &path, None).await;
    assert_eq!(status, 200, "{report}");
    let chains = report["platform"]["audit_chains"].as_array().unwrap();
    let names: Vec<&str> = chains.iter().map(|c| c["instance"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "{chains:?}");
    assert!(chains.iter().all(|c| c["verified"] == true && c["records"].as_u64().unwrap() >= 2), "{chains:?}");
    let used = &report["conditional_use"]["by_agreement"];
    let ours = used.as_array().unwrap().iter().find(|a| a["agreement"] == agreement.as_str()).expect("acme's");
    assert_eq!((&ours["calls"], &ours["rows"]), (&json!(2), &json!(2)), "a call through each instance");
    let register =
        report["traffic"]["by_dataset"].as_array().unwrap().iter().find(|d| d["dataset"] == "register").cloned();
    assert!(register.is_some_and(|d| d["calls"].as_u64().unwrap() >= 1), "b's call, kept when it stopped: {report}");
}
