//! Slot layouts shared by the row-wise operators (Softmax, LayerNorm).
//!
//! Rows are *interleaved*: element `j` of row `r` sits in slot
//! `j * rows + r`, each row padded with zeros to a power of two. A rotation
//! by `rows * 2^i` then moves every element to the next element of the same
//! row, so `log2(padded_len)` rotate-and-add steps leave every slot holding
//! its row's sum: no masks, no levels. The block of `rows * padded_len`
//! slots is repeated to fill the ciphertext, which keeps those rotations
//! cyclic within the block.

use crate::cost::OpCost;
use crate::error::{invalid, NnError};
use nexus_ckks::{Ciphertext, Evaluator, GaloisKeys, Parameters};

/// An interleaved layout of `rows` rows of `row_len` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowLayout {
    rows: usize,
    row_len: usize,
    padded_len: usize,
    slots: usize,
}

impl RowLayout {
    /// A layout for `rows x row_len` values in `slots` slots. `rows` must be
    /// a power of two and `rows * next_pow2(row_len)` must divide `slots`.
    pub fn new(rows: usize, row_len: usize, slots: usize) -> Result<Self, NnError> {
        if rows == 0 || row_len == 0 || !rows.is_power_of_two() {
            return Err(invalid(
                "row layout",
                format!("{rows} rows of {row_len}: rows must be a power of two, lengths > 0"),
            ));
        }
        let padded_len = row_len.next_power_of_two();
        match rows.checked_mul(padded_len) {
            Some(block) if block <= slots && slots.is_multiple_of(block) => {
                Ok(Self { rows, row_len, padded_len, slots })
            }
            _ => Err(invalid(
                "row layout",
                format!("{rows} rows of {row_len} (padded to {padded_len}) do not tile {slots} slots"),
            )),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Row length rounded up to a power of two.
    pub fn padded_len(&self) -> usize {
        self.padded_len
    }

    /// Slots of the ciphertext.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether rows are padded (padding slots then need masking).
    pub fn is_padded(&self) -> bool {
        self.padded_len != self.row_len
    }

    /// Slot vector of `rows` (each of `row_len` values).
    pub fn pack(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, NnError> {
        if rows.len() != self.rows || rows.iter().any(|r| r.len() != self.row_len) {
            return Err(invalid("row layout", format!("expected {} rows of {} values", self.rows, self.row_len)));
        }
        let block = self.rows * self.padded_len;
        Ok((0..self.slots)
            .map(|s| {
                let s = s % block;
                let (j, r) = (s / self.rows, s % self.rows);
                if j < self.row_len {
                    rows[r][j]
                } else {
                    0.0
                }
            })
            .collect())
    }

    /// The rows held by a slot vector (first block).
    pub fn unpack(&self, slots: &[f64]) -> Result<Vec<Vec<f64>>, NnError> {
        if slots.len() < self.rows * self.padded_len {
            return Err(invalid("row layout", format!("{} slots cannot hold the layout", slots.len())));
        }
        Ok((0..self.rows).map(|r| (0..self.row_len).map(|j| slots[j * self.rows + r]).collect()).collect())
    }

    /// 1 on real elements, 0 on padding.
    pub fn mask(&self) -> Vec<f64> {
        let block = self.rows * self.padded_len;
        (0..self.slots).map(|s| if (s % block) / self.rows < self.row_len { 1.0 } else { 0.0 }).collect()
    }

    /// Rotation steps of [`row_sums`](Self::row_sums).
    pub fn sum_rotations(&self) -> Vec<i64> {
        (0..self.padded_len.trailing_zeros()).map(|i| (self.rows << i) as i64).collect()
    }

    /// Cost of [`row_sums`](Self::row_sums).
    pub fn sum_cost(&self, params: &Parameters) -> OpCost {
        let steps = self.sum_rotations();
        OpCost {
            rotations: steps.len(),
            galois_elements: steps.iter().map(|&s| params.galois_element_for_rotation(s)).collect(),
            ..OpCost::default()
        }
    }

    /// Every slot gets the sum of its row (padding included, so padding
    /// must hold zeros).
    pub fn row_sums(&self, eval: &Evaluator, ct: &Ciphertext, keys: &GaloisKeys) -> Result<Ciphertext, NnError> {
        let mut acc = ct.clone();
        for step in self.sum_rotations() {
            let rotated = eval.rotate(&acc, step, keys)?;
            eval.add_assign(&mut acc, &rotated)?;
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_and_mask() {
        let layout = RowLayout::new(4, 6, 64).unwrap();
        let rows: Vec<Vec<f64>> = (0..4).map(|r| (0..6).map(|j| (10 * r + j) as f64).collect()).collect();
        let packed = layout.pack(&rows).unwrap();
        assert_eq!(packed[4 + 2], 21.0); // element 1 of row 2
        assert_eq!(packed[32 + 4 + 2], 21.0); // second block repeats
        assert_eq!(layout.unpack(&packed).unwrap(), rows);
        let mask = layout.mask();
        assert_eq!(mask.iter().sum::<f64>(), 2.0 * 24.0);
        assert_eq!(layout.sum_rotations(), vec![4, 8, 16]);
        assert!(RowLayout::new(3, 4, 64).is_err());
        assert!(RowLayout::new(4, 20, 64).is_err());
        assert!(layout.pack(&rows[..3]).is_err());
    }
}
