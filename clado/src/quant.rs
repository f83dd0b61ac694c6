//! Quantizers (DESIGN.md, "Quantizers"). Filled in by the quantizer work.
