//! What a Flight caller asks for: a descriptor (a path `[dataset_id]` or a JSON command) and the
//! ticket `GetFlightInfo` hands back for `DoGet`.
//!
//! A ticket is the command itself, as JSON: it carries no authority (every `DoGet` is decided
//! again for the caller who presents it), so any instance of the gateway can serve it, and a
//! client may write one by hand. A ticket that is just a dataset id asks for the whole dataset.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightDescriptor, Ticket};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::pipeline::Query;

/// Longest command or ticket taken, in bytes; a filter is bounded well below this.
const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// A query on one dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub dataset: String,
    /// Columns wanted, in order; all the caller may see when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// A filter expression, as on HTTP (`district = 'Haizhou' and year >= 2020`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Sort keys: `col` ascending, `-col` descending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request("bad_command", message)
}

impl Command {
    /// The whole of one dataset.
    pub fn whole(dataset: &str) -> Command {
        Command { dataset: dataset.to_owned(), ..Command::default() }
    }

    /// The command a descriptor carries: a path of exactly one dataset id, or a JSON command.
    pub fn from_descriptor(descriptor: &FlightDescriptor) -> Result<Command, Error> {
        match DescriptorType::try_from(descriptor.r#type) {
            Ok(DescriptorType::Path) => match descriptor.path.as_slice() {
                [id] => Ok(Command::whole(id)),
                _ => Err(invalid(format!(
                    "a descriptor path names exactly one dataset id, not {} segments",
                    descriptor.path.len()
                ))),
            },
            Ok(DescriptorType::Cmd) => Command::from_json(&descriptor.cmd),
            _ => Err(invalid("the descriptor is neither a path [dataset_id] nor a command")),
        }
    }

    /// The command a ticket carries: JSON, or a bare dataset id.
    pub fn from_ticket(ticket: &Ticket) -> Result<Command, Error> {
        let bytes = ticket.ticket.as_ref();
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Command::from_json(bytes),
            Some(_) => {
                let id = std::str::from_utf8(bytes).map_err(|_| invalid("the ticket is not UTF-8"))?;
                Ok(Command::whole(id.trim()))
            }
            None => Err(invalid("the ticket is empty; use the one GetFlightInfo returns")),
        }
    }

    /// The dataset a ticket that is not a valid command still names (a JSON object with a
    /// `dataset` string), so that its refusal can be recorded against that dataset.
    pub fn dataset_named(ticket: &Ticket) -> Option<String> {
        let bytes = ticket.ticket.as_ref();
        if bytes.len() > MAX_COMMAND_BYTES {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        value.get("dataset")?.as_str().map(str::to_owned)
    }

    fn from_json(bytes: &[u8]) -> Result<Command, Error> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(invalid(format!("the command is longer than {MAX_COMMAND_BYTES} bytes")));
        }
        let command: Command = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "the command is not {{\"dataset\": ..., \"columns\": [...], \"filter\": \"...\", \"order\": [...], \"limit\": N, \"offset\": N}}: {e}"
            ))
        })?;
        if command.columns.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid("`columns` names at least one column; leave it out for every column"));
        }
        Ok(command)
    }

    /// The ticket for this command.
    pub fn ticket(&self) -> Ticket {
        Ticket::new(serde_json::to_vec(self).expect("commands serialize"))
    }

    /// The query, parsed but not yet checked against the dataset.
    pub fn query(&self) -> Result<Query, Error> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(columns) = &self.columns {
            params.push(("columns", columns.join(",")));
        }
        if let Some(filter) = &self.filter {
            params.push(("filter", filter.clone()));
        }
        if !self.order.is_empty() {
            params.push(("order", self.order.join(",")));
        }
        let mut query = Query::from_params(params.iter().map(|(k, v)| (*k, v.as_str())))?;
        query.limit = self.limit;
        query.offset = self.offset;
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_round_trips_and_a_bare_id_asks_for_everything() {
        let command = Command {
            dataset: "enterprises".into(),
            columns: Some(vec!["name".into(), "district".into()]),
            filter: Some("district = 'Haizhou'".into()),
            order: vec!["-name".into()],
            limit: Some(10),
            offset: 0,
        };
        assert_eq!(Command::from_ticket(&command.ticket()).unwrap(), command);
        assert_eq!(Command::from_ticket(&Ticket::new("bus-stops")).unwrap(), Command::whole("bus-stops"));
        let query = command.query().unwrap();
        assert_eq!(query.columns.as_deref(), Some(&["name".to_owned(), "district".to_owned()][..]));
        assert_eq!((query.limit, query.order.len(), query.order[0].descending), (Some(10), 1, true));
    }

    #[test]
    fn malformed_commands_are_refused() {
        for bad in [
            &br#"{"dataset": "x", "colums": ["a"]}"#[..],
            br#"{"columns": ["a"]}"#,
            br#"{"dataset": "x", "columns": []}"#,
            br#"{"dataset": "x", "limit": -1}"#,
            br#"{"dataset": "#,
        ] {
            let error = Command::from_descriptor(&FlightDescriptor::new_cmd(bad.to_vec())).unwrap_err();
            assert_eq!(error.code, "bad_command", "{}", String::from_utf8_lossy(bad));
        }
        let two = FlightDescriptor::new_path(vec!["a".into(), "b".into()]);
        assert_eq!(Command::from_descriptor(&two).unwrap_err().code, "bad_command");
        assert_eq!(Command::from_ticket(&Ticket::new("  ")).unwrap_err().code, "bad_command");
        let bad_filter = Command { filter: Some("a = ".into()), ..Command::whole("x") };
        assert_eq!(bad_filter.query().unwrap_err().code, "bad_filter");
    }
}
