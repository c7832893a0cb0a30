//! Function parameter schemas: the JSON schema a Rust argument type is validated with
//! ([`parameters_schema`]) and the copy of a schema the model reads ([`prompt_schema`]).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use std::collections::HashMap;

use serde_json::{Map, Value};

/// The JSON schema of `T` for validating its arguments: draft 2020-12, no `$schema`. Named types
/// stay in `$defs`, referenced by `$ref`: inlining them would copy a type at every use, so a type
/// used twice per level of nesting would grow the schema exponentially (the prompt's copy is
/// expanded under a budget by [`prompt_schema`]).
pub fn parameters_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// How many bytes of `$defs` (as JSON) one schema may inline into the prompt's copy: far more
/// than any sensible tool needs (a definition of 100 bytes can be used 300 times), far less than
/// the model's context. `$ref`s are what can make a schema of a few hundred bytes expand
/// exponentially; this budget is what keeps that out of every prompt.
pub const MAX_INLINED_BYTES: usize = 32 * 1024;

/// How many `$ref`s deep [`prompt_schema`] inlines at most; deeper ones are shown as `any`.
pub const MAX_REF_DEPTH: usize = 32;

/// The deepest nesting an inlined definition may reach: serde_json's own recursion limit, so the
/// prompt's copy can always be read back (saved conversations, `ossa serve` clients).
const MAX_NESTING: usize = 128;

/// A schema whose `$ref`s expand past [`MAX_INLINED_BYTES`] (or nest deeper than serde_json
/// reads). It still carries a usable copy for the prompt: the schema expanded as many `$ref`s
/// deep as the budget allows, deeper ones shown as `any`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaTooLarge {
    shown: Value,
    ref_depth: usize,
}

impl std::fmt::Display for SchemaTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its parameter schema expands past {} KiB through its `$ref`s; the model is shown ",
            MAX_INLINED_BYTES / 1024
        )?;
        match self.ref_depth {
            0 => write!(f, "every `$ref` as `any`"),
            1 => write!(f, "one level of `$ref`s, deeper ones as `any`"),
            depth => write!(f, "{depth} levels of `$ref`s, deeper ones as `any`"),
        }
    }
}

impl std::error::Error for SchemaTooLarge {}

impl SchemaTooLarge {
    /// The copy the model is shown instead.
    pub fn shown(&self) -> &Value {
        &self.shown
    }

    pub fn into_shown(self) -> Value {
        self.shown
    }

    /// How many `$ref`s deep the shown copy is expanded.
    pub fn ref_depth(&self) -> usize {
        self.ref_depth
    }
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
///
/// Inlining is bounded: a schema whose `$ref`s would expand past [`MAX_INLINED_BYTES`] is
/// [`SchemaTooLarge`], which holds the deepest expansion that fits. The work done is bounded by
/// the budget too, whatever the schema.
pub fn prompt_schema(schema: &Value) -> Result<Value, SchemaTooLarge> {
    let mut definitions = Map::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = schema.get(key) {
            for (name, def) in defs {
                definitions.insert(format!("#/{key}/{name}"), def.clone());
            }
        }
    }
    let sizes: HashMap<&str, usize> = definitions
        .iter()
        .map(|(reference, def)| (reference.as_str(), json_size(def)))
        .collect();
    let expand = |max_ref_depth: usize| {
        let mut rendered = schema.clone();
        let mut cleaner = SchemaCleaner {
            definitions: &definitions,
            sizes: &sizes,
            max_ref_depth,
            expanding: Vec::new(),
            inlined_bytes: 0,
            nesting: 0,
            exceeded: false,
        };
        cleaner.clean(&mut rendered, true);
        if cleaner.exceeded {
            return None;
        }
        if let Value::Object(root) = &mut rendered {
            root.remove("$defs");
            root.remove("definitions");
            root.remove("description");
        }
        Some(rendered)
    };
    if let Some(rendered) = expand(MAX_REF_DEPTH) {
        return Ok(rendered);
    }
    // The deepest expansion that fits: more depth never inlines less, so a binary search finds
    // it. Depth 0 inlines nothing and always fits.
    let (mut fits, mut too_deep) = (0, MAX_REF_DEPTH);
    let mut shown = None;
    while too_deep - fits > 1 {
        let depth = (fits + too_deep) / 2;
        match expand(depth) {
            Some(rendered) => {
                fits = depth;
                shown = Some(rendered);
            }
            None => too_deep = depth,
        }
    }
    let shown = match shown {
        Some(shown) => shown,
        None => expand(fits).unwrap_or_default(),
    };
    Err(SchemaTooLarge {
        shown,
        ref_depth: fits,
    })
}

/// The length of `value` as compact JSON.
fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct SchemaCleaner<'a> {
    definitions: &'a Map<String, Value>,
    /// Each definition's size as JSON, what inlining it costs.
    sizes: &'a HashMap<&'a str, usize>,
    max_ref_depth: usize,
    /// The `$ref`s being inlined, outermost first.
    expanding: Vec<String>,
    inlined_bytes: usize,
    nesting: usize,
    /// Set when the budget ran out: the result is to be thrown away, so the work stops.
    exceeded: bool,
}

impl SchemaCleaner<'_> {
    /// `required`: whether a value must be present here (false for optional properties, where
    /// an explicit `null` says nothing the `?` does not already say).
    fn clean(&mut self, schema: &mut Value, required: bool) {
        if self.exceeded {
            return;
        }
        self.nesting += 1;
        if !self.expanding.is_empty() && self.nesting > MAX_NESTING {
            self.exceeded = true;
        } else {
            self.clean_object(schema, required);
        }
        self.nesting -= 1;
    }

    fn clean_object(&mut self, schema: &mut Value, required: bool) {
        let Value::Object(object) = schema else {
            return;
        };
        if let Some(Value::String(reference)) = object.get("$ref").cloned() {
            object.remove("$ref");
            match self.definitions.get(&reference) {
                Some(Value::Object(target))
                    if !self.expanding.contains(&reference)
                        && self.expanding.len() < self.max_ref_depth =>
                {
                    let size = self.sizes.get(reference.as_str()).copied().unwrap_or(0);
                    self.inlined_bytes = self.inlined_bytes.saturating_add(size);
                    if self.inlined_bytes > MAX_INLINED_BYTES {
                        self.exceeded = true;
                        return;
                    }
                    for (key, value) in target {
                        object.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                    self.expanding.push(reference);
                    self.clean(schema, required);
                    self.expanding.pop();
                    return;
                }
                // Recursive, too deep or unresolvable: an unconstrained value, which harmony
                // shows as `any`.
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
