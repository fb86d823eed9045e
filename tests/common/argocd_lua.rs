//! Argo CD's health-check contract in real Lua 5.1: `obj` converted the way Argo CD hands it to a script,
//! the script run as a chunk, `(status, message)` out. Shared by the tests that run the shipped scripts.
//! Lua 5.1 is PUC Lua built from source by `mlua`'s `vendored` feature, so no system package is needed.

use serde_json::Value;

/// A Lua 5.1 string literal holding exactly the bytes of `s`.
pub fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Lua 5.1 has decimal escapes only; three digits so a following digit is not swallowed.
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Lua table constructor for a JSON value, the way Argo CD hands objects to health scripts: objects
/// become string-keyed tables, arrays 1-based sequences, null an absent field.
pub fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs a health script on `obj` and returns `(status, message)`.
pub fn run_health_check(script: &str, obj: &Value) -> (String, String) {
    // Argo CD runs the script as a chunk with `obj` in scope and takes what it returns; wrapping it in a
    // function gives the same `return` semantics.
    let program = format!(
        "local obj = {}\nlocal function health_check()\n{}\nend\nlocal hs = health_check()\n\
         return tostring(hs.status), tostring(hs.message)\n",
        lua_literal(obj),
        script
    );
    let lua = mlua::Lua::new();
    let version: String = lua.globals().get("_VERSION").expect("_VERSION");
    assert_eq!(version, "Lua 5.1", "Argo CD's health checks are Lua 5.1");
    lua.load(&program)
        .eval::<(String, String)>()
        .unwrap_or_else(|e| panic!("the health script failed: {e}\nprogram:\n{program}"))
}
