//! Which chunks of a blob a node holds: the unit of "have" information exchanged between peers.

use serde::{Deserialize, Serialize};

/// A fixed-length set of chunk indices, packed eight to a byte (MSB first, as BitTorrent does).
///
/// Peers exchange these as their have-information, so decoding validates that the byte
/// length matches the bit length and that padding bits are zero: a malformed bitfield
/// is an error, never a panic or an out-of-range index.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireBitfield", into = "WireBitfield")]
pub struct Bitfield {
    len: u32,
    bits: Vec<u8>,
    /// Set bits, kept up to date: the scheduler asks "how many" and "all?" on every input.
    ones: u32,
}

/// What goes on the wire: the count is derived, never trusted from a peer.
#[derive(Serialize, Deserialize)]
struct WireBitfield {
    len: u32,
    bits: Vec<u8>,
}

impl From<WireBitfield> for Bitfield {
    fn from(w: WireBitfield) -> Self {
        let ones = w.bits.iter().map(|b| b.count_ones()).sum();
        Self {
            len: w.len,
            bits: w.bits,
            ones,
        }
    }
}

impl From<Bitfield> for WireBitfield {
    fn from(b: Bitfield) -> Self {
        Self {
            len: b.len,
            bits: b.bits,
        }
    }
}

/// Why a bitfield received from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// The byte vector does not have `ceil(len / 8)` bytes.
    #[error("bitfield of {len} bits carries {bytes} bytes, expected {expected}")]
    Length {
        /// Declared number of bits.
        len: u32,
        /// Bytes actually present.
        bytes: usize,
        /// Bytes required for `len` bits.
        expected: usize,
    },
    /// Bits past `len` are set.
    #[error("bitfield of {0} bits has padding bits set")]
    Padding(u32),
}

impl Bitfield {
    /// An all-zero bitfield: what a node holds of a blob it has just started.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
            ones: 0,
        }
    }

    /// An all-one bitfield: what a seeder holds.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Checks a bitfield decoded from the network against the chunk count it must describe.
    ///
    /// # Errors
    /// [`BitfieldError`] when the byte length or padding is inconsistent.
    pub fn validate(&self) -> Result<(), BitfieldError> {
        let expected = (self.len as usize).div_ceil(8);
        if self.bits.len() != expected {
            return Err(BitfieldError::Length {
                len: self.len,
                bytes: self.bits.len(),
                expected,
            });
        }
        let used = self.len % 8;
        if used != 0 {
            let last = self.bits[expected - 1];
            if last & (0xff >> used) != 0 {
                return Err(BitfieldError::Padding(self.len));
            }
        }
        Ok(())
    }

    /// Number of bits (chunks) described.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the bitfield describes zero chunks (an empty blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether chunk `i` is present; out-of-range indices are simply absent.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Marks chunk `i` present; returns false if it was already set or out of range.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Marks chunk `i` absent (used for in-flight bookkeeping).
    pub fn clear(&mut self, i: u32) {
        if self.get(i) {
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }

    /// How many chunks are present.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// True when every chunk is present.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Bits `64 w .. 64 w + 64` as one word, bit `64 w` in the top bit; bits past the end
    /// read as zero. The scheduler scans candidates a word at a time.
    pub(crate) fn word(&self, w: usize) -> u64 {
        let start = w * 8;
        match self.bits.get(start..start + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bits.get(start..).unwrap_or_default();
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(buf)
            }
        }
    }

    /// Sets every bit set in `other`; bitfields of different lengths are left alone.
    pub(crate) fn union_with(&mut self, other: &Self) {
        if other.len == self.len {
            for (a, b) in self.bits.iter_mut().zip(&other.bits) {
                *a |= b;
            }
            self.ones = self.bits.iter().map(|b| b.count_ones()).sum();
        }
    }

    /// Indices of the present chunks, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_padding() {
        for len in [0u32, 1, 7, 8, 9, 64, 65] {
            let mut b = Bitfield::new(len);
            assert!(b.validate().is_ok());
            assert_eq!(b.count(), 0);
            for i in (0..len).step_by(3) {
                assert!(b.set(i));
                assert!(!b.set(i));
            }
            assert!(!b.set(len));
            assert_eq!(b.count(), len.div_ceil(3));
            assert!(Bitfield::full(len).is_full());
            assert!(Bitfield::full(len).validate().is_ok());
        }
    }

    #[test]
    fn rejects_bad_lengths_and_padding() {
        let b = Bitfield::from(WireBitfield {
            len: 9,
            bits: vec![0],
        });
        assert!(matches!(b.validate(), Err(BitfieldError::Length { .. })));
        let b = Bitfield::from(WireBitfield {
            len: 9,
            bits: vec![0, 0x01],
        });
        assert_eq!(b.validate(), Err(BitfieldError::Padding(9)));
    }

    #[test]
    fn kept_count_matches_the_bits_through_every_change_and_a_round_trip() {
        let recount = |b: &Bitfield| b.bits.iter().map(|x| x.count_ones()).sum::<u32>();
        let mut a = Bitfield::new(21);
        a.set(3);
        a.set(3);
        a.set(20);
        a.clear(3);
        a.clear(3);
        a.clear(99);
        assert_eq!((a.count(), recount(&a)), (1, 1));
        let mut b = Bitfield::new(21);
        b.set(0);
        b.set(20);
        b.union_with(&a);
        assert_eq!((b.count(), recount(&b)), (2, 2));
        let decoded: Bitfield = crate::codec::decode(&crate::codec::encode(&b).unwrap()).unwrap();
        assert_eq!(decoded, b);
        assert_eq!(decoded.count(), 2);
    }

    #[test]
    fn word_reads_msb_first_and_pads_the_tail_with_zeros() {
        let bytes: Vec<u8> = (1..=10).collect();
        let b = Bitfield::from(WireBitfield {
            len: 80,
            bits: bytes,
        });
        assert_eq!(b.word(0), 0x0102_0304_0506_0708);
        assert_eq!(b.word(1), 0x090a_0000_0000_0000);
        assert_eq!(b.word(2), 0);
        assert_eq!(Bitfield::new(0).word(0), 0);
    }
}
