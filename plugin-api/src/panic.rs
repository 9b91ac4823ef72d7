//! Panics inside a plugin: [`guard`] turns them into [`ErrorKind::Panic`] errors carrying the
//! message and the location, and the hook installed when the host loads the library keeps the
//! plugin's copy of std from printing them to the host's standard error (the host logs the error).
//!
//! Each plugin library links its own std with its own panic hook, so the hook installed here sees
//! only panics raised by this library's code, never the host's.

use std::{cell::RefCell, sync::Once};

use crate::types::{ErrorKind, PluginError};

thread_local! {
    /// Set while this thread runs inside [`guard`]: the hook records the panic here instead of
    /// printing it.
    static CAPTURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the capturing hook into this library's std, once. Panics outside [`guard`] (a thread
/// the plugin started, say) still reach the previous hook.
pub fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
                Some(slot) => {
                    let location = info
                        .location()
                        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                        .unwrap_or_default();
                    *slot = Some(format!("{}{location}", payload_text(info.payload())));
                    true
                }
                None => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panic`] error whose message is
/// `panicked: MESSAGE at FILE:LINE:COL` (the location when the hook is installed).
///
/// Every entry point that [`crate::export_plugin!`] generates goes through this function, inside
/// the plugin.
pub fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    let outer = CAPTURE.with(|c| c.borrow_mut().replace(None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let captured = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    match result {
        Ok(result) => result,
        Err(payload) => {
            let message = captured
                .flatten()
                .unwrap_or_else(|| payload_text(payload.as_ref()));
            Err(PluginError::new(
                ErrorKind::Panic,
                format!("panicked: {message}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_location() {
        install_hook();
        let e = guard::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(
            e.message.starts_with("panicked: boom 7 at "),
            "{}",
            e.message
        );
        assert!(e.message.contains("panic.rs:"), "{}", e.message);
        // Nested guards restore the outer capture.
        let outer = guard(|| {
            let inner = guard::<()>(|| panic!("inner")).unwrap_err();
            assert!(inner.message.starts_with("panicked: inner"));
            Ok::<_, PluginError>(1)
        });
        assert_eq!(outer, Ok(1));
    }
}
