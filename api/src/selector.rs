//! Label selectors (`matchLabels` + `matchExpressions`, and the string form
//! `a=b,c!=d,e in (x,y),!f`) and field selectors.

use std::collections::BTreeMap;
use std::fmt;

use crate::meta::LabelSelector;
use crate::validation::names::{label_value_errors, qualified_name_errors};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// A validated requirement (Kubernetes' `labels.NewRequirement`); values are sorted and
    /// de-duplicated.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs = Vec::new();
        let key_errs = qualified_name_errors(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {key:?}: {}",
                key_errs.join("; ")
            ));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                    .to_string(),
            ),
            Operator::Equals | Operator::NotEquals if values.len() != 1 => errs.push(format!(
                "values: Invalid value: {values:?}: exact-match compatibility requires one single value"
            )),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
                "values: Invalid value: {values:?}: values set must be empty for exists and does not exist"
            )),
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let v_errs = label_value_errors(v);
            if !v_errs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {}",
                    v_errs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            return Err(if errs.len() == 1 {
                errs.remove(0)
            } else {
                format!("[{}]", errs.join(", "))
            });
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => labels.get(&self.key).is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !labels.get(&self.key).is_some_and(has),
            Operator::Exists => labels.contains_key(&self.key),
            Operator::DoesNotExist => !labels.contains_key(&self.key),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

// ------------------------------------------------------------------ lexer

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    End,
    Ident(String),
    Comma,
    OpenPar,
    ClosePar,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Gt,
    Lt,
}

impl Token {
    fn literal(&self) -> String {
        match self {
            Token::End => String::new(),
            Token::Ident(s) => s.clone(),
            Token::Comma => ",".into(),
            Token::OpenPar => "(".into(),
            Token::ClosePar => ")".into(),
            Token::Bang => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Tokens of a selector string; `in`/`notin` are keywords only where an operator may stand, so
/// the parser asks for "values" mode where they are plain identifiers.
fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, n) = match (c, next) {
                ('=', Some('=')) => (Token::DoubleEq, 2),
                ('=', _) => (Token::Eq, 1),
                ('!', Some('=')) => (Token::NotEq, 2),
                ('!', _) => (Token::Bang, 1),
                ('(', _) => (Token::OpenPar, 1),
                (')', _) => (Token::ClosePar, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::Gt, 1),
                _ => (Token::Lt, 1),
            };
            out.push(tok);
            i += n;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out.push(Token::End);
    out
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    /// In values mode the keywords are identifiers.
    fn as_value(t: Token) -> Token {
        match t {
            Token::In => Token::Ident("in".into()),
            Token::NotIn => Token::Ident("notin".into()),
            t => t,
        }
    }
    fn next_value(&mut self) -> Token {
        Self::as_value(self.next())
    }
    fn peek_value(&self) -> Token {
        Self::as_value(self.peek().clone())
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek_value() {
                Token::Ident(_) | Token::Bang => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.next() {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let t = self.peek_value();
                            if !matches!(t, Token::Ident(_) | Token::Bang) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ))
                        }
                    }
                }
                Token::End => return Ok(reqs),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        let mut tok = self.next_value();
        if tok == Token::Bang {
            negated = true;
            tok = self.next_value();
        }
        let key = match tok {
            Token::Ident(k) => k,
            t => return Err(format!("found '{}', expected: identifier", t.literal())),
        };
        if matches!(self.peek(), Token::End | Token::Comma) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, op, Vec::new());
        }
        if negated {
            // `!a=b` and the like.
            let t = self.peek().literal();
            return Err(format!(
                "found '{t}', expected: ',' or 'end of string' after '!{key}'"
            ));
        }
        let op = match self.next() {
            Token::Eq | Token::DoubleEq => Operator::Equals,
            Token::NotEq => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt | Token::Lt => {
                return Err("the 'gt' and 'lt' operators are not supported".to_string())
            }
            t => {
                return Err(format!(
                    "found '{}', expected: {}",
                    t.literal(),
                    "[!= == = in notin]"
                ))
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.values_list()?,
            _ => match self.peek_value() {
                Token::End | Token::Comma => vec![String::new()],
                _ => match self.next_value() {
                    Token::Ident(v) => vec![v],
                    t => return Err(format!("found '{}', expected: identifier", t.literal())),
                },
            },
        };
        Requirement::new(&key, op, values)
    }

    fn values_list(&mut self) -> Result<Vec<String>, String> {
        let t = self.next_value();
        if t != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        match self.peek_value() {
            Token::ClosePar => {
                self.next();
                Ok(vec![String::new()])
            }
            Token::Ident(_) | Token::Comma => {
                let mut vals = Vec::new();
                loop {
                    match self.next_value() {
                        Token::Ident(v) => {
                            vals.push(v);
                            match self.peek_value() {
                                Token::Comma => {
                                    self.next();
                                    if self.peek_value() == Token::ClosePar {
                                        vals.push(String::new());
                                    }
                                }
                                Token::ClosePar => break,
                                t => {
                                    return Err(format!(
                                        "found '{}', expected: ',' or ')'",
                                        t.literal()
                                    ))
                                }
                            }
                        }
                        Token::Comma => {
                            // `(,x)`, `(x,,y)`: an empty value.
                            vals.push(String::new());
                        }
                        Token::ClosePar => {
                            // Reached only via a trailing empty value, already recorded.
                            self.pos -= 1;
                            break;
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',', or identifier",
                                t.literal()
                            ))
                        }
                    }
                }
                match self.next_value() {
                    Token::ClosePar => Ok(vals),
                    t => Err(format!("found '{}', expected: ')'", t.literal())),
                }
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
    /// Parse the string form used in `?labelSelector=` (Kubernetes' `labels.Parse`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            toks: lex(s),
            pos: 0,
        };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }
    /// Convert a `metav1.LabelSelector` (Kubernetes' `LabelSelectorAsSelector`). The empty
    /// `LabelSelector` matches everything.
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (k, v) in &ls.match_labels {
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for e in &ls.match_expressions {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(Requirement::new(&e.key, op, e.values.clone())?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }
    /// An equality selector from a map (`Service.spec.selector`, `matchLabels`).
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        Selector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        }
    }
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    /// The canonical string form: requirements sorted by key, values sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reqs: Vec<&Requirement> = self.requirements.iter().collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if matches!(r.operator, Operator::In | Operator::NotIn) {
                let mut vals = r.values.clone();
                vals.sort();
                let op = if r.operator == Operator::In {
                    "in"
                } else {
                    "notin"
                };
                write!(f, "{} {op} ({})", r.key, vals.join(","))?;
            } else {
                write!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Selector::parse(s)
    }
}

/// A field selector (`metadata.name=x,spec.nodeName!=`): only `=`, `==` and `!=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, negated)
    pub terms: Vec<(String, String, bool)>,
}

/// Split on `sep` not preceded by a backslash escape.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Undo `fields.EscapeValue` (`\\`, `\,`, `\=`).
fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => return Err(format!("invalid escape sequence: \\{n}")),
                None => return Err("unterminated escape sequence".to_string()),
            }
        } else if c == ',' || c == '=' {
            return Err(format!("invalid field selector value: unescaped {c:?}"));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn escape_field_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

impl FieldSelector {
    /// Parse Kubernetes' field selector string form (`fields.ParseSelector`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { terms });
        }
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((l, r)) = part.split_once("!=") {
                (l, r, true)
            } else if let Some((l, r)) = part.split_once("==") {
                (l, r, false)
            } else if let Some((l, r)) = part.split_once('=') {
                (l, r, false)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            }
            let value = unescape_field_value(value.trim())
                .map_err(|e| format!("invalid selector: '{s}': {e}"))?;
            terms.push((field.to_string(), value, negated));
        }
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(FieldSelector { terms })
    }
    pub fn everything() -> Self {
        FieldSelector::default()
    }
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
    /// The fields the selector mentions (to reject unsupported ones up front).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.0.as_str())
    }
    /// The value required by an `=` term on `field` (e.g. `spec.nodeName` for indexed lookups).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.0 == field && !t.2)
            .map(|t| t.1.as_str())
    }
    /// `get` returns the value of a field of the object, `None` when the field is not supported.
    /// An unsupported field never matches.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms
            .iter()
            .all(|(field, value, negated)| match get(field) {
                Some(v) => (v == *value) != *negated,
                None => false,
            })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, value, negated)) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if *negated { "!=" } else { "=" };
            write!(f, "{field}{op}{}", escape_field_value(value))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FieldSelector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (input, canonical string form)
    #[test]
    fn parse_and_format() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("   ", ""),
            ("x=a", "x=a"),
            ("x==a", "x=a"),
            ("x!=a", "x!=a"),
            ("x=", "x="),
            ("x= ", "x="),
            ("x=,z= ", "x=,z="),
            ("x", "x"),
            ("!x", "!x"),
            (" ! x ", "!x"),
            ("x in (a)", "x in (a)"),
            ("x in (b,a)", "x in (a,b)"),
            ("x in(b, a ,c)", "x in (a,b,c)"),
            ("x notin (a)", "x notin (a)"),
            ("x in ()", "x in ()"),
            ("x in (a,)", "x in (,a)"),
            ("x in (,a)", "x in (,a)"),
            ("x in (a,a)", "x in (a)"),
            ("z=1,a=2", "a=2,z=1"),
            ("a=b,c!=d,e in (x,y),!f,g", "a=b,c!=d,e in (x,y),!f,g"),
            ("x=in", "x=in"),
            ("x in (in,notin)", "x in (in,notin)"),
            ("example.com/app=web", "example.com/app=web"),
            (
                "app.kubernetes.io/name notin (a_b, C.d)",
                "app.kubernetes.io/name notin (C.d,a_b)",
            ),
            ("x>1", ""),
        ];
        for &(input, canonical) in table {
            if input == "x>1" {
                assert!(Selector::parse(input).is_err());
                continue;
            }
            let s = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(s.to_string(), canonical, "{input:?}");
            // The canonical form parses back to the same selector.
            assert_eq!(Selector::parse(canonical).unwrap(), s, "{canonical:?}");
        }
    }

    #[test]
    fn parse_errors() {
        let table: &[(&str, &str)] = &[
            ("x=a b", "found 'b', expected: ',' or 'end of string'"),
            ("x=a,", "found '', expected: identifier after ','"),
            (
                ",x",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("x in a", "found 'a' expected: '('"),
            ("x in (a", "found '', expected: ',' or ')'"),
            ("x in (a b)", "found 'b', expected: ',' or ')'"),
            ("x in (", "found '', expected: ',', ')' or identifier"),
            ("x notin", "found '' expected: '('"),
            ("x=(", "found '(', expected: identifier"),
            ("x=a=b", "found '=', expected: ',' or 'end of string'"),
            ("x y", "found 'y', expected: [!= == = in notin]"),
            ("x,,y", "found ',', expected: identifier after ','"),
            ("!", "found '', expected: identifier"),
            ("!x=a", "expected: ',' or 'end of string'"),
            (
                "-x=a",
                "key: Invalid value: \"-x\": name part must consist of",
            ),
            ("a/b/c", "a qualified name must consist of"),
            (
                "x=-a",
                "values[0][x]: Invalid value: \"-a\": a valid label must be an empty string",
            ),
            ("x in (a,b c)", "found 'c', expected: ',' or ')'"),
            ("x<1", "not supported"),
        ];
        for &(input, want) in table {
            match Selector::parse(input) {
                Ok(s) => panic!("{input:?} parsed as {s:?}"),
                Err(e) => assert!(e.contains(want), "{input:?}: got {e:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("empty", "")]);
        let table: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("missing=x", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (db)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("empty=", true),
            ("empty", true),
            ("missing=", false),
            ("empty in ()", true),
        ];
        for &(sel, want) in table {
            assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel:?}");
        }
        assert!(Selector::everything().matches(&BTreeMap::new()));
        assert!(Selector::from_map(&labels(&[("app", "web")])).matches(&l));
        assert!(!Selector::from_map(&labels(&[("app", "db")])).matches(&l));
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn label_selector_conversion() {
        let ls = LabelSelector {
            match_labels: labels(&[("app", "web"), ("b", "x")]),
            match_expressions: vec![
                expr("tier", "In", &["front", "edge"]),
                expr("env", "NotIn", &["prod"]),
                expr("canary", "DoesNotExist", &[]),
                expr("team", "Exists", &[]),
            ],
        };
        let s = Selector::from_label_selector(&ls).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,b=x,!canary,env notin (prod),team,tier in (edge,front)"
        );
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("b", "x"),
            ("tier", "edge"),
            ("team", "a")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("b", "x"), ("tier", "edge")])));
        assert!(Selector::from_label_selector(&LabelSelector::default())
            .unwrap()
            .is_empty());

        let bad: &[(LabelSelectorRequirement, &str)] = &[
            (expr("a", "In", &[]), "values set can't be empty"),
            (expr("a", "NotIn", &[]), "values set can't be empty"),
            (expr("a", "Exists", &["x"]), "values set must be empty"),
            (
                expr("a", "DoesNotExist", &["x"]),
                "values set must be empty",
            ),
            (
                expr("a", "Gt", &["1"]),
                "\"Gt\" is not a valid label selector operator",
            ),
            (
                expr("a", "in", &["1"]),
                "\"in\" is not a valid label selector operator",
            ),
            (expr("-a", "Exists", &[]), "key: Invalid value: \"-a\""),
            (
                expr("a", "In", &["a b"]),
                "values[0][a]: Invalid value: \"a b\"",
            ),
        ];
        for (e, want) in bad {
            let ls = LabelSelector {
                match_expressions: vec![e.clone()],
                ..Default::default()
            };
            let err = Selector::from_label_selector(&ls).unwrap_err();
            assert!(err.contains(want), "{e:?}: {err}");
        }
        let ls = LabelSelector {
            match_labels: labels(&[("a", "-x")]),
            ..Default::default()
        };
        assert!(Selector::from_label_selector(&ls).is_err());
    }

    #[test]
    fn field_selectors() {
        let get = |f: &str| match f {
            "metadata.name" => Some("web-1".to_string()),
            "spec.nodeName" => Some(String::new()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        let table: &[(&str, bool, &str)] = &[
            ("", true, ""),
            ("metadata.name=web-1", true, "metadata.name=web-1"),
            ("metadata.name==web-1", true, "metadata.name=web-1"),
            ("metadata.name!=web-1", false, "metadata.name!=web-1"),
            ("spec.nodeName=", true, "spec.nodeName="),
            ("spec.nodeName!=", false, "spec.nodeName!="),
            (
                "status.phase!=Pending,spec.nodeName=",
                true,
                "spec.nodeName=,status.phase!=Pending",
            ),
            (
                "status.phase=Running,metadata.name=x",
                false,
                "metadata.name=x,status.phase=Running",
            ),
            ("unknown.field=x", false, "unknown.field=x"),
            ("metadata.name=a\\,b", false, "metadata.name=a\\,b"),
        ];
        for &(sel, want, canonical) in table {
            let fs = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(fs.matches(get), want, "{sel:?}");
            assert_eq!(fs.to_string(), canonical, "{sel:?}");
            assert_eq!(FieldSelector::parse(canonical).unwrap(), fs);
        }
        let fs = FieldSelector::parse("metadata.name=a\\,b").unwrap();
        assert_eq!(
            fs.terms,
            vec![("metadata.name".into(), "a,b".into(), false)]
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1")
                .unwrap()
                .required_value("spec.nodeName"),
            Some("n1")
        );
        for bad in ["metadata.name", "=x", "a=b,c", "a=b\\q"] {
            assert!(FieldSelector::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            FieldSelector::parse("foo").unwrap_err(),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
    }
}
