//! Socrata's query parameters (SoQL), taken where they mean what the gateway's own do, so that
//! clients written for Socrata portals read rows unchanged: `$select` (column names) as
//! `columns`, `$where` as `filter` (the filter language reads SoQL's comparisons, `and`, `or`,
//! `not`, `in`, `like` and `is null` alike), `$order` (`col`, `col ASC`, `col DESC`) as `order`,
//! `$limit` and `$offset` as `limit` and `offset`. Any other SoQL part is refused with a 400 that
//! names it, never ignored.

use std::borrow::Cow;

use super::request::Params;
use crate::error::Error;

/// The SoQL parameters taken, and the parameter each stands for.
const TAKEN: [(&str, &str); 5] =
    [("$select", "columns"), ("$where", "filter"), ("$order", "order"), ("$limit", "limit"), ("$offset", "offset")];

/// `params` with its SoQL parameters in the gateway's own terms; unchanged (and not copied) when
/// it has none.
pub fn translate(params: &Params) -> Result<Cow<'_, Params>, Error> {
    if !params.iter().any(|(name, _)| name.starts_with('$')) {
        return Ok(Cow::Borrowed(params));
    }
    let mut out = Vec::new();
    for (name, value) in params.iter() {
        let Some(rest) = name.strip_prefix('$') else {
            out.push((name.to_owned(), value.to_owned()));
            continue;
        };
        let Some((_, own)) = TAKEN.iter().find(|(soql, _)| &soql[1..] == rest) else {
            return Err(unsupported(&format!("the `{name}` parameter")));
        };
        if params.get(own).is_some() {
            return Err(Error::bad_request(
                "bad_parameter",
                format!("`{name}` and `{own}` say the same thing; send one of them"),
            ));
        }
        let value = match *own {
            "columns" => select(value)?,
            "order" => Some(order(value)?),
            _ => Some(value.to_owned()),
        };
        if let Some(value) = value {
            out.push(((*own).to_owned(), value));
        }
    }
    Ok(Cow::Owned(Params::from_pairs(out)))
}

fn unsupported(part: &str) -> Error {
    Error::bad_request(
        "soql_unsupported",
        format!(
            "SoQL: {part} is not supported; this gateway takes $select (column names), $where, $order, \
             $limit and $offset"
        ),
    )
}

/// A column name as SoQL writes it: bare, or in backticks.
fn column(item: &str) -> Option<&str> {
    let item = item.trim();
    let name = item.strip_prefix('`').and_then(|i| i.strip_suffix('`')).unwrap_or(item);
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// `$select`: column names, or `*` alone for every column (`None`: no `columns`).
fn select(value: &str) -> Result<Option<String>, Error> {
    if value.trim() == "*" {
        return Ok(None);
    }
    let mut names = Vec::new();
    for item in value.split(',') {
        match column(item) {
            Some(name) => names.push(name),
            None => {
                return Err(unsupported(&format!("`{}` in `$select` (only column names, or `*` alone)", item.trim())))
            }
        }
    }
    Ok(Some(names.join(",")))
}

/// `$order`: `col`, `col ASC` or `col DESC`, comma-separated.
fn order(value: &str) -> Result<String, Error> {
    let mut keys = Vec::new();
    for item in value.split(',') {
        let mut words = item.split_whitespace();
        let (Some(name), direction, None) = (words.next().and_then(column), words.next(), words.next()) else {
            return Err(unsupported(&format!("`{}` in `$order` (expressions)", item.trim())));
        };
        match direction.map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => keys.push(name.to_owned()),
            Some("desc") => keys.push(format!("-{name}")),
            Some(_) => return Err(unsupported(&format!("`{}` in `$order` (expressions)", item.trim()))),
        }
    }
    Ok(keys.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(query: &str) -> Result<Vec<(String, String)>, String> {
        let params = Params::parse(Some(query)).unwrap();
        translate(&params).map(|p| p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()).map_err(|e| e.message)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn soql_parameters_become_the_gateways_own() {
        assert_eq!(
            translated("$select=a,%60b%60&$where=a%20%3E%203%20AND%20b%20=%20'x'&$order=a%20DESC,b&$limit=5&$offset=10&format=csv")
                .unwrap(),
            pairs(&[
                ("columns", "a,b"),
                ("filter", "a > 3 AND b = 'x'"),
                ("order", "-a,b"),
                ("limit", "5"),
                ("offset", "10"),
                ("format", "csv")
            ])
        );
        assert_eq!(translated("$select=*&$limit=2").unwrap(), pairs(&[("limit", "2")]));
        assert_eq!(translated("limit=3").unwrap(), pairs(&[("limit", "3")]));
    }

    #[test]
    fn soql_parts_not_supported_are_named() {
        for (query, named) in [
            ("$group=a", "`$group`"),
            ("$q=foo", "`$q`"),
            ("$select=count(*)", "`count(*)`"),
            ("$select=a%20as%20b", "`a as b`"),
            ("$select=a,*", "`*`"),
            ("$order=a%20%2B%201", "`a + 1`"),
        ] {
            let message = translated(query).unwrap_err();
            assert!(message.contains(named), "{query}: {message}");
        }
        assert!(translated("$limit=1&limit=2").unwrap_err().contains("say the same thing"));
    }
}
