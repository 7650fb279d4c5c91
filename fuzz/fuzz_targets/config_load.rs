//! The config loader, as `meshgate validate` runs it: YAML text → parse and validate
//! (`meshgate_config::load_str`) → compile into the data plane's form (`meshgate_proxy::compile`,
//! which builds every plugin and the router) → route analysis. Whatever the text, the answer is a
//! config or diagnostics that point into the text; never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if names_special_files(text) {
        return;
    }
    // A relative certificate or secret path resolves beside the config, where nothing is.
    let path = Path::new("/nonexistent/meshgate-fuzz/gateway.yaml");
    let doc = match meshgate_config::load_str(path, text) {
        Ok(doc) => doc,
        Err(errors) => return check_diagnostics(&errors, text),
    };
    static REGISTRY: OnceLock<meshgate_core::Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(meshgate_plugins::builtin);
    let targets = meshgate_balance::TargetRegistry::new();
    // Some plugins (JWKS, Redis) make their clients at build time, inside a runtime.
    let compiled = meshgate_fuzz::block_on(async { meshgate_proxy::compile(&doc, registry, &targets) });
    match compiled {
        Ok(snapshot) => {
            for finding in snapshot.route_findings() {
                assert!(!finding.to_string().is_empty());
            }
        }
        Err(errors) => check_diagnostics(&errors, text),
    }
});

/// Every diagnostic says something, and a line it names is in the text.
fn check_diagnostics(errors: &meshgate_config::ConfigErrors, text: &str) {
    assert!(!errors.0.is_empty(), "an error without a diagnostic");
    // Lines end as in YAML: at `\n`, `\r\n` or a lone `\r`.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
    for e in &errors.0 {
        assert!(!e.message.is_empty(), "a diagnostic without a message: {e:?}");
        if let Some(line) = e.line {
            assert!((1..=lines).contains(&line), "{e:?} points past the text's {lines} lines");
        }
        let _ = e.to_string();
    }
}

/// A config may name files (certificates, secrets); reading `/dev/zero` or a FIFO would never end,
/// which is the operator's own doing, not a bug the fuzzer should report. A YAML escape could
/// spell such a path too (`"\x2fdev"`), so inputs with backslashes are left out as well.
fn names_special_files(text: &str) -> bool {
    text.contains('\\') || ["/dev", "/proc", "/sys"].iter().any(|s| text.contains(s))
}
