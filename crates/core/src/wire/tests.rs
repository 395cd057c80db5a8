//! Round trips and caps of every wire message.

use super::*;
use crate::codec::{self, CodecError};

fn sample_map() -> ChunkMap {
    crate::chunk_map_of(&vec![7u8; 100_000], crate::MIN_CHUNK_SIZE).unwrap()
}

fn reason_free_report() -> ProgressReport {
    ProgressReport {
        node_name: String::new(),
        sent_ms: 1,
        peers: 0,
        releases: Vec::new(),
        cert: None,
        bans: Vec::new(),
    }
}

#[test]
fn progress_reports_round_trip_and_caps_hold() {
    let r = ProgressReport {
        node_name: "node-1".into(),
        sent_ms: 5,
        peers: 3,
        releases: vec![ReleaseProgress {
            release: Digest::of(b"r"),
            state: ProgressState::Failed("disk full".into()),
            have_bytes: 1,
            total_bytes: 2,
            rate: 9,
        }],
        cert: Some(
            crate::enroll::NodeCert::issue(
                &libp2p_identity::Keypair::generate_ed25519(),
                &crate::enroll::CertBody {
                    node_name: "node-1".into(),
                    peer: libp2p_identity::PeerId::random().to_bytes(),
                    issued_unix_ms: 1,
                    expires_unix_ms: 2,
                },
            )
            .unwrap(),
        ),
        bans: vec![ReportedBan {
            peer: "12D3KooWrogue".into(),
            offence: Offence::BadChunk,
            remaining_secs: 290,
        }],
    };
    let bytes = codec::encode(&r).unwrap();
    assert_eq!(ProgressReport::decode(&bytes).unwrap(), r);
    let mut bans = r.clone();
    bans.bans = vec![r.bans[0].clone(); MAX_REPORT_BANS + 1];
    let err = ProgressReport::decode(&codec::encode(&bans).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 8"), "{err}");
    bans.bans = vec![ReportedBan {
        peer: "p".repeat(MAX_BANNED_PEER + 1),
        ..r.bans[0].clone()
    }];
    let err = ProgressReport::decode(&codec::encode(&bans).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("banned peer"), "{err}");
    let mut long = r.clone();
    long.node_name = "x".repeat(MAX_NODE_NAME + 1);
    let err = ProgressReport::decode(&codec::encode(&long).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("node name"), "{err}");
    let mut many = r.clone();
    many.releases = vec![r.releases[0].clone(); MAX_REPORT_RELEASES + 1];
    assert!(ProgressReport::decode(&codec::encode(&many).unwrap()).is_err());
    let mut reason = r;
    reason.releases[0].state = ProgressState::Failed("y".repeat(MAX_REASON + 1));
    let err = ProgressReport::decode(&codec::encode(&reason).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("reason"), "{err}");
    let err = ProgressReport::decode(&vec![0u8; MAX_REPORT_BYTES + 1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds"), "{err}");
    // A name whose length field claims 8 MB in a 59-byte message is refused from the
    // claim, before anything that size is allocated.
    let mut claim = codec::encode(&ProgressReport {
        node_name: "n".into(),
        ..reason_free_report()
    })
    .unwrap();
    claim.splice(0..1, [0xFC, 0x00, 0x12, 0x7A, 0x00]);
    let err = ProgressReport::decode(&claim).unwrap_err().to_string();
    assert!(err.contains("exceeds the limit of 8192"), "{err}");
    assert_eq!(truncate_utf8("héllo", 2), "h");
}

#[test]
fn every_message_round_trips() {
    let reqs = vec![
        Request::Releases,
        Request::Peers,
        Request::ChunkMap {
            blob: Digest::of(b"a"),
        },
        Request::Chunk {
            blob: Digest::of(b"a"),
            index: 7,
        },
        Request::Have {
            blob: Digest::of(b"a"),
            update: HaveUpdate::Full(Bitfield::full(13)),
        },
        Request::Have {
            blob: Digest::of(b"a"),
            update: HaveUpdate::Added(vec![1, 2, 3]),
        },
    ];
    for r in reqs {
        let f = codec::encode_frame(&r, &[]).unwrap();
        let (back, payload): (Request, _) = codec::decode_frame(&f).unwrap();
        assert_eq!(back, r);
        assert!(payload.is_empty());
        back.validate().unwrap();
    }
    let resps = vec![
        Response::Peers(vec![PeerRecord {
            peer: vec![1, 2],
            addrs: vec![vec![3]],
        }]),
        Response::ChunkMap(sample_map()),
        Response::Ack,
        Response::Error(ErrorCode::Busy),
    ];
    for r in resps {
        let f = codec::encode_frame(&r, &[]).unwrap();
        let (back, _): (Response, _) = codec::decode_frame(&f).unwrap();
        assert_eq!(back, r);
        back.validate().unwrap();
    }
    let chunk = Response::Chunk {
        blob: Digest::of(b"x"),
        index: 1,
    };
    let f = codec::encode_frame(&chunk, b"payload bytes").unwrap();
    let (back, payload): (Response, _) = codec::decode_frame(&f).unwrap();
    assert_eq!(back, chunk);
    assert_eq!(payload, b"payload bytes");
}

#[test]
fn truncated_frames_are_errors_at_every_cut() {
    let f = codec::encode_frame(&Response::ChunkMap(sample_map()), b"xyz").unwrap();
    for cut in 0..f.len() {
        let r = codec::decode_frame::<Response>(&f[..cut]);
        assert!(r.is_err(), "cut at {cut} decoded");
    }
    let mut longer = f.clone();
    longer.push(0);
    assert!(matches!(
        codec::decode_frame::<Response>(&longer),
        Err(CodecError::Trailing(1))
    ));
}

#[test]
fn truncated_header_is_truncation_not_panic() {
    let h = codec::encode(&Response::ChunkMap(sample_map())).unwrap();
    for cut in 0..h.len() {
        assert!(codec::decode::<Response>(&h[..cut]).is_err());
    }
}

/// Which part of the frame a prefix was refused for as too large (`None`: not refused so).
fn refused_as_too_large<T>(r: Result<T, CodecError>) -> Option<&'static str> {
    match r {
        Err(CodecError::TooLarge { what, .. }) => Some(what),
        _ => None,
    }
}

#[test]
fn oversized_prefix_is_refused_before_allocation() {
    let mut p = [0u8; codec::PREFIX_LEN];
    p[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(refused_as_too_large(codec::parse_prefix(p)), Some("header"));
    let mut p = [0u8; codec::PREFIX_LEN];
    p[4..].copy_from_slice(&((codec::MAX_PAYLOAD as u32) + 1).to_be_bytes());
    assert_eq!(
        refused_as_too_large(codec::parse_prefix(p)),
        Some("payload")
    );
}

#[test]
fn request_prefix_refuses_big_headers_and_any_payload() {
    let full = Request::Have {
        blob: Digest::of(b"a"),
        update: HaveUpdate::Full(Bitfield::full(crate::MAX_CHUNKS)),
    };
    let h = codec::encode(&full).unwrap();
    assert!(
        h.len() <= codec::MAX_REQUEST_HEADER,
        "largest valid request must fit"
    );
    assert_eq!(
        codec::parse_request_prefix(codec::frame_prefix(h.len(), 0).unwrap()).unwrap(),
        h.len()
    );
    let big = codec::frame_prefix(codec::MAX_REQUEST_HEADER + 1, 0).unwrap();
    assert_eq!(
        refused_as_too_large(codec::parse_request_prefix(big)),
        Some("request header")
    );
    let payload = codec::frame_prefix(10, 1).unwrap();
    assert_eq!(
        refused_as_too_large(codec::parse_request_prefix(payload)),
        Some("request payload")
    );
}

#[test]
fn huge_length_field_inside_header_does_not_allocate() {
    // Variant 1 (Peers) followed by a varint length of u64::MAX: a naive decoder would
    // try to allocate 2^64 records.
    let bytes = [1u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let err = codec::decode::<Response>(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::TooLarge { .. } | CodecError::Truncated(_) | CodecError::Malformed(_)
        ),
        "{err:?}"
    );
}

#[test]
fn garbage_is_malformed() {
    assert!(codec::decode::<Request>(&[200, 1, 2]).is_err());
    assert!(codec::decode::<Request>(&[]).is_err());
}

#[test]
fn caps_are_enforced_while_decoding_and_by_validate() {
    let r = Response::Peers(vec![
        PeerRecord {
            peer: vec![],
            addrs: vec![],
        };
        MAX_PEER_RECORDS + 1
    ]);
    assert!(matches!(r.validate(), Err(MessageError::TooMany { .. })));
    let f = codec::encode_frame(&r, &[]).unwrap();
    let err = codec::decode_frame::<Response>(&f).unwrap_err();
    assert!(
        matches!(&err, CodecError::Malformed(m) if m.contains("at most 64")),
        "{err:?}"
    );
}

/// Regression (found while writing the fuzz harnesses): lists of small elements were
/// decoded whole and refused only by `validate`. A `Peers` header of 1 MB holding one
/// record with a million empty addresses (1 byte each on the wire, 24 in memory) made
/// the decoder allocate 50 MB at its peak; a few dozen such responses at once would
/// exhaust an agent's memory.
#[test]
fn over_cap_lists_are_refused_from_their_length_prefix() {
    let peers = Response::Peers(vec![PeerRecord {
        peer: vec![],
        addrs: vec![vec![]; 1_000_000],
    }]);
    let releases_header = {
        // The length prefix alone, claiming u32::MAX releases: nothing follows.
        let mut h = codec::encode(&Response::Releases(vec![])).unwrap();
        h.pop();
        h.extend_from_slice(&[252, 0xff, 0xff, 0xff, 0xff]);
        h
    };
    let added = Request::Have {
        blob: Digest::of(b"a"),
        update: HaveUpdate::Added(vec![0; MAX_HAVE_INDICES + 1]),
    };
    for (what, err) in [
        (
            "peer addresses",
            codec::decode::<Response>(&codec::encode(&peers).unwrap()),
        ),
        ("release list", codec::decode::<Response>(&releases_header)),
    ]
    .into_iter()
    .map(|(w, r)| (w, r.unwrap_err()))
    .chain([(
        "have indices",
        codec::decode::<Request>(&codec::encode(&added).unwrap()).unwrap_err(),
    )]) {
        assert!(
            matches!(&err, CodecError::Malformed(m) if m.contains("at most")),
            "{what}: {err:?}"
        );
    }
    // Exactly at the caps still decodes.
    let at_cap = Response::Peers(vec![
        PeerRecord {
            peer: vec![1],
            addrs: vec![vec![2]; MAX_ADDRS_PER_PEER],
        };
        MAX_PEER_RECORDS
    ]);
    let back: Response = codec::decode(&codec::encode(&at_cap).unwrap()).unwrap();
    assert_eq!(back, at_cap);
    back.validate().unwrap();
}

#[test]
fn swarm_notices_round_trip_and_claims_are_capped() {
    for n in [
        SwarmNotice::SeederAlive,
        SwarmNotice::Claim {
            blob: Digest::of(b"b"),
            indices: vec![0, 7, 4095],
        },
    ] {
        let back: SwarmNotice = codec::decode(&codec::encode(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        assert!(back.validate().is_ok());
    }
    let big = SwarmNotice::Claim {
        blob: Digest::of(b"b"),
        indices: vec![1; MAX_CLAIM_INDICES + 1],
    };
    assert!(big.validate().is_err());
    assert!(
        codec::decode::<SwarmNotice>(&codec::encode(&big).unwrap()).is_err(),
        "an over-long claim is refused while decoding"
    );
}
