//! The engine's only window on the world: DNS.
//!
//! Four views, one code path. mail-auth resolves through a hickory resolver in every view, so
//! what is verified offline is what is verified live:
//! - [`Dns::system`]: the machine's resolvers (`/etc/resolv.conf`);
//! - [`Dns::server`]: one resolver at HOST:PORT;
//! - [`Dns::zones`]: answers only from [`Zone`] data (RFC 1035 master files or records built in
//!   code), served by a [`ZoneServer`] on an ephemeral loopback port; every other name is
//!   NXDOMAIN. This is how investigations are replayed offline and how tests pin DNS;
//! - [`Dns::offline`]: no DNS at all; authentication is reported as not checked.
//!
//! Answers are cached per [`Dns`] (mail-auth's parsed-record caches, plus hickory's own), so a
//! batch of messages from the same senders costs one lookup per name.

mod master;

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType},
};
use mail_auth::{
    MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt,
    hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

/// Default time one DNS query may take before its check becomes `temperror`.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// TTL of negative answers from zone data without an SOA of its own (RFC 2308 5).
const NEGATIVE_TTL: u32 = 300;

/// Most CNAME links followed inside zone data before giving up (a loop guard).
const MAX_CNAME_CHAIN: usize = 8;

/// Errors of our own making: a zone file that does not parse, a socket that cannot be bound.
/// Failed lookups are not errors; they become results (temperror, permerror, none).
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("cannot read zone file {path}: {source}")]
    ReadZone {
        path: String,
        source: std::io::Error,
    },
    #[error("zone file {path}: {message}")]
    ParseZone { path: String, message: String },
    #[error("cannot start the zone server on loopback: {0}")]
    Bind(std::io::Error),
    #[error("cannot configure the resolver: {0}")]
    Resolver(String),
}

/// DNS data held in memory: what a [`ZoneServer`] answers from.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    records: HashMap<(String, RecordType), Vec<Record>>,
    /// Every name that exists, including empty non-terminals (RFC 8020: a name with no records
    /// but names below it exists, so it answers NOERROR with no data, not NXDOMAIN).
    names: HashSet<String>,
    /// Names whose queries are never answered: a timing-out server, for temperror tests.
    timeouts: HashSet<String>,
}

/// Lower-case, no trailing dot: the key form of a name.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record.
    pub fn add(&mut self, record: Record) {
        let name = key(&record.name.to_ascii());
        let mut labels = name.as_str();
        loop {
            self.names.insert(labels.to_string());
            match labels.split_once('.') {
                Some((_, rest)) => labels = rest,
                None => break,
            }
        }
        self.records
            .entry((name, record.record_type()))
            .or_default()
            .push(record);
    }

    /// Adds `rdata` at `name` with a TTL of one hour.
    pub fn add_rdata(&mut self, name: &str, rdata: RData) -> Result<(), String> {
        let name = Name::from_str_relaxed(name).map_err(|e| e.to_string())?;
        self.add(Record::from_rdata(name, 3600, rdata));
        Ok(())
    }

    /// Adds a TXT record; `text` longer than 255 bytes is split into character-strings.
    pub fn add_txt(&mut self, name: &str, text: &str) -> Result<(), String> {
        let chunks: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let chunks = if chunks.is_empty() {
            vec![String::new()]
        } else {
            chunks
        };
        self.add_rdata(name, RData::TXT(hickory_proto::rr::rdata::TXT::new(chunks)))
    }

    /// Makes every query for `name` go unanswered.
    pub fn add_timeout(&mut self, name: &str) {
        self.timeouts.insert(key(name));
    }

    /// Reads an RFC 1035 master file. `$ORIGIN` and relative names work as usual; without an
    /// `$ORIGIN` names must be absolute.
    pub fn load_file(&mut self, path: &Path) -> Result<(), DnsSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| DnsSetupError::ReadZone {
            path: path.display().to_string(),
            source,
        })?;
        self.load_text(&text, Some(path))
            .map_err(|message| DnsSetupError::ParseZone {
                path: path.display().to_string(),
                message,
            })
    }

    /// Parses master-file text.
    pub fn load_text(&mut self, text: &str, path: Option<&Path>) -> Result<(), String> {
        for record in master::parse(text, path)? {
            self.add(record);
        }
        Ok(())
    }

    /// Whether any record was loaded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.timeouts.is_empty()
    }

    /// The authoritative answer to one question, or `None` for a query left unanswered.
    fn answer(&self, query: &Query) -> Option<(ResponseCode, Vec<Record>)> {
        let mut name = key(&query.name.to_ascii());
        let qtype = query.query_type;
        let mut answers = Vec::new();
        for _ in 0..MAX_CNAME_CHAIN {
            if self.timeouts.contains(&name) {
                return None;
            }
            if let Some(found) = self.records.get(&(name.clone(), qtype)) {
                answers.extend(found.iter().cloned());
                return Some((ResponseCode::NoError, answers));
            }
            if qtype != RecordType::CNAME {
                if let Some(cname) = self.records.get(&(name.clone(), RecordType::CNAME)) {
                    answers.extend(cname.iter().cloned());
                    match cname.first().map(|r| &r.data) {
                        Some(RData::CNAME(target)) => {
                            name = key(&target.0.to_ascii());
                            continue;
                        }
                        _ => return Some((ResponseCode::NoError, answers)),
                    }
                }
            }
            if self.names.contains(&name) {
                return Some((ResponseCode::NoError, answers));
            }
            // Wildcards (RFC 4592), simplified: the nearest `*.parent` of a name that does not
            // exist answers with the queried name as owner.
            if let Some(found) = self.wildcard(&name, qtype) {
                let owner = Name::from_str_relaxed(&name).ok()?;
                answers.extend(found.iter().map(|r| {
                    let mut r = r.clone();
                    r.name = owner.clone();
                    r
                }));
                return Some((ResponseCode::NoError, answers));
            }
            let code = if answers.is_empty() {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            return Some((code, answers));
        }
        Some((ResponseCode::ServFail, answers))
    }

    fn wildcard(&self, name: &str, qtype: RecordType) -> Option<&Vec<Record>> {
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            let wild = format!("*.{parent}");
            if let Some(found) = self.records.get(&(wild.clone(), qtype)) {
                return Some(found);
            }
            if self.names.contains(parent) {
                return None;
            }
            rest = parent;
        }
        None
    }

    /// The SOA that a negative answer for `name` carries (RFC 2308 3): the nearest enclosing
    /// zone's own, or a synthetic one for the root. Without it a resolver cannot cache
    /// NXDOMAIN or no-data answers, and a warm replay would keep asking (the DMARC tree walk
    /// asks for `_dmarc.<tld>` on every message).
    fn negative_soa(&self, name: &str) -> Record {
        let mut owner = name;
        loop {
            if let Some(soa) = self
                .records
                .get(&(owner.to_string(), RecordType::SOA))
                .and_then(|r| r.first())
            {
                return soa.clone();
            }
            match owner.split_once('.') {
                Some((_, parent)) => owner = parent,
                None => break,
            }
        }
        let root = Name::root();
        let host = Name::from_ascii("zone.invalid.").unwrap_or_else(|_| root.clone());
        Record::from_rdata(
            root,
            NEGATIVE_TTL,
            RData::SOA(hickory_proto::rr::rdata::SOA::new(
                host.clone(),
                host,
                1,
                3600,
                600,
                86400,
                NEGATIVE_TTL,
            )),
        )
    }

    /// Answers one DNS wire-format query, or `None` to stay silent.
    pub fn respond(&self, request: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let mut response = Message::response(request.metadata.id, OpCode::Query);
        response.metadata.message_type = MessageType::Response;
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        let Some(query) = request.queries.first().cloned() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response.to_vec().ok();
        };
        let (code, answers) = self.answer(&query)?;
        let negative = answers.is_empty() && code != ResponseCode::ServFail;
        if negative {
            response.add_authority(self.negative_soa(&key(&query.name.to_ascii())));
        }
        response.add_query(query);
        response.metadata.response_code = code;
        response.add_answers(answers);
        response.to_vec().ok()
    }
}

/// Serves a [`Zone`] over UDP and TCP on 127.0.0.1, on a port the OS picks. Dropping it stops
/// the server.
pub struct ZoneServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    queries: Arc<std::sync::atomic::AtomicU64>,
}

impl ZoneServer {
    /// Binds UDP and TCP on the same loopback port and starts answering. Must be called inside
    /// a tokio runtime.
    pub async fn start(zone: Zone) -> Result<Self, DnsSetupError> {
        let zone = Arc::new(zone);
        let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Bind UDP first, then TCP on the same port; retry if TCP's port is taken.
        for _ in 0..16 {
            let udp = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(DnsSetupError::Bind)?;
            let addr = udp.local_addr().map_err(DnsSetupError::Bind)?;
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let udp_zone = zone.clone();
            let udp_count = queries.clone();
            let udp_task = tokio::spawn(async move {
                let udp = Arc::new(udp);
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    udp_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(mut reply) = udp_zone.respond(&buf[..len]) {
                        if reply.len() > 512 {
                            // Too big for plain UDP: set TC so the client retries over TCP.
                            if let Ok(mut m) = Message::from_vec(&reply) {
                                m.answers.clear();
                                m.metadata.truncation = true;
                                reply = m.to_vec().unwrap_or_default();
                            }
                        }
                        let _ = udp.send_to(&reply, peer).await;
                    }
                }
            });
            let tcp_zone = zone.clone();
            let tcp_count = queries.clone();
            let tcp_task = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let zone = tcp_zone.clone();
                    let count = tcp_count.clone();
                    tokio::spawn(async move {
                        loop {
                            let Ok(len) = stream.read_u16().await else {
                                return;
                            };
                            let mut buf = vec![0u8; len as usize];
                            if stream.read_exact(&mut buf).await.is_err() {
                                return;
                            }
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(reply) = zone.respond(&buf) else {
                                continue;
                            };
                            let Ok(len) = u16::try_from(reply.len()) else {
                                return;
                            };
                            if stream.write_u16(len).await.is_err()
                                || stream.write_all(&reply).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
            return Ok(ZoneServer {
                addr,
                tasks: vec![udp_task, tcp_task],
                queries,
            });
        }
        Err(DnsSetupError::Bind(std::io::Error::other(
            "no free loopback port for UDP and TCP",
        )))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for ZoneServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How many answers each of the five caches (TXT, MX, A, AAAA, PTR) keeps. The names asked
/// are chosen by whoever writes the mail (SPF includes, DKIM selectors, From domains), so
/// without a bound a sender of many distinct names grows the process without limit. 50,000
/// entries of one type are at most a few tens of MiB; a busy gateway's working set is far
/// below that, so at the bound the cache only forgets what an attacker filled it with.
pub const ANSWER_CACHE_ENTRIES: usize = 50_000;

/// A cache of parsed answers, shared by all checks that use one [`Dns`]. Entries expire with
/// their TTL; at most [`ANSWER_CACHE_ENTRIES`] are kept (see [`AnswerCache::with_capacity`]).
pub struct AnswerCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K, V> Default for AnswerCache<K, V> {
    fn default() -> Self {
        Self::with_capacity(ANSWER_CACHE_ENTRIES)
    }
}

impl<K, V> AnswerCache<K, V> {
    /// A cache that keeps at most `capacity` answers (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        AnswerCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Answers held now, expired ones included until the next eviction.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for AnswerCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().ok()?;
        let (value, valid_until) = entries.get(name)?;
        (*valid_until > Instant::now()).then(|| value.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.lock().ok()?.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Full: drop what has expired, and if the live answers alone fill it (many
            // distinct names, as a hostile sender makes), an arbitrary eighth of them too.
            // The map's order is randomly seeded per process, so a sender cannot choose which
            // names survive; evicting an eighth at a time keeps an insert amortised O(1).
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= self.capacity {
                let mut evict = (entries.len() + 1 - self.capacity).max(self.capacity / 8);
                entries.retain(|_, _| {
                    if evict > 0 {
                        evict -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        entries.insert(key, (value, valid_until));
    }
}

/// The parsed-answer caches mail-auth consults before it asks the resolver.
#[derive(Default)]
pub struct Caches {
    pub txt: AnswerCache<Box<str>, Txt>,
    pub mx: AnswerCache<Box<str>, RecordSet<MX>>,
    pub ipv4: AnswerCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: AnswerCache<Box<str>, RecordSet<Ipv6Addr>>,
    pub ptr: AnswerCache<IpAddr, RecordSet<Box<str>>>,
}

/// The mail-auth parameter bundle with our caches attached.
pub type CachedParameters<'x, P> = Parameters<
    'x,
    P,
    AnswerCache<Box<str>, Txt>,
    AnswerCache<Box<str>, RecordSet<MX>>,
    AnswerCache<Box<str>, RecordSet<Ipv4Addr>>,
    AnswerCache<Box<str>, RecordSet<Ipv6Addr>>,
    AnswerCache<IpAddr, RecordSet<Box<str>>>,
>;

/// Which DNS the engine sees.
pub struct Dns {
    authenticator: Option<MessageAuthenticator>,
    caches: Caches,
    timeout: Duration,
    description: String,
    /// The name servers this view asks (empty when offline), for callers that need a query
    /// hickory's resolver does not send (the audit's DNSSEC-aware queries, crates/audit).
    servers: Vec<SocketAddr>,
    // Held for its lifetime: dropping it stops the zone server.
    _zone_server: Option<ZoneServer>,
}

impl Dns {
    /// The machine's configured resolvers.
    pub fn system(timeout: Duration) -> Result<Self, DnsSetupError> {
        let (config, _) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsSetupError::Resolver(e.to_string()))?;
        Self::with_config(config, timeout, "system resolver".into(), None)
    }

    /// One resolver at `addr` (UDP, falling back to TCP on truncation).
    pub fn server(addr: SocketAddr, timeout: Duration) -> Result<Self, DnsSetupError> {
        Self::with_config(
            resolver_config(addr),
            timeout,
            format!("resolver {addr}"),
            None,
        )
    }

    /// Answers only from `zone`; every other name is NXDOMAIN. Starts a loopback server, so it
    /// must be called inside a tokio runtime.
    pub async fn zones(zone: Zone, timeout: Duration) -> Result<Self, DnsSetupError> {
        let server = ZoneServer::start(zone).await?;
        let addr = server.addr();
        Self::with_config(
            resolver_config(addr),
            timeout,
            "zone files".into(),
            Some(server),
        )
    }

    /// No DNS: every check that needs it is reported as not checked.
    pub fn offline() -> Self {
        Dns {
            authenticator: None,
            caches: Caches::default(),
            timeout: DEFAULT_DNS_TIMEOUT,
            description: "offline".into(),
            servers: Vec::new(),
            _zone_server: None,
        }
    }

    fn with_config(
        config: ResolverConfig,
        timeout: Duration,
        description: String,
        zone_server: Option<ZoneServer>,
    ) -> Result<Self, DnsSetupError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        // One try: `timeout` is the whole budget of a query, so a dead server gives temperror
        // within it rather than after attempts x timeout. hickory's `attempts` counts retries
        // after the first try, so one try is 0.
        opts.attempts = 0;
        opts.cache_size = 4096;
        opts.ndots = 0;
        // DNS only: an /etc/hosts entry (the machine's own name, a test host) must not answer
        // for a name the zone files or the resolver answer otherwise, or a replay would depend
        // on the machine it runs on.
        opts.use_hosts_file = mail_auth::hickory_resolver::config::ResolveHosts::Never;
        let servers = config
            .name_servers()
            .iter()
            .flat_map(|ns| {
                ns.connections
                    .iter()
                    .map(move |c| SocketAddr::new(ns.ip, c.port))
            })
            .fold(Vec::new(), |mut all, addr| {
                if !all.contains(&addr) {
                    all.push(addr);
                }
                all
            });
        let authenticator = MessageAuthenticator::new(config, opts)
            .map_err(|e| DnsSetupError::Resolver(e.to_string()))?;
        Ok(Dns {
            authenticator: Some(authenticator),
            caches: Caches::default(),
            timeout,
            description,
            servers,
            _zone_server: zone_server,
        })
    }

    /// The resolver mail-auth verifies with; `None` when offline.
    pub fn authenticator(&self) -> Option<&MessageAuthenticator> {
        self.authenticator.as_ref()
    }

    /// The client's PTR name (the first, lower case, without the trailing dot) for Received
    /// headers and records, through this view: the zone files under `--dns-zone`, nothing
    /// offline, within the view's timeout, cached with the other answers.
    pub async fn ptr_name(&self, ip: IpAddr) -> Option<String> {
        let authenticator = self.authenticator.as_ref()?;
        let names = tokio::time::timeout(
            self.timeout,
            authenticator.ptr_lookup(ip, Some(&self.caches.ptr)),
        )
        .await
        .ok()?
        .ok()?;
        names
            .rrset
            .first()
            .map(|n| n.trim_end_matches('.').to_string())
    }

    /// Wraps mail-auth parameters with this view's caches.
    pub fn params<P>(&self, params: P) -> CachedParameters<'_, P> {
        Parameters::new(params)
            .with_txt_cache(&self.caches.txt)
            .with_mx_cache(&self.caches.mx)
            .with_ipv4_cache(&self.caches.ipv4)
            .with_ipv6_cache(&self.caches.ipv6)
            .with_ptr_cache(&self.caches.ptr)
    }

    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// The time one query may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Queries the zone server has answered, when this view is zone files.
    pub fn zone_queries(&self) -> Option<u64> {
        self._zone_server.as_ref().map(ZoneServer::queries)
    }

    /// The name servers this view asks, each once (UDP and TCP share an address); empty when
    /// offline.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Human description for reports ("zone files", "resolver 127.0.0.1:53", ...).
    pub fn description(&self) -> &str {
        &self.description
    }
}

fn resolver_config(addr: SocketAddr) -> ResolverConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    ResolverConfig::from_parts(
        None,
        vec![],
        vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let mut z = Zone::new();
        z.load_text(
            "$ORIGIN example.com.\n\
             @ 300 IN TXT \"v=spf1 -all\"\n\
             www 300 IN CNAME host\n\
             host 300 IN A 192.0.2.1\n\
             a.b.c 300 IN A 192.0.2.2\n\
             *.wild 300 IN TXT \"wild\"\n\
             $ORIGIN 2.0.192.in-addr.arpa.\n\
             1 300 IN PTR Host.Example.COM.\n",
            None,
        )
        .unwrap();
        z.add_timeout("slow.example.com");
        z
    }

    fn ask(z: &Zone, name: &str, t: RecordType) -> Option<(ResponseCode, usize)> {
        let q = Query::query(Name::from_ascii(name).unwrap(), t);
        z.answer(&q).map(|(c, a)| (c, a.len()))
    }

    #[test]
    fn answers_like_an_authoritative_server() {
        let z = zone();
        assert_eq!(
            ask(&z, "example.com.", RecordType::TXT),
            Some((ResponseCode::NoError, 1))
        );
        assert_eq!(
            ask(&z, "www.example.com.", RecordType::A),
            Some((ResponseCode::NoError, 2))
        );
        // Empty non-terminal exists (RFC 8020), an unknown name does not.
        assert_eq!(
            ask(&z, "b.c.example.com.", RecordType::A),
            Some((ResponseCode::NoError, 0))
        );
        assert_eq!(
            ask(&z, "nope.example.com.", RecordType::A),
            Some((ResponseCode::NXDomain, 0))
        );
        assert_eq!(
            ask(&z, "other.org.", RecordType::TXT),
            Some((ResponseCode::NXDomain, 0))
        );
        assert_eq!(
            ask(&z, "x.wild.example.com.", RecordType::TXT),
            Some((ResponseCode::NoError, 1))
        );
        assert_eq!(ask(&z, "slow.example.com.", RecordType::TXT), None);
    }

    #[tokio::test]
    async fn resolves_through_the_loopback_server() {
        let dns = Dns::zones(zone(), Duration::from_millis(300))
            .await
            .unwrap();
        let auth = dns.authenticator().unwrap();
        let found = auth
            .ipv4_lookup("host.example.com", Some(&dns.caches.ipv4))
            .await
            .unwrap();
        assert_eq!(&*found.rrset, &[Ipv4Addr::new(192, 0, 2, 1)]);
        let missing = auth
            .ipv4_lookup("nope.example.com", Some(&dns.caches.ipv4))
            .await;
        assert!(
            matches!(
                missing,
                Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(
                    _
                )))
            ),
            "{missing:?}"
        );
        let started = Instant::now();
        let slow = auth
            .ipv4_lookup("slow.example.com", Some(&dns.caches.ipv4))
            .await;
        assert!(
            matches!(
                slow,
                Err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(_)))
            ),
            "{slow:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "timeout was not honoured"
        );
    }

    #[tokio::test]
    async fn ptr_names_come_from_the_view() {
        let dns = Dns::zones(zone(), Duration::from_millis(300))
            .await
            .unwrap();
        let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        assert_eq!(dns.ptr_name(ip).await.as_deref(), Some("host.example.com"));
        assert_eq!(dns.caches.ptr.len(), 1, "the answer is cached");
        assert_eq!(dns.ptr_name(Ipv4Addr::new(192, 0, 2, 9).into()).await, None);
        assert_eq!(Dns::offline().ptr_name(ip).await, None);
    }

    #[test]
    fn answer_cache_stays_within_its_capacity_and_forgets_the_expired_first() {
        let cache: AnswerCache<Box<str>, u32> = AnswerCache::with_capacity(64);
        let later = Instant::now() + Duration::from_secs(3600);
        // A sender who makes the engine ask 10,000 distinct names.
        for n in 0..10_000u32 {
            cache.insert(format!("s{n}.attacker.example").into(), n, later);
            assert!(
                cache.len() <= 64,
                "{} entries after {n} inserts",
                cache.len()
            );
        }
        // The newest answer is always kept.
        assert_eq!(cache.get("s9999.attacker.example"), Some(9999));

        // Expired answers go before any live one.
        let cache: AnswerCache<Box<str>, u32> = AnswerCache::with_capacity(8);
        let past = Instant::now() - Duration::from_secs(1);
        for n in 0..7u32 {
            cache.insert(format!("old{n}.example").into(), n, past);
        }
        cache.insert("live.example".into(), 100, later);
        cache.insert("new.example".into(), 101, later);
        assert_eq!(cache.len(), 2, "the seven expired answers were evicted");
        assert_eq!(cache.get("live.example"), Some(100));
        assert_eq!(cache.get("new.example"), Some(101));
    }
}
