//! The timeline as one self-contained HTML page: inline SVG, inline CSS, no script, no
//! network fetch. An overview panel spans the whole run; each fault that moved cells gets a
//! zoomed panel around it, with the failover interval annotated in milliseconds. Every
//! shape carries an SVG `<title>` with the raw event line(s) it came from, which browsers
//! show on hover.
//!
//! The page is also well-formed XML (every element closed, attributes quoted, no named
//! entities), so [`crate::inspect`] can read it back with an XML parser. Elements the
//! checks rely on: `svg#overview`, `g.lane[data-node]`, `g.failover[data-ms]`.

use std::fmt::Write;

use svg::node::element::{Group, Line, Polygon, Rectangle, Text, Title, SVG};
use svg::Node;

use crate::model::{
    CellBar, Failover, HostUs, Lane, MarkKind, Marker, Member, Process, Role, Span, Timeline,
    CELL_ROWS_MAX,
};

/// Width of every panel, in CSS pixels.
pub const WIDTH_PX: f64 = 1400.0;
const LEFT_PX: f64 = 150.0;
const RIGHT_PX: f64 = 24.0;
const AXIS_PX: f64 = 28.0;
const CLUSTER_PX: f64 = 44.0;
const PROCESS_PX: f64 = 10.0;
const STRIP_PX: f64 = 6.0;
const RAFT_PX: f64 = 10.0;
const CELL_ROW_PX: f64 = 16.0;
const GAP_PX: f64 = 3.0;
const LANE_PAD_PX: f64 = 14.0;
/// Average glyph advance of the 11 px font, for fitting labels.
const CHAR_PX: f64 = 6.4;
/// Context shown around a failover in its zoomed panel.
const ZOOM_BEFORE_US: HostUs = 1_000_000;
const ZOOM_AFTER_US: HostUs = 1_000_000;

const CSS: &str = "body{font-family:sans-serif;margin:16px;color:#222;background:#fff}\
h1{font-size:20px;margin:0 0 4px 0}h2{font-size:15px;margin:18px 0 4px 0}\
p{margin:4px 0}.legend{font-size:12px;margin:6px 0}.legend span{margin-right:14px;white-space:nowrap}\
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle;border:1px solid #999}\
svg text{font-family:sans-serif;font-size:11px}.notes{font-size:12px;color:#555}\
.big{font-weight:bold;color:#b34000}";

fn process_color(p: Process) -> &'static str {
    match p {
        Process::Up => "#d9d9d9",
        Process::Restarted => "#9ecae1",
        Process::Hung => "#fdae6b",
        Process::Killed => "#252525",
        Process::Gone => "#de2d26",
    }
}

fn process_name(p: Process) -> &'static str {
    match p {
        Process::Up => "up",
        Process::Restarted => "restarted",
        Process::Hung => "hung (SIGSTOP)",
        Process::Killed => "killed",
        Process::Gone => "stopped on its own",
    }
}

fn member_color(m: Member) -> &'static str {
    match m {
        Member::Alive => "#31a354",
        Member::Suspect => "#fec44f",
        Member::Down => "#de2d26",
        Member::Left => "#969696",
    }
}

fn member_name(m: Member) -> &'static str {
    match m {
        Member::Alive => "alive",
        Member::Suspect => "suspect",
        Member::Down => "down",
        Member::Left => "left",
    }
}

fn role_color(r: Role) -> &'static str {
    match r {
        Role::Follower => "#c6dbef",
        Role::PreCandidate => "#fdd0a2",
        Role::Candidate => "#fd8d3c",
        Role::Leader => "#6a51a3",
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn mark_color(k: MarkKind) -> &'static str {
    match k {
        MarkKind::Commit => "#54278f",
        MarkKind::Kill => "#de2d26",
        MarkKind::Hang => "#e6550d",
        MarkKind::Resume => "#31a354",
        MarkKind::Restart => "#3182bd",
        MarkKind::Partition | MarkKind::Heal => "#756bb1",
        MarkKind::Nemesis => "#636363",
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Seconds with millisecond precision.
fn secs(us: HostUs) -> String {
    format!("{:.3} s", us as f64 / 1e6)
}

/// The horizontal scale of one panel.
#[derive(Clone, Copy)]
struct Scale {
    from_us: HostUs,
    to_us: HostUs,
}

impl Scale {
    fn x(&self, t: HostUs) -> f64 {
        let t = t.clamp(self.from_us, self.to_us);
        let plot = WIDTH_PX - LEFT_PX - RIGHT_PX;
        LEFT_PX + (t - self.from_us) as f64 * plot / (self.to_us - self.from_us).max(1) as f64
    }

    fn overlaps(&self, from: HostUs, to: HostUs) -> bool {
        to >= self.from_us && from <= self.to_us
    }
}

fn titled<N: Node + Into<Box<dyn Node>>>(mut node: N, title: &str) -> N {
    node.append(Title::new(title));
    node
}

fn rect(x: f64, y: f64, w: f64, h: f64, fill: &str) -> Rectangle {
    Rectangle::new()
        .set("x", round(x))
        .set("y", round(y))
        .set("width", round(w.max(1.0)))
        .set("height", round(h))
        .set("fill", fill)
}

fn text(x: f64, y: f64, content: &str) -> Text {
    Text::new(content).set("x", round(x)).set("y", round(y))
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Cuts a label to what fits in `width_px`, marking the cut with `…`.
fn fit(label: &str, width_px: f64) -> Option<String> {
    let max = (width_px / CHAR_PX).floor() as usize;
    let count = label.chars().count();
    if count <= max {
        Some(label.to_string())
    } else if max >= 3 {
        Some(label.chars().take(max - 1).chain(['…']).collect())
    } else {
        None
    }
}

fn lane_height(lane: &Lane) -> f64 {
    let strips = lane.membership.len().max(1) as f64;
    let rows = lane
        .cells
        .iter()
        .map(|c| c.row + 1)
        .max()
        .unwrap_or(1)
        .min(CELL_ROWS_MAX) as f64;
    PROCESS_PX
        + GAP_PX
        + strips * (STRIP_PX + 1.0)
        + GAP_PX
        + RAFT_PX
        + GAP_PX
        + rows * CELL_ROW_PX
        + LANE_PAD_PX
}

/// Nice tick spacing for a window (about 12 ticks).
fn tick_step_us(span_us: HostUs) -> HostUs {
    const STEPS_MS: [i64; 16] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000,
    ];
    let want = span_us / 12;
    STEPS_MS
        .iter()
        .map(|ms| ms * 1000)
        .find(|&s| s >= want)
        .unwrap_or(120_000_000)
}

fn axis(scale: Scale, height: f64, zero_us: HostUs, relative: bool) -> Group {
    let mut g = Group::new().set("class", "axis");
    let step = tick_step_us(scale.to_us - scale.from_us);
    let first = (scale.from_us - zero_us).div_euclid(step) * step + zero_us;
    let mut t = first;
    while t <= scale.to_us {
        if t >= scale.from_us {
            let x = scale.x(t);
            g.append(
                Line::new()
                    .set("x1", round(x))
                    .set("x2", round(x))
                    .set("y1", AXIS_PX - 6.0)
                    .set("y2", round(height))
                    .set("stroke", "#eee"),
            );
            let rel = t - zero_us;
            let label = if relative {
                if step < 1_000_000 {
                    format!("{:+} ms", rel / 1000)
                } else {
                    format!("{:+.1} s", rel as f64 / 1e6)
                }
            } else if step < 1_000_000 {
                format!("{:.2} s", rel as f64 / 1e6)
            } else {
                format!("{:.0} s", rel as f64 / 1e6)
            };
            g.append(
                text(x, AXIS_PX - 10.0, &label)
                    .set("text-anchor", "middle")
                    .set("fill", "#666"),
            );
        }
        t += step;
    }
    g
}

fn spans<S: Copy>(
    g: &mut Group,
    scale: Scale,
    list: &[Span<S>],
    y: f64,
    h: f64,
    color: fn(S) -> &'static str,
    describe: impl Fn(S) -> String,
) {
    for s in list.iter().filter(|s| scale.overlaps(s.from_us, s.to_us)) {
        let (x0, x1) = (scale.x(s.from_us), scale.x(s.to_us));
        let title = format!(
            "{} from {} to {}\n{}",
            describe(s.state),
            secs(s.from_us),
            secs(s.to_us),
            s.raw
        );
        g.append(titled(rect(x0, y, x1 - x0, h, color(s.state)), &title));
    }
}

fn cell_bar(g: &mut Group, scale: Scale, bar: &CellBar, y: f64, lane: &str) {
    if !scale.overlaps(bar.from_us, bar.to_us) {
        return;
    }
    let (x0, x1) = (scale.x(bar.from_us), scale.x(bar.to_us));
    let fill = if bar.ended.is_some() {
        "#6baed6"
    } else {
        "#2171b5"
    };
    let mut title = format!(
        "cell {} ({}) on {lane}, {} to {}",
        bar.label,
        bar.cell,
        secs(bar.from_us),
        secs(bar.to_us)
    );
    if let Some(end) = &bar.ended {
        let _ = write!(title, ", ended: {end}");
    }
    for raw in &bar.raw {
        let _ = write!(title, "\n{raw}");
    }
    let mut group = Group::new().set("class", "cell");
    group.append(titled(
        rect(x0, y, x1 - x0, CELL_ROW_PX - 3.0, fill).set("rx", 2),
        &title,
    ));
    if let Some(label) = fit(&bar.label, x1 - x0 - 6.0) {
        group.append(titled(
            text(x0 + 3.0, y + CELL_ROW_PX - 6.5, &label).set("fill", "#fff"),
            &title,
        ));
    }
    g.append(group);
}

/// One lane; returns it with its height.
fn lane_group(lane: &Lane, scale: Scale, y0: f64) -> Group {
    let boots = lane.incarnations.len();
    let mut g = Group::new()
        .set("class", "lane")
        .set("data-node", lane.node.as_str())
        .set("data-boots", boots);
    let name_title = format!(
        "{} (id {}), {boots} boot(s)",
        lane.node,
        lane.id.map_or("?".into(), |i| i.to_string())
    );
    g.append(titled(
        text(8.0, y0 + 11.0, &lane.node).set("font-weight", "bold"),
        &name_title,
    ));
    let label = |g: &mut Group, y: f64, what: &str| {
        g.append(
            text(LEFT_PX - 6.0, y, what)
                .set("text-anchor", "end")
                .set("fill", "#888")
                .set("font-size", 9),
        );
    };
    let mut y = y0;
    label(&mut g, y + 8.0, "process");
    spans(
        &mut g,
        scale,
        &lane.process,
        y,
        PROCESS_PX,
        process_color,
        |p| format!("{}: {}", lane.node, process_name(p)),
    );
    y += PROCESS_PX + GAP_PX;
    let strips_top = y;
    for strip in &lane.membership {
        spans(
            &mut g,
            scale,
            &strip.spans,
            y,
            STRIP_PX,
            member_color,
            |m| {
                format!(
                    "{} as seen by {}: {}",
                    lane.node,
                    strip.observer,
                    member_name(m)
                )
            },
        );
        y += STRIP_PX + 1.0;
    }
    if lane.membership.is_empty() {
        y += STRIP_PX + 1.0;
    }
    label(&mut g, (strips_top + y) / 2.0 + 3.0, "members");
    y += GAP_PX;
    label(&mut g, y + 8.0, "raft");
    spans(&mut g, scale, &lane.raft, y, RAFT_PX, role_color, |r| {
        format!("{}: Raft {}", lane.node, role_name(r))
    });
    y += RAFT_PX + GAP_PX;
    label(&mut g, y + 10.0, "cells");
    for bar in &lane.cells {
        cell_bar(
            &mut g,
            scale,
            bar,
            y + bar.row as f64 * CELL_ROW_PX,
            &lane.node,
        );
    }
    g
}

fn marker_line(scale: Scale, m: &Marker, top: f64, bottom: f64) -> Line {
    let x = round(scale.x(m.at_us));
    let dash = match m.kind {
        MarkKind::Kill | MarkKind::Restart => "none",
        MarkKind::Heal => "2,3",
        _ => "6,3",
    };
    titled(
        Line::new()
            .set("x1", x)
            .set("x2", x)
            .set("y1", round(top))
            .set("y2", round(bottom))
            .set("stroke", mark_color(m.kind))
            .set("stroke-width", 1.5)
            .set("stroke-dasharray", dash),
        &format!("{} at {}\n{}", m.label, secs(m.at_us), m.raw),
    )
}

fn cluster_track(tl: &Timeline, scale: Scale, bottom: f64) -> Group {
    let mut g = Group::new().set("class", "cluster");
    g.append(text(8.0, AXIS_PX + 14.0, "cluster").set("font-weight", "bold"));
    g.append(
        text(LEFT_PX - 6.0, AXIS_PX + 36.0, "commits")
            .set("text-anchor", "end")
            .set("fill", "#888")
            .set("font-size", 9),
    );
    let mut row_end = [f64::MIN; 2];
    for m in tl
        .faults
        .iter()
        .filter(|m| scale.overlaps(m.at_us, m.at_us))
    {
        g.append(marker_line(scale, m, AXIS_PX, bottom).set("class", "fault"));
        let x = scale.x(m.at_us) + 3.0;
        let width = m.label.chars().count() as f64 * CHAR_PX;
        let row = if row_end[0] <= x { 0 } else { 1 };
        row_end[row] = x + width + 6.0;
        g.append(titled(
            text(x, AXIS_PX + 11.0 + row as f64 * 12.0, &m.label).set("fill", mark_color(m.kind)),
            &m.raw,
        ));
    }
    let y = AXIS_PX + 33.0;
    for c in tl
        .commits
        .iter()
        .filter(|m| scale.overlaps(m.at_us, m.at_us))
    {
        let x = scale.x(c.at_us);
        let points = format!(
            "{},{} {},{} {},{} {},{}",
            round(x),
            y - 5.0,
            round(x + 4.0),
            y,
            round(x),
            y + 5.0,
            round(x - 4.0),
            y
        );
        g.append(titled(
            Polygon::new()
                .set("points", points)
                .set("fill", mark_color(MarkKind::Commit))
                .set("class", "commit"),
            &format!("commit {} at {}\n{}", c.label, secs(c.at_us), c.raw),
        ));
    }
    g
}

fn failover_group(f: &Failover, scale: Scale, lane_y: f64, lane_h: f64) -> Group {
    let (x0, x1) = (scale.x(f.fault_us), scale.x(f.running_us));
    let y = lane_y + lane_h - LANE_PAD_PX + 6.0;
    let ms = f.ms();
    let title = format!(
        "failover of {}/{}: {} → {} in {ms:.1} ms ({} at {}, replacement running at {})\n{}",
        f.service,
        f.slot,
        f.from_node,
        f.to_node,
        f.fault_label,
        secs(f.fault_us),
        secs(f.running_us),
        f.raw.join("\n")
    );
    let mut g = Group::new()
        .set("class", "failover")
        .set("data-ms", format!("{ms:.1}"))
        .set("data-service", f.service.as_str())
        .set("data-slot", f.slot)
        .set("data-from", f.from_node.as_str())
        .set("data-to", f.to_node.as_str());
    let color = "#b34000";
    for x in [x0, x1] {
        g.append(
            Line::new()
                .set("x1", round(x))
                .set("x2", round(x))
                .set("y1", round(y - 4.0))
                .set("y2", round(y + 4.0))
                .set("stroke", color)
                .set("stroke-width", 2),
        );
    }
    g.append(titled(
        Line::new()
            .set("x1", round(x0))
            .set("x2", round(x1))
            .set("y1", round(y))
            .set("y2", round(y))
            .set("stroke", color)
            .set("stroke-width", 2),
        &title,
    ));
    let label = format!("{}/{} failover {ms:.0} ms", f.service, f.slot);
    let width = label.chars().count() as f64 * CHAR_PX;
    let (lx, anchor) = if x1 - x0 > width + 8.0 {
        ((x0 + x1) / 2.0, "middle")
    } else {
        (x1 + 5.0, "start")
    };
    g.append(titled(
        text(lx, y + 4.0, &label)
            .set("text-anchor", anchor)
            .set("fill", color)
            .set("font-weight", "bold"),
        &title,
    ));
    g
}

/// Renders one panel over `[from_us, to_us]`; tick labels relative to `zero_us`.
fn panel(tl: &Timeline, id: &str, from_us: HostUs, to_us: HostUs, zero_us: HostUs) -> SVG {
    let scale = Scale { from_us, to_us };
    let heights: Vec<f64> = tl.lanes.iter().map(lane_height).collect();
    let total: f64 = AXIS_PX + CLUSTER_PX + heights.iter().sum::<f64>();
    let mut doc = SVG::new()
        .set("id", id)
        .set("class", "timeline")
        .set("width", WIDTH_PX)
        .set("height", round(total))
        .set("viewBox", format!("0 0 {WIDTH_PX} {}", round(total)))
        .set("data-from-us", from_us)
        .set("data-to-us", to_us);
    doc.append(rect(0.0, 0.0, WIDTH_PX, total, "#fff"));
    doc.append(axis(scale, total, zero_us, id != "overview"));
    let mut y = AXIS_PX + CLUSTER_PX;
    let mut lane_tops = Vec::new();
    for (lane, h) in tl.lanes.iter().zip(&heights) {
        lane_tops.push(y);
        doc.append(
            Line::new()
                .set("x1", 0)
                .set("x2", WIDTH_PX)
                .set("y1", round(y - 4.0))
                .set("y2", round(y - 4.0))
                .set("stroke", "#ccc"),
        );
        doc.append(lane_group(lane, scale, y));
        y += h;
    }
    doc.append(cluster_track(tl, scale, total));
    for f in tl
        .failovers
        .iter()
        .filter(|f| scale.overlaps(f.fault_us, f.running_us))
    {
        if let Some(i) = tl.lanes.iter().position(|l| l.node == f.to_node) {
            doc.append(failover_group(f, scale, lane_tops[i], heights[i]));
        }
    }
    doc
}

fn legend() -> String {
    let mut out = String::from("<div class=\"legend\">");
    let mut item = |color: &str, name: &str| {
        let _ = write!(
            out,
            "<span><span class=\"sw\" style=\"background:{color}\"></span>{}</span>",
            esc(name)
        );
    };
    for p in [
        Process::Up,
        Process::Restarted,
        Process::Hung,
        Process::Killed,
        Process::Gone,
    ] {
        item(process_color(p), &format!("process {}", process_name(p)));
    }
    for m in [Member::Alive, Member::Suspect, Member::Down, Member::Left] {
        item(member_color(m), &format!("member {}", member_name(m)));
    }
    for r in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        item(role_color(r), &format!("raft {}", role_name(r)));
    }
    item("#2171b5", "cell running");
    item("#6baed6", "cell ended");
    item(mark_color(MarkKind::Commit), "commit");
    item(mark_color(MarkKind::Kill), "kill");
    item(mark_color(MarkKind::Partition), "partition / heal");
    out.push_str("</div>");
    out
}

/// Groups failovers by the fault that caused them (one zoomed panel each).
fn by_fault(tl: &Timeline) -> Vec<(HostUs, String, Vec<&Failover>)> {
    let mut groups: Vec<(HostUs, String, Vec<&Failover>)> = Vec::new();
    for f in &tl.failovers {
        match groups.iter_mut().find(|g| g.0 == f.fault_us) {
            Some(g) => g.2.push(f),
            None => groups.push((f.fault_us, f.fault_label.clone(), vec![f])),
        }
    }
    groups
}

fn panel_height(tl: &Timeline) -> f64 {
    AXIS_PX + CLUSTER_PX + tl.lanes.iter().map(lane_height).sum::<f64>()
}

/// About how tall the page of [`html`] renders, in CSS pixels (for screenshot sizes).
pub fn page_height_px(tl: &Timeline) -> u32 {
    let panels = 1 + by_fault(tl).len();
    let height = 130.0
        + 22.0 * tl.failovers.len() as f64
        + panels as f64 * (panel_height(tl) + 40.0)
        + 40.0
        + 17.0 * tl.notes.len() as f64;
    height.ceil() as u32
}

/// A small page for pictures: the legend and the zoomed panel of the first failover;
/// `None` when the run has no failover.
pub fn focus_html(tl: &Timeline) -> Option<(String, u32)> {
    let (fault_us, label, group) = by_fault(tl).into_iter().next()?;
    let last = group.iter().map(|f| f.running_us).max().unwrap_or(fault_us);
    let mut out = String::new();
    let names: Vec<String> = group
        .iter()
        .map(|f| {
            format!(
                "{}/{} {} → {} in {:.0} ms",
                f.service,
                f.slot,
                f.from_node,
                f.to_node,
                f.ms()
            )
        })
        .collect();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&format!("Xylem failover: {}", tl.title)),
        esc(&format!("Failover after {label}: {}", names.join(", ")))
    );
    out.push_str(&legend());
    out.push_str(
        &panel(
            tl,
            "focus",
            fault_us - ZOOM_BEFORE_US,
            last + ZOOM_AFTER_US,
            fault_us,
        )
        .to_string(),
    );
    out.push_str("\n</body></html>\n");
    Some((out, (panel_height(tl) + 110.0).ceil() as u32))
}

/// The whole page.
pub fn html(tl: &Timeline) -> String {
    let mut out = String::new();
    let title = format!("Xylem timeline: {}", tl.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        out,
        "<p>{} node(s), {} of run, {} commit(s), {} fault(s) injected, {} garbage line(s) skipped. Hover over anything for its raw event.</p>",
        tl.lanes.len(),
        secs(tl.end_us - tl.start_us),
        tl.commits.len(),
        tl.faults.len(),
        tl.garbage
    );
    for f in &tl.failovers {
        let _ = writeln!(
            out,
            "<p class=\"big\">{}/{}: {} → {}, failover {:.1} ms after {}</p>",
            esc(&f.service),
            f.slot,
            esc(&f.from_node),
            esc(&f.to_node),
            f.ms(),
            esc(&f.fault_label)
        );
    }
    out.push_str(&legend());
    out.push_str("\n<h2>Whole run</h2>\n");
    out.push_str(&panel(tl, "overview", tl.start_us, tl.end_us, 0).to_string());
    for (n, (fault_us, label, group)) in by_fault(tl).into_iter().enumerate() {
        let last = group.iter().map(|f| f.running_us).max().unwrap_or(fault_us);
        let names: Vec<String> = group
            .iter()
            .map(|f| format!("{}/{} {:.0} ms", f.service, f.slot, f.ms()))
            .collect();
        let _ = write!(
            out,
            "\n<h2>Around {} (at {}): {}</h2>\n",
            esc(&label),
            secs(fault_us),
            esc(&names.join(", "))
        );
        let id = format!("failover-{}", n + 1);
        out.push_str(
            &panel(
                tl,
                &id,
                fault_us - ZOOM_BEFORE_US,
                last + ZOOM_AFTER_US,
                fault_us,
            )
            .to_string(),
        );
    }
    out.push_str("\n<h2>Notes</h2>\n<ul class=\"notes\">");
    for note in &tl.notes {
        let _ = write!(out, "<li>{}</li>", esc(note));
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_or_vanish() {
        assert_eq!(fit("web/1@7", 100.0).as_deref(), Some("web/1@7"));
        assert_eq!(fit("web/1@7", 26.0).as_deref(), Some("web…"));
        assert_eq!(fit("web/1@7", 10.0), None);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step_us(2_400_000), 200_000);
        assert_eq!(tick_step_us(40_000_000), 5_000_000);
        assert_eq!(tick_step_us(10_000), 1_000);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
