//! The search: [`Query`] (every filter optional, all given filters must match) → message records,
//! newest first.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::record::{domain_of, normalize_message_id};

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
        let mut push = |cond: &str, v: Vec<Val>| {
            let mut c = cond.to_string();
            for (i, val) in v.into_iter().enumerate() {
                vals.push(val);
                c = c.replace(&format!("?{}", i + 1), &format!("${}", vals.len()));
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
            push("m.action = ?1", vec![Val::S(a.trim().to_ascii_lowercase())]);
        }
        if let Some(code) = &self.reason {
            push(
                "m.id IN (SELECT x.message FROM message_reason x WHERE x.code = ?1)",
                vec![Val::S(code.trim().to_string())],
            );
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
        assert_eq!(w, "WHERE m.ip_key BETWEEN $1 AND $2 AND m.action = $3");
        assert_eq!(v.len(), 3);
    }
}
