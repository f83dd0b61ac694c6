//! The arithmetic of the engine, on one image at a time, activations in padded NHWC.
//!
//! A feature map of `h×w` pixels and `c` channels is stored as `(h+2)×(w+2)×c` floats with a
//! one-pixel border of zeros, so that 3×3 convolutions with padding 1 read their taps without
//! bounds checks. Every writer keeps the border zero ([`zero_border`]).
//!
//! 3×3 stride-1 convolutions with at least 8 input channels (all but the first and the
//! downsampling ones in the CIFAR ResNets) run as Winograd F(2×2, 3×3) (module `winograd`):
//! 2.25× fewer multiplications. The others are direct: output channels are vectorised (16 per
//! AVX-512 register), a tile of `NB` output pixels of one row and `CV` registers of channels
//! stays in registers while the taps and input channels stream by. Weights are packed
//! `[tap][in channel][out channel]` ([`pack_conv_weights`] does either packing).
//!
//! **One arithmetic everywhere.** Each output element of a direct convolution is computed as
//! `acc = 0; for tap { for ic { acc = fma(x, w, acc) } }; y = fma(acc, scale, bias)
//! [+ residual] [relu]`, in that order, by every code path (AVX-512, AVX2, portable, tile
//! tails); the Winograd path fixes its own sequence the same way (see its docs). So results are
//! bitwise identical whatever the instruction set, tile shape, batch split or thread count.

use std::ops::Range;

mod dense;
mod depthwise;
mod product;
mod winograd;

pub(crate) use dense::dense_rows;
pub(crate) use depthwise::{deinterleave8, depthwise_plane, interleave8, lanes_plane, LANES};
pub(crate) use product::product;

/// Instruction set the kernels run on (chosen once by [`Isa::detect`]); all give bitwise
/// identical results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run (for tests that compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        match Isa::detect() {
            Isa::Avx512 => vec![Isa::Avx512, Isa::Avx2, Isa::Portable],
            Isa::Avx2 => vec![Isa::Avx2, Isa::Portable],
            Isa::Portable => vec![Isa::Portable],
        }
    }
}

/// Pixels × channels of one feature map; stored padded (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapShape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl MapShape {
    /// Floats of the padded storage.
    pub(crate) fn padded_len(&self) -> usize {
        (self.h + 2) * (self.w + 2) * self.c
    }

    /// Offset of pixel (y, x) (unpadded coordinates) in the padded storage.
    fn at(&self, y: usize, x: usize) -> usize {
        ((y + 1) * (self.w + 2) + x + 1) * self.c
    }
}

/// One convolution of one image. Supported: 3×3 with padding 1 and 1×1 with padding 0, any
/// stride (the taps must stay inside the stored one-pixel border).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub input: MapShape,
    pub output: MapShape,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    /// The shape for an input of `input` pixels; `None` if the kernel/padding is unsupported.
    pub(crate) fn new(input: MapShape, cout: usize, kernel: usize, stride: usize) -> Option<Self> {
        let pad = match kernel {
            3 => 1,
            1 => 0,
            _ => return None,
        };
        if stride == 0 || input.h + 2 * pad < kernel || input.w + 2 * pad < kernel {
            return None;
        }
        let out = |n: usize| (n + 2 * pad - kernel) / stride + 1;
        let output = MapShape {
            h: out(input.h),
            w: out(input.w),
            c: cout,
        };
        Some(ConvShape {
            input,
            output,
            kernel,
            stride,
            pad,
        })
    }

    /// Whether this convolution runs as Winograd F(2×2, 3×3) ([`uses_winograd`]).
    pub(crate) fn winograd(&self) -> bool {
        uses_winograd(self.kernel, self.stride, self.input.c)
    }

    /// Floats of the packed weights ([`pack_conv_weights`]).
    pub(crate) fn weight_len(&self) -> usize {
        match self.winograd() {
            true => winograd::weight_len(self.input.c, self.output.c),
            false => self.kernel * self.kernel * self.input.c * self.output.c,
        }
    }

    /// Floats of scratch space [`conv_image`] allocates while it runs.
    pub(crate) fn scratch_len(&self) -> usize {
        match self.winograd() {
            true => winograd::scratch_len(self.input.c, self.output.c),
            false => 0,
        }
    }

    /// Offsets (in floats) of the taps relative to the tile's top-left input position, in
    /// packing order `kh`, `kw`.
    fn taps(&self) -> ([usize; 9], usize) {
        let mut taps = [0usize; 9];
        let wp = self.input.w + 2;
        let shift = 1 - self.pad; // the stored border is one pixel wide
        for kh in 0..self.kernel {
            for kw in 0..self.kernel {
                taps[kh * self.kernel + kw] = ((kh + shift) * wp + kw + shift) * self.input.c;
            }
        }
        (taps, self.kernel * self.kernel)
    }

    /// Offset of the top-left tap position (before adding tap offsets) of output pixel (y, x).
    fn input_base(&self, y: usize, x: usize) -> usize {
        (y * self.stride * (self.input.w + 2) + x * self.stride) * self.input.c
    }
}

/// Whether a convolution runs as Winograd F(2×2, 3×3) (module `winograd`): 3×3 kernels of
/// stride 1 with at least `winograd::MIN_IN_CHANNELS` input channels. The others run direct.
pub(crate) fn uses_winograd(kernel: usize, stride: usize, cin: usize) -> bool {
    kernel == 3 && stride == 1 && cin >= winograd::MIN_IN_CHANNELS
}

/// Packs PyTorch conv weights `[out][in][kh][kw]` for [`conv_image`]: transformed for
/// Winograd ([`uses_winograd`]), else `[kh·k+kw][in][out]`.
pub(crate) fn pack_conv_weights(w: &[f32], cout: usize, cin: usize, k: usize, stride: usize) -> Vec<f32> {
    if uses_winograd(k, stride, cin) {
        return winograd::pack_weights(w, cout, cin);
    }
    assert_eq!(w.len(), cout * cin * k * k);
    let mut packed = vec![0.0; w.len()];
    for oc in 0..cout {
        for ic in 0..cin {
            for t in 0..k * k {
                packed[(t * cin + ic) * cout + oc] = w[(oc * cin + ic) * k * k + t];
            }
        }
    }
    packed
}

/// What happens to the accumulated sums: `y = acc·scale + bias` per output channel (BatchNorm
/// folded into an affine map), then `+ residual` (a map of the output's shape), then ReLU.
pub(crate) struct Epilogue<'a> {
    pub scale: &'a [f32],
    pub bias: &'a [f32],
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// Sets the one-pixel border of a padded map to zero.
pub(crate) fn zero_border(map: &mut [f32], shape: MapShape) {
    let row = (shape.w + 2) * shape.c;
    let rows = shape.h + 2;
    map[..row].fill(0.0);
    map[(rows - 1) * row..rows * row].fill(0.0);
    for y in 1..=shape.h {
        map[y * row..y * row + shape.c].fill(0.0);
        map[(y + 1) * row - shape.c..(y + 1) * row].fill(0.0);
    }
}

/// Converts one NCHW image (`c·h·w` floats) into a padded NHWC map.
pub(crate) fn image_to_map(image: &[f32], shape: MapShape, map: &mut [f32]) {
    let MapShape { h, w, c } = shape;
    assert_eq!(image.len(), c * h * w);
    assert_eq!(map.len(), shape.padded_len());
    zero_border(map, shape);
    for y in 0..h {
        for x in 0..w {
            let o = shape.at(y, x);
            for ch in 0..c {
                map[o + ch] = image[(ch * h + y) * w + x];
            }
        }
    }
}

/// Converts a padded NHWC map back into one NCHW image (`c·h·w` floats).
pub(crate) fn map_to_image(map: &[f32], shape: MapShape, image: &mut [f32]) {
    let MapShape { h, w, c } = shape;
    assert_eq!(image.len(), c * h * w);
    assert_eq!(map.len(), shape.padded_len());
    for y in 0..h {
        for x in 0..w {
            let o = shape.at(y, x);
            for ch in 0..c {
                image[(ch * h + y) * w + x] = map[o + ch];
            }
        }
    }
}

/// Copies the pixels of a padded map (without the border) into `out`, NHWC order.
pub(crate) fn map_interior(map: &[f32], shape: MapShape, out: &mut Vec<f32>) {
    for y in 0..shape.h {
        let o = shape.at(y, 0);
        out.extend_from_slice(&map[o..o + shape.w * shape.c]);
    }
}

/// Convolution of one image: `out = epilogue(conv(input, weights))`, border of `out` zeroed.
/// `weights` are packed ([`pack_conv_weights`]).
pub(crate) fn conv_image(
    isa: Isa,
    shape: &ConvShape,
    input: &[f32],
    weights: &[f32],
    epi: &Epilogue<'_>,
    out: &mut [f32],
) {
    // These checks make the raw-pointer kernels below sound: every read and write they do lies
    // inside these lengths, as the shape arithmetic guarantees.
    assert_eq!(input.len(), shape.input.padded_len());
    assert_eq!(out.len(), shape.output.padded_len());
    assert_eq!(weights.len(), shape.weight_len());
    assert_eq!(epi.scale.len(), shape.output.c);
    assert_eq!(epi.bias.len(), shape.output.c);
    if let Some(r) = epi.residual {
        assert_eq!(r.len(), out.len());
    }
    zero_border(out, shape.output);
    if shape.winograd() {
        let done = match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as below.
            Isa::Avx512 => unsafe { x86::winograd_avx512(shape, input, weights, epi, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::winograd_avx2(shape, input, weights, epi, out) },
            _ => false,
        };
        if !done {
            winograd::conv_portable(shape, input, weights, epi, out);
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512`/`Avx2` are only chosen when the CPU has the features
        // (`Isa::detect`), and the lengths are checked above.
        Isa::Avx512 => unsafe { x86::conv_avx512(shape, input, weights, epi, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::conv_avx2(shape, input, weights, epi, out) },
        _ => {
            for y in 0..shape.output.h {
                conv_pixels(shape, input, weights, epi, out, y, 0..shape.output.w);
            }
        }
    }
}

/// Widest block of output channels the portable kernel accumulates at once.
const PORTABLE_BLOCK: usize = 64;

/// Portable convolution of the output pixels `xs` of row `y`, all output channels; also the
/// tail of rows whose width is not a multiple of a SIMD tile. Same arithmetic as the SIMD tiles.
#[inline(always)]
fn conv_pixels(
    shape: &ConvShape,
    input: &[f32],
    weights: &[f32],
    epi: &Epilogue<'_>,
    out: &mut [f32],
    y: usize,
    xs: Range<usize>,
) {
    let (taps, ntaps) = shape.taps();
    let (cin, cout) = (shape.input.c, shape.output.c);
    let mut acc = [0.0f32; PORTABLE_BLOCK];
    for x in xs {
        let ibase = shape.input_base(y, x);
        let obase = shape.output.at(y, x);
        for oc0 in (0..cout).step_by(PORTABLE_BLOCK) {
            let nb = PORTABLE_BLOCK.min(cout - oc0);
            let acc = &mut acc[..nb];
            acc.fill(0.0);
            for (t, &toff) in taps[..ntaps].iter().enumerate() {
                for ic in 0..cin {
                    let xv = input[ibase + toff + ic];
                    let wrow = &weights[(t * cin + ic) * cout + oc0..][..nb];
                    for (a, &w) in acc.iter_mut().zip(wrow) {
                        *a = xv.mul_add(w, *a);
                    }
                }
            }
            let o = obase + oc0;
            epilogue_scalar(acc, epi, oc0, o, out);
        }
    }
}

/// The epilogue of `acc.len()` channels starting at `oc0`, written at `out[o..]`.
#[inline(always)]
fn epilogue_scalar(acc: &[f32], epi: &Epilogue<'_>, oc0: usize, o: usize, out: &mut [f32]) {
    let n = acc.len();
    let scale = &epi.scale[oc0..oc0 + n];
    let bias = &epi.bias[oc0..oc0 + n];
    let dst = &mut out[o..o + n];
    for i in 0..n {
        let mut v = acc[i].mul_add(scale[i], bias[i]);
        if let Some(r) = epi.residual {
            v += r[o + i];
        }
        if epi.relu {
            v = relu(v);
        }
        dst[i] = v;
    }
}

/// `max(v, 0)` with the semantics of x86 `maxps(v, 0)`: 0 for NaN and for -0.
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Global average pool of a padded map: `features[c] = Σ_pixels x / (h·w)`, pixels summed in
/// row-major order.
pub(crate) fn average_pool(map: &[f32], shape: MapShape, features: &mut [f32]) {
    let c = shape.c;
    assert_eq!(features.len(), c);
    features.fill(0.0);
    for y in 0..shape.h {
        for x in 0..shape.w {
            let o = shape.at(y, x);
            for (f, &v) in features.iter_mut().zip(&map[o..o + c]) {
                *f += v;
            }
        }
    }
    let count = (shape.h * shape.w) as f32;
    for f in features.iter_mut() {
        *f /= count;
    }
}

/// Asks the CPU to bring the cache line holding `p` into L1 ahead of its use (a hint: no
/// fault, no effect on results, whatever the address).
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults; SSE is part of
    // x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One register of `N` f32 lanes; every kernel is written once over it, and the lanes all do
/// the same IEEE operations, so a kernel gives the same bits whatever the register width.
pub(crate) trait Lanes: Copy {
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a·b + c`, one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    /// `maxps(self, 0)`.
    unsafe fn relu(self) -> Self;
    /// The graph's `Clip` lane by lane (`crate::graph::ops::clip`: NaN gives `lo`).
    unsafe fn clip(self, lo: f32, hi: f32) -> Self;
    /// The first `len` lanes from `p` (`0 < len < N`), the others 0; reads only those.
    unsafe fn load_part(p: *const f32, len: usize) -> Self;
    /// Writes the first `len` lanes to `p` (`0 < len < N`), nothing else.
    unsafe fn store_part(self, p: *mut f32, len: usize);
}

/// One lane: the portable instance of [`Lanes`] (and the channel tails of the SIMD ones).
#[derive(Clone, Copy)]
pub(crate) struct F32x1(f32);

impl Lanes for F32x1 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        F32x1(0.0)
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        unsafe { F32x1(*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { F32x1(*p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { *p = self.0 }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        F32x1(a.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        F32x1(self.0 + o.0)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        F32x1(self.0 * o.0)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        F32x1(self.0 - o.0)
    }
    #[inline(always)]
    unsafe fn relu(self) -> Self {
        F32x1(relu(self.0))
    }
    #[inline(always)]
    unsafe fn clip(self, lo: f32, hi: f32) -> Self {
        F32x1(crate::graph::ops::clip(self.0, lo, hi))
    }
    #[inline(always)]
    unsafe fn load_part(_: *const f32, _: usize) -> Self {
        unreachable!("one lane has no part")
    }
    #[inline(always)]
    unsafe fn store_part(self, _: *mut f32, _: usize) {
        unreachable!("one lane has no part")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD tiles. `Lanes` abstracts one register of f32 lanes; the entry points enable
    //! the instruction set and everything below them is inlined into them.

    use super::{conv_pixels, winograd, ConvShape, Epilogue, Lanes};
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct F32x16(__m512);

    impl Lanes for F32x16 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { F32x16(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            unsafe { F32x16(_mm512_set1_ps(*p)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { F32x16(_mm512_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { F32x16(_mm512_fmadd_ps(a.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            unsafe { F32x16(_mm512_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            unsafe { F32x16(_mm512_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            unsafe { F32x16(_mm512_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { F32x16(_mm512_max_ps(self.0, _mm512_setzero_ps())) }
        }
        #[inline(always)]
        unsafe fn clip(self, lo: f32, hi: f32) -> Self {
            // `maxps(lo, v)` is `lo > v ? lo : v`, `minps(hi, t)` `hi < t ? hi : t`.
            unsafe {
                let t = _mm512_max_ps(_mm512_set1_ps(lo), self.0);
                let t = _mm512_min_ps(_mm512_set1_ps(hi), t);
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
                F32x16(_mm512_mask_blend_ps(nan, t, _mm512_set1_ps(lo)))
            }
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize) -> Self {
            unsafe { F32x16(_mm512_maskz_loadu_ps((1u16 << len) - 1, p)) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, len: usize) {
            unsafe { _mm512_mask_storeu_ps(p, (1u16 << len) - 1, self.0) }
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct F32x8(__m256);

    /// Lanes `i < len` all ones (the mask of AVX2's masked loads and stores).
    #[inline(always)]
    unsafe fn lanes_below(len: usize) -> __m256i {
        unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
    }

    impl Lanes for F32x8 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { F32x8(_mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            unsafe { F32x8(_mm256_broadcast_ss(&*p)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { F32x8(_mm256_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { F32x8(_mm256_fmadd_ps(a.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            unsafe { F32x8(_mm256_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            unsafe { F32x8(_mm256_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            unsafe { F32x8(_mm256_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { F32x8(_mm256_max_ps(self.0, _mm256_setzero_ps())) }
        }
        #[inline(always)]
        unsafe fn clip(self, lo: f32, hi: f32) -> Self {
            // `maxps(lo, v)` is `lo > v ? lo : v`, `minps(hi, t)` `hi < t ? hi : t`.
            unsafe {
                let t = _mm256_max_ps(_mm256_set1_ps(lo), self.0);
                let t = _mm256_min_ps(_mm256_set1_ps(hi), t);
                let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0);
                F32x8(_mm256_blendv_ps(t, _mm256_set1_ps(lo), nan))
            }
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize) -> Self {
            unsafe { F32x8(_mm256_maskload_ps(p, lanes_below(len))) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, len: usize) {
            unsafe { _mm256_maskstore_ps(p, lanes_below(len), self.0) }
        }
    }

    /// One tile: `NB` consecutive output pixels of one row × `CV` registers of output channels.
    /// `x` points at the tile's top-left input position, `w` at the packed weights of the
    /// tile's first output channel, `out`/`res` at the tile's first output element.
    #[inline(always)]
    unsafe fn tile<V: Lanes, const CIN: usize, const S: usize, const CV: usize, const NB: usize>(
        x: *const f32,
        taps: &[usize],
        w: *const f32,
        cout: usize,
        out: *mut f32,
        res: Option<*const f32>,
        scale: *const f32,
        bias: *const f32,
        relu: bool,
    ) {
        unsafe {
            let mut acc = [[V::zero(); CV]; NB];
            for (t, &toff) in taps.iter().enumerate() {
                let xt = x.add(toff);
                let wt = w.add(t * CIN * cout);
                for ic in 0..CIN {
                    let wr = wt.add(ic * cout);
                    let mut wv = [V::zero(); CV];
                    for j in 0..CV {
                        wv[j] = V::load(wr.add(j * V::N));
                    }
                    for p in 0..NB {
                        let b = V::splat(xt.add(p * S * CIN + ic));
                        for j in 0..CV {
                            acc[p][j] = V::fma(b, wv[j], acc[p][j]);
                        }
                    }
                }
            }
            for j in 0..CV {
                let sc = V::load(scale.add(j * V::N));
                let bi = V::load(bias.add(j * V::N));
                for p in 0..NB {
                    let o = p * cout + j * V::N;
                    let mut y = V::fma(acc[p][j], sc, bi);
                    if let Some(r) = res {
                        y = y.add(V::load(r.add(o)));
                    }
                    if relu {
                        y = y.relu();
                    }
                    y.store(out.add(o));
                }
            }
        }
    }

    /// The whole image with `NB×CV` tiles; row tails go to the portable kernel.
    #[inline(always)]
    unsafe fn conv_tiles<V: Lanes, const CIN: usize, const S: usize, const CV: usize, const NB: usize>(
        shape: &ConvShape,
        input: &[f32],
        weights: &[f32],
        epi: &Epilogue<'_>,
        out: &mut [f32],
    ) {
        debug_assert!(shape.input.c == CIN && shape.stride == S);
        let (taps, ntaps) = shape.taps();
        let taps = &taps[..ntaps];
        let cout = shape.output.c;
        let block = CV * V::N;
        debug_assert_eq!(cout % block, 0);
        let full = shape.output.w / NB * NB;
        let xp = input.as_ptr();
        let wp = weights.as_ptr();
        let op = out.as_mut_ptr();
        let rp = epi.residual.map(|r| r.as_ptr());
        for y in 0..shape.output.h {
            for oc0 in (0..cout).step_by(block) {
                for x0 in (0..full).step_by(NB) {
                    let o = shape.output.at(y, x0) + oc0;
                    // SAFETY: the tile reads input pixels (y·S + kh, x0·S + p·S + kw) of the
                    // padded input, p < NB, x0 + NB <= out_w, and channels < cin; it writes
                    // NB pixels × `block` channels of row y; all inside the lengths checked by
                    // `conv_image`.
                    unsafe {
                        tile::<V, CIN, S, CV, NB>(
                            xp.add(shape.input_base(y, x0)),
                            taps,
                            wp.add(oc0),
                            cout,
                            op.add(o),
                            rp.map(|r| r.add(o)),
                            epi.scale.as_ptr().add(oc0),
                            epi.bias.as_ptr().add(oc0),
                            epi.relu,
                        );
                    }
                }
            }
            if full < shape.output.w {
                conv_pixels(shape, input, weights, epi, out, y, full..shape.output.w);
            }
        }
    }

    /// Calls `conv_tiles` for the (in channels, stride) pairs of the CIFAR ResNets; `false` when
    /// the pair is not compiled in.
    macro_rules! dispatch_tiles {
        ($V:ty, $cv:literal, $nb:literal, $shape:expr, $($arg:expr),*) => {
            match ($shape.input.c, $shape.stride) {
                (1, 1) => { conv_tiles::<$V, 1, 1, $cv, $nb>($shape, $($arg),*); true }
                (3, 1) => { conv_tiles::<$V, 3, 1, $cv, $nb>($shape, $($arg),*); true }
                (16, 1) => { conv_tiles::<$V, 16, 1, $cv, $nb>($shape, $($arg),*); true }
                (16, 2) => { conv_tiles::<$V, 16, 2, $cv, $nb>($shape, $($arg),*); true }
                (32, 1) => { conv_tiles::<$V, 32, 1, $cv, $nb>($shape, $($arg),*); true }
                (32, 2) => { conv_tiles::<$V, 32, 2, $cv, $nb>($shape, $($arg),*); true }
                (64, 1) => { conv_tiles::<$V, 64, 1, $cv, $nb>($shape, $($arg),*); true }
                (64, 2) => { conv_tiles::<$V, 64, 2, $cv, $nb>($shape, $($arg),*); true }
                _ => false,
            }
        };
    }

    /// AVX-512: 32 registers; tiles of 16 accumulators (16 pixels × 16 channels, 8 × 32 or
    /// 4 × 64).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn conv_avx512(
        shape: &ConvShape,
        input: &[f32],
        weights: &[f32],
        epi: &Epilogue<'_>,
        out: &mut [f32],
    ) {
        let cout = shape.output.c;
        let done = unsafe {
            if cout.is_multiple_of(64) {
                dispatch_tiles!(F32x16, 4, 4, shape, input, weights, epi, out)
            } else if cout.is_multiple_of(32) {
                dispatch_tiles!(F32x16, 2, 8, shape, input, weights, epi, out)
            } else if cout.is_multiple_of(16) {
                dispatch_tiles!(F32x16, 1, 16, shape, input, weights, epi, out)
            } else {
                false
            }
        };
        if !done {
            for y in 0..shape.output.h {
                conv_pixels(shape, input, weights, epi, out, y, 0..shape.output.w);
            }
        }
    }

    /// AVX2: 16 registers; tiles of 4 pixels × 16 channels.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_avx2(
        shape: &ConvShape,
        input: &[f32],
        weights: &[f32],
        epi: &Epilogue<'_>,
        out: &mut [f32],
    ) {
        let cout = shape.output.c;
        let done = unsafe {
            if cout.is_multiple_of(16) {
                dispatch_tiles!(F32x8, 2, 4, shape, input, weights, epi, out)
            } else {
                false
            }
        };
        if !done {
            for y in 0..shape.output.h {
                conv_pixels(shape, input, weights, epi, out, y, 0..shape.output.w);
            }
        }
    }

    /// Winograd with AVX-512 tiles of 16 accumulators, as `conv_avx512`; `false` when the
    /// output channels are not a multiple of 16.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn winograd_avx512(
        shape: &ConvShape,
        input: &[f32],
        u: &[f32],
        epi: &Epilogue<'_>,
        out: &mut [f32],
    ) -> bool {
        // SAFETY: the CPU has AVX-512 (the caller's `Isa`); lengths checked by `conv_image`.
        unsafe {
            match (shape.input.c, shape.output.c) {
                (16, 16) => winograd::conv::<F32x16, 16, 1, 16>(shape, input, u, epi, out),
                (32, 32) => winograd::conv::<F32x16, 32, 2, 8>(shape, input, u, epi, out),
                (64, 64) => winograd::conv::<F32x16, 64, 4, 4>(shape, input, u, epi, out),
                (_, c) if c.is_multiple_of(64) => winograd::conv::<F32x16, 0, 4, 4>(shape, input, u, epi, out),
                (_, c) if c.is_multiple_of(32) => winograd::conv::<F32x16, 0, 2, 8>(shape, input, u, epi, out),
                (_, c) if c.is_multiple_of(16) => winograd::conv::<F32x16, 0, 1, 16>(shape, input, u, epi, out),
                _ => return false,
            }
        }
        true
    }

    /// Winograd with AVX2 tiles of 4 tiles × 16 channels; `false` when the output channels are
    /// not a multiple of 16.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn winograd_avx2(
        shape: &ConvShape,
        input: &[f32],
        u: &[f32],
        epi: &Epilogue<'_>,
        out: &mut [f32],
    ) -> bool {
        if !shape.output.c.is_multiple_of(16) {
            return false;
        }
        // SAFETY: the CPU has AVX2 and FMA (the caller's `Isa`); lengths checked by `conv_image`.
        unsafe { winograd::conv::<F32x8, 0, 2, 4>(shape, input, u, epi, out) };
        true
    }
}
