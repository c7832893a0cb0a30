//! Tool namespaces as the model reads them: JSON-Schema parameters rendered as TypeScript-like
//! declarations, character for character as openai-harmony 0.0.8 does.
//!
//! The reference's quirks are kept on purpose (the model was trained on its output):
//! - a nested object's `description` is written as `// text` on the line of the property name
//!   (`passenger:     // Who is flying\n{`), so a described nested object also repeats it;
//! - multi-line descriptions of properties are written after one `// ` only;
//! - a string `default` is quoted unless the schema has an `enum`; other defaults are JSON;
//!   inside a top-level `oneOf`, a string default of an enum variant is JSON (quoted);
//! - `integer` becomes `number`; `type: [..]` becomes a union; `items` missing gives
//!   `Array<any>`; unknown or missing types give `any`;
//! - `oneOf` properties list each variant on its own ` | ` line and end with a lone `,` line;
//!   `nullable: true` appends `| null`;
//! - nested objects are indented four spaces per level, but their closing brace keeps the
//!   property's indent plus four (`    },`).

use serde_json::Value;

use super::chat::{ToolNamespaceConfig, ToolNamespaces};

fn str_field<'a>(schema: &'a Value, key: &str) -> Option<&'a str> {
    schema.get(key).and_then(Value::as_str)
}

/// The strings of the array `schema[key]` (none when it is not an array).
fn str_items<'a>(schema: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    schema
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn has_enum(schema: &Value) -> bool {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|values| !values.is_empty())
}

fn is_nullable(schema: &Value) -> bool {
    schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn with_null(mut rendered: String, schema: &Value) -> String {
    if is_nullable(schema) && !rendered.contains("null") {
        rendered.push_str(" | null");
    }
    rendered
}

/// How a `default` reads in a comment. `enum_unquoted`: a string default of an enum schema is
/// written bare (`default: economy`) rather than as JSON (`default: "economy"`).
fn default_comment(default: &Value, schema: &Value, enum_unquoted: bool) -> String {
    match default.as_str() {
        Some(text) if !has_enum(schema) => format!("default: \"{text}\""),
        Some(text) if enum_unquoted => format!("default: {text}"),
        _ => format!("default: {default}"),
    }
}

/// One schema as a TypeScript-like type; `indent` prefixes the lines of object members.
pub(crate) fn schema_to_typescript(schema: &Value, indent: &str) -> String {
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        return one_of_union(variants, indent);
    }
    // A list of types: their union.
    let names: Vec<&str> = str_items(schema, "type")
        .map(|name| if name == "integer" { "number" } else { name })
        .collect();
    if !names.is_empty() {
        return names.join(" | ");
    }
    match str_field(schema, "type") {
        Some("object") => object_type(schema, indent),
        Some("string") => {
            let values: Vec<String> = str_items(schema, "enum")
                .map(|v| format!("\"{v}\""))
                .collect();
            if values.is_empty() {
                "string".to_string()
            } else {
                values.join(" | ")
            }
        }
        Some("number" | "integer") => "number".to_string(),
        Some("boolean") => "boolean".to_string(),
        Some("array") => match schema.get("items") {
            Some(items) => format!("{}[]", schema_to_typescript(items, indent)),
            None => "Array<any>".to_string(),
        },
        _ => "any".to_string(),
    }
}

/// A schema that is a `oneOf` at its top: each variant on a new ` | ` line.
fn one_of_union(variants: &[Value], indent: &str) -> String {
    let mut out = String::new();
    let inner = format!("{indent}   ");
    for variant in variants {
        out.push('\n');
        out.push_str(indent);
        out.push_str(" | ");
        out.push_str(&with_null(schema_to_typescript(variant, &inner), variant));
        push_variant_comment(&mut out, variant, str_field(variant, "description"), false);
    }
    out
}

/// A union variant's trailing ` // description default` comment, when it has either.
fn push_variant_comment(
    out: &mut String,
    variant: &Value,
    description: Option<&str>,
    enum_unquoted: bool,
) {
    let default = variant
        .get("default")
        .map(|default| default_comment(default, variant, enum_unquoted));
    let comments: Vec<String> = description
        .map(str::to_string)
        .into_iter()
        .chain(default)
        .collect();
    if !comments.is_empty() {
        out.push_str(" // ");
        out.push_str(&comments.join(" "));
    }
}

fn object_type(schema: &Value, indent: &str) -> String {
    let mut out = String::new();
    if let Some(description) = str_field(schema, "description") {
        out.push_str(&format!("{indent}// {description}\n"));
    }
    out.push_str("{\n");
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = str_items(schema, "required").collect();
        for (name, property) in properties {
            let optional = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            if let Some(title) = str_field(property, "title") {
                out.push_str(&format!("{indent}// {title}\n{indent}//\n"));
            }
            let one_of = property.get("oneOf");
            if one_of.is_none()
                && let Some(description) = str_field(property, "description")
            {
                out.push_str(&format!("{indent}// {description}\n"));
            }
            if let Some(examples) = property.get("examples").and_then(Value::as_array)
                && !examples.is_empty()
            {
                out.push_str(&format!("{indent}// Examples:\n"));
                for example in examples.iter().filter_map(Value::as_str) {
                    out.push_str(&format!("{indent}// - \"{example}\"\n"));
                }
            }
            if let Some(variants) = one_of.and_then(Value::as_array) {
                one_of_property(&mut out, name, optional, property, variants, indent);
                continue;
            }
            let member = with_null(
                schema_to_typescript(property, &format!("{indent}    ")),
                property,
            );
            out.push_str(&format!("{indent}{name}{optional}: {member},"));
            if one_of.is_none()
                && let Some(default) = property.get("default")
            {
                out.push_str(" // ");
                out.push_str(&default_comment(default, property, true));
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("{indent}}}"));
    out
}

fn one_of_property(
    out: &mut String,
    name: &str,
    optional: &str,
    property: &Value,
    variants: &[Value],
    indent: &str,
) {
    let property_description = str_field(property, "description");
    let first_variant_repeats_it = property_description.is_some()
        && variants.first().and_then(|v| str_field(v, "description")) == property_description;
    let mut described_above = false;
    if !first_variant_repeats_it && let Some(description) = property_description {
        out.push_str(&format!("{indent}// {description}\n"));
        described_above = true;
    }
    if let Some(default) = property.get("default") {
        out.push_str(&format!(
            "{indent}// {}\n",
            default_comment(default, property, true)
        ));
    }
    out.push_str(&format!("{indent}{name}{optional}:\n"));
    let inner = format!("{indent}   ");
    for (index, variant) in variants.iter().enumerate() {
        out.push_str(&format!("{indent} | "));
        out.push_str(&with_null(schema_to_typescript(variant, &inner), variant));
        let description = str_field(variant, "description")
            .filter(|&d| !(index == 0 && described_above) && Some(d) != property_description);
        push_variant_comment(out, variant, description, true);
        out.push('\n');
    }
    out.push_str(&format!("{indent},\n"));
}

/// The `# Tools` section of a system or developer message: namespaces sorted by name
/// (openai-harmony renders from a `BTreeMap`, whatever order the conversation holds them in).
pub(crate) fn tools_section(namespaces: &ToolNamespaces) -> String {
    let mut sorted: Vec<(&String, &ToolNamespaceConfig)> = namespaces.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut sections = vec!["# Tools".to_string()];
    for (_, namespace) in sorted {
        let has_tools = !namespace.tools.is_empty();
        let mut lines = vec![format!("## {}\n", namespace.name)];
        if let Some(description) = &namespace.description {
            for line in description.lines() {
                lines.push(if has_tools {
                    format!("// {line}")
                } else {
                    line.to_string()
                });
            }
        }
        if has_tools {
            lines.push(format!("namespace {} {{\n", namespace.name));
            for tool in &namespace.tools {
                for line in tool.description.lines() {
                    lines.push(format!("// {line}"));
                }
                match &tool.parameters {
                    Some(parameters) => lines.push(format!(
                        "type {} = (_: {}) => any;\n",
                        tool.name,
                        schema_to_typescript(parameters, "")
                    )),
                    None => lines.push(format!("type {} = () => any;\n", tool.name)),
                }
            }
            lines.push(format!("}} // namespace {}", namespace.name));
        }
        sections.push(lines.join("\n"));
    }
    sections.join("\n\n")
}
