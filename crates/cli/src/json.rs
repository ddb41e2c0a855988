//! JSON, read and written with serde_json: the trace record that `report` and `timeline`
//! read, the container runtimes' answers, and every `--json` document sockwrap prints.
//!
//! `serde_json` is built with `preserve_order`: an object keeps its keys in the order they
//! are put in, so the documented shapes (docs/json.md) read as printed. [`JsonExt`] adds the
//! few accessors the readers share and the one way a document is turned into text.

pub use serde_json::Value as Json;

/// An object from pairs, its keys in the order given.
pub fn object<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// An object from a list built at run time, its keys in the order given.
pub fn obj(fields: Vec<(String, Json)>) -> Json {
    Json::Object(fields.into_iter().collect())
}

/// One JSON document (a trace line, a runtime's answer).
pub fn parse(s: &str) -> Result<Json, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

/// An option's value in JSON: numbers and booleans as such (a DSCP as its ToS byte), linger
/// as seconds or "off", the rest (names, addresses) as text.
pub fn option_value(v: sockwrap_policy::Value) -> Json {
    use sockwrap_policy::Value;
    match v {
        Value::Int(i) => i.into(),
        Value::Bool(b) => b.into(),
        Value::Linger(None) => "off".into(),
        Value::Linger(Some(s)) => s.into(),
        other => other.to_string().into(),
    }
}

/// What the readers ask of a JSON object, and how a document is printed.
pub trait JsonExt {
    /// The text at `k`, if that is text.
    fn str(&self, k: &str) -> Option<&str>;
    /// The number at `k` as an integer (a fraction cut toward zero).
    fn int(&self, k: &str) -> Option<i64>;
    /// A value as short text: strings bare, the rest as JSON.
    fn text(&self) -> String;
    /// The document on one line.
    fn to_json(&self) -> String;
}

impl JsonExt for Json {
    fn str(&self, k: &str) -> Option<&str> {
        self.get(k)?.as_str()
    }
    fn int(&self, k: &str) -> Option<i64> {
        let v = self.get(k)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }
    fn text(&self) -> String {
        match self {
            Json::String(s) => s.clone(),
            other => other.to_json(),
        }
    }
    fn to_json(&self) -> String {
        // A Value has string keys and finite numbers only: it always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_key_order_and_escapes() {
        let t = r#"{"b":[1,-2,3.5,"x\"y\u00e9\n"],"a":{"c":null,"d":true}}"#;
        let v = parse(t).unwrap();
        assert_eq!(
            v.to_json(),
            "{\"b\":[1,-2,3.5,\"x\\\"yé\\n\"],\"a\":{\"c\":null,\"d\":true}}"
        );
        assert_eq!(parse(&v.to_json()).unwrap(), v);
        assert!(parse("{\"a\":").is_err());
        assert_eq!(v.int("b"), None);
        assert_eq!(
            object([("z", 1.into()), ("a", "\u{1}".into())]).to_json(),
            r#"{"z":1,"a":"\u0001"}"#
        );
    }
}
