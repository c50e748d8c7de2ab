//! What operators may see of a shopper: nothing that names them. `redact` cuts a thread's
//! identity out of text from remote servers before it is stored or logged; `name_shows_address`
//! keeps a display name that would carry the address out of the relay from being accepted.

pub mod redact;

pub use redact::{Identity, redact, redact_reply};

use crate::address::Mailbox;

/// Whether a display name shows this address to a reader: in any case, in fullwidth or
/// other compatibility forms, with invisible characters or spaces inside, or spelled out
/// (`jane at example.com`, `jane(at)example.com`), with either IDNA form of the domain.
/// Such a name would make every later message of the thread refuse (it ends up in the
/// From the store sees), so it is refused when the thread is created.
pub fn name_shows_address(name: &str, address: &Mailbox) -> bool {
    let squeeze =
        |s: &str| -> String { redact::fold(s).chars().filter(|c| *c != ' ' && *c != '"').collect() };
    let name = squeeze(name);
    let local = squeeze(address.local());
    redact::domain_forms(address.domain()).iter().any(|domain| {
        let domain = squeeze(domain);
        ["@", "at", "(at)", "[at]", "{at}", "<at>", "%40"]
            .iter()
            .any(|sep| name.contains(&format!("{local}{sep}{domain}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_show_the_address() {
        let a = Mailbox::parse("Jane.Doe@example.com").unwrap();
        for name in [
            "jane.doe@example.com",
            "Jane <JANE.DOE@EXAMPLE.COM>",
            "Jane (ｊａｎｅ．ｄｏｅ＠ｅｘａｍｐｌｅ．ｃｏｍ)",
            "jane . doe @ example . com",
            "jane.doe at example.com",
            "jane.doe[at]example.com",
            "\"jane.doe\"@example.com",
            "ja\u{200B}ne.doe\u{00AD}@example.com",
        ] {
            assert!(name_shows_address(name, &a), "{name}");
        }
        for name in ["Jane Doe", "Jane Doe (example.com)", "jane.doe", "jane.doe@example.org"] {
            assert!(!name_shows_address(name, &a), "{name}");
        }
        let idn = Mailbox::parse("taro@xn--bcher-kva.example").unwrap();
        assert!(name_shows_address("Taro taro@BÜCHER.example", &idn));
    }
}
