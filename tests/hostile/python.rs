//! Runs tests/leakcheck.py, the second opinion written with Python's email package, over a
//! batch of delivered messages.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One message for the second opinion.
pub struct Job {
    pub name: String,
    pub delivered: PathBuf,
    /// What was sent, when the MIME structure is to be compared with it.
    pub sent: Option<PathBuf>,
    pub needles: Vec<String>,
    pub headers_only: bool,
}

/// What Python found: leaks, and differences of MIME structure.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub leaks: Vec<String>,
    pub structure: Vec<String>,
}

/// Whether python3 runs here. Where it must (MRTEST_REQUIRE_PYTHON, or CI's
/// MRTEST_REQUIRE_DKIMPY, which needs it too) its absence is a failure; elsewhere the
/// Rust detector runs alone and the test says so.
pub fn available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import email, html, urllib.parse"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let required = std::env::var_os("MRTEST_REQUIRE_PYTHON").is_some()
            || std::env::var_os("MRTEST_REQUIRE_DKIMPY").is_some();
        assert!(!required, "python3 is required for the second leak opinion but does not run");
        eprintln!("SKIPPED: python3 not found; only the Rust leak detector ran");
    }
    ok
}

/// The verdict per job name.
pub fn second_opinion(jobs: &[Job]) -> HashMap<String, Verdict> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/leakcheck.py");
    let input = serde_json::Value::Array(
        jobs.iter()
            .map(|j| {
                serde_json::json!({
                    "name": j.name,
                    "delivered": j.delivered,
                    "sent": j.sent,
                    "needles": j.needles,
                    "headers_only": j.headers_only,
                })
            })
            .collect(),
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write jobs");
    let out = child.wait_with_output().expect("leakcheck.py runs");
    assert!(out.status.success(), "leakcheck.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("leakcheck.py answers JSON");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    results
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_owned();
            (name, Verdict { leaks: strings(&r["leaks"]), structure: strings(&r["structure"]) })
        })
        .collect()
}
