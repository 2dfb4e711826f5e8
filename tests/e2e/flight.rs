//! Arrow Flight: the same decision, scope, masks, limits and audit as HTTP, through the
//! arrow-flight client over a real gRPC connection.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, FlightInfo, Ticket};
use base64::Engine;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

use crate::agreements::holder;
use crate::fixture::{client, read_arrow_stream, read_source, Gateway};
use crate::rows::urlencode;

const UNCONDITIONAL: [&str; 3] = ["air-quality", "bus-arrivals", "parking-lots"];

async fn channel(g: &Gateway) -> Channel {
    Channel::from_shared(g.flight.clone()).unwrap().connect().await.unwrap()
}

/// A Flight client, with the key as bearer token when there is one.
pub async fn connect(g: &Gateway, key: Option<&str>) -> FlightClient {
    let mut client = FlightClient::new(channel(g).await);
    if let Some(key) = key {
        client.add_header("authorization", &format!("Bearer {key}")).unwrap();
    }
    client
}

/// The gRPC status of a failed call.
pub fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn command(value: Value) -> FlightDescriptor {
    FlightDescriptor::new_cmd(serde_json::to_vec(&value).unwrap())
}

fn path(id: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![id.to_owned()])
}

/// All rows a ticket streams, as one batch (with the schema even when there are none).
async fn get_all(client: &mut FlightClient, ticket: Ticket) -> Result<RecordBatch, FlightError> {
    let mut stream = client.do_get(ticket).await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    let schema = stream.schema().cloned().expect("a schema message comes first");
    Ok(arrow::compute::concat_batches(&schema, &batches).unwrap())
}

fn ticket(info: &FlightInfo) -> Ticket {
    assert_eq!(info.endpoint.len(), 1, "one endpoint");
    info.endpoint[0].ticket.clone().expect("a ticket")
}

/// The same query over HTTP, as Arrow.
async fn http_rows(g: &Gateway, id: &str, query: &str, key: Option<&str>) -> RecordBatch {
    let mut request = client().get(g.url(&format!("/v1/datasets/{id}/rows?format=arrow&{query}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200, "{id}?{query}");
    let batches = read_arrow_stream(&r.bytes().await.unwrap());
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

async fn listed(client: &mut FlightClient) -> Vec<FlightInfo> {
    client.list_flights("").await.unwrap().try_collect().await.unwrap()
}

fn ids(infos: &[FlightInfo]) -> BTreeSet<String> {
    infos.iter().map(|i| FlightDescriptor::clone(i.flight_descriptor.as_ref().unwrap())).map(dataset_of).collect()
}

fn dataset_of(descriptor: FlightDescriptor) -> String {
    let command: Value = serde_json::from_slice(&descriptor.cmd).unwrap();
    command["dataset"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_open_type_is_listed_described_and_served_as_over_http() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let mut anonymous = connect(&g, None).await;
    let mut holder = connect(&g, Some(&key)).await;

    let expected: BTreeSet<String> = UNCONDITIONAL.iter().map(|s| s.to_string()).collect();
    let listed_anonymously = listed(&mut anonymous).await;
    assert_eq!(ids(&listed_anonymously), expected, "anonymous callers see unconditional data only");
    let mut with_enterprises = expected.clone();
    with_enterprises.insert("enterprises".into());
    let listed_to_holder = listed(&mut holder).await;
    assert_eq!(ids(&listed_to_holder), with_enterprises, "a holder also sees what its agreement covers");
    let searched: Vec<FlightInfo> = anonymous.list_flights("parking").await.unwrap().try_collect().await.unwrap();
    assert_eq!(ids(&searched), BTreeSet::from(["parking-lots".to_owned()]), "criteria search the catalog text");

    for id in UNCONDITIONAL {
        let info = anonymous.get_flight_info(path(id)).await.unwrap();
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(anonymous.get_schema(path(id)).await.unwrap(), schema, "{id}: GetSchema agrees with the info");
        let flight = get_all(&mut anonymous, ticket(&info)).await.unwrap();
        let http = http_rows(&g, id, "", None).await;
        assert_eq!(flight.schema().as_ref(), &schema, "{id}: the stream has the schema announced");
        assert!(flight.num_rows() > 0, "{id}");
        assert_eq!(flight, http, "{id}: Flight and HTTP serve the same values");
        let app: Value = serde_json::from_slice(&info.app_metadata).unwrap();
        assert_eq!((app["id"].as_str(), app["open_type"].as_str()), (Some(id), Some("unconditional")));
        let listed = listed_anonymously.iter().find(|i| dataset_of(i.flight_descriptor.clone().unwrap()) == id);
        assert_eq!(listed.unwrap().clone().try_decode_schema().unwrap(), schema, "{id}: listed with its schema");
        // Parquet records its row count in the footer; the other formats would need a scan.
        let expected_total = if id == "air-quality" { flight.num_rows() as i64 } else { -1 };
        assert_eq!(info.total_records, expected_total, "{id}");
    }
    let source = read_source(&g.data_dir.join("demo/air-quality.parquet"));
    let served = get_all(&mut anonymous, Ticket::new("air-quality")).await.unwrap();
    assert_eq!(served.num_rows(), source.num_rows(), "a bare dataset id is a ticket for the whole dataset");

    // Conditional: only with a key under an agreement.
    for e in [
        anonymous.get_flight_info(path("enterprises")).await.unwrap_err(),
        anonymous.do_get(Ticket::new("enterprises")).await.map(|_| ()).unwrap_err(),
    ] {
        let e = status(e);
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
        assert!(e.message().starts_with("key_required:"), "{e}");
    }
    let info = holder.get_flight_info(path("enterprises")).await.unwrap();
    let served = get_all(&mut holder, ticket(&info)).await.unwrap();
    assert_eq!(served, http_rows(&g, "enterprises", "", Some(&key)).await);
    assert_eq!(info.total_records, -1, "rows under a row filter are not known before reading");

    // Non-open and unknown datasets get one and the same answer.
    let mut answers = Vec::new();
    for id in ["subsistence-allowance", "no-such-dataset"] {
        for client in [&mut anonymous, &mut holder] {
            let e = status(client.get_flight_info(path(id)).await.unwrap_err());
            answers.push((e.code(), e.message().to_owned()));
            let e = status(client.do_get(Ticket::new(id)).await.map(|_| ()).unwrap_err());
            answers.push((e.code(), e.message().to_owned()));
        }
    }
    assert!(answers.iter().all(|a| *a == (Code::NotFound, "not_found: no dataset with this id".into())), "{answers:?}");
}

/// `value` with `head` and `tail` characters kept and the rest starred, as the masks do.
fn kept(value: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len().max(1));
    }
    let middle = "*".repeat(chars.len() - head - tail);
    format!(
        "{}{middle}{}",
        chars[..head].iter().collect::<String>(),
        chars[chars.len() - tail..].iter().collect::<String>()
    )
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = arrow::compute::cast(batch.column_by_name(column).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    let array = array.as_string::<i32>();
    (0..array.len()).map(|i| array.is_valid(i).then(|| array.value(i).to_owned())).collect()
}

#[tokio::test]
async fn a_holder_receives_its_rows_and_columns_masked_value_by_value() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let mut holder = connect(&g, Some(&key)).await;
    let columns = ["uscc", "name", "district", "legal_rep_name", "legal_rep_id_card", "legal_rep_mobile"];
    let asked = command(json!({"dataset": "enterprises", "columns": columns, "filter": "status = 'active'"}));
    let info = holder.get_flight_info(asked.clone()).await.unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, columns);
    assert_eq!(holder.get_schema(asked).await.unwrap(), schema);
    let whole = holder.get_schema(path("enterprises")).await.unwrap();
    assert!(whole.field_with_name("registered_capital").is_err(), "a column outside the scope is absent");
    assert_eq!(whole.fields().len(), 9);

    let served = get_all(&mut holder, ticket(&info)).await.unwrap();
    let source = read_source(&g.data_dir.join("demo/enterprises.arrow"));
    let by_uscc: HashMap<String, usize> =
        strings(&source, "uscc").into_iter().enumerate().map(|(i, u)| (u.unwrap(), i)).collect();
    let source_column = |name: &str| strings(&source, name);
    let (district, status, name, rep, id_card, mobile) = (
        source_column("district"),
        source_column("status"),
        source_column("name"),
        source_column("legal_rep_name"),
        source_column("legal_rep_id_card"),
        source_column("legal_rep_mobile"),
    );
    let expected_rows = (0..source.num_rows())
        .filter(|&i| district[i].as_deref() == Some("Haizhou") && status[i].as_deref() == Some("active"))
        .count();
    assert!(expected_rows > 0, "the demo data has active enterprises in Haizhou");
    assert_eq!(served.num_rows(), expected_rows, "exactly the agreement's rows that pass the filter");
    let got = |c: &str| strings(&served, c);
    let (uscc, got_district, got_name, got_rep, got_id_card, got_mobile) = (
        got("uscc"),
        got("district"),
        got("name"),
        got("legal_rep_name"),
        got("legal_rep_id_card"),
        got("legal_rep_mobile"),
    );
    for row in 0..served.num_rows() {
        let i = by_uscc[uscc[row].as_ref().unwrap()];
        assert_eq!(got_district[row].as_deref(), Some("Haizhou"));
        assert_eq!(got_name[row], name[i], "unmasked columns pass as they are");
        assert_eq!(got_rep[row], rep[i].as_deref().map(|v| kept(v, 1, 0)), "keep_first(1)");
        assert_eq!(got_id_card[row], id_card[i].as_deref().map(|v| kept(v, 6, 4)), "cn_id_card");
        assert_eq!(got_mobile[row], mobile[i].as_deref().map(|v| kept(v, 3, 4)), "cn_mobile");
    }
    let query = format!("columns={}&filter={}", columns.join(","), urlencode("status = 'active'"));
    assert_eq!(served, http_rows(&g, "enterprises", &query, Some(&key)).await, "the same answer as over HTTP");

    // A filter on a masked column sees the masked value, as over HTTP.
    let one = mobile[by_uscc[uscc[0].as_ref().unwrap()]].clone().unwrap();
    let probe = json!({"dataset": "enterprises", "filter": format!("legal_rep_mobile = '{one}'")});
    let probed = get_all(&mut holder, Ticket::new(serde_json::to_vec(&probe).unwrap())).await.unwrap();
    assert_eq!(probed.num_rows(), 0, "the clear value matches nothing");
}

#[tokio::test]
async fn refusals_are_the_grpc_statuses_the_interface_names() {
    let g = Gateway::demo_process();
    let key = g.demo_key();
    let mut holder = connect(&g, Some(&key)).await;
    let expect = |e: FlightError, code: Code, prefix: &str| {
        let e = status(e);
        assert_eq!(e.code(), code, "{e}");
        assert!(e.message().starts_with(prefix), "{e}");
        e
    };

    // Unauthenticated: an unknown key, on every RPC.
    let mut stranger = connect(&g, Some("kf_0123456789abcdef_0000")).await;
    expect(stranger.list_flights("").await.map(|_| ()).unwrap_err(), Code::Unauthenticated, "unknown_key:");
    expect(stranger.get_flight_info(path("bus-arrivals")).await.unwrap_err(), Code::Unauthenticated, "unknown_key:");
    expect(
        stranger.do_get(Ticket::new("bus-arrivals")).await.map(|_| ()).unwrap_err(),
        Code::Unauthenticated,
        "unknown_key:",
    );

    // PermissionDenied: a column outside the agreement's scope, named in the command.
    let outside = command(json!({"dataset": "enterprises", "columns": ["name", "registered_capital"]}));
    expect(holder.get_flight_info(outside.clone()).await.unwrap_err(), Code::PermissionDenied, "column_outside_scope:");
    let ticket = Ticket::new(outside.cmd.clone());
    expect(holder.do_get(ticket).await.map(|_| ()).unwrap_err(), Code::PermissionDenied, "column_outside_scope:");

    // InvalidArgument: malformed commands and tickets, bad filters (with the position), unknown
    // columns; nothing is read.
    for (asked, prefix) in [
        (FlightDescriptor::new_cmd("not json"), "bad_command:"),
        (command(json!({"dataset": "bus-arrivals", "limt": 3})), "bad_command:"),
        (FlightDescriptor::new_path(vec!["a".into(), "b".into()]), "bad_command:"),
        (command(json!({"dataset": "bus-arrivals", "filter": "route = "})), "bad_filter:"),
        (command(json!({"dataset": "bus-arrivals", "columns": ["nope"]})), "unknown_column:"),
    ] {
        expect(holder.get_flight_info(asked.clone()).await.unwrap_err(), Code::InvalidArgument, prefix);
        expect(holder.get_schema(asked).await.unwrap_err(), Code::InvalidArgument, prefix);
    }
    let e = expect(
        holder
            .do_get(Ticket::new(r#"{"dataset": "bus-arrivals", "filter": "route = "}"#))
            .await
            .map(|_| ())
            .unwrap_err(),
        Code::InvalidArgument,
        "bad_filter:",
    );
    assert!(e.message().contains("position 9"), "{e}");

    // ResourceExhausted: the agreement's rate, then its daily row quota, each named.
    let big = json!({"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let (limited, _) = crate::agreements::holder(&g, "acme", json!({"per_second": 1, "burst": 1}), big).await;
    let mut limited = connect(&g, Some(&limited)).await;
    let one = Ticket::new(r#"{"dataset": "enterprises", "limit": 1}"#);
    assert_eq!(get_all(&mut limited, one.clone()).await.unwrap().num_rows(), 1);
    let e = expect(
        limited.do_get(one.clone()).await.map(|_| ()).unwrap_err(),
        Code::ResourceExhausted,
        "rate_limited: the agreement rate limit",
    );
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    let small = json!({"requests_per_day": 1000, "rows_per_day": 5, "bytes_per_day": 1_000_000_000});
    let (quota_holder, _) = holder_with(&g, "beta", small).await;
    let mut quota_holder = connect(&g, Some(&quota_holder)).await;
    expect(
        quota_holder.do_get(Ticket::new(r#"{"dataset": "enterprises", "limit": 10}"#)).await.map(|_| ()).unwrap_err(),
        Code::ResourceExhausted,
        "quota_exhausted: the daily quota `rows_per_day`",
    );

    // Unavailable: the audit log cannot take records, so conditional data stops (unconditional
    // data does not).
    let limit = |value: &str| g.limit_file_size(value);
    limit("1:unlimited");
    expect(
        holder.do_get(Ticket::new("enterprises")).await.map(|_| ()).unwrap_err(),
        Code::Unavailable,
        "audit_unavailable:",
    );
    let mut anonymous = connect(&g, None).await;
    assert!(get_all(&mut anonymous, Ticket::new("bus-arrivals")).await.unwrap().num_rows() > 0);
    limit("unlimited:unlimited");

    // What Flight does not offer is said so.
    let mut raw = FlightServiceClient::new(channel(&g).await);
    let e = raw.do_action(arrow_flight::Action::new("drop", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().starts_with("read_only: "), "{}", e.message());
    // The actions offered are Flight SQL's prepared statements'.
    let actions: Vec<_> = holder.list_actions().await.unwrap().try_collect().await.unwrap();
    let names: Vec<&str> = actions.iter().map(|a| a.r#type.as_str()).collect();
    assert_eq!(names, ["CreatePreparedStatement", "ClosePreparedStatement"]);
}

/// A principal with a key and an agreement on enterprises at a generous rate and `quota`.
async fn holder_with(g: &Gateway, p: &str, quota: Value) -> (String, String) {
    holder(g, p, json!({"per_second": 100, "burst": 100}), quota).await
}

#[tokio::test]
async fn conditional_calls_are_audited_as_over_http_and_counted_in_metrics() {
    let g = Gateway::demo();
    let key = g.demo_key();
    let mut holder = connect(&g, Some(&key)).await;
    holder.add_header("x-request-id", "flight-served").unwrap();
    let served =
        get_all(&mut holder, Ticket::new(r#"{"dataset": "enterprises", "columns": ["uscc", "legal_rep_mobile"]}"#))
            .await
            .unwrap();
    let mut refused = connect(&g, Some(&key)).await;
    refused.add_header("x-request-id", "flight-refused").unwrap();
    let e = refused.do_get(Ticket::new(r#"{"dataset": "enterprises", "columns": ["registered_capital"]}"#)).await;
    assert_eq!(status(e.map(|_| ()).unwrap_err()).code(), Code::PermissionDenied);
    let mut anonymous = connect(&g, None).await;
    anonymous.add_header("x-request-id", "flight-anonymous").unwrap();
    assert_eq!(
        status(anonymous.do_get(Ticket::new("enterprises")).await.map(|_| ()).unwrap_err()).code(),
        Code::Unauthenticated
    );
    // Metadata calls read no data and leave no record.
    holder.add_header("x-request-id", "flight-info").unwrap();
    holder.get_flight_info(path("enterprises")).await.unwrap();

    let log = crate::audit::records(&g, "dataset=enterprises").await;
    let kinds = |id: &str| log[id].iter().map(|r| r["kind"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(kinds("flight-served"), ["intent", "completion"]);
    let (intent, completion) = (&log["flight-served"][0], &log["flight-served"][1]);
    assert_eq!(intent["operation"], "flight");
    assert_eq!(intent["principal"], "demo-analytics");
    assert_eq!(intent["agreement"], "demo-enterprises");
    assert_eq!(intent["columns"], json!(["uscc", "legal_rep_mobile"]));
    assert_eq!(intent["masks"], json!({"legal_rep_mobile": "cn_mobile"}));
    assert_eq!(completion["outcome"], "complete");
    assert_eq!(completion["status"], 200);
    assert_eq!(completion["rows"], served.num_rows() as u64);
    assert!(completion["bytes"].as_u64().unwrap() > 0);
    assert_eq!(kinds("flight-refused"), ["unserved"]);
    assert_eq!(
        (log["flight-refused"][0]["status"].as_u64(), log["flight-refused"][0]["operation"].as_str()),
        (Some(403), Some("flight"))
    );
    assert_eq!(kinds("flight-anonymous"), ["unserved"]);
    assert_eq!(log["flight-anonymous"][0]["status"], 401);
    assert!(!log.contains_key("flight-info"));

    // Metrics count Flight calls apart from HTTP ones.
    let mut open = connect(&g, None).await;
    let bus = get_all(&mut open, Ticket::new("bus-arrivals")).await.unwrap();
    assert!(bus.num_rows() > 0);
    let samples = crate::metrics::samples(&crate::metrics::scrape(&g).await);
    let value = |key: &str| crate::metrics::value(&samples, key);
    let served_label = r#"kaifang_requests_total{dataset="bus-arrivals",open_type="unconditional",protocol="flight",status_class="2xx"}"#;
    assert_eq!(value(served_label), 1.0);
    let denied =
        r#"kaifang_requests_total{dataset="enterprises",open_type="conditional",protocol="flight",status_class="4xx"}"#;
    assert_eq!(value(denied), 2.0);
    let bytes = r#"kaifang_response_bytes_total{dataset="bus-arrivals",open_type="unconditional",protocol="flight"}"#;
    assert!(value(bytes) > 0.0);
}

#[tokio::test]
async fn handshake_trades_the_key_for_a_bearer_token() {
    let g = Gateway::demo();
    let key = g.demo_key();
    // The key as payload (arrow-rs), handed back as the token.
    let mut client = connect(&g, None).await;
    let token = client.handshake(key.clone()).await.unwrap();
    assert_eq!(token, key.as_bytes());
    let mut bad = connect(&g, None).await;
    assert_eq!(status(bad.handshake("kf_0123456789abcdef_00").await.unwrap_err()).code(), Code::Unauthenticated);

    // Basic authentication with the key as password (pyarrow's authenticate_basic_token).
    let mut raw = FlightServiceClient::new(channel(&g).await);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{key}"));
    let mut request = tonic::Request::new(futures_util::stream::iter([arrow_flight::HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", format!("Basic {basic}").parse().unwrap());
    let response = raw.handshake(request).await.unwrap();
    let bearer = response.metadata().get("authorization").unwrap().to_str().unwrap().to_owned();
    assert_eq!(bearer, format!("Bearer {key}"));
    let mut request = tonic::Request::new(futures_util::stream::iter([arrow_flight::HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", "Basic bm9ib2R5Om5vcGU=".parse().unwrap());
    assert_eq!(raw.handshake(request).await.unwrap_err().code(), Code::Unauthenticated);
    let request = tonic::Request::new(futures_util::stream::iter([arrow_flight::HandshakeRequest::default()]));
    let e = raw.handshake(request).await.unwrap_err();
    assert_eq!((e.code(), e.message().starts_with("key_required:")), (Code::Unauthenticated, true), "{e}");

    // The token opens conditional data.
    let mut with_token = connect(&g, None).await;
    with_token.add_header("authorization", &bearer).unwrap();
    assert!(get_all(&mut with_token, Ticket::new("enterprises")).await.unwrap().num_rows() > 0);
}

/// Reads `/proc/<pid>/<file>` field `name` (a number, the first on its line).
fn proc_field(pid: u32, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap();
    line[name.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn big_batches_are_split_under_the_message_limit_and_a_stalled_client_holds_the_source_back() {
    let site = crate::fixture::Site::with_settings("", &[]);
    let out = Command::new(crate::fixture::BIN)
        .args(["demo-data", "--rows", "400000", "--out", site.data_dir.join("demo").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&site.config, demo_catalog_config(&std::fs::read_to_string(&site.config).unwrap())).unwrap();
    // Both read from their files on every call: how file batches leave as messages, and what a
    // stalled client lets the reader do, are what is tested.
    site.set_entry("demo/bus-arrivals.csv", "cache = \"never\"");
    site.set_entry("demo/enterprises.arrow", "cache = \"never\"");
    let g = Gateway::with_config(&site.config, &site.data_dir);
    let mut raw = FlightServiceClient::new(channel(&g).await).max_decoding_message_size(4 << 20);

    // The Arrow IPC file holds batches of 65,536 rows, several MiB each: each leaves as several
    // messages, all within the 4 MiB that common clients take.
    let ipc = site.data_dir.join("demo/enterprises.arrow");
    let source_batches =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(&ipc).unwrap(), None).unwrap().num_batches();
    let mut messages = raw.do_get(Ticket::new("enterprises-open")).await.unwrap().into_inner();
    let (mut batches, mut largest, mut rows) = (0usize, 0usize, 0usize);
    while let Some(message) = messages.message().await.unwrap() {
        largest = largest.max(prost::Message::encoded_len(&message));
        if !message.data_body.is_empty() {
            batches += 1;
            let header = arrow::ipc::root_as_message(&message.data_header).unwrap();
            rows += header.header_as_record_batch().unwrap().length() as usize;
        }
    }
    assert_eq!(rows, 400_000);
    assert!(largest <= 4 << 20, "largest message {largest} bytes");
    assert!(batches >= 2 * source_batches, "{source_batches} source batches left as only {batches} messages");

    // A client that takes the schema and then nothing: the gateway reads ahead only as far as
    // its bounded buffers (a few batches of 8,192 rows), not the file.
    let csv = site.data_dir.join("demo/bus-arrivals.csv");
    let file_bytes = std::fs::metadata(&csv).unwrap().len();
    assert!(file_bytes > 30 << 20, "the file must outsize every buffer on the way: {file_bytes} bytes");
    let mut messages = raw.do_get(Ticket::new("bus-arrivals")).await.unwrap().into_inner();
    let first = messages.message().await.unwrap().unwrap();
    assert!(first.data_body.is_empty(), "the schema comes first");
    let read_before = proc_field(g.pid(), "io", "rchar:");
    let rss_before = proc_field(g.pid(), "status", "VmRSS:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read_stalled = proc_field(g.pid(), "io", "rchar:") - read_before;
    let rss_stalled = proc_field(g.pid(), "status", "VmRSS:");
    assert!(read_stalled < file_bytes / 4, "read {read_stalled} of {file_bytes} bytes for a client that takes none");
    assert!(rss_stalled < rss_before + (32 << 10), "RSS went from {rss_before} kB to {rss_stalled} kB while stalled");
    let mut rows = 0;
    while let Some(message) = messages.message().await.unwrap() {
        if !message.data_body.is_empty() {
            let header = arrow::ipc::root_as_message(&message.data_header).unwrap();
            rows += header.header_as_record_batch().unwrap().length() as usize;
        }
    }
    assert_eq!(rows, 400_000, "the stalled stream resumes and completes");
}

/// The demo's bus-arrivals entry, and its enterprises entry as an unconditional
/// `enterprises-open`, appended to a test site's configuration.
fn demo_catalog_config(settings: &str) -> String {
    let catalog = |file: &str| {
        std::fs::read_to_string(format!("{}/../config/catalog/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let transport = catalog("transport.toml");
    let bus = transport.split("[[datasets]]").find(|d| d.contains("id = \"bus-arrivals\"")).unwrap();
    let market = catalog("market.toml");
    let enterprises = market.split("[[datasets]]").find(|d| d.contains("id = \"enterprises\"")).unwrap();
    let open = enterprises
        .replace("id = \"enterprises\"", "id = \"enterprises-open\"")
        .replace("open_type = \"conditional\"", "open_type = \"unconditional\"");
    format!("{settings}\n[[datasets]]{bus}\n[[datasets]]{open}")
}
