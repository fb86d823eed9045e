//! Azure Pipelines expressions, as far as a check's "success criteria" needs them, ported from
//! Microsoft's documentation (https://learn.microsoft.com/azure/devops/pipelines/process/expressions):
//! literals (`true`/`false`/`null` case-insensitive, numbers, `'strings'` with `''` as the escaped
//! quote), property dereference (`root['open']`, `root.open`, a missing property is null), and the
//! functions `and`, `or`, `not`, `eq`, `ne`, `in`, `notIn`, `contains`, `startsWith`, `endsWith`.
//!
//! Semantics from the same page: `and`/`or` cast each parameter to Boolean and short-circuit; `eq`
//! "converts right parameter to match type of left parameter; returns False if conversion fails;
//! ordinal ignore-case comparison for Strings"; `ne` is its negation; `in(a, b, c..)` is `eq(a, b) or eq(a,
//! c)...`; string functions are ordinal ignore-case. Type casting follows the page's "Type casting"
//! table: Boolean→Number 0/1, Boolean→String `True`/`False`, Null→Boolean False, Null→Number 0,
//! Null→String '', Number→Boolean `!= 0`, String→Boolean non-empty, String→Null only '', String→Number by
//! invariant-culture parse with surrounding white space allowed, Array/Object→Boolean True.
//! The response body is `root` (the Invoke REST API check's documented name for it).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => (out.push(Tok::LParen), i += 1).1,
            ')' => (out.push(Tok::RParen), i += 1).1,
            '[' => (out.push(Tok::LBracket), i += 1).1,
            ']' => (out.push(Tok::RBracket), i += 1).1,
            ',' => (out.push(Tok::Comma), i += 1).1,
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                out.push(Tok::Dot);
                i += 1
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                out.push(Tok::Num(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Root,
    Index(Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, got {other:?}")),
        }
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = match self.next() {
            Some(Tok::Str(s)) => Expr::Lit(Value::String(s)),
            Some(Tok::Num(n)) => Expr::Lit(serde_json::json!(n)),
            Some(Tok::Ident(id)) => match id.to_ascii_lowercase().as_str() {
                "true" => Expr::Lit(Value::Bool(true)),
                "false" => Expr::Lit(Value::Bool(false)),
                "null" => Expr::Lit(Value::Null),
                "root" if self.peek() != Some(&Tok::LParen) => Expr::Root,
                _ => {
                    self.expect(Tok::LParen)?;
                    let mut args = Vec::new();
                    if self.peek() != Some(&Tok::RParen) {
                        loop {
                            args.push(self.expr()?);
                            match self.next() {
                                Some(Tok::Comma) => {}
                                Some(Tok::RParen) => break,
                                other => return Err(format!("expected , or ), got {other:?}")),
                            }
                        }
                    } else {
                        self.next();
                    }
                    Expr::Call(id, args)
                }
            },
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            match self.peek() {
                Some(Tok::LBracket) => {
                    self.next();
                    let key = self.expr()?;
                    self.expect(Tok::RBracket)?;
                    e = Expr::Index(Box::new(e), Box::new(key));
                }
                Some(Tok::Dot) => {
                    self.next();
                    match self.next() {
                        Some(Tok::Ident(name)) => {
                            e = Expr::Index(Box::new(e), Box::new(Expr::Lit(Value::String(name))))
                        }
                        other => return Err(format!("expected a property name, got {other:?}")),
                    }
                }
                _ => return Ok(e),
            }
        }
    }
}

fn to_bool(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn number_to_string(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Convert `v` to the type of `like`; `None` when the table says the conversion fails.
fn convert_like(like: &Value, v: &Value) -> Option<Value> {
    match (like, v) {
        (Value::Bool(_), v) => Some(Value::Bool(to_bool(v))),
        (Value::Number(_), Value::Number(n)) => Some(Value::Number(n.clone())),
        (Value::Number(_), Value::Bool(b)) => Some(serde_json::json!(if *b { 1.0 } else { 0.0 })),
        (Value::Number(_), Value::Null) => Some(serde_json::json!(0.0)),
        (Value::Number(_), Value::String(s)) => {
            s.trim().parse::<f64>().ok().map(|f| serde_json::json!(f))
        }
        (Value::String(_), Value::String(s)) => Some(Value::String(s.clone())),
        (Value::String(_), Value::Bool(b)) => {
            Some(Value::String(if *b { "True" } else { "False" }.into()))
        }
        (Value::String(_), Value::Null) => Some(Value::String(String::new())),
        (Value::String(_), Value::Number(n)) => {
            n.as_f64().map(|f| Value::String(number_to_string(f)))
        }
        (Value::Null, Value::Null) => Some(Value::Null),
        (Value::Null, Value::String(s)) if s.is_empty() => Some(Value::Null),
        _ => None,
    }
}

fn eq(left: &Value, right: &Value) -> bool {
    let Some(right) = convert_like(left, right) else {
        return false;
    };
    match (left, &right) {
        (Value::String(a), Value::String(b)) => a.to_lowercase() == b.to_lowercase(),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        // Arrays and objects compare by reference in Azure Pipelines; two parsed values never match.
        _ => false,
    }
}

fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Null => String::new(),
        Value::Number(n) => n.as_f64().map(number_to_string).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn eval(e: &Expr, root: &Value) -> Result<Value, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Root => root.clone(),
        Expr::Index(obj, key) => {
            let obj = eval(obj, root)?;
            let key = eval(key, root)?;
            match (&obj, &key) {
                // Property names are case-insensitive in Azure Pipelines expressions.
                (Value::Object(m), k) => {
                    let k = as_string(k);
                    m.iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(&k))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null)
                }
                (Value::Array(a), Value::Number(n)) => n
                    .as_f64()
                    .and_then(|f| a.get(f as usize).cloned())
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            }
        }
        Expr::Call(name, args) => {
            let arity = |min: usize, max: usize| {
                if args.len() < min || args.len() > max {
                    Err(format!(
                        "{name} takes {min}..{max} parameters, got {}",
                        args.len()
                    ))
                } else {
                    Ok(())
                }
            };
            match name.to_ascii_lowercase().as_str() {
                "and" => {
                    arity(2, usize::MAX)?;
                    for a in args {
                        if !to_bool(&eval(a, root)?) {
                            return Ok(Value::Bool(false));
                        }
                    }
                    Value::Bool(true)
                }
                "or" => {
                    arity(2, usize::MAX)?;
                    for a in args {
                        if to_bool(&eval(a, root)?) {
                            return Ok(Value::Bool(true));
                        }
                    }
                    Value::Bool(false)
                }
                "not" => {
                    arity(1, 1)?;
                    Value::Bool(!to_bool(&eval(&args[0], root)?))
                }
                "eq" | "ne" => {
                    arity(2, 2)?;
                    let same = eq(&eval(&args[0], root)?, &eval(&args[1], root)?);
                    Value::Bool(if name.eq_ignore_ascii_case("eq") {
                        same
                    } else {
                        !same
                    })
                }
                "in" | "notin" => {
                    arity(1, usize::MAX)?;
                    let needle = eval(&args[0], root)?;
                    let mut found = false;
                    for a in &args[1..] {
                        if eq(&needle, &eval(a, root)?) {
                            found = true;
                            break;
                        }
                    }
                    Value::Bool(if name.eq_ignore_ascii_case("in") {
                        found
                    } else {
                        !found
                    })
                }
                "contains" | "startswith" | "endswith" => {
                    arity(2, 2)?;
                    let hay = as_string(&eval(&args[0], root)?).to_lowercase();
                    let needle = as_string(&eval(&args[1], root)?).to_lowercase();
                    Value::Bool(match name.to_ascii_lowercase().as_str() {
                        "contains" => hay.contains(&needle),
                        "startswith" => hay.starts_with(&needle),
                        _ => hay.ends_with(&needle),
                    })
                }
                other => return Err(format!("function {other} is not ported")),
            }
        }
    })
}

/// Evaluate a success criteria expression against a response body; the check passes when it is truthy.
pub fn evaluate(expression: &str, root: &Value) -> Result<bool, String> {
    let mut p = Parser {
        toks: lex(expression)?,
        pos: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("trailing input after position {}", p.pos));
    }
    Ok(to_bool(&eval(&e, root)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_examples_and_casting_rules() {
        // The Invoke REST API task's own example: {"status": "successful"}.
        assert_eq!(
            evaluate(
                "eq(root['status'], 'successful')",
                &json!({"status": "successful"})
            ),
            Ok(true)
        );
        // Ordinal ignore-case string comparison; right converted to left's type.
        assert_eq!(
            evaluate(
                "eq(root['status'], 'SUCCESSFUL')",
                &json!({"status": "successful"})
            ),
            Ok(true)
        );
        assert_eq!(
            evaluate("eq(root.open, true)", &json!({"open": true})),
            Ok(true)
        );
        assert_eq!(
            evaluate("eq(root.open, 'true')", &json!({"open": false})),
            Ok(false),
            "'true' casts to True"
        );
        assert_eq!(
            evaluate("eq(root.open, '')", &json!({"open": false})),
            Ok(true),
            "'' casts to False"
        );
        assert_eq!(evaluate("eq(root.n, '1')", &json!({"n": 1})), Ok(true));
        assert_eq!(
            evaluate("eq(root.n, 'x')", &json!({"n": 1})),
            Ok(false),
            "failed conversion is False"
        );
        assert_eq!(
            evaluate("eq(root.s, true)", &json!({"s": "True"})),
            Ok(true)
        );
        assert_eq!(evaluate("eq(root.missing, null)", &json!({})), Ok(true));
        assert_eq!(
            evaluate("and(eq(1, 1), ne('a', 'b'), not(false))", &json!({})),
            Ok(true)
        );
        assert_eq!(
            evaluate(
                "in(root.r, 'RunFailed', 'TimedOut')",
                &json!({"r": "timedout"})
            ),
            Ok(true)
        );
        assert_eq!(
            evaluate("startsWith(root.m, 'run')", &json!({"m": "Run 12 ok"})),
            Ok(true)
        );
        assert!(evaluate("eq(root.open", &json!({})).is_err());
        assert!(evaluate("frobnicate(1)", &json!({})).is_err());
    }
}
