//! `cutover.yml` parsing and validation (`cutover_core::config::parse`) on arbitrary text.
//!
//! Besides "never panics", checks what the parser promises: an error answer is never empty,
//! every error has a 1-based place in the text (or none at all), and an accepted configuration
//! can be walked by the helpers callers use on it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cutover_core::config::parse(text, Path::new("/srv/app/cutover.yml")) {
        Ok(config) => {
            let _ = config.summary();
            for (env, _) in &config.environments {
                let _ = config.param_prefix(env);
                let _ = config.accepted_branch(env);
                assert!(config.environment(env.as_str()).is_some());
                for service in config.services.keys() {
                    let _ = config.artifact_name(env, service);
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an error answer without errors");
            for e in &errors {
                assert!((e.line == 0) == (e.column == 0), "half a location: {e:?}");
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                let _ = e.to_string();
            }
        }
    }
});
