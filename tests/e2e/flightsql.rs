//! Flight SQL through arrow-flight's Flight SQL client: the catalog commands ADBC, the JDBC
//! driver and BI tools ask before they query, and SQL statements, plain and prepared, on the
//! same grants, limits and audit as every other call.

use arrow::array::{Array, AsArray};
use arrow::compute::concat_batches;
use arrow::datatypes::Int64Type;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetTables,
    CommandGetXdbcTypeInfo, SqlInfo,
};
use arrow_flight::{FlightInfo, Ticket};
use futures_util::TryStreamExt;
use reqwest::Method;
use serde_json::json;
use tonic::transport::Channel;

use crate::fixture::Gateway;

async fn sql_client(g: &Gateway, key: Option<&str>) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(g.flight.clone()).unwrap().connect().await.unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(key) = key {
        client.set_header("authorization", format!("Bearer {key}"));
    }
    client
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    batches
}

/// The string values of `column` over all batches.
fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).unwrap_or_else(|| panic!("no column {column}")).as_string::<i32>();
            array.iter().map(|v| v.unwrap_or_default().to_owned()).collect::<Vec<_>>()
        })
        .collect()
}

/// The tables `key` may read, each with the schema it would receive.
async fn tables(g: &Gateway, key: Option<&str>) -> Vec<(String, Schema)> {
    let mut client = sql_client(g, key).await;
    let request = CommandGetTables { include_schema: true, ..Default::default() };
    let batches = {
        let info = client.get_tables(request).await.unwrap();
        fetch(&mut client, info).await
    };
    let names = strings(&batches, "table_name");
    let schemas = batches.iter().flat_map(|b| {
        let column = b.column_by_name("table_schema").unwrap().as_binary::<i32>().clone();
        (0..column.len()).map(move |i| arrow::ipc::convert::try_schema_from_ipc_buffer(column.value(i)).unwrap())
    });
    names.into_iter().zip(schemas).collect()
}

#[tokio::test]
async fn flight_sql_clients_find_the_server_and_the_tables_they_may_read() {
    let g = Gateway::demo();
    let mut client = sql_client(&g, None).await;

    let info = client.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await.unwrap();
    let batches = fetch(&mut client, info).await;
    let names: Vec<u32> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::UInt32Type>().values().to_vec())
        .collect();
    assert_eq!(names.len(), 2, "the two infos asked for: {names:?}");

    let catalogs = {
        let info = client.get_catalogs().await.unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(strings(&catalogs, "catalog_name"), ["kaifang"]);
    let schemas = {
        let info = client.get_db_schemas(CommandGetDbSchemas::default()).await.unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(strings(&schemas, "db_schema_name"), ["public"]);
    let types = {
        let info = client.get_table_types().await.unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(strings(&types, "table_type"), ["TABLE"]);

    // Anonymous callers see the unconditional datasets; conditional data needs an agreement,
    // and non-open data is never a table.
    let anonymous: Vec<String> = tables(&g, None).await.into_iter().map(|(name, _)| name).collect();
    assert!(anonymous.contains(&"bus-arrivals".to_owned()), "{anonymous:?}");
    assert!(!anonymous.contains(&"enterprises".to_owned()), "{anonymous:?}");
    assert!(!anonymous.contains(&"subsistence-allowance".to_owned()), "{anonymous:?}");

    // The demo user's agreement makes enterprises a table, with the agreement's columns only.
    let held = tables(&g, Some(&g.demo_key())).await;
    let (_, enterprises) =
        held.iter().find(|(name, _)| name == "enterprises").expect("enterprises under the agreement");
    let columns: Vec<&str> = enterprises.fields().iter().map(|f| f.name().as_str()).collect();
    assert!(
        columns.contains(&"name") && !columns.contains(&"registered_capital"),
        "the agreement's columns: {columns:?}"
    );
    assert!(!held.iter().any(|(name, _)| name == "subsistence-allowance"));

    // A table name filter is applied.
    let mut client = sql_client(&g, None).await;
    let request = CommandGetTables { table_name_filter_pattern: Some("bus%".into()), ..Default::default() };
    let filtered = {
        let info = client.get_tables(request).await.unwrap();
        fetch(&mut client, info).await
    };
    assert_eq!(strings(&filtered, "table_name"), ["bus-arrivals"]);

    // Datasets declare no keys: the key commands answer no rows, in the protocol's schemas.
    let table = "bus-arrivals".to_owned();
    let primary = CommandGetPrimaryKeys { catalog: None, db_schema: None, table: table.clone() };
    let info = client.get_primary_keys(primary).await.unwrap();
    let schema = arrow::datatypes::Schema::try_from(info.clone()).unwrap();
    assert_eq!(schema.field(5).name(), "key_sequence");
    assert_eq!(fetch(&mut client, info).await.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let exported = CommandGetExportedKeys { catalog: None, db_schema: None, table: table.clone() };
    let info = client.get_exported_keys(exported).await.unwrap();
    assert_eq!(arrow::datatypes::Schema::try_from(info.clone()).unwrap().fields().len(), 13);
    assert_eq!(fetch(&mut client, info).await.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let imported = CommandGetImportedKeys { catalog: None, db_schema: None, table };
    let info = client.get_imported_keys(imported).await.unwrap();
    assert_eq!(fetch(&mut client, info).await.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);

    // The SQL types of the datasets' columns.
    let info = client.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None }).await.unwrap();
    let types = fetch(&mut client, info).await;
    let mut names = strings(&types, "type_name");
    names.sort();
    assert_eq!(names, ["BIGINT", "BOOLEAN", "DATE", "DOUBLE", "TIMESTAMP", "VARCHAR"]);
}

/// The answer of `sql` for `key`, sent with `request_id`.
async fn query(g: &Gateway, key: Option<&str>, request_id: &str, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut client = sql_client(g, key).await;
    client.set_header("x-request-id", request_id);
    let info = match client.execute(sql.into(), None).await {
        Ok(info) => info,
        Err(e) => return Err(crate::flight::status(e)),
    };
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.expect("a ticket")).await.map_err(crate::flight::status)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(crate::flight::status)?);
    }
    Ok(batches)
}

/// What plain Flight's `DoGet` answers `key` for `ticket`, as one batch.
async fn plain(g: &Gateway, key: Option<&str>, ticket: &str) -> RecordBatch {
    let mut client = crate::flight::connect(g, key).await;
    let batches: Vec<RecordBatch> =
        client.do_get(Ticket::new(ticket.to_owned())).await.unwrap().try_collect().await.unwrap();
    let schema = batches.first().map(RecordBatch::schema).expect("a batch");
    concat_batches(&schema, &batches).unwrap()
}

/// `batches` as one, under `schema`.
fn one(batches: &[RecordBatch]) -> RecordBatch {
    let schema = batches.first().map(RecordBatch::schema).expect("a batch");
    concat_batches(&schema, batches).unwrap()
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn a_statement_answers_what_plain_flight_answers_on_every_open_dataset() {
    let g = Gateway::demo();
    // Every unconditional dataset of the demo, whatever its source format.
    for dataset in ["bus-arrivals", "parking-lots", "air-quality"] {
        let sql = format!("SELECT * FROM \"{dataset}\"");
        let answered = one(&query(&g, None, "sql-open", &sql).await.unwrap());
        let expected = plain(&g, None, dataset).await;
        assert_eq!(answered.num_rows(), expected.num_rows(), "{dataset}");
        assert_eq!(answered.schema().fields().len(), expected.schema().fields().len(), "{dataset}");
        for (field, column) in expected.schema().fields().iter().zip(expected.columns()) {
            let got = answered.column_by_name(field.name()).unwrap_or_else(|| panic!("{dataset}: no {}", field.name()));
            assert_eq!(got.as_ref(), column.as_ref(), "{dataset}.{}", field.name());
        }
        // The engine's own work on top: a count and a filter.
        let counted = query(&g, None, "sql-count", &format!("SELECT count(*) FROM \"{dataset}\"")).await.unwrap();
        assert_eq!(count(&counted) as usize, expected.num_rows(), "{dataset}");
    }
    let limited = query(&g, None, "sql-limit", "SELECT * FROM \"air-quality\" LIMIT 5").await.unwrap();
    assert_eq!(one(&limited).num_rows(), 5);
    // Filters handed to the scan (and a limit after them) answer exactly what SQL means,
    // nulls included.
    let air = plain(&g, None, "air-quality").await;
    let sql = "SELECT district FROM \"air-quality\" WHERE district = 'Haizhou' AND aqi >= 100 LIMIT 3";
    let districts = strings(&query(&g, None, "sql-pushed", sql).await.unwrap(), "district");
    assert_eq!(districts, ["Haizhou"; 3]);
    let nulls = air.column_by_name("o3").unwrap().null_count();
    assert!(nulls > 0, "the demo has readings without o3");
    let sql = "SELECT count(*) FROM \"air-quality\" WHERE o3 IS NULL";
    assert_eq!(count(&query(&g, None, "sql-nulls", sql).await.unwrap()) as usize, nulls);
    let sql = "SELECT count(*) FROM \"air-quality\" WHERE o3 != 50 OR o3 = 50";
    assert_eq!(count(&query(&g, None, "sql-not-null", sql).await.unwrap()) as usize, air.num_rows() - nulls);

    // Names the caller may not read do not exist: non-open and unknown are answered alike.
    let non_open = query(&g, None, "sql-no", "SELECT * FROM \"subsistence-allowance\"").await.unwrap_err();
    let unknown = query(&g, None, "sql-no", "SELECT * FROM \"no-such-dataset\"").await.unwrap_err();
    assert_eq!(non_open.code(), tonic::Code::NotFound);
    assert_eq!((non_open.code(), non_open.message()), (unknown.code(), unknown.message()));
    let anonymous = query(&g, None, "sql-no", "SELECT * FROM enterprises").await.unwrap_err();
    assert_eq!((anonymous.code(), anonymous.message()), (unknown.code(), unknown.message()));

    // A syntax error says where it is.
    let syntax = query(&g, None, "sql-bad", "SELECT * FROM \"air-quality\"\nWHER aqi > 3").await.unwrap_err();
    assert_eq!(syntax.code(), tonic::Code::InvalidArgument);
    assert!(syntax.message().starts_with("sql_syntax: "), "{}", syntax.message());
    assert!(syntax.message().contains("at position 34"), "{}", syntax.message());

    // Nothing changes anything.
    let copy = "COPY (SELECT * FROM \"air-quality\") TO 'copied.csv'";
    for sql in
        ["CREATE TABLE t AS SELECT 1", "DELETE FROM \"air-quality\"", "SET datafusion.execution.batch_size = 1", copy]
    {
        let refused = query(&g, None, "sql-write", sql).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented, "{sql}: {refused:?}");
        assert!(refused.message().starts_with("read_only: "), "{sql}: {}", refused.message());
    }
    let mut client = sql_client(&g, None).await;
    let update = client.execute_update("DELETE FROM \"air-quality\"".into(), None).await.unwrap_err();
    assert!(update.to_string().contains("read-only"), "{update}");
}

#[tokio::test]
async fn a_join_of_two_datasets_and_a_prepared_statement_with_a_bound_parameter() {
    let g = Gateway::demo();
    // The join, checked against counts made from plain Flight's answers.
    let lots = plain(&g, None, "parking-lots").await;
    let air = plain(&g, None, "air-quality").await;
    let by_district = |batch: &RecordBatch| {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for district in batch.column_by_name("district").unwrap().as_string::<i32>().iter().flatten() {
            *counts.entry(district.to_owned()).or_default() += 1;
        }
        counts
    };
    let (lots_by, air_by) = (by_district(&lots), by_district(&air));
    let sql = "SELECT p.district, count(*) AS n FROM \"parking-lots\" p JOIN \"air-quality\" a \
               ON p.district = a.district GROUP BY p.district ORDER BY p.district";
    let joined = one(&query(&g, None, "sql-join", sql).await.unwrap());
    let districts = joined.column(0).as_string::<i32>();
    let counts = joined.column(1).as_primitive::<Int64Type>();
    let expected: Vec<(String, i64)> =
        lots_by.iter().filter_map(|(d, n)| air_by.get(d).map(|m| (d.clone(), n * m))).collect();
    assert!(!expected.is_empty());
    let got: Vec<(String, i64)> =
        (0..joined.num_rows()).map(|i| (districts.value(i).to_owned(), counts.value(i))).collect();
    assert_eq!(got, expected);

    // A prepared statement: planned with its parameter's type, bound through DoPut, executed.
    let mut client = sql_client(&g, None).await;
    let mut prepared = client.prepare("SELECT * FROM \"air-quality\" WHERE station_id = ?".into(), None).await.unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 1);
    assert_eq!(parameters.field(0).data_type(), &arrow::datatypes::DataType::Utf8);
    let station = air.column_by_name("station_id").unwrap().as_string::<i32>().value(0).to_owned();
    let value = arrow::array::StringArray::from(vec![station.as_str()]);
    let bound = RecordBatch::try_new(std::sync::Arc::new(parameters), vec![std::sync::Arc::new(value)]).unwrap();
    prepared.set_parameters(bound).unwrap();
    let info = prepared.execute().await.unwrap();
    let answered = fetch(&mut client, info).await;
    let stations = strings(&answered, "station_id");
    let expected =
        air.column_by_name("station_id").unwrap().as_string::<i32>().iter().filter(|s| *s == Some(&station)).count();
    assert_eq!(stations.len(), expected);
    assert!(stations.iter().all(|s| *s == station));
    prepared.close().await.unwrap();
}

#[tokio::test]
async fn conditional_data_through_sql_is_the_agreement_scope_masked_and_recorded() {
    let g = Gateway::demo();
    let key = g.demo_key();
    // The whole table is what plain Flight answers under the same agreement: its columns, its
    // rows, its masked values.
    let expected = plain(&g, Some(&key), "enterprises").await;
    let answered = one(&query(&g, Some(&key), "sql-scope", "SELECT * FROM enterprises").await.unwrap());
    assert_eq!(answered.schema().fields().len(), expected.schema().fields().len());
    for (field, column) in expected.schema().fields().iter().zip(expected.columns()) {
        assert_eq!(answered.column_by_name(field.name()).unwrap().as_ref(), column.as_ref(), "{}", field.name());
    }
    let mobiles = strings(std::slice::from_ref(&answered), "legal_rep_mobile");
    assert!(mobiles.iter().all(|m| m.contains("****")), "masked: {:?}", &mobiles[..3]);

    // An aggregate sees the scoped rows and the masked values only.
    let sql_group = "SELECT district, count(*) AS n, min(legal_rep_mobile) AS m FROM enterprises GROUP BY district";
    let grouped = one(&query(&g, Some(&key), "sql-group", sql_group).await.unwrap());
    let districts = strings(std::slice::from_ref(&grouped), "district");
    let expected_districts: std::collections::BTreeSet<String> =
        strings(std::slice::from_ref(&expected), "district").into_iter().collect();
    assert_eq!(districts.iter().cloned().collect::<std::collections::BTreeSet<_>>(), expected_districts);
    let total: i64 = grouped.column_by_name("n").unwrap().as_primitive::<Int64Type>().values().iter().sum();
    assert_eq!(total as usize, expected.num_rows());
    assert!(strings(std::slice::from_ref(&grouped), "m").iter().all(|m| m.contains("****")));

    // A filter on a masked column compares masked values (and is handed to the scan).
    let masked = &mobiles[0];
    let sql = format!("SELECT count(*) FROM enterprises WHERE legal_rep_mobile = '{masked}'");
    let same = mobiles.iter().filter(|m| *m == masked).count();
    assert_eq!(count(&query(&g, Some(&key), "sql-masked", &sql).await.unwrap()) as usize, same);

    // A column outside the agreement is refused as on HTTP, and the refusal is recorded.
    let outside = "SELECT registered_capital FROM enterprises";
    let refused = query(&g, Some(&key), "sql-outside", outside).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().starts_with("column_outside_scope: "), "{}", refused.message());

    // Each statement is one call in the audit log: one intent naming the dataset it read with
    // the scope it read under, and one completion with the rows and bytes of the answer and the
    // rows the read handed the engine; a refusal one refusal record naming the statement.
    let records = crate::audit::records(&g, "dataset=enterprises").await;
    let group = &records["sql-group"];
    let kinds: Vec<&str> = group.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["statement_intent", "statement_completion"]);
    assert_eq!(group[0]["statement"], sql_group);
    let reads = group[0]["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((&reads[0]["dataset"], &reads[0]["agreement"]), (&json!("enterprises"), &json!("demo-enterprises")));
    let mut columns: Vec<&str> = reads[0]["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    columns.sort_unstable();
    assert_eq!(columns, ["district", "legal_rep_mobile"]);
    assert_eq!(reads[0]["masks"], json!({"legal_rep_mobile": "cn_mobile"}));
    assert_eq!(group[1]["rows"], districts.len() as u64, "the answer's rows");
    assert!(group[1]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        group[1]["reads"],
        json!([{"dataset": "enterprises", "agreement": "demo-enterprises",
                                          "rows": expected.num_rows()}])
    );
    assert_eq!(group[1]["outcome"], "complete");
    let filtered = &records["sql-masked"][0]["reads"][0];
    assert_eq!(filtered["filter"], format!("\"legal_rep_mobile\" = '{masked}'"), "the caller's filter, as applied");
    let outside_records = &records["sql-outside"];
    assert_eq!(outside_records.len(), 1);
    assert_eq!(outside_records[0]["kind"], "unserved");
    assert_eq!(outside_records[0]["status"], 403);
    assert_eq!(outside_records[0]["statement"], outside);
    // Unconditional datasets are not recorded call by call.
    assert!(crate::audit::records(&g, "dataset=air-quality").await.is_empty());
    // What the holder's statements planned is the holder's alone: without the key, the same
    // statement finds no table.
    let anonymous = query(&g, None, "sql-anonymous", "SELECT * FROM enterprises").await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_statement_past_the_sql_memory_pool_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data_dir) = crate::fixture::demo_with_enterprises(dir.path(), "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[server]\nsql_memory_bytes = 1048576\n");
    std::fs::write(&config, text).unwrap();
    let g = Gateway::with_config(&config, &data_dir);
    let rows = plain(&g, None, "bus-arrivals").await.num_rows();
    // Millions of rows to sort: far past a 1 MiB pool, and nothing spills to disk.
    let sql = "SELECT a.arrival_id, b.arrival_id FROM \"bus-arrivals\" a CROSS JOIN \"bus-arrivals\" b \
               ORDER BY a.stop_name, b.stop_name";
    let exhausted = query(&g, None, "sql-big", sql).await.unwrap_err();
    assert_eq!(exhausted.code(), tonic::Code::ResourceExhausted, "{exhausted:?}");
    assert!(exhausted.message().starts_with("sql_memory_exhausted: "), "{}", exhausted.message());
    // The pool is whole again for the next statement.
    let counted = query(&g, None, "sql-small", "SELECT count(*) FROM \"bus-arrivals\"").await.unwrap();
    assert_eq!(count(&counted) as usize, rows);
}

/// A statement that reads two conditional datasets, each under its own agreement, is one call:
/// one intent naming both reads before the first row, one completion; trace and export find it
/// by either dataset. A statement one of whose scans is refused leaves the refusal and no intent.
#[tokio::test]
async fn a_join_of_two_conditional_datasets_is_one_recorded_call() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data_dir) = crate::fixture::demo_with_enterprises(dir.path(), "");
    let market = dir.path().join("catalog/market.toml");
    let text = std::fs::read_to_string(&market).unwrap();
    let copy = text.replace("id = \"enterprises\"", "id = \"enterprises-copy\"");
    std::fs::write(&market, format!("{text}\n{copy}")).unwrap();
    let g = Gateway::with_config(&config, &data_dir);
    let rate = json!({"per_second": 100, "burst": 100});
    let quota = json!({"requests_per_day": 1000, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000});
    let (key, first) = crate::agreements::holder(&g, "acme", rate.clone(), quota).await;
    let (status, second) = g
        .admin(
            Method::POST,
            "/admin/agreements",
            Some(json!({
                "principal": "acme", "dataset": "enterprises-copy", "columns": ["uscc", "district"],
                "row_filter": "district = 'Haizhou'", "valid_until": "2099-01-01T00:00:00Z", "rate": rate,
                "quota": {"requests_per_day": 2, "rows_per_day": 1_000_000, "bytes_per_day": 1_000_000_000},
            })),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    let scoped = plain(&g, Some(&key), "enterprises-copy").await.num_rows();
    let all = plain(&g, Some(&key), "enterprises").await.num_rows();
    assert!(scoped > 0 && scoped < all, "the row filter keeps some rows: {scoped} of {all}");

    let sql = "SELECT a.name, a.legal_rep_mobile, b.district FROM enterprises a \
               JOIN \"enterprises-copy\" b ON a.uscc = b.uscc";
    let joined = one(&query(&g, Some(&key), "sql-two", sql).await.unwrap());
    assert_eq!(joined.num_rows(), scoped);
    assert!(strings(std::slice::from_ref(&joined), "legal_rep_mobile").iter().all(|m| m.starts_with("*******")));

    let records = crate::audit::records(&g, "dataset=enterprises-copy").await;
    let two = &records["sql-two"];
    let kinds: Vec<&str> = two.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["statement_intent", "statement_completion"], "{two:?}");
    let mut reads: Vec<(String, String)> = two[0]["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["dataset"].as_str().unwrap().to_owned(), r["agreement"].as_str().unwrap().to_owned()))
        .collect();
    reads.sort();
    assert_eq!(reads, [("enterprises".to_owned(), first.clone()), ("enterprises-copy".to_owned(), second.clone())]);
    assert_eq!(two[1]["principal"], "acme");
    assert_eq!(two[1]["rows"], scoped as u64);
    let mut read_rows: Vec<(String, u64)> = two[1]["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["dataset"].as_str().unwrap().to_owned(), r["rows"].as_u64().unwrap()))
        .collect();
    read_rows.sort();
    assert_eq!(read_rows, [("enterprises".to_owned(), all as u64), ("enterprises-copy".to_owned(), scoped as u64)]);
    // The same two records are found by the other dataset and by either agreement.
    assert_eq!(crate::audit::records(&g, "dataset=enterprises").await["sql-two"], *two);
    assert_eq!(crate::audit::records(&g, &format!("agreement={second}")).await["sql-two"], *two);

    // The trace of the copy names its reader under the agreement it read by: the plain DoGet
    // above and the statement, each with the rows of the copy it received.
    let (status, trace) = g.admin(Method::GET, "/admin/datasets/enterprises-copy/trace", None).await;
    assert_eq!(status, 200, "{trace}");
    let recipients = trace["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "{trace}");
    assert_eq!((&recipients[0]["principal"], &recipients[0]["agreement"]), (&json!("acme"), &json!(second)));
    assert_eq!((&recipients[0]["calls"], &recipients[0]["rows"]), (&json!(2), &json!(2 * scoped)), "{trace}");

    // The copy's daily quota (2 requests) is spent by the DoGet above and the join: a third
    // read of it is refused before anything runs, and the statement leaves only the refusal.
    let refused = query(&g, Some(&key), "sql-spent", sql).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    let records = crate::audit::records(&g, "").await;
    let spent = &records["sql-spent"];
    let kinds: Vec<&str> = spent.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["unserved"], "{spent:?}");
    assert_eq!((&spent[0]["dataset"], &spent[0]["statement"]), (&json!("enterprises-copy"), &json!(sql)));
}
