#!/usr/bin/env python3
"""Peer CKKS libraries at the same parameter point as `nexus-ckks`'s bench.

Point (b) of shared/PEERS.md: N = 2^16, Q = one 60-bit prime + 26 primes of
40 bits (27 limbs), scale 2^40. SEAL (seal-python 4.x) uses one 60-bit
special prime (dnum = 27, its only key-switching mode); DESILO uses
`max_level=26` with its own moduli. Prints one JSON object per line with the
op names of `cargo run --release -p nexus-ckks --example bench -- --json`.

Usage: peers.py --threads T [--repeats R] [--peer seal|desilo|all]
                [--ops op1,op2] [--log-n 13] [--op bootstrap]
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

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
    "sizes",
]


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bits(got, want):
    err = float(np.max(np.abs(np.asarray(got)[: len(want)] - want)))
    return -math.log2(err) if err > 0 else None


def emit(peer, op, threads, log_n, limbs, ms=None, precision=None, note=None, **extra):
    row = {"peer": peer, "op": op}
    if ms is not None:
        row["median_ms"] = round(ms, 4)
    row.update({"log_n": log_n, "limbs": limbs, "threads": threads})
    row["precision_bits"] = None if precision is None else round(precision, 2)
    if note:
        row["note"] = note
    row.update(extra)
    print(json.dumps(row), flush=True)


def run_seal(args, ops):
    import seal

    n = 1 << args.log_n
    q_count = args.limbs
    bits_list = [60] + [40] * (q_count - 1) + [60]
    parms = seal.EncryptionParameters(seal.scheme_type.ckks)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits_list))
    # SEAL's own table stops at N = 2^15; the point is below the 2^16 bound.
    context = seal.SEALContext(parms, True, seal.sec_level_type.none)
    scale = 2.0**40
    slots = n // 2
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, slots)
    b = rng.uniform(-1, 1, slots)
    keygen = seal.KeyGenerator(context)
    sk = keygen.secret_key()
    pk = keygen.create_public_key()
    rlk = keygen.create_relin_keys()
    gk = seal.GaloisKeys()
    keygen.create_galois_keys([1], gk)
    encoder = seal.CKKSEncoder(context)
    encryptor = seal.Encryptor(context, pk)
    evaluator = seal.Evaluator(context)
    decryptor = seal.Decryptor(context, sk)
    pa, pb = encoder.encode(a, scale), encoder.encode(b, scale)
    ca, cb = encryptor.encrypt(pa), encryptor.encrypt(pb)
    T, L, R = args.threads, q_count, args.repeats
    note = "single-threaded library" if T > 1 else None

    def dec(ct):
        return encoder.decode(decryptor.decrypt(ct))

    if "encode" in ops:
        ms = median_ms(lambda: encoder.encode(a, scale), R)
        emit("seal", "encode", T, args.log_n, L, ms, bits(encoder.decode(pa), a), note)
    if "encrypt_pk" in ops:
        ms = median_ms(lambda: encryptor.encrypt(pa), R)
        emit("seal", "encrypt_pk", T, args.log_n, L, ms, bits(dec(ca), a), note)
    if "decrypt" in ops:
        ms = median_ms(lambda: decryptor.decrypt(ca), R)
        emit("seal", "decrypt", T, args.log_n, L, ms, bits(dec(ca), a), note)
    if "add" in ops:
        ms = median_ms(lambda: evaluator.add(ca, cb), R)
        emit("seal", "add", T, args.log_n, L, ms, bits(dec(evaluator.add(ca, cb)), a + b), note)
    if "mul_plain" in ops:
        ms = median_ms(lambda: evaluator.multiply_plain(ca, pb), R)
        out = evaluator.multiply_plain(ca, pb)
        evaluator.rescale_to_next_inplace(out)
        emit("seal", "mul_plain", T, args.log_n, L, ms, bits(dec(out), a * b), note)

    def mrr():
        c = evaluator.multiply(ca, cb)
        evaluator.relinearize_inplace(c, rlk)
        evaluator.rescale_to_next_inplace(c)
        return c

    if "mul_relin_rescale" in ops:
        ms = median_ms(mrr, R)
        emit("seal", "mul_relin_rescale", T, args.log_n, L, ms, bits(dec(mrr()), a * b), note)
    if "rescale" in ops:
        m = evaluator.multiply(ca, cb)
        evaluator.relinearize_inplace(m, rlk)
        ms = median_ms(lambda: evaluator.rescale_to_next(m), R)
        emit("seal", "rescale", T, args.log_n, L, ms, bits(dec(evaluator.rescale_to_next(m)), a * b), note)
    if "rotate" in ops:
        ms = median_ms(lambda: evaluator.rotate_vector(ca, 1, gk), R)
        emit("seal", "rotate", T, args.log_n, L, ms, bits(dec(evaluator.rotate_vector(ca, 1, gk)), np.roll(a, -1)), note)
    if "rotate_mid" in ops:
        mid = seal.Ciphertext(ca)
        for _ in range((q_count - 1) - (q_count - 1) // 2):
            evaluator.mod_switch_to_next_inplace(mid)
        ms = median_ms(lambda: evaluator.rotate_vector(mid, 1, gk), R)
        emit("seal", "rotate_mid", T, args.log_n, L, ms, bits(dec(evaluator.rotate_vector(mid, 1, gk)), np.roll(a, -1)), note, level=(q_count - 1) // 2)
    if "rotate_hoisted_8" in ops:
        emit("seal", "rotate_hoisted_8", T, args.log_n, L, None, None, "no hoisting API; eight Galois keys would take 6.3 GB at this point")
    if "sizes" in ops:
        with tempfile.TemporaryDirectory() as d:
            ca.save(os.path.join(d, "ct"))
            gk.save(os.path.join(d, "gk"))
            emit(
                "seal",
                "sizes",
                T,
                args.log_n,
                L,
                note="SEAL's default compression (zstd) applies",
                ciphertext_bytes=os.path.getsize(os.path.join(d, "ct")),
                galois_key_bytes=os.path.getsize(os.path.join(d, "gk")),
            )


def run_desilo(args, ops):
    import desilofhe

    engine = desilofhe.Engine(max_level=args.limbs - 1, mode="cpu", thread_count=args.threads)
    slots = engine.slot_count
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, slots)
    b = rng.uniform(-1, 1, slots)
    sk = engine.create_secret_key()
    pk = engine.create_public_key(sk)
    rlk = engine.create_relinearization_key(sk)
    rot_keys = [engine.create_fixed_rotation_key(sk, d) for d in range(1, 9)]
    T, L, R = args.threads, args.limbs, args.repeats
    log_n = int(round(math.log2(slots))) + 1
    pa, pb = engine.encode(a), engine.encode(b)
    ca, cb = engine.encrypt(a, pk), engine.encrypt(b, pk)
    note = f"DESILO max_level={args.limbs - 1} with its own moduli"

    def dec(ct):
        return engine.decrypt(ct, sk)

    if "encode" in ops:
        ms = median_ms(lambda: engine.encode(a), R)
        emit("desilo", "encode", T, log_n, L, ms, bits(engine.decode(pa), a), note)
    if "encrypt_pk" in ops:
        ms = median_ms(lambda: engine.encrypt(pa, pk), R)
        emit("desilo", "encrypt_pk", T, log_n, L, ms, bits(dec(ca), a), note)
    if "decrypt" in ops:
        ms = median_ms(lambda: engine.decrypt_to_plaintext(ca, sk), R)
        emit("desilo", "decrypt", T, log_n, L, ms, bits(dec(ca), a), note + "; decrypt_to_plaintext (no decode)")
    if "add" in ops:
        ms = median_ms(lambda: engine.add(ca, cb), R)
        emit("desilo", "add", T, log_n, L, ms, bits(dec(engine.add(ca, cb)), a + b), note)
    if "mul_plain" in ops:
        ms = median_ms(lambda: engine.multiply(ca, pb), R)
        emit("desilo", "mul_plain", T, log_n, L, ms, bits(dec(engine.multiply(ca, pb)), a * b), note + "; its ct x pt multiply rescales")
    if "mul_relin_rescale" in ops:
        ms = median_ms(lambda: engine.multiply(ca, cb, rlk), R)
        emit("desilo", "mul_relin_rescale", T, log_n, L, ms, bits(dec(engine.multiply(ca, cb, rlk)), a * b), note)
    if "rotate" in ops:
        ms = median_ms(lambda: engine.rotate(ca, rot_keys[0]), R)
        emit("desilo", "rotate", T, log_n, L, ms, bits(dec(engine.rotate(ca, rot_keys[0])), np.roll(a, -1)), note)
    if "rotate_mid" in ops:
        level = (args.limbs - 1) // 2
        mid = engine.level_down(ca, level)
        ms = median_ms(lambda: engine.rotate(mid, rot_keys[0]), R)
        emit("desilo", "rotate_mid", T, log_n, L, ms, bits(dec(engine.rotate(mid, rot_keys[0])), np.roll(a, -1)), note, level=level)
    if "rotate_hoisted_8" in ops:
        ms = median_ms(lambda: engine.rotate_many(ca, rot_keys), R)
        outs = engine.rotate_many(ca, rot_keys)
        worst = min(bits(dec(o), np.roll(a, -(i + 1))) for i, o in enumerate(outs))
        emit("desilo", "rotate_hoisted_8", T, log_n, L, ms, worst, note + "; rotate_many")
    if "sizes" in ops:
        emit(
            "desilo",
            "sizes",
            T,
            log_n,
            L,
            note=note,
            ciphertext_bytes=len(engine.serialize_ciphertext(ca)),
            galois_key_bytes=len(engine.serialize_fixed_rotation_key(rot_keys[0])),
        )


def run_desilo_bootstrap(args):
    import desilofhe

    engine = desilofhe.Engine(mode="cpu", bootstrap=True, thread_count=args.threads)
    sk = engine.create_secret_key()
    pk = engine.create_public_key(sk)
    rlk = engine.create_relinearization_key(sk)
    conj = engine.create_conjugation_key(sk)
    bk = engine.create_small_bootstrap_key(sk)
    roll = engine.create_roll_key(sk)
    rng = np.random.default_rng(2)
    slots = engine.slot_count
    errs = []
    times = []
    levels_after = None
    for _ in range(max(1, args.repeats)):
        x = rng.uniform(-1, 1, slots)
        ct = engine.level_down(engine.encrypt(x, pk), 0) if hasattr(engine, "level_down") else engine.encrypt(x, pk)
        t = time.perf_counter()
        out = engine.bootstrap(ct, rlk, conj, roll, bk)
        times.append((time.perf_counter() - t) * 1e3)
        levels_after = out.level
        errs.append(np.abs(engine.decrypt(out, sk) - x))
    all_err = np.concatenate(errs)
    emit(
        "desilo",
        "bootstrap",
        args.threads,
        int(round(math.log2(slots))) + 1,
        None,
        statistics.median(times),
        None,
        "bootstrap=True preset, small bootstrap key",
        slots=slots,
        precision_bits_mean=round(float(-np.log2(np.mean(all_err))), 2),
        precision_bits_min=round(float(-np.log2(np.max(all_err))), 2),
        levels_after=levels_after,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peer", default="all", choices=["all", "seal", "desilo"])
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--op", default=None, help="single op; 'bootstrap' runs DESILO's bootstrapping")
    p.add_argument("--log-n", type=int, default=16, help="ring degree (smaller for smoke tests)")
    p.add_argument("--limbs", type=int, default=27)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.op == "bootstrap":
        run_desilo_bootstrap(args)
        return
    ops = set([args.op] if args.op else args.ops.split(","))
    unknown = ops - set(OPS)
    if unknown:
        sys.exit(f"unknown ops: {sorted(unknown)}; known: {OPS}")
    if args.peer in ("all", "seal"):
        run_seal(args, ops)
    if args.peer in ("all", "desilo"):
        if args.log_n != 16:
            print(json.dumps({"peer": "desilo", "note": "DESILO picks its own ring degree; skipped for --log-n != 16"}))
        else:
            run_desilo(args, ops)


if __name__ == "__main__":
    main()
