//! Maps configuration errors back to the line they come from.
//!
//! The TOML is parsed once with `toml_edit`, which keeps the byte span of every key and value.
//! Sections are deserialized one by one through `serde_path_to_error`, so a serde error comes
//! with the path of the field it is about; that path is then looked up in the parsed document
//! to find its line.

use serde::de::{DeserializeOwned, IntoDeserializer};
use std::path::Path;
use toml_edit::{Item, Value};

use super::ConfigError;

/// One step in a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// Renders a path as `datasets[2].fields[0].type`.
pub fn render(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parses a rendered path (`datasets[0].masks.name`) back into segments.
pub fn parse_path(text: &str) -> Vec<PathSegment> {
    let mut out = Vec::new();
    for part in text.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            out.push(PathSegment::Key(key.to_owned()));
        }
        for index in pieces {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(PathSegment::Index(i));
            }
        }
    }
    out
}

/// A parsed TOML file that remembers where everything came from.
pub struct Document {
    text: String,
    parsed: toml_edit::Document<String>,
}

impl Document {
    /// Parses `text`; a syntax error comes back as its line and message.
    pub fn parse(text: String) -> Result<Document, (usize, String)> {
        match toml_edit::Document::parse(text.clone()) {
            Ok(parsed) => Ok(Document { text, parsed }),
            Err(e) => {
                let line = e.span().map_or(1, |s| line_at(&text, s.start));
                let message = e.message().trim_end().to_owned();
                Err((line, message))
            }
        }
    }

    pub fn top_level_keys(&self) -> Vec<String> {
        self.parsed.as_table().iter().map(|(k, _)| k.to_owned()).collect()
    }

    /// The 1-based line of the field at `path`: the line of its key where it has one, else of
    /// its value.
    pub fn line_of(&self, path: &[PathSegment]) -> Option<usize> {
        let mut node = Node::Table(self.parsed.as_table());
        let mut span = None;
        for segment in path {
            let (key_span, next) = node.step(segment)?;
            span = key_span.or_else(|| next.span());
            node = next;
        }
        span.map(|s| line_at(&self.text, s.start))
    }

    /// Deserializes the value under the top-level `key`, recording any error; `None` when the
    /// key is absent or the value is bad.
    pub fn deserialize_key<T: DeserializeOwned>(
        &self,
        file: &Path,
        key: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let value = self.parsed.as_table().get(key)?.clone().into_value().ok()?;
        self.deserialize_value(file, &[PathSegment::Key(key.into())], value, errors)
    }

    /// Deserializes each element of the array (of tables) under `key` on its own, so one bad
    /// element does not hide the errors of the next. Returns the good ones with their index.
    pub fn deserialize_array<T: DeserializeOwned>(
        &self,
        file: &Path,
        key: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<(usize, T)> {
        let elements: Vec<Value> = match self.parsed.as_table().get(key) {
            None => return Vec::new(),
            Some(Item::ArrayOfTables(array)) => {
                array.iter().filter_map(|t| Item::Table(t.clone()).into_value().ok()).collect()
            }
            Some(Item::Value(Value::Array(array))) => array.iter().cloned().collect(),
            Some(_) => {
                errors.push(ConfigError {
                    file: file.to_owned(),
                    line: self.line_of(&[PathSegment::Key(key.into())]).unwrap_or(1),
                    field: key.into(),
                    message: format!("expected an array of tables ([[{key}]])"),
                });
                return Vec::new();
            }
        };
        elements
            .into_iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let prefix = [PathSegment::Key(key.into()), PathSegment::Index(i)];
                self.deserialize_value(file, &prefix, value, errors).map(|t| (i, t))
            })
            .collect()
    }

    fn deserialize_value<T: DeserializeOwned>(
        &self,
        file: &Path,
        prefix: &[PathSegment],
        value: Value,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize(value.into_deserializer()) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut path = prefix.to_vec();
                for segment in e.path().iter() {
                    match segment {
                        serde_path_to_error::Segment::Seq { index } => path.push(PathSegment::Index(*index)),
                        serde_path_to_error::Segment::Map { key } => path.push(PathSegment::Key(key.clone())),
                        serde_path_to_error::Segment::Enum { variant } => path.push(PathSegment::Key(variant.clone())),
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                // toml_edit appends "in `field`" on a second line; the field is reported apart.
                let mut message = e.into_inner().to_string().lines().next().unwrap_or_default().to_owned();
                // A missing field is reported by the table that lacks it.
                let line = (0..=path.len()).rev().find_map(|n| self.line_of(&path[..n])).unwrap_or(1);
                if message.starts_with("missing field") {
                    message.push_str(" in this table");
                }
                errors.push(ConfigError { file: file.to_owned(), line, field: render(&path), message });
                None
            }
        }
    }
}

/// A place in the parsed document that a path can step through.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a toml_edit::Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    /// The child at `segment`, with the span of its key where it has one.
    fn step(self, segment: &PathSegment) -> Option<(Option<std::ops::Range<usize>>, Node<'a>)> {
        match (self, segment) {
            (Node::Table(t), PathSegment::Key(k)) => Some((t.key(k)?.span(), Node::Item(t.get(k)?))),
            (Node::Item(Item::Table(t)), PathSegment::Key(_)) => Node::Table(t).step(segment),
            (Node::Item(Item::Value(v)), _) => Node::Value(v).step(segment),
            (Node::Item(Item::ArrayOfTables(a)), PathSegment::Index(i)) => Some((None, Node::Table(a.get(*i)?))),
            (Node::Value(Value::InlineTable(t)), PathSegment::Key(k)) => {
                Some((t.key(k)?.span(), Node::Value(t.get(k)?)))
            }
            (Node::Value(Value::Array(a)), PathSegment::Index(i)) => Some((None, Node::Value(a.get(*i)?))),
            _ => None,
        }
    }

    fn span(self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}
