//! Received-header hop trace, trust boundary and origin.
//! PLACEHOLDER so the crate builds while the real module is written: the API below is the
//! contract; the implementation replaces this whole file.
use std::net::IpAddr;

pub struct TrustConfig {
    pub internal_networks: Vec<ipnet::IpNet>,
    pub trusted_relays: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Trace {
    pub hops: Vec<Hop>,
    pub origin: Option<Origin>,
    pub anomalies: Vec<Anomaly>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Hop {
    pub index: usize,
    pub raw: String,
    pub parsed: bool,
    pub from_helo: Option<String>,
    pub from_rdns: Option<String>,
    pub from_ip: Option<IpAddr>,
    pub by: Option<String>,
    pub via: Option<String>,
    pub with: Option<String>,
    pub id: Option<String>,
    pub for_addr: Option<String>,
    pub date: Option<String>,
    pub timestamp: Option<i64>,
    pub tls: Option<String>,
    pub delay_secs: Option<i64>,
    pub trusted: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginSource {
    Envelope,
    Received,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Origin {
    pub ip: IpAddr,
    pub helo: Option<String>,
    pub rdns: Option<String>,
    pub hop: Option<usize>,
    pub source: OriginSource,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Anomaly {
    pub code: &'static str,
    pub hop: Option<usize>,
    pub detail: String,
}

pub fn build_trace(
    _headers: &crate::message::Headers<'_>,
    envelope_ip: Option<IpAddr>,
    _trust: &TrustConfig,
    _reference_time: Option<i64>,
) -> Trace {
    Trace {
        hops: Vec::new(),
        origin: envelope_ip.map(|ip| Origin {
            ip,
            helo: None,
            rdns: None,
            hop: None,
            source: OriginSource::Envelope,
        }),
        anomalies: Vec::new(),
    }
}
