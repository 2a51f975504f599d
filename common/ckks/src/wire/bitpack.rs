//! Limbs bit-packed at their prime's size: `bits` bits per coefficient,
//! least significant first, little endian, the last byte zero-padded.
//!
//! Eight coefficients of any width fill exactly `bits` bytes, so a limb is
//! packed and unpacked a group of eight at a time by code compiled for each
//! width: every shift and word index in a group is then a constant, and no
//! state carries from one coefficient to the next (the word-at-a-time loop
//! carries its fill level, a chain of dependent instructions per
//! coefficient that bounded it to about 2 ns each). The word-at-a-time
//! loops remain as the reference the grouped code is tested against and
//! for the coefficients after the groups: the last `len % 8` when
//! packing; when unpacking, the groups too close to the end for an 8- or
//! 16-byte load at each coefficient (one to seven groups).

/// Coefficients per group: `GROUP * bits` bits are `bits` whole bytes.
const GROUP: usize = 8;

/// Calls `$f::<W>($args)` for the literal `W` equal to `$bits`, or gives
/// `$otherwise` for a width outside 1..=64.
macro_rules! for_width {
    ($bits:expr, $f:ident $args:tt, $otherwise:expr) => {
        for_width!(@arms $bits, $f $args, $otherwise,
            1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
            33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64)
    };
    (@arms $bits:expr, $f:ident $args:tt, $otherwise:expr, $($w:literal)*) => {
        match $bits {
            $($w => $f::<$w> $args,)*
            _ => $otherwise,
        }
    };
}

/// Appends `limb` packed at `bits` bits per coefficient to `out`. Every
/// coefficient must be below `2^bits` (a reduced residue is).
pub(super) fn pack_limb(limb: &[u64], bits: u32, out: &mut Vec<u8>) {
    let grouped = for_width!(bits, pack_groups(limb, out), 0);
    // The groups end on a byte boundary, where the tail starts afresh.
    pack_words(&limb[grouped..], bits, out);
}

/// Packs the whole groups of `limb`; returns how many coefficients.
#[inline(always)]
fn pack_groups<const BITS: usize>(limb: &[u64], out: &mut Vec<u8>) -> usize {
    let groups = limb.chunks_exact(GROUP);
    let packed = limb.len() - groups.remainder().len();
    for group in groups {
        let mut words = [0u64; GROUP];
        for (i, &x) in group.iter().enumerate() {
            let (word, shift) = (i * BITS / 64, i * BITS % 64);
            words[word] |= x << shift;
            if shift + BITS > 64 {
                words[word + 1] |= x >> (64 - shift);
            }
        }
        let mut bytes = [0u8; GROUP * 8];
        for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&bytes[..BITS]);
    }
    packed
}

/// The word-at-a-time packer: the reference, and the tail of
/// [`pack_limb`].
fn pack_words(limb: &[u64], bits: u32, out: &mut Vec<u8>) {
    // `acc` holds `filled` < 64 pending bits; a coefficient that overflows
    // it completes a word, and its high bits start the next one.
    let mut acc = 0u64;
    let mut filled = 0u32;
    for &x in limb {
        acc |= x << filled;
        filled += bits;
        if filled >= 64 {
            out.extend_from_slice(&acc.to_le_bytes());
            filled -= 64;
            acc = if filled == 0 { 0 } else { x >> (bits - filled) };
        }
    }
    out.extend_from_slice(&acc.to_le_bytes()[..filled.div_ceil(8) as usize]);
}

/// Unpacks `dst.len()` coefficients of `bits` bits from `src` (exactly
/// the packed length), each checked below `modulus`, and the padding bits
/// after the last one checked zero. Errors name the coefficient.
pub(super) fn unpack_limb(src: &[u8], bits: u32, modulus: u64, dst: &mut [u64]) -> Result<(), String> {
    debug_assert!((1..=64).contains(&bits), "a width of {bits} bits");
    let expected = (dst.len() * bits as usize).div_ceil(8);
    if src.len() != expected {
        return Err(format!("{} bytes for {} coefficients of {bits} bits ({expected})", src.len(), dst.len()));
    }
    let grouped = for_width!(bits, unpack_groups(src, modulus, dst), Ok(0))?;
    unpack_words(src, bits, modulus, dst, grouped)
}

/// Unpacks the whole groups of `dst` whose bytes `src` holds with room
/// to spare for an unaligned load at each coefficient; returns how many
/// coefficients (the last groups are left to the word loop).
#[inline(always)]
fn unpack_groups<const BITS: usize>(src: &[u8], modulus: u64, dst: &mut [u64]) -> Result<usize, String> {
    let mask = if BITS == 64 { u64::MAX } else { (1u64 << BITS) - 1 };
    // Every coefficient is one load at its first byte: 8 bytes hold it
    // whole from any bit offset up to 57 bits, 16 beyond.
    let load = if BITS <= 57 { 8 } else { 16 };
    let window = (GROUP - 1) * BITS / 8 + load;
    let fit = src.len().checked_sub(window).map_or(0, |room| room / BITS + 1);
    let groups = (dst.len() / GROUP).min(fit);
    let unpacked = groups * GROUP;
    // Checked once per limb, not per coefficient: the loop stays branch-free.
    let mut unreduced = false;
    for (g, group) in dst[..unpacked].chunks_exact_mut(GROUP).enumerate() {
        let w = &src[g * BITS..g * BITS + window];
        for (i, d) in group.iter_mut().enumerate() {
            let (at, shift) = (i * BITS / 8, i * BITS % 8);
            let x = if BITS <= 57 {
                let b = &w[at..at + 8];
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) >> shift
            } else {
                let mut b = [0u8; 16];
                b.copy_from_slice(&w[at..at + 16]);
                (u128::from_le_bytes(b) >> shift) as u64
            } & mask;
            unreduced |= x >= modulus;
            *d = x;
        }
    }
    if unreduced {
        let k = dst[..unpacked].iter().position(|&x| x >= modulus).unwrap_or(0);
        return Err(format!("coefficient {k} is not reduced modulo {modulus}"));
    }
    Ok(unpacked)
}

/// Reads up to 8 bytes at `at` as a little-endian word (zero past the end).
fn word_at(src: &[u8], at: usize) -> u64 {
    match src.get(at..at + 8) {
        Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        None => {
            let mut w = [0u8; 8];
            let tail = &src[at.min(src.len())..];
            w[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(w)
        }
    }
}

/// The word-at-a-time unpacker from coefficient `start` on (a multiple of
/// 8 or any other): the reference, and the tail of [`unpack_limb`], which
/// checks the padding.
fn unpack_words(src: &[u8], bits: u32, modulus: u64, dst: &mut [u64], start: usize) -> Result<(), String> {
    let mask = (1u128 << bits) - 1;
    let first_bit = start * bits as usize;
    let mut at = first_bit / 8;
    let mut acc: u128 = 0;
    let mut filled = 0u32;
    if !first_bit.is_multiple_of(8) {
        acc = (src[at] >> (first_bit % 8)) as u128;
        filled = 8 - (first_bit % 8) as u32;
        at += 1;
    }
    for (k, d) in dst.iter_mut().enumerate().skip(start) {
        if filled < bits {
            acc |= (word_at(src, at) as u128) << filled;
            at += 8;
            filled += 64;
        }
        let x = (acc & mask) as u64;
        acc >>= bits;
        filled -= bits;
        if x >= modulus {
            return Err(format!("coefficient {k} is not reduced modulo {modulus}"));
        }
        *d = x;
    }
    if acc != 0 || at < src.len() && src[at..].iter().any(|&b| b != 0) {
        return Err("non-zero padding bits".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The format's definition, bit by bit.
    fn pack_reference(limb: &[u64], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; (limb.len() * bits as usize).div_ceil(8)];
        for (k, &x) in limb.iter().enumerate() {
            for b in 0..bits as usize {
                let pos = k * bits as usize + b;
                out[pos / 8] |= (((x >> b) & 1) as u8) << (pos % 8);
            }
        }
        out
    }

    fn residues(len: usize, modulus: u64, seed: u64) -> Vec<u64> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 3) % modulus
            })
            .collect()
    }

    proptest! {
        /// The grouped packer, the word-at-a-time packer and both unpack
        /// paths agree with the bit-by-bit definition, for random widths
        /// and lengths with and without a tail, ending inside a byte or
        /// not (the test below covers every width).
        #[test]
        fn packing_matches_the_bitwise_definition(
            bits in 1u32..=64,
            len in 1usize..200,
            seed in any::<u64>(),
        ) {
            check_round_trip(bits, len, seed).map_err(TestCaseError::fail)?;
        }

        /// Unpacking arbitrary bytes, of the packed length or any other,
        /// returns an error or coefficients below the modulus, and never
        /// panics.
        #[test]
        fn unpacking_any_bytes_never_panics(
            bits in 1u32..=64,
            len in 0usize..100,
            mut bytes in prop::collection::vec(any::<u8>(), 0..900),
            exact in any::<bool>(),
        ) {
            let modulus = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            if exact {
                bytes.resize((len * bits as usize).div_ceil(8), 0x5a);
            }
            let mut dst = vec![0u64; len];
            match unpack_limb(&bytes, bits, modulus, &mut dst) {
                Ok(()) => prop_assert!(dst.iter().all(|&x| x < modulus)),
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }

        /// An unreduced coefficient is refused wherever it sits (in a group
        /// or the tail), named by its index, and so is a set padding bit.
        #[test]
        fn unpacking_refuses_unreduced_coefficients_and_padding(
            bits in 2u32..=63,
            len in 1usize..100,
            at in any::<prop::sample::Index>(),
        ) {
            let modulus = (1u64 << bits) - 1;
            let mut limb = vec![1u64; len];
            let k = at.index(len);
            limb[k] = modulus;
            let mut packed = Vec::new();
            pack_limb(&limb, bits, &mut packed);
            let mut back = vec![0u64; len];
            let err = unpack_limb(&packed, bits, modulus, &mut back).unwrap_err();
            prop_assert!(err.contains(&format!("coefficient {k} ")), "{}", err);
            if !(len * bits as usize).is_multiple_of(8) {
                limb[k] = 1;
                packed.clear();
                pack_limb(&limb, bits, &mut packed);
                *packed.last_mut().unwrap() |= 0x80;
                prop_assert!(unpack_limb(&packed, bits, modulus, &mut back).unwrap_err().contains("padding"));
            }
        }
    }

    /// [`packing_matches_the_bitwise_definition`]'s checks for one case.
    fn check_round_trip(bits: u32, len: usize, seed: u64) -> Result<(), String> {
        let modulus = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let limb = residues(len, modulus, seed);
        let reference = pack_reference(&limb, bits);
        let mut packed = Vec::new();
        pack_limb(&limb, bits, &mut packed);
        let mut words = Vec::new();
        pack_words(&limb, bits, &mut words);
        let mut back = vec![0u64; len];
        unpack_limb(&packed, bits, modulus, &mut back)?;
        let mut general = vec![0u64; len];
        unpack_words(&packed, bits, modulus, &mut general, 0)?;
        match (packed == reference, words == reference, back == limb, general == limb) {
            (true, true, true, true) => Ok(()),
            wrong => Err(format!("{bits} bits, {len} coefficients: (grouped, words, unpacked, general) ok {wrong:?}")),
        }
    }

    /// Every width, at lengths around the group and window boundaries.
    #[test]
    fn every_width_round_trips() {
        for bits in 1..=64 {
            for len in [1, 7, 8, 9, 16, 17, 23, 24, 40, 64, 65, 129, 1024] {
                check_round_trip(bits, len, bits as u64 * 1000 + len as u64).unwrap();
            }
        }
    }

    /// A width outside 1..=64 has no grouped code: the word loop takes
    /// all of it (no panic in the dispatch).
    #[test]
    fn the_dispatch_falls_back_outside_the_widths() {
        let limb = [1u64, 0, 1];
        let mut out = Vec::new();
        assert_eq!(for_width!(0u32, pack_groups(&limb, &mut out), 0), 0);
        assert!(out.is_empty());
    }
}
