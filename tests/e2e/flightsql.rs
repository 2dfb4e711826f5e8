//! Flight SQL's catalog commands, through arrow-flight's Flight SQL client: what ADBC, the JDBC
//! driver and BI tools ask before they query.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetTables,
    SqlInfo,
};
use arrow_flight::FlightInfo;
use futures_util::TryStreamExt;
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

    // Statements are refused clearly, not read as a plain Flight command.
    let refused = client.execute("SELECT * FROM \"bus-arrivals\"".into(), None).await.unwrap_err().to_string();
    assert!(refused.contains("not served yet"), "{refused}");
}
