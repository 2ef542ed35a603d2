//! Inline SVG charts: columns over days, and horizontal bars for a ranking.
//! Plain markup with a `viewBox`, so they scale with the page and need no
//! script; each bar has a `<title>`, which browsers show on hover.

use std::fmt::Write;

use super::escape;

/// Width and height of a column chart's `viewBox`.
/// Small enough that text at its nominal size stays readable in a card a
/// third of a laptop screen wide.
const WIDTH: f64 = 400.0;
const HEIGHT: f64 = 180.0;
/// Room for the value axis on the left and the day labels below.
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

/// One column per `(label, value)`, oldest first, in `color`; `unit`
/// formats values for the axis and the hover titles; `noun` names what is
/// counted (`requests`).
pub fn columns(
    points: &[(String, u64)],
    color: &str,
    unit: fn(u64) -> String,
    noun: &str,
) -> String {
    let max = nice_ceiling(points.iter().map(|p| p.1).max().unwrap_or(0));
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{} per day\">",
        escape(noun)
    );
    for step in 0..=2 {
        let value = max / 2 * step;
        let y = TOP + plot_h - plot_h * value as f64 / max as f64;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - 8.0,
            LEFT - 8.0,
            y + 4.0,
            escape(&unit(value))
        );
    }
    let slot = plot_w / points.len().max(1) as f64;
    let bar = (slot * 0.68).max(1.0);
    let label_every = points.len().div_ceil(7).max(1);
    for (i, (label, value)) in points.iter().enumerate() {
        let h = plot_h * *value as f64 / max as f64;
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let y = TOP + plot_h - h;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" rx=\"2\" style=\"fill:{color}\"><title>{}: {} {}</title></rect>",
            escape(label),
            escape(&unit(*value)),
            escape(noun)
        );
        // The newest day is always labelled; the others as room allows.
        if (points.len() - 1 - i).is_multiple_of(label_every) {
            let short = label.get(5..).unwrap_or(label);
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                HEIGHT - 6.0,
                escape(short)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// One horizontal bar per `(label, value)`, in the order given, in `color`.
pub fn bars(items: &[(String, u64)], color: &str, unit: fn(u64) -> String) -> String {
    const ROW: f64 = 24.0;
    const LABEL: f64 = 150.0;
    const VALUE: f64 = 44.0;
    let height = ROW * items.len().max(1) as f64;
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1);
    let room = WIDTH - LABEL - VALUE;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"ranking\">"
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = ROW * i as f64;
        let w = (room * *value as f64 / max as f64).max(2.0);
        let shown: String = if label.chars().count() > 24 {
            label.chars().take(23).chain(['…']).collect()
        } else {
            label.clone()
        };
        let _ = write!(
            svg,
            "<text class=\"label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" style=\"fill:{color}\"><title>{}: {}</title></rect>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LABEL - 10.0,
            y + ROW / 2.0 + 4.0,
            escape(&shown),
            y + 4.0,
            ROW - 8.0,
            escape(label),
            escape(&unit(*value)),
            LABEL + w + 8.0,
            y + ROW / 2.0 + 4.0,
            escape(&unit(*value)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × a power of ten at or above `value` (at least 2,
/// so the middle grid line is a whole number).
fn nice_ceiling(value: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * magnitude;
            if candidate >= value.max(2) {
                return candidate;
            }
        }
        match magnitude.checked_mul(10) {
            Some(next) => magnitude = next,
            None => return u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0), 2);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(120), 200);
        assert_eq!(nice_ceiling(2000), 2000);
    }

    #[test]
    fn charts_escape_their_labels() {
        let svg = bars(&[("<x>".to_owned(), 3)], "#000", |n| n.to_string());
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        let svg = columns(
            &[("2026-11-30".to_owned(), 5)],
            "#000",
            |n| n.to_string(),
            "requests",
        );
        assert!(
            svg.contains("<title>2026-11-30: 5 requests</title>"),
            "{svg}"
        );
    }
}
