#![no_main]
//! The DSN reader (bounce::parse_dsn): any bytes that reach a VERP bounce
//! address. No panic; a status it reports is an RFC 3463 status code (class 2, 4 or 5, then
//! a subject and a detail of one to three digits),; `permanent` is
//! exactly "Action: failed" or a 5.x.x status.

use libfuzzer_sys::fuzz_target;
use maskrelay::bounce::parse_dsn;

fuzz_target!(|raw: &[u8]| {
    let report = parse_dsn(raw);
    if let Some(status) = &report.status {
        let parts: Vec<&str> = status.split('.').collect();
        assert!(
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())),
            "not an RFC 3463 status code: {status:?}"
        );
        if status.starts_with('5') {
            assert!(report.permanent, "5.x.x but not permanent");
        }
    }
    // The same bytes give the same report.
    assert_eq!(parse_dsn(raw), report);
});
