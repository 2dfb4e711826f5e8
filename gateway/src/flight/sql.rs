//! Flight SQL's catalog commands on the Flight port, beside the plain Flight commands: what a
//! Flight SQL client (ADBC, the JDBC driver, BI tools) asks first, before it sends a query. The
//! server's description (`GetSqlInfo`), the one catalog and schema, the table types, the tables
//! (the datasets the caller may read, with the schema it would receive) and their keys (datasets
//! declare none, so the key commands answer no rows, in the protocol's schemas). A dataset the
//! caller may not read is not a table here, so a non-open dataset and an unknown name look
//! alike. SQL statements are refused with a clear error until the SQL engine serves them.
//!
//! A command comes as a protobuf `Any` of the Flight SQL package, in a `FlightDescriptor`'s
//! `cmd` (`GetFlightInfo`, `GetSchema`) or in a `Ticket` (`DoGet`); the ticket of a command's
//! `FlightInfo` is the command itself.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{self, Any, ProstMessageExt, SqlInfo};
use arrow_flight::Ticket;
use policy::Caller;
use prost::Message;

use crate::error::{Error, Kind};
use crate::source::arrow_schema;
use crate::state::Live;

/// The one catalog the tables are in.
pub const CATALOG: &str = "kaifang";
/// The one schema the tables are in.
pub const SCHEMA: &str = "public";
/// The one table type.
const TABLE: &str = "TABLE";

/// A Flight SQL command kaifang answers.
pub enum SqlCommand {
    SqlInfo(sql::CommandGetSqlInfo),
    Catalogs(sql::CommandGetCatalogs),
    DbSchemas(sql::CommandGetDbSchemas),
    Tables(sql::CommandGetTables),
    TableTypes(sql::CommandGetTableTypes),
    /// Primary keys, keys exported and imported, cross references: none.
    Keys(Keys),
}

/// A key command, which kaifang answers with no rows.
pub enum Keys {
    Primary(sql::CommandGetPrimaryKeys),
    Exported(sql::CommandGetExportedKeys),
    Imported(sql::CommandGetImportedKeys),
    CrossReference(sql::CommandGetCrossReference),
}

impl SqlCommand {
    /// The Flight SQL command `bytes` hold, if they hold one (`None`: not Flight SQL at all, for
    /// the plain Flight commands to read); a Flight SQL command kaifang does not answer is
    /// refused with what it is.
    pub fn parse(bytes: &[u8]) -> Option<Result<SqlCommand, Error>> {
        let any = Any::decode(bytes).ok()?;
        if !any.type_url.starts_with("type.googleapis.com/arrow.flight.protocol.sql.") {
            return None;
        }
        let command = match sql::Command::try_from(any) {
            Ok(command) => command,
            Err(e) => return Some(Err(Error::bad_request("bad_command", format!("the Flight SQL command: {e}")))),
        };
        Some(match command {
            sql::Command::CommandGetSqlInfo(c) => Ok(SqlCommand::SqlInfo(c)),
            sql::Command::CommandGetCatalogs(c) => Ok(SqlCommand::Catalogs(c)),
            sql::Command::CommandGetDbSchemas(c) => Ok(SqlCommand::DbSchemas(c)),
            sql::Command::CommandGetTables(c) => Ok(SqlCommand::Tables(c)),
            sql::Command::CommandGetTableTypes(c) => Ok(SqlCommand::TableTypes(c)),
            sql::Command::CommandGetPrimaryKeys(c) => Ok(SqlCommand::Keys(Keys::Primary(c))),
            sql::Command::CommandGetExportedKeys(c) => Ok(SqlCommand::Keys(Keys::Exported(c))),
            sql::Command::CommandGetImportedKeys(c) => Ok(SqlCommand::Keys(Keys::Imported(c))),
            sql::Command::CommandGetCrossReference(c) => Ok(SqlCommand::Keys(Keys::CrossReference(c))),
            other => Err(unsupported(other.type_url())),
        })
    }

    /// The command as the ticket of its `FlightInfo`.
    pub fn ticket(&self) -> Ticket {
        let any = match self {
            SqlCommand::SqlInfo(c) => c.as_any(),
            SqlCommand::Catalogs(c) => c.as_any(),
            SqlCommand::DbSchemas(c) => c.as_any(),
            SqlCommand::Tables(c) => c.as_any(),
            SqlCommand::TableTypes(c) => c.as_any(),
            SqlCommand::Keys(Keys::Primary(c)) => c.as_any(),
            SqlCommand::Keys(Keys::Exported(c)) => c.as_any(),
            SqlCommand::Keys(Keys::Imported(c)) => c.as_any(),
            SqlCommand::Keys(Keys::CrossReference(c)) => c.as_any(),
        };
        Ticket::new(any.encode_to_vec())
    }

    /// The command's answer for `caller`, on the catalog in force.
    pub fn answer(&self, live: &Live, caller: &Caller) -> Result<RecordBatch, Error> {
        let built = match self {
            SqlCommand::SqlInfo(c) => c.clone().into_builder(server_info()).build(),
            SqlCommand::Catalogs(c) => {
                let mut builder = (*c).into_builder();
                builder.append(CATALOG);
                builder.build()
            }
            SqlCommand::DbSchemas(c) => {
                let mut builder = c.clone().into_builder();
                builder.append(CATALOG, SCHEMA);
                builder.build()
            }
            SqlCommand::TableTypes(c) => {
                let mut builder = (*c).into_builder();
                builder.append(TABLE);
                builder.build()
            }
            SqlCommand::Tables(c) => {
                let mut builder = c.clone().into_builder();
                for (name, schema) in tables(live, caller) {
                    builder
                        .append(CATALOG, SCHEMA, name, TABLE, &schema)
                        .map_err(|e| Error::internal(format!("table listing: {e}")))?;
                }
                builder.build()
            }
            SqlCommand::Keys(_) => Ok(RecordBatch::new_empty(self.schema())),
        };
        built.map_err(|e| Error::internal(format!("Flight SQL answer: {e}")))
    }

    /// The schema of the command's answer.
    pub fn schema(&self) -> SchemaRef {
        match self {
            SqlCommand::SqlInfo(c) => c.clone().into_builder(server_info()).schema(),
            SqlCommand::Catalogs(c) => (*c).into_builder().schema(),
            SqlCommand::DbSchemas(c) => c.clone().into_builder().schema(),
            SqlCommand::Tables(c) => c.clone().into_builder().schema(),
            SqlCommand::TableTypes(c) => (*c).into_builder().schema(),
            SqlCommand::Keys(Keys::Primary(_)) => primary_keys_schema(),
            SqlCommand::Keys(_) => foreign_keys_schema(),
        }
    }
}

/// The schema of `GetPrimaryKeys`' answer, as the Flight SQL protocol states it.
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of the answers of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`, as
/// the Flight SQL protocol states it.
fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// The datasets `caller` may read ([`crate::call::readable`], as Flight's `ListFlights` lists
/// them), each with the schema it would receive.
fn tables(live: &Live, caller: &Caller) -> Vec<(String, arrow::datatypes::Schema)> {
    crate::call::readable(live, caller)
        .map(|(entry, grant)| {
            let fields = grant.scope.visible_fields(&entry.dataset);
            (entry.dataset.id.to_string(), Arc::unwrap_or_clone(arrow_schema(&fields)))
        })
        .collect()
}

/// What the server says of itself to `GetSqlInfo`.
fn server_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut builder = SqlInfoDataBuilder::new();
        builder.append(SqlInfo::FlightSqlServerName, "kaifang");
        builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        builder.append(SqlInfo::FlightSqlServerReadOnly, true);
        // Statements are not served yet: clients are told so before they try.
        builder.append(SqlInfo::FlightSqlServerSql, false);
        builder.append(SqlInfo::FlightSqlServerSubstrait, false);
        builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        builder.append(SqlInfo::FlightSqlServerCancel, false);
        builder.build().expect("the server's description is well-formed")
    })
}

/// The refusal of a Flight SQL command kaifang does not answer.
fn unsupported(type_url: &str) -> Error {
    let name = type_url.rsplit('.').next().unwrap_or(type_url);
    let what = match name {
        "CommandStatementQuery" | "CommandPreparedStatementQuery" | "CommandStatementSubstraitPlan" => {
            "SQL statements are not served yet: read datasets by their Flight commands ({\"dataset\": ...}) or over HTTP"
        }
        n if n.contains("Update") || n.contains("Ingest") => "kaifang serves open data read-only",
        _ => "this Flight SQL command is not answered",
    };
    Error::new(Kind::MethodNotAllowed, "unsupported_command", format!("{name}: {what}"))
}
