//! `labelSelector` strings, parsed the way kube-apiserver parses them
//! (k8s.io/apimachinery/pkg/labels/selector.go: `Parse`): comma-separated requirements `k=v`, `k==v`,
//! `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, all of which must hold. kube-core has the
//! requirement types and the matching but no parser. Used by the read API (`?labelSelector=`) and by
//! `--watch-label-selector` ([`crate::shard`]).

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// Why a `labelSelector` was refused; the message names the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid labelSelector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// Upper bound on a selector's length, so a request cannot make the server parse megabytes.
const MAX_SELECTOR_LEN: usize = 4096;

pub fn parse(s: &str) -> Result<Selector, SelectorError> {
    let err = |reason: String| SelectorError {
        selector: s.chars().take(200).collect(),
        reason,
    };
    if s.len() > MAX_SELECTOR_LEN {
        return Err(err(format!("longer than {MAX_SELECTOR_LEN} bytes")));
    }
    let mut exprs = Vec::new();
    if s.trim().is_empty() {
        return Ok(Selector::from_iter(exprs));
    }
    for part in split_top_level(s) {
        exprs.push(requirement(part.trim()).map_err(err)?);
    }
    Ok(Selector::from_iter(exprs))
}

fn requirement(part: &str) -> Result<Expression, String> {
    if part.is_empty() {
        return Err("empty requirement".to_string());
    }
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Expression::DoesNotExist(key.to_string()));
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            check_value(v)?;
            return Ok(if negate {
                Expression::NotEqual(k.to_string(), v.to_string())
            } else {
                Expression::Equal(k.to_string(), v.to_string())
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        let (negate, set) = if let Some(set) = rest.strip_prefix("notin") {
            (true, set)
        } else if let Some(set) = rest.strip_prefix("in") {
            (false, set)
        } else {
            return Err(format!("unknown operator in {part:?}"));
        };
        check_key(key)?;
        let values = parse_set(set.trim())?;
        return Ok(if negate {
            Expression::NotIn(key.to_string(), values)
        } else {
            Expression::In(key.to_string(), values)
        });
    }
    check_key(part)?;
    Ok(Expression::Exists(part.to_string()))
}

fn parse_set(set: &str) -> Result<BTreeSet<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {set:?}"))?;
    let mut values = BTreeSet::new();
    for v in inner.split(',') {
        let v = v.trim();
        check_value(v)?;
        values.insert(v.to_string());
    }
    Ok(values)
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A qualified name with an optional DNS-subdomain prefix (validation.IsQualifiedName).
fn check_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("{k:?} is not a valid label key"))
    }
}

/// validation.IsValidLabelValue: empty, or up to 63 alphanumerics, `-_.`, alphanumeric at both ends.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn check_value(v: &str) -> Result<(), String> {
    if valid_label_value(v) {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_selects_as_the_apiserver_does() {
        let l = labels(&[("app", "orders"), ("tier", "web")]);
        for (sel, want) in [
            ("", true),
            ("app=orders", true),
            ("app==orders", true),
            ("app!=orders", false),
            ("app!=billing", true),
            ("missing!=x", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (orders, billing)", true),
            ("app notin (orders)", false),
            ("missing notin (x)", true),
            ("app=orders,tier=web", true),
            ("app=orders,tier=db", false),
            ("example.com/team in (a,b),app", false),
        ] {
            assert_eq!(parse(sel).unwrap().matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        for sel in [
            "app=",
            "=x",
            "app in orders",
            "a b c",
            "Bad_Prefix/x=y",
            ",",
            "app=in valid",
        ] {
            if sel == "app=" {
                // An empty value is valid (`app=` selects app="").
                assert!(parse(sel).is_ok());
                continue;
            }
            let e = parse(sel).unwrap_err();
            assert!(!e.reason.is_empty(), "{sel}");
        }
        assert!(parse(&"a".repeat(5000)).is_err());
    }
}
