//! What an operator costs, so that the planner can place bootstraps and
//! the client can generate exactly the Galois keys the server will need.

use std::collections::BTreeSet;

/// Static cost of one operator application on one ciphertext (or one tile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCost {
    /// Levels consumed from input to output.
    pub levels: usize,
    /// Key switches by Galois automorphisms (rotations, expansions).
    pub rotations: usize,
    /// Ciphertext-ciphertext products (each with a relinearisation).
    pub products: usize,
    /// Bootstraps inside the operator.
    pub bootstraps: usize,
    /// Galois elements whose keys the operator needs.
    pub galois_elements: BTreeSet<usize>,
}

impl OpCost {
    /// Cost of running `self` and then `next` on its output.
    pub fn then(mut self, next: &OpCost) -> OpCost {
        self.levels += next.levels;
        self.rotations += next.rotations;
        self.products += next.products;
        self.bootstraps += next.bootstraps;
        self.galois_elements.extend(next.galois_elements.iter().copied());
        self
    }
}
