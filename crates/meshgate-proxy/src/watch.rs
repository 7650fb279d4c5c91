//! Reloading when the config file changes. Editors and config-management tools often replace
//! the file (write a new one, rename it over the old), so the directory is watched, not the file.

use crate::Gateway;
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// Changes arriving within this window are one reload: a save is often several events.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts the watcher thread; it ends when the gateway is dropped.
pub fn spawn(gateway: Arc<Gateway>) -> Result<(), String> {
    let path = gateway.config_path().to_owned();
    let abs = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = abs.parent().map(|p| p.to_owned()).ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    let name = abs.file_name().map(|n| n.to_owned()).ok_or_else(|| format!("{}: not a file", path.display()))?;
    let (tx, rx) = mpsc::channel();
    let changed_meanwhile = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(|p| p.file_name() == Some(&name))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    // An edit between loading the config and watching it would otherwise go unseen.
    if gateway.file_changed() {
        let _ = changed_meanwhile.send(());
    }
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    std::thread::Builder::new()
        .name("meshgate-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            while rx.recv().is_ok() {
                std::thread::sleep(DEBOUNCE);
                while rx.try_recv().is_ok() {}
                let Some(gateway) = weak.upgrade() else { break };
                gateway.reload_and_log();
            }
        })
        .map_err(|e| format!("cannot start watcher thread: {e}"))?;
    Ok(())
}
