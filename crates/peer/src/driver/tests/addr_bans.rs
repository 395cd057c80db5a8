//! A banned peer coming back under a new identity from the same listen address is
//! banned at once; honest peers sharing its IP (all of them, on loopback) are not.

use std::net::SocketAddr;

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A peer connecting in from loopback and announcing `listen` on it.
fn arrive(s: &mut Sim, peer: PeerId, listen: &str) {
    s.handle(Event::Connected(peer));
    s.handle(Event::Endpoint {
        peer,
        remote: sa("127.0.0.1:50001"),
        dialled: false,
    });
    s.handle(Event::PeerAddrs {
        peer,
        addrs: vec![listen.as_bytes().to_vec()],
        listen: vec![sa(listen)],
    });
}

#[test]
fn a_banned_peer_back_under_a_new_identity_at_its_address_is_banned_at_once() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 50)]);
    let bad = PeerId::random();
    arrive(&mut s, bad, "127.0.0.1:4100");
    s.handle(Event::InboundFailed {
        peer: bad,
        reply: None,
        error: "oversized frame".into(),
        violation: true,
        slow_reader: false,
    });
    assert_eq!(s.disconnects(), vec![bad]);
    s.handle(Event::Disconnected(bad));
    s.take();

    // Fresh identity, same process: it announces the same listen address.
    let again = PeerId::random();
    arrive(&mut s, again, "127.0.0.1:4100");
    assert_eq!(s.disconnects(), vec![again], "refused at once");
    let st = s.status();
    assert_eq!(st.bans.banned_address, 1);
    assert_eq!(st.connections_denied.get("banned_address"), Some(&1));
    s.handle(Event::Disconnected(again));
    s.take();
    // A third identity we dial at that address is caught the same way.
    let third = PeerId::random();
    s.handle(Event::Connected(third));
    s.handle(Event::Endpoint {
        peer: third,
        remote: sa("127.0.0.1:4100"),
        dialled: true,
    });
    assert_eq!(s.disconnects(), vec![third]);
    s.handle(Event::Disconnected(third));
    s.take();

    // An honest agent next to it on loopback, another port: untouched.
    let honest = PeerId::random();
    arrive(&mut s, honest, "127.0.0.1:4101");
    assert!(s.disconnects().is_empty());
    assert_eq!(s.status().peers, 1);
    // The banned identity itself reconnecting counts as a denied connection too.
    s.handle(Event::Connected(bad));
    assert_eq!(s.status().connections_denied.get("banned_peer"), Some(&1));
}

#[test]
fn an_address_claimed_on_another_ip_is_never_banned() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 51)]);
    // A hostile peer connecting from 10.0.0.9 claims an honest node's address.
    let bad = PeerId::random();
    s.handle(Event::Connected(bad));
    s.handle(Event::Endpoint {
        peer: bad,
        remote: sa("10.0.0.9:40000"),
        dialled: false,
    });
    s.handle(Event::PeerAddrs {
        peer: bad,
        addrs: Vec::new(),
        listen: vec![sa("10.0.0.5:4001"), sa("10.0.0.9:4001")],
    });
    s.handle(Event::InboundFailed {
        peer: bad,
        reply: None,
        error: "garbage".into(),
        violation: true,
        slow_reader: false,
    });
    s.handle(Event::Disconnected(bad));
    s.take();
    let honest = PeerId::random();
    s.handle(Event::Connected(honest));
    s.handle(Event::Endpoint {
        peer: honest,
        remote: sa("10.0.0.5:4001"),
        dialled: true,
    });
    assert!(
        s.disconnects().is_empty(),
        "the honest node keeps its address"
    );
    assert_eq!(s.status().bans.banned_address, 0);
}

#[test]
fn connections_refused_by_a_limit_are_counted() {
    let (mut s, _) = Sim::new(&[&blob(CHUNK, 52)]);
    s.handle(Event::ConnectionDenied);
    s.handle(Event::ConnectionDenied);
    assert_eq!(s.status().connections_denied.get("limit"), Some(&2));
}
