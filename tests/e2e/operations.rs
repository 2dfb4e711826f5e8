//! Running it in production: graceful shutdown, and protection against slow and too many
//! clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fixture::{client, Gateway, Site};

/// A site with one unconditional CSV dataset `big` of about `bytes` bytes, and `settings`.
fn site_with_big_file(settings: &str, bytes: usize) -> (Site, usize) {
    let site = Site::with_settings(
        settings,
        &[("big", "csv", "big.csv", r#"[{ name = "n", type = "int64" }, { name = "text", type = "string" }]"#)],
    );
    let mut text = String::from("n,text\n");
    let mut n = 0;
    while text.len() < bytes {
        text.push_str(&format!("{n},row number {n} of the big file\n"));
        n += 1;
    }
    std::fs::write(site.data_dir.join("big.csv"), &text).unwrap();
    (site, text.len())
}

#[tokio::test]
async fn sigterm_lets_a_download_in_flight_finish_refuses_new_work_and_exits_zero() {
    let (site, size) = site_with_big_file("", 64 << 20);
    let mut g = Gateway::with_config(&site.config, &site.data_dir);
    let mut response = client().get(g.url("/v1/datasets/big/download")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = response.chunk().await.unwrap().unwrap().len();
    g.signal("TERM");
    // New connections are refused once the listeners close.
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if TcpStream::connect(g.base.trim_start_matches("http://")).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the listener still accepts connections after SIGTERM");
    // The download in flight goes on to its last byte, slowly.
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
        if received < size / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(received, size, "the download in flight is complete");
    let status = g.wait_exit(Duration::from_secs(20)).expect("the gateway exits once the download is done");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_slow_header_client_is_cut_off_at_the_configured_time_while_others_are_served() {
    let site = Site::with_settings("[server]\nheader_read_timeout_seconds = 1\n", &[]);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let address = g.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: kaifang\r\nX-Slow: ").unwrap();
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let read = slow.read_to_end(&mut buf);
        (started.elapsed(), read.map(|_| String::from_utf8_lossy(&buf).into_owned()))
    });
    // Meanwhile other clients are served as usual.
    for _ in 0..10 {
        let r = client().get(g.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (elapsed, outcome) = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    let text = outcome.expect("the connection is closed, not left hanging");
    assert!(!text.contains("200 OK"), "a half-sent request is never answered: {text}");
    assert!(elapsed >= Duration::from_millis(900), "cut off after {elapsed:?}, before the configured second");
    assert!(elapsed < Duration::from_secs(5), "cut off only after {elapsed:?}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let site = Site::with_settings("[server]\nmax_connections = 2\n", &[]);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let address = g.base.trim_start_matches("http://").to_owned();
    // Two idle keep-alive connections hold both places.
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&address).unwrap()).collect();
    for connection in &mut held {
        connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: kaifang\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = connection.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let e = quick.get(g.url("/healthz")).send().await.unwrap_err();
    assert!(e.is_timeout(), "a third connection waits: {e}");
    drop(held.pop());
    let r = client().get(g.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "served once a place is free");
}
