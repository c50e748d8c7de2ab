//! The operator's shell commands (`maskrelay store …`, `maskrelay thread …`) run as the real
//! binary against a real SQLite file: the same checks and the same JSON as the API.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

struct Shell {
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Shell {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("maskrelay.toml");
        let key = maskrelay::store::Vault::generate_key();
        std::fs::write(
            &config,
            format!(
                "[relay]\ndomain = \"relay.test\"\n[database]\nurl = \"sqlite://{}\"\n[privacy]\nkeys = [\"{key}\"]\n",
                dir.path().join("relay.db").display()
            ),
        )
        .unwrap();
        Self { config, _dir: dir }
    }

    /// `maskrelay --config … ARGS`, not started.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_maskrelay"));
        // Only this config: the test runner's own MASKRELAY_* switches are not config.
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("MASKRELAY_")) {
            cmd.env_remove(name);
        }
        cmd.arg("--config").arg(&self.config).args(args);
        cmd
    }

    /// Runs `maskrelay --config … ARGS`: (succeeded, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    /// Runs a command that must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.run(args);
        assert!(ok, "{args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Runs a command that must fail; returns what it said.
    fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(!ok, "{args:?} should fail: {out}");
        err
    }
}

fn data(v: &Value) -> &Vec<Value> {
    v["data"].as_array().expect("a page: {\"data\": […], \"next\": …}")
}

#[test]
fn store_and_thread_commands_check_like_the_api_and_page_like_it() {
    let sh = Shell::new();
    assert!(Path::new(&sh.config).exists());
    let add = ["store", "add", "--id", "acme", "--name", "Acme"];
    let err = sh.fails(&[&add[..], &["--contact", "alias@relay.test"]].concat());
    assert!(err.contains("contact:") && err.contains("relay domain"), "{err}");
    let err =
        sh.fails(&[&add[..], &["--contact", "support@acme.example", "--sender", "@relay.test"]].concat());
    assert!(err.contains("senders:"), "{err}");
    sh.json(&[&add[..], &["--contact", "support@acme.example", "--sender", "orders@acme.example"]].concat());
    sh.json(&["store", "add", "--id", "beta", "--name", "Beta", "--contact", "c@beta.example"]);
    let stores = sh.json(&["store", "list", "--limit", "1"]);
    assert_eq!((data(&stores).len(), stores["next"].is_string()), (1, true), "{stores}");

    let mut ids = Vec::new();
    for (order, email) in
        [("o-1", "jane@shopper.example"), ("o-2", "jane@shopper.example"), ("o-3", "bob@x.example")]
    {
        let t = sh.json(&["thread", "create", "--store", "acme", "--order", order, "--email", email]);
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let first = sh.json(&["thread", "list", "--store", "acme", "--limit", "2"]);
    assert_eq!(data(&first).len(), 2, "{first}");
    let next = first["next"].as_str().expect("a second page");
    let second = sh.json(&["thread", "list", "--store", "acme", "--limit", "2", "--after", next]);
    assert_eq!((data(&second).len(), &second["next"]), (1, &Value::Null), "{second}");
    let jane = sh.json(&["thread", "list", "--email", "JANE@shopper.example"]);
    assert_eq!(data(&jane).len(), 2, "{jane}");
    assert!(!jane.to_string().contains("jane@"), "no address in the listing: {jane}");

    let paused = sh.json(&["thread", "disable", &ids[0]]);
    assert_eq!(paused["status"], "disabled");
    let listed = sh.json(&["thread", "list", "--status", "disabled"]);
    assert_eq!(
        data(&listed).iter().map(|t| t["id"].as_str().unwrap()).collect::<Vec<_>>(),
        [ids[0].as_str()]
    );
    assert_eq!(sh.json(&["thread", "enable", &ids[0]])["status"], "active");
    assert_eq!(sh.json(&["thread", "list", "--status", "disabled"])["data"], Value::Array(vec![]));

    assert!(sh.fails(&["thread", "disable", "thr_nosuchthread"]).contains("thread not found"));
    assert!(sh.fails(&["thread", "enable", "thr_nosuchthread"]).contains("thread not found"));
    assert!(sh.fails(&["thread", "list", "--status", "paused"]).contains("status:"));
    assert!(sh.fails(&["thread", "list", "--limit", "0"]).contains("limit:"));
}

/// `thread create` refuses a name that shows the shopper's address, as the API does.
#[test]
fn thread_create_refuses_a_name_that_shows_the_address() {
    let sh = Shell::new();
    sh.json(&["store", "add", "--id", "acme", "--name", "Acme", "--contact", "support@acme.example"]);
    let create = ["thread", "create", "--store", "acme", "--order", "o-1", "--email", "jane@shopper.example"];
    let err = sh.fails(&[&create[..], &["--name", "Jane ＪＡＮＥ＠shopper.example"]].concat());
    assert!(err.contains("shopper.name:"), "{err}");
    let t = sh.json(&[&create[..], &["--name", "Jane"]].concat());
    assert!(t["id"].is_string(), "{t}");
}

/// A reader that goes away (`maskrelay thread list | grep -q …`, `| head`) ends the command
/// quietly: exit 0, nothing on stderr. `println!` panicked there ("failed printing to
/// stdout: Broken pipe") and failed the shell pipeline.
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let sh = Shell::new();
    sh.json(&["store", "add", "--id", "acme", "--name", "Acme", "--contact", "support@acme.example"]);
    for args in [&["thread", "list"][..], &["store", "list"], &["keys", "generate"]] {
        let mut child = sh
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command has written anything (it has yet to open
        // the database), so its write finds the pipe closed.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked"), "{args:?}: {:?}: {err}", out.status);
    }
}
