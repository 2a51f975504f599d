#!/usr/bin/env python3
"""Peer CKKS libraries (SEAL, DESILO) at the parameter point of nexus-ckks's
`bench-n16-l27` preset: N = 2^16, Q = one 60-bit prime + 26 primes of 40 bits
(27 limbs), scale 2^40. Prints one JSON object per line, with the op names of
`cargo run --release -p nexus-ckks --example bench -- --json`.

Usage:
  peers.py --threads T [--repeats R] [--peer seal|desilo|all] [--ops op1,op2]
  peers.py --log-n 13 ...              quick smoke test (fewer limbs)
  peers.py --op bootstrap --threads T  DESILO's bootstrapping preset

Each op runs once as warm-up, then R times; the median wall time is reported.
precision_bits = -log2(max abs error) of the decrypted result against numpy,
inputs uniform in [-1, 1]. Run it with ops/bench/.venv/bin/python (see
setup-peers.sh).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

OPS = [
    "encode",
    "encrypt_pk",
    "decrypt",
    "add",
    "mul_plain",
    "mul_relin_rescale",
    "rescale",
    "rotate",
    "rotate_mid",
    "rotate_hoisted_8",
    "serialize",
    "deserialize",
    "ntt_forward_limb",
    "size_ciphertext_bytes",
    "size_galois_key_bytes",
]
# Names accepted for compatibility with the Rust bench's op list.
ALIASES = {"sizes": ["size_ciphertext_bytes", "size_galois_key_bytes"], "ntt_forward_limb_portable": []}
# Default limb count per ring degree: 27 at 2^16 (the bench point), elsewhere
# the most 40-bit limbs with [60] + [40]*(L-1) + [60] under SEAL's 128-bit bound.
DEFAULT_LIMBS = {12: 2, 13: 3, 14: 8, 15: 20, 16: 27}
# Ring degree DESILO picks for Engine(max_level=...): log N -> max_level range.
DESILO_LEVELS = {13: (1, 2), 14: (3, 7), 15: (8, 17), 16: (18, 26)}

np = None  # numpy, imported after the thread variables are set


class Out:
    def __init__(self, peer, args, log_n, limbs, note):
        self.peer, self.threads, self.log_n, self.limbs, self.note = peer, args.threads, log_n, limbs, note

    def emit(self, op, ms=None, bits=None, note=None, **extra):
        row = {"peer": self.peer, "op": op}
        if ms is not None:
            row["median_ms"] = round(ms, 4)
            if LAST_CPU_UTIL[0] is not None:
                row["cpu_util"] = round(LAST_CPU_UTIL[0], 2)
        row.update({"log_n": self.log_n, "limbs": self.limbs, "threads": self.threads})
        row["precision_bits"] = None if bits is None else round(bits, 2)
        row.update(extra)
        row["note"] = "; ".join(x for x in (self.note, note) if x)
        print(json.dumps(row), flush=True)


LAST_CPU_UTIL = [None]


def median_ms(fn, repeats, setup=None):
    """Median wall time of fn() over `repeats` runs after one warm-up; `setup`
    (untimed) runs before each call. Also records process CPU time / wall time
    of the timed runs (about 1.0 when the library runs on one core)."""
    times, cpu = [], 0.0
    for i in range(repeats + 1):
        if setup:
            setup()
        c = time.process_time()
        t = time.perf_counter()
        fn()
        dt = (time.perf_counter() - t) * 1e3
        if i:
            times.append(dt)
            cpu += (time.process_time() - c) * 1e3
    LAST_CPU_UTIL[0] = cpu / sum(times) if sum(times) > 0 else None
    return statistics.median(times)


def bits(got, want):
    got = np.asarray(got)[: len(want)]
    err = float(np.max(np.abs(got - want)))
    return -math.log2(err) if err > 0 else None


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def emit_serialization(o, ops, R, ct, want, dec, save, load, save_note, load_note):
    """The `serialize` and `deserialize` rows: a fresh top-level ciphertext
    to bytes in memory and back, with its size and the rate in GB/s."""
    if "serialize" not in ops and "deserialize" not in ops:
        return
    data = save(ct)
    gbps = lambda ms: round(len(data) / ms / 1e6, 2)
    if "serialize" in ops:
        ms = median_ms(lambda: save(ct), R)
        o.emit("serialize", ms, None, save_note, bytes=len(data), gb_per_s=gbps(ms))
    if "deserialize" in ops:
        ms = median_ms(lambda: load(data), R)
        o.emit("deserialize", ms, bits(dec(load(data)), want), load_note, bytes=len(data), gb_per_s=gbps(ms))


# --------------------------------------------------------------------- SEAL


class SealPython:
    """Microsoft SEAL through seal-python (`import seal`)."""

    via = "seal-python"
    size_note = "save(), uncompressed (this build has no zstd)"

    def __init__(self, n, bit_sizes):
        import seal

        self.s = seal
        parms = seal.EncryptionParameters(seal.scheme_type.ckks)
        parms.set_poly_modulus_degree(n)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bit_sizes))
        bound = seal.CoeffModulus.MaxBitCount(n, seal.sec_level_type.tc128)
        self.secure = 0 < bound and sum(bit_sizes) <= bound
        level = seal.sec_level_type.tc128 if self.secure else seal.sec_level_type.none
        self.ctx = seal.SEALContext(parms, True, level)
        if not self.ctx.parameters_set():
            raise RuntimeError(self.ctx.parameter_error_message())
        self.bound = bound
        self.kg = seal.KeyGenerator(self.ctx)
        self.sk = self.kg.secret_key()
        self.pk = self.kg.create_public_key()
        self.rlk = self.kg.create_relin_keys()
        self.encoder = seal.CKKSEncoder(self.ctx)
        self.encryptor = seal.Encryptor(self.ctx, self.pk)
        self.decryptor = seal.Decryptor(self.ctx, self.sk)
        self.ev = seal.Evaluator(self.ctx)

    def galois_keys(self, steps):
        gk = self.s.GaloisKeys()
        self.kg.create_galois_keys(list(steps), gk)
        return gk

    def encode(self, v, scale):
        return self.encoder.encode(v, scale)

    def decode(self, pt):
        return self.encoder.decode(pt)

    def encrypt(self, pt):
        return self.encryptor.encrypt(pt)

    def decrypt(self, ct):
        return self.decryptor.decrypt(ct)

    def add(self, a, b):
        return self.ev.add(a, b)

    def mul_plain(self, ct, pt):
        return self.ev.multiply_plain(ct, pt)

    def mul_relin_rescale(self, a, b):
        c = self.ev.multiply(a, b)
        self.ev.relinearize_inplace(c, self.rlk)
        self.ev.rescale_to_next_inplace(c)
        return c

    def mul_relin(self, a, b):
        c = self.ev.multiply(a, b)
        self.ev.relinearize_inplace(c, self.rlk)
        return c

    def rescale(self, ct):
        return self.ev.rescale_to_next(ct)

    def rotate(self, ct, step, gk):
        return self.ev.rotate_vector(ct, step, gk)

    def copy(self, ct):
        return self.s.Ciphertext(ct)

    def mod_switch_inplace(self, ct):
        self.ev.mod_switch_to_next_inplace(ct)

    def to_ntt_inplace(self, ct):
        self.ev.transform_to_ntt_inplace(ct)

    def from_ntt_inplace(self, ct):
        self.ev.transform_from_ntt_inplace(ct)

    def ct_bytes(self, ct):
        return ct.save_size(self.s.compr_mode_type.none)

    def ct_serialize(self, ct):
        return ct.to_string(self.s.compr_mode_type.none)

    def ct_deserialize(self, data):
        ct = self.s.Ciphertext()
        ct.load_bytes(self.ctx, data)
        return ct

    def save_bytes(self, obj):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "obj")
            obj.save(path)
            return os.path.getsize(path)


class SealApi(SealPython):
    """The same SEAL calls through TenSEAL's raw bindings (tenseal.sealapi),
    the fallback when seal-python is not installed."""

    via = "tenseal.sealapi"
    size_note = "save(), SEAL's default compression"

    def __init__(self, n, bit_sizes):
        import tenseal.sealapi as s

        self.s, self.n = s, n
        parms = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(n)
        parms.set_coeff_modulus(s.CoeffModulus.Create(n, bit_sizes))
        bound = s.CoeffModulus.MaxBitCount(n, s.SEC_LEVEL_TYPE.TC128)
        self.secure = 0 < bound and sum(bit_sizes) <= bound
        self.bound = bound
        self.ctx = s.SEALContext(parms, True, s.SEC_LEVEL_TYPE.TC128 if self.secure else s.SEC_LEVEL_TYPE.NONE)
        self.kg = s.KeyGenerator(self.ctx)
        self.sk = self.kg.secret_key()
        self.pk = s.PublicKey()
        self.kg.create_public_key(self.pk)
        self.rlk = s.RelinKeys()
        self.kg.create_relin_keys(self.rlk)
        self.encoder = s.CKKSEncoder(self.ctx)
        self.encryptor = s.Encryptor(self.ctx, self.pk)
        self.decryptor = s.Decryptor(self.ctx, self.sk)
        self.ev = s.Evaluator(self.ctx)

    def _ct(self):
        return self.s.Ciphertext(self.ctx)

    def galois_keys(self, steps):
        # These bindings resolve a list of ints to Galois elements, not steps:
        # rotation by s > 0 is the automorphism X -> X^(3^s mod 2N).
        gk = self.s.GaloisKeys()
        self.kg.create_galois_keys([pow(3, s, 2 * self.n) for s in steps], gk)
        return gk

    def encode(self, v, scale):
        pt = self.s.Plaintext()
        self.encoder.encode(list(map(float, v)), scale, pt)
        return pt

    def decode(self, pt):
        return np.asarray(self.encoder.decode_double(pt))

    def encrypt(self, pt):
        ct = self._ct()
        self.encryptor.encrypt(pt, ct)
        return ct

    def decrypt(self, ct):
        pt = self.s.Plaintext()
        self.decryptor.decrypt(ct, pt)
        return pt

    def add(self, a, b):
        c = self._ct()
        self.ev.add(a, b, c)
        return c

    def mul_plain(self, ct, pt):
        c = self._ct()
        self.ev.multiply_plain(ct, pt, c)
        return c

    def mul_relin(self, a, b):
        c = self._ct()
        self.ev.multiply(a, b, c)
        self.ev.relinearize_inplace(c, self.rlk)
        return c

    def mul_relin_rescale(self, a, b):
        c = self.mul_relin(a, b)
        self.ev.rescale_to_next_inplace(c)
        return c

    def rescale(self, ct):
        c = self._ct()
        self.ev.rescale_to_next(ct, c)
        return c

    def rotate(self, ct, step, gk):
        c = self._ct()
        self.ev.rotate_vector(ct, step, gk, c)
        return c

    def copy(self, ct):
        c = self._ct()
        self.ev.mod_switch_to(ct, ct.parms_id(), c)  # same level: a copy
        return c

    def ct_bytes(self, ct):
        return self.save_bytes(ct)


def seal_backend():
    if os.environ.get("PEERS_SEAL_BACKEND") == "tenseal":  # to test the fallback
        return SealApi
    try:
        import seal  # noqa: F401

        return SealPython
    except ImportError:
        pass
    try:
        import tenseal.sealapi  # noqa: F401

        return SealApi
    except ImportError:
        return None


def run_seal(args, ops):
    backend = seal_backend()
    n = 1 << args.log_n
    L = args.limbs
    if backend is None:
        Out("seal", args, args.log_n, L, "").emit("unavailable", note="neither seal-python nor tenseal imports; run setup-peers.sh")
        return
    bit_sizes = [60] + [40] * (L - 1) + [60]
    t0 = time.perf_counter()
    S = backend(n, bit_sizes)
    note = f"{S.via}; Q 60+{L - 1}x40, P 60 (dnum {L}, SEAL's only mode); real inputs"
    if not S.secure:
        why = "has no 128-bit table entry for this N" if S.bound == 0 else f"128-bit bound is {S.bound} bits"
        note += f"; sec_level none ({sum(bit_sizes)} bits; SEAL {why})"
    if args.threads > 1:
        note += "; single-threaded library (threads ignored)"
    o = Out("seal", args, args.log_n, L, note)
    R = args.repeats
    slots = n // 2
    scale = 2.0**40
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, slots)
    b = rng.uniform(-1, 1, slots)
    prod = a * b
    need_rot = {"rotate", "rotate_mid", "rotate_hoisted_8", "size_galois_key_bytes"} & ops
    steps = list(range(1, 9)) if "rotate_hoisted_8" in ops else [1] if need_rot else []
    gk_note = None
    if len(steps) > 1:
        key_bytes = 2 * L * (L + 1) * n * 8  # dnum = L digits, Q*P limbs
        avail = mem_available_bytes()
        if avail is not None and avail < 8 * key_bytes + (2 << 30):
            steps = [1]
            gk_note = f"skipped: 8 Galois keys need ~{8 * key_bytes / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
    gk = S.galois_keys(steps) if steps else None
    keygen_ms = (time.perf_counter() - t0) * 1e3
    pa, pb = S.encode(a, scale), S.encode(b, scale)
    ca, cb = S.encrypt(pa), S.encrypt(pb)

    def dec(ct):
        return S.decode(S.decrypt(ct))

    if "encode" in ops:
        o.emit("encode", median_ms(lambda: S.encode(a, scale), R), bits(S.decode(pa), a))
    if "encrypt_pk" in ops:
        o.emit("encrypt_pk", median_ms(lambda: S.encrypt(pa), R), bits(dec(ca), a))
    if "decrypt" in ops:
        o.emit("decrypt", median_ms(lambda: S.decrypt(ca), R), bits(dec(ca), a), "decrypt to plaintext, no decode")
    if "add" in ops:
        o.emit("add", median_ms(lambda: S.add(ca, cb), R), bits(dec(S.add(ca, cb)), a + b))
    if "mul_plain" in ops:
        ms = median_ms(lambda: S.mul_plain(ca, pb), R)
        o.emit("mul_plain", ms, bits(dec(S.rescale(S.mul_plain(ca, pb))), prod), "multiply_plain; bits after rescale")
    if "mul_relin_rescale" in ops:
        ms = median_ms(lambda: S.mul_relin_rescale(ca, cb), R)
        o.emit("mul_relin_rescale", ms, bits(dec(S.mul_relin_rescale(ca, cb)), prod), "multiply + relinearize_inplace + rescale_to_next_inplace")
    if "rescale" in ops:
        m = S.mul_relin(ca, cb)
        o.emit("rescale", median_ms(lambda: S.rescale(m), R), bits(dec(S.rescale(m)), prod), "rescale_to_next of a relinearised product")
    if "rotate" in ops:
        ms = median_ms(lambda: S.rotate(ca, 1, gk), R)
        o.emit("rotate", ms, bits(dec(S.rotate(ca, 1, gk)), np.roll(a, -1)), "rotate_vector by 1")
    if "rotate_mid" in ops:
        level = (L - 1) // 2
        mid = S.copy(ca)
        for _ in range(L - 1 - level):
            S.mod_switch_inplace(mid)
        ms = median_ms(lambda: S.rotate(mid, 1, gk), R)
        o.emit("rotate_mid", ms, bits(dec(S.rotate(mid, 1, gk)), np.roll(a, -1)), f"mod_switch_to_next_inplace x{L - 1 - level}", level=level)
    if "rotate_hoisted_8" in ops:
        if gk_note:
            o.emit("rotate_hoisted_8", note=gk_note)
        else:

            def eight():
                return [S.rotate(ca, s, gk) for s in range(1, 9)]

            ms = median_ms(eight, R)
            worst = min(bits(dec(c), np.roll(a, -s)) for s, c in zip(range(1, 9), eight()))
            o.emit("rotate_hoisted_8", ms, worst, "no hoisting API: 8 separate rotate_vector calls")
    if "ntt_forward_limb" in ops:
        c = S.copy(ca)
        S.from_ntt_inplace(c)
        state = {"ntt": False}

        def back():
            if state["ntt"]:
                S.from_ntt_inplace(c)

        def fwd():
            S.to_ntt_inplace(c)
            state["ntt"] = True

        ms = median_ms(fwd, max(R, 5), setup=back)
        o.emit("ntt_forward_limb", ms / (2 * L), None, f"derived: transform_to_ntt_inplace of a 2 x {L}-limb ciphertext / {2 * L}")
    if hasattr(S, "ct_serialize"):
        emit_serialization(o, ops, R, ca, a, dec, S.ct_serialize, S.ct_deserialize,
                           "Ciphertext.to_string(compr_mode none), to memory",
                           "Ciphertext.load_bytes (validated against the context)")
    if "size_ciphertext_bytes" in ops:
        o.emit("size_ciphertext_bytes", bytes=S.ct_bytes(ca), note=f"fresh public-key ciphertext at the top level, {S.size_note}")
    if "size_galois_key_bytes" in ops and gk is not None:
        o.emit(
            "size_galois_key_bytes",
            bytes=S.save_bytes(gk) // len(steps),
            keygen_ms=round(keygen_ms, 1),
            note=f"one rotation key (GaloisKeys {S.size_note}, / {len(steps)} keys); keygen_ms: pk, rlk and {len(steps)} Galois keys",
        )


# ------------------------------------------------------------------- DESILO


def desilo_engine(args, **kw):
    import desilofhe

    return desilofhe.Engine(mode="cpu", thread_count=args.threads, **kw)


def run_desilo(args, ops):
    try:
        import desilofhe  # noqa: F401
    except ImportError:
        Out("desilo", args, args.log_n, args.limbs, "").emit("unavailable", note="desilofhe does not import; run setup-peers.sh")
        return
    lo, hi = DESILO_LEVELS.get(args.log_n, (1, 26))
    max_level = min(max(args.limbs - 1, lo), hi)
    eng = desilo_engine(args, max_level=max_level)
    slots = eng.slot_count
    n = 2 * slots
    log_n = n.bit_length() - 1
    L = max_level + 1
    note = (
        f"Engine(max_level={max_level}, mode='cpu', thread_count=<threads>) (cpu_util shows whether it uses them); own word-sized moduli "
        "({words} x 64-bit words/coeff at top vs {L} limbs); complex inputs; bits after its deferred rescale"
    )
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, slots) + 1j * rng.uniform(-1, 1, slots)
    b = rng.uniform(-1, 1, slots) + 1j * rng.uniform(-1, 1, slots)
    prod = a * b
    t0 = time.perf_counter()
    sk = eng.create_secret_key()
    pk = eng.create_public_key(sk)
    rlk = eng.create_relinearization_key(sk)
    need_rot = {"rotate", "rotate_mid", "rotate_hoisted_8", "size_galois_key_bytes"} & ops
    steps = list(range(1, 9)) if "rotate_hoisted_8" in ops else [1] if need_rot else []
    rot = {s: eng.create_fixed_rotation_key(sk, s) for s in steps}
    keygen_ms = (time.perf_counter() - t0) * 1e3
    pa, pb = eng.encode(a), eng.encode(b)
    # A fresh DESILO ciphertext carries a pending rescale (it is at a larger
    # scale, which multiply() removes before it multiplies); rescale() makes it
    # "normal" at scale ~2^40 with the same level.
    ca, cb = eng.encrypt(pa, pk), eng.encrypt(pb, pk)
    ca_r, cb_r = eng.rescale(ca), eng.rescale(cb)
    words = round(ca.serialized_nbytes / (2 * n * 8))
    o = Out("desilo", args, log_n, L, note.format(words=words, L=L))
    R = args.repeats

    def dec(ct):
        return eng.decrypt(eng.rescale(ct), sk)

    if "encode" in ops:
        o.emit("encode", median_ms(lambda: eng.encode(a), R), bits(eng.decode(pa), a), "encode(complex array) at the top level")
    if "encrypt_pk" in ops:
        o.emit("encrypt_pk", median_ms(lambda: eng.encrypt(pa, pk), R), bits(dec(ca), a), "encrypt(plaintext, public_key)")
    if "decrypt" in ops:
        o.emit("decrypt", median_ms(lambda: eng.decrypt_to_plaintext(ca, sk), R), bits(dec(ca), a), "decrypt_to_plaintext, no decode")
    if "add" in ops:
        o.emit("add", median_ms(lambda: eng.add(ca, cb), R), bits(dec(eng.add(ca, cb)), a + b))
    if "mul_plain" in ops:
        ms = median_ms(lambda: eng.multiply(ca_r, pb), R)
        o.emit("mul_plain", ms, bits(dec(eng.multiply(ca_r, pb)), prod), "multiply(rescaled ct, plaintext); its output is left unrescaled")
    if "mul_relin_rescale" in ops:
        ms = median_ms(lambda: eng.rescale(eng.multiply(ca_r, cb_r, rlk)), R)
        out = eng.rescale(eng.multiply(ca_r, cb_r, rlk))
        ms_fresh = median_ms(lambda: eng.multiply(ca, cb, rlk), R)
        o.emit(
            "mul_relin_rescale",
            ms,
            bits(eng.decrypt(out, sk), prod),
            "rescale(multiply(ct, ct, relinearization_key)) on rescaled inputs; fresh_inputs_ms: multiply(fresh, fresh, rlk), which rescales both inputs first",
            level_after=out.level,
            fresh_inputs_ms=round(ms_fresh, 4),
        )
    if "rescale" in ops:
        m = eng.multiply(ca_r, cb_r, rlk)
        o.emit("rescale", median_ms(lambda: eng.rescale(m), R), bits(dec(m), prod), "rescale of a relinearised product")
    if "rotate" in ops:
        ms = median_ms(lambda: eng.rotate(ca, rot[1]), R)
        o.emit("rotate", ms, bits(dec(eng.rotate(ca, rot[1])), np.roll(a, -1)), "rotate(fresh ct, fixed_rotation_key(1))")
    if "rotate_mid" in ops:
        level = max_level // 2
        mid = eng.level_down(ca, level)
        ms = median_ms(lambda: eng.rotate(mid, rot[1]), R)
        mid_words = round(mid.serialized_nbytes / (2 * n * 8))
        o.emit(
            "rotate_mid",
            ms,
            bits(dec(eng.rotate(mid, rot[1])), np.roll(a, -1)),
            f"level_down(ct, {level}) then rotate ({mid_words} words)",
            level=level,
        )
    if "rotate_hoisted_8" in ops:
        keys = [rot[s] for s in range(1, 9)]
        ms = median_ms(lambda: eng.rotate_many(ca, keys), R)
        outs = eng.rotate_many(ca, keys)
        worst = min(bits(dec(c), np.roll(a, -s)) for s, c in zip(range(1, 9), outs))
        o.emit("rotate_hoisted_8", ms, worst, "rotate_many(ct, [fixed_rotation_key(1..8)])")
    if "ntt_forward_limb" in ops:
        ci = eng.intt(ca)
        ms = median_ms(lambda: eng.ntt(ci), max(R, 5))
        o.emit("ntt_forward_limb", ms / (2 * words), None, f"derived: ntt() of a 2 x {words}-word ciphertext / {2 * words}, per 64-bit word (not per 40-bit limb)")
    emit_serialization(o, ops, R, ca, a, dec, eng.serialize_ciphertext, eng.deserialize_ciphertext,
                       "serialize_ciphertext, to memory", "deserialize_ciphertext")
    if "size_ciphertext_bytes" in ops:
        o.emit("size_ciphertext_bytes", bytes=len(eng.serialize_ciphertext(ca)), note="serialize_ciphertext of a fresh top-level ciphertext")
    if "size_galois_key_bytes" in ops and rot:
        o.emit(
            "size_galois_key_bytes",
            bytes=len(eng.serialize_fixed_rotation_key(rot[1])),
            keygen_ms=round(keygen_ms, 1),
            note=f"serialize_fixed_rotation_key(1); keygen_ms: pk, rlk and {len(rot)} rotation keys",
        )


def run_desilo_bootstrap(args):
    eng = desilo_engine(args, bootstrap=True)
    t0 = time.perf_counter()
    sk = eng.create_secret_key()
    pk = eng.create_public_key(sk)
    rlk = eng.create_relinearization_key(sk)
    conj = eng.create_conjugation_key(sk)
    if args.bootstrap_key == "auto":
        avail = mem_available_bytes()
        args.bootstrap_key = "full" if avail and avail > 48 << 30 else "small"
    if args.bootstrap_key == "small":
        # DESILO's memory-saving variant (about 160 s per bootstrap on one core here).
        roll = eng.create_roll_key(sk)
        bk = eng.create_small_bootstrap_key(sk)
        keys = (rlk, conj, roll, bk)
    else:
        bk = eng.create_bootstrap_key(sk)
        keys = (rlk, conj, bk)
    keygen_ms = (time.perf_counter() - t0) * 1e3
    slots = eng.slot_count
    rng = np.random.default_rng(2)
    errs, times, levels_after = [], [], None
    x = rng.uniform(-1, 1, slots)
    ct = eng.level_down(eng.encrypt(x, pk), 0)
    if args.bootstrap_key == "full":
        eng.bootstrap(ct, *keys)  # warm-up (skipped for the small key: minutes per run)
    for _ in range(args.repeats):
        x = rng.uniform(-1, 1, slots)
        ct = eng.level_down(eng.encrypt(x, pk), 0)
        t = time.perf_counter()
        out = eng.bootstrap(ct, *keys)
        times.append((time.perf_counter() - t) * 1e3)
        levels_after = out.level
        errs.append(np.abs(eng.decrypt(eng.rescale(out), sk) - x))
    err = np.concatenate(errs)
    row = {
        "peer": "desilo",
        "op": "bootstrap",
        "median_ms": round(statistics.median(times), 1),
        "log_n": (2 * slots).bit_length() - 1,
        "threads": args.threads,
        "slots": slots,
        "precision_bits_mean": round(float(-np.log2(np.mean(err))), 2),
        "precision_bits_min": round(float(-np.log2(np.max(err))), 2),
        "levels_after": levels_after,
        "keygen_ms": round(keygen_ms, 1),
        "note": f"Engine(bootstrap=True, mode='cpu', thread_count={args.threads}); {args.bootstrap_key} bootstrap key; input level_down to 0; real inputs; {args.repeats} repeats{' after a warm-up' if args.bootstrap_key == 'full' else ', no warm-up'}; bits after rescale",
    }
    print(json.dumps(row), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per op (default 5; 3 for bootstrap)")
    p.add_argument("--peer", default="all", choices=["all", "seal", "desilo"])
    p.add_argument("--ops", default=None, help="comma-separated ops (default: all): " + ",".join(OPS))
    p.add_argument("--op", default=None, help="one op; 'bootstrap' runs DESILO's bootstrapping")
    p.add_argument(
        "--bootstrap-key",
        default="auto",
        choices=["auto", "full", "small"],
        help="DESILO key for --op bootstrap: full (over 16 GB of keys; untested here) or small (~7 GB peak, ~160 s per bootstrap on one core); auto: full when 48 GB are available",
    )
    p.add_argument("--log-n", type=int, default=16, help="log2 ring degree; smaller for smoke tests")
    p.add_argument("--limbs", type=int, default=None, help="ciphertext modulus limbs (default 27 at log-n 16, fewer below)")
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.op == "bootstrap" else 5
    args.repeats = max(1, args.repeats)
    if args.limbs is None:
        args.limbs = DEFAULT_LIMBS.get(args.log_n, 3)
    args.limbs = max(2, min(27, args.limbs))

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    global np
    import numpy

    np = numpy

    if args.op == "bootstrap":
        run_desilo_bootstrap(args)
        return
    wanted = [args.op] if args.op else (args.ops.split(",") if args.ops else OPS)
    ops = set()
    for w in (x.strip() for x in wanted if x.strip()):
        if w in ALIASES:
            ops.update(ALIASES[w])
        elif w in OPS:
            ops.add(w)
        else:
            sys.exit(f"unknown op {w!r}; known: {', '.join(OPS)}, bootstrap")

    if args.peer == "all":
        # One process per peer: each one's keys are freed before the next starts.
        rc = 0
        for peer in ("seal", "desilo"):
            cmd = [sys.executable, os.path.abspath(__file__), "--peer", peer, "--threads", str(args.threads)]
            cmd += ["--repeats", str(args.repeats), "--log-n", str(args.log_n), "--limbs", str(args.limbs)]
            cmd += ["--ops", ",".join(sorted(ops))]
            r = subprocess.run(cmd)
            if r.returncode:
                print(f"peers.py: {peer} exited with {r.returncode}", file=sys.stderr)
                rc = rc or r.returncode
        sys.exit(rc)
    {"seal": run_seal, "desilo": run_desilo}[args.peer](args, ops)


if __name__ == "__main__":
    main()
