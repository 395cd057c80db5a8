//! Bootstrap by DNS name (`--bootstrap dns:NAME:PORT`): in Kubernetes the seeder's pod IP
//! changes with every restart, while the name of a headless Service keeps resolving to
//! whatever pods back it. The name is resolved (A and AAAA records, through the system
//! resolver) at start and again periodically, every address is dialled, and new addresses
//! are dialled as they appear, so agents find a seeder that starts later or moves.
//!
//! The decisions (what to dial, what to log, when to look again) are [`Tracker`], a plain
//! state machine fed with resolution results; [`run`] is the I/O around it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::status::AgentStatus;

/// Re-resolution period while the node has neighbours.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// Re-resolution (and re-dial) period while the node has no neighbour at all.
pub(crate) const RESOLVE_EVERY_WHEN_ALONE: Duration = Duration::from_secs(5);
/// A lookup taking longer than this counts as failed for this round.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which address families of a name are dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A and AAAA records (`dns:` and `/dns/`).
    Any,
    /// A records only (`/dns4/`).
    V4,
    /// AAAA records only (`/dns6/`).
    V6,
}

/// A bootstrap name: resolved periodically, every address dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsBootstrap {
    /// Host name (e.g. the headless Service `blobswarm-seeder-peers`).
    pub name: String,
    /// TCP port of the swarm on every address.
    pub port: u16,
    /// Address families to dial.
    pub family: Family,
}

impl fmt::Display for DnsBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::Any => write!(f, "dns:{}:{}", self.name, self.port),
            Family::V4 => write!(f, "/dns4/{}/tcp/{}", self.name, self.port),
            Family::V6 => write!(f, "/dns6/{}/tcp/{}", self.name, self.port),
        }
    }
}

/// A bootstrap argument that does not parse; names the argument and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    /// Not of the form `dns:NAME:PORT`.
    #[error("{input:?}: expected dns:NAME:PORT")]
    NotDns {
        /// The argument.
        input: String,
    },
    /// `dns:NAME` without a port.
    #[error("{input:?}: expected dns:NAME:PORT (no port)")]
    NoPort {
        /// The argument.
        input: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("{input:?}: port {port:?} is not a number from 1 to 65535")]
    BadPort {
        /// The argument.
        input: String,
        /// The port as given.
        port: String,
    },
    /// Port 0.
    #[error("{input:?}: port 0 cannot be dialled")]
    PortZero {
        /// The argument.
        input: String,
    },
    /// The name is not a DNS name.
    #[error("{input:?}: {reason}")]
    BadName {
        /// The argument.
        input: String,
        /// What is wrong with the name.
        reason: NameError,
    },
    /// Neither `dns:NAME:PORT` nor a multiaddr.
    #[error("{input:?}: neither dns:NAME:PORT nor a multiaddr ({reason})")]
    NotAddress {
        /// The argument.
        input: String,
        /// The multiaddr parser's error.
        reason: String,
    },
}

/// Why a name is not a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than 253 characters.
    #[error("the name must have 1 to 253 characters")]
    Length,
    /// A character outside letters, digits, `-`, `.` and `_`.
    #[error("{0:?} is not a DNS name")]
    Characters(String),
}

impl FromStr for DnsBootstrap {
    type Err = BootstrapError;

    /// Parses `dns:NAME:PORT`.
    fn from_str(s: &str) -> Result<Self, BootstrapError> {
        let input = || s.to_owned();
        let rest = s
            .strip_prefix("dns:")
            .ok_or_else(|| BootstrapError::NotDns { input: input() })?;
        let (name, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| BootstrapError::NoPort { input: input() })?;
        let port: u16 = port.parse().map_err(|_| BootstrapError::BadPort {
            input: input(),
            port: port.to_owned(),
        })?;
        if port == 0 {
            return Err(BootstrapError::PortZero { input: input() });
        }
        check_name(name).map_err(|reason| BootstrapError::BadName {
            input: input(),
            reason,
        })?;
        Ok(Self {
            name: name.to_owned(),
            port,
            family: Family::Any,
        })
    }
}

impl DnsBootstrap {
    /// `/dns/NAME/tcp/PORT` (and `dns4`, `dns6`) multiaddrs: libp2p is built without its
    /// DNS transport, so such addresses are resolved here instead. None for any other form.
    pub fn from_multiaddr(addr: &Multiaddr) -> Option<Self> {
        let mut it = addr.iter();
        let (name, family) = match it.next()? {
            Protocol::Dns(n) => (n, Family::Any),
            Protocol::Dns4(n) => (n, Family::V4),
            Protocol::Dns6(n) => (n, Family::V6),
            _ => return None,
        };
        let Some(Protocol::Tcp(port)) = it.next() else {
            return None;
        };
        if it.next().is_some() || port == 0 || check_name(&name).is_err() {
            return None;
        }
        Some(Self {
            name: name.into_owned(),
            port,
            family,
        })
    }
}

fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 253 {
        return Err(NameError::Length);
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(NameError::Characters(name.to_owned()));
    }
    Ok(())
}

/// A bootstrap argument: a multiaddr dialled as it is, or a name resolved periodically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `/ip4/…/tcp/…[/p2p/…]`.
    Addr(Multiaddr),
    /// `dns:NAME:PORT` or `/dns[46]/NAME/tcp/PORT`.
    Dns(DnsBootstrap),
}

impl FromStr for Bootstrap {
    type Err = BootstrapError;

    fn from_str(s: &str) -> Result<Self, BootstrapError> {
        if s.starts_with("dns:") {
            return s.parse().map(Self::Dns);
        }
        let addr: Multiaddr = s.parse().map_err(|e| BootstrapError::NotAddress {
            input: s.to_owned(),
            reason: format!("{e}"),
        })?;
        Ok(DnsBootstrap::from_multiaddr(&addr).map_or(Self::Addr(addr), Self::Dns))
    }
}

/// What one resolution round asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Addresses to dial now.
    pub(crate) dial: Vec<Multiaddr>,
    /// A line to log (only when the outcome changed).
    pub(crate) log: Option<LogLine>,
}

/// A change in what the name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogLine {
    /// It resolves, to these addresses (changed from before).
    Resolved(Vec<SocketAddr>),
    /// It does not resolve (or to nothing usable), for this reason (changed from before).
    Failed(String),
}

/// Remembers the last outcome for one name, so that only new addresses are dialled while
/// the node has neighbours, and so each change is logged once.
#[derive(Debug)]
pub(crate) struct Tracker {
    target: DnsBootstrap,
    /// The last successful answer (kept through failed lookups, so a flapping resolver
    /// does not cause redials when the name comes back unchanged).
    addrs: BTreeSet<SocketAddr>,
    /// Why the last lookup failed (None: it succeeded, or none has run).
    failing: Option<String>,
}

impl Tracker {
    pub(crate) fn new(target: DnsBootstrap) -> Self {
        Self {
            target,
            addrs: BTreeSet::new(),
            failing: None,
        }
    }

    /// Takes one lookup result. `alone`: the node has no neighbour, so every address is
    /// dialled again (the seeder may have come up on the same address since the last try).
    pub(crate) fn on_lookup(
        &mut self,
        result: Result<Vec<SocketAddr>, String>,
        alone: bool,
    ) -> Plan {
        let result = result.and_then(|addrs| {
            let kept: BTreeSet<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match self.target.family {
                    Family::Any => true,
                    Family::V4 => a.is_ipv4(),
                    Family::V6 => a.is_ipv6(),
                })
                .map(|a| SocketAddr::new(a.ip(), self.target.port))
                .collect();
            if kept.is_empty() {
                Err("no usable address".to_owned())
            } else {
                Ok(kept)
            }
        });
        match result {
            Ok(now) => {
                let log = (self.failing.is_some() || now != self.addrs)
                    .then(|| LogLine::Resolved(now.iter().copied().collect()));
                let dial = now
                    .iter()
                    .filter(|a| alone || !self.addrs.contains(a))
                    .map(|a| to_multiaddr(*a))
                    .collect();
                self.addrs = now;
                self.failing = None;
                Plan { dial, log }
            }
            Err(e) => {
                let log = (self.failing.as_ref() != Some(&e)).then(|| LogLine::Failed(e.clone()));
                self.failing = Some(e);
                Plan {
                    dial: Vec::new(),
                    log,
                }
            }
        }
    }
}

/// Delay until the next lookup.
pub(crate) fn next_delay(alone: bool) -> Duration {
    if alone {
        RESOLVE_EVERY_WHEN_ALONE
    } else {
        RESOLVE_EVERY
    }
}

fn to_multiaddr(a: SocketAddr) -> Multiaddr {
    let ip = match a.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(a.port()))
}

async fn lookup(target: &DnsBootstrap) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((target.name.as_str(), target.port)),
    )
    .await
    {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())),
    }
}

/// Resolves `target` now and then for as long as `dial` accepts addresses (it returns
/// false once the agent has stopped).
pub(crate) async fn run(
    target: DnsBootstrap,
    status: watch::Receiver<AgentStatus>,
    dial: impl Fn(Multiaddr) -> bool + Send,
) {
    let mut tracker = Tracker::new(target.clone());
    loop {
        let result = lookup(&target).await;
        let alone = status.borrow().peers == 0;
        let plan = tracker.on_lookup(result, alone);
        match plan.log {
            Some(LogLine::Resolved(addrs)) => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                info!(bootstrap = %target, addresses = %addrs.join(","), "bootstrap name resolved");
            }
            Some(LogLine::Failed(e)) => {
                warn!(bootstrap = %target, error = %e, "bootstrap name does not resolve; trying again every {} s", RESOLVE_EVERY_WHEN_ALONE.as_secs());
            }
            None => {}
        }
        for addr in plan.dial {
            if !dial(addr) {
                return;
            }
        }
        let delay = next_delay(status.borrow().peers == 0);
        tokio::time::sleep(delay).await;
        if status.has_changed().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn target(family: Family) -> DnsBootstrap {
        DnsBootstrap {
            name: "seeder".into(),
            port: 4001,
            family,
        }
    }

    #[test]
    fn parses_dns_forms_and_refuses_bad_ones() {
        let d: DnsBootstrap = "dns:blobswarm-seeder-peers:4001".parse().unwrap();
        assert_eq!(
            (d.name.as_str(), d.port, d.family),
            ("blobswarm-seeder-peers", 4001, Family::Any)
        );
        assert_eq!(d.to_string(), "dns:blobswarm-seeder-peers:4001");
        for bad in [
            "dns:name",
            "dns::4001",
            "dns:name:0",
            "dns:name:70000",
            "dns:na me:1",
            "seeder:1",
        ] {
            assert!(bad.parse::<DnsBootstrap>().is_err(), "{bad} accepted");
        }
        assert!(matches!(
            "/ip4/127.0.0.1/tcp/4001".parse::<Bootstrap>(),
            Ok(Bootstrap::Addr(_))
        ));
        match "/dns4/seeder.ns.svc/tcp/4001".parse::<Bootstrap>() {
            Ok(Bootstrap::Dns(d)) => assert_eq!(
                (d.name.as_str(), d.port, d.family),
                ("seeder.ns.svc", 4001, Family::V4)
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            "dns:localhost:9".parse::<Bootstrap>(),
            Ok(Bootstrap::Dns(_))
        ));
        assert!("dns:localhost".parse::<Bootstrap>().is_err());
        assert!("nonsense".parse::<Bootstrap>().is_err());
    }

    #[test]
    fn dials_new_addresses_and_logs_each_change_once() {
        let mut t = Tracker::new(target(Family::Any));
        // Not there yet: logged once, nothing dialled.
        let p = t.on_lookup(Err("no such name".into()), true);
        assert_eq!(
            p,
            Plan {
                dial: vec![],
                log: Some(LogLine::Failed("no such name".into()))
            }
        );
        assert_eq!(
            t.on_lookup(Err("no such name".into()), true),
            Plan::default()
        );
        // The seeder appears: dialled and logged; the port is the configured one.
        let p = t.on_lookup(Ok(vec![sa("127.0.0.5:9"), sa("127.0.0.5:9")]), true);
        assert_eq!(
            p.dial,
            vec!["/ip4/127.0.0.5/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!(p.log, Some(LogLine::Resolved(vec![sa("127.0.0.5:4001")])));
        // Connected now: same answer, nothing to do.
        assert_eq!(
            t.on_lookup(Ok(vec![sa("127.0.0.5:4001")]), false),
            Plan::default()
        );
        // Alone again (the seeder went away): the same address is dialled again, no log.
        let p = t.on_lookup(Ok(vec![sa("127.0.0.5:4001")]), true);
        assert_eq!((p.dial.len(), p.log), (1, None));
        // A second pod: only the new address is dialled while connected; logged.
        let p = t.on_lookup(Ok(vec![sa("127.0.0.5:4001"), sa("127.0.0.6:4001")]), false);
        assert_eq!(
            p.dial,
            vec!["/ip4/127.0.0.6/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        assert!(matches!(p.log, Some(LogLine::Resolved(ref a)) if a.len() == 2));
        // The resolver fails once: logged; it recovers unchanged: logged, nothing redialled.
        let p = t.on_lookup(Err("timeout".into()), false);
        assert_eq!(p.log, Some(LogLine::Failed("timeout".into())));
        let p = t.on_lookup(Ok(vec![sa("127.0.0.5:4001"), sa("127.0.0.6:4001")]), false);
        assert!(p.dial.is_empty());
        assert!(matches!(p.log, Some(LogLine::Resolved(_))));
    }

    #[test]
    fn family_filters_and_delays() {
        let mut t = Tracker::new(target(Family::V4));
        let p = t.on_lookup(Ok(vec![sa("[::1]:1"), sa("127.0.0.1:1")]), true);
        assert_eq!(
            p.dial,
            vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        let mut t = Tracker::new(target(Family::V6));
        let p = t.on_lookup(Ok(vec![sa("127.0.0.1:1")]), true);
        assert_eq!(p.log, Some(LogLine::Failed("no usable address".into())));
        assert!(p.dial.is_empty());
        assert!(next_delay(true) < next_delay(false));
    }
}
