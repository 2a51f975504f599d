//! Which product method a layer uses, by estimated work.
//!
//! The compressed method needs the encrypted operand coefficient-packed by
//! the client (the first linear layer) and pays one small-ring key switch per
//! encrypted value; the diagonal method works on slot-packed activations and
//! pays about `2 sqrt(2P)` key switches and `2P - 1` plaintext products per
//! ciphertext. Work is counted in limb-NTT-equivalents: a key switch with
//! `l` chain limbs, `dnum` digits and `k` special primes transforms about
//! `(dnum + 2)(l + k)` limbs; a plaintext product is about a fifth of one
//! limb transform per limb.

use crate::matmul::compressed::CompressedMatMul;
use crate::matmul::diagonal::DiagonalMatMul;
use nexus_ckks::Parameters;

/// How the encrypted operand arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandLayout {
    /// Packed in coefficients by the client (first layer).
    Coefficients,
    /// Slot-packed rows (every later layer).
    Slots,
}

/// A chosen method with its estimated work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodEstimate {
    /// The method.
    pub method: Method,
    /// Estimated work in limb-transform equivalents times the ring degree.
    pub work: f64,
}

/// Product methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// NEXUS compressed input, expansion and plaintext columns.
    Compressed,
    /// Block-diagonal linear transform with baby-step giant-step.
    Diagonal,
}

fn key_switch_work(params: &Parameters, level: usize) -> f64 {
    let limbs = (level + 1 + params.p().len()) as f64;
    (params.dnum() as f64 + 2.0) * limbs * params.n() as f64 * params.log_n() as f64
}

fn product_work(params: &Parameters, level: usize) -> f64 {
    0.2 * (level + 1) as f64 * params.n() as f64 * params.log_n() as f64
}

/// Work of the compressed method for `m x n` (plain) by `n x k` (encrypted).
pub fn compressed_work(params: &Parameters, mm: &CompressedMatMul, n: usize, k: usize) -> f64 {
    let level = params.max_level();
    (n * k) as f64 * (key_switch_work(params, level) + mm.row_blocks() as f64 * product_work(params, level))
}

/// Work of the diagonal method for `tokens` rows at `level`.
pub fn diagonal_work(params: &Parameters, mm: &DiagonalMatMul, tokens: usize, level: usize) -> f64 {
    let cts = tokens.div_ceil(mm.tokens_per_ciphertext()) as f64;
    cts * (mm.rotations().len() as f64 * key_switch_work(params, level)
        + mm.plaintext_products() as f64 * product_work(params, level))
}

/// The cheaper admissible method: the compressed one only applies to
/// coefficient-packed operands.
pub fn choose(layout: OperandLayout, compressed: Option<f64>, diagonal: Option<f64>) -> Option<MethodEstimate> {
    let candidates = [
        compressed
            .filter(|_| layout == OperandLayout::Coefficients)
            .map(|work| MethodEstimate { method: Method::Compressed, work }),
        diagonal
            .filter(|_| layout == OperandLayout::Slots)
            .map(|work| MethodEstimate { method: Method::Diagonal, work }),
    ];
    candidates.into_iter().flatten().min_by(|a, b| a.work.total_cmp(&b.work))
}
