//! The portal's pages on the data port: the document, its assets, and a dataset page that
//! answers as the API does for the dataset (non-open and unknown alike).

use crate::fixture::{client, Gateway};

#[tokio::test]
async fn the_portal_document_is_served_with_its_rules_for_the_browser() {
    let g = Gateway::demo();
    let client = client();
    for path in
        ["/", "/?q=air&open_type=unconditional", "/docs", "/account", "/datasets/air-quality", "/datasets/enterprises"]
    {
        let r = client.get(g.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8", "{path}");
        let policy = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let html = r.text().await.unwrap();
        assert!(html.contains(r#"<main id="main""#), "{path}");
        assert!(html.contains(r#"<meta name="kaifang-utc-offset" content="8">"#), "the platform's time zone");
        assert!(!html.contains("{{"), "every placeholder is filled: {html}");
    }
    let r = client.post(g.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn a_dataset_page_answers_with_the_apis_status_so_non_open_ids_cannot_be_probed() {
    let g = Gateway::demo();
    let client = client();
    let hidden = client.get(g.url("/datasets/subsistence-allowance")).send().await.unwrap();
    let unknown = client.get(g.url("/datasets/no-such-dataset")).send().await.unwrap();
    let bad = client.get(g.url("/datasets/..%2Fetc")).send().await.unwrap();
    assert_eq!((hidden.status().as_u16(), unknown.status().as_u16(), bad.status().as_u16()), (404, 404, 404));
    let (hidden, unknown) = (hidden.text().await.unwrap(), unknown.text().await.unwrap());
    assert_eq!(hidden, unknown);
    assert!(hidden.contains("<html"), "a person gets the page, which says not found");
}

#[tokio::test]
async fn portal_assets_are_revalidated_by_their_entity_tag_and_compressed() {
    let g = Gateway::demo();
    let client = client();
    let html = client.get(g.url("/")).send().await.unwrap().text().await.unwrap();
    let version = html.split("/portal/portal.js?v=").nth(1).unwrap().split('"').next().unwrap().to_owned();
    for (path, media_type) in [
        ("/portal/portal.js", "text/javascript; charset=utf-8"),
        ("/portal/portal.css", "text/css; charset=utf-8"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let r = client.get(g.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], media_type);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{version}\""), "the tag is the version the document names");
        assert!(!r.bytes().await.unwrap().is_empty());
        let again = client.get(g.url(path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let script = client.get(g.url("/portal/portal.js")).send().await.unwrap().bytes().await.unwrap();
    let coded = client.get(g.url("/portal/portal.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(coded.headers()["content-encoding"], "gzip");
    let coded = coded.bytes().await.unwrap();
    assert!(coded.len() < script.len() / 2, "{} of {}", coded.len(), script.len());
    let r = client.get(g.url("/portal/other.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
