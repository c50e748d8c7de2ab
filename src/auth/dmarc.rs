//! `auth.mode = "dmarc"`: is the RFC 5322 From authenticated for its domain? DMARC pass,
//! or, where the domain publishes no DMARC record, SPF or DKIM aligned with it (SPEC).
//! All DNS goes through the relay's resolver (`dns.nameservers`).

use std::net::IpAddr;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};

use serde::Serialize;

use super::DmarcOutcome;
use crate::address::Mailbox;

/// What each check said about a refused message, for the event an operator reads to tell a
/// store why its mail was refused: domains and results, never an address. Built only for
/// mail claiming to be from a store (a shopper's domain could identify the shopper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AuthReport {
    /// The RFC 5322 From domain the checks were for.
    pub from_domain: Option<String>,
    pub spf: Option<SpfReport>,
    pub dkim: Vec<DkimReport>,
    pub dmarc: Option<DmarcReport>,
    /// Why nothing was checked (no From, several From domains, unparseable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
}

/// SPF of the envelope sender (or HELO) domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpfReport {
    pub domain: String,
    pub result: &'static str,
    /// Whether that domain is aligned with the From domain.
    pub aligned: bool,
}

/// One DKIM signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimReport {
    pub domain: Option<String>,
    pub selector: Option<String>,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub aligned: bool,
}

/// The DMARC evaluation of the From domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcReport {
    /// `none` when the domain publishes no DMARC record (then aligned SPF or DKIM decide).
    pub result: &'static str,
    pub policy: &'static str,
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> (&'static str, Option<String>) {
    let reason = |e: &mail_auth::Error| Some(e.to_string().chars().take(200).collect());
    match r {
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(e) => ("neutral", reason(e)),
        DkimResult::Fail(e) => ("fail", reason(e)),
        DkimResult::PermError(e) => ("permerror", reason(e)),
        DkimResult::TempError(e) => ("temperror", reason(e)),
        DkimResult::None => ("none", None),
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn policy_word(p: mail_auth::dmarc::Policy) -> &'static str {
    match p {
        mail_auth::dmarc::Policy::None => "none",
        mail_auth::dmarc::Policy::Quarantine => "quarantine",
        mail_auth::dmarc::Policy::Reject => "reject",
        mail_auth::dmarc::Policy::Unspecified => "unspecified",
    }
}

fn refused(problem: &'static str) -> DmarcOutcome {
    DmarcOutcome::Fail(Box::new(AuthReport { problem: Some(problem), ..AuthReport::default() }))
}

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
        let Some(message) = AuthenticatedMessage::parse(raw) else { return refused("unparseable message") };
        let from_domains: Vec<String> = message
            .from
            .iter()
            .filter_map(|f| f.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
            .collect();
        let Some(from_domain) = from_domains.first().cloned() else { return refused("no From domain") };
        if from_domains.iter().any(|d| *d != from_domain) {
            // RFC 7489 6.6.1: several From domains cannot be evaluated; refuse.
            return refused("several From domains");
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
        let report = || {
            Box::new(AuthReport {
                from_domain: Some(from_domain.clone()),
                spf: Some(SpfReport {
                    domain: spf.domain().to_ascii_lowercase(),
                    result: spf_word(spf.result()),
                    aligned: aligned(spf.domain(), &from_domain),
                }),
                dkim: dkim
                    .iter()
                    .map(|d| {
                        let (result, reason) = dkim_word(d.result());
                        let domain = d.signature().map(|s| s.d.to_ascii_lowercase());
                        DkimReport {
                            aligned: domain.as_deref().is_some_and(|d| aligned(d, &from_domain)),
                            domain,
                            selector: d.signature().map(|s| s.s.clone()),
                            result,
                            reason,
                        }
                    })
                    .collect(),
                dmarc: Some(DmarcReport {
                    result: dmarc_word(&dmarc.result()),
                    policy: policy_word(dmarc.policy()),
                }),
                problem: None,
            })
        };
        if dmarc.result() != DmarcResult::None {
            return DmarcOutcome::Fail(report());
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
        if temp { DmarcOutcome::TempError("DNS lookup failed".into()) } else { DmarcOutcome::Fail(report()) }
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
