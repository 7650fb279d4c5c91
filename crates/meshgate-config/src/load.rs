//! Reading a config file: YAML syntax and types first, then cross-references.

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::within;
use crate::model::Config;
use crate::source::Source;
use crate::validate::validate;
use std::path::Path;

/// A parsed, validated config and the text it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// The configuration.
    pub config: Config,
    /// Where it came from, for locating errors found by later stages.
    pub source: Source,
}

/// Reads, parses and validates a config file.
pub fn load_file(path: &Path) -> Result<Document, ConfigErrors> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigErrors::file(path, format!("cannot read config file: {e}")))?;
    load_str(path, &text)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn load_str(path: &Path, text: &str) -> Result<Document, ConfigErrors> {
    let source = Source::new(path, text);
    let config = parse(&source).map_err(|e| ConfigErrors(vec![e]))?;
    let errors = validate(&config, &source);
    if errors.is_empty() { Ok(Document { config, source }) } else { Err(ConfigErrors(errors)) }
}

fn parse(source: &Source) -> Result<Config, ConfigError> {
    if source.text().trim().is_empty() {
        return Err(ConfigError {
            file: source.path().to_owned(),
            line: None,
            column: None,
            field: String::new(),
            message: "the config file is empty".into(),
        });
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(source.text(), options, |de| {
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        // Errors at the end of a text without a final newline come a line after the last one.
        let at = e.location().filter(|l| l.line() > 0).map(|l| within(source.text(), (l.line(), l.column())));
        ConfigError {
            file: source.path().to_owned(),
            line: at.map(|(line, _)| line),
            column: at.map(|(_, column)| column),
            field: if field == "." { String::new() } else { field },
            message: bare_message(&e.without_snippet().to_string()),
        }
    })
}

/// serde-saphyr prefixes messages with `error: line L column C: ` and some messages end with
/// ` at line L, column C`; the location is reported in our own format, so only the reason is kept.
fn bare_message(rendered: &str) -> String {
    let s = rendered.strip_prefix("error: ").unwrap_or(rendered);
    let s = match s.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest),
        None => s,
    };
    let s = s.lines().next().unwrap_or(s).trim();
    in_user_terms(strip_location_suffix(s))
}

/// The parser names Rust types (`invalid u64`); users wrote YAML and want to know what to write.
fn in_user_terms(message: &str) -> String {
    match message.strip_prefix("invalid ") {
        Some("u8" | "u16" | "u32" | "u64" | "usize") => "expected a whole number, 0 or more".to_owned(),
        Some("i8" | "i16" | "i32" | "i64" | "isize") => "expected a whole number, e.g. 10 or -5".to_owned(),
        Some("f32" | "f64") => "expected a number".to_owned(),
        _ => message.to_owned(),
    }
}

/// `reason at line 7, column 5` → `reason`.
fn strip_location_suffix(s: &str) -> &str {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    match s.rsplit_once(" at line ") {
        Some((reason, at)) if at.split_once(", column ").is_some_and(|(l, c)| digits(l) && digits(c)) => reason,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_no_second_location() {
        let text =
            "listeners: [{name: a, address: \"127.0.0.1:1\"}]\nroutes: [{name: r, service: s, priority: high}]\n";
        let errors = load_str(Path::new("c.yaml"), text).unwrap_err();
        let e = &errors.0[0];
        assert_eq!((e.line, e.field.as_str()), (Some(2), "routes[0].priority"));
        assert!(!e.message.contains(" at line "), "{}", e.message);
        assert_eq!(strip_location_suffix("bad at line 7, column 5"), "bad");
        assert_eq!(strip_location_suffix("look at line 7 here"), "look at line 7 here");
        assert_eq!(e.message, "expected a whole number, e.g. 10 or -5");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/config_load.rs): a directive line without a final
    /// newline was reported on line 2 of a one-line file.
    #[test]
    fn errors_point_into_the_text() {
        for text in ["%YAML 1.2", "%FOO bar: [", "listeners: [", "a: b\r%X"] {
            let errors = load_str(Path::new("c.yaml"), text).unwrap_err();
            let lines = text.split(['\n', '\r']).count() as u64;
            for e in &errors.0 {
                assert!(e.line.is_some_and(|l| (1..=lines).contains(&l)), "{text:?}: {e:?}");
            }
        }
    }
}
