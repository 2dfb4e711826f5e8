//! The test servers the cluster tests and the store contract run against: PostgreSQL and
//! Redis, where they are (`KAIFANG_TEST_POSTGRES`, `KAIFANG_TEST_REDIS`), whether they answer,
//! and databases of a test's own on them. Without them a test says loudly that it was skipped,
//! or fails where `KAIFANG_REQUIRE_SERVICES=1` (as `.ci/run` sets).
//!
//! Shared by the test crates that need the servers; each uses its part.
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The test PostgreSQL server's URL (its `test` database).
pub fn postgres_url() -> String {
    std::env::var("KAIFANG_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The test Redis server's URL.
pub fn redis_url() -> String {
    std::env::var("KAIFANG_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether the server `url` names accepts a connection within two seconds.
pub fn reachable(url: &str, default_port: u16) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host_port = rest.rsplit('@').next().unwrap_or("").split('/').next().unwrap_or("");
    let addr = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") };
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Says, past the test harness's capture, that `test` did not run and why; fails it instead
/// where the services are required.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("KAIFANG_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}");
    }
    say_skipped(test, why);
}

/// Says, past the test harness's capture (which keeps what passing tests write to itself), that
/// a test was skipped, and why.
pub fn say_skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
}

/// A database of its own on the test server, dropped (with whatever is still connected to it)
/// when this is dropped, also while a failed test unwinds.
pub struct Database {
    /// The server's URL it was made on.
    pub admin_url: String,
    name: String,
    /// Where the database is.
    pub url: String,
}

impl Database {
    /// A new, empty database on the server `admin_url` names.
    pub fn create(admin_url: &str) -> Database {
        let name = format!("kaifang_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        postgres_admin(admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create the database {name} on {admin_url}: {e}"));
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base);
        let url = format!("{base}/{name}");
        Database { admin_url: admin_url.to_owned(), name, url }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = postgres_admin(&self.admin_url, sql) {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on the server `url` names, on a thread of its own: the blocking client runs a
/// runtime of its own, which cannot start inside a test's.
pub fn postgres_admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .expect("the admin connection's thread")
}
