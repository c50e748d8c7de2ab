//! `auth.mode = "dmarc"`: is the RFC 5322 From authenticated for its domain? DMARC pass,
//! or, where the domain publishes no DMARC record, SPF or DKIM aligned with it (SPEC).
//! All DNS goes through the relay's resolver (`dns.nameservers`).

use std::net::IpAddr;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};

use super::DmarcOutcome;
use crate::address::Mailbox;

/// Where the message came from, as the session saw it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    pub mail_from: Option<&'a Mailbox>,
}

/// DMARC verification over the relay's resolver.
pub struct DmarcVerifier {
    authenticator: MessageAuthenticator,
    /// The relay's host name, for SPF's `%{r}` macro.
    host: String,
}

impl DmarcVerifier {
    pub fn new(resolver: hickory_resolver::TokioResolver, host: &str) -> Self {
        Self { authenticator: MessageAuthenticator(resolver), host: host.to_owned() }
    }

    /// Verifies `raw` as received from `origin`.
    pub async fn verify(&self, raw: &[u8], origin: &Origin<'_>) -> DmarcOutcome {
        let Some(message) = AuthenticatedMessage::parse(raw) else { return DmarcOutcome::Fail };
        let from_domains: Vec<String> = message
            .from
            .iter()
            .filter_map(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .collect();
        let Some(from_domain) = from_domains.first().cloned() else { return DmarcOutcome::Fail };
        if from_domains.iter().any(|d| *d != from_domain) {
            // RFC 7489 6.6.1: several From domains cannot be evaluated; refuse.
            return DmarcOutcome::Fail;
        }
        let dkim = self.authenticator.verify_dkim(&message).await;
        let sender = origin.mail_from.map(Mailbox::expose).unwrap_or_default();
        let spf = self
            .authenticator
            .verify_spf(SpfParameters::verify(origin.ip, origin.helo, &self.host, &sender))
            .await;
        let mail_from_domain = origin
            .mail_from
            .map(|m| m.domain().to_owned())
            .unwrap_or_else(|| origin.helo.to_ascii_lowercase());
        let dmarc = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(&message, &dkim, &mail_from_domain, &spf))
            .await;

        let results = [dmarc.dkim_result(), dmarc.spf_result()];
        if results.iter().any(|r| **r == DmarcResult::Pass) {
            return DmarcOutcome::Pass;
        }
        if let Some(DmarcResult::TempError(e)) =
            results.iter().find(|r| matches!(r, DmarcResult::TempError(_)))
        {
            return DmarcOutcome::TempError(e.to_string());
        }
        if dmarc.result() != DmarcResult::None {
            return DmarcOutcome::Fail;
        }
        // No DMARC record: SPF or DKIM aligned with the From domain decides.
        let dkim_aligned = dkim.iter().any(|d| {
            *d.result() == DkimResult::Pass && d.signature().is_some_and(|s| aligned(&s.d, &from_domain))
        });
        let spf_aligned = spf.result() == SpfResult::Pass && aligned(spf.domain(), &from_domain);
        if dkim_aligned || spf_aligned {
            return DmarcOutcome::Pass;
        }
        let temp = dkim.iter().any(|d| matches!(d.result(), DkimResult::TempError(_)))
            || spf.result() == SpfResult::TempError;
        if temp { DmarcOutcome::TempError("DNS lookup failed".into()) } else { DmarcOutcome::Fail }
    }
}

/// Relaxed alignment without a public-suffix list: the same domain, or one a subdomain of
/// the other. Stricter than RFC 7489 3.1 for sibling subdomains, never looser.
fn aligned(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('.').to_ascii_lowercase(), b.trim_end_matches('.').to_ascii_lowercase());
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

#[cfg(test)]
mod tests {
    use super::aligned;

    #[test]
    fn alignment() {
        assert!(aligned("acme.example", "ACME.example."));
        assert!(aligned("mail.acme.example", "acme.example"));
        assert!(!aligned("evil-acme.example", "acme.example"));
        assert!(!aligned("example", "acme.example.org"));
    }
}
