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
