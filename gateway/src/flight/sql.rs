//! Flight SQL on the Flight port, beside the plain Flight commands: the catalog commands a
//! Flight SQL client (ADBC, the JDBC driver, BI tools) asks first, and SQL statements, plain and
//! prepared, run by [`crate::sql`].
//!
//! The catalog commands: the server's description (`GetSqlInfo`), the one catalog and schema,
//! the table types, the tables (the datasets the caller may read, with the schema it would
//! receive), their keys (datasets declare none, so the key commands answer no rows, in the
//! protocol's schemas) and the SQL types (`GetXdbcTypeInfo`). A dataset the caller may not read
//! is not a table here, so a non-open dataset and an unknown name look alike.
//!
//! A command comes as a protobuf `Any` of the Flight SQL package, in a `FlightDescriptor`'s
//! `cmd` (`GetFlightInfo`, `GetSchema`) or in a `Ticket` (`DoGet`); the ticket of a catalog
//! command's `FlightInfo` is the command itself. A statement's ticket and a prepared
//! statement's handle are the [`Statement`] itself (its SQL and bound parameters): they carry no
//! authority, as every statement is planned again for the caller who presents it, so any
//! instance of the gateway serves them and nothing is kept between calls. Updates, ingestion and
//! transactions are refused: the data is served read-only.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{self, Any, Nullable, ProstMessageExt, Searchable, SqlInfo, XdbcDataType, XdbcDatetimeSubcode};
use arrow_flight::Ticket;
use base64::Engine as _;
use datafusion::scalar::ScalarValue;
use policy::Caller;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};
use crate::source::arrow_schema;
use crate::sql::{CATALOG, SCHEMA};
use crate::state::Live;
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
    XdbcTypes(sql::CommandGetXdbcTypeInfo),
    /// A SQL statement: a query, a prepared statement or a statement's ticket.
    Statement(Statement),
}

/// A SQL statement as a client holds it: its text and, once bound, its parameters. It is the
/// handle of a prepared statement and the ticket of a statement's answer, as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub sql: String,
    /// The bound parameters: one row, as an Arrow IPC stream in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

/// Largest prepared statement handle or statement ticket taken, in bytes.
const MAX_HANDLE_BYTES: usize = crate::sql::MAX_STATEMENT_BYTES + 64 * 1024;

impl Statement {
    pub fn new(sql: String) -> Statement {
        Statement { sql, params: None }
    }

    /// The statement a handle or ticket holds.
    pub fn from_handle(handle: &[u8]) -> Result<Statement, Error> {
        let invalid = |what: String| Error::bad_request("bad_handle", what);
        if handle.len() > MAX_HANDLE_BYTES {
            return Err(invalid(format!("a statement handle is at most {MAX_HANDLE_BYTES} bytes")));
        }
        serde_json::from_slice(handle)
            .map_err(|e| invalid(format!("not a statement handle of this server (use the one it gave): {e}")))
    }

    /// The statement as a prepared statement handle.
    pub fn handle(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("statements serialize").into()
    }

    /// The ticket of the statement's answer.
    pub fn ticket(&self) -> Ticket {
        let ticket = sql::TicketStatementQuery { statement_handle: self.handle() };
        Ticket::new(ticket.as_any().encode_to_vec())
    }

    /// The statement with `batch`'s one row bound to its parameters, in order.
    pub fn bound(&self, batch: &RecordBatch) -> Result<Statement, Error> {
        if batch.num_rows() != 1 {
            return Err(Error::bad_request(
                "bad_parameters",
                format!("bind one row of parameters per execution, not {}", batch.num_rows()),
            ));
        }
        let mut bytes = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())
            .map_err(|e| Error::bad_request("bad_parameters", e.to_string()))?;
        writer
            .write(batch)
            .and_then(|()| writer.finish())
            .map_err(|e| Error::bad_request("bad_parameters", e.to_string()))?;
        let params = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(Statement { sql: self.sql.clone(), params: Some(params) })
    }

    /// The bound parameters as the handle holds them, if any.
    pub fn bound_parameters(&self) -> Option<&str> {
        self.params.as_deref()
    }

    /// The bound parameters' values, in order; `None` when none are bound.
    pub fn params(&self) -> Result<Option<Vec<ScalarValue>>, Error> {
        let Some(params) = &self.params else { return Ok(None) };
        let invalid = |e: String| Error::bad_request("bad_handle", format!("the bound parameters: {e}"));
        let bytes = base64::engine::general_purpose::STANDARD.decode(params).map_err(|e| invalid(e.to_string()))?;
        let mut reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| invalid(e.to_string()))?;
        let batch = reader.next().ok_or_else(|| invalid("no row".into()))?.map_err(|e| invalid(e.to_string()))?;
        if batch.num_rows() == 0 {
            return Err(invalid("no row".into()));
        }
        let values = batch.columns().iter().map(|column| ScalarValue::try_from_array(column, 0));
        Ok(Some(values.collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?))
    }
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
            sql::Command::CommandGetXdbcTypeInfo(c) => Ok(SqlCommand::XdbcTypes(c)),
            sql::Command::CommandStatementQuery(c) if c.transaction_id.is_none() => {
                Ok(SqlCommand::Statement(Statement::new(c.query)))
            }
            sql::Command::CommandPreparedStatementQuery(c) => {
                Statement::from_handle(&c.prepared_statement_handle).map(SqlCommand::Statement)
            }
            sql::Command::TicketStatementQuery(t) => {
                Statement::from_handle(&t.statement_handle).map(SqlCommand::Statement)
            }
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
            SqlCommand::XdbcTypes(c) => c.as_any(),
            SqlCommand::Statement(statement) => return statement.ticket(),
        };
        Ticket::new(any.encode_to_vec())
    }

    /// The answer of a catalog command for `caller`, on the catalog in force (a statement is
    /// answered by [`crate::sql`]).
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
            SqlCommand::XdbcTypes(c) => (*c).into_builder(xdbc_types()).build(),
            SqlCommand::Statement(_) => return Err(Error::internal("a statement is answered by the SQL engine")),
        };
        built.map_err(|e| Error::internal(format!("Flight SQL answer: {e}")))
    }

    /// The schema of a catalog command's answer (a statement's is the SQL engine's to plan).
    pub fn schema(&self) -> SchemaRef {
        match self {
            SqlCommand::SqlInfo(c) => c.clone().into_builder(server_info()).schema(),
            SqlCommand::Catalogs(c) => (*c).into_builder().schema(),
            SqlCommand::DbSchemas(c) => c.clone().into_builder().schema(),
            SqlCommand::Tables(c) => c.clone().into_builder().schema(),
            SqlCommand::TableTypes(c) => (*c).into_builder().schema(),
            SqlCommand::Keys(Keys::Primary(_)) => primary_keys_schema(),
            SqlCommand::Keys(_) => foreign_keys_schema(),
            SqlCommand::XdbcTypes(c) => (*c).into_builder(xdbc_types()).schema(),
            SqlCommand::Statement(_) => Arc::new(Schema::empty()),
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
        builder.append(SqlInfo::FlightSqlServerSql, true);
        builder.append(SqlInfo::FlightSqlServerSubstrait, false);
        builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        builder.append(SqlInfo::FlightSqlServerCancel, false);
        // What a JDBC driver asks of the SQL it may write.
        builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        builder
            .append(SqlInfo::SqlIdentifierCase, sql::SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
        builder.append(
            SqlInfo::SqlQuotedIdentifierCase,
            sql::SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        builder.append(SqlInfo::SqlDdlCatalog, false);
        builder.append(SqlInfo::SqlDdlSchema, false);
        builder.append(SqlInfo::SqlDdlTable, false);
        builder.append(SqlInfo::SqlAllTablesAreSelectable, true);
        builder.append(SqlInfo::SqlTransactionsSupported, false);
        builder.append(SqlInfo::SqlSelectForUpdateSupported, false);
        builder.append(SqlInfo::SqlStoredProceduresSupported, false);
        builder.append(SqlInfo::SqlSearchStringEscape, "\\");
        builder.append(SqlInfo::SqlExtraNameCharacters, "");
        builder.append(SqlInfo::SqlSupportsColumnAliasing, true);
        builder.append(SqlInfo::SqlNullPlusNullIsNull, true);
        builder.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        builder.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
        builder.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        builder.append(SqlInfo::SqlSupportsNonNullableColumns, true);
        builder.append(SqlInfo::SqlSupportedGroupBy, 3i32);
        builder.append(SqlInfo::SqlOuterJoinsSupportLevel, sql::SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32);
        builder.append(SqlInfo::SqlMaxColumnNameLength, 1024i64);
        builder.append(SqlInfo::SqlMaxTableNameLength, 64i64);
        builder.build().expect("the server's description is well-formed")
    })
}

/// The SQL types of the datasets' columns, as `GetXdbcTypeInfo` describes them: each field
/// type of the catalog (`string`, `int64`, `float64`, `boolean`, `date`, `timestamp`). ODBC's
/// datetime subcode of a date is 1, which the protocol's enumeration names `YEAR`.
fn xdbc_types() -> &'static XdbcTypeInfoData {
    static TYPES: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    TYPES.get_or_init(|| {
        let mut builder = XdbcTypeInfoDataBuilder::new();
        let types = [
            ("BIGINT", XdbcDataType::XdbcBigint, Some(19), None, Some(10)),
            ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, None),
            ("DATE", XdbcDataType::XdbcDate, Some(10), Some(XdbcDatetimeSubcode::XdbcSubcodeYear), None),
            ("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None, Some(2)),
            ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(23), Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp), None),
            ("VARCHAR", XdbcDataType::XdbcVarchar, None, None, None),
        ];
        for (name, data_type, column_size, datetime_subcode, num_prec_radix) in types {
            let text = data_type == XdbcDataType::XdbcVarchar;
            let datetime = datetime_subcode.is_some();
            builder.append(XdbcTypeInfo {
                type_name: name.into(),
                data_type,
                column_size,
                literal_prefix: (text || datetime).then(|| "'".into()),
                literal_suffix: (text || datetime).then(|| "'".into()),
                create_params: None,
                nullable: Nullable::NullabilityNullable,
                case_sensitive: text,
                searchable: Searchable::Full,
                unsigned_attribute: num_prec_radix.map(|_| false),
                fixed_prec_scale: false,
                auto_increment: num_prec_radix.map(|_| false),
                local_type_name: Some(name.into()),
                minimum_scale: None,
                maximum_scale: None,
                sql_data_type: if datetime { XdbcDataType::XdbcDatetime } else { data_type },
                datetime_subcode,
                num_prec_radix,
                interval_precision: None,
            });
        }
        builder.build().expect("the type descriptions are well-formed")
    })
}

/// The refusal of a Flight SQL command kaifang does not answer.
fn unsupported(type_url: &str) -> Error {
    let name = type_url.rsplit('.').next().unwrap_or(type_url);
    let what = match name {
        "CommandStatementQuery" => "transactions are not supported: the data is served read-only",
        "CommandStatementSubstraitPlan" | "CommandPreparedSubstraitPlan" => "Substrait plans are not taken: send SQL",
        n if n.contains("Update") || n.contains("Ingest") || n.contains("Transaction") || n.contains("Savepoint") => {
            "kaifang serves open data read-only"
        }
        _ => "this Flight SQL command is not answered",
    };
    Error::new(Kind::MethodNotAllowed, "unsupported_command", format!("{name}: {what}"))
}
