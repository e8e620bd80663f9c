//! Joins a message to the log lines that belong to it, and checks the hop trace against them.
//!
//! The thread: the message's Message-ID (and the queue id in our topmost Received header)
//! finds the MTA's queue ids; each queue id finds its client (IP, name, SASL user, TLS), its
//! sender and its deliveries; the client's IP finds the other messages it sent around the same
//! time. Then the log is set beside the Received headers: a Received header can be forged, the
//! MTA's own log line of the connection cannot (by the sender).

use std::{collections::BTreeSet, net::IpAddr};

use serde::Serialize;
use unspoof_engine::trace::Trace;

use crate::logs::{Event, LogLine, exim_message_id, exim_sender, sendmail_extra};

/// How far around the message's time other messages from the same client are listed.
pub const NEIGHBOUR_WINDOW_SECS: i64 = 3600;

/// The client the MTA logged for the message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoggedClient {
    pub queue_id: String,
    pub name: String,
    pub ip: Option<IpAddr>,
    pub sasl_user: Option<String>,
    pub helo: Option<String>,
    pub tls: Option<String>,
    pub source: String,
}

/// One delivery attempt from the log.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedDelivery {
    pub queue_id: String,
    pub recipient: String,
    pub relay: Option<String>,
    pub status: String,
    pub detail: String,
    pub source: String,
}

/// Another message the same client sent near the same time.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    pub queue_id: String,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub time: Option<i64>,
}

/// What the hop trace and the log say together.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum HopCheck {
    /// The log's client is the IP the topmost trusted Received header names.
    Confirmed { ip: IpAddr },
    /// The log names another client than the Received header: the header is wrong (forged or
    /// from another hop), the log is what happened.
    Contradicted {
        received_ip: Option<IpAddr>,
        logged_ip: IpAddr,
        detail: String,
    },
    /// Not enough in the log or in the headers to say.
    Unknown { detail: String },
}

/// The whole join.
#[derive(Debug, Clone, Serialize)]
pub struct LogTrace {
    pub message_id: Option<String>,
    pub queue_ids: Vec<String>,
    pub clients: Vec<LoggedClient>,
    pub senders: Vec<String>,
    pub deliveries: Vec<LoggedDelivery>,
    pub rejections: Vec<String>,
    pub hop_check: HopCheck,
    pub neighbours: Vec<Neighbour>,
    /// Every line that belongs to the message, in log order.
    pub lines: Vec<LogLine>,
}

/// Joins `message_id` (without angle brackets) and the hop `trace` with `logs`.
pub fn join(message_id: Option<&str>, trace: &Trace, logs: &[LogLine]) -> LogTrace {
    let wanted_id = message_id.map(|m| {
        m.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    });

    // 1. Queue ids: by Message-ID, and by the id our own topmost Received header recorded.
    let mut queue_ids: BTreeSet<String> = BTreeSet::new();
    for l in logs {
        let id = message_id_of(l);
        if let (Some(id), Some(want)) = (id.as_deref(), wanted_id.as_deref())
            && id.eq_ignore_ascii_case(want)
            && let Some(q) = queue_id_of(l)
        {
            queue_ids.insert(q);
        }
    }
    for hop in trace.hops.iter().filter(|h| h.trusted) {
        if let Some(id) = hop.id.as_deref()
            && logs.iter().any(|l| queue_id_of(l).as_deref() == Some(id))
        {
            queue_ids.insert(id.to_string());
        }
    }

    // 2. Everything those queue ids did, plus the connection lines of the same smtpd process.
    let mut lines = Vec::new();
    let mut clients = Vec::new();
    let mut senders = Vec::new();
    let mut deliveries = Vec::new();
    let mut rejections = Vec::new();
    let mut pids: BTreeSet<(String, u32)> = BTreeSet::new();
    for l in logs {
        let Some(q) = queue_id_of(l) else { continue };
        if !queue_ids.contains(&q) {
            continue;
        }
        if let Some(pid) = l.pid
            && matches!(l.event, Some(Event::Client { .. }))
        {
            pids.insert((l.program.clone(), pid));
        }
        match &l.event {
            Some(Event::Client {
                queue_id,
                client_name,
                client_ip,
                sasl_user,
                helo,
                tls,
            }) => {
                clients.push(LoggedClient {
                    queue_id: queue_id.clone(),
                    name: client_name.clone(),
                    ip: *client_ip,
                    sasl_user: sasl_user.clone(),
                    helo: helo.clone(),
                    tls: tls.clone(),
                    source: l.source.clone(),
                });
            }
            Some(Event::From { sender, .. }) => senders.push(sender.clone()),
            Some(Event::Delivery {
                queue_id,
                recipient,
                relay,
                status,
                detail,
            }) => deliveries.push(LoggedDelivery {
                queue_id: queue_id.clone(),
                recipient: recipient.clone(),
                relay: relay.clone(),
                status: status.clone(),
                detail: detail.clone(),
                source: l.source.clone(),
            }),
            Some(Event::Reject { detail, .. }) => rejections.push(detail.clone()),
            _ => {}
        }
        if let Some(sender) = sendmail_extra(&l.text)
            .map(|(s, _, _)| s)
            .or_else(|| exim_sender(&l.text))
        {
            senders.push(sender);
        }
    }
    // TLS of the connection: Postfix logs it on the smtpd process before the queue id exists.
    for l in logs {
        if let (Some(pid), Some(Event::Tls { detail, .. })) = (l.pid, &l.event)
            && pids.contains(&(l.program.clone(), pid))
        {
            for c in clients.iter_mut().filter(|c| c.tls.is_none()) {
                c.tls = Some(detail.clone());
            }
        }
    }
    for l in logs {
        let mine = queue_id_of(l).is_some_and(|q| queue_ids.contains(&q))
            || (l
                .pid
                .is_some_and(|p| pids.contains(&(l.program.clone(), p)))
                && matches!(l.event, Some(Event::Connect { .. } | Event::Tls { .. })));
        if mine {
            lines.push(l.clone());
        }
    }
    senders.sort();
    senders.dedup();

    let hop_check = check_hop(trace, &clients);
    let neighbours = neighbours(logs, &clients, &queue_ids);
    LogTrace {
        message_id: wanted_id,
        queue_ids: queue_ids.into_iter().collect(),
        clients,
        senders,
        deliveries,
        rejections,
        hop_check,
        neighbours,
        lines,
    }
}

fn queue_id_of(l: &LogLine) -> Option<String> {
    if let Some(q) = l.event.as_ref().and_then(Event::queue_id) {
        return Some(q.to_string());
    }
    // Lines we do not interpret (Postfix pickup, bounce, ...) still carry "<id>: ".
    let (id, _) = l.text.split_once(": ")?;
    (id.len() >= 6 && id.len() <= 20 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        .then(|| id.to_string())
}

fn message_id_of(l: &LogLine) -> Option<String> {
    match &l.event {
        Some(Event::MessageId { message_id, .. }) => Some(message_id.clone()),
        _ => sendmail_extra(&l.text)
            .and_then(|(_, _, id)| id)
            .or_else(|| exim_message_id(&l.text))
            .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_string()),
    }
}

/// Sets the log's client beside the Received header that should name it: the deepest trusted
/// hop's client when the log belongs to our own MTA (the queue id is in our Received header), or
/// the topmost hop.
fn check_hop(trace: &Trace, clients: &[LoggedClient]) -> HopCheck {
    let Some(logged) = clients.iter().find_map(|c| c.ip.map(|ip| (ip, c))) else {
        return HopCheck::Unknown {
            detail: "the log names no client address for this message".into(),
        };
    };
    let (logged_ip, client) = logged;
    // The hop our MTA wrote carries its queue id; without one, the topmost hop.
    let hop = trace
        .hops
        .iter()
        .find(|h| h.id.as_deref() == Some(client.queue_id.as_str()))
        .or_else(|| trace.hops.first());
    let Some(hop) = hop else {
        return HopCheck::Unknown {
            detail: "the message has no Received header".into(),
        };
    };
    match hop.from_ip {
        Some(ip) if same_ip(ip, logged_ip) => HopCheck::Confirmed { ip },
        received_ip => HopCheck::Contradicted {
            received_ip,
            logged_ip,
            detail: format!(
                "Received header {} says the client was {}, but the log of {} shows {} [{}] connected",
                hop.index,
                received_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "not named".into()),
                client.queue_id,
                client.name,
                logged_ip
            ),
        },
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

fn neighbours(
    logs: &[LogLine],
    clients: &[LoggedClient],
    mine: &BTreeSet<String>,
) -> Vec<Neighbour> {
    let ips: Vec<IpAddr> = clients.iter().filter_map(|c| c.ip).collect();
    let times: Vec<i64> = logs
        .iter()
        .filter(|l| queue_id_of(l).is_some_and(|q| mine.contains(&q)))
        .filter_map(|l| l.time)
        .collect();
    let (Some(&start), Some(&end)) = (times.iter().min(), times.iter().max()) else {
        return Vec::new();
    };
    let mut out: Vec<Neighbour> = Vec::new();
    for l in logs {
        let Some(Event::Client {
            queue_id,
            client_ip: Some(ip),
            ..
        }) = &l.event
        else {
            continue;
        };
        if mine.contains(queue_id) || !ips.iter().any(|x| same_ip(*x, *ip)) {
            continue;
        }
        let Some(t) = l.time else { continue };
        if t < start - NEIGHBOUR_WINDOW_SECS || t > end + NEIGHBOUR_WINDOW_SECS {
            continue;
        }
        if out.iter().any(|n| &n.queue_id == queue_id) {
            continue;
        }
        let message_id = logs
            .iter()
            .find(|x| queue_id_of(x).as_deref() == Some(queue_id) && message_id_of(x).is_some())
            .and_then(message_id_of);
        let sender = logs.iter().find_map(|x| match &x.event {
            Some(Event::From {
                queue_id: q,
                sender,
                ..
            }) if q == queue_id => Some(sender.clone()),
            _ => None,
        });
        out.push(Neighbour {
            queue_id: queue_id.clone(),
            message_id,
            sender,
            time: Some(t),
        });
    }
    out
}
