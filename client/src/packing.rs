//! How the client lays a query's rows into ciphertext slots for each model
//! the cluster serves, and reads the result's rows back.

use nexus_ckks::Parameters;
use nexus_nn::{DemoMlp, OperatorModel, RowLayout, DEMO_MODEL, OPERATOR_MODELS};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A model as the client sees it.
#[derive(Debug)]
pub enum ClientModel {
    /// The embedded demo model: rows of its input width.
    Demo(DemoMlp),
    /// One operator: GELU on rows of any (common) width, flattened into
    /// the slots; LayerNorm on rows of 768; Softmax on rows of 128 with
    /// values in [-10, 0].
    Operator(Box<OperatorModel>),
}

impl ClientModel {
    /// The model called `name` at `params`.
    pub fn named(name: &str, params: &Parameters) -> Result<Self, BoxError> {
        if name == DEMO_MODEL {
            return Ok(Self::Demo(DemoMlp::embedded(params.max_slots())?));
        }
        match OperatorModel::named(name, params.max_slots())? {
            Some(op) => Ok(Self::Operator(Box::new(op))),
            None => Err(format!("unknown model {name:?}: expected {DEMO_MODEL} or one of {OPERATOR_MODELS:?}").into()),
        }
    }

    /// Rotations the evaluation keys must cover.
    pub fn rotations(&self) -> Vec<i64> {
        match self {
            Self::Demo(m) => m.rotations(),
            Self::Operator(op) => op.rotations(),
        }
    }

    /// Level the inputs are encrypted at.
    pub fn levels(&self, params: &Parameters) -> usize {
        match self {
            Self::Demo(m) => m.levels(),
            Self::Operator(op) => op.cost(params).levels,
        }
    }

    /// The slot vectors of the ciphertexts carrying `rows`, after checking
    /// their shape and range; errors name the offending row.
    pub fn pack(&self, rows: &[Vec<f64>], slots: usize) -> Result<Vec<Vec<f64>>, BoxError> {
        let op = match self {
            Self::Demo(m) => return Ok(m.pack(rows)?),
            Self::Operator(op) => op,
        };
        let width = rows.first().map_or(0, Vec::len);
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(format!("row {i} has {} values, row 0 has {width}", r.len()).into());
        }
        let packed: Vec<Vec<f64>> = match row_layout(op) {
            None => {
                if width == 0 || width > slots {
                    return Err(format!("rows of {width} values: this model takes 1 to {slots}").into());
                }
                // Whole rows per ciphertext (no row split across two).
                rows.chunks(slots / width)
                    .map(|chunk| {
                        let mut v = chunk.concat();
                        v.resize(slots, 0.0);
                        v
                    })
                    .collect()
            }
            Some(layout) => {
                if width != layout.row_len() {
                    return Err(
                        format!("rows have {width} values, this model takes rows of {}", layout.row_len()).into()
                    );
                }
                rows.chunks(layout.rows())
                    .map(|chunk| {
                        // Missing rows repeat the last real one, so every row
                        // stays in the operator's range; fetch drops them.
                        let mut full = chunk.to_vec();
                        full.resize(layout.rows(), chunk[chunk.len() - 1].clone());
                        layout.pack(&full)
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        // The f64 twin refuses values outside the declared ranges (GELU's
        // and Softmax's inputs, LayerNorm's row variance): say so here
        // rather than return noise.
        for (k, v) in packed.iter().enumerate() {
            op.plain(v).map_err(|e| format!("ciphertext {k} of the query: {e}"))?;
        }
        Ok(packed)
    }

    /// Rows of one result ciphertext: at most `max_rows`, each `width` wide
    /// (the query's row width).
    pub fn unpack(&self, slots: &[f64], max_rows: usize, width: usize) -> Result<Vec<Vec<f64>>, BoxError> {
        let op = match self {
            Self::Demo(m) => return Ok(m.unpack(slots, max_rows)),
            Self::Operator(op) => op,
        };
        Ok(match row_layout(op) {
            None => {
                if width == 0 {
                    return Err("the query's row width is unknown".into());
                }
                slots.chunks_exact(width).take(max_rows).map(<[f64]>::to_vec).collect()
            }
            Some(layout) => layout.unpack(slots)?.into_iter().take(max_rows).collect(),
        })
    }
}

/// The row layout of a row-wise operator (`None`: element-wise).
fn row_layout(op: &OperatorModel) -> Option<&RowLayout> {
    match op {
        OperatorModel::Gelu(_) => None,
        OperatorModel::LayerNorm(ln) => Some(ln.layout()),
        OperatorModel::Softmax(sm) => Some(sm.layout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Parameters {
        Parameters::preset("N16_QP1500_TERN").unwrap()
    }

    #[test]
    fn rows_round_trip_through_the_slots_of_every_operator_model() {
        let params = params();
        let slots = params.max_slots();
        for (name, width, rows) in [("gelu", 5, 70_000), ("layernorm", 768, 20), ("softmax", 128, 300)] {
            let model = ClientModel::named(name, &params).unwrap();
            let rows: Vec<Vec<f64>> = (0..rows)
                .map(|r| (0..width).map(|j| -4.0 + 3.9 * (((r * width + j) as f64) * 0.37).sin()).collect())
                .collect();
            let packed = model.pack(&rows, slots).unwrap();
            let mut back = Vec::new();
            for v in &packed {
                assert_eq!(v.len(), slots);
                back.extend(model.unpack(v, rows.len() - back.len(), width).unwrap());
            }
            assert_eq!(back, rows, "{name}");
        }
    }

    #[test]
    fn bad_rows_are_refused_with_what_was_wrong() {
        let params = params();
        let slots = params.max_slots();
        let err = |name: &str, rows: Vec<Vec<f64>>| {
            ClientModel::named(name, &params).unwrap().pack(&rows, slots).err().unwrap().to_string()
        };
        assert!(err("layernorm", vec![vec![1.0; 10]]).contains("rows of 768"));
        assert!(err("gelu", vec![vec![1.0; 3], vec![1.0; 4]]).contains("row 1 has 4 values"));
        let mut hot = vec![-1.0; 128];
        hot[7] = 3.0;
        assert!(err("softmax", vec![hot]).contains("outside"));
        assert!(ClientModel::named("bert", &params).err().unwrap().to_string().contains("unknown model"));
    }
}
