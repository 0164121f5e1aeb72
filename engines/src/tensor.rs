//! A plain row-major `f32` tensor: what models take and give, batched along axis 0.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Batch size (axis 0).
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values in one batch item.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }

    pub fn item_mut(&mut self, i: usize) -> &mut [f32] {
        let n = self.item_len();
        &mut self.data[i * n..(i + 1) * n]
    }

    /// Items `start..end` as a new tensor.
    pub fn slice(&self, start: usize, end: usize) -> Tensor {
        let n = self.item_len();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Tensor {
            shape,
            data: self.data[start * n..end * n].to_vec(),
        }
    }

    /// Concatenates along axis 0; all parts must have the same item shape.
    pub fn concat(parts: &[&Tensor]) -> Tensor {
        let mut shape = parts[0].shape.clone();
        shape[0] = parts.iter().map(|t| t.len()).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for p in parts {
            debug_assert_eq!(p.shape[1..], shape[1..]);
            data.extend_from_slice(&p.data);
        }
        Tensor { shape, data }
    }
}
