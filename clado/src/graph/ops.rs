//! The ops of a graph with their attributes resolved, their shape rules, and the kernels that
//! need no matrix product (element-wise maps, pooling, data movement). Convolutions and matrix
//! products run in the executor (`exec`).
//!
//! Shapes here are per sample (dimension 0 is the batch, 1; see the module docs of `graph`).
//! The data-movement kernels are generic over the element type: the loader runs them on the
//! `i64` shape tensors it folds, the executor on `f32` activations.

// Without `nn` (the fuzz targets' build) only the reader is here: the f32 kernels are the
// executor's.
#![cfg_attr(not(feature = "nn"), allow(dead_code, unused_imports))]

use super::tensor::{strides, Data, Tensor};

/// A 2-D convolution: input `[N, C, H, W]`, constant weight `[M, C/groups, kh, kw]`, optional
/// constant bias `[M]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub groups: usize,
}

/// `Y = alpha·A'·B' + beta·C` with a runtime `A [N, K]` (`transA` = 0) and a constant `B`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_b: bool,
}

/// A 2-D pooling window.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub ceil_mode: bool,
    /// AveragePool: whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

/// Element-wise maps of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    /// `Clip` (ReLU6 and friends): `min(max(x, min), max)`.
    Clip {
        min: f32,
        max: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    /// `QuantizeLinear` per tensor: the code `clamp(round_half_even(x / scale) + zero_point,
    /// lo, hi)` (`lo..=hi` the integer type's range), as a float.
    Quantize {
        scale: f32,
        zero_point: f32,
        lo: f32,
        hi: f32,
    },
    /// `DequantizeLinear` per tensor: `(x − zero_point) · scale`.
    Dequantize {
        scale: f32,
        zero_point: f32,
    },
}

/// Element-wise arithmetic of two tensors with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// One axis of a `Slice`: elements `start, start + step, …` (`len` of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceAxis {
    pub axis: usize,
    pub start: usize,
    pub step: isize,
    pub len: usize,
}

/// An op of a graph node (see the module docs of `graph`).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv(ConvAttrs),
    Gemm(GemmAttrs),
    /// `[..., M, K] × [K, N]` with a constant right-hand side.
    MatMul,
    /// Inference BatchNormalization: inputs x, scale, bias, mean, var (constants `[C]`).
    BatchNorm {
        epsilon: f32,
    },
    Unary(Unary),
    Binary(Binary),
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    GlobalAveragePool,
    ReduceMean {
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// Same elements, another shape (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout).
    Reshape {
        shape: Vec<usize>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    Slice {
        axes: Vec<SliceAxis>,
    },
    /// Softmax along `axis`; `flatten`: over all axes from `axis` on (opset < 13).
    Softmax {
        axis: usize,
        flatten: bool,
    },
}

type Shapes = Vec<Vec<usize>>;

fn need(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// Output size of a window sliding along one axis; `None` if the window does not fit.
pub(crate) fn window_out(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil: bool,
) -> Option<usize> {
    let span = input + pad_begin + pad_end;
    let eff = dilation * (kernel - 1) + 1;
    if kernel == 0 || stride == 0 || dilation == 0 || span < eff {
        return None;
    }
    let mut out = if ceil {
        (span - eff).div_ceil(stride) + 1
    } else {
        (span - eff) / stride + 1
    };
    // The last window must start inside the input or its leading padding (PyTorch and
    // onnxruntime drop one that would start in the trailing padding).
    if ceil && out > 1 && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

/// NumPy broadcast of two shapes.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Op {
    /// Output shapes for inputs of `shapes` (`consts[i]`: input i is a constant), or what is
    /// wrong with them.
    pub(crate) fn infer(&self, shapes: &[&[usize]], consts: &[bool], n_out: usize) -> Result<Shapes, String> {
        let rank = |i: usize| shapes[i].len();
        let single = |s: Vec<usize>| -> Result<Shapes, String> {
            need(n_out == 1, || format!("expected 1 output, the node has {n_out}"))?;
            Ok(vec![s])
        };
        let show = |i: usize| format!("{:?}", shapes[i]);
        // Folding constants at load may work along dimension 0; runtime nodes may not.
        let folding = consts.iter().all(|&c| c);
        let lowest = if folding { 0 } else { 1 };
        match self {
            Op::Conv(c) => {
                need(shapes.len() == 2 || shapes.len() == 3, || {
                    "expected inputs X, W and optional B".into()
                })?;
                need(rank(0) == 4, || {
                    format!("input {} is not NCHW (only 2-D convolutions are supported)", show(0))
                })?;
                need(consts[1] && consts.get(2).copied().unwrap_or(true), || {
                    "the weight and bias must be constants".into()
                })?;
                let (x, w) = (shapes[0], shapes[1]);
                need(w.len() == 4 && w[2..] == c.kernel, || {
                    format!("weight {} does not match kernel_shape {:?}", show(1), c.kernel)
                })?;
                let g = c.groups;
                need(
                    g >= 1 && x[1] % g == 0 && w[0] % g == 0 && w[1].checked_mul(g) == Some(x[1]),
                    || format!("weight {} with group={} does not fit input {}", show(1), g, show(0)),
                )?;
                if shapes.len() == 3 {
                    need(shapes[2] == [w[0]], || format!("bias {} is not [{}]", show(2), w[0]))?;
                }
                let oh = window_out(
                    x[2],
                    c.kernel[0],
                    c.strides[0],
                    c.dilations[0],
                    c.pads[0],
                    c.pads[2],
                    false,
                );
                let ow = window_out(
                    x[3],
                    c.kernel[1],
                    c.strides[1],
                    c.dilations[1],
                    c.pads[1],
                    c.pads[3],
                    false,
                );
                match (oh, ow) {
                    (Some(oh), Some(ow)) => single(vec![x[0], w[0], oh, ow]),
                    _ => Err(format!("kernel {:?} does not fit input {}", c.kernel, show(0))),
                }
            }
            Op::Gemm(g) => {
                need(shapes.len() == 2 || shapes.len() == 3, || {
                    "expected inputs A, B and optional C".into()
                })?;
                need(!consts[0] && consts[1..].iter().all(|&c| c), || {
                    "only a runtime A with constant B and C is supported".into()
                })?;
                need(rank(0) == 2 && rank(1) == 2, || {
                    format!("A {} and B {} must be matrices", show(0), show(1))
                })?;
                let (k, n) = if g.trans_b {
                    (shapes[1][1], shapes[1][0])
                } else {
                    (shapes[1][0], shapes[1][1])
                };
                need(shapes[0][1] == k, || {
                    format!("A {} does not fit B {} (transB={})", show(0), show(1), g.trans_b as u8)
                })?;
                let out = vec![shapes[0][0], n];
                if shapes.len() == 3 {
                    need(broadcast_shapes(&out, shapes[2]).as_deref() == Some(&out[..]), || {
                        format!("C {} does not broadcast to {:?}", show(2), out)
                    })?;
                }
                single(out)
            }
            Op::MatMul => {
                need(shapes.len() == 2, || "expected two inputs".into())?;
                need(!consts[0] && consts[1] && rank(1) == 2 && rank(0) >= 2, || {
                    format!(
                        "only a runtime A [..., M, K] times a constant matrix B is supported (A {}, B {}{})",
                        show(0),
                        show(1),
                        if consts[1] { "" } else { " at run time" }
                    )
                })?;
                let a = shapes[0];
                need(a[a.len() - 1] == shapes[1][0], || {
                    format!("A {} does not fit B {}", show(0), show(1))
                })?;
                let mut out = a.to_vec();
                *out.last_mut().unwrap() = shapes[1][1];
                single(out)
            }
            Op::BatchNorm { .. } => {
                need(shapes.len() == 5, || "expected inputs X, scale, B, mean, var".into())?;
                need(rank(0) >= 2, || format!("input {} has no channel dimension", show(0)))?;
                let c = shapes[0][1];
                for i in 1..5 {
                    need(consts[i] && shapes[i] == [c], || {
                        format!("input {i} must be a constant of shape [{c}]")
                    })?;
                }
                single(shapes[0].to_vec())
            }
            Op::Unary(_) => single(shapes[0].to_vec()),
            Op::Binary(_) => {
                need(shapes.len() == 2, || "expected two inputs".into())?;
                let out = broadcast_shapes(shapes[0], shapes[1])
                    .ok_or_else(|| format!("shapes {} and {} do not broadcast", show(0), show(1)))?;
                single(out)
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                need(rank(0) == 4, || {
                    format!("input {} is not NCHW (only 2-D pooling is supported)", show(0))
                })?;
                let x = shapes[0];
                let oh = window_out(
                    x[2],
                    p.kernel[0],
                    p.strides[0],
                    p.dilations[0],
                    p.pads[0],
                    p.pads[2],
                    p.ceil_mode,
                );
                let ow = window_out(
                    x[3],
                    p.kernel[1],
                    p.strides[1],
                    p.dilations[1],
                    p.pads[1],
                    p.pads[3],
                    p.ceil_mode,
                );
                need(
                    p.pads[0] < p.kernel[0] * p.dilations[0] && p.pads[1] < p.kernel[1] * p.dilations[1],
                    || "padding as large as the window is not supported".into(),
                )?;
                match (oh, ow) {
                    (Some(oh), Some(ow)) => single(vec![x[0], x[1], oh, ow]),
                    _ => Err(format!("window {:?} does not fit input {}", p.kernel, show(0))),
                }
            }
            Op::GlobalAveragePool => {
                need(rank(0) >= 3, || format!("input {} has no spatial dimensions", show(0)))?;
                let mut out = shapes[0].to_vec();
                out[2..].fill(1);
                single(out)
            }
            Op::ReduceMean { axes, keepdims } => {
                need(axes.iter().all(|&a| a >= lowest && a < rank(0)), || {
                    format!("axes {axes:?} must be in 1..{} (not the batch)", rank(0))
                })?;
                let out: Vec<usize> = (0..rank(0))
                    .filter_map(|i| match (axes.contains(&i), keepdims) {
                        (false, _) => Some(shapes[0][i]),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect();
                single(out)
            }
            Op::Reshape { shape } => {
                let n: usize = shapes[0].iter().product();
                need(shape.iter().product::<usize>() == n, || {
                    format!("cannot reshape {} into {shape:?}", show(0))
                })?;
                single(shape.clone())
            }
            Op::Transpose { perm } => {
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                need(sorted == (0..rank(0)).collect::<Vec<_>>(), || {
                    format!("perm {perm:?} does not fit {}", show(0))
                })?;
                need(folding || perm[0] == 0, || {
                    format!("perm {perm:?} moves the batch dimension")
                })?;
                single(perm.iter().map(|&p| shapes[0][p]).collect())
            }
            Op::Concat { axis } => {
                let axis = *axis;
                need(axis >= lowest && axis < rank(0), || {
                    format!("axis {axis} must be in 1..{} (not the batch)", rank(0))
                })?;
                let mut out = shapes[0].to_vec();
                for s in &shapes[1..] {
                    need(
                        s.len() == out.len() && (0..out.len()).all(|i| i == axis || s[i] == out[i]),
                        || format!("inputs {:?} and {:?} differ off axis {axis}", shapes[0], s),
                    )?;
                    out[axis] += s[axis];
                }
                single(out)
            }
            Op::Split { axis, sizes } => {
                need(*axis >= lowest && *axis < rank(0), || {
                    format!("axis {axis} must be in 1..{} (not the batch)", rank(0))
                })?;
                need(
                    sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s)) == Some(shapes[0][*axis])
                        && sizes.len() == n_out,
                    || {
                        format!(
                            "split {sizes:?} into {n_out} outputs does not fit {} on axis {axis}",
                            show(0)
                        )
                    },
                )?;
                Ok(sizes
                    .iter()
                    .map(|&s| {
                        let mut o = shapes[0].to_vec();
                        o[*axis] = s;
                        o
                    })
                    .collect())
            }
            Op::Slice { axes } => {
                let mut out = shapes[0].to_vec();
                for a in axes {
                    need(a.axis < rank(0), || {
                        format!("axis {} out of range for {}", a.axis, show(0))
                    })?;
                    out[a.axis] = a.len;
                }
                single(out)
            }
            Op::Softmax { axis, .. } => {
                need(*axis >= lowest && *axis < rank(0), || {
                    format!("axis {axis} must be in 1..{} (not the batch)", rank(0))
                })?;
                single(shapes[0].to_vec())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels without matrix products, on one sample.

/// `VIS fn NAME(args) -> R` that runs `BODY(args)` (an `#[inline(always)]` function)
/// compiled with AVX-512 or AVX2 where the CPU has it, so that its element-wise loops run 16
/// or 8 lanes wide. The bodies use plain multiplications and additions (never fused), so the
/// results are the same bits either way.
macro_rules! wide {
    ($(#[$m:meta])* $vis:vis fn $name:ident = $body:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use wide;

wide!(pub(crate) fn unary = unary_body(op: Unary, x: &mut [f32]));

wide!(
    /// `y = x · sigmoid(x)`: `Sigmoid` then `Mul`, in one pass with the same arithmetic.
    pub(crate) fn silu = silu_body(x: &[f32], y: &mut [f32]));

#[inline(always)]
fn silu_body(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = silu1(v);
    }
}

wide!(
    /// [`silu`] in place.
    pub(crate) fn silu_in_place = silu_in_place_body(x: &mut [f32]));

#[inline(always)]
fn silu_in_place_body(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = silu1(*v));
}

#[inline(always)]
fn silu1(v: f32) -> f32 {
    v * (1.0 / (1.0 + exp(-v)))
}

/// `Clip`: `v.max(min).min(max)`, NaN giving `min`, as `maxps`, `minps`, then the NaN lanes
/// replaced (one test for NaN instead of one per comparison). The kernels' `Lanes::clip` does
/// the same in registers.
#[inline(always)]
pub(crate) fn clip(v: f32, min: f32, max: f32) -> f32 {
    let lo = if min > v { min } else { v };
    let hi = if max < lo { max } else { lo };
    if v.is_nan() {
        min
    } else {
        hi
    }
}

#[inline(always)]
fn unary_body(op: Unary, x: &mut [f32]) {
    match op {
        Unary::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        Unary::Clip { min, max } => x.iter_mut().for_each(|v| *v = clip(*v, min, max)),
        Unary::LeakyRelu { alpha } => x.iter_mut().for_each(|v| {
            if *v < 0.0 {
                *v *= alpha
            }
        }),
        Unary::Sigmoid => x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + exp(-*v))),
        Unary::HardSigmoid { alpha, beta } => x.iter_mut().for_each(|v| *v = (alpha * *v + beta).clamp(0.0, 1.0)),
        Unary::HardSwish => x.iter_mut().for_each(|v| *v *= (*v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Unary::Quantize {
            scale,
            zero_point,
            lo,
            hi,
        } => x
            .iter_mut()
            .for_each(|v| *v = ((*v / scale).round_ties_even() + zero_point).clamp(lo, hi)),
        Unary::Dequantize { scale, zero_point } => x.iter_mut().for_each(|v| *v = (*v - zero_point) * scale),
    }
}

/// `e^x` within 2 ulp for `x` in [-87, 88], where the result is a normal float; outside it,
/// `e^x` of the nearer end (the sigmoid, its one user, gets 1 or ~0 either way; NaN for
/// NaN). Branch-free arithmetic that vectorises (libm's `expf` is a call per element):
/// `x = k·ln 2 + r` with `k` rounded to nearest, `|r| ≤ ln 2 / 2`, `e^r` by its Taylor
/// polynomial of degree 7 in Estrin's form (a dependency chain half as long as Horner's, which
/// kept the out-of-order core waiting), times `2^k` built from the exponent bits. Products are
/// fused (`mul_add`, one rounding on every instruction set).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split (Cody and Waite) so that k·LN2_HI is exact for the k that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer (ties to even).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let k = xc.mul_add(LOG2_E, ROUND) - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, xc));
    let r2 = r * r;
    let r4 = r2 * r2;
    let p = r2.mul_add(r.mul_add(1.0 / 6.0, 1.0 / 2.0), 1.0 + r)
        + r4 * r2.mul_add(r.mul_add(1.0 / 5040.0, 1.0 / 720.0), r.mul_add(1.0 / 120.0, 1.0 / 24.0));
    // 2^k from its exponent bits: k + 127 lands in the low mantissa bits of 2^23 + k + 127
    // (no float-to-int conversion, which would not vectorise).
    let scale = f32::from_bits((k + 8_388_735.0).to_bits() << 23);
    p * scale
}

fn binary_fn_f32(op: Binary) -> fn(f32, f32) -> f32 {
    match op {
        Binary::Add => |a, b| a + b,
        Binary::Sub => |a, b| a - b,
        Binary::Mul => |a, b| a * b,
        Binary::Div => |a, b| a / b,
    }
}

fn binary_fn_i64(op: Binary) -> fn(i64, i64) -> i64 {
    match op {
        Binary::Add => |a, b| a.wrapping_add(b),
        Binary::Sub => |a, b| a.wrapping_sub(b),
        Binary::Mul => |a, b| a.wrapping_mul(b),
        Binary::Div => |a, b| if b == 0 { 0 } else { a.wrapping_div(b) },
    }
}

/// `f(a, b)` with NumPy broadcasting into `out_shape`. Dimensions are coalesced first so that
/// the inner loop is long (a squeeze-and-excitation `[C, H·W] × [C, 1]` runs as C loops of H·W).
#[inline(always)]
pub(crate) fn broadcast<T: Copy>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    if sa == out_shape && sb == out_shape {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let r = out_shape.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(sa), pad(sb));
    // Coalesced dims: (size, a broadcast?, b broadcast?).
    let mut dims: Vec<(usize, bool, bool)> = Vec::new();
    for i in 0..r {
        if out_shape[i] == 1 {
            continue;
        }
        let flags = (pa[i] == 1, pb[i] == 1);
        match dims.last_mut() {
            Some(last) if (last.1, last.2) == flags => last.0 *= out_shape[i],
            _ => dims.push((out_shape[i], flags.0, flags.1)),
        }
    }
    if dims.is_empty() {
        return vec![f(a[0], b[0])];
    }
    let stride_of = |bcast: fn(&(usize, bool, bool)) -> bool| -> Vec<usize> {
        let mut s = vec![0; dims.len()];
        let mut acc = 1;
        for i in (0..dims.len()).rev() {
            if !bcast(&dims[i]) {
                s[i] = acc;
                acc *= dims[i].0;
            }
        }
        s
    };
    let (ta, tb) = (stride_of(|d| d.1), stride_of(|d| d.2));
    let last = dims.len() - 1;
    let inner = dims[last].0;
    let (ia, ib) = (ta[last], tb[last]);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; last];
    let (mut oa, mut ob) = (0usize, 0usize);
    loop {
        match (ia, ib) {
            // A squeeze-and-excitation scale: a run of `a` times one value of `b`.
            (1, 0) => {
                let y = b[ob];
                out.extend(a[oa..oa + inner].iter().map(|&x| f(x, y)));
            }
            (0, 1) => {
                let x = a[oa];
                out.extend(b[ob..ob + inner].iter().map(|&y| f(x, y)));
            }
            _ => {
                for j in 0..inner {
                    out.push(f(a[oa + j * ia], b[ob + j * ib]));
                }
            }
        }
        // Next outer index.
        let mut d = last;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            oa += ta[d];
            ob += tb[d];
            if idx[d] < dims[d].0 {
                break;
            }
            oa -= ta[d] * dims[d].0;
            ob -= tb[d] * dims[d].0;
            idx[d] = 0;
        }
    }
}

wide!(pub(crate) fn binary_f32 = binary_f32_body(op: Binary, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], out: &[usize]) -> Vec<f32>);

#[inline(always)]
fn binary_f32_body(op: Binary, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], out: &[usize]) -> Vec<f32> {
    // One monomorphised loop per op (a function pointer per element does not vectorise).
    match op {
        Binary::Add => broadcast(a, sa, b, sb, out, |a, b| a + b),
        Binary::Sub => broadcast(a, sa, b, sb, out, |a, b| a - b),
        Binary::Mul => broadcast(a, sa, b, sb, out, |a, b| a * b),
        Binary::Div => broadcast(a, sa, b, sb, out, |a, b| a / b),
    }
}

/// Whether `b` broadcast to `a` (of which it is the second operand) takes one number per run of
/// consecutive elements of `a`: right-aligned, `b`'s dimensions equal `a`'s up to some point and
/// are 1 after it (`[C, 1, 1]` against `[1, C, H, W]`; a scalar; `a`'s own shape).
pub(crate) fn prefix_broadcast(a: &[usize], b: &[usize]) -> bool {
    if b.len() > a.len() {
        return false;
    }
    let mut full = vec![1; a.len() - b.len()];
    full.extend_from_slice(b);
    let k = full.iter().zip(a).take_while(|(x, y)| x == y).count();
    full[k..].iter().all(|&d| d == 1)
}

wide!(
    /// `x = f(x, y)` element-wise, `y` of `x`'s length, a scalar, or one number per run of `x`
    /// ([`prefix_broadcast`]); the same arithmetic as [`binary_f32`].
    pub(crate) fn binary_in_place = binary_in_place_body(op: Binary, x: &mut [f32], y: &[f32]));

#[inline(always)]
fn binary_in_place_body(op: Binary, x: &mut [f32], y: &[f32]) {
    #[inline(always)]
    fn apply(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32) {
        if y.len() == x.len() {
            x.iter_mut().zip(y).for_each(|(a, &b)| *a = f(*a, b));
        } else {
            // One number of y per run of x ([`prefix_broadcast`]); a scalar is one run.
            let run = x.len() / y.len();
            for (xs, &b) in x.chunks_exact_mut(run).zip(y) {
                xs.iter_mut().for_each(|a| *a = f(*a, b));
            }
        }
    }
    match op {
        Binary::Add => apply(x, y, |a, b| a + b),
        Binary::Sub => apply(x, y, |a, b| a - b),
        Binary::Mul => apply(x, y, |a, b| a * b),
        Binary::Div => apply(x, y, |a, b| a / b),
    }
}

wide!(
    /// BatchNormalization with precomputed per-channel `scale` and `shift`: `y = x·scale + shift`.
    pub(crate) fn channel_affine = channel_affine_body(x: &mut [f32], channels: usize, scale: &[f32], shift: &[f32]));

#[inline(always)]
fn channel_affine_body(x: &mut [f32], channels: usize, scale: &[f32], shift: &[f32]) {
    let inner = x.len() / channels;
    for (c, chunk) in x.chunks_exact_mut(inner.max(1)).enumerate() {
        let (s, t) = (scale[c % channels], shift[c % channels]);
        chunk.iter_mut().for_each(|v| *v = *v * s + t);
    }
}

wide!(
    /// Max pooling of one sample `[C, H, W]`.
    pub(crate) fn max_pool = max_pool_body(x: &[f32], shape: &[usize], p: &PoolAttrs, out_shape: &[usize]) -> Vec<f32>);

/// Each plane is copied into one padded with −∞ as far as any window reaches (the pads and
/// ceil_mode's overhang), its columns split by stride phase (`split_row`), so that a column tap
/// reads consecutive floats for every output of every row: the maximum over the column taps
/// is one long run per tap over the whole plane, then the maximum over the row taps one run
/// per output row. A window's maximum is the value that taking its taps one at a time gives
/// (of equal values, the first), except that a maximum of −0 may come out as +0; NaN
/// propagates, as in onnxruntime.
#[inline(always)]
fn max_pool_body(x: &[f32], shape: &[usize], p: &PoolAttrs, out_shape: &[usize]) -> Vec<f32> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = vec![0.0; c * oh * ow];
    if out.is_empty() {
        return out;
    }
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [dh, dw] = p.dilations;
    let [pt, pl] = [p.pads[0], p.pads[1]];
    // The padded plane: rows and columns up to the last that a window reads.
    let hp = (h + pt).max((oh - 1) * sh + (kh - 1) * dh + 1);
    let wp = (w + pl).max((ow - 1) * sw + (kw - 1) * dw + 1);
    // Columns per phase; padded column `ox·sw + t` is column `ox + ⌊t/sw⌋` of phase `t mod sw`.
    let pw = wp.div_ceil(sw);
    let plane = hp * pw;
    // The border stays −∞: each plane writes the same interior.
    let mut phases = vec![f32::NEG_INFINITY; sw * plane];
    // Column maxima, `cols[y·pw + ox]` for `ox < ow` (the run also covers the columns between
    // one row's `ow` and the next row, never read).
    let run = (hp - 1) * pw + ow;
    let mut cols = vec![0.0f32; run];
    let keep = |acc: &mut [f32], src: &[f32]| {
        // Every lane is stored: written back as read, a kept value would make the compiler
        // store masked lanes, which the next tap's loads of the same floats wait for (ten
        // times the loop's time); `+ 0.0` is exact but for −0 → +0.
        for (a, &v) in acc.iter_mut().zip(src) {
            *a = if v > *a || v.is_nan() { v } else { *a + 0.0 };
        }
    };
    for (ch, plane_out) in out.chunks_exact_mut(oh * ow).enumerate() {
        for (y, row) in x[ch * h * w..][..h * w].chunks_exact(w).enumerate() {
            split_row(row, pl, sw, &mut phases, (y + pt) * pw, plane);
        }
        for kx in 0..kw {
            let t = kx * dw;
            let src = &phases[(t % sw) * plane + t / sw..][..run];
            if kx == 0 {
                cols.copy_from_slice(src);
            } else {
                keep(&mut cols, src);
            }
        }
        for (oy, orow) in plane_out.chunks_exact_mut(ow).enumerate() {
            for ky in 0..kh {
                let src = &cols[(oy * sh + ky * dh) * pw..][..ow];
                if ky == 0 {
                    orow.copy_from_slice(src);
                } else {
                    keep(orow, src);
                }
            }
        }
    }
    out
}

wide!(
    /// Average pooling of one sample `[C, H, W]`.
    pub(crate) fn average_pool = average_pool_body(x: &[f32], shape: &[usize], p: &PoolAttrs, out_shape: &[usize]) -> Vec<f32>);

#[inline(always)]
fn average_pool_body(x: &[f32], shape: &[usize], p: &PoolAttrs, out_shape: &[usize]) -> Vec<f32> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = vec![0.0; c * oh * ow];
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [dh, dw] = p.dilations;
    let [pt, pl] = [p.pads[0], p.pads[1]];
    // Taps are counted within the input (`count`) and within the padded input (`padded`, for
    // count_include_pad); ceil_mode's windows may reach past both. Per column of the output:
    let mut cols = vec![(0usize, 0usize); ow];
    for kx in 0..kw {
        let tap = kx * dw;
        let (lo, hi) = valid_range(ow, sw, pl, tap, w);
        let (_, padded_hi) = valid_range(ow, sw, 0, tap, w + pl + p.pads[3]);
        for (ox, col) in cols.iter_mut().enumerate() {
            col.0 += usize::from(ox >= lo && ox < hi);
            col.1 += usize::from(ox < padded_hi);
        }
    }
    // Each output is its taps in (ky, kx) order, as one window at a time would take them; the
    // loop runs along output rows so that it vectorises.
    let mut acc = vec![0.0f32; ow];
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            acc.fill(0.0);
            let (mut rows, mut padded_rows) = (0, 0);
            for ky in 0..kh {
                let y = (oy * sh + ky * dh) as isize - pt as isize;
                if y >= (h + p.pads[2]) as isize {
                    break;
                }
                padded_rows += 1;
                if y < 0 || y >= h as isize {
                    continue;
                }
                rows += 1;
                let row = &plane[y as usize * w..][..w];
                for kx in 0..kw {
                    let (lo, hi) = valid_range(ow, sw, pl, kx * dw, w);
                    for ox in lo..hi {
                        acc[ox] += row[ox * sw + kx * dw - pl];
                    }
                }
            }
            let orow = &mut out[(ch * oh + oy) * ow..][..ow];
            for ((o, &a), &(count, padded)) in orow.iter_mut().zip(&acc).zip(&cols) {
                let d = if p.count_include_pad {
                    padded_rows * padded
                } else {
                    rows * count
                };
                *o = if d == 0 { 0.0 } else { a / d as f32 };
            }
        }
    }
    out
}

/// Input row `src` into row `at` of the `sw` column phases (planes `plane` floats apart) of
/// a padded plane: padded column `pl + i` to phase `(pl + i) mod sw`, column `⌊(pl + i) / sw⌋`.
#[inline(always)]
pub(crate) fn split_row(src: &[f32], pl: usize, sw: usize, phases: &mut [f32], at: usize, plane: usize) {
    match sw {
        1 => phases[at + pl..][..src.len()].copy_from_slice(src),
        2 => {
            // src[0], src[2], … go to phase pl mod 2 from column ⌊pl/2⌋; src[1], src[3], … to
            // the other phase from column ⌊(pl + 1)/2⌋.
            let (first, second) = phases.split_at_mut(plane);
            let (evens, odds) = if pl.is_multiple_of(2) {
                (first, second)
            } else {
                (second, first)
            };
            let half = src.len() / 2;
            let evens = &mut evens[at + pl / 2..][..src.len() - half];
            let odds = &mut odds[at + pl.div_ceil(2)..][..half];
            for ((e, o), pair) in evens.iter_mut().zip(odds.iter_mut()).zip(src.chunks_exact(2)) {
                *e = pair[0];
                *o = pair[1];
            }
            if src.len() % 2 == 1 {
                evens[half] = src[src.len() - 1];
            }
        }
        _ => {
            for (i, &v) in src.iter().enumerate() {
                let p = pl + i;
                phases[(p % sw) * plane + at + p / sw] = v;
            }
        }
    }
}

/// Range of output positions `o` whose input position `o·stride − pad + tap` lies in `0..len`.
pub(crate) fn valid_range(out_len: usize, stride: usize, pad: usize, tap: usize, len: usize) -> (usize, usize) {
    // o·s + tap ≥ pad  and  o·s + tap < len + pad
    let lo = if tap >= pad { 0 } else { (pad - tap).div_ceil(stride) };
    let hi = if len + pad > tap {
        (len + pad - tap).div_ceil(stride).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Mean over `axes` of one sample; `shape` is the input's.
pub(crate) fn reduce_mean(x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f32> {
    // Move the reduced axes last, then average contiguous runs.
    let keep: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    let mut perm = keep.clone();
    perm.extend_from_slice(axes);
    let n: usize = axes.iter().map(|&a| shape[a]).product();
    let moved;
    let data = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x
    } else {
        moved = transpose(x, shape, &perm);
        &moved[..]
    };
    let mut out = Vec::with_capacity(data.len() / n.max(1));
    run_sums(data, n.max(1), &mut out);
    for v in &mut out {
        *v /= n as f32;
    }
    out
}

wide!(
    /// The sum of each run of `n` consecutive elements of `x`, appended to `out`: element by
    /// element in order (the bits of `iter().sum()`), eight runs side by side so
    /// that eight additions are in flight rather than one.
    pub(crate) fn run_sums = run_sums_body(x: &[f32], n: usize, out: &mut Vec<f32>));

#[inline(always)]
fn run_sums_body(x: &[f32], n: usize, out: &mut Vec<f32>) {
    let mut groups = x.chunks_exact(8 * n);
    for group in &mut groups {
        let runs: [&[f32]; 8] = std::array::from_fn(|j| &group[j * n..(j + 1) * n]);
        // From −0 as `iter().sum()` does (−0 + x = x for every x, −0 included).
        let mut acc = [-0.0f32; 8];
        // Blocks of 8 × 8: eight loads of eight, then the additions column by column.
        let whole = n / 8 * 8;
        for i in (0..whole).step_by(8) {
            let block: [[f32; 8]; 8] = std::array::from_fn(|j| runs[j][i..i + 8].try_into().expect("8 elements"));
            for k in 0..8 {
                for (a, row) in acc.iter_mut().zip(&block) {
                    *a += row[k];
                }
            }
        }
        for i in whole..n {
            for (a, run) in acc.iter_mut().zip(&runs) {
                *a += run[i];
            }
        }
        out.extend_from_slice(&acc);
    }
    for run in groups.remainder().chunks_exact(n) {
        out.push(run.iter().sum());
    }
}

pub(crate) fn softmax(x: &mut [f32], shape: &[usize], axis: usize, flatten: bool) {
    let (len, inner) = if flatten {
        (shape[axis..].iter().product::<usize>(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product::<usize>())
    };
    let block = len * inner;
    for chunk in x.chunks_exact_mut(block.max(1)) {
        for i in 0..inner {
            let at = |k: usize| k * inner + i;
            let max = (0..len).map(|k| chunk[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for k in 0..len {
                let e = (chunk[at(k)] - max).exp();
                chunk[at(k)] = e;
                sum += e;
            }
            for k in 0..len {
                chunk[at(k)] /= sum;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data movement, generic over the element type.

pub(crate) fn transpose<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n = x.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let r = out_shape.len();
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    let inner = out_shape[r - 1];
    let inner_stride = st[r - 1];
    loop {
        for j in 0..inner {
            out.push(x[off + j * inner_stride]);
        }
        let mut d = r - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            off += st[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= st[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

pub(crate) fn concat<T: Copy>(parts: &[(&[T], &[usize])], axis: usize) -> Vec<T> {
    let outer: usize = parts[0].1[..axis].iter().product();
    let total: usize = parts.iter().map(|p| p.0.len()).sum();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (data, shape) in parts {
            let block: usize = shape[axis..].iter().product();
            out.extend_from_slice(&data[o * block..(o + 1) * block]);
        }
    }
    out
}

pub(crate) fn split<T: Copy>(x: &[T], shape: &[usize], axis: usize, sizes: &[usize]) -> Vec<Vec<T>> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut outs: Vec<Vec<T>> = sizes.iter().map(|&s| Vec::with_capacity(outer * s * inner)).collect();
    for o in 0..outer {
        let mut at = o * shape[axis] * inner;
        for (out, &s) in outs.iter_mut().zip(sizes) {
            out.extend_from_slice(&x[at..at + s * inner]);
            at += s * inner;
        }
    }
    outs
}

pub(crate) fn slice<T: Copy>(x: &[T], shape: &[usize], axes: &[SliceAxis]) -> Vec<T> {
    let r = shape.len();
    let mut start = vec![0isize; r];
    let mut step = vec![1isize; r];
    let mut len = shape.to_vec();
    for a in axes {
        start[a.axis] = a.start as isize;
        step[a.axis] = a.step;
        len[a.axis] = a.len;
    }
    let st = strides(shape);
    let n: usize = len.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; r];
    loop {
        let off: isize = (0..r)
            .map(|d| (start[d] + idx[d] as isize * step[d]) * st[d] as isize)
            .sum();
        out.push(x[off as usize]);
        let mut d = r;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < len[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Runs a data-movement or element-wise op on constants (the loader's folding); `None` for
/// ops that only run in the executor (convolutions, products, pooling).
pub(crate) fn fold(op: &Op, inputs: &[&Tensor], out_shapes: &[Vec<usize>]) -> Option<Vec<Tensor>> {
    fn map<R>(t: &Tensor, f32_: impl FnOnce(&[f32]) -> R, i64_: impl FnOnce(&[i64]) -> R) -> R {
        match &t.data {
            Data::F32(v) => f32_(v),
            Data::I64(v) => i64_(v),
        }
    }
    let shape0 = &inputs[0].shape;
    let one = |data: Data| {
        Some(vec![Tensor {
            shape: out_shapes[0].clone(),
            data,
        }])
    };
    match op {
        Op::Reshape { .. } => one(inputs[0].data.clone()),
        Op::Transpose { perm } => one(map(
            inputs[0],
            |v| Data::F32(transpose(v, shape0, perm)),
            |v| Data::I64(transpose(v, shape0, perm)),
        )),
        Op::Slice { axes } => one(map(
            inputs[0],
            |v| Data::F32(slice(v, shape0, axes)),
            |v| Data::I64(slice(v, shape0, axes)),
        )),
        Op::Concat { axis } => match &inputs[0].data {
            Data::F32(_) => {
                let parts: Option<Vec<(&[f32], &[usize])>> =
                    inputs.iter().map(|t| t.as_f32().map(|v| (v, &t.shape[..]))).collect();
                one(Data::F32(concat(&parts?, *axis)))
            }
            Data::I64(_) => {
                let parts: Option<Vec<(&[i64], &[usize])>> =
                    inputs.iter().map(|t| t.as_i64().map(|v| (v, &t.shape[..]))).collect();
                one(Data::I64(concat(&parts?, *axis)))
            }
        },
        Op::Split { axis, sizes } => {
            let datas = map(
                inputs[0],
                |v| {
                    split(v, shape0, *axis, sizes)
                        .into_iter()
                        .map(Data::F32)
                        .collect::<Vec<_>>()
                },
                |v| split(v, shape0, *axis, sizes).into_iter().map(Data::I64).collect(),
            );
            Some(
                datas
                    .into_iter()
                    .zip(out_shapes)
                    .map(|(data, s)| Tensor { shape: s.clone(), data })
                    .collect(),
            )
        }
        Op::Binary(b) => match (&inputs[0].data, &inputs[1].data) {
            (Data::F32(x), Data::F32(y)) => one(Data::F32(broadcast(
                x,
                shape0,
                y,
                &inputs[1].shape,
                &out_shapes[0],
                binary_fn_f32(*b),
            ))),
            (Data::I64(x), Data::I64(y)) => one(Data::I64(broadcast(
                x,
                shape0,
                y,
                &inputs[1].shape,
                &out_shapes[0],
                binary_fn_i64(*b),
            ))),
            _ => None,
        },
        Op::Unary(u) => {
            let mut v = inputs[0].as_f32()?.to_vec();
            unary(*u, &mut v);
            one(Data::F32(v))
        }
        _ => None,
    }
}

#[cfg(test)]
mod exp_tests {
    /// Units in the last place between `got` and the correctly rounded `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = f32::from_bits(w.to_bits() + 1) - w;
        ((f64::from(got) - want) / f64::from(ulp)).abs()
    }

    #[test]
    fn exp_is_within_two_ulp_and_clamps() {
        let mut worst: f64 = 0.0;
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.0 + 175.0 * i as f32 / n as f32;
            let want = f64::from(x).exp();
            if want < f64::from(f32::MIN_POSITIVE) {
                continue;
            }
            worst = worst.max(ulps(super::exp(x), want));
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(-200.0), super::exp(-87.0));
        assert_eq!(super::exp(f32::NEG_INFINITY), super::exp(-87.0));
        assert_eq!(super::exp(100.0), super::exp(88.0));
        assert!(super::exp(88.0) > 1e38 && super::exp(-87.0) < 1e-37);
        assert!(super::exp(f32::NAN).is_nan());
    }
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    /// `Clip` gives `min` for NaN, the bound for values beyond it, and every other value
    /// (either zero included) unchanged, in the vectorised body and its scalar tail alike, as
    /// the scalar `clip` that the kernels' `Lanes::clip` follows.
    #[test]
    fn clip_keeps_values_inside_and_sends_nan_to_min() {
        let specials = [
            f32::NAN,
            -0.0,
            0.0,
            6.0,
            6.5,
            -1.0,
            3.25,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -f32::NAN,
        ];
        let x: Vec<f32> = (0..37).map(|i| specials[i % specials.len()]).collect();
        for (min, max) in [(0.0, 6.0), (-0.0, 6.0), (-1.0, 1.0)] {
            let mut got = x.clone();
            unary(Unary::Clip { min, max }, &mut got);
            for (v, g) in x.iter().zip(&got) {
                let want = if v.is_nan() || *v < min {
                    min
                } else if *v > max {
                    max
                } else {
                    *v
                };
                assert_eq!(g.to_bits(), want.to_bits(), "clip({v}, {min}, {max})");
                assert_eq!(
                    g.to_bits(),
                    clip(*v, min, max).to_bits(),
                    "scalar clip({v}, {min}, {max})"
                );
            }
        }
    }
}

#[cfg(test)]
mod sum_tests {
    /// `run_sums` adds in the order of `iter().sum()`, bit for bit, whatever the number of runs.
    #[test]
    fn run_sums_are_sequential_sums() {
        let mut seed = 5u32;
        for (runs, n) in [(0, 3), (1, 1), (7, 5), (8, 49), (21, 196), (20, 1), (16, 2)] {
            let mut x: Vec<f32> = (0..runs * n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.3
                })
                .collect();
            // Runs of zeros of both signs (a ReLU's output): the sign of a zero sum.
            if n == 2 {
                x.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = if i % 3 == 0 { 0.0 } else { -0.0 });
            }
            let mut got = Vec::new();
            super::run_sums(&x, n, &mut got);
            let want: Vec<f32> = x.chunks_exact(n).map(|r| r.iter().sum()).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{runs} runs of {n}");
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    /// `max_pool` gives each window's maximum, taken one tap at a time in (row, column) order
    /// over the taps inside the input: strides 1–3, dilation, asymmetric pads, ceil_mode's
    /// overhang, odd sizes, NaN and infinities.
    #[test]
    fn max_pool_takes_each_window_s_maximum() {
        let mut seed = 11u32;
        let cases = [
            // h, w, kernel, strides, dilations, pads (t, l, b, r), ceil_mode
            (112, 112, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
            (9, 13, [3, 2], [1, 3], [1, 1], [0, 1, 2, 0], true),
            (10, 7, [2, 3], [2, 1], [2, 2], [1, 2, 1, 1], false),
            (8, 8, [3, 3], [3, 3], [1, 1], [1, 1, 1, 1], true),
            (5, 17, [1, 5], [1, 2], [1, 1], [0, 2, 0, 2], true),
        ];
        for (h, w, kernel, strides, dilations, pads, ceil_mode) in cases {
            let p = PoolAttrs {
                kernel,
                strides,
                dilations,
                pads,
                ceil_mode,
                count_include_pad: false,
            };
            let c = 3;
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    match (seed >> 24, i) {
                        (0..=2, _) => f32::NAN,
                        (3..=5, _) => f32::INFINITY,
                        (6..=8, _) => f32::NEG_INFINITY,
                        _ => (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5,
                    }
                })
                .collect();
            let out = |i: usize| {
                window_out(
                    [h, w][i],
                    kernel[i],
                    strides[i],
                    dilations[i],
                    pads[i],
                    pads[i + 2],
                    ceil_mode,
                )
            };
            let (oh, ow) = (out(0).unwrap(), out(1).unwrap());
            let got = max_pool(&x, &[1, c, h, w], &p, &[1, c, oh, ow]);
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut want = f32::NEG_INFINITY;
                        for ky in 0..kernel[0] {
                            for kx in 0..kernel[1] {
                                let y = (oy * strides[0] + ky * dilations[0]) as isize - pads[0] as isize;
                                let xx = (ox * strides[1] + kx * dilations[1]) as isize - pads[1] as isize;
                                if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                    let v = x[(ch * h + y as usize) * w + xx as usize];
                                    if v > want || v.is_nan() {
                                        want = v;
                                    }
                                }
                            }
                        }
                        let g = got[(ch * oh + oy) * ow + ox];
                        assert!(
                            g == want || (g.is_nan() && want.is_nan()),
                            "{h}×{w} {p:?}: channel {ch}, output ({oy}, {ox}): {g} against {want}"
                        );
                    }
                }
            }
        }
    }
}
