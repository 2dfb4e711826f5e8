//! TLS on every listener with certificates made at test time: HTTP/2 by ALPN, Flight over TLS,
//! client certificates on the admin listener, and new certificates on reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;

use crate::fixture::{Gateway, Site};

/// A test CA that signs server and client certificates.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

impl Authority {
    fn new() -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "kaifang test CA");
        let cert = params.self_signed(&key).unwrap();
        Authority { der: cert.der().clone(), pem: cert.pem(), params, key }
    }

    /// A certificate for `name`, as PEM (certificate, key) and DER.
    fn issue(&self, name: &str, client: bool) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca`, offering `alpn`, with a client certificate if given.
fn client_config(ca: &Authority, alpn: &[&[u8]], identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = builder.with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

use rustls::pki_types::pem::PemObject;

fn https(client_config: rustls::ClientConfig) -> reqwest::Client {
    crate::fixture::tls_provider();
    reqwest::Client::builder().use_preconfigured_tls(client_config).build().unwrap()
}

fn address(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// The certificate a TLS listener presents to a new connection.
async fn presented(ca: &Authority, at: SocketAddr, identity: Option<(&str, &str)>) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, &[b"h2"], identity)));
    let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn every_listener_speaks_tls_admin_asks_for_client_certificates_and_reload_swaps_certificates() {
    let ca = Authority::new();
    let (server_cert, server_key, server_der) = ca.issue("127.0.0.1", false);
    let (client_cert, client_key, _) = ca.issue("operator", true);
    let settings = "[http.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n\
                    [flight.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n\
                    [admin.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";
    let site = Site::with_settings(settings, &[("small", "csv", "small.csv", r#"[{ name = "n", type = "int64" }]"#)]);
    std::fs::write(site.data_dir.join("small.csv"), "n\n1\n2\n3\n").unwrap();
    let dir = site.config.parent().unwrap().to_owned();
    write(&dir, "server.pem", &server_cert);
    write(&dir, "server.key", &server_key);
    write(&dir, "ca.pem", &ca.pem);
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let (data, flight, admin) = (address(&g.base), address(&g.flight), address(&g.admin));

    // HTTP: HTTP/2 by ALPN, HTTP/1.1 for clients that offer only that; plain HTTP is refused.
    let h2 = https(client_config(&ca, &[b"h2", b"http/1.1"], None));
    let r = h2.get(format!("https://127.0.0.1:{}/healthz", data.port())).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));
    let h1 = https(client_config(&ca, &[b"http/1.1"], None));
    let r = h1.get(format!("https://127.0.0.1:{}/v1/catalog", data.port())).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
    assert!(crate::fixture::client().get(g.url("/healthz")).send().await.is_err(), "plain HTTP on a TLS port");

    // Flight over TLS, with the arrow-flight client.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &[b"h2"], None)));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(flight).await?;
                let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    let mut client = arrow_flight::FlightClient::new(channel);
    let infos: Vec<_> = futures_util::TryStreamExt::try_collect(client.list_flights("").await.unwrap()).await.unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    let batches: Vec<arrow::record_batch::RecordBatch> =
        futures_util::TryStreamExt::try_collect(client.do_get(arrow_flight::Ticket::new("small")).await.unwrap())
            .await
            .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3, "rows arrive over Flight with TLS");

    // Admin: no client certificate, no connection; with one, the token still applies.
    let metrics = format!("https://127.0.0.1:{}/metrics", admin.port());
    assert!(h2.get(&metrics).send().await.is_err(), "the admin listener took a client without a certificate");
    let operator = https(client_config(&ca, &[b"h2", b"http/1.1"], Some((&client_cert, &client_key))));
    assert_eq!(operator.get(&metrics).send().await.unwrap().status(), 200);
    let reload = format!("https://127.0.0.1:{}/admin/reload", admin.port());
    assert_eq!(operator.post(&reload).send().await.unwrap().status(), 401, "a certificate is not the operator token");

    // Reload with a new certificate: new connections get it, on every listener.
    assert_eq!(presented(&ca, data, None).await, server_der);
    let (new_cert, new_key, new_der) = ca.issue("127.0.0.1", false);
    write(&dir, "server.pem", &new_cert);
    write(&dir, "server.key", &new_key);
    let r = operator.post(&reload).bearer_auth(g.admin_token()).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(presented(&ca, data, None).await, new_der);
    assert_eq!(presented(&ca, flight, None).await, new_der);
    assert_eq!(presented(&ca, admin, Some((&client_cert, &client_key))).await, new_der);
    // The connection opened before the reload goes on.
    assert_eq!(h2.get(format!("https://127.0.0.1:{}/healthz", data.port())).send().await.unwrap().status(), 200);

    // A key that does not match the certificate is refused, and the running one stays.
    let (_, other_key, _) = ca.issue("127.0.0.1", false);
    write(&dir, "server.key", &other_key);
    let r = operator.post(&reload).bearer_auth(g.admin_token()).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"]["errors"][0].as_str().unwrap().starts_with("http.tls:"), "{body}");
    assert_eq!(presented(&ca, data, None).await, new_der);
}

#[test]
fn a_missing_or_mismatched_certificate_stops_the_start_with_its_reason() {
    let ca = Authority::new();
    let (cert, _, _) = ca.issue("127.0.0.1", false);
    let (_, other_key, _) = ca.issue("127.0.0.1", false);
    let site = Site::with_settings("[http.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n", &[]);
    let dir = site.config.parent().unwrap().to_owned();
    let start = || {
        std::process::Command::new(crate::fixture::BIN)
            .args(["serve", "--config", site.config.to_str().unwrap(), "--data-dir", site.data_dir.to_str().unwrap()])
            .args(["--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    let out = start();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.tls") && stderr.contains("server.pem"), "{stderr}");
    write(&dir, "server.pem", &cert);
    write(&dir, "server.key", &other_key);
    let out = start();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not belong together"), "{stderr}");
}
