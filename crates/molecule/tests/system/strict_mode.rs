//! Production (strict) mode refuses to start without its secrets, naming the missing one; a
//! malformed key is a named error with no panic and no key material in the output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::BIN;

struct Outcome {
    success: bool,
    output: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("MOLECULE_DATA_DIR", dir.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Outcome {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

const KEY: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";
const CP: &[&str] = &["cp", "serve", "--listen", "127.0.0.1:0"];

fn assert_refused(o: &Outcome, names: &str) {
    assert!(!o.success, "must refuse to start: {}", o.output);
    assert!(
        o.output.contains(names),
        "error must name {names}: {}",
        o.output
    );
    assert!(!o.output.contains("panicked"), "no panic: {}", o.output);
}

/// No run of 4 or more characters of `value` appears in `output`.
fn assert_no_material(output: &str, value: &str) {
    let chars: Vec<char> = value.chars().collect();
    for w in chars.windows(4) {
        let piece: String = w.iter().collect();
        assert!(
            !output.contains(&piece),
            "output contains key material {piece:?}: {output}"
        );
    }
}

#[test]
fn strict_mode_names_each_missing_secret() {
    let prod = ("MOLECULE_ENV", "production");
    assert_refused(&run(CP, &[prod]), "SECRETS_ENCRYPTION_KEY");
    assert_refused(
        &run(CP, &[prod, ("SECRETS_ENCRYPTION_KEY", KEY)]),
        "CP_ADMIN_API_TOKEN",
    );
    // Whitespace is unset, not a token that matches an empty header.
    assert_refused(
        &run(
            CP,
            &[
                prod,
                ("SECRETS_ENCRYPTION_KEY", KEY),
                ("CP_ADMIN_API_TOKEN", "   "),
            ],
        ),
        "CP_ADMIN_API_TOKEN",
    );
    assert_refused(
        &run(
            CP,
            &[
                prod,
                ("SECRETS_ENCRYPTION_KEY", KEY),
                ("CP_ADMIN_API_TOKEN", "mol_cpa_x"),
            ],
        ),
        "CP_BASE_URL",
    );
    // A KMS key stands in for the static key: the next missing secret is the admin token.
    let kms = run(
        CP,
        &[("MOLECULE_ENV", "prod"), ("KMS_KEY_ARN", "arn:aws:kms:x")],
    );
    assert_refused(&kms, "CP_ADMIN_API_TOKEN");
    assert!(
        !kms.output.contains("SECRETS_ENCRYPTION_KEY"),
        "{}",
        kms.output
    );
    for o in [
        run(CP, &[prod, ("SECRETS_ENCRYPTION_KEY", KEY)]),
        run(CP, &[prod]),
    ] {
        assert_no_material(&o.output, KEY);
    }
}

#[test]
fn a_malformed_key_is_a_named_error_without_key_material() {
    for bad in [
        "correct-horse-battery-staple-XYZ",
        "abcd",
        "zz".repeat(32).as_str(),
        "QUJDRA==",
    ] {
        for env in [
            &[
                ("MOLECULE_ENV", "production"),
                ("SECRETS_ENCRYPTION_KEY", bad),
            ][..],
            &[("SECRETS_ENCRYPTION_KEY", bad)][..],
        ] {
            let o = run(CP, env);
            assert_refused(&o, "SECRETS_ENCRYPTION_KEY");
            assert_no_material(&o.output, bad);
        }
        let o = run(
            &["tenant", "serve", "--listen", "127.0.0.1:0"],
            &[("SECRETS_ENCRYPTION_KEY", bad)],
        );
        assert_refused(&o, "SECRETS_ENCRYPTION_KEY");
        assert_no_material(&o.output, bad);
    }
}

#[test]
fn a_secret_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "mol_cpa_filetoken").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(CP, &[("CP_ADMIN_API_TOKEN_FILE", path.to_str().unwrap())]);
    assert_refused(&o, "CP_ADMIN_API_TOKEN_FILE");
    assert!(!o.output.contains("filetoken"));
    let o = run(
        CP,
        &[
            ("CP_ADMIN_API_TOKEN_FILE", path.to_str().unwrap()),
            ("CP_ADMIN_API_TOKEN", "x"),
        ],
    );
    assert_refused(&o, "both set");
}

#[test]
fn the_tenant_refuses_production_without_its_key() {
    let o = run(
        &["tenant", "serve", "--listen", "127.0.0.1:0"],
        &[("MOLECULE_ENV", "production"), ("ADMIN_TOKEN", "mol_tat_x")],
    );
    assert_refused(&o, "SECRETS_ENCRYPTION_KEY");
    let o = run(
        &["tenant", "serve", "--listen", "0.0.0.0:0"],
        &[("MOLECULE_ENV", "development")],
    );
    assert_refused(&o, "loopback");
}

#[test]
fn strict_mode_starts_with_everything_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(CP)
        .env_clear()
        .env("MOLECULE_DATA_DIR", dir.path())
        .env("MOLECULE_ENV", "production")
        .env("SECRETS_ENCRYPTION_KEY", KEY)
        .env("CP_ADMIN_API_TOKEN", "mol_cpa_strict-test-token")
        .env("PROVISION_SHARED_SECRET", "mol_pss_strict-test-secret")
        .env("CP_BASE_URL", "https://cp.example.test")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let started = Instant::now();
    // Wait for the database file: the server got past configuration and storage.
    while !dir.path().join("cp.db").exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("control plane listening"), "{log}");
    for secret in [KEY, "strict-test-token", "strict-test-secret"] {
        assert!(!log.contains(secret), "log leaks a secret: {log}");
    }
}
