//! The option grammar: what precision a layer runs at.
//!
//! `w4a8` quantizes weights to 4 bits and the layer's input activation to 8 bits; `w4` quantizes
//! only weights (activation FP); `a4` only the activation; `fp` nothing. Bits are 2..=8.
//! A list is comma-separated and may use brace expansion: `w{2,4,8}a{2,4,8}` is nine options.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Smallest and largest supported bit widths (2 bits = ternary weights).
pub const MIN_BITS: u8 = 2;
pub const MAX_BITS: u8 = 8;
/// Bits counted for an unquantized (FP32) tensor in sizes and BOPs.
pub const FP_BITS: u32 = 32;

/// One precision choice for a layer. `None` means full precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuantOption {
    pub w_bits: Option<u8>,
    pub a_bits: Option<u8>,
}

impl QuantOption {
    pub const FP: QuantOption = QuantOption {
        w_bits: None,
        a_bits: None,
    };

    /// Weight bits as counted in budgets (32 for FP).
    pub fn w_bits_counted(&self) -> u32 {
        self.w_bits.map_or(FP_BITS, u32::from)
    }

    /// Activation bits as counted in BOPs (32 for FP).
    pub fn a_bits_counted(&self) -> u32 {
        self.a_bits.map_or(FP_BITS, u32::from)
    }

    /// Canonical name: `w4a8`, `w4`, `a4` or `fp`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Parse one option, e.g. `w4a8`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |why: &str| {
            Error::usage(format!(
                "option '{t}': {why} (expected w<bits>a<bits>, w<bits>, a<bits> or fp, bits {MIN_BITS}..={MAX_BITS})"
            ))
        };
        if t.eq_ignore_ascii_case("fp") {
            return Ok(Self::FP);
        }
        let mut w_bits = None;
        let mut a_bits = None;
        let mut rest = t;
        if let Some(r) = rest.strip_prefix('w') {
            let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                return Err(bad("'w' must be followed by a number of bits"));
            }
            w_bits = Some(parse_bits(&digits).map_err(|m| bad(&m))?);
            rest = &r[digits.len()..];
        }
        if let Some(r) = rest.strip_prefix('a') {
            let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                return Err(bad("'a' must be followed by a number of bits"));
            }
            a_bits = Some(parse_bits(&digits).map_err(|m| bad(&m))?);
            rest = &r[digits.len()..];
        }
        if !rest.is_empty() || (w_bits.is_none() && a_bits.is_none()) {
            return Err(bad("not an option"));
        }
        Ok(QuantOption { w_bits, a_bits })
    }

    /// Parse a comma-separated list with brace expansion; repeats are an error.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let mut out: Vec<QuantOption> = Vec::new();
        for item in expand_braces(text)? {
            let o = QuantOption::parse(&item)?;
            if out.contains(&o) {
                return Err(Error::usage(format!("options '{text}': '{o}' appears more than once")));
            }
            out.push(o);
        }
        if out.is_empty() {
            return Err(Error::usage("no options given (e.g. --options w2a8,w4a8,w8a8)"));
        }
        Ok(out)
    }

    /// Higher precision first: a total order used to name "the highest-precision option".
    /// FP counts as 32 bits; weights decide first, then activations.
    pub fn precision_key(&self) -> (u32, u32) {
        (self.w_bits_counted(), self.a_bits_counted())
    }
}

fn parse_bits(digits: &str) -> std::result::Result<u8, String> {
    let b: u32 = digits
        .parse()
        .map_err(|_| format!("'{digits}' is not a number of bits"))?;
    if !(MIN_BITS as u32..=MAX_BITS as u32).contains(&b) {
        return Err(format!("{b} bits is out of range"));
    }
    Ok(b as u8)
}

impl fmt::Display for QuantOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.w_bits, self.a_bits) {
            (None, None) => write!(f, "fp"),
            (Some(w), None) => write!(f, "w{w}"),
            (None, Some(a)) => write!(f, "a{a}"),
            (Some(w), Some(a)) => write!(f, "w{w}a{a}"),
        }
    }
}

impl std::str::FromStr for QuantOption {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QuantOption::parse(s)
    }
}

/// At most this many items after brace expansion. There are only 64 + 7 + 7 + 1 distinct
/// options and a list may not repeat one, so a longer expansion is an error anyway; the cap
/// stops `{a,b}{a,b}{a,b}…` from growing exponentially (found by fuzzing: it ran out of memory).
pub const MAX_EXPANDED: usize = 1024;

/// Expand `w{2,4}a8,fp` into `["w2a8", "w4a8", "fp"]`: commas inside braces separate
/// alternatives, commas outside separate items; braces do not nest.
pub fn expand_braces(text: &str) -> Result<Vec<String>> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' if depth == 0 => depth = 1,
            '{' => return Err(Error::usage(format!("'{text}': nested braces are not supported"))),
            '}' if depth == 1 => depth = 0,
            '}' => return Err(Error::usage(format!("'{text}': '}}' without '{{'"))),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(Error::usage(format!("'{text}': '{{' without '}}'")));
    }
    items.push(&text[start..]);
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut words = vec![String::new()];
        let mut rest = item;
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').expect("balanced braces checked above");
            let prefix = &rest[..open];
            let alts: Vec<&str> = rest[open + 1..close].split(',').map(str::trim).collect();
            if (out.len() + words.len()).saturating_mul(alts.len()) > MAX_EXPANDED {
                return Err(too_many(text));
            }
            words = words
                .iter()
                .flat_map(|w| alts.iter().map(move |a| format!("{w}{prefix}{a}")))
                .collect();
            rest = &rest[close + 1..];
        }
        out.extend(words.into_iter().map(|w| format!("{w}{rest}")));
        if out.len() > MAX_EXPANDED {
            return Err(too_many(text));
        }
    }
    Ok(out)
}

fn too_many(text: &str) -> Error {
    let shown: String = text.chars().take(40).collect();
    let more = if shown.len() < text.len() { "…" } else { "" };
    Error::usage(format!("'{shown}{more}': expands to more than {MAX_EXPANDED} options"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        let o = |w, a| QuantOption { w_bits: w, a_bits: a };
        assert_eq!(QuantOption::parse("w4a8").unwrap(), o(Some(4), Some(8)));
        assert_eq!(QuantOption::parse("w4").unwrap(), o(Some(4), None));
        assert_eq!(QuantOption::parse("a4").unwrap(), o(None, Some(4)));
        assert_eq!(QuantOption::parse("fp").unwrap(), QuantOption::FP);
        for bad in ["w9a8", "w0", "x4", "w", "a", "w4a", "w4b8", "", "w1", "w4a8x", "a8w4"] {
            assert!(QuantOption::parse(bad).is_err(), "{bad} should not parse");
        }
        for name in ["w2a8", "w8", "a2", "fp"] {
            assert_eq!(QuantOption::parse(name).unwrap().to_string(), name);
        }
    }

    #[test]
    fn expands_braces_and_rejects_repeats() {
        let l = QuantOption::parse_list("w{2,4,8}a{2,4,8}").unwrap();
        assert_eq!(l.len(), 9);
        assert_eq!(l[0].to_string(), "w2a2");
        assert_eq!(l[1].to_string(), "w2a4");
        assert_eq!(l[8].to_string(), "w8a8");
        let l = QuantOption::parse_list("w4,fp").unwrap();
        assert_eq!(l, vec![QuantOption::parse("w4").unwrap(), QuantOption::FP]);
        assert!(QuantOption::parse_list("w4a8,w4a8").is_err());
        assert!(QuantOption::parse_list("w{2,4").is_err());
        assert!(QuantOption::parse_list("").is_err());
    }

    #[test]
    fn expansion_is_capped() {
        // Found by the `options` fuzz target: 40 brace groups of two alternatives asked for
        // 2^40 items and ran out of memory. Now an error, at once.
        let bomb = "{w,a}".repeat(40);
        let e = expand_braces(&bomb).unwrap_err().to_string();
        assert!(e.contains("more than 1024 options"), "{e}");
        let crash = include_bytes!("../../fuzz/seeds/options/oom-brace-expansion");
        assert!(QuantOption::parse_list(&String::from_utf8_lossy(crash)).is_err());
        assert_eq!(
            expand_braces("w{2,3,4,5,6,7,8}a{2,3,4,5,6,7,8},w{2,4,8},a{2,4,8},fp")
                .unwrap()
                .len(),
            56
        );
    }
}
