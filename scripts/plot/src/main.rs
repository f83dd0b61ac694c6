//! `clado-plot`: the experiment graph's picture. Reads the `table.csv` written by
//! `scripts/table.py` and draws test top-1 against model size, one curve per method, with the
//! FP model as a reference line, as PNG and SVG.
//!
//! Text in the PNG is rasterised by `ab_glyph` from a TrueType file read at run time (default:
//! Debian's `fonts-dejavu-core`), so no system font lookup (fontconfig) is needed.

use clap::{Parser, ValueEnum};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Draw test top-1 accuracy against model size from the experiment graph's table.csv: one curve
per method (points at each budget, joined in order of size), the FP model as a dashed line.
When top-1 spans more than 15 points (a collapsed low-bit model), a second panel zooms on the
configurations within 8 points of the best.

table.csv is written by scripts/table.py; the columns read here are `method`, `top1`,
`avg_w_bits` and `size_mb` (other columns are ignored). The row with method `fp` is the
reference line.

Example:
  clado-plot out/resnet20/main/table.csv --png out/resnet20/main/plot.png --svg out/resnet20/main/plot.svg \\
             --title 'ResNet-20, Fashion-MNIST, options w2a8,w4a8,w8a8'";

/// The picture's size in pixels (room for two panels side by side, each with its legend).
const PNG_SIZE: (u32, u32) = (1600, 800);
/// Default font: Debian's fonts-dejavu-core.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Parser, Debug)]
#[command(name = "clado-plot", version, about = "Draw top-1 against model size from table.csv", long_about = LONG_ABOUT)]
struct Args {
    /// The table written by scripts/table.py (CSV with a header line)
    table: PathBuf,
    /// Write a PNG here
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Write an SVG here
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// What the horizontal axis shows
    #[arg(long, value_enum, default_value_t = XAxis::AvgBits)]
    x: XAxis,
    /// Title above the plot
    #[arg(long, default_value = "Test top-1 against model size")]
    title: String,
    /// TrueType font for the text (read at run time)
    #[arg(long, value_name = "TTF", default_value = DEFAULT_FONT)]
    font: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum XAxis {
    /// Average weight bits per parameter
    AvgBits,
    /// Weight size in megabytes (10^6 bytes)
    SizeMb,
}

impl XAxis {
    fn column(self) -> &'static str {
        match self {
            XAxis::AvgBits => "avg_w_bits",
            XAxis::SizeMb => "size_mb",
        }
    }

    fn label(self) -> &'static str {
        match self {
            XAxis::AvgBits => "average weight bits per parameter (bits)",
            XAxis::SizeMb => "weight size (MB, 10^6 bytes)",
        }
    }
}

/// One point of the table: a method's evaluated configuration.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    method: String,
    x: f64,
    top1: f64,
}

/// Parse table.csv: a header line naming the columns, then one row per configuration. Fields
/// hold no commas (the writer guarantees it), so a split on `,` is exact.
fn parse_table(text: &str, x_column: &str) -> Result<Vec<Point>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("the table is empty (expected a header line)")?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let find = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no column `{name}` in the header `{header}`"))
    };
    let (method_col, x_col, top1_col) = (find("method")?, find(x_column)?, find("top1")?);
    let mut points = Vec::new();
    for (number, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns.len() {
            return Err(format!(
                "line {}: {} fields, the header has {}",
                number + 1,
                fields.len(),
                columns.len()
            ));
        }
        let number_at = |col: usize| {
            fields[col]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    format!(
                        "line {}: column `{}` is `{}`, expected a finite number",
                        number + 1,
                        columns[col],
                        fields[col]
                    )
                })
        };
        points.push(Point {
            method: fields[method_col].to_string(),
            x: number_at(x_col)?,
            top1: number_at(top1_col)?,
        });
    }
    if points.is_empty() {
        return Err("the table has no rows".into());
    }
    Ok(points)
}

/// A method's points (size, top-1), sorted by size.
type Curve = (String, Vec<(f64, f64)>);

/// Curves in order of first appearance, each sorted by size; and the FP reference, if present.
fn curves(points: &[Point]) -> (Vec<Curve>, Option<f64>) {
    let mut curves: Vec<Curve> = Vec::new();
    let mut fp = None;
    for p in points {
        if p.method == "fp" {
            fp = Some(p.top1);
            continue;
        }
        match curves.iter_mut().find(|(m, _)| *m == p.method) {
            Some((_, xy)) => xy.push((p.x, p.top1)),
            None => curves.push((p.method.clone(), vec![(p.x, p.top1)])),
        }
    }
    for (_, xy) in &mut curves {
        xy.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    }
    (curves, fp)
}

/// Colours that stay distinct for up to ten curves (Tableau 10).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Above this spread of top-1 (percentage points) a second panel zooms on the best
/// configurations, so that a collapsed model (e.g. uniform 2-bit) does not flatten the others.
const ZOOM_ABOVE_SPREAD: f64 = 15.0;
/// The zoomed panel shows top-1 within this many points of the best configuration.
const ZOOM_DEPTH: f64 = 8.0;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, points: &[Point], args: &Args) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .margin(12, 0, 0, 0)
        .titled(&args.title, ("sans-serif", 28))
        .map_err(err)?;
    // Colours by method, the same in both panels.
    let (all_curves, _) = curves(points);
    let methods: Vec<&str> = all_curves.iter().map(|(m, _)| m.as_str()).collect();
    let range = |pts: &[Point]| {
        pts.iter()
            .map(|p| p.top1)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)))
    };
    let (y_min, y_max) = range(points);
    if y_max - y_min > ZOOM_ABOVE_SPREAD {
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        panel(&left, points, &methods, args, (y_min, y_max), "all configurations").map_err(err)?;
        let near: Vec<Point> = points
            .iter()
            .filter(|p| p.top1 >= y_max - ZOOM_DEPTH)
            .cloned()
            .collect();
        let caption = format!("zoom: within {ZOOM_DEPTH} points of the best");
        panel(&right, &near, &methods, args, range(&near), &caption).map_err(err)?;
    } else {
        panel(&root, points, &methods, args, (y_min, y_max), "").map_err(err)?;
    }
    root.present().map_err(err)
}

/// One chart: the curves of `points` with top-1 in `y_range` (padded), and the legend; a
/// method's colour is given by its position in `methods`.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[Point],
    methods: &[&str],
    args: &Args,
    y_range: (f64, f64),
    caption: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (curves, fp) = curves(points);
    let xs = points.iter().filter(|p| p.method != "fp").map(|p| p.x);
    let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x_min, x_max) = if x_min.is_finite() { (x_min, x_max) } else { (0.0, 1.0) };
    let x_pad = ((x_max - x_min) * 0.05).max(0.05 * x_max.abs().max(1e-3));
    let y_pad = ((y_range.1 - y_range.0) * 0.05).max(0.2);
    let (y_lo, y_hi) = ((y_range.0 - y_pad).max(0.0), (y_range.1 + y_pad).min(100.0));

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min - x_pad)..(x_max + x_pad), y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(args.x.label())
        .y_desc("test top-1 accuracy (%)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .draw()?;
    if let Some(top1) = fp {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(DashedLineSeries::new(
                [(x_min - x_pad, top1), (x_max + x_pad, top1)],
                8,
                6,
                grey.stroke_width(2),
            ))?
            .label(format!("FP ({top1:.2} %)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], grey.stroke_width(2)));
    }
    for (method, xy) in &curves {
        let i = methods.iter().position(|m| m == method).unwrap_or(0);
        let colour = COLOURS[i % COLOURS.len()];
        chart.draw_series(LineSeries::new(xy.iter().copied(), colour.stroke_width(2)))?;
        chart
            .draw_series(xy.iter().map(|&(x, y)| Circle::new((x, y), 5, colour.filled())))?
            .label(method.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (24, 0)], colour.stroke_width(2))
                    + Circle::new((12, 0), 5, colour.filled())
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
}

fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{}: cannot read the font ({e}); install Debian's fonts-dejavu-core or pass --font FILE.ttf",
            path.display()
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a TrueType/OpenType font", path.display()))
}

fn run(args: &Args) -> Result<(), String> {
    if args.png.is_none() && args.svg.is_none() {
        return Err("nothing to write: give --png FILE and/or --svg FILE".into());
    }
    let text = std::fs::read_to_string(&args.table).map_err(|e| format!("{}: {e}", args.table.display()))?;
    let points = parse_table(&text, args.x.column()).map_err(|e| format!("{}: {e}", args.table.display()))?;
    load_font(&args.font)?;
    // Draw into a temporary file beside the target, then rename: a killed run leaves no
    // half-written picture for Make to trust.
    if let Some(png) = &args.png {
        let tmp = temporary(png);
        draw(BitMapBackend::new(&tmp, PNG_SIZE).into_drawing_area(), &points, args)
            .map_err(|e| format!("{}: {e}", png.display()))?;
        std::fs::rename(&tmp, png).map_err(|e| format!("{}: {e}", png.display()))?;
    }
    if let Some(svg) = &args.svg {
        let tmp = temporary(svg);
        draw(SVGBackend::new(&tmp, PNG_SIZE).into_drawing_area(), &points, args)
            .map_err(|e| format!("{}: {e}", svg.display()))?;
        std::fs::rename(&tmp, svg).map_err(|e| format!("{}: {e}", svg.display()))?;
    }
    Ok(())
}

/// `dir/.name.tmp.ext`: same directory (so the rename is atomic), same extension (plotters
/// picks the image encoder by it).
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{ext}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clado-plot: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
method,budget,top1,avg_w_bits,size_mb
fp,none,90.5,32,1.082
naive,4,88.25,4,0.135
clado-loss-shift,3,80,3,0.1
naive,3,70,3,0.1
";

    #[test]
    fn parses_columns_by_name_and_groups_by_method() {
        let points = parse_table(TABLE, "avg_w_bits").unwrap();
        assert_eq!(points.len(), 4);
        assert_eq!(
            points[1],
            Point {
                method: "naive".into(),
                x: 4.0,
                top1: 88.25
            }
        );
        let (curves, fp) = curves(&points);
        assert_eq!(fp, Some(90.5));
        assert_eq!(curves.len(), 2);
        assert_eq!(
            curves[0],
            ("naive".to_string(), vec![(3.0, 70.0), (4.0, 88.25)]),
            "sorted by size"
        );
        assert_eq!(parse_table(TABLE, "size_mb").unwrap()[2].x, 0.1);
    }

    #[test]
    fn rejects_bad_tables_naming_the_line_and_column() {
        assert!(parse_table("", "avg_w_bits").unwrap_err().contains("empty"));
        assert!(parse_table("method,top1\n", "avg_w_bits")
            .unwrap_err()
            .contains("`avg_w_bits`"));
        let e = parse_table("method,top1,avg_w_bits\nnaive,x,4\n", "avg_w_bits").unwrap_err();
        assert!(e.contains("line 2") && e.contains("`top1`"), "{e}");
        let e = parse_table("method,top1,avg_w_bits\nnaive,1\n", "avg_w_bits").unwrap_err();
        assert!(e.contains("2 fields"), "{e}");
    }

    #[test]
    fn temporary_keeps_directory_and_extension() {
        assert_eq!(
            temporary(Path::new("out/main/plot.png")),
            PathBuf::from("out/main/.plot.tmp.png")
        );
    }
}
