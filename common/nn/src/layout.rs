//! Slot layouts shared by the row-wise operators (Softmax, LayerNorm).
//!
//! Rows are *interleaved*: element `j` of row `r` sits in slot
//! `j * rows + r`, each row padded with zeros to a power of two. A rotation
//! by `rows * 2^i` then moves every element to the next element of the same
//! row, so `log2(padded_len)` rotate-and-add steps leave every slot holding
//! its row's sum: no masks, no levels. The block of `rows * padded_len`
//! slots is repeated to fill the ciphertext, which keeps those rotations
//! cyclic within the block.
//!
//! A layout may also place the row's elements at permuted positions of the
//! padded row ([`RowLayout::with_columns`]): the encoder's hidden layout
//! interleaves attention heads that way, and row sums do not care.

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
    /// Position of element `j` within the padded row (identity if `None`).
    columns: Option<Vec<usize>>,
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
                Ok(Self { rows, row_len, padded_len, slots, columns: None })
            }
            _ => Err(invalid(
                "row layout",
                format!("{rows} rows of {row_len} (padded to {padded_len}) do not tile {slots} slots"),
            )),
        }
    }

    /// Element `j` of a row at position `columns[j]` of a padded row of
    /// `padded_len` (a power of two) positions; `rows * padded_len` must
    /// divide `slots`.
    pub fn with_columns(rows: usize, padded_len: usize, slots: usize, columns: Vec<usize>) -> Result<Self, NnError> {
        let mut layout = Self::new(rows, padded_len, slots)?;
        let mut seen = vec![false; padded_len];
        for &c in &columns {
            if c >= padded_len || std::mem::replace(&mut seen[c], true) {
                return Err(invalid("row layout", format!("column position {c} repeated or beyond {padded_len}")));
            }
        }
        if columns.is_empty() {
            return Err(invalid("row layout", "rows need at least one element"));
        }
        layout.row_len = columns.len();
        layout.columns = Some(columns);
        Ok(layout)
    }

    /// Position of element `j` within the padded row.
    pub fn position(&self, j: usize) -> usize {
        self.columns.as_ref().map_or(j, |c| c[j])
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
        let mut v = vec![0.0; self.slots];
        for start in (0..self.slots).step_by(block) {
            for (r, row) in rows.iter().enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    v[start + self.position(j) * self.rows + r] = x;
                }
            }
        }
        Ok(v)
    }

    /// The rows held by a slot vector (first block).
    pub fn unpack(&self, slots: &[f64]) -> Result<Vec<Vec<f64>>, NnError> {
        if slots.len() < self.rows * self.padded_len {
            return Err(invalid("row layout", format!("{} slots cannot hold the layout", slots.len())));
        }
        Ok((0..self.rows)
            .map(|r| (0..self.row_len).map(|j| slots[self.position(j) * self.rows + r]).collect())
            .collect())
    }

    /// 1 on real elements, 0 on padding.
    pub fn mask(&self) -> Vec<f64> {
        let ones = vec![vec![1.0; self.row_len]; self.rows];
        self.pack(&ones).unwrap_or_default()
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
