//! The subset of kubectl's JSONPath templates people actually use:
//! `{.metadata.name}`, `{.items[*].metadata.name}`, `{.items[0].spec}`, `{..image}`,
//! `{.items[?(@.status.phase=="Running")].metadata.name}`, `{['metadata']['name']}`, slices
//! `[1:3]`, `{range .items[*]}{.metadata.name}{"\n"}{end}`, and literal text. Missing keys print
//! nothing (kubectl's `get` allows missing keys); several results of one expression are joined
//! by a space; strings print raw, everything else as compact JSON.

use anyhow::{anyhow, bail};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    source: String,
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Expr(Vec<Seg>),
    Range(Vec<Seg>, Vec<Node>),
}

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Field(String),
    Recursive(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Vec<Seg>, Option<(String, Value)>),
}

impl JsonPath {
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        let mut chars = template.chars().peekable();
        let mut stack: Vec<(Vec<Seg>, Vec<Node>)> = Vec::new();
        let mut cur: Vec<Node> = Vec::new();
        let mut text = String::new();
        while let Some(c) = chars.next() {
            if c != '{' {
                text.push(c);
                continue;
            }
            if !text.is_empty() {
                cur.push(Node::Text(std::mem::take(&mut text)));
            }
            // Read to the matching '}' outside quotes.
            let mut inner = String::new();
            let mut quote: Option<char> = None;
            let mut closed = false;
            while let Some(c) = chars.next() {
                match quote {
                    Some(q) => {
                        inner.push(c);
                        if c == '\\' {
                            if let Some(n) = chars.next() {
                                inner.push(n);
                            }
                        } else if c == q {
                            quote = None;
                        }
                    }
                    None => match c {
                        '}' => {
                            closed = true;
                            break;
                        }
                        '"' | '\'' => {
                            quote = Some(c);
                            inner.push(c);
                        }
                        _ => inner.push(c),
                    },
                }
            }
            if !closed {
                bail!("unclosed action in template {template:?}");
            }
            let inner = inner.trim();
            if let Some(rest) = inner.strip_prefix("range ") {
                stack.push((parse_path(rest.trim())?, std::mem::take(&mut cur)));
            } else if inner == "end" {
                let (path, outer) = stack
                    .pop()
                    .ok_or_else(|| anyhow!("not in range, nothing to end"))?;
                let body = std::mem::replace(&mut cur, outer);
                cur.push(Node::Range(path, body));
            } else if inner.starts_with('"') || inner.starts_with('\'') {
                cur.push(Node::Text(unquote(inner)?));
            } else {
                cur.push(Node::Expr(parse_path(inner)?));
            }
        }
        if !text.is_empty() {
            cur.push(Node::Text(text));
        }
        if !stack.is_empty() {
            bail!("unclosed range in template {template:?}");
        }
        Ok(JsonPath {
            source: template.to_string(),
            nodes: cur,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(&self, root: &Value) -> anyhow::Result<String> {
        let mut out = String::new();
        render_nodes(&self.nodes, root, &mut out);
        Ok(out)
    }

    /// The values one expression template selects (for `-o jsonpath-as-json` and tests).
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        match self.nodes.as_slice() {
            [Node::Expr(p)] => eval(p, root),
            _ => Vec::new(),
        }
    }
}

fn unquote(s: &str) -> anyhow::Result<String> {
    let q = s.chars().next().unwrap_or('"');
    let body = s
        .strip_prefix(q)
        .and_then(|b| b.strip_suffix(q))
        .ok_or_else(|| anyhow!("unterminated string {s}"))?;
    let mut out = String::new();
    let mut it = body.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn render_nodes(nodes: &[Node], cur: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Expr(p) => {
                let vals = eval(p, cur);
                let parts: Vec<String> = vals.iter().map(|v| to_text(v)).collect();
                out.push_str(&parts.join(" "));
            }
            Node::Range(p, body) => {
                for v in eval(p, cur) {
                    render_nodes(body, v, out);
                }
            }
        }
    }
}

fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_path(p: &str) -> anyhow::Result<Vec<Seg>> {
    let p = p.trim();
    let p = p
        .strip_prefix('$')
        .or_else(|| p.strip_prefix('@'))
        .unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut segs = Vec::new();
    let mut i = 0;
    let read_name = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && chars[*i] != '.' && chars[*i] != '[' {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        chars[start..(*i).min(chars.len())]
            .iter()
            .collect::<String>()
            .replace("\\.", ".")
    };
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if i < chars.len() && chars[i] == '.' {
                    i += 1;
                    let name = read_name(&mut i);
                    if name.is_empty() {
                        bail!("invalid recursive descent in {p:?}");
                    }
                    segs.push(Seg::Recursive(name));
                } else if i < chars.len() && chars[i] == '*' {
                    i += 1;
                    segs.push(Seg::Wildcard);
                } else {
                    let name = read_name(&mut i);
                    if !name.is_empty() {
                        segs.push(Seg::Field(name));
                    }
                }
            }
            '[' => {
                let start = i + 1;
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let mut j = start;
                while j < chars.len() {
                    let c = chars[j];
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None => match c {
                            '\'' | '"' => quote = Some(c),
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            ']' if depth == 0 => break,
                            _ => {}
                        },
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    bail!("unterminated [ in {p:?}");
                }
                let inner: String = chars[start..j].iter().collect();
                segs.push(parse_bracket(inner.trim())?);
                i = j + 1;
            }
            _ => {
                // A bare leading name: `metadata.name`.
                let name = read_name(&mut i);
                segs.push(Seg::Field(name));
            }
        }
    }
    Ok(segs)
}

fn parse_bracket(inner: &str) -> anyhow::Result<Seg> {
    if inner == "*" {
        return Ok(Seg::Wildcard);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        return Ok(Seg::Field(unquote(inner)?));
    }
    if let Some(f) = inner.strip_prefix('?') {
        let f = f.trim();
        let f = f
            .strip_prefix('(')
            .and_then(|f| f.strip_suffix(')'))
            .ok_or_else(|| anyhow!("invalid filter {inner:?}"))?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some(pos) = find_outside_quotes(f, op) {
                let left = parse_path(f[..pos].trim())?;
                let right = f[pos + op.len()..].trim();
                let lit = if right.starts_with('"') || right.starts_with('\'') {
                    Value::String(unquote(right)?)
                } else {
                    serde_json::from_str(right)
                        .map_err(|_| anyhow!("invalid literal {right:?} in filter"))?
                };
                return Ok(Seg::Filter(left, Some((op.to_string(), lit))));
            }
        }
        return Ok(Seg::Filter(parse_path(f)?, None));
    }
    if let Some((a, b)) = inner.split_once(':') {
        let num = |s: &str| -> anyhow::Result<Option<i64>> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                Ok(Some(
                    s.parse().map_err(|_| anyhow!("invalid slice {inner:?}"))?,
                ))
            }
        };
        let b = b.split(':').next().unwrap_or("");
        return Ok(Seg::Slice(num(a)?, num(b)?));
    }
    inner
        .parse::<i64>()
        .map(Seg::Index)
        .map_err(|_| anyhow!("invalid array index {inner:?}"))
}

fn find_outside_quotes(s: &str, pat: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if s[i..].starts_with(pat) => return Some(i),
            None => {}
        }
    }
    None
}

fn eval<'a>(segs: &[Seg], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for seg in segs {
        let mut next = Vec::new();
        for v in cur {
            match seg {
                Seg::Field(name) => {
                    if let Some(x) = v.get(name.as_str()) {
                        next.push(x);
                    }
                }
                Seg::Recursive(name) => recurse(v, name, &mut next),
                Seg::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Seg::Index(n) => {
                    if let Value::Array(a) = v {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if idx >= 0 {
                            if let Some(x) = a.get(idx as usize) {
                                next.push(x);
                            }
                        }
                    }
                }
                Seg::Slice(a, b) => {
                    if let Value::Array(arr) = v {
                        let len = arr.len() as i64;
                        let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                        let start = a.map(norm).unwrap_or(0);
                        let end = b.map(norm).unwrap_or(len);
                        if start < end {
                            next.extend(arr[start as usize..end as usize].iter());
                        }
                    }
                }
                Seg::Filter(path, cond) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for it in items {
                        let found = eval(path, it);
                        let ok = match cond {
                            None => !found.is_empty(),
                            Some((op, lit)) => found.iter().any(|f| compare(f, op, lit)),
                        };
                        if ok {
                            next.push(it);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn recurse<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(name) {
                out.push(x);
            }
            for c in m.values() {
                recurse(c, name, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                recurse(c, name, out);
            }
        }
        _ => {}
    }
}

fn compare(a: &Value, op: &str, b: &Value) -> bool {
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => {
            return match op {
                "==" => a == b,
                "!=" => a != b,
                _ => false,
            }
        }
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match op {
        "==" => ord == Equal,
        "!=" => ord != Equal,
        "<" => ord == Less,
        ">" => ord == Greater,
        "<=" => ord != Greater,
        ">=" => ord != Less,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}},
             "spec": {"containers": [{"image": "nginx"}, {"image": "busybox"}]},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "spec": {"containers": [{"image": "redis"}]},
             "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}
        ]})
    }

    fn r(t: &str) -> String {
        JsonPath::parse(t).unwrap().render(&doc()).unwrap()
    }

    #[test]
    fn basic_paths() {
        assert_eq!(r("{.kind}"), "List");
        assert_eq!(r("{.items[*].metadata.name}"), "a b");
        assert_eq!(r("{.items[0].metadata.name}"), "a");
        assert_eq!(r("{.items[-1].metadata.name}"), "b");
        assert_eq!(r("{.items[0:1].metadata.name}"), "a");
        assert_eq!(r("{..image}"), "nginx busybox redis");
        assert_eq!(
            r("{$.items[1].spec.containers[0]}"),
            "{\"image\":\"redis\"}"
        );
        assert_eq!(
            r("{.items[0].metadata.labels['app.kubernetes.io/name']}"),
            "x"
        );
        assert_eq!(r("{.nope}"), "");
        assert_eq!(r("name: {.items[0].metadata.name}!"), "name: a!");
    }

    #[test]
    fn filters_and_ranges() {
        assert_eq!(
            r("{.items[?(@.status.phase==\"Running\")].metadata.name}"),
            "a"
        );
        assert_eq!(
            r("{range .items[*]}{.metadata.name}{\"\\t\"}{.status.conditions[?(@.type=='Ready')].status}{\"\\n\"}{end}"),
            "a\tTrue\nb\tFalse\n"
        );
        assert_eq!(r("{.items[?(@.metadata.labels)].metadata.name}"), "a");
    }

    #[test]
    fn bad_templates() {
        assert!(JsonPath::parse("{.items[0}").is_err());
        assert!(JsonPath::parse("{range .items[*]}{.x}").is_err());
        assert!(JsonPath::parse("{end}").is_err());
        assert!(JsonPath::parse("{.items[x]}").is_err());
    }
}
