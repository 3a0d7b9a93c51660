//! The rendered user-data, run by `/bin/sh` with every command it calls replaced by a recording
//! stub (coreutils `mkdir`, `chmod` and `base64` are real), delivers exactly the input values to
//! the instance process, for arbitrary values: quotes, `$(...)`, backticks, newlines,
//! backslashes, non-ASCII. The script may call nothing outside its known set: `PATH` holds only
//! the sandbox.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use molecule_cp::provider::ec2::user_data::{self, quote, Artifact, UserDataSpec, COMMANDS};
use proptest::prelude::*;

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    rec: PathBuf,
}

fn real(cmd: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{cmd} not found"))
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        let rec = root.join("rec");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&rec).unwrap();
        for cmd in ["mkdir", "chmod", "base64"] {
            std::os::unix::fs::symlink(real(cmd), bin.join(cmd)).unwrap();
        }
        let (env, cat) = (real("env"), real("cat"));
        let r = rec.display();
        let (env, cat) = (env.display(), cat.display());
        for cmd in ["systemctl", "docker", "curl"] {
            let mut text = format!("#!/bin/sh\nprintf '%s\\0' \"$@\" >> '{r}/{cmd}.args'\nprintf '\\n' >> '{r}/{cmd}.args'\n");
            if cmd == "docker" {
                text.push_str(&format!(
                    "if [ \"$1\" = run ]; then {env} -0 > '{r}/process.env'; fi\n"
                ));
            }
            if cmd == "curl" {
                text.push_str(&format!(
                    "out=\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then out=\"$2\"; fi; shift; done\n{cat} > \"$out\" <<'STUB'\n#!/bin/sh\nprintf '%s\\0' \"$@\" > '{r}/binary.args'\n{env} -0 > '{r}/process.env'\nSTUB\n"
                ));
            }
            write_exec(&bin.join(cmd), &text);
        }
        Sandbox {
            _dir: dir,
            root,
            bin,
            rec,
        }
    }

    fn sh(&self, script: &Path) -> std::process::Output {
        Command::new("/bin/sh")
            .arg(script)
            .env_clear()
            .env("PATH", &self.bin)
            .current_dir(&self.root)
            .output()
            .unwrap()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.rec.join(name)).unwrap_or_default()
    }
}

fn parse_env0(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let eq = e.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&e[..eq]).into_owned(),
                e[eq + 1..].to_vec(),
            ))
        })
        .collect()
}

/// Renders, runs the script and then its launcher (as systemd would), and returns what the
/// instance process saw in its environment.
fn deliver(env: &BTreeMap<String, String>, artifact: &Artifact) -> BTreeMap<String, Vec<u8>> {
    let sb = Sandbox::new();
    let state = sb.root.join("state");
    let units = sb.root.join("units");
    let script = user_data::render(&UserDataSpec {
        role: "tenant",
        artifact,
        args: &["tenant", "serve", "--listen", "0.0.0.0:8080"],
        env,
        state_dir: state.to_str().unwrap(),
        unit_dir: units.to_str().unwrap(),
    })
    .unwrap();
    let path = sb.root.join("user-data.sh");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("/bin/sh")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "sh -n: {syntax:?}");
    let out = sb.sh(&path);
    assert!(out.status.success(), "user-data failed: {out:?}");

    // The env file is 0600 in a 0700 dir; the unit runs the launcher; systemctl enabled it.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("tenant.env")), 0o600);
    assert_eq!(mode(&state), 0o700);
    let unit = std::fs::read_to_string(units.join("molecule-tenant.service")).unwrap();
    let run = state.join("tenant-run");
    assert!(
        unit.contains(&format!("ExecStart={}\n", run.display())),
        "{unit}"
    );
    let systemctl = String::from_utf8(sb.read("systemctl.args")).unwrap();
    assert!(
        systemctl.contains("enable\0--now\0molecule-tenant.service\0"),
        "{systemctl:?}"
    );
    assert!(
        sb.read("process.env").is_empty(),
        "nothing ran the instance yet"
    );

    let out = sb.sh(&run);
    assert!(out.status.success(), "launcher failed: {out:?}");
    match artifact {
        Artifact::Image(image) => {
            let args = sb.read("docker.args");
            let runs: Vec<&[u8]> = args
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"run\0"))
                .collect();
            assert_eq!(runs.len(), 1);
            let expected_tail = format!("{image}\0tenant\0serve\0--listen\x000.0.0.0:8080\0");
            assert!(
                runs[0].ends_with(expected_tail.as_bytes()),
                "{:?}",
                String::from_utf8_lossy(runs[0])
            );
        }
        Artifact::BinaryUrl(url) => {
            let curl = sb.read("curl.args");
            assert!(curl.ends_with(format!("{url}\0\n").as_bytes()), "{curl:?}");
            assert_eq!(
                sb.read("binary.args"),
                b"tenant\0serve\0--listen\x000.0.0.0:8080\0"
            );
        }
    }
    parse_env0(&sb.read("process.env"))
}

fn check_delivered(env: &BTreeMap<String, String>, artifact: &Artifact) {
    let seen = deliver(env, artifact);
    for (name, value) in env {
        assert_eq!(
            seen.get(name).map(Vec::as_slice),
            Some(value.as_bytes()),
            "value of {name} not delivered byte for byte"
        );
    }
}

const HOSTILE: &[&str] = &[
    "$(touch /tmp/pwned)",
    "`reboot`",
    "it's",
    "'\"'\"'",
    "a\nb\n",
    "\n",
    "back\\slash\\",
    "\\'",
    "${HOME}",
    "{a,b}",
    "\u{a0}nbsp",
    "ünïcödé ✓ 🦀",
    "; rm -rf / #",
    "MOLECULE_DATA",
    "\nMOLECULE_DATA\n",
    "-e",
    "",
    "   ",
    "\t\r",
];

#[test]
fn hostile_values_are_delivered_exactly_for_images_and_binaries() {
    let env: BTreeMap<String, String> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("MV_{i}"), (*v).to_owned()))
        .collect();
    check_delivered(&env, &Artifact::Image("ghcr.io/molecule/tenant:1".into()));
    check_delivered(
        &env,
        &Artifact::BinaryUrl("https://example.com/molecule?x='$(id)'".into()),
    );
}

#[test]
fn the_sandbox_refuses_unknown_commands() {
    // The stubs are exactly the script's known set: anything else would fail to run.
    let mut known: Vec<&str> = COMMANDS.to_vec();
    known.sort();
    let sb = Sandbox::new();
    let mut present: Vec<String> = std::fs::read_dir(&sb.bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(present, known);
    let path = sb.root.join("x.sh");
    std::fs::write(&path, "set -e\nid\n").unwrap();
    assert!(!sb.sh(&path).status.success());
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::sample::select(HOSTILE).prop_map(str::to_owned),
        proptest::collection::vec(proptest::sample::select(HOSTILE), 1..4).prop_map(|v| v.concat()),
    ]
    .prop_map(|s| s.replace('\0', ""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_values_are_delivered_exactly(values in proptest::collection::vec(value(), 1..5)) {
        let env: BTreeMap<String, String> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("MV_{i}"), v))
            .collect();
        check_delivered(&env, &Artifact::Image("img:1".into()));
    }

    #[test]
    fn quoting_round_trips_through_sh(v in value()) {
        let q = quote("V", &v).unwrap();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s' {q}"))
            .env_clear()
            .output()
            .unwrap();
        prop_assert!(out.status.success());
        prop_assert_eq!(out.stdout, v.as_bytes().to_vec());
    }

    #[test]
    fn nul_anywhere_is_rejected(a in any::<String>(), b in any::<String>()) {
        let v = format!("{a}\0{b}");
        prop_assert!(quote("V", &v).is_err());
        let env = BTreeMap::from([("V".to_owned(), v)]);
        let err = user_data::render(&UserDataSpec {
            role: "tenant",
            artifact: &Artifact::Image("img:1".into()),
            args: &[],
            env: &env,
            state_dir: "/var/lib/molecule",
            unit_dir: "/etc/systemd/system",
        })
        .unwrap_err();
        prop_assert_eq!(err, user_data::UserDataError::Nul("V".into()));
    }

    #[test]
    fn names_are_accepted_exactly_when_they_match_the_pattern(name in any::<String>()) {
        let reference = {
            let mut chars = name.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        prop_assert_eq!(user_data::valid_env_name(&name), reference);
        let env = BTreeMap::from([(name.clone(), "v".to_owned())]);
        let rendered = user_data::env_file(&env);
        if !reference {
            prop_assert!(rendered.is_err());
        }
    }
}
