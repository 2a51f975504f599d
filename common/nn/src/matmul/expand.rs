//! Oblivious expansion of a coefficient-packed ciphertext.
//!
//! With `g_i = N / 2^i + 1`, the automorphism `tau_{g_i}` fixes `X^(2^i a)`
//! for even `a` and negates it for odd `a`. So for a ciphertext whose
//! message has nonzero coefficients only at multiples of `2^i`,
//! `c + tau(c)` keeps (twice) the positions with bit `i` clear and
//! `(c - tau(c)) X^(-2^i)` keeps (twice) those with bit `i` set, moved down.
//! After `log2 N` such splits every ciphertext holds one input value,
//! times `N`, as its constant coefficient, which decodes to that value in
//! every slot once the factor is folded into the scale.
//!
//! Only what is needed is expanded: subtrees whose positions are all past
//! the last packed value are skipped, and once a subtree holds a single
//! position it is emitted at once (with factor `2^depth` instead of `N`).
//! So `count` values cost exactly `count - 1` key switches.

use crate::engine::Engine;
use crate::error::NnError;
use nexus_ckks::{Ciphertext, Parameters};

/// Galois elements of the expansion: `N / 2^i + 1` for `i < log2 N`.
pub fn expansion_galois_elements(params: &Parameters) -> Vec<usize> {
    let n = params.n();
    (0..params.log_n()).map(|i| n / (1 << i) + 1).collect()
}

/// Key switches to expand `count` values.
pub fn expansion_key_switches(count: usize) -> usize {
    count.saturating_sub(1)
}

/// Expands `ct` (coefficients `0..count` packed) and calls
/// `sink(position, ciphertext, factor)` for every position, in parallel
/// over subtrees; `sink` returns a per-subtree accumulator `A` and the
/// accumulators of both halves are merged with `merge`.
pub fn expand<A, S, M>(engine: &Engine<'_>, ct: &Ciphertext, count: usize, sink: &S, merge: &M) -> Result<A, NnError>
where
    A: Send,
    S: Fn(usize, Ciphertext, f64, Option<A>) -> Result<A, NnError> + Sync,
    M: Fn(A, A) -> Result<A, NnError> + Sync,
{
    let n = engine.params().n();
    if count == 0 || count > n {
        return Err(crate::error::invalid("expand", format!("{count} values do not fit N = {n}")));
    }
    let parallel_depth = rayon::current_num_threads().next_power_of_two().trailing_zeros();
    let root = Node { position: 0, depth: 0 };
    expand_node(engine, ct.clone(), root, count, parallel_depth, sink, merge, None)
}

#[derive(Clone, Copy)]
struct Node {
    /// Lowest packed position in this subtree (positions are
    /// `position + 2^depth m`).
    position: usize,
    depth: u32,
}

#[allow(clippy::too_many_arguments)]
fn expand_node<A, S, M>(
    engine: &Engine<'_>,
    ct: Ciphertext,
    node: Node,
    count: usize,
    parallel_depth: u32,
    sink: &S,
    merge: &M,
    acc: Option<A>,
) -> Result<A, NnError>
where
    A: Send,
    S: Fn(usize, Ciphertext, f64, Option<A>) -> Result<A, NnError> + Sync,
    M: Fn(A, A) -> Result<A, NnError> + Sync,
{
    let step = 1usize << node.depth;
    // A single position left in this subtree: emit it.
    if node.position + step >= count {
        return sink(node.position, ct, step as f64, acc);
    }
    let e = engine.eval;
    let n = engine.params().n();
    let g = n / step + 1;
    let image = e.apply_galois(&ct, g, engine.galois)?;
    let even = e.add(&ct, &image)?;
    let odd = e.mul_monomial(&e.sub(&ct, &image)?, -(step as i64));
    drop(ct);
    let even_node = Node { position: node.position, depth: node.depth + 1 };
    let odd_node = Node { position: node.position + step, depth: node.depth + 1 };
    if node.depth < parallel_depth {
        let (a, b) = rayon::join(
            || expand_node(engine, even, even_node, count, parallel_depth, sink, merge, None),
            || expand_node(engine, odd, odd_node, count, parallel_depth, sink, merge, None),
        );
        let merged = merge(a?, b?)?;
        match acc {
            Some(prev) => merge(prev, merged),
            None => Ok(merged),
        }
    } else {
        let acc = expand_node(engine, even, even_node, count, parallel_depth, sink, merge, acc)?;
        expand_node(engine, odd, odd_node, count, parallel_depth, sink, merge, Some(acc))
    }
}
