//! The run's picture as an SVG: above, memory against time (cgroup usage, the daemon's budget
//! plus base, the usage less page cache, what transactions have reserved, what is pinned, the clean cache) under the
//! cgroup's limit; below, completed operations per second. Crash rounds are marked.

use crate::monitor::Sample;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP_Y0: f64 = 40.0;
const TOP_H: f64 = 280.0;
const BOT_Y0: f64 = 370.0;
const BOT_H: f64 = 110.0;

fn polyline(out: &mut String, pts: &[(f64, f64)], color: &str, dash: bool) {
    let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{} points="{}"/>"#,
        if dash {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        },
        p.join(" ")
    );
}

/// Draws `samples` of a run titled `title` under `limit` bytes; `crashes` are times (s).
pub fn render(title: &str, samples: &[Sample], limit: u64, crashes: &[f64]) -> String {
    let mut out = String::new();
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let y_max = samples
        .iter()
        .map(|s| mib(s.usage.max(s.budget + s.base)))
        .fold(mib(limit), f64::max)
        * 1.1;
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / t_max;
    let y = |m: f64| TOP_Y0 + TOP_H - TOP_H * m / y_max;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">{title}</text>"#
    );
    // Axes and grid.
    for k in 0..=4 {
        let m = y_max * k as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="5" y="{:.1}">{m:.1} MiB</text>"##,
            W - RIGHT,
            y(m) + 4.0,
            y = y(m)
        );
    }
    for k in 0..=6 {
        let t = t_max * k as f64 / 6.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{t:.0} s</text>"#,
            x(t) - 10.0,
            BOT_Y0 + BOT_H + 20.0
        );
    }
    for &c in crashes {
        let _ = writeln!(
            out,
            r##"<line x1="{xc:.1}" x2="{xc:.1}" y1="{TOP_Y0}" y2="{}" stroke="#999" stroke-dasharray="2,3"/>"##,
            BOT_Y0 + BOT_H,
            xc = x(c)
        );
    }
    type Series = (&'static str, &'static str, fn(&Sample) -> u64);
    let series: [Series; 6] = [
        ("cgroup usage", "#d62728", |s| s.usage),
        ("less page cache", "#8c564b", |s| s.no_cache),
        ("budget + base", "#1f77b4", |s| s.budget + s.base),
        ("reserved", "#2ca02c", |s| s.reserved),
        ("pinned", "#9467bd", |s| s.pinned),
        ("clean cache", "#ff7f0e", |s| s.clean_cache),
    ];
    for (i, (name, color, f)) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = samples.iter().map(|s| (x(s.t), y(mib(f(s))))).collect();
        polyline(&mut out, &pts, color, false);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">{name}</text>"#,
            LEFT + 10.0 + 135.0 * i as f64,
            TOP_Y0 + TOP_H + 18.0
        );
    }
    polyline(
        &mut out,
        &[(x(0.0), y(mib(limit))), (x(t_max), y(mib(limit)))],
        "black",
        true,
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{:.1}">limit {:.0} MiB</text>"#,
        W - RIGHT - 110.0,
        y(mib(limit)) - 4.0,
        mib(limit)
    );
    // Operations per second, over one-second windows.
    let mut rate: Vec<(f64, f64)> = Vec::new();
    let mut j = 0;
    for (i, s) in samples.iter().enumerate() {
        while samples[j].t < s.t - 1.0 {
            j += 1;
        }
        let dt = s.t - samples[j].t;
        if dt > 0.0 && i > j {
            rate.push((s.t, s.ops.saturating_sub(samples[j].ops) as f64 / dt));
        }
    }
    let r_max = rate.iter().map(|r| r.1).fold(1.0, f64::max) * 1.1;
    let yb = |r: f64| BOT_Y0 + BOT_H - BOT_H * r / r_max;
    let pts: Vec<(f64, f64)> = rate.iter().map(|&(t, r)| (x(t), yb(r))).collect();
    polyline(&mut out, &pts, "#444", false);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" x2="{}" y1="{b}" y2="{b}" stroke="#999"/><text x="5" y="{:.1}">{r_max:.0}/s</text><text x="{LEFT}" y="{}">operations completed per second</text>"##,
        W - RIGHT,
        BOT_Y0 + 4.0,
        BOT_Y0 - 6.0,
        b = BOT_Y0 + BOT_H
    );
    out.push_str("</svg>\n");
    out
}
