//! The search: [`Query`] (every filter optional, all given filters must match) → message records,
//! newest first.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::record::{domain_of, normalize_message_id};
// One escaping for every LIKE of the store (the DMARC domain match uses it too).
use crate::dmarc::like_escape;

/// Results returned when a query gives no limit.
pub const DEFAULT_LIMIT: u32 = 100;

/// What to look for. Text filters match exactly, case-insensitively for domains and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Message-ID, with or without angle brackets.
    pub message_id: Option<String>,
    pub queue_id: Option<String>,
    /// The client's address or network (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`).
    pub client: Option<IpNet>,
    /// The MAIL FROM domain.
    pub mail_from_domain: Option<String>,
    /// The From header's domain.
    pub from_domain: Option<String>,
    /// A recipient address, or `@domain` for every recipient in a domain.
    pub recipient: Option<String>,
    /// `accept`, `tag`, `quarantine`, `reject`, ...
    pub action: Option<String>,
    /// A reason code, e.g. `dmarc.reject`.
    pub reason: Option<String>,
    /// Unix time, inclusive.
    pub since: Option<i64>,
    /// Unix time, exclusive.
    pub until: Option<i64>,
    /// At most this many records ([`DEFAULT_LIMIT`] when `None`).
    pub limit: Option<u32>,
    /// Skip this many of the newest matches first (paging). [`crate::Store::count`] ignores it.
    #[serde(default)]
    pub offset: Option<u32>,
    /// Text the Subject contains, case-insensitively (ASCII case). No index serves it: it
    /// reads every record the other filters leave, so pair it with a date range on a large
    /// store.
    #[serde(default)]
    pub subject: Option<String>,
    /// A sender: an address (the MAIL FROM or the From address, case-insensitively) or a
    /// domain (the MAIL FROM or the From domain).
    #[serde(default)]
    pub sender: Option<String>,
    /// Only records with at least one recipient among these (addresses, or `@domain`): what a
    /// console account may see. Empty: no such limit. Unlike the other filters, this one is a
    /// permission: an empty list here does not mean "nothing".
    #[serde(default)]
    pub visible_to: Vec<String>,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    I(i64),
    OI(Option<i64>),
    S(String),
    OS(Option<String>),
    B(Vec<u8>),
}

/// A sortable text key for an address: the 32 hex digits of its IPv6 form (IPv4 as
/// `::ffff:a.b.c.d`), so a network is a key range on one index on either database.
pub(crate) fn ip_key(ip: IpAddr) -> String {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    format!("{:032x}", u128::from(v6))
}

fn net_range(net: &IpNet) -> (String, String) {
    let (lo, hi): (Ipv6Addr, Ipv6Addr) = match net {
        IpNet::V4(n) => (n.network().to_ipv6_mapped(), n.broadcast().to_ipv6_mapped()),
        IpNet::V6(n) => (n.network(), n.broadcast()),
    };
    (
        format!("{:032x}", u128::from(lo)),
        format!("{:032x}", u128::from(hi)),
    )
}

impl Query {
    /// The WHERE clause (over `messages m`) with `$n` placeholders numbered from 1, and the
    /// values, in order. Every value is bound: nothing from the query is pasted into the SQL.
    pub(crate) fn where_clause(&self) -> (String, Vec<Val>) {
        let mut conds: Vec<String> = Vec::new();
        let mut vals: Vec<Val> = Vec::new();
        // `?n` in a condition is its n-th value. Replaced from the highest down, so `?10` is
        // never read as `?1` followed by a 0.
        let mut push = |cond: &str, v: Vec<Val>| {
            let base = vals.len();
            let n = v.len();
            vals.extend(v);
            let mut c = cond.to_string();
            for i in (1..=n).rev() {
                c = c.replace(&format!("?{i}"), &format!("${}", base + i));
            }
            conds.push(c);
        };
        if let Some(id) = &self.message_id {
            push("m.message_id = ?1", vec![Val::S(normalize_message_id(id))]);
        }
        if let Some(q) = &self.queue_id {
            push("m.queue_id = ?1", vec![Val::S(q.trim().to_string())]);
        }
        if let Some(net) = &self.client {
            let (lo, hi) = net_range(net);
            if lo == hi {
                push("m.ip_key = ?1", vec![Val::S(lo)]);
            } else {
                push("m.ip_key BETWEEN ?1 AND ?2", vec![Val::S(lo), Val::S(hi)]);
            }
        }
        if let Some(d) = &self.mail_from_domain {
            push("m.mail_from_domain = ?1", vec![Val::S(clean_domain(d))]);
        }
        if let Some(d) = &self.from_domain {
            push("m.from_domain = ?1", vec![Val::S(clean_domain(d))]);
        }
        if let Some(r) = &self.recipient {
            let r = r.trim().to_ascii_lowercase();
            if let Some(domain) = r.strip_prefix('@') {
                push(
                    "m.id IN (SELECT r.message FROM message_rcpt r WHERE r.domain = ?1)",
                    vec![Val::S(clean_domain(domain))],
                );
            } else {
                push(
                    "m.id IN (SELECT r.message FROM message_rcpt r WHERE r.address = ?1)",
                    vec![Val::S(r)],
                );
            }
        }
        if let Some(a) = &self.action {
            let a = a.trim().to_ascii_lowercase();
            if a == "accept" {
                push("m.action = ?1", vec![Val::S(a)]);
            } else {
                // The condition of the index on the other verdicts (messages_action_not_accept,
                // migration 0022), written out: a planner uses a partial index only when the
                // query states its condition, which a bound value does not.
                push("(m.action = ?1 AND m.action <> 'accept')", vec![Val::S(a)]);
            }
        }
        if let Some(code) = &self.reason {
            push(
                "m.id IN (SELECT x.message FROM message_reason x WHERE x.code = ?1)",
                vec![Val::S(code.trim().to_string())],
            );
        }
        if let Some(s) = &self.subject {
            let pattern = format!("%{}%", like_escape(&s.trim().to_ascii_lowercase()));
            push(
                "lower(m.subject) LIKE ?1 ESCAPE '\\'",
                vec![Val::S(pattern)],
            );
        }
        if let Some(s) = &self.sender {
            let s = s.trim().to_ascii_lowercase();
            match s.rsplit_once('@') {
                Some((local, _)) if !local.is_empty() => {
                    // The domain columns are indexed; the address comparison then reads few rows.
                    let d = clean_domain(&s);
                    push(
                        "((m.mail_from_domain = ?1 AND lower(m.mail_from) = ?2) \
                         OR (m.from_domain = ?1 AND lower(m.from_header) = ?2))",
                        vec![Val::S(d), Val::S(s)],
                    );
                }
                _ => {
                    let d = clean_domain(s.trim_start_matches('@'));
                    push(
                        "(m.mail_from_domain = ?1 OR m.from_domain = ?2)",
                        vec![Val::S(d.clone()), Val::S(d)],
                    );
                }
            }
        }
        if !self.visible_to.is_empty() {
            let mut addresses = Vec::new();
            let mut domains = Vec::new();
            for v in &self.visible_to {
                let v = v.trim().to_ascii_lowercase();
                match v.strip_prefix('@') {
                    Some(d) => domains.push(Val::S(clean_domain(d))),
                    None => addresses.push(Val::S(v)),
                }
            }
            let marks = |from: usize, n: usize| {
                (from..from + n)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut cond = String::from("m.id IN (SELECT r.message FROM message_rcpt r WHERE ");
            let mut parts = Vec::new();
            if !addresses.is_empty() {
                parts.push(format!("r.address IN ({})", marks(1, addresses.len())));
            }
            if !domains.is_empty() {
                parts.push(format!(
                    "r.domain IN ({})",
                    marks(addresses.len() + 1, domains.len())
                ));
            }
            cond.push_str(&parts.join(" OR "));
            cond.push(')');
            addresses.extend(domains);
            push(&cond, addresses);
        }
        if let Some(t) = self.since {
            push("m.received_at >= ?1", vec![Val::I(t)]);
        }
        if let Some(t) = self.until {
            push("m.received_at < ?1", vec![Val::I(t)]);
        }
        let clause = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        (clause, vals)
    }

    pub(crate) fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(DEFAULT_LIMIT))
    }
}

/// `Example.COM.` → `example.com`; an address gives its domain.
fn clean_domain(d: &str) -> String {
    if d.contains('@') {
        return domain_of(d).unwrap_or_default();
    }
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_order_networks() {
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        let (lo, hi) = net_range(&net);
        let inside = ip_key("192.0.2.77".parse().unwrap());
        let outside = ip_key("192.0.3.1".parse().unwrap());
        assert!(lo <= inside && inside <= hi);
        assert!(outside > hi);
        assert_eq!(ip_key("::1".parse().unwrap()).len(), 32);
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let q = Query {
            client: Some("10.0.0.0/8".parse().unwrap()),
            action: Some("reject".into()),
            ..Default::default()
        };
        let (w, v) = q.where_clause();
        assert_eq!(
            w,
            "WHERE m.ip_key BETWEEN $1 AND $2 AND (m.action = $3 AND m.action <> 'accept')"
        );
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn many_visible_recipients_keep_their_numbers() {
        let q = Query {
            action: Some("quarantine".into()),
            visible_to: (0..11)
                .map(|i| format!("u{i}@site.test"))
                .chain(["@Other.Test".into()])
                .collect(),
            subject: Some("50%_Off".into()),
            ..Default::default()
        };
        let (w, v) = q.where_clause();
        assert!(
            w.contains("r.address IN ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"),
            "{w}"
        );
        assert!(w.contains("r.domain IN ($14)"), "{w}");
        assert!(w.contains("lower(m.subject) LIKE $2 ESCAPE"), "{w}");
        assert!(!w.contains('?'), "{w}");
        assert_eq!(v.len(), 14);
        assert!(matches!(&v[13], Val::S(d) if d == "other.test"));
        assert!(matches!(&v[1], Val::S(p) if p == "%50\\%\\_off%"));
    }
}
