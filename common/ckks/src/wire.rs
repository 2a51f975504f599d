//! Wire format for every engine object.
//!
//! An envelope is a fixed 48-byte header followed by a MessagePack
//! (rmp-serde) payload:
//!
//! | bytes | content |
//! |---|---|
//! | 0..4 | magic `NXCK` |
//! | 4..6 | format version, little endian ([`FORMAT_VERSION`]) |
//! | 6 | object kind ([`Kind`]) |
//! | 7 | reserved, zero |
//! | 8..40 | SHA-256 digest of the [`Parameters`] the object belongs to |
//! | 40..48 | payload length, little endian |
//!
//! Decoding checks, in order: the size limit (before reading anything
//! else), magic, version, kind, parameter digest, exact payload length, then
//! conformance of the payload against the parameters (level, limb count,
//! every coefficient reduced, scale finite and positive, slot count, Galois
//! element, digit count). Limbs are bit-packed at their prime's bit size and
//! only active levels are sent; fresh secret-key ciphertexts and all keys
//! travel seeded (the uniform half regenerated from a 32-byte seed).

use crate::error::CkksError;
use crate::ring::{Basis, Ntt, Poly};
use crate::scheme::keys::{GaloisKey, GaloisKeys, PublicKey, RelinKey, SecretKey, SwitchingKey};
use crate::scheme::plaintext::{Ciphertext, Encoding, Plaintext};
use crate::scheme::sampling::expand_uniform_ntt;
use crate::Parameters;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

mod bitpack;
use bitpack::{pack_limb, unpack_limb};

/// Current format version. 2: a seed expands into one ChaCha20 stream per
/// (digit, prime) ([`crate::scheme::sampling::expand_uniform_ntt`]) instead
/// of one stream for everything; a version-1 seed would expand to other
/// values, so version 1 is refused rather than misread.
pub const FORMAT_VERSION: u16 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 48;
const MAGIC: &[u8; 4] = b"NXCK";

/// Object kinds carried in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// [`Ciphertext`].
    Ciphertext = 1,
    /// [`Plaintext`].
    Plaintext = 2,
    /// [`PublicKey`].
    PublicKey = 3,
    /// [`RelinKey`].
    RelinKey = 4,
    /// [`GaloisKey`].
    GaloisKey = 5,
    /// [`GaloisKeys`].
    GaloisKeys = 6,
    /// [`SecretKey`] (client-side storage only).
    SecretKey = 7,
}

/// Objects with a checked wire form.
///
/// ```
/// use nexus_ckks::*;
/// let params = Parameters::preset("INSECURE_N11_QP230_TEST")?;
/// let mut kg = KeyGenerator::new(&params);
/// let sk = kg.secret_key();
/// let pt = Encoder::new(&params).encode_real(&[0.5], params.max_level(), params.default_scale())?;
/// // A secret-key ciphertext travels seeded: about half the size.
/// let ct = Encryptor::new(&params).encrypt_sk(&pt, &sk)?;
/// let bytes = ct.to_bytes(&params)?;
/// let back = Ciphertext::from_bytes(&params, &bytes, 64 << 20)?;
/// assert_eq!(back, ct);
/// // Truncated input is refused with a reason.
/// assert!(Ciphertext::from_bytes(&params, &bytes[..100], 64 << 20).is_err());
/// # Ok::<(), CkksError>(())
/// ```
pub trait Wire: Sized {
    /// Header kind.
    const KIND: Kind;
    /// Human name for errors.
    const NAME: &'static str;
    /// Encodes into a versioned envelope.
    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError>;
    /// Decodes and checks against `params`, refusing inputs over `limit` bytes.
    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError>;
    /// The length of [`to_bytes`](Self::to_bytes)'s output.
    fn encoded_len(&self, params: &Parameters) -> Result<u64, CkksError> {
        Ok(self.to_bytes(params)?.len() as u64)
    }
    /// Writes [`to_bytes`](Self::to_bytes)'s output to `out` (large objects
    /// override it to stream without the whole encoding in memory).
    fn write_to(&self, params: &Parameters, out: &mut dyn std::io::Write) -> Result<(), CkksError> {
        out.write_all(&self.to_bytes(params)?)
            .map_err(|e| CkksError::Encode { what: Self::NAME, reason: e.to_string() })
    }
    /// [`write_to`](Self::write_to)'s bytes after their length (8 bytes,
    /// little-endian), as containers of several objects frame them.
    /// Returns the bytes written, prefix included. Large objects override
    /// it to count their encoding once for both the prefix and the header.
    fn write_length_prefixed(&self, params: &Parameters, out: &mut dyn std::io::Write) -> Result<u64, CkksError> {
        let bytes = self.to_bytes(params)?;
        let io = |e: std::io::Error| CkksError::Encode { what: Self::NAME, reason: e.to_string() };
        out.write_all(&(bytes.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        Ok(8 + bytes.len() as u64)
    }
}

fn decode_err(what: &'static str, reason: impl Into<String>) -> CkksError {
    CkksError::Decode { what, reason: reason.into() }
}

/// Header and payload written into one buffer of `payload_hint` bytes
/// (the packed limbs, plus a little for MessagePack's framing): the limbs
/// are copied once, and the buffer does not grow by reallocation.
fn envelope(
    params: &Parameters,
    kind: Kind,
    what: &'static str,
    payload: &impl Serialize,
    payload_hint: usize,
) -> Result<Vec<u8>, CkksError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload_hint + 256);
    out.extend_from_slice(&header(params, kind, 0)); // the payload length, once known
    rmp_serde::encode::write(&mut out, payload).map_err(|e| CkksError::Encode { what, reason: e.to_string() })?;
    let len = (out.len() - HEADER_LEN) as u64;
    out[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

fn header(params: &Parameters, kind: Kind, payload_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6] = kind as u8;
    h[8..40].copy_from_slice(&params.digest());
    h[40..48].copy_from_slice(&payload_len.to_le_bytes());
    h
}

/// Counts what is written to it.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The payload's MessagePack length (an encoding pass into a counter).
fn payload_len(what: &'static str, payload: &impl Serialize) -> Result<u64, CkksError> {
    let mut counter = Counter(0);
    rmp_serde::encode::write(&mut counter, payload).map_err(|e| CkksError::Encode { what, reason: e.to_string() })?;
    Ok(counter.0)
}

/// [`envelope`] written to `out` with the payload encoded twice (once to
/// count it for the header): for payloads built lazily, whose whole
/// encoding is never in memory. With `length_prefixed`, the envelope's
/// length goes first (8 bytes, little-endian) from the same count. Returns
/// the bytes written.
fn stream_envelope(
    params: &Parameters,
    kind: Kind,
    what: &'static str,
    payload: &impl Serialize,
    out: &mut dyn std::io::Write,
    length_prefixed: bool,
) -> Result<u64, CkksError> {
    let io = |e: std::io::Error| CkksError::Encode { what, reason: e.to_string() };
    let payload_len = payload_len(what, payload)?;
    let envelope_len = HEADER_LEN as u64 + payload_len;
    if length_prefixed {
        out.write_all(&envelope_len.to_le_bytes()).map_err(io)?;
    }
    out.write_all(&header(params, kind, payload_len)).map_err(io)?;
    rmp_serde::encode::write(out, payload).map_err(|e| CkksError::Encode { what, reason: e.to_string() })?;
    Ok(envelope_len + if length_prefixed { 8 } else { 0 })
}

/// Bytes of the packed limbs in `polys`: the hint for [`envelope`].
fn packed_len<'p, 'a: 'p>(polys: impl IntoIterator<Item = &'p PolyWire<'a>>) -> usize {
    polys.into_iter().map(|p| p.data.len()).sum()
}

fn open<'a, T: Deserialize<'a>>(
    params: &Parameters,
    bytes: &'a [u8],
    limit: usize,
    kind: Kind,
    what: &'static str,
) -> Result<T, CkksError> {
    if bytes.len() > limit {
        return Err(decode_err(what, format!("{} bytes exceed the limit of {limit}", bytes.len())));
    }
    if bytes.len() < HEADER_LEN {
        return Err(decode_err(what, format!("truncated: {} bytes, the header alone is {HEADER_LEN}", bytes.len())));
    }
    if &bytes[0..4] != MAGIC {
        return Err(decode_err(what, "not a Nexus CKKS envelope (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(decode_err(what, format!("format version {version} is not supported (expected {FORMAT_VERSION})")));
    }
    if bytes[7] != 0 {
        return Err(decode_err(what, format!("reserved header byte is {}, must be 0", bytes[7])));
    }
    if bytes[6] != kind as u8 {
        return Err(decode_err(what, format!("object kind {} where {kind:?} ({}) was expected", bytes[6], kind as u8)));
    }
    if bytes[8..40] != params.digest() {
        return Err(decode_err(what, "built for other parameters (digest mismatch)"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[40..48]);
    let len = u64::from_le_bytes(len);
    let body = &bytes[HEADER_LEN..];
    if len != body.len() as u64 {
        return Err(decode_err(what, format!("payload length {len} but {} bytes follow the header", body.len())));
    }
    rmp_serde::from_slice(body).map_err(|e| decode_err(what, format!("malformed payload: {e}")))
}

/// A polynomial's limbs, each bit-packed at its prime's size. Decoding
/// borrows the limbs from the received bytes instead of copying them.
#[derive(Serialize, Deserialize)]
struct PolyWire<'a> {
    q: u32,
    p: u32,
    #[serde(with = "serde_bytes", borrow)]
    data: Cow<'a, [u8]>,
}

/// Bytes of `poly`'s limbs bit-packed at their primes' sizes.
fn packed_poly_len(params: &Parameters, poly: &Poly<Ntt>) -> usize {
    let (ring, basis) = (params.ring(), poly.basis());
    (0..basis.limbs()).map(|j| (ring.n() * ring.modulus_of(basis, j).bits() as usize).div_ceil(8)).sum()
}

/// Appends `poly`'s limbs, each bit-packed at its prime's size, to `out`.
fn pack_into(params: &Parameters, poly: &Poly<Ntt>, out: &mut Vec<u8>) {
    let (ring, basis) = (params.ring(), poly.basis());
    for j in 0..basis.limbs() {
        pack_limb(poly.limb(j), ring.modulus_of(basis, j).bits(), out);
    }
}

fn pack<'a>(params: &Parameters, poly: &Poly<Ntt>) -> PolyWire<'a> {
    let mut data = Vec::with_capacity(packed_poly_len(params, poly));
    pack_into(params, poly, &mut data);
    let basis = poly.basis();
    PolyWire { q: basis.q as u32, p: basis.p as u32, data: Cow::Owned(data) }
}

/// MessagePack's marker of an array of `len` < 16 elements (rmp-serde
/// writes a struct as the array of its fields); longer arrays have another
/// header, which no ciphertext needs.
fn fixarray(len: usize, what: &'static str) -> Result<u8, CkksError> {
    match u8::try_from(len) {
        Ok(l) if l < 16 => Ok(0x90 | l),
        _ => Err(CkksError::Encode { what, reason: format!("{len} elements where at most 15 are encoded") }),
    }
}

/// MessagePack's header of a byte string of `len` bytes, in its shortest
/// form (as rmp-serde writes it).
fn write_bin_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), CkksError> {
    if let Ok(l) = u8::try_from(len) {
        out.extend_from_slice(&[0xc4, l]);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xc5);
        out.extend_from_slice(&l.to_be_bytes());
    } else if let Ok(l) = u32::try_from(len) {
        out.push(0xc6);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        return Err(CkksError::Encode {
            what,
            reason: format!("a limb block of {len} bytes exceeds MessagePack's 4 GiB"),
        });
    }
    Ok(())
}

/// One value in rmp-serde's encoding, appended to `out`.
fn write_value(out: &mut Vec<u8>, what: &'static str, value: &impl Serialize) -> Result<(), CkksError> {
    rmp_serde::encode::write(out, value).map_err(|e| CkksError::Encode { what, reason: e.to_string() })
}

fn unpack(params: &Parameters, w: &PolyWire, expected: Basis, what: &'static str) -> Result<Poly<Ntt>, CkksError> {
    let basis = Basis { q: w.q as usize, p: w.p as usize };
    if basis != expected {
        return Err(decode_err(
            what,
            format!(
                "polynomial has {} chain and {} special limbs, expected {} and {}",
                basis.q, basis.p, expected.q, expected.p
            ),
        ));
    }
    let ring = params.ring();
    let n = ring.n();
    let expected_len: usize =
        (0..basis.limbs()).map(|j| (n * ring.modulus_of(basis, j).bits() as usize).div_ceil(8)).sum();
    if w.data.len() != expected_len {
        return Err(decode_err(what, format!("polynomial data is {} bytes, expected {expected_len}", w.data.len())));
    }
    // From the buffer pool: every coefficient is written below, and a
    // fresh 2^16-coefficient buffer would cost a page fault per 4 KiB.
    let mut out = Poly::<Ntt>::uninit(ring, basis);
    let mut pos = 0usize;
    for (j, dst) in out.data_mut().chunks_exact_mut(n).enumerate() {
        let m = ring.modulus_of(basis, j);
        let limb_bytes = (n * m.bits() as usize).div_ceil(8);
        unpack_limb(&w.data[pos..pos + limb_bytes], m.bits(), m.value(), dst)
            .map_err(|e| decode_err(what, format!("limb {j}: {e}")))?;
        pos += limb_bytes;
    }
    Ok(out)
}

fn check_scale(scale: f64, what: &'static str) -> Result<(), CkksError> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(decode_err(what, format!("scale {scale} is not finite and positive")));
    }
    Ok(())
}

fn check_encoding(params: &Parameters, e: Encoding, what: &'static str) -> Result<(), CkksError> {
    if let Encoding::Slots(s) = e {
        if s == 0 || !s.is_power_of_two() || s > params.max_slots() {
            return Err(decode_err(
                what,
                format!("slot count {s} is not a power of two in 1..={}", params.max_slots()),
            ));
        }
    }
    Ok(())
}

fn check_level(params: &Parameters, level: usize, what: &'static str) -> Result<(), CkksError> {
    if level > params.max_level() {
        return Err(decode_err(what, format!("level {level} exceeds the maximum {}", params.max_level())));
    }
    Ok(())
}

impl Ciphertext {
    /// [`Wire::to_bytes`] into a buffer `buffer` gives for the capacity
    /// it is asked (a pool's, where fresh multi-megabyte buffers would
    /// cost their page faults; its contents are discarded).
    ///
    /// The bytes are rmp-serde's encoding of the wire struct (a test
    /// checks), with the framing written here and each limb packed straight
    /// into the envelope: ciphertexts are what the cluster moves most, and
    /// packing every polynomial into a buffer of its own first cost a fresh
    /// allocation (page faults) and a copy of every byte.
    pub fn to_bytes_with(
        &self,
        params: &Parameters,
        buffer: impl FnOnce(usize) -> Vec<u8>,
    ) -> Result<Vec<u8>, CkksError> {
        // A seeded ciphertext sends c0 only; c1 is regenerated from the seed.
        let parts = if self.seed.is_some() { &self.parts[..1] } else { &self.parts[..] };
        let lens: Vec<usize> = parts.iter().map(|p| packed_poly_len(params, p)).collect();
        let framing = 128 + 16 * parts.len();
        let mut out = buffer(HEADER_LEN + lens.iter().sum::<usize>() + framing);
        out.clear();
        out.extend_from_slice(&header(params, <Self as Wire>::KIND, 0)); // the payload length, once known
        out.push(fixarray(5, <Self as Wire>::NAME)?);
        write_value(&mut out, <Self as Wire>::NAME, &(self.level as u32))?;
        write_value(&mut out, <Self as Wire>::NAME, &self.scale)?;
        write_value(&mut out, <Self as Wire>::NAME, &self.encoding)?;
        write_value(&mut out, <Self as Wire>::NAME, &self.seed)?;
        out.push(fixarray(parts.len(), <Self as Wire>::NAME)?);
        for (poly, &len) in parts.iter().zip(&lens) {
            let basis = poly.basis();
            out.push(fixarray(3, <Self as Wire>::NAME)?);
            write_value(&mut out, <Self as Wire>::NAME, &(basis.q as u32))?;
            write_value(&mut out, <Self as Wire>::NAME, &(basis.p as u32))?;
            write_bin_len(&mut out, len, <Self as Wire>::NAME)?;
            let before = out.len();
            pack_into(params, poly, &mut out);
            debug_assert_eq!(out.len() - before, len, "the byte string's header announced another length");
        }
        let len = (out.len() - HEADER_LEN) as u64;
        out[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        Ok(out)
    }
}

#[derive(Serialize, Deserialize)]
struct CiphertextWire<'a> {
    level: u32,
    scale: f64,
    encoding: Encoding,
    seed: Option<[u8; 32]>,
    #[serde(borrow)]
    parts: Vec<PolyWire<'a>>,
}

impl Wire for Ciphertext {
    const KIND: Kind = Kind::Ciphertext;
    const NAME: &'static str = "ciphertext";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        self.to_bytes_with(params, Vec::with_capacity)
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: CiphertextWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let level = w.level as usize;
        check_level(params, level, Self::NAME)?;
        check_scale(w.scale, Self::NAME)?;
        check_encoding(params, w.encoding, Self::NAME)?;
        let expected_parts = if w.seed.is_some() { 1..=1 } else { 2..=3 };
        if !expected_parts.contains(&w.parts.len()) {
            return Err(decode_err(
                Self::NAME,
                format!(
                    "{} components for a {} ciphertext",
                    w.parts.len(),
                    if w.seed.is_some() { "seeded" } else { "full" }
                ),
            ));
        }
        let basis = Basis::q(level);
        let mut parts = w.parts.iter().map(|p| unpack(params, p, basis, Self::NAME)).collect::<Result<Vec<_>, _>>()?;
        if let Some(seed) = w.seed {
            parts.push(expand_uniform_ntt(params.ring(), seed, 0, basis));
        }
        Ok(Ciphertext { parts, level, scale: w.scale, encoding: w.encoding, seed: w.seed })
    }
}

#[derive(Serialize, Deserialize)]
struct PlaintextWire<'a> {
    level: u32,
    scale: f64,
    encoding: Encoding,
    #[serde(borrow)]
    poly: PolyWire<'a>,
}

impl Wire for Plaintext {
    const KIND: Kind = Kind::Plaintext;
    const NAME: &'static str = "plaintext";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        let w = PlaintextWire {
            level: self.level as u32,
            scale: self.scale,
            encoding: self.encoding,
            poly: pack(params, &self.poly),
        };
        envelope(params, Self::KIND, Self::NAME, &w, w.poly.data.len())
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: PlaintextWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let level = w.level as usize;
        check_level(params, level, Self::NAME)?;
        check_scale(w.scale, Self::NAME)?;
        check_encoding(params, w.encoding, Self::NAME)?;
        let poly = unpack(params, &w.poly, Basis::q(level), Self::NAME)?;
        Ok(Plaintext { poly, level, scale: w.scale, encoding: w.encoding })
    }
}

#[derive(Serialize, Deserialize)]
struct PublicKeyWire<'a> {
    seed: [u8; 32],
    #[serde(borrow)]
    b: PolyWire<'a>,
}

impl Wire for PublicKey {
    const KIND: Kind = Kind::PublicKey;
    const NAME: &'static str = "public key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        let w = PublicKeyWire { seed: self.seed, b: pack(params, &self.b) };
        envelope(params, Self::KIND, Self::NAME, &w, w.b.data.len())
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: PublicKeyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let basis = Basis { q: params.q().len(), p: params.p().len() };
        let b = unpack(params, &w.b, basis, Self::NAME)?;
        let a = expand_uniform_ntt(params.ring(), w.seed, 0, basis);
        Ok(PublicKey { b, a, seed: w.seed, digest: params.digest() })
    }
}

#[derive(Serialize, Deserialize)]
struct SwitchingKeyWire<'a> {
    seed: [u8; 32],
    #[serde(borrow)]
    b: Vec<PolyWire<'a>>,
}

fn switching_key_to_wire<'a>(params: &Parameters, k: &SwitchingKey) -> SwitchingKeyWire<'a> {
    SwitchingKeyWire { seed: k.seed, b: k.b.iter().map(|p| pack(params, p)).collect() }
}

fn switching_key_from_wire(
    params: &Parameters,
    w: &SwitchingKeyWire,
    what: &'static str,
) -> Result<SwitchingKey, CkksError> {
    // Keys may be restricted to a level: chain limbs 0..=level and the
    // digits those limbs need (SlotToCoeff keys of bootstrapping).
    let full = Basis { q: params.q().len(), p: params.p().len() };
    let q = w.b.first().map_or(0, |p| p.q as usize);
    if q == 0 || q > full.q {
        return Err(decode_err(what, format!("{q} chain limbs, the parameters have 1..={}", full.q)));
    }
    let digits = q.div_ceil(params.alpha());
    if w.b.len() != digits {
        return Err(decode_err(what, format!("{} digits for {q} chain limbs, expected {digits}", w.b.len())));
    }
    let basis = Basis { q, p: full.p };
    let b = w.b.iter().map(|p| unpack(params, p, basis, what)).collect::<Result<Vec<_>, _>>()?;
    // `a` is regenerated from the seed, only over `b`'s limbs.
    let a = crate::scheme::keys::regenerate_uniform_halves(params, w.seed, basis, digits);
    Ok(SwitchingKey::compacted(b, a, w.seed, params.digest()))
}

impl Wire for RelinKey {
    const KIND: Kind = Kind::RelinKey;
    const NAME: &'static str = "relinearisation key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        let w = switching_key_to_wire(params, &self.0);
        envelope(params, Self::KIND, Self::NAME, &w, packed_len(&w.b))
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: SwitchingKeyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        Ok(RelinKey(switching_key_from_wire(params, &w, Self::NAME)?))
    }
}

#[derive(Serialize, Deserialize)]
struct GaloisKeyWire<'a> {
    element: u64,
    #[serde(borrow)]
    key: SwitchingKeyWire<'a>,
}

/// A Galois key set's wire form, each key packed only while it is encoded:
/// one key's packed limbs in memory at a time instead of the whole set's.
/// Encodes exactly as the `Vec<GaloisKeyWire>` it is decoded into.
struct LazyGaloisKeys<'k> {
    params: &'k Parameters,
    keys: &'k GaloisKeys,
}

impl Serialize for LazyGaloisKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.keys.keys.len()))?;
        for k in self.keys.keys.values() {
            seq.serialize_element(&GaloisKeyWire {
                element: k.element as u64,
                key: switching_key_to_wire(self.params, &k.key),
            })?;
        }
        seq.end()
    }
}

fn galois_from_wire(params: &Parameters, w: &GaloisKeyWire, what: &'static str) -> Result<GaloisKey, CkksError> {
    let g = w.element as usize;
    if g.is_multiple_of(2) || g >= 2 * params.n() || g == 1 {
        return Err(decode_err(
            what,
            format!("Galois element {g} must be odd, not 1, and below 2N = {}", 2 * params.n()),
        ));
    }
    Ok(GaloisKey { element: g, key: switching_key_from_wire(params, &w.key, what)? })
}

impl Wire for GaloisKey {
    const KIND: Kind = Kind::GaloisKey;
    const NAME: &'static str = "Galois key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        let w = GaloisKeyWire { element: self.element as u64, key: switching_key_to_wire(params, &self.key) };
        envelope(params, Self::KIND, Self::NAME, &w, packed_len(&w.key.b))
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: GaloisKeyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        galois_from_wire(params, &w, Self::NAME)
    }
}

impl Wire for GaloisKeys {
    const KIND: Kind = Kind::GaloisKeys;
    const NAME: &'static str = "Galois key set";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        // The packed limbs are at most their in-memory size.
        let hint = self.keys.values().flat_map(|k| &k.key.b).map(|p| p.basis().limbs() * p.n() * 8).sum::<usize>();
        envelope(params, Self::KIND, Self::NAME, &LazyGaloisKeys { params, keys: self }, hint)
    }

    fn encoded_len(&self, params: &Parameters) -> Result<u64, CkksError> {
        Ok(HEADER_LEN as u64 + payload_len(Self::NAME, &LazyGaloisKeys { params, keys: self })?)
    }

    fn write_to(&self, params: &Parameters, out: &mut dyn std::io::Write) -> Result<(), CkksError> {
        stream_envelope(params, Self::KIND, Self::NAME, &LazyGaloisKeys { params, keys: self }, out, false).map(drop)
    }

    fn write_length_prefixed(&self, params: &Parameters, out: &mut dyn std::io::Write) -> Result<u64, CkksError> {
        stream_envelope(params, Self::KIND, Self::NAME, &LazyGaloisKeys { params, keys: self }, out, true)
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: Vec<GaloisKeyWire> = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let mut keys = GaloisKeys::new();
        for k in &w {
            let key = galois_from_wire(params, k, Self::NAME)?;
            if keys.keys.contains_key(&key.element) {
                return Err(decode_err(Self::NAME, format!("Galois element {} appears twice", key.element)));
            }
            keys.insert(key);
        }
        Ok(keys)
    }
}

impl Wire for SecretKey {
    const KIND: Kind = Kind::SecretKey;
    const NAME: &'static str = "secret key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        let mut w = pack(params, &self.poly);
        let out = envelope(params, Self::KIND, Self::NAME, &w, w.data.len());
        if let Cow::Owned(data) = &mut w.data {
            zeroize::Zeroize::zeroize(data);
        }
        out
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        // The limbs are read in place from `bytes` (the caller's to wipe).
        let w: PolyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let basis = Basis { q: params.q().len(), p: params.p().len() };
        let poly = unpack(params, &w, basis, Self::NAME)?;
        Ok(SecretKey { poly, digest: params.digest() })
    }
}

/// Serialized parameters (the literal with explicit primes), for clients
/// and workers that must agree on them.
pub fn parameters_to_bytes(params: &Parameters) -> Result<Vec<u8>, CkksError> {
    rmp_serde::to_vec_named(params.literal())
        .map_err(|e| CkksError::Encode { what: "parameters", reason: e.to_string() })
}

/// Parses and validates serialized parameters (`limit` bytes at most).
pub fn parameters_from_bytes(bytes: &[u8], limit: usize) -> Result<Parameters, CkksError> {
    parameters_from_bytes_checked(bytes, limit, false)
}

/// As [`parameters_from_bytes`]; `allow_insecure_test_only` also admits
/// parameters marked insecure (test clusters at small sizes; a production
/// process never sets it).
pub fn parameters_from_bytes_checked(
    bytes: &[u8],
    limit: usize,
    allow_insecure_test_only: bool,
) -> Result<Parameters, CkksError> {
    if bytes.len() > limit {
        return Err(decode_err("parameters", format!("{} bytes exceed the limit of {limit}", bytes.len())));
    }
    let literal: crate::ParametersLiteral =
        rmp_serde::from_slice(bytes).map_err(|e| decode_err("parameters", format!("malformed: {e}")))?;
    if literal.security != crate::SecurityLevel::Bits128 && !allow_insecure_test_only {
        return Err(decode_err("parameters", "only 128-bit-secure parameters are accepted from the wire"));
    }
    Parameters::new(literal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, the format's definition: coefficient k occupies bits
    /// k*bits .. (k+1)*bits of the limb, least significant first.
    /// The hand-framed ciphertext encoding is, byte for byte, rmp-serde's
    /// encoding of the wire struct (the format's definition): seeded and
    /// full, of degree 1 and 2, at every level, both encodings.
    #[test]
    fn ciphertexts_encode_as_the_wire_struct() {
        use crate::{Encoder, Encryptor, Evaluator, KeyGenerator};
        let params = Parameters::preset("INSECURE_N11_QP230_TEST").unwrap();
        let mut kg = KeyGenerator::from_seed_insecure(&params, [3; 32]);
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let (encoder, eval) = (Encoder::new(&params), Evaluator::new(&params));
        let reference = |ct: &Ciphertext| {
            let parts = if ct.seed.is_some() { &ct.parts[..1] } else { &ct.parts[..] };
            let w = CiphertextWire {
                level: ct.level as u32,
                scale: ct.scale,
                encoding: ct.encoding,
                seed: ct.seed,
                parts: parts.iter().map(|p| pack(&params, p)).collect(),
            };
            envelope(&params, Kind::Ciphertext, "ciphertext", &w, packed_len(&w.parts)).unwrap()
        };
        let mut checked = 0;
        for level in 0..=params.max_level() {
            let slots = encoder.encode_real(&[0.5, -0.25, 0.125], level, params.default_scale()).unwrap();
            let coefficients = encoder.encode_coefficients(&[0.5, -0.25], level, params.default_scale()).unwrap();
            for pt in [slots, coefficients] {
                let seeded = Encryptor::new(&params).encrypt_sk(&pt, &sk).unwrap();
                let full = Encryptor::new(&params).encrypt_pk(&pt, &pk).unwrap();
                let squared = eval.mul(&full, &full).unwrap();
                for ct in [seeded, full, squared] {
                    let bytes = ct.to_bytes(&params).unwrap();
                    assert_eq!(bytes, reference(&ct), "level {level}, {} parts", ct.parts.len());
                    // A pooled buffer's old bytes and size do not matter.
                    assert_eq!(ct.to_bytes_with(&params, |_| vec![0xa5; 3]).unwrap(), bytes);
                    assert_eq!(Ciphertext::from_bytes(&params, &bytes, 1 << 30).unwrap(), ct);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 6 * (params.max_level() + 1));
    }

    /// Byte-string headers in all three widths, as rmp-serde writes them.
    #[test]
    fn byte_string_headers_match_rmp_serde() {
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 1 << 20] {
            let mut ours = Vec::new();
            write_bin_len(&mut ours, len, "test").unwrap();
            ours.resize(ours.len() + len, 7);
            let theirs = rmp_serde::to_vec(&serde_bytes::ByteBuf::from(vec![7u8; len])).unwrap();
            assert_eq!(ours, theirs, "{len} bytes");
        }
    }
}
