//! Segment signing, decoding bounds and assembly, each refusal named by its variant.

use std::ops::Range;

use libp2p_identity::Keypair;

use super::*;
use crate::{MIN_CHUNK_SIZE, SignedRelease, chunk_map_of, release_blob};

const CS: u32 = MIN_CHUNK_SIZE;

/// One blob in a signed release, with the bytes to cut segments and chunks from.
struct Fixture {
    key: Keypair,
    release: Release,
    id: ReleaseId,
    data: Vec<u8>,
    map: ChunkMap,
}

fn fixture(len: usize) -> Fixture {
    let key = Keypair::generate_ed25519();
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let map = chunk_map_of(&data, CS).unwrap();
    let blobs = vec![release_blob(&map, "application/octet-stream")];
    let release = Release::minimal("registry.local/app:v1", blobs, &key.public().to_peer_id());
    let id = SignedRelease::sign(&release, &key).unwrap().id();
    Fixture {
        key,
        release,
        id,
        data,
        map,
    }
}

impl Fixture {
    fn chunk(&self, index: u32) -> &[u8] {
        let r = self.map.range(index).unwrap();
        &self.data[r.start as usize..r.end as usize]
    }

    fn segment(&self, range: Range<u32>) -> Segment {
        Segment {
            release: self.id,
            blob: self.map.blob(),
            first: range.start,
            hashes: range
                .map(|i| *Digest::of(self.chunk(i)).as_bytes())
                .collect(),
        }
    }

    fn signed(&self, range: Range<u32>) -> SignedSegment {
        SignedSegment::sign(&self.segment(range), &self.key).unwrap()
    }

    fn assembler(&self) -> SegmentAssembler {
        SegmentAssembler::new(self.id, &self.release.blobs[0]).unwrap()
    }
}

#[test]
fn out_of_order_segments_complete_the_map() {
    let f = fixture(5 * CS as usize + 123); // 6 chunks, a short last one
    let mut a = f.assembler();
    assert_eq!(a.count(), 6);
    for (range, added) in [(4..6, vec![4, 5]), (0..2, vec![0, 1]), (1..4, vec![2, 3])] {
        assert!(!a.is_complete());
        let seg = f.signed(range.clone()).verify(&f.release).unwrap();
        assert_eq!(a.accept(&seg).unwrap(), added);
        for i in range {
            a.verify_chunk(i, f.chunk(i)).unwrap();
        }
    }
    assert!(a.is_complete());
    let map = a.into_chunk_map().unwrap();
    assert_eq!(map, f.map);
    assert_eq!(map.digest(), f.release.blobs[0].chunk_map);
}

/// Boundary sizes, each assembled from two-chunk segments in reverse order.
#[test]
fn boundary_sizes_assemble_to_the_same_map() {
    let cs = CS as usize;
    let cases = [
        (0, 0),           // empty blob: complete at once, no segment fits
        (1, 1),           // one short chunk
        (cs - 1, 1),      // just under one chunk
        (cs, 1),          // exactly one chunk
        (cs + 1, 2),      // one full chunk and a 1-byte tail
        (3 * cs, 3),      // exact multiple
        (3 * cs + 17, 4), // trailing partial chunk
    ];
    for (len, count) in cases {
        let f = fixture(len);
        let mut a = f.assembler();
        assert_eq!(a.count(), count, "len {len}");
        let starts: Vec<u32> = (0..count).step_by(2).collect();
        for &first in starts.iter().rev() {
            a.accept(&f.segment(first..(first + 2).min(count))).unwrap();
        }
        assert!(a.is_complete(), "len {len}");
        assert!(matches!(
            a.accept(&Segment {
                first: count,
                ..f.segment(0..1.min(count))
            }),
            Err(SegmentError::OutOfRange { .. })
        ));
        let last = count.saturating_sub(1);
        if count > 0 {
            a.verify_chunk(last, f.chunk(last)).unwrap();
        }
        assert_eq!(a.into_chunk_map().unwrap(), f.map, "len {len}");
    }
}

#[test]
fn segment_signed_by_another_key_is_refused() {
    let f = fixture(2 * CS as usize);
    let other = Keypair::generate_ed25519();
    let s = SignedSegment::sign(&f.segment(0..2), &other).unwrap();
    assert!(matches!(
        s.verify(&f.release),
        Err(SegmentError::WrongSigner { signer }) if signer == other.public().to_peer_id()
    ));
    let mut s = f.signed(0..2);
    s.public_key = vec![1, 2, 3];
    assert!(matches!(s.verify(&f.release), Err(SegmentError::BadKey)));
}

#[test]
fn tampered_body_or_signature_is_refused() {
    let f = fixture(2 * CS as usize);
    let s = f.signed(0..2);
    assert_eq!(s.verify(&f.release).unwrap(), f.segment(0..2));
    let mut t = s.clone();
    let last = t.body.len() - 1;
    t.body[last] ^= 1;
    assert!(matches!(
        t.verify(&f.release),
        Err(SegmentError::BadSignature(_))
    ));
    let mut t = s;
    t.signature[0] ^= 1;
    assert!(matches!(
        t.verify(&f.release),
        Err(SegmentError::BadSignature(_))
    ));
}

/// A signature made for one kind of message never verifies as the other, even over the
/// very same body bytes. Envelopes are built through the codec: both are three byte lists.
#[test]
fn release_and_segment_signatures_do_not_cross() {
    let f = fixture(CS as usize);
    let trusted = crate::TrustedSeeders::new([f.key.public().to_peer_id()]);
    let public_key = f.key.public().encode_protobuf();
    let envelope = |body: &[u8], context: &[u8]| {
        let signature = f.key.sign(&[context, body].concat()).unwrap();
        codec::encode(&(body, &public_key, signature)).unwrap()
    };
    let seg_body = codec::encode(&f.segment(0..1)).unwrap();
    let good: SignedSegment = codec::decode(&envelope(&seg_body, SIGNING_CONTEXT)).unwrap();
    assert!(good.verify(&f.release).is_ok());
    let as_release: SignedSegment =
        codec::decode(&envelope(&seg_body, b"blobswarm release v1\0")).unwrap();
    assert!(matches!(
        as_release.verify(&f.release),
        Err(SegmentError::BadSignature(_))
    ));
    let rel_body = codec::encode(&f.release).unwrap();
    let good: SignedRelease =
        codec::decode(&envelope(&rel_body, b"blobswarm release v1\0")).unwrap();
    assert!(good.verify(&trusted, 0).is_ok());
    let as_segment: SignedRelease = codec::decode(&envelope(&rel_body, SIGNING_CONTEXT)).unwrap();
    assert!(matches!(
        as_segment.verify(&trusted, 0),
        Err(crate::ReleaseError::BadSignature(_))
    ));
}

#[test]
fn segment_naming_another_release_or_blob_is_refused() {
    let f = fixture(2 * CS as usize);
    let mut a = f.assembler();
    let other = Digest::of(b"other");
    let seg = Segment {
        release: other,
        ..f.segment(0..2)
    };
    assert!(matches!(
        a.accept(&seg),
        Err(SegmentError::WrongRelease { expected, actual }) if expected == f.id && actual == other
    ));
    let seg = Segment {
        blob: other,
        ..f.segment(0..2)
    };
    assert!(matches!(
        a.accept(&seg),
        Err(SegmentError::WrongBlob { actual, .. }) if actual == other
    ));
    assert_eq!(a.known(0), None);
}

#[test]
fn segment_out_of_range_is_refused() {
    let f = fixture(3 * CS as usize); // 3 chunks
    let mut a = f.assembler();
    let cases = [
        (2, 2),        // runs past the end
        (3, 1),        // starts at the end
        (0, 0),        // empty
        (u32::MAX, 1), // first + len overflows u32
        (u32::MAX, 2),
    ];
    for (first, len) in cases {
        let seg = Segment {
            first,
            hashes: vec![[7; 32]; len],
            ..f.segment(0..0)
        };
        let err = a.accept(&seg).unwrap_err();
        assert!(
            matches!(err, SegmentError::OutOfRange { first: e, len: l, count: 3, .. } if e == first && l == len),
            "{first}+{len}: {err}"
        );
    }
    assert!(matches!(
        SignedSegment::sign(&f.segment(0..0), &f.key),
        Err(SegmentError::Length { len: 0, .. })
    ));
    assert_eq!(a.known(2), None);
}

#[test]
fn conflicting_segment_is_refused_and_the_first_kept() {
    let f = fixture(3 * CS as usize);
    let mut a = f.assembler();
    let first = f.segment(0..2);
    assert_eq!(a.accept(&first).unwrap(), vec![0, 1]);
    // An equal overlap is fine and adds only what is new.
    assert_eq!(a.accept(&f.segment(1..3)).unwrap(), vec![2]);
    assert_eq!(a.accept(&first).unwrap(), Vec::<u32>::new());

    let mut b = f.assembler();
    b.accept(&first).unwrap();
    let mut second = f.segment(1..3);
    second.hashes[0][5] ^= 1;
    assert!(matches!(
        b.accept(&second),
        Err(SegmentError::Conflict { index: 1, release, blob }) if release == f.id && blob == f.map.blob()
    ));
    assert_eq!(b.known(1), Some(first.hashes[1]));
    assert_eq!(b.known(2), None, "nothing of a refused segment is kept");
    b.verify_chunk(1, f.chunk(1)).unwrap();
}

#[test]
fn chunks_are_checked_against_known_hashes() {
    let f = fixture(2 * CS as usize + 10);
    let mut a = f.assembler();
    assert!(matches!(
        a.verify_chunk(0, f.chunk(0)),
        Err(SegmentError::Unknown { index: 0, .. })
    ));
    a.accept(&f.segment(0..3)).unwrap();
    let mut bad = f.chunk(0).to_vec();
    bad[9] ^= 1;
    assert!(matches!(
        a.verify_chunk(0, &bad),
        Err(SegmentError::Chunk(ChunkError::DigestMismatch {
            index: 0,
            ..
        }))
    ));
    assert!(matches!(
        a.verify_chunk(2, f.chunk(1)),
        Err(SegmentError::Chunk(ChunkError::Length {
            index: 2,
            expected: 10,
            ..
        }))
    ));
    assert!(matches!(
        a.verify_chunk(3, f.chunk(2)),
        Err(SegmentError::Chunk(ChunkError::Index { index: 3, .. }))
    ));
    a.verify_chunk(2, f.chunk(2)).unwrap();
}

#[test]
fn incomplete_map_is_refused() {
    let f = fixture(3 * CS as usize);
    let mut a = f.assembler();
    a.accept(&f.segment(1..2)).unwrap();
    assert!(matches!(
        a.into_chunk_map(),
        Err(SegmentError::Incomplete {
            missing: 2,
            count: 3,
            ..
        })
    ));
}

/// A list longer than [`MAX_SEGMENT_CHUNKS`] is refused from its length prefix; a body
/// that claims a huge list in a few bytes fails at once, without reserving its size.
#[test]
fn codec_bounds_segments_while_decoding() {
    let f = fixture(CS as usize);
    let long = Segment {
        hashes: vec![[1; 32]; MAX_SEGMENT_CHUNKS + 1],
        ..f.segment(0..0)
    };
    let bytes = codec::encode(&long).unwrap();
    assert!(matches!(
        codec::decode::<Segment>(&bytes),
        Err(CodecError::Malformed(_))
    ));
    assert!(matches!(
        SignedSegment::sign(&long, &f.key),
        Err(SegmentError::Length { .. })
    ));
    let at_cap = Segment {
        hashes: vec![[1; 32]; MAX_SEGMENT_CHUNKS],
        ..long
    };
    let bytes = codec::encode(&at_cap).unwrap();
    assert!(bytes.len() <= MAX_SEGMENT_BYTES);
    assert_eq!(codec::decode::<Segment>(&bytes).unwrap(), at_cap);

    // release, blob, first = 0, then a list length of u64::MAX (varint 0xff + 8 bytes).
    let mut huge = vec![0u8; 64];
    huge.push(0);
    huge.push(0xff);
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        codec::decode::<Segment>(&huge),
        Err(CodecError::Malformed(_))
    ));
    // A signed envelope whose body is over the cap is refused the same way.
    let envelope = codec::encode(&(vec![0u8; MAX_SEGMENT_BYTES + 1], [0u8; 4], [0u8; 4])).unwrap();
    assert!(matches!(
        codec::decode::<SignedSegment>(&envelope),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn blob_over_the_chunk_limit_gets_no_assembler() {
    let f = fixture(CS as usize);
    let mut blob = f.release.blobs[0].clone();
    blob.size = u64::from(crate::MAX_CHUNKS) * u64::from(CS) + 1;
    assert!(matches!(
        SegmentAssembler::new(f.id, &blob),
        Err(SegmentError::Chunk(ChunkError::TooManyChunks { .. }))
    ));
    blob.size -= 1;
    assert_eq!(
        SegmentAssembler::new(f.id, &blob).unwrap().count(),
        crate::MAX_CHUNKS
    );
}
