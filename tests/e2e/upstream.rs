//! The streaming proxy: datasets whose bytes come from an upstream HTTP origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::fixture::{client, expect_broken, expect_broken_with, expect_error, Site};
use crate::origin::{Origin, Step};

const FIELDS: &str = r#"[{ name = "n", type = "int64" }, { name = "label", type = "string" }]"#;

fn csv_rows(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{i},row {i}\n")).collect()
}

/// Reads from `stream` until at least one byte arrived; panics if nothing comes within 10 s.
async fn first_bytes(stream: &mut (impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin)) -> Vec<u8> {
    let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no bytes reached the client while the origin was still sending: the proxy buffers")
        .expect("stream ended")
        .expect("stream failed");
    chunk.to_vec()
}

#[tokio::test]
async fn download_bytes_reach_the_client_before_the_origin_has_finished() {
    let gate = Arc::new(Notify::new());
    let first = Bytes::from(vec![b'a'; 100_000]);
    let second = Bytes::from(vec![b'b'; 50_000]);
    let origin = Origin::start(
        vec![("content-type", "text/csv".into()), ("etag", "\"v7\"".into())],
        vec![Step::Send(first.clone()), Step::WaitFor(gate.clone()), Step::Send(second.clone())],
    )
    .await;
    let site = Site::new(&[("proxied", "csv", &format!("{}/data.csv", origin.base), FIELDS)]);
    let g = site.start();

    let r = client().get(g.url("/v1/datasets/proxied/download")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-dataset-version"], "v7");
    assert_eq!(r.headers()["etag"], "\"v7\"");
    let mut stream = r.bytes_stream();
    let mut received = first_bytes(&mut stream).await;
    gate.notify_one();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, [first, second].concat());
}

#[tokio::test]
async fn rows_reach_the_client_before_the_origin_has_finished() {
    let gate = Arc::new(Notify::new());
    let head = format!("n,label\n{}", csv_rows(0, 20_000));
    let origin = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![
            Step::Send(Bytes::from(head)),
            Step::WaitFor(gate.clone()),
            Step::Send(Bytes::from(csv_rows(20_000, 30_000))),
        ],
    )
    .await;
    let site = Site::new(&[("proxied", "csv", &format!("{}/data.csv", origin.base), FIELDS)]);
    let g = site.start();

    let r = client().get(g.url("/v1/datasets/proxied/rows?format=csv&filter=n%20%3E%3D%205")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut received = first_bytes(&mut stream).await;
    gate.notify_one();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(received).unwrap();
    let expected = format!("n,label\n{}", csv_rows(5, 30_000));
    assert_eq!(text, expected);
}

#[tokio::test]
async fn an_origin_dying_mid_body_gives_the_client_an_error() {
    let origin = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![Step::Send(Bytes::from(format!("n,label\n{}", csv_rows(0, 20_000)))), Step::Die],
    )
    .await;
    let site = Site::new(&[("proxied", "csv", &format!("{}/data.csv", origin.base), FIELDS)]);
    let g = site.start();
    for path in ["/v1/datasets/proxied/download", "/v1/datasets/proxied/rows?format=csv"] {
        expect_broken(&g.url(path)).await;
    }
}

#[tokio::test]
async fn an_origin_dying_mid_body_resets_the_http2_stream() {
    let origin = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![Step::Send(Bytes::from(vec![b'x'; 200_000])), Step::Die],
    )
    .await;
    let site = Site::new(&[("proxied", "csv", &format!("{}/data.csv", origin.base), FIELDS)]);
    let g = site.start();
    crate::fixture::tls_provider();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    expect_broken_with(&h2, &g.url("/v1/datasets/proxied/download")).await;
    // The connection survives the reset stream and serves the next request.
    let r = h2.get(g.url("/healthz")).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
}

#[tokio::test]
async fn an_origin_going_silent_mid_body_is_cut_off_after_the_idle_timeout() {
    let never = Arc::new(Notify::new());
    let origin = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![Step::Send(Bytes::from(vec![b'x'; 10_000])), Step::WaitFor(never)],
    )
    .await;
    let site = Site::new(&[("proxied", "csv", &format!("{}/data.csv", origin.base), FIELDS)]);
    let g = site.start();
    // idle_timeout_seconds = 2 in the test configuration.
    expect_broken(&g.url("/v1/datasets/proxied/download")).await;
}

#[tokio::test]
async fn an_origin_that_never_answers_is_a_gateway_timeout() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let site = Site::new(&[("proxied", "csv", &format!("http://{addr}/data.csv"), FIELDS)]);
    let g = site.start();
    // response_timeout_seconds = 2 in the test configuration.
    let message = expect_error(&g.url("/v1/datasets/proxied/download"), 504, "source_timeout").await;
    assert!(message.contains("did not answer within 2 s"), "{message}");
}

#[tokio::test]
async fn an_unreachable_origin_is_a_bad_gateway() {
    // Bind and drop a listener to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let site = Site::new(&[("proxied", "csv", &format!("http://127.0.0.1:{port}/data.csv"), FIELDS)]);
    let g = site.start();
    let message = expect_error(&g.url("/v1/datasets/proxied/download"), 502, "source_failed").await;
    assert!(message.contains("cannot be reached"), "{message}");
    expect_error(&g.url("/v1/datasets/proxied/rows"), 502, "source_failed").await;
}

#[tokio::test]
async fn origins_that_lie_about_their_length_die_or_stall_give_errors_and_leave_memory_flat() {
    // One says 10 MB and sends 20,000 rows; one dies mid-body; one stalls until the idle timeout.
    let short = Origin::start(
        vec![("content-type", "text/csv".into()), ("content-length", "10000000".into())],
        vec![Step::Send(Bytes::from(format!("n,label\n{}", csv_rows(0, 20_000))))],
    )
    .await;
    let dying = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![Step::Send(Bytes::from(format!("n,label\n{}", csv_rows(0, 20_000)))), Step::Die],
    )
    .await;
    let never = Arc::new(Notify::new());
    let stalling = Origin::start(
        vec![("content-type", "text/csv".into())],
        vec![Step::Send(Bytes::from(vec![b'x'; 10_000])), Step::WaitFor(never)],
    )
    .await;
    // Rounds of calls at once from one address, past the default per-address limits.
    let limits = "[limits]\nanonymous_rate = { per_second = 100000, burst = 100000 }\n";
    let site = Site::with_settings(
        limits,
        &[
            ("short", "csv", &format!("{}/data.csv", short.base), FIELDS),
            ("dying", "csv", &format!("{}/data.csv", dying.base), FIELDS),
            ("stalling", "csv", &format!("{}/data.csv", stalling.base), FIELDS),
        ],
    );
    let g = site.start();
    // Each is an error to its client, on downloads and on rows read through the proxy: a 502
    // when the failure comes before the answer has begun, a broken answer after.
    for id in ["short", "dying", "stalling"] {
        for operation in ["download", "rows?format=csv"] {
            let url = g.url(&format!("/v1/datasets/{id}/{operation}"));
            match client().get(&url).send().await {
                Ok(r) if r.status() == 502 => {}
                _ => expect_broken(&url).await,
            }
        }
    }
    let before = crate::overload::anon_bytes(g.pid());
    // Rounds of 32 failing calls at once: what each held is given back.
    for _ in 0..8 {
        let urls: Vec<String> =
            (0..32).map(|i| g.url(&format!("/v1/datasets/{}/download", ["short", "dying"][i % 2]))).collect();
        futures_util::future::join_all(urls.iter().map(|url| expect_broken(url))).await;
    }
    let after = crate::overload::anon_bytes(g.pid());
    assert!(
        after < before + (32 << 20),
        "memory grew from {} MiB to {} MiB over 256 failed calls",
        before >> 20,
        after >> 20
    );
    let (status, _) = crate::fixture::get_json(&g.url("/v1/datasets/short")).await;
    assert_eq!(status, 200, "the gateway goes on");
}
