//! The row-filter language: what users write in `filter=` and owners in an agreement's
//! `row_filter`.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | test
//! test    := column ("=" | "!=" | "<" | "<=" | ">" | ">=") literal
//!          | column ["not"] "in" "(" literal ("," literal)* ")"
//!          | column ["not"] "like" string
//!          | column "is" ["not"] "null"
//! literal := 'string' | number | true | false
//! ```
//! Keywords are case-insensitive; strings are single-quoted with `''` for a quote; a column
//! name is `[A-Za-z_][A-Za-z0-9_]*` or double-quoted. Every error carries the 1-based character
//! position it refers to, so a client can point at it.

use std::fmt;

use crate::catalog::{Field, FieldType};

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Compare { column: Column, op: CmpOp, value: Literal },
    In { column: Column, values: Vec<Literal>, negated: bool },
    Like { column: Column, pattern: String, negated: bool },
    IsNull { column: Column, negated: bool },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

/// A column reference and where it stands in the source text.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    /// 1-based character position in the expression.
    pub position: usize,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Why a filter was refused, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct FilterError {
    /// 1-based character position the error refers to.
    pub position: usize,
    pub message: String,
}

impl FilterError {
    fn at(position: usize, message: impl Into<String>) -> Self {
        FilterError { position, message: message.into() }
    }
}

impl Expr {
    /// Parses a filter expression. Filters are bounded ([`MAX_FILTER_CHARS`], [`MAX_TESTS`],
    /// [`MAX_DEPTH`]) so that no filter can exhaust the stack of whatever walks it.
    pub fn parse(text: &str) -> Result<Expr, FilterError> {
        let chars = text.chars().count();
        if chars > MAX_FILTER_CHARS {
            return Err(FilterError::at(
                MAX_FILTER_CHARS + 1,
                format!("a filter is at most {MAX_FILTER_CHARS} characters"),
            ));
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, next: 0, end: chars + 1, depth: 0, tests: 0 };
        let expr = parser.expr()?;
        match parser.peek() {
            None => Ok(expr),
            Some(t) => Err(FilterError::at(t.position, format!("unexpected {}", t.kind.describe()))),
        }
    }

    /// Checks every column reference against the dataset's fields: the column must exist and
    /// the literal must suit its type.
    pub fn check(&self, fields: &[Field]) -> Result<(), FilterError> {
        let lookup = |column: &Column| {
            fields
                .iter()
                .find(|f| f.name == column.name)
                .map(|f| f.field_type)
                .ok_or_else(|| FilterError::at(column.position, format!("unknown column `{}`", column.name)))
        };
        match self {
            Expr::Compare { column, value, .. } => check_literal(column, lookup(column)?, value),
            Expr::In { column, values, .. } => {
                let field_type = lookup(column)?;
                values.iter().try_for_each(|v| check_literal(column, field_type, v))
            }
            Expr::Like { column, .. } => match lookup(column)? {
                FieldType::String => Ok(()),
                other => Err(FilterError::at(
                    column.position,
                    format!("`like` needs a string column; `{}` is {}", column.name, other.name()),
                )),
            },
            Expr::IsNull { column, .. } => lookup(column).map(|_| ()),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.check(fields)?;
                b.check(fields)
            }
            Expr::Not(e) => e.check(fields),
        }
    }

    /// The columns the expression reads, in order of first appearance.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        self.visit_columns(&mut |c| {
            if !out.contains(&c.name.as_str()) {
                out.push(&c.name);
            }
        });
        out
    }

    fn visit_columns<'a>(&'a self, f: &mut impl FnMut(&'a Column)) {
        match self {
            Expr::Compare { column, .. }
            | Expr::In { column, .. }
            | Expr::Like { column, .. }
            | Expr::IsNull { column, .. } => f(column),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.visit_columns(f);
                b.visit_columns(f);
            }
            Expr::Not(e) => e.visit_columns(f),
        }
    }

    /// `self AND other`.
    pub fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }
}

fn check_literal(column: &Column, field_type: FieldType, value: &Literal) -> Result<(), FilterError> {
    let fits = matches!(
        (field_type, value),
        (FieldType::String | FieldType::Date | FieldType::Timestamp, Literal::String(_))
            | (FieldType::Int64, Literal::Int(_))
            | (FieldType::Float64, Literal::Int(_) | Literal::Float(_))
            | (FieldType::Boolean, Literal::Bool(_))
    );
    if fits {
        Ok(())
    } else {
        let expected = match field_type {
            FieldType::String => "a quoted string",
            FieldType::Date => "a quoted date such as '2025-01-31'",
            FieldType::Timestamp => "a quoted RFC 3339 time such as '2025-01-31T08:00:00Z'",
            FieldType::Int64 => "an integer",
            FieldType::Float64 => "a number",
            FieldType::Boolean => "true or false",
        };
        Err(FilterError::at(column.position, format!("column `{}` takes {expected}, not {value}", column.name)))
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "!=",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        })
    }
}

/// Writes the expression back in the filter language, fully parenthesised; parsing the output
/// gives the same expression.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |negated: &bool| if *negated { "not " } else { "" };
        match self {
            Expr::Compare { column, op, value } => write!(f, "{} {op} {value}", Quoted(&column.name)),
            Expr::In { column, values, negated } => {
                write!(f, "{} {}in (", Quoted(&column.name), not(negated))?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Expr::Like { column, pattern, negated } => {
                write!(f, "{} {}like {}", Quoted(&column.name), not(negated), Literal::String(pattern.clone()))
            }
            Expr::IsNull { column, negated } => write!(f, "{} is {}null", Quoted(&column.name), not(negated)),
            Expr::And(a, b) => write!(f, "({a} and {b})"),
            Expr::Or(a, b) => write!(f, "({a} or {b})"),
            Expr::Not(e) => write!(f, "not ({e})"),
        }
    }
}

/// A column name double-quoted, with `""` for a quote in it, as the lexer reads it back.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Ident(String),
    QuotedIdent(String),
    Str(String),
    Number(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Ident(s) => format!("`{s}`"),
            TokenKind::QuotedIdent(s) => format!("\"{s}\""),
            TokenKind::Str(s) => format!("string '{s}'"),
            TokenKind::Number(s) => format!("number {s}"),
            TokenKind::Op(op) => format!("`{op}`"),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Comma => "`,`".into(),
        }
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self, TokenKind::Ident(s) if s.eq_ignore_ascii_case(word))
    }
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    position: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        let single = |kind| Token { kind, position };
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(single(TokenKind::LParen));
                i += 1;
            }
            ')' => {
                tokens.push(single(TokenKind::RParen));
                i += 1;
            }
            ',' => {
                tokens.push(single(TokenKind::Comma));
                i += 1;
            }
            '=' => {
                tokens.push(single(TokenKind::Op(CmpOp::Eq)));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(single(TokenKind::Op(CmpOp::NotEq)));
                i += 2;
            }
            '<' | '>' => {
                let (op, len) = match (c, chars.get(i + 1)) {
                    ('<', Some('=')) => (CmpOp::LtEq, 2),
                    ('<', Some('>')) => (CmpOp::NotEq, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    (_, Some('=')) => (CmpOp::GtEq, 2),
                    _ => (CmpOp::Gt, 1),
                };
                tokens.push(single(TokenKind::Op(op)));
                i += len;
            }
            '\'' | '"' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            let what = if quote == '\'' { "string" } else { "quoted column name" };
                            return Err(FilterError::at(position, format!("unterminated {what}")));
                        }
                        Some(&ch) if ch == quote && chars.get(i + 1) == Some(&quote) => {
                            value.push(quote);
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                let kind = if quote == '\'' { TokenKind::Str(value) } else { TokenKind::QuotedIdent(value) };
                tokens.push(Token { kind, position });
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token { kind: TokenKind::Number(chars[start..i].iter().collect()), position });
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token { kind: TokenKind::Ident(chars[start..i].iter().collect()), position });
            }
            other => return Err(FilterError::at(position, format!("unexpected character `{other}`"))),
        }
    }
    Ok(tokens)
}

/// Longest filter accepted.
pub const MAX_FILTER_CHARS: usize = 4096;
/// Most comparisons (`col op value`, `in`, `like`, `is null`) in one filter.
pub const MAX_TESTS: usize = 128;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Position reported for "unexpected end of filter".
    end: usize,
    depth: usize,
    tests: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.next).cloned();
        self.next += 1;
        t
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.kind.is_keyword(word)) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, what: &str, matches: impl Fn(&TokenKind) -> bool) -> Result<Token, FilterError> {
        match self.bump() {
            Some(t) if matches(&t.kind) => Ok(t),
            Some(t) => Err(FilterError::at(t.position, format!("expected {what}, found {}", t.kind.describe()))),
            None => Err(FilterError::at(self.end, format!("expected {what}, found the end of the filter"))),
        }
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let position = self.peek().map_or(self.end, |t| t.position);
        if self.eat_keyword("not") {
            self.nest(position)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.peek().is_some_and(|t| t.kind == TokenKind::LParen) {
            self.next += 1;
            self.nest(position)?;
            let inner = self.expr()?;
            self.depth -= 1;
            self.expect("`)`", |k| *k == TokenKind::RParen)?;
            return Ok(inner);
        }
        self.tests += 1;
        if self.tests > MAX_TESTS {
            return Err(FilterError::at(position, format!("a filter has at most {MAX_TESTS} comparisons")));
        }
        self.test()
    }

    fn nest(&mut self, position: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::at(position, format!("a filter nests at most {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn test(&mut self) -> Result<Expr, FilterError> {
        let token = self.expect("a column name", |k| matches!(k, TokenKind::Ident(_) | TokenKind::QuotedIdent(_)))?;
        let name = match token.kind {
            TokenKind::Ident(s) if is_reserved(&s) => {
                return Err(FilterError::at(token.position, format!("expected a column name, found keyword `{s}`")))
            }
            TokenKind::Ident(s) | TokenKind::QuotedIdent(s) => s,
            _ => unreachable!("expect() admitted only identifiers"),
        };
        let column = Column { name, position: token.position };

        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            self.expect("`null`", |k| k.is_keyword("null"))?;
            return Ok(Expr::IsNull { column, negated });
        }
        let negated = self.eat_keyword("not");
        if self.eat_keyword("in") {
            self.expect("`(`", |k| *k == TokenKind::LParen)?;
            let mut values = vec![self.literal()?];
            while self.peek().is_some_and(|t| t.kind == TokenKind::Comma) {
                self.next += 1;
                values.push(self.literal()?);
            }
            self.expect("`,` or `)`", |k| *k == TokenKind::RParen)?;
            return Ok(Expr::In { column, values, negated });
        }
        if self.eat_keyword("like") {
            let token = self.expect("a quoted pattern", |k| matches!(k, TokenKind::Str(_)))?;
            let TokenKind::Str(pattern) = token.kind else { unreachable!("expect() admitted only strings") };
            return Ok(Expr::Like { column, pattern, negated });
        }
        if negated {
            let position = self.peek().map_or(self.end, |t| t.position);
            return Err(FilterError::at(position, "expected `in` or `like` after `not`"));
        }
        let op =
            match self.expect("an operator (=, !=, <, <=, >, >=, in, like, is)", |k| matches!(k, TokenKind::Op(_)))? {
                Token { kind: TokenKind::Op(op), .. } => op,
                _ => unreachable!("expect() admitted only operators"),
            };
        let value = self.literal()?;
        Ok(Expr::Compare { column, op, value })
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        let token =
            self.expect("a value", |k| matches!(k, TokenKind::Str(_) | TokenKind::Number(_) | TokenKind::Ident(_)))?;
        match token.kind {
            TokenKind::Str(s) => Ok(Literal::String(s)),
            TokenKind::Number(n) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Literal::Int(i))
                } else {
                    n.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .map(Literal::Float)
                        .ok_or_else(|| FilterError::at(token.position, format!("`{n}` is not a number")))
                }
            }
            TokenKind::Ident(w) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            TokenKind::Ident(w) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            TokenKind::Ident(w) => Err(FilterError::at(
                token.position,
                format!("expected a value, found `{w}` (strings take single quotes: '{w}')"),
            )),
            _ => unreachable!("expect() admitted only literals"),
        }
    }
}

fn is_reserved(word: &str) -> bool {
    ["and", "or", "not", "in", "like", "is", "null", "true", "false"].iter().any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Sensitivity;

    fn col(name: &str, position: usize) -> Column {
        Column { name: name.into(), position }
    }

    #[test]
    fn parses_every_form_of_the_grammar() {
        let e =
            Expr::parse("district = 'Haizhou' and (aqi >= 100 or pm25 > 75.5) and not station like 'LYG%'").unwrap();
        assert_eq!(e.columns(), vec!["district", "aqi", "pm25", "station"]);
        assert_eq!(
            Expr::parse("route in ('K1', 'Y2')").unwrap(),
            Expr::In {
                column: col("route", 1),
                values: vec![Literal::String("K1".into()), Literal::String("Y2".into())],
                negated: false
            }
        );
        assert_eq!(Expr::parse("x is not null").unwrap(), Expr::IsNull { column: col("x", 1), negated: true });
        assert_eq!(Expr::parse("x IS NULL").unwrap(), Expr::IsNull { column: col("x", 1), negated: false });
        assert_eq!(
            Expr::parse("delay <> -30").unwrap(),
            Expr::Compare { column: col("delay", 1), op: CmpOp::NotEq, value: Literal::Int(-30) }
        );
        assert_eq!(
            Expr::parse("name = 'O''Brien'").unwrap(),
            Expr::Compare { column: col("name", 1), op: CmpOp::Eq, value: Literal::String("O'Brien".into()) }
        );
        assert_eq!(
            Expr::parse("\"and\" not in (1)").unwrap(),
            Expr::In { column: col("and", 1), values: vec![Literal::Int(1)], negated: true }
        );
    }

    #[test]
    fn filters_are_bounded_so_nothing_walking_them_can_overflow() {
        let deep = format!("{}a = 1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(Expr::parse(&deep).unwrap_err().message.contains("at most 4096 characters"));
        let nested = format!("{}a = 1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(Expr::parse(&nested).unwrap_err().message, "a filter nests at most 32 levels deep");
        let nots = format!("{}a = 1", "not ".repeat(40));
        assert!(Expr::parse(&nots).is_err());
        let long = vec!["a = 1"; 200].join(" or ");
        assert_eq!(Expr::parse(&long).unwrap_err().message, "a filter has at most 128 comparisons");
        let fine = vec!["a = 1"; 128].join(" or ");
        assert!(Expr::parse(&fine).is_ok());
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = Expr::parse("a = 1 or b = 2 and c = 3").unwrap();
        assert!(matches!(e, Expr::Or(_, ref right) if matches!(**right, Expr::And(_, _))));
    }

    #[test]
    fn errors_point_at_the_offending_position() {
        let cases = [
            ("district = ", 12, "expected a value, found the end of the filter"),
            ("district == 'x'", 11, "expected a value, found `=`"),
            ("aqi > 10 and", 13, "expected a column name, found the end of the filter"),
            ("(aqi > 10", 10, "expected `)`, found the end of the filter"),
            ("name = 'open", 8, "unterminated string"),
            ("name = Haizhou", 8, "expected a value, found `Haizhou` (strings take single quotes: 'Haizhou')"),
            ("aqi > 10 10", 10, "unexpected number 10"),
            ("aqi ; 1", 5, "unexpected character `;`"),
            ("and = 1", 1, "expected a column name, found keyword `and`"),
            ("x not = 1", 7, "expected `in` or `like` after `not`"),
            ("x = 1e999", 5, "`1e999` is not a number"),
        ];
        for (text, position, message) in cases {
            let err = Expr::parse(text).unwrap_err();
            assert_eq!((err.position, err.message.as_str()), (position, message), "{text}");
        }
    }

    #[test]
    fn check_names_unknown_columns_and_type_mismatches() {
        let fields = vec![
            Field {
                name: "aqi".into(),
                field_type: FieldType::Int64,
                description: String::new(),
                sensitivity: Sensitivity::Public,
            },
            Field {
                name: "station".into(),
                field_type: FieldType::String,
                description: String::new(),
                sensitivity: Sensitivity::Public,
            },
        ];
        assert!(Expr::parse("aqi > 3 and station like 'A%'").unwrap().check(&fields).is_ok());
        let err = Expr::parse("aqi > 3 and nope = 1").unwrap().check(&fields).unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (13, "unknown column `nope`"));
        let err = Expr::parse("aqi = 'high'").unwrap().check(&fields).unwrap_err();
        assert_eq!((err.position, err.message.as_str()), (1, "column `aqi` takes an integer, not 'high'"));
        let err = Expr::parse("aqi like '1%'").unwrap().check(&fields).unwrap_err();
        assert_eq!(err.position, 1);
    }

    #[test]
    fn display_output_parses_back_to_the_same_expression() {
        for text in [
            "a = 1 or not (b in ('x', 'y''z') and c is null)",
            "x not like '%a_' and y >= -2.5",
            "t = true",
            // A quote in a quoted column name is doubled when printed (found by the fuzz target).
            "\"at\"\"at\" is null and \"a\"\"\" in (1)",
        ] {
            let e = Expr::parse(text).unwrap();
            let again = Expr::parse(&e.to_string()).unwrap();
            // Positions differ between the two texts, so compare the canonical renderings.
            assert_eq!(e.to_string(), again.to_string(), "{text}");
            assert_eq!(e.columns(), again.columns());
        }
    }
}
