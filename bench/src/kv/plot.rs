//! A latency percentile plot as SVG (`--svg`): latency against percentile,
//! the percentile axis stretched as HdrHistogram plots do (by 1/(1−p), so
//! 90%, 99%, 99.9% and 99.99% are equally far apart), for people who would
//! rather look than read.

/// Plot size in pixels, and its margins.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 50.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 20.0;
/// Rightmost percentile shown: 99.999%.
const NINES_MAX: f64 = 5.0;

/// How far right percentile `q` goes: its number of nines.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        NINES_MAX
    } else {
        (-(1.0 - q).log10()).clamp(0.0, NINES_MAX)
    }
}

/// The SVG of `points` ((percentile 0–1, latency µs), in percentile order).
pub fn svg(title: &str, points: &[(f64, u64)]) -> String {
    let max_us = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |q: f64| LEFT + nines(q) / NINES_MAX * w;
    let y = |us: f64| TOP + h - us / max_us * h;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"15\">{}</text>\n",
        escape(title)
    );
    // axes, percentile ticks, latency ticks
    out += &format!("<path d=\"M{LEFT},{TOP} V{} H{}\" stroke=\"black\" fill=\"none\"/>\n", TOP + h, LEFT + w);
    for (q, label) in
        [(0.0, "0%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%"), (0.99999, "99.999%")]
    {
        let px = x(q);
        out += &format!(
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            TOP + h,
            TOP + h + 18.0
        );
    }
    for i in 0..=4 {
        let us = max_us * i as f64 / 4.0;
        let py = y(us);
        out += &format!(
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.1} ms</text>\n",
            LEFT + w,
            LEFT - 6.0,
            py + 4.0,
            us / 1000.0
        );
    }
    out += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n", LEFT + w / 2.0, HEIGHT - 8.0);
    let path: Vec<String> = points.iter().map(|(q, us)| format!("{:.1},{:.1}", x(*q), y(*us as f64))).collect();
    if !path.is_empty() {
        out +=
            &format!("<polyline points=\"{}\" stroke=\"#1f77b4\" stroke-width=\"2\" fill=\"none\"/>\n", path.join(" "));
    }
    out += "</svg>\n";
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_well_formed_and_places_the_tail_to_the_right() {
        let points = [(0.0, 100), (0.5, 200), (0.9, 400), (0.99, 1_000), (0.999, 5_000), (1.0, 9_000)];
        let s = svg("a <title> & more", &points);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;title&gt; &amp; more") && s.contains("<polyline") && s.contains("99.9%"));
        assert!(nines(0.0) < nines(0.9) && nines(0.9) < nines(0.999) && nines(1.0) == NINES_MAX);
        assert!(svg("empty", &[]).contains("</svg>"));
    }
}
