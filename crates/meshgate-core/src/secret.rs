//! Secrets in plugin and credential settings: written inline, or referenced so that the config
//! file can be shared without them.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// `"value"`, `{env: NAME}` (an environment variable) or `{file: path}` (a file's contents without
/// its trailing newline; relative paths are from the config file's directory).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The secret itself, in the config file.
    Inline(String),
    /// Read from an environment variable when the config is loaded.
    Env {
        /// The variable's name.
        env: String,
    },
    /// Read from a file when the config is loaded.
    File {
        /// The file's path.
        file: std::path::PathBuf,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never print an inline secret, even in debug output.
            Secret::Inline(_) => f.write_str("Secret(<inline>)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

impl Secret {
    /// The secret's value. Errors name the variable or file, never the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<String, String> {
        let value = match self {
            Secret::Inline(v) => v.clone(),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set (or not UTF-8)"))?
            }
            Secret::File { file } => {
                let path = base_dir.join(file);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                text.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        if value.is_empty() {
            return Err("the secret is empty".to_owned());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml_json: &str) -> Secret {
        serde_json::from_str(yaml_json).unwrap()
    }

    #[test]
    fn inline_env_and_file() {
        let dir = std::env::temp_dir().join(format!("mg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), "from-file\n").unwrap();
        assert_eq!(parse(r#""abc""#).resolve(&dir).unwrap(), "abc");
        assert_eq!(parse(r#"{"file":"k"}"#).resolve(&dir).unwrap(), "from-file");
        // PATH is set in any test environment; an unset name must say which.
        assert!(!parse(r#"{"env":"PATH"}"#).resolve(&dir).unwrap().is_empty());
        let err = parse(r#"{"env":"MESHGATE_SURELY_UNSET_VAR"}"#).resolve(&dir).unwrap_err();
        assert!(err.contains("MESHGATE_SURELY_UNSET_VAR"), "{err}");
        assert!(parse(r#"{"file":"missing"}"#).resolve(&dir).unwrap_err().contains("missing"));
        assert_eq!(format!("{:?}", parse(r#""hunter2""#)), "Secret(<inline>)");
    }
}
