//! A small behaviour bounding the inbound connections one remote IP may hold, so one
//! host minting identities cannot take every connection slot `connection_limits`
//! leaves. Loopback is exempt: tests (and a node's own tools) run every agent on
//! 127.0.0.1, and a process on the node itself is not the remote attacker this is for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound connections kept per remote IP. One agent per cluster node is the norm
/// (a few connections each way while dials race); 16 leaves room for several agents
/// behind one SNAT address while one host still cannot fill the 256 connection slots.
pub(crate) const MAX_INBOUND_PER_IP: u32 = 16;

/// An inbound connection refused because its IP holds the maximum already.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already holds {max} inbound connections")]
pub(crate) struct IpLimitExceeded {
    /// The remote IP.
    pub(crate) ip: IpAddr,
    /// The limit.
    pub(crate) max: u32,
}

/// Counts established inbound connections per remote IP and refuses those over
/// [`MAX_INBOUND_PER_IP`].
#[derive(Debug)]
pub(crate) struct IpLimit {
    max: u32,
    per_ip: HashMap<IpAddr, u32>,
    conns: HashMap<ConnectionId, IpAddr>,
}

impl IpLimit {
    /// A limit of `max` inbound connections per non-loopback IP.
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max,
            per_ip: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// The IP an inbound connection counts against, or None when it is exempt.
    fn counted_ip(remote: &Multiaddr) -> Option<IpAddr> {
        let ip = match remote.iter().next()? {
            Protocol::Ip4(ip) => IpAddr::V4(ip),
            Protocol::Ip6(ip) => IpAddr::V6(ip),
            _ => return None,
        };
        (!ip.is_loopback()).then_some(ip)
    }

    fn check(&self, remote: &Multiaddr) -> Result<Option<IpAddr>, ConnectionDenied> {
        let Some(ip) = Self::counted_ip(remote) else {
            return Ok(None);
        };
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.max {
            return Err(ConnectionDenied::new(IpLimitExceeded { ip, max: self.max }));
        }
        Ok(Some(ip))
    }
}

impl NetworkBehaviour for IpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // Refused before the handshake costs anything.
        self.check(remote).map(|_| ())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = self.check(remote)? {
            *self.per_ip.entry(ip).or_default() += 1;
            self.conns.insert(id, ip);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) = event
            && let Some(ip) = self.conns.remove(&connection_id)
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_ip_gets_its_share_and_loopback_is_exempt() {
        let mut l = IpLimit::new(2);
        let remote = addr("/ip4/10.0.0.7/tcp/40000");
        let local = addr("/ip4/10.0.0.1/tcp/4001");
        let peer = PeerId::random();
        for i in 0..2 {
            l.handle_established_inbound_connection(
                ConnectionId::new_unchecked(i),
                peer,
                &local,
                &remote,
            )
            .unwrap();
        }
        let third =
            l.handle_pending_inbound_connection(ConnectionId::new_unchecked(2), &local, &remote);
        let denied = third.unwrap_err();
        assert!(denied.downcast_ref::<IpLimitExceeded>().is_some());
        // Another IP, and loopback, are not affected.
        let other = addr("/ip4/10.0.0.8/tcp/40000");
        assert!(
            l.handle_pending_inbound_connection(ConnectionId::new_unchecked(3), &local, &other)
                .is_ok()
        );
        let lo = addr("/ip4/127.0.0.1/tcp/40000");
        for i in 10..20 {
            l.handle_established_inbound_connection(
                ConnectionId::new_unchecked(i),
                peer,
                &local,
                &lo,
            )
            .unwrap();
        }
    }
}
