//! `json-transform`: an AisOpsFlow plugin (runner API v1) with one entrypoint, `transform`,
//! that applies a list of operations to a JSON object or to each object of an array.
//!
//! `config.ops` holds, in order:
//! * `{"op":"pick","fields":[..]}`: keep only these fields
//! * `{"op":"drop","fields":[..]}`: remove these fields
//! * `{"op":"rename","from":"a","to":"b"}`: move field `a` to `b` (absent `a`: no-op)
//! * `{"op":"set","field":"x","value":<json>}`: set a field
//! * `{"op":"uppercase","field":"x"}` / `{"op":"lowercase","field":"x"}`: change a string
//!   field's case (absent field: no-op; not a string: error)
//!
//! Any error is `400 invalid_request` naming the operation index (`ops[2]`).

use berth_httpsig::plugin::{Call, Entrypoint, Plugin, PluginError, run};
use serde_json::{Map, Value};

const MAX_OPS: usize = 256;
/// The manifest's `entrypoints.transform.timeout_ms`.
const TIMEOUT_MS: u64 = 2000;

fn main() {
    let plugin = Plugin {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        entrypoints: vec![Entrypoint { name: "transform", timeout_ms: TIMEOUT_MS, handler: Box::new(transform) }],
        health: None,
    };
    if let Err(e) = run(plugin) {
        eprintln!("json-transform: {e}");
        std::process::exit(1);
    }
}

fn transform(call: &Call) -> Result<Value, PluginError> {
    let ops = match call.config.get("ops") {
        Some(Value::Array(ops)) => ops,
        None => return Err(PluginError::invalid_request("config.ops is required")),
        Some(_) => return Err(PluginError::invalid_request("config.ops must be an array")),
    };
    if ops.len() > MAX_OPS {
        return Err(PluginError::invalid_request(format!("config.ops holds more than {MAX_OPS} operations")));
    }
    let ops: Vec<Op> = ops
        .iter()
        .enumerate()
        .map(|(i, v)| Op::parse(v).map_err(|m| PluginError::invalid_request(format!("ops[{i}]: {m}"))))
        .collect::<Result<_, _>>()?;

    let mut data = call.input.clone();
    match &mut data {
        Value::Object(obj) => apply_all(&ops, obj, None)?,
        Value::Array(items) => {
            for (j, item) in items.iter_mut().enumerate() {
                let Value::Object(obj) = item else {
                    return Err(PluginError::invalid_request(format!("input[{j}] is not an object")));
                };
                apply_all(&ops, obj, Some(j))?;
            }
        }
        _ => {
            return Err(PluginError::invalid_request("input must be an object or an array of objects"));
        }
    }
    Ok(data)
}

fn apply_all(ops: &[Op], obj: &mut Map<String, Value>, item: Option<usize>) -> Result<(), PluginError> {
    for (i, op) in ops.iter().enumerate() {
        op.apply(obj).map_err(|m| {
            let at = item.map(|j| format!(" on input[{j}]")).unwrap_or_default();
            PluginError::invalid_request(format!("ops[{i}] ({}){at}: {m}", op.name()))
        })?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Pick(Vec<String>),
    Drop(Vec<String>),
    Rename { from: String, to: String },
    Set { field: String, value: Value },
    Uppercase(String),
    Lowercase(String),
}

fn string_field(o: &Map<String, Value>, key: &str) -> Result<String, String> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key:?} must be a string")),
        None => Err(format!("{key:?} is required")),
    }
}

fn string_list(o: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match o.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("{key:?} must hold only strings")))
            .collect(),
        Some(_) => Err(format!("{key:?} must be an array of strings")),
        None => Err(format!("{key:?} is required")),
    }
}

impl Op {
    fn parse(v: &Value) -> Result<Op, String> {
        let Value::Object(o) = v else {
            return Err("an operation must be an object".into());
        };
        let op = string_field(o, "op")?;
        Ok(match op.as_str() {
            "pick" => Op::Pick(string_list(o, "fields")?),
            "drop" => Op::Drop(string_list(o, "fields")?),
            "rename" => Op::Rename { from: string_field(o, "from")?, to: string_field(o, "to")? },
            "set" => Op::Set {
                field: string_field(o, "field")?,
                value: o.get("value").cloned().ok_or("\"value\" is required")?,
            },
            "uppercase" => Op::Uppercase(string_field(o, "field")?),
            "lowercase" => Op::Lowercase(string_field(o, "field")?),
            other => return Err(format!("unknown op {other:?}")),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Pick(_) => "pick",
            Op::Drop(_) => "drop",
            Op::Rename { .. } => "rename",
            Op::Set { .. } => "set",
            Op::Uppercase(_) => "uppercase",
            Op::Lowercase(_) => "lowercase",
        }
    }

    fn apply(&self, obj: &mut Map<String, Value>) -> Result<(), String> {
        match self {
            Op::Pick(fields) => obj.retain(|k, _| fields.contains(k)),
            Op::Drop(fields) => obj.retain(|k, _| !fields.contains(k)),
            Op::Rename { from, to } => {
                if let Some(v) = obj.remove(from) {
                    obj.insert(to.clone(), v);
                }
            }
            Op::Set { field, value } => {
                obj.insert(field.clone(), value.clone());
            }
            Op::Uppercase(f) | Op::Lowercase(f) => match obj.get_mut(f) {
                None => {}
                Some(Value::String(s)) => {
                    *s = if matches!(self, Op::Uppercase(_)) { s.to_uppercase() } else { s.to_lowercase() };
                }
                Some(_) => return Err(format!("field {f:?} is not a string")),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn run_ops(input: Value, ops: Value) -> Result<Value, PluginError> {
        let Value::Object(config) = json!({ "ops": ops }) else { unreachable!() };
        transform(&Call { input, config, timeout: Duration::from_secs(1), deadline_bound: false })
    }

    #[test]
    fn manifest_matches_the_binary() {
        let m: Value = serde_json::from_str(include_str!("../plugin.json")).unwrap();
        assert_eq!(m["name"], env!("CARGO_PKG_NAME"));
        assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(m["entrypoints"]["transform"]["timeout_ms"], TIMEOUT_MS);
        assert_eq!(m["entrypoints"]["transform"]["path"], "/v1/entrypoints/transform");
        assert_eq!(m["entrypoints"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn ops_on_object_and_array() {
        let ops = json!([
            {"op": "rename", "from": "n", "to": "name"},
            {"op": "uppercase", "field": "name"},
            {"op": "set", "field": "ok", "value": true},
            {"op": "pick", "fields": ["name", "ok", "id"]},
            {"op": "drop", "fields": ["id"]},
        ]);
        assert_eq!(
            run_ops(json!({"n": "ab", "id": 1, "x": 2}), ops.clone()).unwrap(),
            json!({"name": "AB", "ok": true})
        );
        assert_eq!(
            run_ops(json!([{"n": "a"}, {"m": "b"}]), ops).unwrap(),
            json!([{"name": "A", "ok": true}, {"ok": true}])
        );
        assert_eq!(
            run_ops(json!({"s": "MiX"}), json!([{"op": "lowercase", "field": "s"}])).unwrap(),
            json!({"s": "mix"})
        );
    }

    #[test]
    fn errors_name_the_op_index() {
        let e = run_ops(json!({"a": 1}), json!([{"op": "pick", "fields": ["a"]}, {"op": "nope"}])).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        assert!(e.message.contains("ops[1]"), "{}", e.message);
        let e = run_ops(json!([{"a": "x"}, {"a": 3}]), json!([{"op": "uppercase", "field": "a"}])).unwrap_err();
        assert!(e.message.contains("ops[0]") && e.message.contains("input[1]"), "{}", e.message);
        let e = run_ops(json!({}), json!([{"op": "rename", "from": "a"}])).unwrap_err();
        assert!(e.message.contains("ops[0]") && e.message.contains("\"to\""), "{}", e.message);
        assert!(run_ops(json!(3), json!([])).is_err());
        assert!(run_ops(json!([1]), json!([])).is_err());
        assert!(run_ops(json!({}), json!({"op": "pick"})).is_err());
    }
}
