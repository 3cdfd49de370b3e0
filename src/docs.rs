//! The configuration reference, generated from the config types' doc comments (through
//! `schemars`): `logferry config-docs > docs/configuration.md`. A test fails when the
//! committed file is stale, so the types stay the one source.

use serde_json::Value;

use crate::config::{InputCommon, OutputCommon, TopLevelDoc};
use crate::processors::ProcessorConfig;

fn schema_value<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    if let Some(r) = v.get("$ref").and_then(Value::as_str)
        && let Some(name) = r.strip_prefix("#/$defs/")
        && let Some(def) = root.get("$defs").and_then(|d| d.get(name))
    {
        return resolve(root, def);
    }
    // `Option<T>` is `anyOf: [T, null]` or `oneOf`.
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(items) = v.get(key).and_then(Value::as_array) {
            let non_null: Vec<&Value> = items
                .iter()
                .filter(|i| i.get("type") != Some(&Value::String("null".into())))
                .collect();
            if non_null.len() == 1 {
                return resolve(root, non_null[0]);
            }
        }
    }
    v
}

fn type_name(root: &Value, v: &Value) -> String {
    let v = resolve(root, v);
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(one) = v.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = one
            .iter()
            .filter_map(|o| {
                let o = resolve(root, o);
                o.get("const")
                    .and_then(Value::as_str)
                    .map(|s| format!("`{s}`"))
                    .or_else(|| {
                        o.get("enum")
                            .and_then(Value::as_array)
                            .and_then(|e| e.first())
                            .and_then(Value::as_str)
                            .map(|s| format!("`{s}`"))
                    })
                    .or_else(|| {
                        o.get("required")
                            .and_then(Value::as_array)
                            .and_then(|r| r.first())
                            .and_then(Value::as_str)
                            .map(|s| format!("`{s}: {{...}}`"))
                    })
                    .or_else(|| {
                        o.get("properties")
                            .and_then(|p| p.get("type"))
                            .and_then(|t| t.get("const"))
                            .and_then(Value::as_str)
                            .map(|s| format!("`type: {s}`"))
                    })
            })
            .collect();
        if !names.is_empty() {
            return names.join(" \\| ");
        }
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = v
                .get("items")
                .map(|i| type_name(root, i))
                .unwrap_or_else(|| "any".into());
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" && v.get("properties").is_none() => {
            "mapping".into()
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn describe(v: &Value) -> String {
    v.get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('\n', " ")
}

fn render_object(out: &mut String, root: &Value, obj: &Value, prefix: &str, depth: usize) {
    let obj = resolve(root, obj);
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| key | type | required | description |\n| --- | --- | --- | --- |\n");
    let mut nested = Vec::new();
    for (k, v) in props {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let mut desc = describe(v);
        let rv = resolve(root, v);
        if desc.is_empty() {
            desc = describe(rv);
        }
        if let Some(d) = v.get("default") {
            desc.push_str(&format!(" Default: `{d}`."));
        }
        out.push_str(&format!(
            "| `{key}` | {} | {} | {} |\n",
            type_name(root, v),
            if required.contains(&k.as_str()) {
                "yes"
            } else {
                ""
            },
            desc.trim()
        ));
        if rv.get("properties").is_some() && depth < 4 {
            nested.push((key, rv.clone()));
        }
    }
    out.push('\n');
    for (key, v) in nested {
        out.push_str(&format!("{} `{key}`\n\n", "#".repeat((depth + 3).min(6))));
        let d = describe(&v);
        if !d.is_empty() {
            out.push_str(&format!("{d}\n\n"));
        }
        render_object(out, root, &v, &key, depth + 1);
    }
}

fn section(out: &mut String, title: &str, intro: &str, schema: Value) {
    out.push_str(&format!("## {title}\n\n"));
    if !intro.is_empty() {
        out.push_str(intro);
        out.push_str("\n\n");
    }
    render_object(out, &schema, &schema, "", 0);
}

/// The whole `docs/configuration.md`.
pub fn configuration_md() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration types by `logferry config-docs`; do not edit by hand.\n\
         `${VAR}` and `${VAR:-default}` are expanded from the environment anywhere in the file.\n\
         Durations are humantime (`250ms`, `5s`, `1h`); sizes accept `KiB`, `MiB`, `GiB` (and\n\
         decimal `KB`, `MB`, `GB`). Unknown keys are errors. See `agent.yaml.example`.\n\n",
    );
    section(&mut out, "Top level", "", schema_value::<TopLevelDoc>());
    section(
        &mut out,
        "Inputs: keys of every input",
        "",
        schema_value::<InputCommon>(),
    );
    for r in crate::inputs::REGISTRY {
        section(
            &mut out,
            &format!("Input `type: {}`", r.name),
            "",
            (r.schema)().to_value(),
        );
    }
    out.push_str("## Processors\n\nEach entry of `processors:` is a mapping with one key, the processor's name.\n\n");
    let procs = schema_value::<ProcessorConfig>();
    if let Some(one) = procs.get("oneOf").and_then(Value::as_array) {
        for p in one {
            let Some(name) = p
                .get("required")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .and_then(Value::as_str)
            else {
                continue;
            };
            out.push_str(&format!("### `{name}`\n\n"));
            let d = describe(p);
            if !d.is_empty() {
                out.push_str(&format!("{d}\n\n"));
            }
            if let Some(inner) = p.get("properties").and_then(|pp| pp.get(name)) {
                render_object(&mut out, &procs, inner, "", 1);
            }
        }
    }
    section(
        &mut out,
        "Outputs: keys of every output",
        "",
        schema_value::<OutputCommon>(),
    );
    for r in crate::outputs::REGISTRY {
        section(
            &mut out,
            &format!("Output `type: {}`", r.name),
            "",
            (r.schema)().to_value(),
        );
    }
    out
}
