//! Function parameter schemas: the JSON schema a Rust argument type is validated with
//! ([`parameters_schema`]) and the copy of a schema the model reads ([`prompt_schema`]).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

/// The JSON schema of `T` for validating its arguments: draft 2020-12, every subschema inlined
/// (recursive types keep their `$defs`), no `$schema`.
pub fn parameters_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// The schema as the model should read it in the developer message.
///
/// openai-harmony renders parameters as TypeScript-like types and understands plain objects,
/// `properties`/`required`, `description`, `enum`, `oneOf`, `nullable`, `default` and `items`,
/// but not `$ref`, `anyOf`, `const` or `"type": "null"`. So: local `$ref`s are inlined (recursive
/// ones become `any`), `anyOf` becomes `oneOf`, `const` becomes a one-value `enum`, `null` is
/// dropped from optional properties and becomes `nullable` elsewhere, and `title`, `$schema`,
/// `$id`, `$comment` and the root `description` (rendered in a broken place) are removed.
/// Validation always uses the original schema; this copy is only for the prompt.
pub fn prompt_schema(schema: &Value) -> Value {
    let mut definitions = Map::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = schema.get(key) {
            for (name, def) in defs {
                definitions.insert(format!("#/{key}/{name}"), def.clone());
            }
        }
    }
    let mut rendered = schema.clone();
    let mut cleaner = SchemaCleaner {
        definitions: &definitions,
        expanding: Vec::new(),
    };
    cleaner.clean(&mut rendered, true);
    if let Value::Object(root) = &mut rendered {
        root.remove("$defs");
        root.remove("definitions");
        root.remove("description");
    }
    rendered
}

struct SchemaCleaner<'a> {
    definitions: &'a Map<String, Value>,
    expanding: Vec<String>,
}

impl SchemaCleaner<'_> {
    const MAX_DEPTH: usize = 32;

    /// `required`: whether a value must be present here (false for optional properties, where
    /// an explicit `null` says nothing the `?` does not already say).
    fn clean(&mut self, schema: &mut Value, required: bool) {
        let Value::Object(object) = schema else {
            return;
        };
        if let Some(Value::String(reference)) = object.get("$ref").cloned() {
            object.remove("$ref");
            let target = self.definitions.get(&reference).cloned();
            match target {
                Some(Value::Object(target))
                    if !self.expanding.contains(&reference)
                        && self.expanding.len() < Self::MAX_DEPTH =>
                {
                    for (key, value) in target {
                        object.entry(key).or_insert(value);
                    }
                    self.expanding.push(reference);
                    self.clean(schema, required);
                    self.expanding.pop();
                    return;
                }
                // Recursive or unresolvable: an unconstrained value, which harmony shows as `any`.
                _ => {}
            }
        }
        for key in [
            "$schema",
            "$id",
            "$comment",
            "title",
            "$defs",
            "definitions",
        ] {
            object.remove(key);
        }
        if object.get("default").is_some_and(Value::is_null) {
            object.remove("default");
        }
        if let Some(constant) = object.remove("const")
            && !object.contains_key("enum")
        {
            object.insert("enum".into(), Value::Array(vec![constant]));
        }
        if let Some(single) = single_all_of(object) {
            for (key, value) in single {
                object.entry(key).or_insert(value);
            }
        }
        if let Some(any_of) = object.remove("anyOf") {
            if object.contains_key("oneOf") {
                object.insert("anyOf".into(), any_of);
            } else {
                object.insert("oneOf".into(), any_of);
            }
        }
        self.drop_null_type(object, required);
        if self.drop_null_variant(object, required) {
            // The surviving variant was merged in unprocessed (it may be a `$ref`): go again.
            self.clean(schema, required);
            return;
        }

        let required_names: Vec<String> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            for (name, property) in properties.iter_mut() {
                self.clean(property, required_names.contains(name));
            }
        }
        for key in ["patternProperties"] {
            if let Some(Value::Object(map)) = object.get_mut(key) {
                for value in map.values_mut() {
                    self.clean(value, true);
                }
            }
        }
        for key in [
            "additionalProperties",
            "items",
            "contains",
            "not",
            "if",
            "then",
            "else",
            "propertyNames",
        ] {
            if let Some(value) = object.get_mut(key) {
                if let Value::Array(items) = value {
                    items.iter_mut().for_each(|item| self.clean(item, true));
                } else {
                    self.clean(value, true);
                }
            }
        }
        for key in ["oneOf", "anyOf", "allOf", "prefixItems"] {
            if let Some(Value::Array(items)) = object.get_mut(key) {
                items.iter_mut().for_each(|item| self.clean(item, true));
            }
        }
    }

    /// `"type": ["string", "null"]`: `string` for an optional value, else `nullable`.
    fn drop_null_type(&self, object: &mut Map<String, Value>, required: bool) {
        let Some(Value::Array(types)) = object.get("type") else {
            return;
        };
        if !types.iter().any(|t| t == "null") {
            return;
        }
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        match rest.len() {
            0 => return,
            1 => {
                object.insert("type".into(), rest[0].clone());
            }
            _ => {
                object.insert("type".into(), Value::Array(rest));
            }
        }
        if let Some(Value::Array(values)) = object.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
        if required {
            object.insert("nullable".into(), Value::Bool(true));
        }
    }

    /// `oneOf: [X, {"type": "null"}]`: X itself (merged in when alone), `nullable` if required.
    /// Returns whether a lone surviving variant was merged into `object`.
    fn drop_null_variant(&self, object: &mut Map<String, Value>, required: bool) -> bool {
        let Some(Value::Array(variants)) = object.get("oneOf") else {
            return false;
        };
        let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
        if !variants.iter().any(is_null) {
            return false;
        }
        let mut rest: Vec<Value> = variants.iter().filter(|v| !is_null(v)).cloned().collect();
        if rest.is_empty() {
            return false;
        }
        if required {
            object.insert("nullable".into(), Value::Bool(true));
        }
        if rest.len() > 1 {
            object.insert("oneOf".into(), Value::Array(rest));
            return false;
        }
        object.remove("oneOf");
        if let Value::Object(variant) = rest.remove(0) {
            for (key, value) in variant {
                object.entry(key).or_insert(value);
            }
        }
        true
    }
}

fn single_all_of(object: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    match object.get("allOf") {
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_object() => {}
        _ => return None,
    }
    match object.remove("allOf") {
        Some(Value::Array(mut items)) => match items.remove(0) {
            Value::Object(single) => Some(single),
            _ => None,
        },
        _ => None,
    }
}
