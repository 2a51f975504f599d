// OpenFHE's CKKS bootstrapping at the parameters of its own bootstrapping
// example (src/pke/examples/simple-ckks-bootstrapping.cpp: uniform ternary
// secret, 59-bit scaling primes, 60-bit first prime, FLEXIBLEAUTO, level
// budget {4, 4}, 10 levels left after bootstrapping), with the ring degree
// raised to 2^16 and all 2^15 slots, the point PEERS.md names. HEStd_NotSet:
// at this modulus the parameters are not 128-bit secure (OpenFHE's own
// example does not claim they are).
//
// One JSON object on stdout, with the field names of
// `cargo run --release -p nexus-ckks --example bench -- --op bootstrap --json`.
// Inputs are real, uniform in [-1, 1]; the error is measured against them;
// precision_bits_mean = -log2(mean |error|), precision_bits_min = -log2(max |error|).
//
// Built by ops/bench/setup-openfhe.sh against the libraries of the `openfhe`
// wheel from PyPI. Usage: openfhe_bootstrap THREADS REPEATS [LOG_SLOTS]
#include "openfhe.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace lbcrypto;

namespace {

double peak_rss_mb() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0) {
            return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
        }
    }
    return NAN;
}

double now_ms() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char* argv[]) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s THREADS REPEATS [LOG_SLOTS]\n", argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[1]);
    const int repeats = std::atoi(argv[2]);
    const uint32_t log_ring = 16;
    const uint32_t log_slots = argc > 3 ? static_cast<uint32_t>(std::atoi(argv[3])) : log_ring - 1;
    if (threads < 1 || repeats < 1 || log_slots < 1 || log_slots > log_ring - 1) {
        std::fprintf(stderr, "THREADS and REPEATS must be positive, LOG_SLOTS in 1..%u\n", log_ring - 1);
        return 2;
    }
    omp_set_num_threads(threads);

    const SecretKeyDist secret_dist = UNIFORM_TERNARY;
    const std::vector<uint32_t> level_budget = {4, 4};
    const uint32_t levels_after = 10;
    const uint32_t depth = levels_after + FHECKKSRNS::GetBootstrapDepth(level_budget, secret_dist);

    CCParams<CryptoContextCKKSRNS> parameters;
    parameters.SetSecretKeyDist(secret_dist);
    parameters.SetSecurityLevel(HEStd_NotSet);
    parameters.SetRingDim(1 << log_ring);
    parameters.SetScalingModSize(59);
    parameters.SetFirstModSize(60);
    parameters.SetScalingTechnique(FLEXIBLEAUTO);
    parameters.SetMultiplicativeDepth(depth);
    CryptoContext<DCRTPoly> cc = GenCryptoContext(parameters);
    for (auto feature : {PKE, KEYSWITCH, LEVELEDSHE, ADVANCEDSHE, FHE}) {
        cc->Enable(feature);
    }
    const uint32_t slots = 1u << log_slots;

    const double keygen_start = now_ms();
    cc->EvalBootstrapSetup(level_budget, {0, 0}, slots);
    auto keys = cc->KeyGen();
    cc->EvalMultKeyGen(keys.secretKey);
    cc->EvalBootstrapKeyGen(keys.secretKey, slots);
    const double keygen_ms = now_ms() - keygen_start;

    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    std::vector<double> times;
    double err_sum = 0.0, err_max = 0.0;
    size_t err_count = 0;
    uint32_t remaining = 0;
    // One untimed warm-up, then `repeats` timed bootstraps of fresh inputs.
    for (int run = 0; run <= repeats; ++run) {
        std::vector<double> x(slots);
        for (auto& v : x) {
            v = uniform(rng);
        }
        Plaintext pt = cc->MakeCKKSPackedPlaintext(x, 1, depth - 1, nullptr, slots);
        auto ct = cc->Encrypt(keys.publicKey, pt);
        const double start = now_ms();
        auto out = cc->EvalBootstrap(ct);
        const double elapsed = now_ms() - start;
        remaining = depth - out->GetLevel() - (out->GetNoiseScaleDeg() - 1);
        if (run == 0) {
            continue;
        }
        times.push_back(elapsed);
        Plaintext got;
        cc->Decrypt(keys.secretKey, out, &got);
        got->SetLength(slots);
        const auto values = got->GetRealPackedValue();
        for (uint32_t i = 0; i < slots; ++i) {
            const double e = std::fabs(values[i] - x[i]);
            err_sum += e;
            err_max = std::max(err_max, e);
            ++err_count;
        }
    }
    std::sort(times.begin(), times.end());
    std::printf(
        "{\"peer\": \"openfhe\", \"op\": \"bootstrap\", \"version\": \"%s\", \"log_n\": %u, \"slots\": %u, "
        "\"secure\": false, \"threads\": %d, \"repeats\": %d, \"median_ms\": %.1f, \"precision_bits_mean\": %.2f, "
        "\"precision_bits_min\": %.2f, \"levels_after\": %u, \"keygen_ms\": %.1f, \"peak_rss_mb\": %.1f, "
        "\"note\": \"simple-ckks-bootstrapping parameters at N = 2^16 (HEStd_NotSet, UNIFORM_TERNARY, 59/60-bit "
        "primes, FLEXIBLEAUTO, level budget {4, 4}); real inputs; public-key encryption; one warm-up\"}\n",
        OPENFHE_WHEEL_VERSION, log_ring, slots, threads, repeats, times[times.size() / 2],
        -std::log2(err_sum / static_cast<double>(err_count)), -std::log2(err_max), remaining, keygen_ms,
        peak_rss_mb());
    return 0;
}
