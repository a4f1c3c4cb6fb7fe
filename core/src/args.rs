//! Invoke arguments in, results out. Arguments are a JSON object (named) or a JSON array
//! (positional, "keyless"); each kind takes them its own way.

use serde_json::Value;
use wasmtime::{Val, ValType};

use crate::error::CallError;

/// argv for a WASI command. An object is one entry, its JSON text (the original engine's
/// convention: its functions check `args.len() == 1`); an array gives one entry per value.
pub fn argv(args: &Value) -> Vec<String> {
    match args {
        Value::Array(items) => items.iter().map(scalar_text).collect(),
        Value::Null => vec!["{}".into()],
        other => vec![other.to_string()],
    }
}

/// The bytes a string-ABI function receives: the args as JSON text.
pub fn json_input(args: &Value) -> String {
    match args {
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// The error for args that are not JSON.
pub fn not_json(e: serde_json::Error) -> CallError {
    CallError::BadArgs(format!("args are not JSON: {e}"))
}

/// A value as argv text: strings as they are, anything else as JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The values of `args`, in order (array order, or an object's document order).
fn ordered_values(args: &Value) -> Vec<&Value> {
    match args {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => map.values().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Typed parameters for a numeric export. `export` and `signature` only shape the messages.
pub fn numeric_params(
    args: &Value,
    params: &[ValType],
    export: &str,
    signature: &str,
) -> Result<Vec<Val>, CallError> {
    let values = ordered_values(args);
    if values.len() != params.len() {
        return Err(CallError::BadArgs(format!(
            "`{export}` {signature} takes {} argument{}, got {}",
            params.len(),
            if params.len() == 1 { "" } else { "s" },
            values.len()
        )));
    }
    values
        .iter()
        .zip(params)
        .enumerate()
        .map(|(i, (v, ty))| {
            parse_number(v, ty).ok_or_else(|| {
                CallError::BadArgs(format!(
                    "argument {} of `{export}` {signature} must be {ty}, got {v}",
                    i + 1
                ))
            })
        })
        .collect()
}

fn parse_number(v: &Value, ty: &ValType) -> Option<Val> {
    let text;
    let s: &str = match v {
        Value::Number(n) => {
            text = n.to_string();
            &text
        }
        Value::String(s) => s.trim(),
        _ => return None,
    };
    Some(match ty {
        ValType::I32 => Val::I32(s.parse::<i32>().ok().or_else(|| {
            // Accept unsigned spellings of 32-bit values (e.g. 4294967295).
            s.parse::<u32>().ok().map(|u| u as i32)
        })?),
        ValType::I64 => Val::I64(
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<u64>().ok().map(|u| u as i64))?,
        ),
        ValType::F32 => Val::F32(s.parse::<f32>().ok()?.to_bits()),
        ValType::F64 => Val::F64(s.parse::<f64>().ok()?.to_bits()),
        _ => return None,
    })
}

/// Results as text: one result as itself (`6`), several as a JSON array (`[2,1]`).
pub fn render_results(results: &[Val]) -> String {
    let text = |v: &Val| match v {
        Val::I32(n) => n.to_string(),
        Val::I64(n) => n.to_string(),
        Val::F32(b) => f32::from_bits(*b).to_string(),
        Val::F64(b) => f64::from_bits(*b).to_string(),
        other => format!("{other:?}"),
    };
    match results {
        [one] => text(one),
        many => format!("[{}]", many.iter().map(text).collect::<Vec<_>>().join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argv_follows_the_original_convention() {
        assert_eq!(argv(&json!({"b": 1, "a": "x"})), vec![r#"{"b":1,"a":"x"}"#]);
        assert_eq!(argv(&json!(["30", 7, true])), vec!["30", "7", "true"]);
        assert_eq!(argv(&Value::Null), vec!["{}"]);
    }

    #[test]
    fn numeric_params_keep_document_order_and_check_types() {
        let p = numeric_params(
            &json!({"b": 18, "a": "12"}),
            &[ValType::I32, ValType::I32],
            "gcd",
            "(i32, i32) -> i32",
        )
        .unwrap();
        assert_eq!(p[0].unwrap_i32(), 18);
        assert_eq!(p[1].unwrap_i32(), 12);
        let err = numeric_params(&json!([1]), &[ValType::I32, ValType::I32], "gcd", "sig");
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("takes 2 arguments, got 1"));
        let err = numeric_params(&json!(["x"]), &[ValType::I64], "f", "sig").unwrap_err();
        assert!(err.to_string().contains("must be i64"), "{err}");
        let err = numeric_params(&json!([1.5]), &[ValType::I32], "f", "sig").unwrap_err();
        assert!(err.to_string().contains("must be i32"), "{err}");
    }

    #[test]
    fn results_render_as_text() {
        assert_eq!(render_results(&[Val::I32(6)]), "6");
        assert_eq!(
            render_results(&[Val::I64(-1), Val::F64(2.5f64.to_bits())]),
            "[-1,2.5]"
        );
    }
}
