//! Which SPF mechanism decided.
//!
//! mail-auth returns the SPF result but not the mechanism that produced it, and an
//! administrator needs "include:_spf.esp.example -> ip4:192.0.2.0/24" to know whom to ask.
//! This module walks the parsed records again in RFC 7208 4.6 order. It runs after mail-auth's
//! own evaluation, so every lookup it makes is already in the [`Dns`] caches and costs nothing;
//! it only names the path, it never changes the result.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf, Variables};

use unspoof_dns::Dns;

/// RFC 7208 4.6.4: at most 10 mechanisms that cause DNS lookups; also bounds our walk.
const MAX_LOOKUPS: usize = 10;

/// Returns the path of mechanisms that decided the SPF result for `domain`, or `None` when it
/// cannot be named (DNS view offline, record gone from the cache).
pub async fn explain(
    dns: &Dns,
    ip: IpAddr,
    domain: &str,
    sender: &str,
    helo: &str,
) -> Option<String> {
    let mut vars = Variables::new();
    vars.set_ip(&ip);
    vars.set_sender(sender.as_bytes().to_vec());
    vars.set_helo_domain(helo.as_bytes().to_vec());
    vars.set_host_domain(b"unknown".to_vec());
    let mut walker = Walker {
        dns,
        ip,
        lookups: 0,
    };
    let (_, path) = walker.walk(domain.to_string(), &mut vars).await?;
    Some(path.join(" -> "))
}

struct Walker<'a> {
    dns: &'a Dns,
    ip: IpAddr,
    lookups: usize,
}

impl Walker<'_> {
    /// Evaluates `domain`'s record and returns whether it passes and the decisive path, or
    /// `None` if it cannot.
    fn walk<'v>(
        &'v mut self,
        domain: String,
        vars: &'v mut Variables<'static>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(bool, Vec<String>)>> + Send + 'v>>
    {
        Box::pin(async move {
            let record = self.record(&domain).await?;
            vars.set_domain(domain.as_bytes().to_vec());
            for directive in record.directives.iter() {
                let text =
                    mechanism_text(&directive.qualifier, &directive.mechanism, vars, &domain);
                let matched = match &directive.mechanism {
                    Mechanism::All => Some(vec![]),
                    Mechanism::Ip4 { addr, mask } => {
                        v4_matches(self.ip, addr, *mask).then(Vec::new)
                    }
                    Mechanism::Ip6 { addr, mask } => {
                        v6_matches(self.ip, addr, *mask).then(Vec::new)
                    }
                    Mechanism::A {
                        macro_string,
                        ip4_mask,
                        ip6_mask,
                    } => {
                        self.lookups += 1;
                        let name = eval(macro_string, vars, &domain);
                        self.ip_matches(&name, *ip4_mask, *ip6_mask)
                            .await
                            .then(Vec::new)
                    }
                    Mechanism::Mx {
                        macro_string,
                        ip4_mask,
                        ip6_mask,
                    } => {
                        self.lookups += 1;
                        let name = eval(macro_string, vars, &domain);
                        let mut hit = false;
                        if let Some(auth) = self.dns.authenticator()
                            && let Ok(mx) = auth
                                .mx_lookup(name.as_str(), Some(&self.dns.caches().mx))
                                .await
                        {
                            for exchange in
                                mx.rrset.iter().flat_map(|m| m.exchanges.iter()).take(10)
                            {
                                if self.ip_matches(exchange, *ip4_mask, *ip6_mask).await {
                                    hit = true;
                                    break;
                                }
                            }
                        }
                        hit.then(Vec::new)
                    }
                    Mechanism::Include { macro_string } => {
                        self.lookups += 1;
                        if self.lookups > MAX_LOOKUPS {
                            return Some((false, vec![format!("{text} (lookup limit exceeded)")]));
                        }
                        let target = eval(macro_string, vars, &domain);
                        // include matches only when the included record passes (RFC 7208 5.2).
                        let inner = self.walk(target.clone(), vars).await;
                        vars.set_domain(domain.as_bytes().to_vec());
                        match inner {
                            Some((true, path)) => Some(path),
                            _ => None,
                        }
                    }
                    Mechanism::Exists { macro_string } => {
                        self.lookups += 1;
                        let name = eval(macro_string, vars, &domain);
                        let found = match self.dns.authenticator() {
                            Some(auth) => auth
                                .exists(
                                    name.as_str(),
                                    Some(&self.dns.caches().ipv4),
                                    Some(&self.dns.caches().ipv6),
                                )
                                .await
                                .unwrap_or(false),
                            None => false,
                        };
                        found.then(Vec::new)
                    }
                    // ptr is discouraged (RFC 7208 5.5) and needs validated reverse names; name
                    // it only if it is the last directive before the result could be decided.
                    Mechanism::Ptr { .. } => None,
                };
                if let Some(mut rest) = matched {
                    let mut path = vec![text];
                    path.append(&mut rest);
                    return Some((matches!(directive.qualifier, Qualifier::Pass), path));
                }
                if self.lookups > MAX_LOOKUPS {
                    return Some((false, vec!["lookup limit exceeded (RFC 7208 4.6.4)".into()]));
                }
            }
            if let Some(redirect) = &record.redirect {
                self.lookups += 1;
                let target = eval(redirect, vars, &domain);
                let mut path = vec![format!("redirect={target}")];
                let (pass, rest) = self.walk(target, vars).await?;
                path.extend(rest);
                return Some((pass, path));
            }
            Some((
                false,
                vec!["default (no mechanism matched: neutral)".into()],
            ))
        })
    }

    async fn record(&self, domain: &str) -> Option<Arc<Spf>> {
        let auth = self.dns.authenticator()?;
        auth.txt_lookup::<Spf>(domain, Some(&self.dns.caches().txt))
            .await
            .ok()
    }

    async fn ip_matches(&self, name: &str, ip4_mask: u32, ip6_mask: u128) -> bool {
        let Some(auth) = self.dns.authenticator() else {
            return false;
        };
        match self.ip {
            IpAddr::V4(_) => match auth.ipv4_lookup(name, Some(&self.dns.caches().ipv4)).await {
                Ok(set) => set.rrset.iter().any(|a| v4_matches(self.ip, a, ip4_mask)),
                Err(_) => false,
            },
            IpAddr::V6(_) => match auth.ipv6_lookup(name, Some(&self.dns.caches().ipv6)).await {
                Ok(set) => set.rrset.iter().any(|a| v6_matches(self.ip, a, ip6_mask)),
                Err(_) => false,
            },
        }
    }
}

fn eval(m: &Macro, vars: &Variables<'_>, domain: &str) -> String {
    // mail-auth's Macro::eval ties the lifetimes of its arguments together; give it owned
    // copies so the walk can keep mutating `vars`.
    let vars = vars.clone();
    let out: Cow<'_, str> = m.eval(&vars, domain, true);
    out.into_owned()
}

fn v4_matches(ip: IpAddr, addr: &Ipv4Addr, mask: u32) -> bool {
    let ip = match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => ip,
            None => return false,
        },
    };
    u32::from(ip) & mask == u32::from(*addr) & mask
}

fn v6_matches(ip: IpAddr, addr: &Ipv6Addr, mask: u128) -> bool {
    let ip = match ip {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
    };
    u128::from(ip) & mask == u128::from(*addr) & mask
}

fn qualifier_prefix(q: &Qualifier) -> &'static str {
    match q {
        Qualifier::Pass => "",
        Qualifier::Fail => "-",
        Qualifier::SoftFail => "~",
        Qualifier::Neutral => "?",
    }
}

fn v4_len(mask: u32) -> u32 {
    mask.count_ones()
}

fn v6_len(mask: u128) -> u32 {
    mask.count_ones()
}

/// The mechanism as it would be written in the record, macros expanded.
fn mechanism_text(q: &Qualifier, m: &Mechanism, vars: &Variables<'_>, domain: &str) -> String {
    let q = qualifier_prefix(q);
    let masks = |m4: u32, m6: u128| {
        let mut s = String::new();
        if v4_len(m4) != 32 {
            s.push_str(&format!("/{}", v4_len(m4)));
        }
        if v6_len(m6) != 128 {
            s.push_str(&format!("//{}", v6_len(m6)));
        }
        s
    };
    match m {
        Mechanism::All => format!("{q}all"),
        Mechanism::Ip4 { addr, mask } => format!("{q}ip4:{addr}/{}", v4_len(*mask)),
        Mechanism::Ip6 { addr, mask } => format!("{q}ip6:{addr}/{}", v6_len(*mask)),
        Mechanism::A {
            macro_string,
            ip4_mask,
            ip6_mask,
        } => {
            format!(
                "{q}a:{}{}",
                eval(macro_string, vars, domain),
                masks(*ip4_mask, *ip6_mask)
            )
        }
        Mechanism::Mx {
            macro_string,
            ip4_mask,
            ip6_mask,
        } => {
            format!(
                "{q}mx:{}{}",
                eval(macro_string, vars, domain),
                masks(*ip4_mask, *ip6_mask)
            )
        }
        Mechanism::Include { macro_string } => {
            format!("{q}include:{}", eval(macro_string, vars, domain))
        }
        Mechanism::Ptr { macro_string } => format!("{q}ptr:{}", eval(macro_string, vars, domain)),
        Mechanism::Exists { macro_string } => {
            format!("{q}exists:{}", eval(macro_string, vars, domain))
        }
    }
}
