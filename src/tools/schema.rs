//! Checks a value against the JSON Schema subset the tools' specs use
//! (`type`, `properties`, `required`, `additionalProperties: false`, `enum`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `items`), so arguments an
//! approver edits are held to the same shape the model was given.

use serde_json::Value;

/// `Ok` when `value` fits `schema`; otherwise a sentence naming the first
/// field that does not.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "the arguments")
}

fn check(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let fits = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => true,
        };
        if !fits {
            return Err(format!("{at} must be of type {expected}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{at} must be one of {}", names.join(", ")));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{at} must be at least {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{at} must be at most {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            return Err(format!("{at} must have at least {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            return Err(format!("{at} must have at most {max} characters"));
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at} must have the field `{name}`"));
                }
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check(property, item, &format!("field `{name}`"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "{at} have an unknown field `{name}`; the fields are: {}",
                        known.join(", ")
                    ));
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shell_schema_holds_edited_arguments_to_its_shape() {
        let schema = (*crate::tools::spec("shell").unwrap().parameters).clone();
        assert!(validate(&schema, &json!({"command": "ls"})).is_ok());
        assert!(validate(&schema, &json!({"command": "ls", "timeout_secs": 5})).is_ok());
        for bad in [
            json!({}),
            json!({"command": 1}),
            json!({"command": ""}),
            json!({"command": "ls", "timeout_secs": 0}),
            json!({"command": "ls", "timeout_secs": 1.5}),
            json!({"command": "ls", "extra": true}),
            json!("ls"),
        ] {
            assert!(validate(&schema, &bad).is_err(), "{bad}");
        }
        let error = validate(&schema, &json!({"command": "ls", "sudo": true})).unwrap_err();
        assert!(error.contains("`sudo`"), "{error}");
    }

    #[test]
    fn enums_and_nested_items_are_checked() {
        let schema = json!({"type": "object", "properties": {
            "agent": {"enum": ["coding", "log-analyzer"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}
        }});
        assert!(validate(&schema, &json!({"agent": "coding", "tags": ["a"]})).is_ok());
        assert!(validate(&schema, &json!({"agent": "orchestrator"})).is_err());
        assert!(validate(&schema, &json!({"tags": ["long"]})).is_err());
    }
}
