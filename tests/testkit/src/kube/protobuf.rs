//! Just enough of the Kubernetes protobuf encoding to accept what kubectl's typed clients send
//! (`kubectl create namespace|secret|configmap` post `application/vnd.kubernetes.protobuf`), decoded into
//! the JSON the rest of the emulator works with. Responses stay JSON, which those clients also accept.

use base64::Engine as _;
use serde_json::{json, Map, Value};

pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";

/// One field of a protobuf message.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.pos += 8;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or("truncated field")?;
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(bytes)
            }
            5 => {
                self.pos += 4;
                Field::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        if self.pos > self.buf.len() {
            return Err("truncated field".into());
        }
        Ok(Some((key >> 3, field)))
    }
}

fn string(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
}

/// A `map<string, string|bytes>` entry.
fn map_entry(bytes: &[u8], value_is_bytes: bool) -> Result<(String, Value), String> {
    let mut r = Reader::new(bytes);
    let (mut key, mut value) = (String::new(), json!(""));
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = string(b)?,
            (2, Field::Bytes(b)) if value_is_bytes => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Field::Bytes(b)) => value = json!(string(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    target: &mut Map<String, Value>,
    field: &str,
    bytes: &[u8],
    value_is_bytes: bool,
) -> Result<(), String> {
    let (k, v) = map_entry(bytes, value_is_bytes)?;
    let map = target.entry(field).or_insert_with(|| json!({}));
    map[k] = v;
    Ok(())
}

fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut r = Reader::new(bytes);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                m.insert("name".into(), json!(string(b)?));
            }
            (2, Field::Bytes(b)) => {
                m.insert("generateName".into(), json!(string(b)?));
            }
            (3, Field::Bytes(b)) => {
                m.insert("namespace".into(), json!(string(b)?));
            }
            (6, Field::Bytes(b)) => {
                m.insert("resourceVersion".into(), json!(string(b)?));
            }
            (11, Field::Bytes(b)) => insert_entry(&mut m, "labels", b, false)?,
            (12, Field::Bytes(b)) => insert_entry(&mut m, "annotations", b, false)?,
            (14, Field::Bytes(b)) => {
                let list = m.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(string(b)?));
                }
            }
            // uid, timestamps, owner references and managedFields are server-owned or not sent by kubectl create.
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn strip_empty(v: &str) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

/// Decodes a protobuf-encoded Namespace, Secret or ConfigMap into its JSON form.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf envelope prefix")?;
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    let mut r = Reader::new(inner);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                let mut t = Reader::new(type_meta);
                while let Some((tn, tf)) = t.next()? {
                    match (tn, tf) {
                        (1, Field::Bytes(b)) => api_version = string(b)?,
                        (2, Field::Bytes(b)) => kind = string(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let mut r = Reader::new(raw);
    while let Some((n, f)) = r.next()? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(b)) => {
                obj.insert("metadata".into(), object_meta(b)?);
            }
            ("Secret", 2, Field::Bytes(b)) => insert_entry(&mut obj, "data", b, true)?,
            ("Secret", 3, Field::Bytes(b)) => {
                if let Some(t) = strip_empty(&string(b)?) {
                    obj.insert("type".into(), t);
                }
            }
            ("Secret", 4, Field::Bytes(b)) => insert_entry(&mut obj, "stringData", b, false)?,
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            ("ConfigMap", 2, Field::Bytes(b)) => insert_entry(&mut obj, "data", b, false)?,
            ("ConfigMap", 3, Field::Bytes(b)) => insert_entry(&mut obj, "binaryData", b, true)?,
            ("Namespace", 2 | 3, Field::Bytes(_)) => {}
            ("Secret" | "ConfigMap" | "Namespace", _, _) => {}
            (other, _, _) => return Err(format!("protobuf bodies of kind {other:?} are not supported by the emulator; send JSON (e.g. kubectl apply -f)")),
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    #[test]
    fn decodes_a_secret_like_kubectl_create_secret_sends_it() {
        let meta = [
            field(1, b"ado-pat"),
            field(3, b"orders"),
            field(11, &entry("app", b"x")),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &entry("token", b"pat")),
            field(3, b"Opaque"),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [
            MAGIC.to_vec(),
            field(1, &type_meta),
            field(2, &secret),
            field(3, b""),
            field(4, b""),
        ]
        .concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ado-pat", "namespace": "orders", "labels": {"app": "x"}}, "data": {"token": "cGF0"}, "type": "Opaque"})
        );
    }

    #[test]
    fn rejects_other_kinds_and_garbage() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [
            MAGIC.to_vec(),
            field(1, &type_meta),
            field(2, &field(2, b"x")),
        ]
        .concat();
        assert!(decode(&body).unwrap_err().contains("not supported"));
        assert!(decode(b"nope").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x10, 0x01][..]].concat()).is_err());
    }
}
