//! The DNS records a relay domain needs (MX, A, SPF, DKIM, DMARC, PTR): what `maskrelay
//! init` prints, in zone-file syntax, and what `maskrelay check dns` looks up and compares.

use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use crate::config::EgressMode;

/// TTL of the printed records.
const TTL: u32 = 3600;

/// Stands in for the host's address when `init` is not told it (RFC 5737 TEST-NET-1).
pub const PLACEHOLDER_IP: &str = "192.0.2.10";

/// A DKIM key's record: published at `<selector>._domainkey.<domain>`.
#[derive(Debug, Clone)]
pub struct DkimRecord {
    pub selector: String,
    /// `v=DKIM1; k=…; p=…`
    pub text: String,
}

/// What the relay domain should publish.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The relay (alias) domain.
    pub domain: String,
    /// The relay's host name: the MX target, and the name its address's PTR gives.
    pub host: String,
    /// The host's public address, when known.
    pub ip: Option<IpAddr>,
    pub egress: EgressMode,
    pub dkim: Vec<DkimRecord>,
    /// Where DMARC aggregate reports go (`rua=mailto:…`).
    pub dmarc_rua: Option<String>,
}

/// How one record compares with the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but worth changing.
    Warn,
    Missing,
    Wrong,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warning",
            Self::Missing => "MISSING",
            Self::Wrong => "WRONG",
        }
    }
}

/// One line of `check dns`.
#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    /// Which record: `SPF relay.example.org`.
    pub record: String,
    /// What was found, and what to publish instead.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} {}: {}", self.status.label(), self.record, self.detail)
    }
}

/// A TXT value as DNS character-strings: at most 255 bytes each (RFC 1035 3.3; RFC 6376
/// 3.6.2.2 joins them back without spaces). Splits fall on character boundaries.
pub fn txt_strings(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// The default report address: `dmarc-reports@` the parent of the relay domain
/// (`relay.market.example` → `market.example`), the same organizational domain, so no
/// external-destination record is needed (RFC 7489 7.1).
pub fn default_dmarc_rua(domain: &str) -> String {
    let parent = match domain.split_once('.') {
        Some((_, parent)) if parent.contains('.') => parent,
        _ => domain,
    };
    format!("dmarc-reports@{parent}")
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The reverse-zone name of an address (RFC 1035 3.5, RFC 3596 2.5).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            name.push_str("ip6.arpa.");
            name
        }
    }
}

/// `key=value` tags of a DKIM or DMARC record (RFC 6376 3.2), whitespace removed from values.
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.chars().filter(|c| !c.is_whitespace()).collect()))
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl Plan {
    /// The SPF record: in MX mode the relay's host sends; through a smarthost, the
    /// provider's servers do, and only its documented `include:` covers them.
    pub fn spf(&self) -> String {
        match self.egress {
            EgressMode::Mx => format!("v=spf1 a:{} -all", self.host.trim_end_matches('.')),
            EgressMode::Smarthost => "v=spf1 include:spf.your-provider.example -all".to_owned(),
        }
    }

    /// The DMARC record: reject what fails, strict alignment (the relay signs and sends
    /// for its own domain only), aggregate reports to `dmarc_rua`.
    pub fn dmarc(&self) -> String {
        let mut record = "v=DMARC1; p=reject; adkim=s; aspf=s".to_owned();
        if let Some(rua) = &self.dmarc_rua {
            let _ = write!(record, "; rua=mailto:{rua}");
        }
        record
    }

    fn ip_or_placeholder(&self) -> IpAddr {
        self.ip.unwrap_or_else(|| PLACEHOLDER_IP.parse().expect("a valid address"))
    }

    /// The records in zone-file syntax (RFC 1035 5), absolute names, one TTL each, so the
    /// text loads as it is into a zone or a DNS provider's import.
    pub fn zone(&self) -> String {
        let (domain, host) = (fqdn(&self.domain), fqdn(&self.host));
        let ip = self.ip_or_placeholder();
        let mut z = String::new();
        let _ = writeln!(z, "; DNS records for {} (zone-file syntax).", self.domain);
        if self.ip.is_none() {
            let _ = writeln!(
                z,
                "; Replace {PLACEHOLDER_IP} with this host's public address (or run init with --ip)."
            );
        }
        let address_type = if ip.is_ipv4() { "A" } else { "AAAA" };
        let _ = writeln!(z, "{domain}  {TTL} IN MX  10 {host}");
        let _ = writeln!(z, "{host}  {TTL} IN {address_type}  {ip}");
        match self.egress {
            EgressMode::Mx => {
                let _ = writeln!(z, "; SPF: mail from the relay domain leaves from this host only.");
            }
            EgressMode::Smarthost => {
                let _ = writeln!(
                    z,
                    "; SPF: mail leaves through your smarthost: replace include:spf.your-provider.example\n\
                     ; with the include your provider documents (e.g. include:mailgun.org)."
                );
            }
        }
        let _ = writeln!(z, "{domain}  {TTL} IN TXT \"{}\"", self.spf());
        if let Some(rua) = &self.dmarc_rua {
            let _ = writeln!(
                z,
                "; DMARC: receivers reject mail that fails; aggregate reports go to {rua}\n\
                 ; (an address you read: mail to the relay domain reaches aliases only)."
            );
        }
        let _ = writeln!(z, "_dmarc.{domain}  {TTL} IN TXT \"{}\"", self.dmarc());
        for key in &self.dkim {
            let strings = txt_strings(&key.text);
            let _ = writeln!(
                z,
                "; DKIM, selector {}: one TXT record of {} quoted string(s) of at most 255 bytes\n\
                 ; each, which receivers join; paste the line whole.",
                key.selector,
                strings.len()
            );
            // One line (no parentheses): some zone parsers and every provider form take it.
            let quoted: Vec<String> = strings.iter().map(|s| format!("\"{s}\"")).collect();
            let _ = writeln!(z, "{}._domainkey.{domain}  {TTL} IN TXT {}", key.selector, quoted.join(" "));
        }
        let _ = writeln!(
            z,
            "; PTR: receivers check that the address names the relay. The reverse zone belongs\n\
             ; to whoever owns the address: set it in your hosting provider's panel."
        );
        let _ = writeln!(z, "{}  {TTL} IN PTR {host}", reverse_name(ip));
        z
    }

    /// Looks every record up through `resolver` and says, per record, whether it is as
    /// planned, missing or wrong.
    pub async fn check(&self, resolver: &TokioResolver) -> Vec<Finding> {
        let mut out = Vec::new();
        let host_ips = self.check_mx_and_address(resolver, &mut out).await;
        self.check_spf(resolver, &mut out).await;
        self.check_dmarc(resolver, &mut out).await;
        for key in &self.dkim {
            self.check_dkim(resolver, key, &mut out).await;
        }
        self.check_ptr(resolver, &host_ips, &mut out).await;
        out
    }

    async fn check_mx_and_address(&self, resolver: &TokioResolver, out: &mut Vec<Finding>) -> Vec<IpAddr> {
        let record = format!("MX {}", self.domain);
        let want = format!("publish {} IN MX 10 {}", fqdn(&self.domain), fqdn(&self.host));
        match resolver.mx_lookup(fqdn(&self.domain)).await {
            Ok(lookup) => {
                let mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                let listed = mxs.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
                if mxs.iter().any(|(_, h)| h.trim_end_matches('.').is_empty()) {
                    out.push(finding(
                        Status::Wrong,
                        &record,
                        format!("null MX ({listed}): the domain takes no mail; {want}"),
                    ));
                } else if mxs.is_empty() {
                    out.push(finding(Status::Missing, &record, want));
                } else if mxs.iter().any(|(_, h)| same_name(h, &self.host)) {
                    out.push(finding(Status::Ok, &record, listed));
                } else {
                    out.push(finding(
                        Status::Warn,
                        &record,
                        format!(
                            "points at {listed}, not at {} (fine if that host reaches this relay)",
                            self.host
                        ),
                    ));
                }
                for (_, target) in mxs
                    .iter()
                    .filter(|(_, h)| !same_name(h, &self.host) && !h.trim_end_matches('.').is_empty())
                {
                    if lookup_ips(resolver, target).await.is_empty() {
                        out.push(finding(
                            Status::Missing,
                            &format!("A/AAAA {}", target.trim_end_matches('.')),
                            "the MX host has no address".into(),
                        ));
                    }
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                out.push(finding(Status::Missing, &record, want));
            }
            Err(e) => out.push(finding(Status::Wrong, &record, format!("lookup failed: {e}"))),
        }
        let record = format!("A/AAAA {}", self.host);
        let ips = lookup_ips(resolver, &self.host).await;
        match (ips.is_empty(), self.ip) {
            (true, ip) => out.push(finding(
                Status::Missing,
                &record,
                format!(
                    "publish {} IN A {}",
                    fqdn(&self.host),
                    ip.map_or(PLACEHOLDER_IP.to_owned(), |i| i.to_string())
                ),
            )),
            (false, Some(ip)) if !ips.contains(&ip) => out.push(finding(
                Status::Wrong,
                &record,
                format!("{} names {}, not this host's {ip}", self.host, join(&ips)),
            )),
            (false, _) => out.push(finding(Status::Ok, &record, join(&ips))),
        }
        ips
    }

    async fn check_spf(&self, resolver: &TokioResolver, out: &mut Vec<Finding>) {
        let record = format!("SPF {}", self.domain);
        let want = format!("publish {} IN TXT \"{}\"", fqdn(&self.domain), self.spf());
        let spf: Vec<String> = match txt(resolver, &self.domain).await {
            Ok(list) => list
                .into_iter()
                .filter(|t| t.eq_ignore_ascii_case("v=spf1") || t.to_ascii_lowercase().starts_with("v=spf1 "))
                .collect(),
            Err(e) => return out.push(finding(Status::Wrong, &record, format!("lookup failed: {e}"))),
        };
        let text = match spf.as_slice() {
            [] => return out.push(finding(Status::Missing, &record, want)),
            [one] => one.to_ascii_lowercase(),
            _ => {
                // RFC 7208 4.5: more than one SPF record is a permanent error.
                return out.push(finding(
                    Status::Wrong,
                    &record,
                    format!("{} SPF records (receivers treat that as an error); keep one: {want}", spf.len()),
                ));
            }
        };
        let terms: Vec<&str> = text.split_whitespace().skip(1).collect();
        if terms.iter().any(|t| *t == "+all" || *t == "all") {
            return out.push(finding(Status::Wrong, &record, format!("{text:?} lets anyone send; {want}")));
        }
        let host = self.host.trim_end_matches('.').to_ascii_lowercase();
        let covers_host = terms.iter().any(|t| {
            let t = t.trim_start_matches('+');
            t == "a"
                || t == "mx"
                || *t == format!("a:{host}")
                || *t == format!("mx:{}", self.domain.to_ascii_lowercase())
                || self.ip.is_some_and(|ip| *t == format!("ip4:{ip}") || *t == format!("ip6:{ip}"))
        });
        let ends_strict = terms.last().is_some_and(|t| *t == "-all");
        match self.egress {
            EgressMode::Mx if !covers_host => out.push(finding(
                Status::Wrong,
                &record,
                format!("{text:?} does not name this host ({host}), which delivers directly; {want}"),
            )),
            EgressMode::Smarthost if !terms.iter().any(|t| t.starts_with("include:")) => out.push(finding(
                Status::Wrong,
                &record,
                format!("{text:?} has no include: mail leaves through your smarthost: include the SPF domain your provider documents"),
            )),
            _ if !ends_strict => out.push(finding(
                Status::Warn,
                &record,
                format!("{text:?}: end it with -all so receivers refuse other senders"),
            )),
            EgressMode::Smarthost => out.push(finding(
                Status::Ok,
                &record,
                format!("{text} (make sure the include is your smarthost provider's)"),
            )),
            EgressMode::Mx => out.push(finding(Status::Ok, &record, text)),
        }
    }

    async fn check_dmarc(&self, resolver: &TokioResolver, out: &mut Vec<Finding>) {
        let name = format!("_dmarc.{}", self.domain);
        let record = format!("DMARC {name}");
        let want = format!("publish {} IN TXT \"{}\"", fqdn(&name), self.dmarc());
        let found: Vec<String> = match txt(resolver, &name).await {
            Ok(list) => list.into_iter().filter(|t| t.to_ascii_lowercase().starts_with("v=dmarc1")).collect(),
            Err(e) => return out.push(finding(Status::Wrong, &record, format!("lookup failed: {e}"))),
        };
        let text = match found.as_slice() {
            [] => return out.push(finding(Status::Missing, &record, want)),
            [one] => one.clone(),
            _ => {
                return out.push(finding(
                    Status::Wrong,
                    &record,
                    format!("{} DMARC records; keep one: {want}", found.len()),
                ));
            }
        };
        let t = tags(&text);
        let rua = tag(&t, "rua").unwrap_or("");
        let own_domain = format!("@{}", self.domain.to_ascii_lowercase());
        if rua.to_ascii_lowercase().split(',').any(|u| u.ends_with(&own_domain)) {
            return out.push(finding(
                Status::Wrong,
                &record,
                format!("rua={rua} is in the relay domain, which takes mail for aliases only: send reports to an address you read"),
            ));
        }
        match tag(&t, "p").map(str::to_ascii_lowercase).as_deref() {
            Some("reject") if !rua.is_empty() => out.push(finding(Status::Ok, &record, text)),
            Some("reject") => out.push(finding(
                Status::Warn,
                &record,
                format!("{text:?} has no rua=: you get no reports of who sends as the relay domain"),
            )),
            Some(p @ ("none" | "quarantine")) => out.push(finding(
                Status::Warn,
                &record,
                format!("p={p}: receivers still deliver forged mail from the relay domain; {want}"),
            )),
            _ => out.push(finding(Status::Wrong, &record, format!("{text:?} has no valid p= tag; {want}"))),
        }
    }

    async fn check_dkim(&self, resolver: &TokioResolver, key: &DkimRecord, out: &mut Vec<Finding>) {
        let name = format!("{}._domainkey.{}", key.selector, self.domain);
        let record = format!("DKIM {name}");
        let want = tags(&key.text);
        let found = match txt(resolver, &name).await {
            Ok(list) => list,
            Err(e) => return out.push(finding(Status::Wrong, &record, format!("lookup failed: {e}"))),
        };
        let publish = format!(
            "publish the record `maskrelay init` printed ({} bytes, split into strings)",
            key.text.len()
        );
        let Some(text) = found.iter().find(|t| tag(&tags(t), "p").is_some()) else {
            return out.push(finding(Status::Missing, &record, publish));
        };
        let got = tags(text);
        let key_type = |t: &[(String, String)]| tag(t, "k").unwrap_or("rsa").to_ascii_lowercase();
        if tag(&got, "p") != tag(&want, "p") || key_type(&got) != key_type(&want) {
            let p = tag(&got, "p").unwrap_or("");
            let tail = &p[p.len().saturating_sub(12)..];
            return out.push(finding(
                Status::Wrong,
                &record,
                format!(
                    "publishes a different key (k={}, p=…{tail}) than the relay signs with; {publish}",
                    key_type(&got)
                ),
            ));
        }
        out.push(finding(Status::Ok, &record, format!("k={} key matches the relay's", key_type(&got))));
    }

    async fn check_ptr(&self, resolver: &TokioResolver, host_ips: &[IpAddr], out: &mut Vec<Finding>) {
        let Some(ip) = self.ip.or_else(|| host_ips.first().copied()) else {
            return out.push(finding(
                Status::Missing,
                "PTR",
                format!("no address to check: {} has none (or pass --ip)", self.host),
            ));
        };
        let record = format!("PTR {ip}");
        let want = format!("set {} IN PTR {} at your hosting provider", reverse_name(ip), fqdn(&self.host));
        match resolver.reverse_lookup(ip).await {
            Ok(lookup) => {
                let names: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::PTR(p) => Some(p.0.to_ascii()),
                        _ => None,
                    })
                    .collect();
                if names.is_empty() {
                    out.push(finding(Status::Missing, &record, want));
                } else if names.iter().any(|n| same_name(n, &self.host)) {
                    out.push(finding(Status::Ok, &record, names.join(", ")));
                } else {
                    out.push(finding(Status::Wrong, &record, format!("names {}; {want}", names.join(", "))));
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                out.push(finding(Status::Missing, &record, want))
            }
            Err(e) => out.push(finding(Status::Wrong, &record, format!("lookup failed: {e}"))),
        }
    }
}

fn finding(status: Status, record: &str, detail: String) -> Finding {
    Finding { status, record: record.to_owned(), detail }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

async fn lookup_ips(resolver: &TokioResolver, host: &str) -> Vec<IpAddr> {
    match resolver.lookup_ip(fqdn(host)).await {
        Ok(ips) => ips.iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// The TXT records at `name`, each one's strings joined; none found is an empty list.
async fn txt(resolver: &TokioResolver, name: &str) -> Result<Vec<String>, String> {
    match resolver.txt_lookup(fqdn(name)).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_at_most_255_bytes_and_join_back() {
        let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
        let parts = txt_strings(&long);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), long);
        assert_eq!(txt_strings("short"), vec!["short"]);
        let exact = "x".repeat(255);
        assert_eq!(txt_strings(&exact), vec![exact.as_str()]);
        let multibyte = "é".repeat(200);
        assert!(txt_strings(&multibyte).iter().all(|p| p.len() <= 255 && !p.is_empty()));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("192.0.2.10".parse().unwrap()), "10.2.0.192.in-addr.arpa.");
        assert!(reverse_name("2001:db8::1".parse().unwrap()).starts_with("1.0.0.0."));
        assert!(reverse_name("2001:db8::1".parse().unwrap()).ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."));
    }

    #[test]
    fn spf_follows_the_egress_mode_and_dmarc_names_reports() {
        let mut plan = Plan {
            domain: "relay.market.example".into(),
            host: "relay.market.example".into(),
            ip: None,
            egress: EgressMode::Mx,
            dkim: Vec::new(),
            dmarc_rua: Some(default_dmarc_rua("relay.market.example")),
        };
        assert_eq!(plan.spf(), "v=spf1 a:relay.market.example -all");
        assert!(plan.dmarc().ends_with("; rua=mailto:dmarc-reports@market.example"), "{}", plan.dmarc());
        plan.egress = EgressMode::Smarthost;
        assert!(plan.spf().contains("include:"));
        assert!(plan.zone().contains("include your provider documents"));
    }
}
