//! The audit's DNS: every question goes to the name servers of the engine's DNS view
//! ([`unspoof_engine::Dns::servers`]: the system's resolvers, `--resolver HOST:PORT`, or the
//! loopback server of `--dns-zone` files), within the view's timeout.
//!
//! The audit writes its DNS messages itself with hickory-proto instead of going through the
//! engine's hickory resolver, because it needs what that resolver hides: the AD bit of a
//! validating resolver (RFC 4035 3.2.3, asked for with AD and DO set, RFC 6840 5.7), the
//! difference between NXDOMAIN and no data, the CNAME chain of an answer, record types mail-auth
//! never asks for (MX as written, TLSA, CNAME, NS, SOA), and an exact count of the queries sent.
//!
//! Each (name, type) is asked once per audit ([`Resolver`] remembers the answer), and every
//! query sent counts against [`Resolver::budget`]: past it, the answer is
//! [`Answer::Failed`] and the check that asked says it could not run.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// EDNS payload size we advertise (the DNS flag day 2020 value): larger answers come over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// What one question got.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Records of the asked type (after any CNAME chain), and the CNAMEs on the way.
    Records {
        records: Vec<Record>,
        cnames: Vec<String>,
        /// The resolver set AD: it validated the answer with DNSSEC.
        secure: bool,
    },
    /// The name exists but has no record of this type (NOERROR, empty answer).
    NoData { secure: bool },
    /// The name does not exist.
    NxDomain { secure: bool },
    /// No usable answer: timeout, SERVFAIL, REFUSED, a malformed reply, or the query budget
    /// spent. The text says which.
    Failed(String),
}

impl Answer {
    /// The records of the asked type, or none.
    pub fn records(&self) -> &[Record] {
        match self {
            Answer::Records { records, .. } => records,
            _ => &[],
        }
    }

    /// Whether the resolver validated this answer (AD bit).
    pub fn secure(&self) -> bool {
        match self {
            Answer::Records { secure, .. }
            | Answer::NoData { secure }
            | Answer::NxDomain { secure } => *secure,
            Answer::Failed(_) => false,
        }
    }

    /// The failure, when the question got no usable answer.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Answer::Failed(why) => Some(why),
            _ => None,
        }
    }

    /// Whether the name exists (records or no data).
    pub fn name_exists(&self) -> Option<bool> {
        match self {
            Answer::Records { .. } | Answer::NoData { .. } => Some(true),
            Answer::NxDomain { .. } => Some(false),
            Answer::Failed(_) => None,
        }
    }

    /// Each TXT record's character-strings joined (RFC 7208 3.3, RFC 9989 4.6).
    pub fn txt(&self) -> Vec<Vec<u8>> {
        self.records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(t.txt_data.iter().flat_map(|s| s.iter()).copied().collect()),
                _ => None,
            })
            .collect()
    }

    /// The addresses of an A or AAAA answer.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    /// The names of a PTR, NS or CNAME answer, lower case, without the root dot.
    pub fn names(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(n) => Some(plain(&n.0)),
                RData::NS(n) => Some(plain(&n.0)),
                RData::CNAME(n) => Some(plain(&n.0)),
                _ => None,
            })
            .collect()
    }
}

/// A name as we print and compare it: lower case, no root dot.
pub fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// A domain as typed by a person (Unicode or A-labels, any case, a trailing dot or not) in the
/// form we query and compare: A-labels, lower case, no trailing dot. `None` when it is no name.
pub fn normalise(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.');
    if d.is_empty() {
        return None;
    }
    let ascii = idna::domain_to_ascii(d).ok()?;
    if ascii.is_empty()
        || ascii.split('.').any(|l| l.is_empty() || l.len() > 63)
        || ascii.len() > 253
    {
        return None;
    }
    Some(ascii)
}

/// One query as sent, for the report's DNS section and the tests' count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// `udp` or `tcp` (a truncated UDP answer is asked again over TCP: two queries).
    pub transport: &'static str,
}

/// The audit's resolver over one DNS view.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    budget: u64,
    sent: AtomicU64,
    log: Mutex<Vec<Sent>>,
    answers: Mutex<HashMap<(String, RecordType), Arc<Answer>>>,
    description: String,
}

impl Resolver {
    /// Asks the name servers of `view`, each query within its timeout, at most `budget` queries.
    pub fn new(view: &unspoof_engine::Dns, budget: u64) -> Self {
        Self::with_servers(
            view.servers().to_vec(),
            view.timeout(),
            budget,
            view.description().to_string(),
        )
    }

    /// Asks these servers directly.
    pub fn with_servers(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        budget: u64,
        description: String,
    ) -> Self {
        Resolver {
            servers,
            timeout,
            budget,
            sent: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            answers: Mutex::new(HashMap::new()),
            description,
        }
    }

    /// Queries sent so far.
    pub fn queries(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The most queries one audit may send.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Every query sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// "resolver 127.0.0.1:53", "system resolver", ...
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether every server is on loopback: only then does the AD bit come over a path nobody
    /// else can write to (RFC 4035 4.9.3, RFC 6698 4.1).
    pub fn servers_on_loopback(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.ip().is_loopback())
    }

    /// The answer to (`name`, `rtype`), asked at most once per audit.
    pub async fn ask(&self, name: &str, rtype: RecordType) -> Arc<Answer> {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), rtype);
        if let Some(a) = self.answers.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return a;
        }
        let answer = Arc::new(self.resolve(&key.0, rtype).await);
        if let Ok(mut m) = self.answers.lock() {
            m.insert(key, answer.clone());
        }
        answer
    }

    /// The PTR answer for `ip`.
    pub async fn ptr(&self, ip: IpAddr) -> Arc<Answer> {
        let name = plain(&Name::from(ip));
        self.ask(&name, RecordType::PTR).await
    }

    /// Counts one query against the budget; `false` when it is spent.
    fn spend(&self, name: &str, rtype: RecordType, transport: &'static str) -> bool {
        let before = self.sent.fetch_add(1, Ordering::Relaxed);
        if before >= self.budget {
            self.sent.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if let Ok(mut log) = self.log.lock() {
            log.push(Sent {
                name: name.to_string(),
                rtype: rtype.to_string(),
                transport,
            });
        }
        true
    }

    async fn resolve(&self, name: &str, rtype: RecordType) -> Answer {
        let Ok(mut qname) = Name::from_str_relaxed(name) else {
            return Answer::Failed(format!("{name} is not a DNS name"));
        };
        qname.set_fqdn(true);
        if self.servers.is_empty() {
            return Answer::Failed("no DNS (offline)".into());
        }
        let mut last = String::from("no answer");
        for server in &self.servers {
            let id = random_id();
            let request = match request(id, &qname, rtype) {
                Ok(r) => r,
                Err(e) => return Answer::Failed(format!("cannot ask for {name}: {e}")),
            };
            if !self.spend(name, rtype, "udp") {
                return Answer::Failed(format!(
                    "DNS query budget of {} spent before {name} {rtype} was asked",
                    self.budget
                ));
            }
            let reply = match self.udp(*server, &request, id, &qname, rtype).await {
                Ok(m) if m.metadata.truncation => {
                    if !self.spend(name, rtype, "tcp") {
                        return Answer::Failed(format!(
                            "DNS query budget of {} spent before {name} {rtype} was asked over TCP",
                            self.budget
                        ));
                    }
                    self.tcp(*server, &request, id, &qname, rtype).await
                }
                other => other,
            };
            match reply {
                Ok(m) => match interpret(&m, rtype) {
                    Ok(a) => return a,
                    Err(e) => last = format!("{server}: {e}"),
                },
                Err(e) => last = format!("{server}: {e}"),
            }
        }
        Answer::Failed(last)
    }

    async fn udp(
        &self,
        server: SocketAddr,
        request: &[u8],
        id: u16,
        qname: &Name,
        rtype: RecordType,
    ) -> Result<Message, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(server)
        } else {
            "[::]:0".parse().unwrap_or(server)
        };
        let exchange = async {
            let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
            socket.connect(server).await.map_err(|e| e.to_string())?;
            socket.send(request).await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
                // Not ours (an old reply, a forgery): keep waiting within the timeout.
                if let Ok(m) = Message::from_vec(&buf[..n])
                    && matches_request(&m, id, qname, rtype)
                {
                    return Ok(m);
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        request: &[u8],
        id: u16,
        qname: &Name,
        rtype: RecordType,
    ) -> Result<Message, String> {
        let exchange = async {
            let mut stream = TcpStream::connect(server)
                .await
                .map_err(|e| e.to_string())?;
            let len = u16::try_from(request.len()).map_err(|e| e.to_string())?;
            stream.write_u16(len).await.map_err(|e| e.to_string())?;
            stream.write_all(request).await.map_err(|e| e.to_string())?;
            let len = stream.read_u16().await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; len as usize];
            stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
            if matches_request(&m, id, qname, rtype) {
                Ok(m)
            } else {
                Err("the TCP answer is for another question".to_string())
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer over TCP within {:?}", self.timeout))?
    }
}

fn random_id() -> u16 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    // A fixed id only weakens spoofing resistance; the source port is random too.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u16::from_be_bytes(b)
}

fn request(id: u16, qname: &Name, rtype: RecordType) -> Result<Vec<u8>, String> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // RFC 6840 5.7: AD in a query asks a validating resolver to say whether it validated.
    m.metadata.authentic_data = true;
    m.add_query(Query::query(qname.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    // DO as well: some resolvers set AD only for DO queries (RFC 3225).
    edns.set_dnssec_ok(true);
    m.set_edns(edns);
    m.to_vec().map_err(|e| e.to_string())
}

fn matches_request(m: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.first().is_some_and(|q| {
            q.query_type == rtype && q.name.to_ascii().eq_ignore_ascii_case(&qname.to_ascii())
        })
}

fn interpret(m: &Message, rtype: RecordType) -> Result<Answer, String> {
    let secure = m.metadata.authentic_data;
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Answer::NxDomain { secure }),
        other => return Err(format!("{other}")),
    }
    let records: Vec<Record> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .cloned()
        .collect();
    let cnames: Vec<String> = if rtype == RecordType::CNAME {
        Vec::new()
    } else {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(plain(&c.0)),
                _ => None,
            })
            .collect()
    };
    if records.is_empty() {
        Ok(Answer::NoData { secure })
    } else {
        Ok(Answer::Records {
            records,
            cnames,
            secure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalise("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(
            normalise("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(normalise(""), None);
        assert_eq!(normalise("a..b"), None);
    }

    #[tokio::test]
    async fn budget_is_enforced_and_offline_fails_closed() {
        let r = Resolver::with_servers(vec![], Duration::from_millis(100), 5, "offline".into());
        assert!(
            r.ask("example.com", RecordType::TXT)
                .await
                .failure()
                .is_some()
        );
        assert_eq!(r.queries(), 0);
        // A server that never answers: one query spent per question, then the budget is gone.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = Resolver::with_servers(
            vec![silent.local_addr().unwrap()],
            Duration::from_millis(50),
            1,
            "silent".into(),
        );
        let first = r.ask("a.example", RecordType::A).await;
        assert!(first.failure().unwrap().contains("no answer"), "{first:?}");
        let second = r.ask("b.example", RecordType::A).await;
        assert!(second.failure().unwrap().contains("budget"), "{second:?}");
        assert_eq!(r.queries(), 1);
        // Asked again: remembered, not sent.
        let _ = r.ask("a.example", RecordType::A).await;
        assert_eq!(r.queries(), 1);
    }
}
