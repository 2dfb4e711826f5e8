//! Raw download: the original bytes with Range, ETag, Last-Modified and HEAD.

use futures_util::StreamExt;

use crate::fixture::{client, expect_error, Gateway, Site};

#[tokio::test]
async fn download_returns_the_original_file_byte_for_byte() {
    let g = Gateway::demo();
    for (id, file, media) in [
        ("bus-arrivals", "bus-arrivals.csv", "text/csv; charset=utf-8"),
        ("air-quality", "air-quality.parquet", "application/vnd.apache.parquet"),
        ("parking-lots", "parking-lots.ndjson", "application/x-ndjson"),
    ] {
        let original = std::fs::read(g.data_dir.join("demo").join(file)).unwrap();
        let r = client().get(g.url(&format!("/v1/datasets/{id}/download"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], media);
        assert_eq!(h["content-length"], original.len().to_string().as_str());
        assert_eq!(h["accept-ranges"], "bytes");
        assert!(h["etag"].to_str().unwrap().starts_with('"'));
        assert!(h.contains_key("last-modified"));
        assert!(h["content-disposition"].to_str().unwrap().contains(&format!("{id}.")));
        assert_eq!(r.bytes().await.unwrap().as_ref(), original.as_slice(), "{id}");
    }
}

#[tokio::test]
async fn ranges_give_partial_content_and_bad_ranges_416() {
    let g = Gateway::demo();
    let original = std::fs::read(g.data_dir.join("demo/bus-arrivals.csv")).unwrap();
    let len = original.len();
    let url = g.url("/v1/datasets/bus-arrivals/download");
    for (range, start, end) in [
        ("bytes=100-199", 100, 200),
        ("bytes=-50", len - 50, len),
        (&format!("bytes={}-", len - 10) as &str, len - 10, len),
    ] {
        let r = client().get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], format!("bytes {start}-{}/{len}", end - 1).as_str());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &original[start..end], "{range}");
    }
    let r = client().get(&url).header("range", format!("bytes={len}-")).send().await.unwrap();
    assert_eq!(r.status(), 416);
    // Several ranges: served whole, as RFC 9110 allows.
    let r = client().get(&url).header("range", "bytes=0-1,5-6").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), len);
}

#[tokio::test]
async fn validators_give_304_and_if_range_guards_ranges() {
    let g = Gateway::demo();
    let url = g.url("/v1/datasets/bus-arrivals/download");
    let r = client().get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_owned();

    let r = client().get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = client().get(&url).header("if-none-match", "\"other\", W/".to_owned() + &etag).send().await.unwrap();
    assert_eq!(r.status(), 304, "weak comparison, list of tags");
    let r = client().get(&url).header("if-none-match", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(&url).header("if-modified-since", &modified).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = client().get(&url).header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = client().get(&url).header("range", "bytes=0-9").header("if-range", &etag).send().await.unwrap();
    assert_eq!(r.status(), 206);
    let r = client().get(&url).header("range", "bytes=0-9").header("if-range", "\"stale\"").send().await.unwrap();
    assert_eq!(r.status(), 200, "a stale If-Range gets the whole file");

    // A new file is a new version.
    let path = g.data_dir.join("demo/bus-arrivals.csv");
    let mut content = std::fs::read(&path).unwrap();
    content.extend_from_slice(b"99999,1,S1,Stop,Haizhou,LYG-1,2025-06-01T00:00:00Z,2025-06-01T00:00:00Z,0,,true\n");
    std::fs::write(&path, content).unwrap();
    let r = client().get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn head_gives_the_headers_without_the_body() {
    let g = Gateway::demo();
    let len = std::fs::metadata(g.data_dir.join("demo/air-quality.parquet")).unwrap().len();
    let r = client().head(g.url("/v1/datasets/air-quality/download")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], len.to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn download_takes_no_query_parameters() {
    let g = Gateway::demo();
    expect_error(&g.url("/v1/datasets/bus-arrivals/download?columns=route"), 400, "unknown_parameter").await;
}

#[tokio::test]
async fn a_file_truncated_while_being_served_aborts_the_download() {
    let site = Site::new(&[("big", "csv", "big.csv", r#"[{ name = "line", type = "string" }]"#)]);
    let path = site.data_dir.join("big.csv");
    let line = "x".repeat(1023) + "\n";
    std::fs::write(&path, format!("line\n{}", line.repeat(64 * 1024))).unwrap();
    let g = site.start();
    let r = client().get(g.url("/v1/datasets/big/download")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let announced: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let mut stream = r.bytes_stream();
    let mut received = stream.next().await.unwrap().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "received {received} of {announced} bytes and no error: a truncated file looked complete");
    assert!(received < announced);
}
