//! `unspoof.toml`, the one configuration file: read once, into one type.
//!
//! The policy's keys sit at the top level (the engine's [`Policy`]); each front door and
//! service has its section: `[gateway]`, `[milter]`, `[store]`, `[dmarc]`, `[console]`. The file
//! is parsed once, keeping every key's position, and each part is read into its owner's type
//! from that one parse, so every error names the file, line, column and key
//! (`unspoof.toml:12:1: gateway.limits.max_rcpt: unknown field ...`). Unknown keys are errors
//! everywhere: a mail administrator's typo must never silently do nothing.
//!
//! The engine knows none of the doors' sections; what the policy needs from one of them
//! (`[gateway] gateway_names`, the hub of `hub.bypass`) is handed to it here.
//! `tests` below checks `examples/unspoof.toml` and the docs' tables of keys against the types.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, Item, Table};
use unspoof_console::ConsoleConfig;
use unspoof_engine::Policy;
use unspoof_gateway::GatewayConfig;
use unspoof_milter::MilterConfig;
use unspoof_reports::DmarcConfig;
use unspoof_store::StoreConfig;

/// The sections that are not the policy's, each read by its own type.
pub const SECTIONS: [&str; 5] = ["gateway", "milter", "store", "dmarc", "console"];

/// The whole `unspoof.toml`. A section the file does not have holds its defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy: the top-level keys and `[actions]`, `[tag]`, `[[protected_people]]`, ...
    pub policy: Policy,
    pub gateway: GatewayConfig,
    pub milter: MilterConfig,
    /// `[store]` as written; the front doors fill in its data directory and node name where
    /// it sets none ([`crate::store_adapter::store_config`]).
    pub store: StoreConfig,
    pub dmarc: DmarcConfig,
    pub console: ConsoleConfig,
    /// Every key the file sets, as a dotted path (`hostname`, `gateway`, `gateway.hostname`,
    /// `store.node`): where a door's default depends on whether a key was written.
    set: BTreeSet<String>,
}

impl Default for Config {
    fn default() -> Self {
        let gateway = GatewayConfig::default();
        let mut policy = Policy::default();
        policy.gateway_names = gateway.gateway_names.clone();
        Config {
            policy,
            gateway,
            milter: MilterConfig::default(),
            store: StoreConfig::default(),
            dmarc: DmarcConfig::default(),
            console: ConsoleConfig::default(),
            set: BTreeSet::new(),
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `key` is the dotted path of the key at fault (empty for a file that is not TOML).
    #[error("{path}:{line}:{column}: {}{message}", key_prefix(key))]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The file at `path`, or every default without one.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::load(path),
            None => Ok(Config::default()),
        }
    }

    /// Parses and checks the text of an `unspoof.toml`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let file = File { text, origin };
        let doc = ImDocument::parse(text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            file.invalid_at(at, String::new(), e.message().to_string())
        })?;
        let root = doc.as_table();
        let mut policy_keys = root.clone();
        for name in SECTIONS {
            policy_keys.remove(name);
        }
        let mut policy: Policy = file.read(policy_keys, "")?;
        let gateway: GatewayConfig = file.section(root, "gateway")?;
        let gateway = file.checked(root, "gateway", gateway.validated())?;
        let milter: MilterConfig = file.section(root, "milter")?;
        let milter = file.checked(root, "milter", milter.validated())?;
        let store: StoreConfig = file.section(root, "store")?;
        let dmarc: DmarcConfig = file.section(root, "dmarc")?;
        let dmarc = file.checked(root, "dmarc", dmarc.validated())?;
        let console: ConsoleConfig = file.section(root, "console")?;
        let console = file.checked(root, "console", console.validated())?;
        policy.gateway_names = gateway.gateway_names.clone();
        if let Err(e) = policy.validate() {
            let at = span_of(root, &e.key).map(|s| s.start).unwrap_or(0);
            return Err(file.invalid_at(at, e.key, e.message));
        }
        let mut set = BTreeSet::new();
        collect_keys(root, "", &mut set);
        Ok(Config {
            policy,
            gateway,
            milter,
            store,
            dmarc,
            console,
            set,
        })
    }

    /// Whether the file sets `key`, a dotted path (`hostname`, `gateway.domains`, `store`).
    pub fn sets(&self, key: &str) -> bool {
        self.set.contains(key)
    }
}

/// The text being read, for turning positions into lines and columns.
struct File<'a> {
    text: &'a str,
    origin: &'a str,
}

impl File<'_> {
    fn invalid_at(&self, at: usize, key: String, message: String) -> ConfigError {
        let at = at.min(self.text.len());
        let before = &self.text.as_bytes()[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self.text[line_start..]
            .char_indices()
            .take_while(|(i, _)| line_start + i < at)
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.origin.to_string(),
            line,
            column,
            key,
            message,
        }
    }

    /// `table` (positions kept from the parse) read into `T`; an error names its key, a path
    /// under `prefix` (`gateway.` for the gateway's section).
    fn read<T: DeserializeOwned>(&self, table: Table, prefix: &str) -> Result<T, ConfigError> {
        let positions = table.clone();
        let doc = toml_edit::DocumentMut::from(table);
        T::deserialize(doc.into_deserializer()).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let key = match key_at(&positions, at) {
                Some(k) => format!("{prefix}{k}"),
                None => prefix.trim_end_matches('.').to_string(),
            };
            self.invalid_at(at, key, e.message().to_string())
        })
    }

    /// The section `name` of `root` read into `T`, or `T`'s defaults when it is absent.
    fn section<T: DeserializeOwned + Default>(
        &self,
        root: &Table,
        name: &str,
    ) -> Result<T, ConfigError> {
        let Some(item) = root.get(name) else {
            return Ok(T::default());
        };
        match item.clone().into_table() {
            Ok(table) => self.read(table, &format!("{name}.")),
            Err(item) => {
                let at = key_span(root, name).or_else(|| item.span());
                Err(self.invalid_at(
                    at.map(|s| s.start).unwrap_or(0),
                    name.to_string(),
                    format!("must be a section, [{name}]"),
                ))
            }
        }
    }

    /// A section's own check of values that parse but cannot work, placed at the key its
    /// message names (the doors' checks name the key they refuse), else at the section.
    fn checked<T, E: std::fmt::Display>(
        &self,
        root: &Table,
        name: &str,
        result: Result<T, E>,
    ) -> Result<T, ConfigError> {
        result.map_err(|e| {
            let message = e.to_string();
            let message = message.strip_prefix("configuration: ").unwrap_or(&message);
            // "[milter.limits] max_connections ..." and "[dmarc]: ...": the key says where.
            let message = match message.strip_prefix('[').and_then(|m| m.split_once(']')) {
                Some((_, rest)) => rest.trim_start_matches(':').trim_start(),
                None => message,
            };
            let section = root.get(name).and_then(Item::as_table_like);
            let mut key = name.to_string();
            let mut at = root
                .get(name)
                .and_then(Item::span)
                .or_else(|| key_span(root, name));
            if let Some(section) = section {
                let named = message
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .find_map(|w| find_key(section, w, &format!("{name}.")));
                if let Some((path, span)) = named {
                    key = path;
                    at = Some(span);
                } else if section.is_empty() {
                    at = None;
                }
            }
            self.invalid_at(at.map(|s| s.start).unwrap_or(0), key, message.to_string())
        })
    }
}

/// The position of the key `name` of `table`.
fn key_span(table: &Table, name: &str) -> Option<Range<usize>> {
    table.get_key_value(name).and_then(|(k, _)| k.span())
}

/// The position of the key at a dotted path (`gateway.limits.max_recipients`,
/// `protected_people[1]`), searched in every table below `root`, nested sections included.
fn span_of(root: &Table, path: &str) -> Option<Range<usize>> {
    let mut table: &dyn toml_edit::TableLike = root;
    let mut span = None;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let (key, item) = table.get_key_value(name)?;
        span = key.span().or_else(|| item.span());
        let item = match (index, item) {
            (Some(n), Item::ArrayOfTables(a)) => {
                let t = a.get(n)?;
                span = t.span().or(span);
                return if i + 1 == parts.len() {
                    span
                } else {
                    span_of(t, &parts[i + 1..].join(".")).or(span)
                };
            }
            (_, item) => item,
        };
        if i + 1 < parts.len() {
            table = item.as_table_like()?;
        }
    }
    span
}

/// The first key called `name` in `table` or a table below it: its dotted path under `prefix`
/// and its position.
fn find_key(
    table: &dyn toml_edit::TableLike,
    name: &str,
    prefix: &str,
) -> Option<(String, Range<usize>)> {
    if let Some((key, item)) = table.get_key_value(name) {
        if let Some(span) = key.span().or_else(|| item.span()) {
            return Some((format!("{prefix}{name}"), span));
        }
    }
    table.iter().find_map(|(k, item)| {
        let t = item.as_table_like()?;
        find_key(t, name, &format!("{prefix}{k}."))
    })
}

/// The dotted path of the key whose name or value holds the position `at`.
fn key_at(table: &dyn toml_edit::TableLike, at: usize) -> Option<String> {
    let inside =
        |s: Option<Range<usize>>| s.is_some_and(|s| s.start <= at && at < s.end.max(s.start + 1));
    for (name, item) in table.iter() {
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        let below = match item {
            Item::Table(t) => key_at(t, at),
            Item::Value(toml_edit::Value::InlineTable(t)) => key_at(t, at),
            Item::ArrayOfTables(a) => a.iter().enumerate().find_map(|(i, t)| {
                key_at(t, at)
                    .map(|k| format!("[{i}].{k}"))
                    .or_else(|| inside(t.span()).then(|| format!("[{i}]")))
            }),
            Item::Value(toml_edit::Value::Array(a)) => {
                a.iter().enumerate().find_map(|(i, v)| match v {
                    toml_edit::Value::InlineTable(t) => key_at(t, at).map(|k| format!("[{i}].{k}")),
                    _ => None,
                })
            }
            _ => None,
        };
        if let Some(below) = below {
            let sep = if below.starts_with('[') { "" } else { "." };
            return Some(format!("{name}{sep}{below}"));
        }
        if inside(key_span) || inside(item.span()) {
            return Some(name.to_string());
        }
    }
    None
}

/// Every key of `table` as a dotted path under `prefix`.
fn collect_keys(table: &dyn toml_edit::TableLike, prefix: &str, out: &mut BTreeSet<String>) {
    for (name, item) in table.iter() {
        let path = format!("{prefix}{name}");
        if let Some(t) = item.as_table_like() {
            collect_keys(t, &format!("{path}."), out);
        }
        out.insert(path);
    }
}

#[cfg(test)]
mod tests;
