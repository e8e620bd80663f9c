//! The overview's charts, drawn on the server as SVG: no script, nothing loaded. Labels that
//! came from mail (domains, reason codes, addresses) are text nodes, escaped by maud.

use maud::{Markup, html};

use unspoof_store::format_time;

/// The verdicts in the order they are stacked, with their colours.
const SERIES: &[(&str, &str)] = &[
    ("accept", "#4c9a5b"),
    ("tag", "#d9a441"),
    ("quarantine", "#d9772b"),
    ("reject", "#c0392b"),
];
const OTHER: &str = "#8a8f98";

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 24.0;

/// Stacked bars: messages per bucket, one colour per verdict (refusals before DATA and
/// temporary failures together as "other").
pub fn verdicts_over_time(
    rows: &[(i64, String, i64)],
    since: i64,
    until: i64,
    bucket: i64,
) -> Markup {
    let n = ((until - since) / bucket.max(1)).clamp(1, 1_000) as usize;
    // [bucket][series + other]
    let mut stacks = vec![vec![0i64; SERIES.len() + 1]; n];
    for (t, action, count) in rows {
        let i = ((t - since) / bucket.max(1)) as usize;
        if *t < since || i >= n {
            continue;
        }
        let s = SERIES
            .iter()
            .position(|(a, _)| a == action)
            .unwrap_or(SERIES.len());
        stacks[i][s] += count;
    }
    let max = stacks
        .iter()
        .map(|s| s.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM;
    let bar_w = plot_w / n as f64;
    let label_every = (n / 8).max(1);
    let day_labels = bucket >= 86_400;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label="Messages per verdict over time" {
            line x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) stroke="#999" {}
            text x=(LEFT - 4.0) y="12" text-anchor="end" font-size="11" { (max) }
            text x=(LEFT - 4.0) y=(plot_h) text-anchor="end" font-size="11" { "0" }
            @for (i, stack) in stacks.iter().enumerate() {
                @let x = LEFT + i as f64 * bar_w;
                @let mut y = plot_h;
                @for (s, count) in stack.iter().enumerate() {
                    @if *count > 0 {
                        @let h = *count as f64 / max as f64 * (plot_h - 8.0);
                        @let fill = SERIES.get(s).map(|(_, c)| *c).unwrap_or(OTHER);
                        @let name = SERIES.get(s).map(|(a, _)| *a).unwrap_or("other");
                        rect x=(fmt(x + 1.0)) y=(fmt(y - h)) width=(fmt((bar_w - 2.0).max(1.0))) height=(fmt(h)) fill=(fill) {
                            title { (count) " " (name) ", " (format_time(since + i as i64 * bucket)) }
                        }
                        ({ y -= h; "" })
                    }
                }
                @if i % label_every == 0 {
                    @let t = format_time(since + i as i64 * bucket);
                    text x=(fmt(x + 2.0)) y=(HEIGHT - 6.0) font-size="10" {
                        (if day_labels { t[5..10].to_string() } else { t[11..16].to_string() })
                    }
                }
            }
        }
        p.legend {
            @for (name, colour) in SERIES { span.key { svg width="10" height="10" { rect width="10" height="10" fill=(colour) {} } " " (name) } " " }
            span.key { svg width="10" height="10" { rect width="10" height="10" fill=(OTHER) {} } " other (refused, tempfail)" }
        }
    }
}

/// Horizontal bars: one row per key, longest first, each a link (to a search).
pub fn bar_list(rows: &[(String, i64)], link: impl Fn(&str) -> String) -> Markup {
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    html! {
        @if rows.is_empty() { p.muted { "Nothing in this period." } }
        @else {
            table.bars {
                @for (k, n) in rows {
                    tr {
                        td.key { a href=(link(k)) { (k) } }
                        td.bar {
                            svg width="160" height="12" viewBox="0 0 160 12" preserveAspectRatio="none" role="img" aria-label=(n) {
                                rect width=(fmt(*n as f64 / max as f64 * 160.0)) height="12" fill="#5b7db1" {}
                            }
                        }
                        td.n { (n) }
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}
