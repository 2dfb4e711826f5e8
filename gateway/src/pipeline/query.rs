//! What a caller asks of a dataset: columns, filter, order, offset and limit.

use policy::Expr;

use crate::error::Error;

/// A caller's query, parsed but not yet checked against a dataset (see [`super::Plan::new`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Columns wanted, in order; `None` for every column the grant allows.
    pub columns: Option<Vec<String>>,
    pub filter: Option<Expr>,
    pub order: Vec<OrderKey>,
    pub offset: usize,
    pub limit: Option<usize>,
}

/// One sort key: `col` ascending, `-col` descending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    pub column: String,
    pub descending: bool,
}

impl Query {
    /// Parses the `columns`, `filter`, `order`, `limit` and `offset` parameters. Unknown
    /// parameters are left to the caller to judge.
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Query, Error> {
        let mut query = Query::default();
        for (name, value) in params {
            match name {
                "columns" => query.columns = Some(list("columns", value)?),
                "filter" if !value.trim().is_empty() => query.filter = Some(Expr::parse(value)?),
                "filter" => {}
                "order" => {
                    query.order = list("order", value)?
                        .into_iter()
                        .map(|c| match c.strip_prefix('-') {
                            Some(rest) => OrderKey { column: rest.to_owned(), descending: true },
                            None => {
                                OrderKey { column: c.strip_prefix('+').unwrap_or(&c).to_owned(), descending: false }
                            }
                        })
                        .collect()
                }
                "limit" => query.limit = Some(number("limit", value)?),
                "offset" => query.offset = number("offset", value)?,
                _ => {}
            }
        }
        Ok(query)
    }
}

fn list(name: &str, value: &str) -> Result<Vec<String>, Error> {
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(|s| s.is_empty() || s == "-") {
        return Err(Error::bad_request(
            "bad_parameter",
            format!("`{name}` takes a comma-separated list of column names"),
        ));
    }
    Ok(items)
}

fn number(name: &str, value: &str) -> Result<usize, Error> {
    value.parse().map_err(|_| {
        Error::bad_request("bad_parameter", format!("`{name}` takes a non-negative integer, not `{value}`"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter() {
        let q = Query::from_params([
            ("columns", "a, b"),
            ("order", "a,-b"),
            ("limit", "10"),
            ("offset", "5"),
            ("filter", "a = 1"),
        ])
        .unwrap();
        assert_eq!(q.columns, Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            q.order,
            vec![OrderKey { column: "a".into(), descending: false }, OrderKey { column: "b".into(), descending: true }]
        );
        assert_eq!((q.limit, q.offset), (Some(10), 5));
        assert!(q.filter.is_some());
    }

    #[test]
    fn refuses_malformed_parameters() {
        for params in
            [[("limit", "-1")], [("offset", "x")], [("columns", "a,,b")], [("order", "-")], [("filter", "a =")]]
        {
            assert!(Query::from_params(params).is_err(), "{params:?}");
        }
    }
}
