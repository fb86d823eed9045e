//! The subset of expr-lang (https://expr-lang.org/docs/language-definition) that Argo Rollouts'
//! `successCondition`/`failureCondition` and Kargo's `successExpression`/`failureExpression` recipes use,
//! with expr's semantics:
//! - literals: `true`, `false`, `nil`, integers, floats, `'single'` or `"double"` quoted strings, arrays;
//! - member access `a.b`, `a?.b`, `a['b']`, `a[0]`: a missing map key is `nil`; fetching a member of
//!   `nil` is an error unless written `?.` (expr's optional chaining), which yields `nil`;
//! - `==`/`!=` are expr's `runtime.Equal`: int and float compare numerically, values of different types
//!   are unequal (no conversion), `nil == nil`;
//! - `<`, `>`, `<=`, `>=` on two numbers or two strings, else an error;
//! - `&&`/`and`, `||`/`or` short-circuit and need booleans; `!`/`not`; `??` (nil coalescing);
//! - `x in [..]` (array element equality) and `k in map` (key presence), `not in`.
//!
//! Argo Rollouts evaluates with `result` bound to the first value the web provider's jsonPath selects
//! (metricproviders/webmetric/webmetric.go: `getValue(fullResults)`), and Kargo with `response` =
//! `{status, headers, body}` (docs: promotion-steps/http.md).

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(&'static str),
}

const OPS: [&str; 20] = [
    "?.", "??", "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",", ".",
    "+", "-", "?",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    'outer: while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            out.push(Tok::Str(s));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            out.push(if text.contains('.') {
                Tok::Float(text.parse().map_err(|_| format!("bad number {text}"))?)
            } else {
                Tok::Int(text.parse().map_err(|_| format!("bad number {text}"))?)
            });
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        for op in OPS {
            let len = op.chars().count();
            if chars[i..].iter().take(len).copied().eq(op.chars()) {
                out.push(Tok::Op(op));
                i += len;
                continue 'outer;
            }
        }
        return Err(format!("unexpected character {c:?}"));
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    env: &'a Value,
}

type R = Result<Value, String>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Tok::Op(match OPS.iter().find(|o| **o == op) {
                Some(o) => o,
                None => return false,
            }))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    // Precedence (expr's): ?? < || < && < == != < in < comparison < unary < member.
    // Evaluated while parsing; `&&`/`||` skip evaluation of the right side by parsing it in "dead" mode.
    fn coalesce(&mut self, live: bool) -> R {
        let mut left = self.or(live)?;
        while self.eat_op("??") {
            let right = self.or(live && left.is_null())?;
            if left.is_null() {
                left = right;
            }
        }
        Ok(left)
    }
    fn or(&mut self, live: bool) -> R {
        let mut left = self.and(live)?;
        while self.eat_op("||") || self.eat_word("or") {
            let l = if live { as_bool(&left)? } else { false };
            let right = self.and(live && !l)?;
            left = Value::Bool(l || (live && as_bool(&right)?));
        }
        Ok(left)
    }
    fn and(&mut self, live: bool) -> R {
        let mut left = self.equality(live)?;
        while self.eat_op("&&") || self.eat_word("and") {
            let l = if live { as_bool(&left)? } else { false };
            let right = self.equality(live && l)?;
            left = Value::Bool(l && (!live || as_bool(&right)?));
        }
        Ok(left)
    }
    fn equality(&mut self, live: bool) -> R {
        let mut left = self.membership(live)?;
        loop {
            let negate = if self.eat_op("==") {
                false
            } else if self.eat_op("!=") {
                true
            } else {
                return Ok(left);
            };
            let right = self.membership(live)?;
            left = Value::Bool(equal(&left, &right) != negate);
        }
    }
    fn membership(&mut self, live: bool) -> R {
        let left = self.comparison(live)?;
        let save = self.pos;
        let negate = if self.eat_word("not") {
            if !self.eat_word("in") {
                self.pos = save;
                return Ok(left);
            }
            true
        } else if self.eat_word("in") {
            false
        } else {
            return Ok(left);
        };
        let right = self.comparison(live)?;
        if !live {
            return Ok(Value::Bool(false));
        }
        let found = match &right {
            Value::Array(items) => items.iter().any(|x| equal(&left, x)),
            Value::Object(m) => left.as_str().is_some_and(|k| m.contains_key(k)),
            Value::Null => false,
            other => return Err(format!("operator in not defined on {other}")),
        };
        Ok(Value::Bool(found != negate))
    }
    fn comparison(&mut self, live: bool) -> R {
        let left = self.unary(live)?;
        for op in ["<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                let right = self.unary(live)?;
                if !live {
                    return Ok(Value::Bool(false));
                }
                let ord = match (&left, &right) {
                    (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    _ => return Err(format!("invalid operation: {left} {op} {right}")),
                };
                let ord = ord.ok_or("NaN comparison")?;
                return Ok(Value::Bool(match op {
                    "<" => ord.is_lt(),
                    ">" => ord.is_gt(),
                    "<=" => ord.is_le(),
                    _ => ord.is_ge(),
                }));
            }
        }
        Ok(left)
    }
    fn unary(&mut self, live: bool) -> R {
        if self.eat_op("!") || self.eat_word("not") {
            let v = self.unary(live)?;
            return Ok(if live {
                Value::Bool(!as_bool(&v)?)
            } else {
                Value::Bool(false)
            });
        }
        if self.eat_op("-") {
            let v = self.unary(live)?;
            return Ok(match v {
                Value::Number(n) if n.is_i64() => json!(-n.as_i64().unwrap_or(0)),
                Value::Number(n) => json!(-n.as_f64().unwrap_or(0.0)),
                other if !live => other,
                other => return Err(format!("invalid operation: -{other}")),
            });
        }
        self.member(live)
    }
    fn member(&mut self, live: bool) -> R {
        let mut v = self.primary(live)?;
        loop {
            let optional;
            let key: Value = if self.eat_op("?.") {
                optional = true;
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        Value::String(name)
                    }
                    other => return Err(format!("expected a name after ?., got {other:?}")),
                }
            } else if self.eat_op(".") {
                optional = false;
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        Value::String(name)
                    }
                    other => return Err(format!("expected a name after ., got {other:?}")),
                }
            } else if self.eat_op("[") {
                optional = false;
                let k = self.coalesce(live)?;
                if !self.eat_op("]") {
                    return Err("expected ]".into());
                }
                k
            } else {
                return Ok(v);
            };
            if !live {
                continue;
            }
            v = match (&v, &key) {
                (Value::Null, _) if optional => Value::Null,
                (Value::Null, k) => return Err(format!("cannot fetch {k} from nil")),
                (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
                (Value::Array(a), Value::Number(n)) => {
                    let i = n.as_i64().ok_or("index must be an integer")?;
                    let i = if i < 0 { a.len() as i64 + i } else { i };
                    a.get(usize::try_from(i).map_err(|_| "index out of range")?)
                        .cloned()
                        .ok_or_else(|| format!("index out of range: {i}"))?
                }
                (other, k) => return Err(format!("cannot fetch {k} from {other}")),
            };
        }
    }
    fn primary(&mut self, live: bool) -> R {
        let tok = self.toks.get(self.pos).cloned().ok_or("unexpected end")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Int(i) => json!(i),
            Tok::Float(f) => json!(f),
            Tok::Str(s) => Value::String(s),
            Tok::Ident(w) => match w.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "nil" => Value::Null,
                name => match self.env.get(name) {
                    Some(v) => v.clone(),
                    None if !live => Value::Null,
                    None => return Err(format!("unknown name {name}")),
                },
            },
            Tok::Op("(") => {
                let v = self.coalesce(live)?;
                if !self.eat_op(")") {
                    return Err("expected )".into());
                }
                v
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.coalesce(live)?);
                        if self.eat_op("]") {
                            break;
                        }
                        if !self.eat_op(",") {
                            return Err("expected , or ]".into());
                        }
                    }
                }
                Value::Array(items)
            }
            other => return Err(format!("unexpected {other:?}")),
        })
    }
}

fn as_bool(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected a bool, got {v}"))
}

/// expr's runtime.Equal: numbers numerically across int/float, otherwise same type and value.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Evaluate `expression` with the variables of `env` (an object); the result must be a bool.
pub fn evaluate(expression: &str, env: &Value) -> Result<bool, String> {
    let mut p = Parser {
        toks: lex(expression)?,
        pos: 0,
        env,
    };
    let v = p.coalesce(true)?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token {:?}", p.toks[p.pos]));
    }
    as_bool(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expr_semantics_the_recipes_rely_on() {
        let env = json!({"result": true, "response": {"status": 200, "body": {"open": false, "reason": "RunFailed", "n": 1}}});
        assert_eq!(evaluate("result == true", &env), Ok(true));
        assert_eq!(
            evaluate("result == 'true'", &env),
            Ok(false),
            "no conversion between types"
        );
        assert_eq!(
            evaluate("response.status == 200 && response.body.open == true", &env),
            Ok(false)
        );
        assert_eq!(
            evaluate("response.body.n == 1.0", &env),
            Ok(true),
            "int and float compare numerically"
        );
        assert_eq!(
            evaluate("response.body.reason in ['RunFailed', 'TimedOut']", &env),
            Ok(true)
        );
        assert_eq!(
            evaluate("response.body.reason not in ['RunFailed']", &env),
            Ok(false)
        );
        assert_eq!(evaluate("'open' in response.body", &env), Ok(true));
        assert_eq!(evaluate("response.body.missing == nil", &env), Ok(true));
        assert!(evaluate("response.body.missing.deeper == nil", &env).is_err());
        assert_eq!(
            evaluate("response.body.missing?.deeper == nil", &env),
            Ok(true)
        );
        assert_eq!(
            evaluate("(response.body.missing ?? 'x') == 'x'", &env),
            Ok(true)
        );
        assert_eq!(
            evaluate("false && response.nothing.at.all", &env),
            Ok(false),
            "short circuit"
        );
        assert_eq!(
            evaluate("response.status >= 400 and response.status < 500", &env),
            Ok(false)
        );
        assert!(
            evaluate("response.status && true", &env).is_err(),
            "&& needs booleans"
        );
        assert!(evaluate("unknown == 1", &env).is_err());
    }
}
