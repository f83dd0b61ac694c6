//! A differentiable NCHW conv2d (no bias, no dilation, one group) on im2col + gemm, for
//! training on the CPU.
//!
//! candle's CPU conv2d backward runs a direct-loop `conv_transpose2d` for the input gradient
//! and a conv with an image-sized kernel for the weight gradient; on ResNet-20 that made one
//! training step ~50× slower than its forward pass. Here all three products (output, input
//! gradient, weight gradient) are one gemm per image over an im2col matrix, images in parallel.
//! Each image's result is computed by one thread in a fixed order and the weight gradient sums
//! fixed chunks of images in order, so results do not depend on the thread count.

use crate::matmul::matmul;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Images per partial sum of the weight gradient (the chunks are summed in order).
const WEIGHT_GRAD_CHUNK: usize = 8;

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    in_c: usize,
    in_h: usize,
    in_w: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let (&[batch, in_c, in_h, in_w], &[out_c, w_in_c, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d_im2col: expected 4-D input and weight, got {x:?} and {w:?}")
        };
        if w_in_c != in_c || kh != kw || in_h + 2 * padding < kh || in_w + 2 * padding < kw {
            candle_core::bail!("conv2d_im2col: input {x:?} does not fit weight {w:?} with padding {padding}")
        }
        Ok(Geometry {
            batch,
            in_c,
            in_h,
            in_w,
            out_c,
            kernel: kh,
            stride,
            padding,
            out_h: (in_h + 2 * padding - kh) / stride + 1,
            out_w: (in_w + 2 * padding - kw) / stride + 1,
        })
    }

    fn patch(&self) -> usize {
        self.in_c * self.kernel * self.kernel
    }
    fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }
    fn in_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }
    fn out_len(&self) -> usize {
        self.out_c * self.out_pixels()
    }

    /// Range of output columns `ox` whose input column `ox·stride + kx − padding` lies inside
    /// the image.
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let lo = self.padding.saturating_sub(kx).div_ceil(self.stride);
        let hi = (self.in_w + self.padding)
            .saturating_sub(kx)
            .div_ceil(self.stride)
            .min(self.out_w);
        (lo, hi.max(lo))
    }

    /// Calls `f(col_start, in_start, len)` for every run of the im2col matrix `[patch,
    /// out_pixels]` that reads the input: element `col_start + j` of the matrix is element
    /// `in_start + j·stride` of the image, for j in 0..len. Padding positions are never visited.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let k = self.kernel;
        let hw = self.out_pixels();
        for c in 0..self.in_c {
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let (lo, hi) = self.valid_columns(kx);
                    if lo == hi {
                        continue;
                    }
                    for oy in 0..self.out_h {
                        let iy = oy * self.stride + ky;
                        if iy < self.padding || iy - self.padding >= self.in_h {
                            continue;
                        }
                        let in_row = (c * self.in_h + iy - self.padding) * self.in_w;
                        let ix = lo * self.stride + kx - self.padding;
                        f(row * hw + oy * self.out_w + lo, in_row + ix, hi - lo);
                    }
                }
            }
        }
    }

    /// The im2col matrix `[patch, out_pixels]` of one image.
    fn im2col(&self, image: &[f32], cols: &mut [f32]) {
        cols.fill(0.0);
        let s = self.stride;
        self.for_each_run(|at, from, len| {
            let dst = &mut cols[at..at + len];
            if s == 1 {
                dst.copy_from_slice(&image[from..from + len]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = image[from + j * s];
                }
            }
        });
    }

    /// Add the columns of an im2col-shaped gradient back onto the image gradient.
    fn col2im_add(&self, cols: &[f32], image: &mut [f32]) {
        let s = self.stride;
        self.for_each_run(|at, to, len| {
            for (j, v) in cols[at..at + len].iter().enumerate() {
                image[to + j * s] += v;
            }
        });
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("conv2d_im2col: {what} must be f32")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("conv2d_im2col: {what} must be contiguous"),
    }
}

/// Forward: `y = conv(x, w)`.
struct ConvForward {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let (x, w) = (contiguous(xs, xl, "input")?, contiguous(ws, wl, "weight")?);
        let mut y = vec![0f32; g.batch * g.out_len()];
        y.par_chunks_mut(g.out_len())
            .zip(x.par_chunks(g.in_len()))
            .for_each_init(
                || vec![0f32; g.patch() * g.out_pixels()],
                |cols, (y, x)| {
                    g.im2col(x, cols);
                    matmul(
                        (g.out_c, g.out_pixels(), g.patch()),
                        y,
                        false,
                        w,
                        (g.patch(), 1),
                        cols,
                        (g.out_pixels(), 1),
                        1.0,
                    );
                },
            );
        Ok((CpuStorage::F32(y), Shape::from((g.batch, g.out_c, g.out_h, g.out_w))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let geometry = (self.stride, self.padding, x.dims().to_vec());
        let dx = dy.apply_op2_no_bwd(
            w,
            &InputGrad {
                stride: self.stride,
                padding: self.padding,
                input: geometry.2,
            },
        )?;
        let dw = x.apply_op2_no_bwd(
            &dy,
            &WeightGrad {
                stride: self.stride,
                padding: self.padding,
                weight: w.dims().to_vec(),
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx = col2im(wᵀ · dy)`; arguments (dy, w).
struct InputGrad {
    stride: usize,
    padding: usize,
    input: Vec<usize>,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }

    fn cpu_fwd(&self, dys: &CpuStorage, dyl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(&self.input, wl.dims(), self.stride, self.padding)?;
        let (dy, w) = (contiguous(dys, dyl, "output gradient")?, contiguous(ws, wl, "weight")?);
        let mut dx = vec![0f32; g.batch * g.in_len()];
        dx.par_chunks_mut(g.in_len())
            .zip(dy.par_chunks(g.out_len()))
            .for_each_init(
                || vec![0f32; g.patch() * g.out_pixels()],
                |dcols, (dx, dy)| {
                    // wᵀ: element (patch row r, out channel o) sits at w[o * patch + r].
                    matmul(
                        (g.patch(), g.out_pixels(), g.out_c),
                        dcols,
                        false,
                        w,
                        (1, g.patch()),
                        dy,
                        (g.out_pixels(), 1),
                        1.0,
                    );
                    g.col2im_add(dcols, dx);
                },
            );
        Ok((CpuStorage::F32(dx), Shape::from(self.input.as_slice())))
    }
}

/// `dw = Σ_images dy · im2col(x)ᵀ`; arguments (x, dy).
struct WeightGrad {
    stride: usize,
    padding: usize,
    weight: Vec<usize>,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-weight-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, dys: &CpuStorage, dyl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.dims(), &self.weight, self.stride, self.padding)?;
        let (x, dy) = (contiguous(xs, xl, "input")?, contiguous(dys, dyl, "output gradient")?);
        let w_len = g.out_c * g.patch();
        let partials: Vec<Vec<f32>> = x
            .par_chunks(g.in_len() * WEIGHT_GRAD_CHUNK)
            .zip(dy.par_chunks(g.out_len() * WEIGHT_GRAD_CHUNK))
            .map(|(xs, dys)| {
                let mut dw = vec![0f32; w_len];
                let mut cols = vec![0f32; g.patch() * g.out_pixels()];
                for (x, dy) in xs.chunks(g.in_len()).zip(dys.chunks(g.out_len())) {
                    g.im2col(x, &mut cols);
                    // im2col(x)ᵀ: element (pixel p, patch row r) sits at cols[r * out_pixels + p].
                    matmul(
                        (g.out_c, g.patch(), g.out_pixels()),
                        &mut dw,
                        true,
                        dy,
                        (g.out_pixels(), 1),
                        &cols,
                        (1, g.out_pixels()),
                        1.0,
                    );
                }
                dw
            })
            .collect();
        let mut dw = vec![0f32; w_len];
        for partial in &partials {
            for (a, b) in dw.iter_mut().zip(partial) {
                *a += b;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(self.weight.as_slice())))
    }
}

/// Differentiable conv2d of an NCHW f32 input with an `[out, in, k, k]` weight.
pub fn conv2d_im2col(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, ConvForward { stride, padding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Both paths sum at most 16·9 = 144 float32 products per output in different orders:
    /// relative rounding ~144 · 2^-24 ≈ 1e-5 of the magnitudes involved (values here are O(1..10)).
    const TOLERANCE: f32 = 1e-4;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn output_and_gradients_match_candle_conv2d() {
        let dev = Device::Cpu;
        for (in_c, out_c, k, stride, padding, side) in [
            (3, 5, 3, 1, 1, 7),
            (4, 6, 3, 2, 1, 8),
            (4, 6, 1, 2, 0, 8),
            (2, 3, 3, 1, 0, 5),
            (3, 4, 3, 2, 1, 7),
            (2, 2, 3, 1, 1, 1),
        ] {
            let x = Var::randn(0f32, 1.0, (3, in_c, side, side), &dev).unwrap();
            let w = Var::randn(0f32, 1.0, (out_c, in_c, k, k), &dev).unwrap();
            let probe = Tensor::randn(
                0f32,
                1.0,
                (
                    3,
                    out_c,
                    (side + 2 * padding - k) / stride + 1,
                    (side + 2 * padding - k) / stride + 1,
                ),
                &dev,
            )
            .unwrap();

            let ours = conv2d_im2col(x.as_tensor(), w.as_tensor(), stride, padding).unwrap();
            let theirs = x.as_tensor().conv2d(w.as_tensor(), padding, stride, 1, 1).unwrap();
            assert!(
                max_abs_diff(&ours, &theirs) < TOLERANCE,
                "forward k{k} s{stride} p{padding}"
            );

            let g_ours = (ours * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let g_theirs = (theirs * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("input", &x), ("weight", &w)] {
                let d = max_abs_diff(g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
                assert!(d < TOLERANCE, "{name} gradient k{k} s{stride} p{padding}: {d}");
            }
        }
    }
}
