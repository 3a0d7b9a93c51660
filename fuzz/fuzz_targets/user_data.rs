//! Fuzzes the EC2 user-data builder: for any env map, rendering either fails with a typed error
//! (bad name, NUL, too large) or yields a script under 16 KB whose env file (base64 in the
//! script) decodes to exactly one `export NAME='quoted'` line per entry, each of which unquotes
//! to the input value. The module is included by path: it depends on std, base64 and thiserror
//! only, so fuzzing does not build the AWS SDK.

#![no_main]

use std::collections::BTreeMap;

use base64::Engine;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/molecule-cp/src/provider/ec2/user_data.rs"]
#[allow(dead_code)]
mod user_data;

use user_data::{render, Artifact, UserDataError, UserDataSpec, MAX_USER_DATA};

/// Inverse of `quote`: `'...'` with `'\''` for each quote.
fn unquote(q: &str) -> Option<String> {
    let inner = q.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("'\\''", "'"))
}

fuzz_target!(|data: &[u8]| {
    // Split the input into name/value pairs on 0xFF bytes (never valid UTF-8 on its own).
    let text = String::from_utf8_lossy(data);
    let mut env = BTreeMap::new();
    let mut parts = text.split('\u{FFFD}');
    while let (Some(n), Some(v)) = (parts.next(), parts.next()) {
        env.insert(n.to_owned(), v.to_owned());
    }
    let artifact = Artifact::Image("img:1".into());
    let spec = UserDataSpec {
        role: "tenant",
        artifact: &artifact,
        args: &["tenant", "serve"],
        env: &env,
        state_dir: "/var/lib/molecule",
        unit_dir: "/etc/systemd/system",
    };
    match render(&spec) {
        Ok(script) => {
            assert!(script.len() <= MAX_USER_DATA);
            let mut lines = script.lines();
            lines
                .by_ref()
                .find(|l| l.ends_with("tenant.env' <<'MOLECULE_DATA'"))
                .expect("env file here-document");
            let b64: String = lines.take_while(|l| *l != "MOLECULE_DATA").collect();
            let file = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("valid base64");
            let file = String::from_utf8(file).expect("utf-8");
            let mut got = BTreeMap::new();
            let mut rest = file.as_str();
            for (name, _) in &env {
                let prefix = format!("export {name}=");
                rest = rest.strip_prefix(&prefix).expect("entries in name order");
                // The quoted word runs to the first `'` followed by a newline that closes it.
                let mut end = None;
                let bytes = rest.as_bytes();
                let mut i = 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if rest[i..].starts_with("'\\''") {
                            i += 4;
                            continue;
                        }
                        end = Some(i + 1);
                        break;
                    }
                    i += 1;
                }
                let end = end.expect("closing quote");
                got.insert(name.clone(), unquote(&rest[..end]).expect("quoted"));
                rest = rest[end..].strip_prefix('\n').expect("one line per entry");
            }
            assert!(rest.is_empty());
            assert_eq!(got, env);
        }
        Err(UserDataError::InvalidName(n)) | Err(UserDataError::ReservedName(n)) => {
            assert!(env.contains_key(&n));
        }
        Err(UserDataError::Nul(n)) => assert!(env[&n].contains('\0')),
        Err(UserDataError::TooLarge { size, limit, .. }) => assert!(size > limit),
        Err(e) => panic!("unexpected error {e}"),
    }
});
