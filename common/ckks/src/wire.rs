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
use crate::scheme::sampling::Sampler;
use crate::Parameters;
use serde::{Deserialize, Serialize};

/// Current format version.
pub const FORMAT_VERSION: u16 = 1;
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
}

fn decode_err(what: &'static str, reason: impl Into<String>) -> CkksError {
    CkksError::Decode { what, reason: reason.into() }
}

fn envelope(
    params: &Parameters,
    kind: Kind,
    what: &'static str,
    payload: &impl Serialize,
) -> Result<Vec<u8>, CkksError> {
    let body = rmp_serde::to_vec(payload).map_err(|e| CkksError::Encode { what, reason: e.to_string() })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&params.digest());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
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

/// A polynomial's limbs, each bit-packed at its prime's size.
#[derive(Serialize, Deserialize)]
struct PolyWire {
    q: u32,
    p: u32,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

fn pack(params: &Parameters, poly: &Poly<Ntt>) -> PolyWire {
    let ring = params.ring();
    let basis = poly.basis();
    let mut data = Vec::new();
    for j in 0..basis.limbs() {
        let bits = ring.modulus_of(basis, j).bits();
        let mut acc: u128 = 0;
        let mut filled = 0u32;
        for &x in poly.limb(j) {
            acc |= (x as u128) << filled;
            filled += bits;
            while filled >= 8 {
                data.push(acc as u8);
                acc >>= 8;
                filled -= 8;
            }
        }
        if filled > 0 {
            data.push(acc as u8);
        }
    }
    PolyWire { q: basis.q as u32, p: basis.p as u32, data }
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
    let mut out = vec![0u64; basis.limbs() * n];
    let mut pos = 0usize;
    for j in 0..basis.limbs() {
        let m = ring.modulus_of(basis, j);
        let bits = m.bits();
        let mask = (1u128 << bits) - 1;
        let limb_bytes = (n * bits as usize).div_ceil(8);
        let src = &w.data[pos..pos + limb_bytes];
        let mut acc: u128 = 0;
        let mut filled = 0u32;
        let mut byte = 0usize;
        for (k, dst) in out[j * n..(j + 1) * n].iter_mut().enumerate() {
            while filled < bits {
                acc |= (src[byte] as u128) << filled;
                byte += 1;
                filled += 8;
            }
            let x = (acc & mask) as u64;
            acc >>= bits;
            filled -= bits;
            if x >= m.value() {
                return Err(decode_err(
                    what,
                    format!("coefficient {k} of limb {j} is not reduced modulo {}", m.value()),
                ));
            }
            *dst = x;
        }
        if acc != 0 {
            return Err(decode_err(what, format!("non-zero padding bits after limb {j}")));
        }
        pos += limb_bytes;
    }
    Ok(Poly::from_raw(basis, n, out))
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

#[derive(Serialize, Deserialize)]
struct CiphertextWire {
    level: u32,
    scale: f64,
    encoding: Encoding,
    seed: Option<[u8; 32]>,
    parts: Vec<PolyWire>,
}

impl Wire for Ciphertext {
    const KIND: Kind = Kind::Ciphertext;
    const NAME: &'static str = "ciphertext";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        // A seeded ciphertext sends c0 only; c1 is regenerated from the seed.
        let parts = if self.seed.is_some() { &self.parts[..1] } else { &self.parts[..] };
        let w = CiphertextWire {
            level: self.level as u32,
            scale: self.scale,
            encoding: self.encoding,
            seed: self.seed,
            parts: parts.iter().map(|p| pack(params, p)).collect(),
        };
        envelope(params, Self::KIND, Self::NAME, &w)
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
            parts.push(Sampler::from_seed(seed).uniform_ntt(params.ring(), basis));
        }
        Ok(Ciphertext { parts, level, scale: w.scale, encoding: w.encoding, seed: w.seed })
    }
}

#[derive(Serialize, Deserialize)]
struct PlaintextWire {
    level: u32,
    scale: f64,
    encoding: Encoding,
    poly: PolyWire,
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
        envelope(params, Self::KIND, Self::NAME, &w)
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
struct PublicKeyWire {
    seed: [u8; 32],
    b: PolyWire,
}

impl Wire for PublicKey {
    const KIND: Kind = Kind::PublicKey;
    const NAME: &'static str = "public key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        envelope(params, Self::KIND, Self::NAME, &PublicKeyWire { seed: self.seed, b: pack(params, &self.b) })
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: PublicKeyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let basis = Basis { q: params.q().len(), p: params.p().len() };
        let b = unpack(params, &w.b, basis, Self::NAME)?;
        let a = Sampler::from_seed(w.seed).uniform_ntt(params.ring(), basis);
        Ok(PublicKey { b, a, seed: w.seed, digest: params.digest() })
    }
}

#[derive(Serialize, Deserialize)]
struct SwitchingKeyWire {
    seed: [u8; 32],
    b: Vec<PolyWire>,
}

fn switching_key_to_wire(params: &Parameters, k: &SwitchingKey) -> SwitchingKeyWire {
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
    // `a` is regenerated in full from the seed (as it was sampled), then
    // restricted like `b`.
    let a = crate::scheme::keys::regenerate_uniform_halves(params, w.seed, basis, digits);
    Ok(SwitchingKey::compacted(b, a, w.seed, params.digest()))
}

impl Wire for RelinKey {
    const KIND: Kind = Kind::RelinKey;
    const NAME: &'static str = "relinearisation key";

    fn to_bytes(&self, params: &Parameters) -> Result<Vec<u8>, CkksError> {
        envelope(params, Self::KIND, Self::NAME, &switching_key_to_wire(params, &self.0))
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let w: SwitchingKeyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        Ok(RelinKey(switching_key_from_wire(params, &w, Self::NAME)?))
    }
}

#[derive(Serialize, Deserialize)]
struct GaloisKeyWire {
    element: u64,
    key: SwitchingKeyWire,
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
        envelope(params, Self::KIND, Self::NAME, &w)
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
        let w: Vec<GaloisKeyWire> = self
            .keys
            .values()
            .map(|k| GaloisKeyWire { element: k.element as u64, key: switching_key_to_wire(params, &k.key) })
            .collect();
        envelope(params, Self::KIND, Self::NAME, &w)
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
        let out = envelope(params, Self::KIND, Self::NAME, &w);
        zeroize::Zeroize::zeroize(&mut w.data);
        out
    }

    fn from_bytes(params: &Parameters, bytes: &[u8], limit: usize) -> Result<Self, CkksError> {
        let mut w: PolyWire = open(params, bytes, limit, Self::KIND, Self::NAME)?;
        let basis = Basis { q: params.q().len(), p: params.p().len() };
        let poly = unpack(params, &w, basis, Self::NAME);
        zeroize::Zeroize::zeroize(&mut w.data);
        Ok(SecretKey { poly: poly?, digest: params.digest() })
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
